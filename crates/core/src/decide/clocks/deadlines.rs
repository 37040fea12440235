//! Service deadlines: which of the service's clocks run for a job now (unshipped
//! deletion, unfulfilled cancellation, auto-complete, purge after completion), and the
//! warnings owed at each configured lead, keyed so that a jittering service time warns
//! once.

use std::time::Duration;

use serde_json::json;

use super::{
    days, rfc3339, ClockInput, Clocks, COMPLETED_PURGE, UNFULFILLED_CANCELLATION,
    UNSHIPPED_DELETION,
};
use crate::{
    events::{Event, EventType},
    model::{JobSnapshot, Phase, Severity},
    moment::Moment,
};

/// One service clock that applies to the job now.
struct ServiceClock {
    /// What runs out: `deletion`, `auto_complete`, `cancellation`, `purge`.
    deadline: &'static str,
    at: Moment,
    consequence: &'static str,
    /// Warned at each lead (true), or announced once when it starts (false).
    warn_ahead: bool,
}

fn service_clocks(
    clocks: &Clocks,
    job: &JobSnapshot,
    terminal_since: Option<Moment>,
) -> Vec<ServiceClock> {
    let mut found = Vec::new();
    let state = job.state.as_str();
    let created = clocks.created.unwrap_or(clocks.state_since);
    if matches!(state, "Creating" | "AwaitingShipmentDetails") {
        found.push(ServiceClock {
            deadline: "deletion",
            at: created.saturating_add(UNSHIPPED_DELETION),
            consequence: "the service deletes a job whose drives were never shipped; ship and enter the tracking number before then, or create the job again",
            warn_ahead: true,
        });
    }
    if state == "DeviceOrdered" {
        found.push(ServiceClock {
            deadline: "cancellation",
            at: created.saturating_add(UNFULFILLED_CANCELLATION),
            consequence: "the service cancels a Data Box order it could not fulfil within 90 days",
            warn_ahead: true,
        });
    }
    let auto_complete = job.notices.action.as_ref().and_then(|a| a.auto_complete_at);
    if let Some(at) = auto_complete {
        found.push(ServiceClock {
            deadline: "auto_complete",
            at,
            consequence: "the service completes the copy stage by itself, without the files that failed; answer in the portal before then",
            warn_ahead: true,
        });
    }
    if let (Phase::Completed, Some(since)) = (job.state.phase(), terminal_since) {
        found.push(ServiceClock {
            deadline: "purge",
            at: since.saturating_add(COMPLETED_PURGE),
            consequence: "the service deletes the completed job; its history stays in iewatch",
            warn_ahead: false,
        });
    }
    found
}

pub(super) fn deadlines(
    clocks: &mut Clocks,
    job: &JobSnapshot,
    now: Moment,
    input: &ClockInput<'_>,
    events: &mut Vec<Event>,
) {
    let found = service_clocks(clocks, job, input.terminal_since);
    // A warning is keyed by the deadline it warns about, within a tolerance: a service
    // time that jitters by minutes between polls is the same deadline. A key that matches
    // follows the deadline (so a slow drift never repeats a warning); keys of clocks that
    // no longer apply go, so the list stays as short as the clocks.
    clocks.warned = std::mem::take(&mut clocks.warned)
        .into_iter()
        .filter_map(|key| {
            let (deadline, at, lead) = parse_key(&key)?;
            let clock = found.iter().find(|c| {
                c.deadline == deadline && c.at.max(at).since(c.at.min(at)) <= SAME_DEADLINE
            })?;
            Some(format!("{deadline}:{}:{lead}", clock.at.unix_secs()))
        })
        .collect();
    for clock in found {
        let key = |lead: u64| format!("{}:{}:{lead}", clock.deadline, clock.at.unix_secs());
        // A clock announced once when it starts has one lead that is always reached.
        let leads: Vec<u64> = if clock.warn_ahead {
            input
                .settings
                .deadline_warnings
                .iter()
                .map(Duration::as_secs)
                .collect()
        } else {
            vec![u64::MAX]
        };
        // Every lead already reached is owed; one event says the nearest, and all are
        // marked (a job first seen a day before its deadline gets one warning, not two).
        let reached: Vec<u64> = leads
            .iter()
            .copied()
            .filter(|lead| now >= clock.at.saturating_sub(Duration::from_secs(*lead)))
            .filter(|lead| !clocks.warned.contains(&key(*lead)))
            .collect();
        let Some(nearest) = reached.iter().min().copied() else {
            continue;
        };
        clocks.warned.extend(reached.iter().map(|l| key(*l)));
        events.push(warning(&clock, nearest, now, clocks.created_by_service));
    }
}

/// The `job.deadline` event of `clock` once its lead `nearest` was reached: in words
/// that do not move with the clock, so the history reads the same whenever it was polled.
fn warning(clock: &ServiceClock, nearest: u64, now: Moment, created_by_service: bool) -> Event {
    let counted_from = match (clock.deadline, created_by_service) {
        ("deletion" | "cancellation", true) => Some("the service's creation time"),
        ("deletion" | "cancellation", false) => {
            Some("iewatch's first sighting (the service gives no creation time)")
        }
        _ => None,
    };
    let severity = if clock.warn_ahead {
        Severity::Warning
    } else {
        Severity::Info
    };
    Event::notice(
        EventType::JobDeadline,
        None,
        // Words that do not move with the clock, so the history reads the same
        // whenever it was polled: the lead that was reached, or the fixed term.
        if clock.warn_ahead && now >= clock.at {
            // First seen after it ran out: when, not a lead it never had.
            let date = rfc3339(clock.at);
            format!(
                "{} passed on {}",
                clock.deadline,
                &date[..date.len().min(10)]
            )
        } else if clock.warn_ahead {
            format!("{} within {}", clock.deadline, days(nearest))
        } else {
            format!(
                "{} {} after completion",
                clock.deadline,
                days(COMPLETED_PURGE.as_secs())
            )
        },
        severity,
        json!({
            "deadline": clock.deadline,
            "at": rfc3339(clock.at),
            "consequence": clock.consequence,
            "counted_from": counted_from,
        }),
    )
}

/// How far a service deadline may move between polls and still be the one warned of
/// (a `stageTime` or `createdAt` that jitters): further, it is a new deadline.
const SAME_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// A `warned` key's deadline, time (Unix seconds) and lead in seconds
/// (`deletion:1767225600:345600`).
fn parse_key(key: &str) -> Option<(&str, Moment, &str)> {
    let mut parts = key.splitn(3, ':');
    let deadline = parts.next()?;
    let at = Moment::from_unix_secs(parts.next()?.parse().ok()?);
    Some((deadline, at, parts.next()?))
}
