//! `decide`: every bookkeeping rule of a watched job as one pure function of (what the
//! job remembers, what a poll brought, the time). Failure streaks, `job.poll_failing`
//! once per streak, `job.not_found` (and "purged" after a terminal state), recovery,
//! `terminal_since`, and the delay before the next poll all live here; the scheduler
//! does the I/O and the store writes the [`Memory`] it is handed verbatim. No clock, no
//! randomness: jitter is named in [`NextPoll`] and applied by the caller. The
//! time-driven rules (deadlines, stalls, reminders, ETA) are in [`clocks`] and run on
//! every outcome.

pub mod clocks;
mod future;

use std::time::{Duration, SystemTime};

use crate::{
    config::PollPolicy,
    events::{ChangeValue, Event, EventType},
    model::{JobSnapshot, Severity},
};
use clocks::{ClockInput, ClockSettings, Clocks};

/// First retry delay after a failed poll; doubles per failure up to the job's interval.
pub const FAILURE_BACKOFF_INITIAL: Duration = Duration::from_secs(2);
/// A job the service does not know is polled this many intervals apart: it may
/// reappear (a name fixed, eventual consistency), and a purged one costs little.
pub const NOT_FOUND_INTERVAL_FACTOR: u32 = 12;

/// What a job's bookkeeping remembers between polls and across restarts (the columns of
/// `jobs` with the same names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Failed polls in a row.
    pub consecutive_failures: u32,
    /// `job.poll_failing` was sent for the current streak.
    pub failing_alerted: bool,
    /// `job.not_found` was sent and no success followed.
    pub not_found_alerted: bool,
    /// When the job was first seen in a terminal state (None: not terminal).
    pub terminal_since: Option<SystemTime>,
    /// The time-driven rules' memory (`jobs.clocks`).
    pub clocks: Clocks,
}

impl Memory {
    /// True while a failure streak is going on.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures > 0
    }
}

/// What one poll brought, as far as bookkeeping cares.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// A document with something new (possibly no event: a new ETag, equal fields).
    Changed {
        /// The job in it.
        job: &'a JobSnapshot,
        /// The service's creation time, if the document gives one.
        created_at: Option<SystemTime>,
    },
    /// 304/412, or a document with nothing new.
    Unchanged,
    /// The poll failed.
    Failed {
        /// One line, no secrets.
        error: &'a str,
        /// The service answered 404.
        not_found: bool,
        /// The delay the service asked for.
        retry_after: Option<Duration>,
    },
}

/// What `decide` needs besides the memory and the outcome.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Now.
    pub now: SystemTime,
    /// The job last recorded, before this poll.
    pub recorded: Option<&'a JobSnapshot>,
    /// The job's intervals.
    pub policy: &'a PollPolicy,
    /// Failures in a row before `job.poll_failing`.
    pub failure_threshold: u32,
    /// The longest Retry-After honoured.
    pub max_retry_after: Duration,
    /// Deadlines, stalls, reminders.
    pub clocks: &'a ClockSettings,
    /// The job's last `iewatch ack`, when the caller read it (see
    /// [`clocks::reminder_due`]).
    pub acked_at: Option<SystemTime>,
    /// The job is muted (`iewatch mute`), when the caller read it: reminders pause.
    pub muted: bool,
}

/// When to poll again, with the kind of jitter the caller adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextPoll {
    /// The job's interval, stretched or shrunk a little so jobs do not fire together.
    Interval(Duration),
    /// A failure backoff; the caller waits a random 50-100 % of it.
    Backoff(Duration),
    /// Exactly this long: the service asked for it (Retry-After).
    Exactly(Duration),
}

/// The answer of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Bookkeeping events to record (failing, not found, recovered).
    pub events: Vec<Event>,
    /// The memory after this poll.
    pub memory: Memory,
    /// When to poll again.
    pub next: NextPoll,
}

impl Decision {
    /// True when the memory or the events must be written even if the document brought
    /// nothing new.
    pub fn must_write(&self, before: &Memory) -> bool {
        !self.events.is_empty() || self.memory != *before
    }
}

/// Applies every bookkeeping rule to one poll's outcome, then the time-driven ones.
pub fn decide(memory: &Memory, outcome: Outcome<'_>, context: &Context<'_>) -> Decision {
    let mut decision = bookkeeping(memory, outcome, context);
    let (job, created_at) = match outcome {
        Outcome::Changed { job, created_at } => (Some(job), created_at),
        _ => (context.recorded, None),
    };
    let (events, clocks) = clocks::tick(
        &memory.clocks,
        &ClockInput {
            now: context.now,
            job,
            created_at,
            terminal_since: decision.memory.terminal_since,
            polls_failing: decision.memory.failing_alerted,
            acked_at: context.acked_at,
            muted: context.muted,
            settings: context.clocks,
        },
    );
    decision.events.extend(events);
    decision.memory.clocks = clocks;
    decision
}

fn bookkeeping(memory: &Memory, outcome: Outcome<'_>, context: &Context<'_>) -> Decision {
    let recorded_state = context.recorded.map(|j| &j.state);
    match outcome {
        Outcome::Changed { job, .. } => {
            let state = &job.state;
            let mut after = recovered(memory);
            after.terminal_since = if state.is_terminal() {
                Some(memory.terminal_since.unwrap_or(context.now))
            } else {
                None
            };
            Decision {
                events: recovery_events(memory),
                memory: after,
                next: NextPoll::Interval(context.policy.interval(Some(state))),
            }
        }
        Outcome::Unchanged => Decision {
            events: recovery_events(memory),
            memory: recovered(memory),
            next: NextPoll::Interval(context.policy.interval(recorded_state)),
        },
        Outcome::Failed {
            error,
            not_found,
            retry_after,
        } => failed(memory, error, not_found, retry_after, context),
    }
}

fn recovered(memory: &Memory) -> Memory {
    Memory {
        consecutive_failures: 0,
        failing_alerted: false,
        not_found_alerted: false,
        ..memory.clone()
    }
}

/// `job.poll_recovered` is owed only when `job.poll_failing` was sent.
fn recovery_events(memory: &Memory) -> Vec<Event> {
    if memory.failing_alerted {
        vec![Event::bare(EventType::JobPollRecovered, Severity::Info)]
    } else {
        Vec::new()
    }
}

fn failed(
    memory: &Memory,
    error: &str,
    not_found: bool,
    retry_after: Option<Duration>,
    context: &Context<'_>,
) -> Decision {
    let mut after = Memory {
        consecutive_failures: memory.consecutive_failures.saturating_add(1),
        ..memory.clone()
    };
    let mut events = Vec::new();
    if not_found {
        if !after.not_found_alerted {
            let purged = context.recorded.is_some_and(|j| j.state.is_terminal());
            let (severity, text) = if purged {
                (
                    Severity::Info,
                    format!("purged by the service after it ended ({error})"),
                )
            } else {
                (Severity::Error, error.to_owned())
            };
            events.push(Event::change(
                EventType::JobNotFound,
                None,
                None,
                Some(ChangeValue::Text(text)),
                severity,
            ));
            after.not_found_alerted = true;
        }
    } else if after.consecutive_failures >= context.failure_threshold && !after.failing_alerted {
        events.push(Event::change(
            EventType::JobPollFailing,
            None,
            None,
            Some(ChangeValue::text(error)),
            Severity::Error,
        ));
        after.failing_alerted = true;
    }
    let next = if let Some(delay) = retry_after {
        // Honoured even past the interval, since the service asked for it, but only up to
        // `max_retry_after`: a peer must not be able to stop a job's polling.
        NextPoll::Exactly(delay.min(context.max_retry_after))
    } else if not_found {
        NextPoll::Interval(
            context
                .policy
                .base
                .saturating_mul(NOT_FOUND_INTERVAL_FACTOR),
        )
    } else {
        let doublings = after.consecutive_failures.saturating_sub(1).min(16);
        NextPoll::Backoff(
            FAILURE_BACKOFF_INITIAL
                .saturating_mul(1u32 << doublings)
                .min(context.policy.base),
        )
    };
    Decision {
        events,
        memory: after,
        next,
    }
}

/// How long a job has been terminal, once that is longer than `stop_after`: such a job
/// is no longer polled.
pub fn retired_for(memory: &Memory, now: SystemTime, stop_after: Duration) -> Option<Duration> {
    let terminal_for = now
        .duration_since(memory.terminal_since?)
        .unwrap_or_default();
    (terminal_for >= stop_after).then_some(terminal_for)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn policy() -> PollPolicy {
        PollPolicy {
            base: 5 * MIN,
            by_state: std::sync::Arc::new(BTreeMap::from([("Transferring".to_owned(), MIN)])),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn failing(failures: u32, failing_alerted: bool, not_found_alerted: bool) -> Memory {
        Memory {
            consecutive_failures: failures,
            failing_alerted,
            not_found_alerted,
            terminal_since: None,
            clocks: Clocks::default(),
        }
    }

    fn job(state: &str) -> JobSnapshot {
        JobSnapshot::assemble(None, state.into(), None, None)
    }

    /// The bookkeeping rules alone: the clocks are already tracking the recorded job
    /// (as they are after its first poll) and are left out of the answer; their own
    /// rules are tested in `clocks`.
    fn run(memory: &Memory, outcome: Outcome<'_>, recorded: Option<&str>) -> Decision {
        let recorded = recorded.map(job);
        let policy = policy();
        let settings = ClockSettings::default();
        let input = |job| ClockInput {
            now: at(0),
            job,
            created_at: None,
            terminal_since: memory.terminal_since,
            polls_failing: false,
            acked_at: None,
            muted: false,
            settings: &settings,
        };
        let tracking = Memory {
            clocks: clocks::tick(&Clocks::default(), &input(recorded.as_ref())).1,
            ..memory.clone()
        };
        let mut decision = decide(
            &tracking,
            outcome,
            &Context {
                now: at(0),
                recorded: recorded.as_ref(),
                policy: &policy,
                failure_threshold: 3,
                max_retry_after: 60 * MIN,
                clocks: &settings,
                acked_at: None,
                muted: false,
            },
        );
        decision.memory.clocks = Clocks::default();
        decision
    }

    fn types(decision: &Decision) -> Vec<(EventType, Severity)> {
        decision
            .events
            .iter()
            .map(|e| (e.event_type, e.severity))
            .collect()
    }

    const FAIL: Outcome<'static> = Outcome::Failed {
        error: "HTTP 500",
        not_found: false,
        retry_after: None,
    };
    const NOT_FOUND: Outcome<'static> = Outcome::Failed {
        error: "HTTP 404",
        not_found: true,
        retry_after: None,
    };

    /// One row per failure-streak rule: (memory before, events, memory after).
    #[test]
    fn failure_streaks_alert_once_at_the_threshold() {
        type Row = (Memory, Vec<(EventType, Severity)>, Memory);
        let rows: [Row; 4] = [
            (Memory::default(), vec![], failing(1, false, false)),
            (failing(1, false, false), vec![], failing(2, false, false)),
            (
                failing(2, false, false),
                vec![(EventType::JobPollFailing, Severity::Error)],
                failing(3, true, false),
            ),
            (failing(3, true, false), vec![], failing(4, true, false)),
        ];
        for (before, events, after) in rows {
            let decision = run(&before, FAIL, Some("Transferring"));
            assert_eq!(types(&decision), events, "{before:?}");
            assert_eq!(decision.memory, after, "{before:?}");
        }
    }

    #[test]
    fn failing_event_carries_the_error() {
        let decision = run(&failing(2, false, false), FAIL, None);
        assert_eq!(decision.events[0].to_text().as_deref(), Some("HTTP 500"));
    }

    /// One row per not-found rule: (memory, recorded state, events, severity and text).
    #[test]
    fn not_found_alerts_once_and_says_purged_after_a_terminal_state() {
        let first = run(&Memory::default(), NOT_FOUND, Some("Transferring"));
        assert_eq!(
            types(&first),
            vec![(EventType::JobNotFound, Severity::Error)]
        );
        assert_eq!(first.events[0].to_text().as_deref(), Some("HTTP 404"));
        assert_eq!(first.memory, failing(1, false, true));

        let again = run(&first.memory, NOT_FOUND, Some("Transferring"));
        assert!(again.events.is_empty(), "once per streak");
        assert_eq!(again.memory, failing(2, false, true));

        let purged = run(&Memory::default(), NOT_FOUND, Some("Completed"));
        assert_eq!(
            types(&purged),
            vec![(EventType::JobNotFound, Severity::Info)]
        );
        assert!(purged.events[0]
            .to_text()
            .unwrap()
            .starts_with("purged by the service after it ended"));

        let never_seen = run(&Memory::default(), NOT_FOUND, None);
        assert_eq!(never_seen.events[0].severity, Severity::Error);
    }

    #[test]
    fn not_found_never_raises_poll_failing() {
        let decision = run(&failing(5, false, true), NOT_FOUND, None);
        assert!(decision.events.is_empty());
        assert!(!decision.memory.failing_alerted);
    }

    /// One row per recovery rule: (memory, outcome, events, must write).
    #[test]
    fn recovery_ends_the_streak_and_is_announced_only_after_failing() {
        let state = job("Transferring");
        let changed = Outcome::Changed {
            job: &state,
            created_at: None,
        };
        let rows = [
            (failing(4, true, false), changed, true, true),
            (failing(4, true, false), Outcome::Unchanged, true, true),
            (failing(1, false, false), Outcome::Unchanged, false, true),
            (failing(2, false, true), changed, false, true),
            (Memory::default(), Outcome::Unchanged, false, false),
        ];
        for (before, outcome, announced, must_write) in rows {
            let decision = run(&before, outcome, Some("Transferring"));
            let expected = if announced {
                vec![(EventType::JobPollRecovered, Severity::Info)]
            } else {
                vec![]
            };
            assert_eq!(types(&decision), expected, "{before:?} {outcome:?}");
            assert_eq!(decision.memory, Memory::default(), "{before:?}");
            assert_eq!(decision.must_write(&before), must_write, "{before:?}");
        }
    }

    #[test]
    fn terminal_since_is_set_once_kept_and_cleared() {
        let completed = job("Completed");
        let transferring = job("Transferring");
        let first = run(
            &Memory::default(),
            Outcome::Changed {
                job: &completed,
                created_at: None,
            },
            None,
        );
        assert_eq!(first.memory.terminal_since, Some(at(0)));
        let earlier = Memory {
            terminal_since: Some(at(0) - Duration::from_secs(99)),
            ..Memory::default()
        };
        let kept = run(
            &earlier,
            Outcome::Changed {
                job: &completed,
                created_at: None,
            },
            None,
        );
        assert_eq!(kept.memory.terminal_since, earlier.terminal_since);
        let unchanged = run(&earlier, Outcome::Unchanged, Some("Completed"));
        assert_eq!(unchanged.memory.terminal_since, earlier.terminal_since);
        let failed = run(&earlier, FAIL, Some("Completed"));
        assert_eq!(failed.memory.terminal_since, earlier.terminal_since);
        let reopened = run(
            &earlier,
            Outcome::Changed {
                job: &transferring,
                created_at: None,
            },
            None,
        );
        assert_eq!(reopened.memory.terminal_since, None);
    }

    /// One row per delay rule: (memory, outcome, recorded state, next poll). Long because
    /// it is one table, a row per rule.
    #[test]
    fn next_poll_follows_state_backoff_retry_after_and_not_found() {
        let completed = job("Completed");
        let retry = Outcome::Failed {
            error: "HTTP 429",
            not_found: false,
            retry_after: Some(Duration::from_secs(7)),
        };
        let absurd_retry = Outcome::Failed {
            error: "HTTP 503",
            not_found: false,
            retry_after: Some(Duration::from_secs(86_400)),
        };
        let secs = Duration::from_secs;
        let rows = [
            (
                Memory::default(),
                Outcome::Unchanged,
                Some("Transferring"),
                NextPoll::Interval(MIN),
            ),
            (
                Memory::default(),
                Outcome::Unchanged,
                Some("Shipping"),
                NextPoll::Interval(5 * MIN),
            ),
            (
                Memory::default(),
                Outcome::Unchanged,
                None,
                NextPoll::Interval(5 * MIN),
            ),
            (
                Memory::default(),
                Outcome::Changed {
                    job: &completed,
                    created_at: None,
                },
                Some("Transferring"),
                NextPoll::Interval(60 * MIN),
            ),
            (Memory::default(), FAIL, None, NextPoll::Backoff(secs(2))),
            (
                failing(1, false, false),
                FAIL,
                None,
                NextPoll::Backoff(secs(4)),
            ),
            (
                failing(4, true, false),
                FAIL,
                None,
                NextPoll::Backoff(secs(32)),
            ),
            (
                failing(40, true, false),
                FAIL,
                None,
                NextPoll::Backoff(5 * MIN),
            ),
            (
                failing(u32::MAX, true, false),
                FAIL,
                None,
                NextPoll::Backoff(5 * MIN),
            ),
            (Memory::default(), retry, None, NextPoll::Exactly(secs(7))),
            (
                Memory::default(),
                absurd_retry,
                None,
                NextPoll::Exactly(60 * MIN),
            ),
            (
                Memory::default(),
                NOT_FOUND,
                None,
                NextPoll::Interval(60 * MIN),
            ),
        ];
        for (before, outcome, recorded, next) in rows {
            let decision = run(&before, outcome, recorded);
            assert_eq!(decision.next, next, "{before:?} {outcome:?} {recorded:?}");
        }
    }

    #[test]
    fn a_failure_count_at_its_limit_does_not_overflow() {
        let decision = run(&failing(u32::MAX, true, false), FAIL, None);
        assert_eq!(decision.memory.consecutive_failures, u32::MAX);
    }

    #[test]
    fn jobs_retire_after_stop_after_in_a_terminal_state() {
        let week = Duration::from_secs(7 * 86_400);
        let memory = Memory {
            terminal_since: Some(at(0)),
            ..Memory::default()
        };
        assert_eq!(retired_for(&memory, at(0), week), None);
        assert_eq!(retired_for(&memory, at(0) + week, week), Some(week));
        assert_eq!(retired_for(&Memory::default(), at(0) + week, week), None);
        assert_eq!(
            retired_for(&memory, at(0) - week, week),
            None,
            "a clock that went back does not retire"
        );
    }
}
