//! Instants in Switchboard: milliseconds since the Unix epoch, UTC.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant, in whole milliseconds since 1970-01-01T00:00:00Z.
///
/// Vendors send seconds (LiveChat legacy), milliseconds (Smartsupp, Tencent) or RFC 3339
/// strings (LiveChat v3); the checked constructors turn each into a `Timestamp` and refuse
/// values outside [`Timestamp::MIN`]..=[`Timestamp::MAX`], so an absurd number in a webhook
/// is a parse error, not a date in the year 300,000.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(0);
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// Milliseconds since the epoch, if within range.
    pub fn from_millis(millis: i64) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&millis)
            .then_some(Timestamp(millis))
    }

    /// Seconds since the epoch, if within range.
    pub fn from_secs(secs: i64) -> Option<Self> {
        secs.checked_mul(1000).and_then(Self::from_millis)
    }

    /// Fractional seconds since the epoch (some vendors send `1552126412.5`), if within range.
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() {
            return None;
        }
        let millis = (secs * 1000.0).round();
        if millis < Self::MIN.0 as f64 || millis > Self::MAX.0 as f64 {
            return None;
        }
        Self::from_millis(millis as i64)
    }

    /// Parses RFC 3339 (`2019-12-05T07:27:08.820000Z`, `2024-01-01T10:00:00+03:00`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        Self::from_millis(i64::try_from(millis).ok()?)
    }

    /// Parses `2024-01-01 10:00:00` (taken as UTC), as some vendor exports use.
    pub fn parse_sql_utc(text: &str) -> Option<Self> {
        let format = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        let parsed = time::PrimitiveDateTime::parse(text, &format).ok()?;
        let millis = parsed.assume_utc().unix_timestamp_nanos() / 1_000_000;
        Self::from_millis(i64::try_from(millis).ok()?)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let millis = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        Timestamp(
            i64::try_from(millis)
                .unwrap_or(Self::MAX.0)
                .clamp(Self::MIN.0, Self::MAX.0),
        )
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds and the nanoseconds past them, as `google.protobuf.Timestamp` wants.
    pub fn to_secs_nanos(self) -> (i64, i32) {
        (
            self.0.div_euclid(1000),
            (self.0.rem_euclid(1000) * 1_000_000) as i32,
        )
    }

    /// From seconds and nanoseconds (`google.protobuf.Timestamp`), if within range.
    pub fn from_secs_nanos(secs: i64, nanos: i32) -> Option<Self> {
        if !(0..1_000_000_000).contains(&nanos) {
            return None;
        }
        secs.checked_mul(1000)
            .and_then(|m| m.checked_add(i64::from(nanos / 1_000_000)))
            .and_then(Self::from_millis)
    }

    /// RFC 3339 with milliseconds, e.g. `2019-03-09T10:13:32.000Z`.
    pub fn to_rfc3339(self) -> String {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| format!("@{}ms", self.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_millis_agree() {
        assert_eq!(
            Timestamp::from_secs(1_552_126_412),
            Timestamp::from_millis(1_552_126_412_000)
        );
    }

    #[test]
    fn absurd_values_are_refused() {
        assert_eq!(Timestamp::from_secs(i64::MAX), None);
        assert_eq!(Timestamp::from_millis(-1), None);
        assert_eq!(Timestamp::from_millis(Timestamp::MAX.as_millis() + 1), None);
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), None);
        assert_eq!(Timestamp::from_secs_f64(1e300), None);
    }

    #[test]
    fn rfc3339_round_trips() {
        let t = Timestamp::parse_rfc3339("2019-12-05T07:27:08.820000Z").unwrap();
        assert_eq!(t.as_millis(), 1_575_530_828_820);
        assert_eq!(t.to_rfc3339(), "2019-12-05T07:27:08.820Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_sql_utc("2019-12-05 07:27:08"),
            Timestamp::from_secs(1_575_530_828)
        );
    }

    #[test]
    fn protobuf_split_is_exact() {
        let t = Timestamp::from_millis(1_575_530_828_820).unwrap();
        assert_eq!(t.to_secs_nanos(), (1_575_530_828, 820_000_000));
        assert_eq!(
            Timestamp::from_secs_nanos(1_575_530_828, 820_000_000),
            Some(t)
        );
        assert_eq!(Timestamp::from_secs_nanos(1, 1_000_000_000), None);
    }
}
