//! Typed ids. Every entity id is a UUIDv7 generated here (time-ordered, spec §2.2); the newtypes
//! keep a user id from being passed where a session id is expected.

/// Declares a UUID newtype that serialises, documents and binds to SQL exactly like `Uuid`.
#[macro_export]
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh UUIDv7.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                "Uuid".into()
            }
            fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
                <uuid::Uuid as schemars::JsonSchema>::json_schema(g)
            }
        }
    };
}

id_type!(
    /// A user (people and bots alike).
    UserId
);
id_type!(
    /// An auth session: one login, owning one refresh-token family (spec §6.2).
    SessionId
);

id_type!(
    /// A space.
    SpaceId
);
id_type!(
    /// A channel of a space, or a DM channel.
    ChannelId
);
id_type!(
    /// A role of a space.
    RoleId
);
id_type!(
    /// A membership row (the member id of the wire).
    MemberId
);
id_type!(
    /// A ban row.
    BanId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_lowercase_and_ordered() {
        let a = UserId::new();
        let b = UserId::new();
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b);
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(s, format!("\"{}\"", a.0.hyphenated()));
        assert_eq!(s, s.to_lowercase());
        let parsed: UserId = a.0.to_string().to_uppercase().parse().unwrap();
        assert_eq!(parsed, a);
    }
}
