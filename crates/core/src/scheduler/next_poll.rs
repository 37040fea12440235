//! When a job is polled next: the delay a decision asks for, with its jitter, and the
//! quiet an unchanged poll may begin, during which unchanged polls skip the rules.

use std::time::Duration;

use rand::Rng as _;

use crate::{
    decide::{Decision, NextPoll},
    moment::Moment,
};

/// Every interval is stretched or shrunk by up to this fraction.
const INTERVAL_JITTER: f64 = 0.1;
/// No job waits longer than this between polls, whatever a config or a header says.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(365 * 86_400);

/// What an unchanged poll that changed nothing decided, and until when every unchanged
/// poll after it decides the same ([`Decision::quiet_until`]): such a poll touches
/// neither the job's snapshot nor its clocks.
#[derive(Clone, Copy, Debug)]
pub(super) struct Quiet {
    /// Unix second before which it holds: to the second, as far as 2106 (nothing
    /// waiting: until then); past 2106 there is no quiet and every poll decides.
    until: u32,
    /// The interval decided.
    pub(super) interval: Duration,
}

impl Quiet {
    /// The quiet `decision` began, if any.
    pub(super) fn after(decision: &Decision) -> Option<Quiet> {
        let NextPoll::Interval(interval) = decision.next else {
            return None;
        };
        let until = decision.quiet_until?.unix_secs().max(0);
        Some(Quiet {
            until: u32::try_from(until).unwrap_or(u32::MAX),
            interval,
        })
    }

    /// Whether it still holds at `now`.
    pub(super) fn holds_at(self, now: Moment) -> bool {
        u32::try_from(now.unix_secs()).is_ok_and(|second| second < self.until)
    }
}

/// The delay `decide` asked for, with its jitter, never longer than [`MAX_DELAY`].
pub(super) fn with_jitter(next: NextPoll) -> Duration {
    let mut rng = rand::thread_rng();
    let (delay, factor) = match next {
        NextPoll::Interval(d) => (
            d,
            rng.gen_range(1.0 - INTERVAL_JITTER..=1.0 + INTERVAL_JITTER),
        ),
        NextPoll::Backoff(d) => (d, rng.gen_range(0.5..=1.0)),
        NextPoll::Exactly(d) => (d, 1.0),
    };
    Duration::try_from_secs_f64(delay.min(MAX_DELAY).as_secs_f64() * factor)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(next: NextPoll, quiet_until: Option<Moment>) -> Decision {
        Decision {
            events: Vec::new(),
            memory: None,
            next,
            write: false,
            quiet_until,
        }
    }

    #[test]
    fn a_quiet_holds_before_its_second_and_never_past_2106() {
        let minute = Duration::from_secs(60);
        let at = |secs| Moment::from_unix_secs(secs);
        let quiet = Quiet::after(&decision(NextPoll::Interval(minute), Some(at(1_000))));
        let quiet = quiet.expect("an interval and an end make a quiet");
        assert_eq!(quiet.interval, minute);
        assert!(quiet.holds_at(at(999)));
        assert!(!quiet.holds_at(at(1_000)));
        // Nothing waiting: it holds as far as the second can say, not beyond.
        let forever = Quiet::after(&decision(NextPoll::Interval(minute), Some(Moment::LATEST)));
        let forever = forever.expect("a quiet");
        assert!(forever.holds_at(at(4_000_000_000)));
        assert!(!forever.holds_at(at(i64::from(u32::MAX) + 1)));
        // No end, or a backoff, is no quiet.
        assert!(Quiet::after(&decision(NextPoll::Interval(minute), None)).is_none());
        assert!(Quiet::after(&decision(NextPoll::Backoff(minute), Some(at(1_000)))).is_none());
    }
}
