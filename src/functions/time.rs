//! Timestamps on the wire: always `YYYY-MM-DDTHH:MM:SS.mmmZ` (spec §2.3), truncated to the
//! millisecond before storage so REST, events and later reads carry identical strings.

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Timelike, Utc};
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

impl Timestamp {
    /// The wire form written digit by digit: chrono's `format` parses its format string on
    /// every call, which was ≈ 6 % of the server's CPU serving history pages (two timestamps
    /// per message). `None` for years outside 0–9999 and for leap seconds, which [`Display`]
    /// formats through chrono.
    fn wire(&self) -> Option<[u8; 24]> {
        let t = self.0;
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let millis = Some(t.nanosecond()).filter(|n| *n < 1_000_000_000)? / 1_000_000;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        put(20, 3, millis);
        Some(out)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.wire() {
            // ASCII digits and separators only.
            Some(bytes) => f.write_str(std::str::from_utf8(&bytes).map_err(|_| std::fmt::Error)?),
            None => write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.wire() {
            Some(bytes) => s.serialize_str(std::str::from_utf8(&bytes).map_err(serde::ser::Error::custom)?),
            None => s.collect_str(self),
        }
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

    #[test]
    fn the_digit_writer_agrees_with_chrono() {
        let chrono_form = |t: &Timestamp| t.0.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let mut t = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        // A walk over years, months, days, hours and milliseconds, leap days included.
        for step in 0..20_000 {
            let ts = Timestamp::from(t);
            assert_eq!(ts.to_string(), chrono_form(&ts));
            assert_eq!(serde_json::to_string(&ts).unwrap(), format!("\"{}\"", chrono_form(&ts)));
            t += TimeDelta::milliseconds(3_600_007 * 13 + step);
        }
        let leap =
            Timestamp::from(Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap() + TimeDelta::milliseconds(999));
        assert_eq!(leap.to_string(), "2024-02-29T23:59:59.999Z");
        // Outside 0–9999, and a leap second, chrono formats it.
        let far = Timestamp(Utc.with_ymd_and_hms(12345, 6, 7, 8, 9, 10).unwrap());
        assert_eq!(far.to_string(), chrono_form(&far));
        let leap_second = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 1_500))
            .unwrap()
            .and_utc();
        let leap_second = Timestamp(leap_second);
        assert_eq!(leap_second.to_string(), chrono_form(&leap_second));
        assert_eq!(
            serde_json::to_string(&leap_second).unwrap(),
            format!("\"{}\"", chrono_form(&leap_second))
        );
    }
}
