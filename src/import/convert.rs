//! Pure conversions of Mikoto values into alterego's (no I/O): permission strings, message ids,
//! timestamps, emails and password hashes.

use chrono::{NaiveDateTime, Timelike};
use uuid::Uuid;

use crate::functions::permissions::Permissions;
use crate::functions::time::Timestamp;

/// A Mikoto role's permission string as alterego bits (spec §5.1): a decimal u64 of which bits
/// 0–11 share Mikoto's server numbering. `@everyone` also gains the channel bits `28672`
/// (spec §1.7), because Mikoto had no channel permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleBits {
    pub bits: i64,
    /// The string was not a decimal u64 (the role gets no permissions).
    pub invalid: bool,
    /// Bits 16–63 were set and dropped.
    pub dropped_undefined: bool,
}

pub fn role_permissions(raw: &str, is_everyone: bool) -> RoleBits {
    let parsed = raw.trim().parse::<u64>();
    let value = parsed.as_ref().copied().unwrap_or(0);
    let mut bits = Permissions::from_bits_truncate(value);
    if is_everyone {
        bits |= Permissions::DEFAULT_EVERYONE;
    }
    RoleBits {
        // At most 16 bits remain, so the cast is exact.
        bits: bits.bits() as i64,
        invalid: parsed.is_err(),
        dropped_undefined: value & !Permissions::ALL.bits() != 0,
    }
}

/// A Mikoto timestamp (`timestamp without time zone`, UTC) at alterego's millisecond precision.
pub fn timestamp(t: NaiveDateTime) -> Timestamp {
    Timestamp::from(t.and_utc())
}

/// The time-ordered id of an imported message (see docs/import.md, "Message ids").
///
/// The UUIDv7 carries the message's millisecond (spec §2.2), then in `rand_a` its microsecond
/// within that millisecond, then in `rand_b` the top 62 bits of the Mikoto id. Ordering the new
/// ids is therefore ordering Mikoto's rows by (timestamp, id) — the source's own history order,
/// ties included — and the same row always gets the same id, so a re-run is deterministic.
pub fn message_id(legacy: Uuid, at: NaiveDateTime) -> Uuid {
    let utc = at.and_utc();
    // Times before 1970 cannot be a UUIDv7; they sort first.
    let ms = u128::try_from(utc.timestamp_millis()).unwrap_or(0) & ((1 << 48) - 1);
    let micros = u128::from(utc.nanosecond() / 1_000 % 1_000);
    let tail = legacy.as_u128() >> 66;
    Uuid::from_u128((ms << 80) | (0x7 << 76) | (micros << 64) | (0b10 << 62) | tail)
}

/// An email as alterego stores it: trimmed and lowercased (spec §2.4).
pub fn email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Whether a stored hash is bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`), which alterego verifies.
pub fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    b.len() == 60
        && b.starts_with(b"$2")
        && matches!(b.get(2), Some(b'a' | b'b' | b'x' | b'y'))
        && b.get(3) == Some(&b'$')
}

/// A handle as alterego stores it: trimmed and lowercased (spec §2.4).
pub fn handle(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// A Mikoto handle attestation (jsonb) as alterego's text column: a JSON string is the
/// signature itself; an object's `signature` string is taken; anything else is kept as compact
/// JSON text so nothing is lost.
pub fn attestation(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => match o.get("signature") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => Some(value.to_string()),
        },
        other => Some(other.to_string()),
    }
}

/// A bot's informational permission names (Mikoto: a jsonb array of strings). Returns the
/// strings and whether anything else was dropped.
pub fn bot_permissions(value: &serde_json::Value) -> (Vec<String>, bool) {
    match value {
        serde_json::Value::Array(items) => {
            let names: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
            let dropped = names.len() != items.len();
            (names, dropped)
        }
        serde_json::Value::Null => (Vec::new(), false),
        _ => (Vec::new(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: i64, micros: u32) -> NaiveDateTime {
        let base = chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .naive_utc();
        base + chrono::TimeDelta::microseconds(i64::from(micros))
    }

    #[test]
    fn permission_strings() {
        assert_eq!(role_permissions("0", true).bits, 28672);
        assert_eq!(role_permissions("2049", false).bits, 2049);
        let wide = role_permissions(&(u64::MAX).to_string(), false);
        assert_eq!((wide.bits, wide.dropped_undefined, wide.invalid), (65535, true, false));
        let bad = role_permissions("ADMIN", false);
        assert_eq!((bad.bits, bad.invalid), (0, true));
        assert_eq!(role_permissions(" 1 ", true).bits, 28673);
    }

    #[test]
    fn minted_ids_are_v7_at_the_millisecond() {
        let t = at(1_700_000_000_123, 456);
        let id = message_id(Uuid::new_v4(), t);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let ts = crate::entities::messages::id_timestamp(id).map(|t| t.0.timestamp_millis());
        assert_eq!(ts, Some(1_700_000_000_123));
        assert_eq!(timestamp(t).0.timestamp_millis(), 1_700_000_000_123);
    }

    #[test]
    fn bcrypt_detection() {
        assert!(is_bcrypt(&bcrypt::hash("secret", 4).unwrap_or_default()));
        assert!(!is_bcrypt("$argon2id$v=19$m=65536"));
        assert!(!is_bcrypt(""));
    }

    #[test]
    fn jsonb_values() {
        use serde_json::json;
        assert_eq!(attestation(&json!("c2ln")), Some("c2ln".into()));
        assert_eq!(attestation(&json!({"signature": "c2ln", "v": 1})), Some("c2ln".into()));
        assert_eq!(attestation(&json!({"v": 1})), Some("{\"v\":1}".into()));
        assert_eq!(attestation(&json!(null)), None);
        assert_eq!(
            bot_permissions(&json!(["a", 1, "b"])),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(bot_permissions(&json!([])), (vec![], false));
        assert_eq!(bot_permissions(&json!({"a": 1})), (vec![], true));
        assert_eq!(
            (email(" Ann@Example.ORG "), handle(" Ann.X ")),
            ("ann@example.org".into(), "ann.x".into())
        );
    }

    proptest! {
        /// Ordering minted ids is ordering the source rows by (timestamp, id), ties included.
        #[test]
        fn minted_ids_keep_the_source_order(rows in proptest::collection::vec((0i64..4, 0u32..3, any::<u128>()), 2..40)) {
            let rows: Vec<(NaiveDateTime, Uuid)> = rows
                .into_iter()
                .map(|(ms, us, bits)| (at(1_700_000_000_000 + ms, us), uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid()))
                .collect();
            let mut source = rows.clone();
            source.sort();
            let mut minted: Vec<(Uuid, Uuid)> = rows.iter().map(|(t, id)| (message_id(*id, *t), *id)).collect();
            minted.sort();
            let by_new: Vec<Uuid> = minted.into_iter().map(|(_, old)| old).collect();
            let by_source: Vec<Uuid> = source.into_iter().map(|(_, old)| old).collect();
            prop_assert_eq!(by_new, by_source);
        }
    }
}
