//! Service deadlines: which of the service's clocks run for a job now (unshipped
//! deletion, unfulfilled cancellation, auto-complete, purge after completion), and the
//! warnings owed at each configured lead, keyed so that a jittering service time warns
//! once.

use std::time::Duration;

use serde_json::json;

use super::{
    days, rfc3339, ClockInput, Clocks, Working, COMPLETED_PURGE, UNFULFILLED_CANCELLATION,
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

/// The service clocks that run for a job: at most one of each kind, so a fixed array
/// (nothing allocated on a poll).
type Found = [Option<ServiceClock>; 4];

fn service_clocks(clocks: &Clocks, job: &JobSnapshot, terminal_since: Option<Moment>) -> Found {
    let mut found: Found = Default::default();
    let state = job.state.as_str();
    let created = clocks.created.unwrap_or(clocks.state_since);
    if matches!(state, "Creating" | "AwaitingShipmentDetails") {
        found[0] = Some(ServiceClock {
            deadline: "deletion",
            at: created.saturating_add(UNSHIPPED_DELETION),
            consequence: "the service deletes a job whose drives were never shipped; ship and enter the tracking number before then, or create the job again",
            warn_ahead: true,
        });
    }
    if state == "DeviceOrdered" {
        found[1] = Some(ServiceClock {
            deadline: "cancellation",
            at: created.saturating_add(UNFULFILLED_CANCELLATION),
            consequence: "the service cancels a Data Box order it could not fulfil within 90 days",
            warn_ahead: true,
        });
    }
    let auto_complete = job.notices.action.as_ref().and_then(|a| a.auto_complete_at);
    if let Some(at) = auto_complete {
        found[2] = Some(ServiceClock {
            deadline: "auto_complete",
            at,
            consequence: "the service completes the copy stage by itself, without the files that failed; answer in the portal before then",
            warn_ahead: true,
        });
    }
    if let (Phase::Completed, Some(since)) = (job.state.phase(), terminal_since) {
        found[3] = Some(ServiceClock {
            deadline: "purge",
            at: since.saturating_add(COMPLETED_PURGE),
            consequence: "the service deletes the completed job; its history stays in iewatch",
            warn_ahead: false,
        });
    }
    found
}

pub(super) fn deadlines(
    clocks: &mut Working<'_>,
    job: &JobSnapshot,
    now: Moment,
    input: &ClockInput<'_>,
    events: &mut Vec<Event>,
) {
    let found = service_clocks(clocks, job, input.terminal_since);
    let found = found.iter().flatten();
    // A warning is keyed by the deadline it warns about, within a tolerance: a service
    // time that jitters by minutes between polls is the same deadline. A key that matches
    // follows the deadline (so a slow drift never repeats a warning); keys of clocks that
    // no longer apply go, so the list stays as short as the clocks.
    let followed = |key: &String| -> Option<String> {
        let (deadline, at, lead) = parse_key(key)?;
        let clock = found.clone().find(|c| {
            c.deadline == deadline && c.at.max(at).since(c.at.min(at)) <= SAME_DEADLINE
        })?;
        Some(warned_key(deadline, clock.at, lead))
    };
    // Keys say their time to the second, as the clock's own key would.
    let stays = |key: &String| {
        parse_key(key).is_some_and(|(deadline, at, _)| {
            found
                .clone()
                .any(|c| c.deadline == deadline && c.at.unix_secs() == at.unix_secs())
        })
    };
    if !clocks.warned.iter().all(stays) {
        let clocks = clocks.to_mut();
        clocks.warned = clocks.warned.iter().filter_map(followed).collect();
    }
    for clock in found {
        let leads = leads(clock, input);
        // Every lead already reached is owed; one event says the nearest, and all are
        // marked (a job first seen a day before its deadline gets one warning, not two).
        let owed = |lead: &&Duration| {
            now >= clock.at.saturating_sub(**lead) && !warned(clocks, clock, **lead)
        };
        let Some(nearest) = leads.iter().filter(owed).min().copied() else {
            continue;
        };
        let reached: Vec<String> = leads
            .iter()
            .filter(owed)
            .map(|lead| warned_key(clock.deadline, clock.at, lead_secs(*lead)))
            .collect();
        let created_by_service = clocks.created_by_service;
        clocks.to_mut().warned.extend(reached);
        events.push(warning(clock, lead_secs(nearest), now, created_by_service));
    }
}

/// The leads at which `clock` is told: the configured warnings, or (a clock announced
/// once when it starts) one lead that is always reached.
fn leads<'a>(clock: &ServiceClock, input: &ClockInput<'a>) -> &'a [Duration] {
    match clock.warn_ahead {
        true => input.settings.deadline_warnings.as_slice(),
        false => &[Duration::MAX],
    }
}

/// Whether `clocks` says `clock` was told at `lead`.
fn warned(clocks: &Clocks, clock: &ServiceClock, lead: Duration) -> bool {
    clocks.warned.iter().any(|key| {
        parse_key(key).is_some_and(|(deadline, at, warned_lead)| {
            (deadline, at.unix_secs(), warned_lead)
                == (clock.deadline, clock.at.unix_secs(), lead_secs(lead))
        })
    })
}

/// When the next warning not told yet is owed (see [`super::quiet`]).
pub(super) fn next_warning(
    clocks: &Clocks,
    job: &JobSnapshot,
    input: &ClockInput<'_>,
) -> Option<Moment> {
    let found = service_clocks(clocks, job, input.terminal_since);
    found
        .iter()
        .flatten()
        .flat_map(|clock| {
            leads(clock, input)
                .iter()
                .filter(|lead| !warned(clocks, clock, **lead))
                .map(|lead| clock.at.saturating_sub(*lead))
        })
        .min()
}

/// A lead as its key writes it: seconds, and `u64::MAX` for a clock told once.
fn lead_secs(lead: Duration) -> u64 {
    lead.as_secs()
}

/// The `warned` key of `deadline` at `at` for the lead `lead` (seconds).
fn warned_key(deadline: &str, at: Moment, lead: u64) -> String {
    format!("{deadline}:{}:{lead}", at.unix_secs())
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
fn parse_key(key: &str) -> Option<(&str, Moment, u64)> {
    let mut parts = key.splitn(3, ':');
    let deadline = parts.next()?;
    let at = Moment::from_unix_secs(parts.next()?.parse().ok()?);
    Some((deadline, at, parts.next()?.parse().ok()?))
}
