//! PATCH semantics (spec §2.5): an absent key leaves a field unchanged, an explicit `null` clears
//! a nullable field. `Option<Option<T>>` with this deserializer tells the two apart.

use serde::{Deserialize, Deserializer};

/// Use with `#[serde(default, deserialize_with = "nullable")]`: absent → `None`,
/// `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct P {
        #[serde(default, deserialize_with = "nullable")]
        v: Option<Option<String>>,
    }

    #[test]
    fn absent_null_value() {
        assert_eq!(serde_json::from_str::<P>("{}").unwrap().v, None);
        assert_eq!(serde_json::from_str::<P>(r#"{"v":null}"#).unwrap().v, Some(None));
        assert_eq!(
            serde_json::from_str::<P>(r#"{"v":"x"}"#).unwrap().v,
            Some(Some("x".into()))
        );
    }
}
