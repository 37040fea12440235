//! [`Moment`], iewatch's one time type: a UTC instant between 1970-01-01 and
//! 9999-12-30T00:00:00Z, bounded by construction. Every time from outside (a service's
//! timestamp, a stored row, a JSON column, the system clock) becomes a `Moment` where it
//! enters, by a conversion that refuses ([`Moment::parse`]) or clamps
//! ([`Moment::from_unix_secs`], [`Moment::from_system`]) what lies outside; inside, only
//! saturating arithmetic. So no odd timestamp or hand-edited row can panic a formatter or
//! overflow an addition and stop a poll worker or a command. Built on `jiff::Timestamp`
//! (parsing RFC 3339 with any offset, exact arithmetic); the text forms are ours.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use jiff::{civil::DateTime, tz::Offset, SignedDuration, Timestamp};

mod serde_forms;

pub use serde_forms::{
    rfc3339, rfc3339_opt, sql_text, sql_text_opt, unix_secs, unix_secs_mark, unix_secs_opt,
};

/// Seconds from the epoch to 9999-12-30T00:00:00Z: RFC 3339 text ends with the year 9999,
/// and `jiff` keeps the last day free so that any offset can be applied.
const LATEST_SECS: i64 = 253_402_128_000;

/// A UTC instant in 1970 to 9999 (see the module's doc).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(Timestamp);

impl Moment {
    /// The earliest moment: the Unix epoch.
    pub const EPOCH: Moment = Moment(Timestamp::UNIX_EPOCH);
    /// The latest moment: 9999-12-30T00:00:00Z.
    pub const LATEST: Moment = Moment(Timestamp::constant(LATEST_SECS, 0));

    /// iewatch's time now (the daemon's steady wall clock, see [`crate::wall_clock`]).
    pub fn now() -> Moment {
        crate::wall_clock::now()
    }

    /// `ts` if it lies in 1970 to 9999; None otherwise.
    fn bounded(ts: Timestamp) -> Option<Moment> {
        let at = Moment(ts);
        (Moment::EPOCH..=Moment::LATEST).contains(&at).then_some(at)
    }

    /// `ts` moved into 1970 to 9999.
    fn clamped(ts: Timestamp) -> Moment {
        Moment(ts).clamp(Moment::EPOCH, Moment::LATEST)
    }

    /// A system time (the OS clock, a file's mtime), clamped into 1970 to 9999.
    pub fn from_system(at: SystemTime) -> Moment {
        match Timestamp::try_from(at) {
            Ok(ts) => Moment::clamped(ts),
            Err(_) if at < SystemTime::UNIX_EPOCH => Moment::EPOCH,
            Err(_) => Moment::LATEST,
        }
    }

    /// The same instant as a `SystemTime`, for the OS and for libraries that take one.
    pub fn to_system(self) -> SystemTime {
        // Every instant of 1970 to 9999 is a SystemTime on the platforms iewatch runs on.
        SystemTime::try_from(self.0).unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// `secs` seconds after the epoch, clamped (a stored `u64::MAX` is the year 9999, a
    /// negative number the epoch).
    pub fn from_unix_secs(secs: i64) -> Moment {
        Moment::clamped(Timestamp::constant(secs.clamp(0, LATEST_SECS), 0))
    }

    /// Whole seconds since the epoch (never negative).
    pub fn unix_secs(self) -> i64 {
        self.0.as_second()
    }

    /// Milliseconds since the epoch (never negative).
    pub fn unix_millis(self) -> i64 {
        self.0.as_millisecond()
    }

    /// Reads a time: RFC 3339 with `Z` or any offset (`2026-05-01T10:00:00+02:00`), or
    /// without one (`2026-05-01T10:00:00`, SQLite's `2026-05-01 10:00:00.000`), then UTC.
    /// None for text that is not a time or a time outside 1970 to 9999.
    pub fn parse(text: &str) -> Option<Moment> {
        let text = text.trim();
        if let Ok(ts) = text.parse::<Timestamp>() {
            return Moment::bounded(ts);
        }
        let civil: DateTime = text.parse().ok()?;
        Moment::bounded(Offset::UTC.to_timestamp(civil).ok()?)
    }

    /// A required time column read back (`events.observed_at`, `deliveries.created_at`,
    /// ...): as [`Moment::parse`], and the epoch for text an operator's hand edit made
    /// unreadable, so the row is shown and a command never fails on it.
    pub fn parse_stored(text: &str) -> Moment {
        Moment::parse(text).unwrap_or_default()
    }

    /// A service's timestamp: ISO 8601 with `Z` or an offset (`+05:30`, seven-digit
    /// fractions), to the second. None for text without an offset (whose zone nobody
    /// knows), the year-0001 sentinel, anything outside 1970 to 9999, nonsense, or text
    /// longer than any timestamp.
    pub fn from_service(text: &str) -> Option<Moment> {
        let text = text.trim();
        if text.len() > 64 {
            return None;
        }
        let ts: Timestamp = text.parse().ok()?;
        Moment::bounded(Timestamp::from_second(ts.as_second()).ok()?)
    }

    /// `self + by`, at most [`Moment::LATEST`].
    #[must_use]
    pub fn saturating_add(self, by: Duration) -> Moment {
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        self.0
            .checked_add(by)
            .map_or(Moment::LATEST, Moment::clamped)
    }

    /// `self - by`, at least [`Moment::EPOCH`].
    #[must_use]
    pub fn saturating_sub(self, by: Duration) -> Moment {
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        self.0
            .checked_sub(by)
            .map_or(Moment::EPOCH, Moment::clamped)
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    pub fn since(self, earlier: Moment) -> Duration {
        self.checked_since(earlier).unwrap_or_default()
    }

    /// How long after `earlier` this is; None if `earlier` is later.
    pub fn checked_since(self, earlier: Moment) -> Option<Duration> {
        Duration::try_from(self.0.duration_since(earlier.0)).ok()
    }

    /// Its UTC date and time of day.
    fn civil(self) -> DateTime {
        Offset::UTC.to_datetime(self.0)
    }

    /// RFC 3339 UTC to the second: `2026-05-01T10:00:00Z`.
    pub fn rfc3339_seconds(self) -> String {
        let c = self.civil();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            c.year(),
            c.month(),
            c.day(),
            c.hour(),
            c.minute(),
            c.second()
        )
    }

    /// RFC 3339 UTC to the millisecond: `2026-05-01T10:00:00.250Z`.
    pub fn rfc3339_millis(self) -> String {
        let mut text = self.sql_text().replacen(' ', "T", 1);
        text.push('Z');
        text
    }

    /// SQLite's own form (`2026-05-01 10:00:00.250`, UTC), the form of every time column,
    /// so that `datetime('now', '-1 day')` comparisons work on the text.
    pub fn sql_text(self) -> String {
        let c = self.civil();
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
            c.year(),
            c.month(),
            c.day(),
            c.hour(),
            c.minute(),
            c.second(),
            c.subsec_nanosecond() / 1_000_000
        )
    }
}

impl Default for Moment {
    /// The epoch: the "not yet" of a stored time that was never set.
    fn default() -> Moment {
        Moment::EPOCH
    }
}

impl fmt::Display for Moment {
    /// RFC 3339 UTC to the second.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339_seconds())
    }
}

impl fmt::Debug for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339_millis())
    }
}

impl From<SystemTime> for Moment {
    fn from(at: SystemTime) -> Moment {
        Moment::from_system(at)
    }
}

#[cfg(test)]
mod tests;
