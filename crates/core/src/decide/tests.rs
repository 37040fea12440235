//! Unit tests of `decide`.

use std::collections::BTreeMap;

use super::*;

const MIN: Duration = Duration::from_secs(60);

fn policy() -> PollPolicy {
    PollPolicy {
        base: 5 * MIN,
        by_state: std::sync::Arc::new(BTreeMap::from([("Transferring".to_owned(), MIN)])),
    }
}

fn at(secs: u64) -> Moment {
    Moment::from_unix_secs(1_800_000_000 + i64::try_from(secs).unwrap_or(0))
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

/// The context of the tests' polls: a threshold of 3 failures, Retry-After up to an
/// hour, not acked, not muted.
fn context<'a>(
    now: Moment,
    recorded: Option<&'a JobSnapshot>,
    policy: &'a PollPolicy,
    settings: &'a ClockSettings,
) -> Context<'a> {
    Context {
        now,
        recorded,
        policy,
        failure_threshold: 3,
        max_retry_after: 60 * MIN,
        clocks: settings,
        acked_at: None,
        muted: false,
        repaired: false,
    }
}

/// The bookkeeping rules alone: the clocks are already tracking the recorded job
/// (as they are after its first poll) and are left out of the answer; their own
/// rules are tested in `clocks`.
fn run(memory: &Memory, outcome: Outcome<'_>, recorded: Option<&str>) -> Ran {
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
        clocks: clocks::tick(&Clocks::default(), &input(recorded.as_ref()))
            .1
            .unwrap_or_default(),
        ..memory.clone()
    };
    let decision = decide(
        &tracking,
        outcome,
        &context(at(0), recorded.as_ref(), &policy, &settings),
    );
    let memory = Memory {
        clocks: Clocks::default(),
        ..decision.memory_after(&tracking).clone()
    };
    Ran {
        memory,
        events: decision.events,
        next: decision.next,
        write: decision.write,
    }
}

/// A [`Decision`] with its memory after the poll, the clocks left out.
#[derive(Debug)]
struct Ran {
    events: Vec<crate::events::Event>,
    memory: Memory,
    next: NextPoll,
    write: bool,
}

fn types(decision: &Ran) -> Vec<(EventType, Severity)> {
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
        news: false,
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
        assert_eq!(decision.write, must_write, "{before:?}");
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
            news: false,
        },
        None,
    );
    assert_eq!(first.memory.terminal_since, Some(at(0)));
    let earlier = Memory {
        terminal_since: Some(at(0).saturating_sub(Duration::from_secs(99))),
        ..Memory::default()
    };
    let kept = run(
        &earlier,
        Outcome::Changed {
            job: &completed,
            created_at: None,
            news: false,
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
            news: false,
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
                news: false,
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
    assert_eq!(
        retired_for(&memory, at(0).saturating_add(week), week),
        Some(week)
    );
    assert_eq!(
        retired_for(&Memory::default(), at(0).saturating_add(week), week),
        None
    );
    assert_eq!(
        retired_for(&memory, at(0).saturating_sub(week), week),
        None,
        "a clock that went back does not retire"
    );
}

/// One step per poll: the changes found come first, in the one list of events, and a
/// document is written when it is news even if nothing in it moved.
#[test]
fn one_step_finds_the_changes_orders_the_events_and_says_whether_to_write() {
    let (was, now) = (job("Shipping"), job("Received"));
    let changed = |news| Outcome::Changed {
        job: &now,
        created_at: None,
        news,
    };
    let decision = run(&failing(4, true, false), changed(false), Some("Shipping"));
    assert_eq!(
        types(&decision),
        [
            (EventType::JobStateChanged, Severity::Info),
            (EventType::JobPollRecovered, Severity::Info),
        ],
        "the change, then the recovery"
    );
    assert!(decision.write);

    let same = Outcome::Changed {
        job: &was,
        created_at: None,
        news: false,
    };
    let quiet = run(&Memory::default(), same, Some("Shipping"));
    assert!(quiet.events.is_empty() && !quiet.write, "{quiet:?}");
    let news = Outcome::Changed {
        job: &was,
        created_at: None,
        news: true,
    };
    let tagged = run(&Memory::default(), news, Some("Shipping"));
    assert!(
        tagged.events.is_empty() && tagged.write,
        "a new ETag is written"
    );
}

/// A drive's error log that appears without any watched field moving (Resource Manager
/// has no ETag to say the document changed) is still written, so that it is read.
#[test]
fn a_new_error_log_link_alone_is_written() {
    let was = job("Transferring");
    let mut now = job("Transferring");
    now.notices.error_logs = vec![crate::model::ErrorLogRef::new(
        "D1",
        "https://acct.blob.core.windows.net/waimportexport/waies/j_D1_error.xml",
        None,
    )];
    let quiet = |job| Outcome::Changed {
        job,
        created_at: None,
        news: false,
    };
    let found = run(&Memory::default(), quiet(&now), Some("Transferring"));
    assert!(found.events.is_empty() && found.write, "{found:?}");
    let same = run(&Memory::default(), quiet(&was), Some("Transferring"));
    assert!(!same.write, "{same:?}");
}

/// A poll where nothing moved hands back no memory: the caller keeps its own, and
/// nothing of it (the clocks included) is cloned.
#[test]
fn a_quiet_poll_changes_no_memory() {
    let policy = policy();
    let settings = ClockSettings::default();
    let shipping = job("Shipping");
    let context = |now| context(now, Some(&shipping), &policy, &settings);
    let first = decide(&Memory::default(), Outcome::Unchanged, &context(at(0)));
    let tracking = first.memory.expect("the clocks start tracking the job");
    let later = at(0).saturating_add(MIN);
    let quiet = decide(&tracking, Outcome::Unchanged, &context(later));
    assert_eq!(quiet.memory, None, "{quiet:?}");
    assert!(quiet.events.is_empty() && !quiet.write);
    let failed = decide(&tracking, FAIL, &context(later));
    assert_eq!(failed.memory_after(&tracking).consecutive_failures, 1);
    assert_eq!(failed.memory_after(&tracking).clocks, tracking.clocks);
}
