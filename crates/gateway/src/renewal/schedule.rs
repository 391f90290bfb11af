//! When to renew, and how long to wait after a failure.
//!
//! Renewal is due when a third of the lifetime remains (`expires_in`), minus a random share
//! of a twentieth of the lifetime, so a fleet issued at the same moment does not renew in
//! lockstep. The moment is an instant on the wall clock, chosen once per certificate; waits
//! are cut into slices of at most a minute that re-read the wall clock, because tokio's
//! timers run on a monotonic clock that stops while a machine is suspended.

use std::time::Duration;

use time::OffsetDateTime;

/// The longest single sleep before the wall clock is read again.
pub const WALL_CLOCK_SLICE: Duration = Duration::from_secs(60);

/// The first wait after a failed renewal; each failure doubles it, up to the cap.
const FIRST_RETRY: Duration = Duration::from_secs(10);

/// A certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    pub fn lifetime(&self) -> time::Duration {
        self.not_after - self.not_before
    }
}

/// How much lifetime may remain when renewal becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresIn {
    /// A share of the lifetime, in percent (1–100; 100 means at once, for one-shot runs).
    Percent(u8),
    /// A fixed remaining time.
    Remaining(time::Duration),
}

impl Default for ExpiresIn {
    /// A third of the lifetime: renewal after two thirds.
    fn default() -> Self {
        ExpiresIn::Percent(33)
    }
}

impl ExpiresIn {
    /// Parses `33%` or a duration as `parse_duration` reads it (`8h`, `2d`).
    pub fn parse(
        value: &str,
        parse_duration: impl Fn(&str) -> Option<time::Duration>,
    ) -> Result<ExpiresIn, String> {
        if let Some(percent) = value.strip_suffix('%') {
            return percent
                .trim()
                .parse()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(ExpiresIn::Percent)
                .ok_or_else(|| "a share of the lifetime is 1% to 100%".to_string());
        }
        match parse_duration(value) {
            Some(d) if d > time::Duration::ZERO => Ok(ExpiresIn::Remaining(d)),
            _ => Err("expected a share like 33% or a duration like 8h".to_string()),
        }
    }

    /// The remaining lifetime at which `validity` is due.
    pub fn of(self, validity: &Validity) -> time::Duration {
        match self {
            ExpiresIn::Percent(p) => validity.lifetime() * i32::from(p) / 100,
            ExpiresIn::Remaining(d) => d,
        }
    }

    /// [`Self::of`], refused when it is the whole lifetime or more: a certificate kept
    /// renewed would be due the moment it is issued, again and again.
    pub fn of_renewable(self, validity: &Validity) -> Result<time::Duration, String> {
        let lifetime = validity.lifetime();
        let remaining = self.of(validity);
        if remaining >= lifetime {
            return Err(format!(
                "renewal when {} remain is not possible for a certificate that lives {}",
                human(remaining),
                human(lifetime)
            ));
        }
        Ok(remaining)
    }
}

/// The instant `validity` is due for renewal, seen at `now`: `expires_in` before its end,
/// brought forward by a random part (`random` in [0, 1)) of a twentieth of the lifetime; when
/// that is closer than the spread, a random instant between now and the due time; now when
/// it has passed.
pub fn due_at(
    validity: &Validity,
    expires_in: time::Duration,
    now: OffsetDateTime,
    random: f64,
) -> OffsetDateTime {
    let due = validity.not_after - expires_in;
    let until = due - now;
    if until <= time::Duration::ZERO {
        return now;
    }
    let spread = validity.lifetime() / 20;
    if until < spread { now + until * random } else { due - spread * random }
}

/// Jittered exponential backoff after failures, capped at a twentieth of the lifetime (at
/// least a second) and never past the certificate's end.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { failures: 0 }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next attempt after one more failure; `None` when the certificate
    /// has ended (nothing is left to wait for).
    pub fn next(
        &mut self,
        validity: &Validity,
        now: OffsetDateTime,
        random: f64,
    ) -> Option<Duration> {
        let left = duration(validity.not_after - now)?;
        let cap = duration(validity.lifetime() / 20)
            .unwrap_or_default()
            .max(Duration::from_secs(1))
            .min(left);
        let base = FIRST_RETRY.saturating_mul(1 << self.failures.min(16)).min(cap);
        self.failures = self.failures.saturating_add(1);
        // Between half and all of the base: retries from a fleet spread out.
        Some(base.mul_f64(0.5 + random.clamp(0.0, 1.0) / 2.0))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Sleeps until the wall clock reaches `at`, in slices of at most [`WALL_CLOCK_SLICE`].
pub async fn sleep_until(at: OffsetDateTime) {
    loop {
        let Some(left) = duration(at - OffsetDateTime::now_utc()) else { return };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(WALL_CLOCK_SLICE)).await;
    }
}

/// A random number in [0, 1) from the system's secure generator (0.5 if it fails, which it
/// does not on a working system: the spread is lost, nothing else).
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// A positive `time::Duration` as a std one; `None` when negative.
fn duration(d: time::Duration) -> Option<Duration> {
    Duration::try_from(d).ok()
}

/// `2h 5m`, `90s`: a duration for messages.
pub fn human(d: time::Duration) -> String {
    let secs = d.whole_seconds().max(0);
    let (days, hours, mins, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) if s == 0 => format!("{m}m"),
        (0, 0, m) => format!("{m}m {s}s"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn day() -> Validity {
        Validity {
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2026-01-02 0:00 UTC),
        }
    }

    #[test]
    fn due_after_two_thirds_spread_over_a_twentieth_of_the_lifetime() {
        let v = day();
        let expires_in = ExpiresIn::default().of(&v);
        let start = v.not_before;
        let latest = due_at(&v, expires_in, start, 0.0);
        let earliest = due_at(&v, expires_in, start, 0.999_999);
        assert_eq!(latest, v.not_after - expires_in);
        assert!(latest - earliest > time::Duration::minutes(71));
        assert!(latest - earliest <= time::Duration::minutes(72));
        assert!(earliest > start + time::Duration::hours(14));
    }

    #[test]
    fn close_to_due_picks_an_instant_before_it_and_past_due_is_now() {
        let v = day();
        let expires_in = time::Duration::hours(8);
        let due = v.not_after - expires_in;
        let now = due - time::Duration::minutes(10);
        let at = due_at(&v, expires_in, now, 0.5);
        assert_eq!(at, now + time::Duration::minutes(5));
        let late = due + time::Duration::minutes(1);
        assert_eq!(due_at(&v, expires_in, late, 0.7), late);
    }

    #[test]
    fn expires_in_must_leave_part_of_the_lifetime() {
        let v = day();
        assert!(ExpiresIn::Remaining(time::Duration::hours(24)).of_renewable(&v).is_err());
        assert!(ExpiresIn::Percent(100).of_renewable(&v).is_err());
        assert_eq!(
            ExpiresIn::Remaining(time::Duration::hours(2)).of_renewable(&v),
            Ok(time::Duration::hours(2))
        );
        let parse = |s: &str| (s == "2h").then(|| time::Duration::hours(2));
        assert_eq!(ExpiresIn::parse("25%", parse), Ok(ExpiresIn::Percent(25)));
        assert_eq!(ExpiresIn::parse("100%", parse), Ok(ExpiresIn::Percent(100)));
        assert!(ExpiresIn::parse("101%", parse).is_err());
        assert!(ExpiresIn::parse("0%", parse).is_err());
        assert!(ExpiresIn::parse("soon", parse).is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter_within_a_twentieth_and_the_end() {
        let v = day();
        let mut b = Backoff::new();
        let now = v.not_before + time::Duration::hours(20);
        let waits: Vec<_> = (0..12).map(|_| b.next(&v, now, 0.999).unwrap()).collect();
        assert!(waits[0] <= Duration::from_secs(10) && waits[0] >= Duration::from_secs(9));
        assert!(waits[1] > waits[0]);
        // The cap: a twentieth of a day is 72 minutes.
        assert!(waits[11] <= Duration::from_secs(72 * 60));
        assert!(waits[11] > Duration::from_secs(71 * 60));
        // Never past the end, and nothing after it.
        let near_end = v.not_after - time::Duration::seconds(3);
        assert!(b.next(&v, near_end, 0.999).unwrap() <= Duration::from_secs(3));
        assert_eq!(b.next(&v, v.not_after + time::Duration::seconds(1), 0.5), None);
        b.reset();
        assert!(b.next(&v, now, 0.0).unwrap() == Duration::from_secs(5));
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(time::Duration::seconds(90)), "1m 30s");
        assert_eq!(human(time::Duration::hours(24)), "1d");
        assert_eq!(human(time::Duration::minutes(125)), "2h 5m");
    }
}
