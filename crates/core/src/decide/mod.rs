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

use std::time::Duration;

use crate::{
    config::PollPolicy,
    detect::detect_changes,
    events::{ChangeValue, Event, EventType},
    model::{JobSnapshot, JobState, Phase, Severity},
    moment::Moment,
};
use clocks::{ClockInput, ClockSettings, Clocks};

/// First retry delay after a failed poll; doubles per failure up to the job's interval.
pub const FAILURE_BACKOFF_INITIAL: Duration = Duration::from_secs(2);
/// A job the service does not know is polled this many intervals apart: it may
/// reappear (a name fixed, eventual consistency), and a purged one costs little.
pub const NOT_FOUND_INTERVAL_FACTOR: u32 = 12;

/// What a job's bookkeeping remembers between polls and across restarts (the columns of
/// `jobs` with the same names). In declaration order: what every poll reads (failures,
/// terminal) comes first, beside the scheduler's own per-poll fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Memory {
    /// Failed polls in a row.
    pub consecutive_failures: u32,
    /// `job.poll_failing` was sent for the current streak.
    pub failing_alerted: bool,
    /// `job.not_found` was sent and no success followed.
    pub not_found_alerted: bool,
    /// When the job was first seen in a terminal state (None: not terminal).
    pub terminal_since: Option<Moment>,
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
        created_at: Option<Moment>,
        /// The document is news even if no watched field moved (a new ETag or text):
        /// it is written.
        news: bool,
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
    pub now: Moment,
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
    pub acked_at: Option<Moment>,
    /// The job is muted (`iewatch mute`), when the caller read it: reminders pause.
    pub muted: bool,
    /// The memory was repaired when it was read (a damaged or future value): it is
    /// written at this poll whatever happens.
    pub repaired: bool,
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

/// The answer of [`decide`]: everything one poll changes, for the caller to write and
/// send as it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Every event of this poll, in order: the changes found in the document (a copy's
    /// with its ETA), then bookkeeping (failing, not found, recovered), then the clocks.
    pub events: Vec<Event>,
    /// The memory after this poll, when it changed (None: as it was, nothing cloned).
    pub memory: Option<Memory>,
    /// When to poll again.
    pub next: NextPoll,
    /// Whether this poll must be written (events, news, a changed or repaired memory);
    /// else only its time is noted.
    pub write: bool,
    /// After an unchanged poll that changed nothing: until when every further unchanged
    /// poll of the same job, memory and settings decides the same (see
    /// [`clocks::quiet_until`]), so the caller need not ask again before then.
    pub quiet_until: Option<Moment>,
}

impl Decision {
    /// The memory after this poll: the new one, or `before` when it did not change.
    pub fn memory_after<'a>(&'a self, before: &'a Memory) -> &'a Memory {
        self.memory.as_ref().unwrap_or(before)
    }
}

/// [`Memory`] besides its clocks: small and copied freely, so that the bookkeeping of a
/// poll where nothing happened clones nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Streaks {
    consecutive_failures: u32,
    failing_alerted: bool,
    not_found_alerted: bool,
    terminal_since: Option<Moment>,
}

impl Streaks {
    fn of(memory: &Memory) -> Self {
        Streaks {
            consecutive_failures: memory.consecutive_failures,
            failing_alerted: memory.failing_alerted,
            not_found_alerted: memory.not_found_alerted,
            terminal_since: memory.terminal_since,
        }
    }

    fn with(self, clocks: Clocks) -> Memory {
        Memory {
            consecutive_failures: self.consecutive_failures,
            failing_alerted: self.failing_alerted,
            not_found_alerted: self.not_found_alerted,
            terminal_since: self.terminal_since,
            clocks,
        }
    }
}

/// What the bookkeeping rules decide.
struct Bookkept {
    events: Vec<Event>,
    streaks: Streaks,
    next: NextPoll,
}

/// One pure step per poll: the changes between the recorded job and the new one, every
/// bookkeeping rule, then the time-driven ones.
pub fn decide(memory: &Memory, outcome: Outcome<'_>, context: &Context<'_>) -> Decision {
    let before = Streaks::of(memory);
    let Bookkept {
        mut events,
        streaks,
        next,
    } = bookkeeping(before, outcome, context);
    let (job, created_at, news) = match outcome {
        Outcome::Changed {
            job,
            created_at,
            news,
        } => (Some(job), created_at, news),
        _ => (context.recorded, None, false),
    };
    let mut detected = match outcome {
        Outcome::Changed { job, .. } => detect_changes(context.recorded, job),
        _ => Vec::new(),
    };
    let input = ClockInput {
        now: context.now,
        job,
        created_at,
        terminal_since: streaks.terminal_since,
        polls_failing: streaks.failing_alerted,
        acked_at: context.acked_at,
        muted: context.muted,
        settings: context.clocks,
    };
    let (clock_events, clocks) = clocks::tick(&memory.clocks, &input);
    events.extend(clock_events);
    clocks::with_eta(&mut detected, clocks.as_ref().unwrap_or(&memory.clocks));
    detected.append(&mut events);
    let after = match clocks {
        Some(clocks) => Some(streaks.with(clocks)),
        None => (streaks != before).then(|| streaks.with(memory.clocks.clone())),
    };
    // New error-log links are written even with no event: the error-log reader works from
    // the recorded snapshot, and a Resource Manager document (no ETag) that only gained
    // an `errorLogUri` would otherwise never be recorded.
    let new_logs = job.is_some_and(|job| {
        context
            .recorded
            .is_none_or(|recorded| recorded.notices.error_logs != job.notices.error_logs)
    });
    let write = !detected.is_empty() || news || new_logs || after.is_some() || context.repaired;
    // Nothing happened and nothing was written: the same poll gives the same answer
    // until a rule's time comes.
    let quiet_until = (matches!(outcome, Outcome::Unchanged) && !write)
        .then(|| clocks::quiet_until(&memory.clocks, &input));
    Decision {
        events: detected,
        memory: after,
        next,
        write,
        quiet_until,
    }
}

/// The interval to wait after observing `state` (None: never observed yet): the
/// configured interval while something happens (Shipping, Received, Transferring,
/// Packaging, Faulted, and Data Box's stages), three times that while the customer has
/// the next move (Creating; Data Box's AwaitingShipmentDetails and Delivered), twelve
/// times once terminal; an explicit `[daemon.poll_interval_by_state]` entry wins.
pub fn poll_interval(policy: &PollPolicy, state: Option<&JobState>) -> Duration {
    let Some(state) = state else {
        return policy.base;
    };
    if let Some(explicit) = policy.by_state.get(state.as_str()) {
        return *explicit;
    }
    match state.phase() {
        Phase::CustomerMove => policy.base.saturating_mul(3),
        Phase::Completed | Phase::Ended => policy.base.saturating_mul(12),
        Phase::InProgress => policy.base,
    }
}

fn bookkeeping(memory: Streaks, outcome: Outcome<'_>, context: &Context<'_>) -> Bookkept {
    let recorded_state = context.recorded.map(|j| &j.state);
    match outcome {
        Outcome::Changed { job, .. } => {
            let state = &job.state;
            let terminal_since = if state.is_terminal() {
                Some(memory.terminal_since.unwrap_or(context.now))
            } else {
                None
            };
            Bookkept {
                events: recovery_events(memory),
                streaks: Streaks {
                    terminal_since,
                    ..recovered(memory)
                },
                next: NextPoll::Interval(poll_interval(context.policy, Some(state))),
            }
        }
        Outcome::Unchanged => Bookkept {
            events: recovery_events(memory),
            streaks: recovered(memory),
            next: NextPoll::Interval(poll_interval(context.policy, recorded_state)),
        },
        Outcome::Failed {
            error,
            not_found,
            retry_after,
        } => failed(memory, error, not_found, retry_after, context),
    }
}

fn recovered(memory: Streaks) -> Streaks {
    Streaks {
        consecutive_failures: 0,
        failing_alerted: false,
        not_found_alerted: false,
        ..memory
    }
}

/// `job.poll_recovered` is owed only when `job.poll_failing` was sent.
fn recovery_events(memory: Streaks) -> Vec<Event> {
    if memory.failing_alerted {
        vec![Event::bare(EventType::JobPollRecovered, Severity::Info)]
    } else {
        Vec::new()
    }
}

fn failed(
    memory: Streaks,
    error: &str,
    not_found: bool,
    retry_after: Option<Duration>,
    context: &Context<'_>,
) -> Bookkept {
    let mut after = Streaks {
        consecutive_failures: memory.consecutive_failures.saturating_add(1),
        ..memory
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
    Bookkept {
        events,
        streaks: after,
        next,
    }
}

/// How long a job has been terminal, once that is longer than `stop_after`: such a job
/// is no longer polled.
pub fn retired_for(memory: &Memory, now: Moment, stop_after: Duration) -> Option<Duration> {
    let terminal_for = now.since(memory.terminal_since?);
    (terminal_for >= stop_after).then_some(terminal_for)
}

#[cfg(test)]
mod tests;
