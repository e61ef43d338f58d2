//! Query-string conventions (spec §2.5, §2.7): empty values are absent; limits are clamped.

use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// `?cursor=` is the same as no cursor; anything else must parse.
pub fn empty_as_none<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let raw: Option<String> = Option::deserialize(de)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// A page size: the default when absent, otherwise clamped into `min..=max`.
pub fn clamp_limit(limit: Option<i64>, default: i64, max: i64) -> i64 {
    limit.unwrap_or(default).clamp(1, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Q {
        #[serde(default, deserialize_with = "empty_as_none")]
        limit: Option<i64>,
    }

    #[test]
    fn empty_values_are_absent() {
        let q: Q = serde_urlencoded_like("limit=");
        assert_eq!(q.limit, None);
        let q: Q = serde_urlencoded_like("limit=5");
        assert_eq!(q.limit, Some(5));
        assert_eq!(clamp_limit(None, 50, 100), 50);
        assert_eq!(clamp_limit(Some(0), 50, 100), 1);
        assert_eq!(clamp_limit(Some(1000), 50, 100), 100);
    }

    fn serde_urlencoded_like(s: &str) -> Q {
        let (k, v) = s.split_once('=').unwrap();
        let map = serde_json::json!({ k: v });
        serde_json::from_value(map).unwrap()
    }
}
