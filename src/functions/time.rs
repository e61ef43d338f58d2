//! Timestamps on the wire: always `YYYY-MM-DDTHH:MM:SS.mmmZ` (spec §2.3), truncated to the
//! millisecond before storage so REST, events and later reads carry identical strings.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Serialize, Serializer};

/// A UTC instant at millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Timestamp(t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        // Mikoto's component name.
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_with_millis_and_z() {
        let t = Utc.with_ymd_and_hms(2026, 4, 24, 18, 45, 28).unwrap() + TimeDelta::nanoseconds(123_456_789);
        let ts = Timestamp::from(t);
        assert_eq!(serde_json::to_string(&ts).unwrap(), "\"2026-04-24T18:45:28.123Z\"");
        let whole = Timestamp::from(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        assert_eq!(whole.to_string(), "2026-01-02T03:04:05.000Z");
    }
}
