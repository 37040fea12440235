//! Bounded times: every time iewatch writes as text, and every count of seconds it turns
//! into a time, passes through here. RFC 3339 text exists for the years 0000 to 9999
//! only, and humantime's formatter panics outside 1970-01-01 to 9999-12-31 (as
//! `SystemTime + Duration` does on overflow), so a service's odd timestamp or a
//! hand-edited row could otherwise stop a poll worker or a command. Times from outside
//! that fall outside [`EARLIEST`, `LATEST`] are refused ([`bounded`]); times of our own
//! making are clamped ([`clamp`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The earliest time iewatch keeps: the Unix epoch.
pub const EARLIEST: SystemTime = UNIX_EPOCH;

/// Seconds from the epoch to 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
pub const LATEST_SECS: u64 = 253_402_300_799;

/// The latest time iewatch keeps: 9999-12-31T23:59:59Z.
pub fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(LATEST_SECS)
}

/// `at` if it can be written as RFC 3339 text (1970 to 9999); None otherwise.
pub fn bounded(at: SystemTime) -> Option<SystemTime> {
    (at >= EARLIEST && at <= latest()).then_some(at)
}

/// `at` moved into 1970 to 9999.
pub fn clamp(at: SystemTime) -> SystemTime {
    at.clamp(EARLIEST, latest())
}

/// The time `secs` seconds after the epoch, at most [`latest`] (a stored u64::MAX is
/// the year 9999, not a panic).
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.min(LATEST_SECS))
}

/// RFC 3339 UTC to the second, `at` clamped first.
pub fn rfc3339_seconds(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(clamp(at)).to_string()
}

/// RFC 3339 UTC to the millisecond, `at` clamped first.
pub fn rfc3339_millis(at: SystemTime) -> String {
    let at = clamp(at).min(latest() + Duration::from_millis(999));
    humantime::format_rfc3339_millis(at).to_string()
}

/// A timestamp in SQLite's own form (`YYYY-MM-DD HH:MM:SS.SSS`, UTC), so that
/// `datetime('now', '-1 day')` comparisons work on the text.
pub fn timestamp(at: SystemTime) -> String {
    let text = rfc3339_millis(at);
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Reads a [`timestamp`] back; None for text that is not one, or a time outside 1970 to
/// 9999 (a hand-edited row).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok().and_then(bounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extremes_are_written_not_panicked_on() {
        let before = UNIX_EPOCH - Duration::from_secs(1800);
        assert_eq!(rfc3339_seconds(before), "1970-01-01T00:00:00Z");
        let after = UNIX_EPOCH + Duration::from_secs(LATEST_SECS + 86_400);
        assert_eq!(rfc3339_seconds(after), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(after), "9999-12-31T23:59:59.000Z");
        assert_eq!(
            rfc3339_seconds(from_unix_secs(u64::MAX)),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(bounded(before), None);
        assert_eq!(bounded(after), None);
        assert_eq!(bounded(UNIX_EPOCH), Some(UNIX_EPOCH));
    }
}
