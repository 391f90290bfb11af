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

/// The longest lifetime certgate gives a certificate: 100 years.
pub const MAX_LIFETIME_DAYS: u32 = 36_500;

impl Validity {
    /// Refuses a zero lifetime and one longer than [`MAX_LIFETIME_DAYS`].
    pub fn checked(self) -> Result<Validity, PkiError> {
        let (n, max) = match self {
            Validity::Days(n) => (n, MAX_LIFETIME_DAYS),
            Validity::Hours(n) => (n, MAX_LIFETIME_DAYS * 24),
            Validity::Minutes(n) => (n, MAX_LIFETIME_DAYS * 24 * 60),
        };
        if n == 0 {
            return Err(PkiError::InvalidValidity {
                reason: format!("a lifetime of {self} is empty; give at least 1"),
            });
        }
        if n > max {
            return Err(PkiError::LifetimeTooLong { unit: self.unit(), value: n, max });
        }
        Ok(self)
    }

    /// The lifetime as a duration (at most about 11,000 years for `u32::MAX` days, so this
    /// cannot overflow; [`Validity::window`] checks the dates it leads to).
    pub fn duration(self) -> Duration {
        match self {
            Validity::Days(n) => Duration::days(n.into()),
            Validity::Hours(n) => Duration::hours(n.into()),
            Validity::Minutes(n) => Duration::minutes(n.into()),
        }
    }

    /// `(not_before, not_after)` for a certificate issued at `now`. Fails for a lifetime that
    /// [`Validity::checked`] refuses, or dates a certificate cannot hold.
    pub fn window(self, now: OffsetDateTime) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let duration = self.checked()?.duration();
        let out_of_range =
            |by| PkiError::TimeOutOfRange { what: "the certificate validity", from: now, by };
        let not_before = now.checked_sub(BACKDATE).ok_or_else(|| out_of_range(-BACKDATE))?;
        let not_after = now.checked_add(duration).ok_or_else(|| out_of_range(duration))?;
        Ok((not_before, not_after))
    }

    /// The flag and unit word: `days`, `hours` or `minutes`.
    fn unit(self) -> &'static str {
        match self {
            Validity::Days(_) => "days",
            Validity::Hours(_) => "hours",
            Validity::Minutes(_) => "minutes",
        }
    }
}

/// `from + by`, or an error naming `what` when the result is past what a date can hold.
pub fn checked_after(
    what: &'static str,
    from: OffsetDateTime,
    by: Duration,
) -> Result<OffsetDateTime, PkiError> {
    from.checked_add(by).ok_or(PkiError::TimeOutOfRange { what, from, by })
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

/// The longest duration [`parse_duration`] accepts: 100 years.
pub const MAX_DURATION: Duration = Duration::days(MAX_LIFETIME_DAYS as i64);

/// Parses a duration such as `30d`, `12h`, `15m`, `45s` or `500ms`. A bare number is refused:
/// `7` could mean seconds or days. Refuses zero and anything longer than 100 years
/// ([`MAX_DURATION`]).
pub fn parse_duration(value: &str) -> Result<Duration, PkiError> {
    let invalid = |reason| PkiError::InvalidDuration { value: value.to_string(), reason };
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid("expected a number followed by d, h, m or s"));
    }
    let Some(unit_at) = v.find(|c: char| !c.is_ascii_digit()) else {
        return Err(invalid("a unit is needed: 7d, 12h, 30m"));
    };
    let (digits, unit) = v.split_at(unit_at);
    if digits.is_empty() {
        return Err(invalid("expected a number followed by d, h, m or s"));
    }
    let millis_per_unit: u64 = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        "ms" => 1,
        _ => return Err(invalid("unknown unit; use d, h, m, s or ms")),
    };
    let too_long = || invalid("a duration is at most 100 years (36500d)");
    // Digits only, so the parse fails only when the number does not fit in a u64.
    let n: u64 = digits.parse().map_err(|_| too_long())?;
    let millis = n.checked_mul(millis_per_unit).ok_or_else(too_long)?;
    let millis = i64::try_from(millis).map_err(|_| too_long())?;
    let d = Duration::milliseconds(millis);
    if d.is_zero() {
        return Err(invalid("a duration of zero is not allowed here"));
    }
    if d > MAX_DURATION {
        return Err(too_long());
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
        assert_eq!(parse_duration("10s").unwrap(), Duration::seconds(10));
        let err = parse_duration("7").unwrap_err().to_string();
        assert_eq!(err, "invalid duration \"7\": a unit is needed: 7d, 12h, 30m");
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("d").is_err());
        assert!(Validity::Days(0).checked().is_err());
    }

    /// Durations longer than 100 years, even ones that overflow every integer type, are
    /// refused with the limit instead of panicking.
    #[test]
    fn huge_durations_are_refused_with_the_limit() {
        assert_eq!(parse_duration("36500d").unwrap(), Duration::days(36_500));
        for value in [
            "36501d",
            "876001h",
            "9223372036854775807d",
            "9223372036854775807ms",
            "99999999999d",
            "184467440737095516160s",
        ] {
            let err = parse_duration(value).unwrap_err().to_string();
            assert!(err.contains("at most 100 years (36500d)"), "{value}: {err}");
        }
    }

    /// A lifetime longer than 100 years is refused, naming the flag, the value and the limit;
    /// a window past the last representable date is an error, not a panic.
    #[test]
    fn lifetimes_are_bounded_and_windows_checked() {
        let err = Validity::Days(4_000_000).checked().unwrap_err().to_string();
        assert_eq!(err, "--days 4000000: a certificate lifetime is at most 36500 days");
        let err = Validity::Minutes(u32::MAX).checked().unwrap_err().to_string();
        assert!(err.contains("at most 52560000 minutes"), "{err}");
        assert!(Validity::Days(36_500).checked().is_ok());
        let now = OffsetDateTime::now_utc();
        assert!(Validity::Days(u32::MAX).window(now).is_err());
        let late = time::macros::datetime!(9999-12-01 00:00 UTC);
        let err = Validity::Days(365).window(late).unwrap_err().to_string();
        assert!(err.contains("the certificate validity"), "{err}");
        assert!(checked_after("the CRL's next update", late, Duration::days(365)).is_err());
    }

    #[test]
    fn times_format_in_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        assert_eq!(format_time(t), "2026-01-01 00:00:00 UTC");
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00Z");
    }
}
