//! Validity periods and durations as users write them (`90d`, `12h`, `30m`).

use std::fmt;

use time::{Duration, OffsetDateTime};

use crate::PkiError;

/// How far `not_before` is moved into the past, so a client whose clock is a little behind
/// accepts a certificate issued a moment ago (step-ca does the same).
pub const BACKDATE: Duration = Duration::minutes(1);

/// The lifetime asked for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Days(u32),
    Hours(u32),
    Minutes(u32),
}

impl Default for Validity {
    /// One year, the default for leaf certificates.
    fn default() -> Self {
        Validity::Days(365)
    }
}

impl Validity {
    /// Refuses a zero lifetime.
    pub fn checked(self) -> Result<Validity, PkiError> {
        let n = match self {
            Validity::Days(n) | Validity::Hours(n) | Validity::Minutes(n) => n,
        };
        if n == 0 {
            return Err(PkiError::InvalidValidity {
                reason: format!("a lifetime of {self} is empty; give at least 1"),
            });
        }
        Ok(self)
    }

    pub fn duration(self) -> Duration {
        match self {
            Validity::Days(n) => Duration::days(n.into()),
            Validity::Hours(n) => Duration::hours(n.into()),
            Validity::Minutes(n) => Duration::minutes(n.into()),
        }
    }

    /// `(not_before, not_after)` for a certificate issued at `now`.
    pub fn window(self, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        (now - BACKDATE, now + self.duration())
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validity::Days(n) => write!(f, "{n} days"),
            Validity::Hours(n) => write!(f, "{n} hours"),
            Validity::Minutes(n) => write!(f, "{n} minutes"),
        }
    }
}

/// Parses a duration such as `30d`, `12h`, `15m`, `45s` (a bare number means seconds).
pub fn parse_duration(value: &str) -> Result<Duration, PkiError> {
    let invalid = |reason| PkiError::InvalidDuration { value: value.to_string(), reason };
    let v = value.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: i64 =
        digits.parse().map_err(|_| invalid("expected a number followed by d, h, m or s"))?;
    let d = match unit {
        "d" => Duration::days(n),
        "h" => Duration::hours(n),
        "m" => Duration::minutes(n),
        "s" => Duration::seconds(n),
        "ms" => Duration::milliseconds(n),
        _ => return Err(invalid("unknown unit; use d, h, m, s or ms")),
    };
    if d.is_zero() {
        return Err(invalid("a duration of zero is not allowed here"));
    }
    Ok(d)
}

/// `2026-01-01 00:00:00 UTC`: the date format of every message certgate prints.
pub fn format_time(t: OffsetDateTime) -> String {
    utc_date_time(t, ' ', " UTC")
}

/// RFC 3339 (`2026-01-01T00:00:00Z`), for JSON output and headers.
pub fn rfc3339(t: OffsetDateTime) -> String {
    utc_date_time(t, 'T', "Z")
}

fn utc_date_time(t: OffsetDateTime, separator: char, zone: &str) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_zero_is_refused() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_duration("12h").unwrap(), Duration::hours(12));
        assert_eq!(parse_duration("5m").unwrap(), Duration::minutes(5));
        assert_eq!(parse_duration("10").unwrap(), Duration::seconds(10));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("d").is_err());
        assert!(Validity::Days(0).checked().is_err());
    }

    #[test]
    fn times_format_in_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        assert_eq!(format_time(t), "2026-01-01 00:00:00 UTC");
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00Z");
    }
}
