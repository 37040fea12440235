//! The job's layout: what every poll reads sits in its first cache lines.
use std::mem::{align_of, offset_of, size_of};

use super::*;

#[test]
fn what_every_poll_reads_is_in_the_jobs_first_three_cache_lines() {
    assert_eq!(align_of::<WatchedJob>(), CACHE_LINE);
    let memory = offset_of!(WatchedJob, memory);
    let terminal_since = memory + offset_of!(Memory, terminal_since);
    assert!(
        terminal_since + size_of::<Option<Moment>>() <= HOT_LINES * CACHE_LINE,
        "memory.terminal_since ends at byte {}",
        terminal_since + size_of::<Option<Moment>>()
    );
    assert!(offset_of!(Memory, consecutive_failures) < offset_of!(Memory, clocks));
    assert!(offset_of!(WatchedJob, if_none_match) < memory);
    // Fifteen lines: a sixteenth would cost 10,000 jobs 0.6 MiB (scale_10k's 48 MiB).
    assert!(
        size_of::<WatchedJob>() <= 15 * CACHE_LINE,
        "{} bytes",
        size_of::<WatchedJob>()
    );
}
