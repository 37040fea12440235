//! The time-driven rules: what did *not* happen. Service clocks (`job.deadline`), jobs
//! and drives that stop moving (`job.stalled`/`job.resumed`, `drive.stalled`/
//! `drive.resumed`), reminders while an error condition holds (`job.reminder`), and the
//! ETA of a copy from its observed rate. Pure: the time, the settings and what the job
//! remembers ([`Clocks`]) in, events and the new [`Clocks`] out. Everything is keyed so
//! that a restart (the clocks live in `jobs.clocks`) never announces a thing twice.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    events::{Event, EventType},
    model::{DriveSnapshot, JobSnapshot, Severity},
};

const DAY: Duration = Duration::from_secs(86_400);
/// A job still waiting for its shipment details is deleted this long after creation.
pub const UNSHIPPED_DELETION: Duration = Duration::from_secs(14 * 86_400);
/// A completed job is purged this long after it completed.
pub const COMPLETED_PURGE: Duration = Duration::from_secs(90 * 86_400);
/// A Data Box order not fulfilled this long after creation is cancelled.
pub const UNFULFILLED_CANCELLATION: Duration = Duration::from_secs(90 * 86_400);
/// An ETA is given once the copy moved at least this many points...
pub const ETA_MIN_POINTS: i64 = 5;
/// ...over at least this long.
pub const ETA_MIN_ELAPSED: Duration = Duration::from_secs(600);

/// The settings of the time-driven rules (`[daemon]` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockSettings {
    /// Warn this long before a service clock runs out (`deadline_warnings`).
    pub deadline_warnings: Vec<Duration>,
    /// A job in a state longer than this is stalled (`stall_after`, per state).
    pub stall_after: BTreeMap<String, Duration>,
    /// A copying drive whose percent does not move this long is stalled.
    pub drive_stall_after: Option<Duration>,
    /// Remind this often while an error condition holds (None: never).
    pub remind_every: Option<Duration>,
    /// At most this many reminders per condition.
    pub remind_max: u32,
}

impl Default for ClockSettings {
    fn default() -> Self {
        ClockSettings {
            deadline_warnings: vec![4 * DAY, DAY],
            stall_after: default_stall_after(),
            drive_stall_after: Some(DAY),
            remind_every: Some(DAY),
            remind_max: 3,
        }
    }
}

/// How long each state usually lasts at most, from the services' documented timelines
/// (Import/Export: drives arrive within days and are processed within 7-10 business
/// days; Data Box: shipping legs of days, a copy of days). States where the customer has
/// the next move (Creating, AwaitingShipmentDetails, Delivered) and terminal ones have
/// none: the service clocks cover the first, nothing moves in the last.
pub fn default_stall_after() -> BTreeMap<String, Duration> {
    [
        ("Shipping", 10),
        ("Received", 7),
        ("Transferring", 10),
        ("Packaging", 7),
        ("DeviceOrdered", 10),
        ("DevicePrepared", 5),
        ("Dispatched", 7),
        ("PickedUp", 7),
        ("ShippedToAzureDC", 10),
        ("AtAzureDC", 5),
        ("DataCopy", 10),
        ("PreparingToShipFromAzureDC", 5),
        ("ShippedToCustomer", 10),
    ]
    .into_iter()
    .map(|(state, days)| (state.to_owned(), DAY * days))
    .collect()
}

/// Seconds since the Unix epoch: how [`Clocks`] keeps times (plain numbers in JSON, so
/// `sqlite3` users can read them with `datetime(x, 'unixepoch')`).
pub(super) fn secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn time(secs: u64) -> SystemTime {
    crate::moment::from_unix_secs(secs)
}

/// RFC 3339 UTC, seconds.
pub fn rfc3339(secs: u64) -> String {
    crate::moment::rfc3339_seconds(time(secs))
}

/// What the time-driven rules remember of a job (`jobs.clocks`, JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    /// When the job was created (Unix seconds), and whether the service said so (else
    /// it is iewatch's first sighting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// `created` is the service's own time.
    #[serde(default)]
    pub created_by_service: bool,
    /// The state the clocks below run for, and when it was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When `state` was first seen.
    #[serde(default)]
    pub state_since: u64,
    /// `job.stalled` was sent for the current state.
    #[serde(default)]
    pub stalled: bool,
    /// Deadline warnings already sent (`deadline:at:lead`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warned: Vec<String>,
    /// Where the job's copy was when its rate started being measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<(i64, u64)>,
    /// The job's ETA (Unix seconds), once meaningful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
    /// Per drive: progress, stall and ETA.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drives: BTreeMap<String, DriveClock>,
    /// The error condition being reminded of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<Reminder>,
}

impl Clocks {
    /// The nearest service deadline already warned of that has not passed yet at `now`
    /// (Unix seconds): its kind (`deletion`, `auto_completion`, `cancellation`) and when.
    /// Clocks only told once (a completed job's purge) are not deadlines to act on.
    pub fn near_deadline(&self, now: u64) -> Option<(&str, u64)> {
        self.warned
            .iter()
            .filter_map(|key| {
                let mut parts = key.rsplitn(3, ':');
                let lead: u64 = parts.next()?.parse().ok()?;
                let at: u64 = parts.next()?.parse().ok()?;
                let kind = parts.next()?;
                (lead != u64::MAX && at > now).then_some((kind, at))
            })
            .min_by_key(|(_, at)| *at)
    }
}

/// A drive's clocks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveClock {
    /// The percent last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    /// Since when it has not moved.
    pub since: u64,
    /// `drive.stalled` was sent for this standstill.
    #[serde(default)]
    pub stalled: bool,
    /// Where its copy was when the rate started being measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<(i64, u64)>,
    /// Its ETA, once meaningful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
}

/// An error condition and the reminders sent for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// `polls_failing`, `action_required`, `stalled` or `completed_with_errors`.
    pub condition: String,
    /// When it began (Unix seconds).
    pub since: u64,
    /// Reminders sent.
    pub count: u32,
    /// When the last reminder (or the condition) was sent.
    pub last: u64,
}

/// What the rules read besides the clocks.
#[derive(Clone, Copy, Debug)]
pub struct ClockInput<'a> {
    /// Now.
    pub now: SystemTime,
    /// The job as last known (None: never seen).
    pub job: Option<&'a JobSnapshot>,
    /// The service's creation time, when this poll brought one.
    pub created_at: Option<SystemTime>,
    /// When the job became terminal.
    pub terminal_since: Option<SystemTime>,
    /// `job.poll_failing` stands.
    pub polls_failing: bool,
    /// The last `iewatch ack` of the job.
    pub acked_at: Option<SystemTime>,
    /// The job is muted: reminders pause (not counted), and go on when the mute ends.
    pub muted: bool,
    /// The settings.
    pub settings: &'a ClockSettings,
}

/// Applies every time-driven rule; returns the events and the clocks after them.
pub fn tick(clocks: &Clocks, input: &ClockInput<'_>) -> (Vec<Event>, Clocks) {
    let now = secs(input.now);
    let mut after = clocks.clone();
    let mut events = Vec::new();
    if let Some(created) = input.created_at {
        if !after.created_by_service || after.created != Some(secs(created)) {
            after.created = Some(secs(created));
            after.created_by_service = true;
        }
    }
    if let Some(job) = input.job {
        if after.created.is_none() {
            after.created = Some(now);
        }
        job_stall(&mut after, job, now, input.settings, &mut events);
        drive_clocks(&mut after, job, now, input.settings, &mut events);
        deadlines(&mut after, job, now, input, &mut events);
        progress(&mut after, job, now);
    }
    remind(&mut after, input, now, &mut events);
    (events, after)
}

fn job_stall(
    clocks: &mut Clocks,
    job: &JobSnapshot,
    now: u64,
    settings: &ClockSettings,
    events: &mut Vec<Event>,
) {
    let state = job.state.as_str();
    if clocks.state.as_deref() != Some(state) {
        if clocks.stalled {
            let old = clocks.state.clone().unwrap_or_default();
            events.push(Event::notice(
                EventType::JobResumed,
                None,
                format!("{old} → {state}"),
                Severity::Info,
                json!({"state": old, "since": rfc3339(clocks.state_since), "now": state}),
            ));
        }
        clocks.state = Some(state.to_owned());
        clocks.state_since = now;
        clocks.stalled = false;
        return;
    }
    let Some(threshold) = settings.stall_after.get(state).filter(|t| !t.is_zero()) else {
        return;
    };
    let stuck_for = now.saturating_sub(clocks.state_since);
    if !clocks.stalled && stuck_for >= threshold.as_secs() {
        clocks.stalled = true;
        events.push(Event::notice(
            EventType::JobStalled,
            None,
            format!("{state} for {}", days(stuck_for)),
            Severity::Warning,
            json!({
                "state": state,
                "since": rfc3339(clocks.state_since),
                "threshold": days(threshold.as_secs()),
            }),
        ));
    }
}

/// A drive is copying while its copy status says so, or (Data Box accounts, which have
/// none) while it has a percentage short of 100.
fn is_copying(drive: &DriveSnapshot) -> bool {
    match (&drive.copy_status, &drive.state) {
        (Some(status), _) => status.as_str() == "InProgress",
        (None, Some(state)) => state.as_str() == "Transferring",
        (None, None) => drive.percent_complete.is_some_and(|p| p < 100),
    }
}

fn drive_clocks(
    clocks: &mut Clocks,
    job: &JobSnapshot,
    now: u64,
    settings: &ClockSettings,
    events: &mut Vec<Event>,
) {
    clocks
        .drives
        .retain(|id, _| job.drives.iter().any(|d| d.drive_id.as_str() == id));
    for drive in &job.drives {
        let clock = clocks
            .drives
            .entry(drive.drive_id.as_str().to_owned())
            .or_insert_with(|| DriveClock {
                percent: drive.percent_complete,
                since: now,
                ..DriveClock::default()
            });
        let moved = clock.percent != drive.percent_complete;
        let copying = is_copying(drive);
        if (moved || !copying) && clock.stalled {
            events.push(Event::notice(
                EventType::DriveResumed,
                Some(&drive.drive_id),
                format!(
                    "{}% after {}",
                    show(drive.percent_complete),
                    days(now.saturating_sub(clock.since))
                ),
                Severity::Info,
                json!({"percent": drive.percent_complete, "since": rfc3339(clock.since)}),
            ));
            clock.stalled = false;
        }
        if moved {
            clock.percent = drive.percent_complete;
            clock.since = now;
        }
        let Some(threshold) = settings.drive_stall_after.filter(|t| !t.is_zero()) else {
            continue;
        };
        if copying && !clock.stalled && now.saturating_sub(clock.since) >= threshold.as_secs() {
            clock.stalled = true;
            events.push(Event::notice(
                EventType::DriveStalled,
                Some(&drive.drive_id),
                format!(
                    "{}% for {}",
                    show(drive.percent_complete),
                    days(now.saturating_sub(clock.since))
                ),
                Severity::Warning,
                json!({
                    "percent": drive.percent_complete,
                    "since": rfc3339(clock.since),
                    "threshold": days(threshold.as_secs()),
                }),
            ));
        }
    }
}

/// One service clock that applies to the job now.
struct ServiceClock {
    /// What runs out: `deletion`, `auto_complete`, `cancellation`, `purge`.
    deadline: &'static str,
    at: u64,
    consequence: &'static str,
    /// Warned at each lead (true), or announced once when it starts (false).
    warn_ahead: bool,
}

fn service_clocks(
    clocks: &Clocks,
    job: &JobSnapshot,
    terminal_since: Option<u64>,
) -> Vec<ServiceClock> {
    let mut found = Vec::new();
    let state = job.state.as_str();
    let created = clocks.created.unwrap_or(clocks.state_since);
    if matches!(state, "Creating" | "AwaitingShipmentDetails") {
        found.push(ServiceClock {
            deadline: "deletion",
            at: created.saturating_add(UNSHIPPED_DELETION.as_secs()),
            consequence: "the service deletes a job whose drives were never shipped; ship and enter the tracking number before then, or create the job again",
            warn_ahead: true,
        });
    }
    if state == "DeviceOrdered" {
        found.push(ServiceClock {
            deadline: "cancellation",
            at: created.saturating_add(UNFULFILLED_CANCELLATION.as_secs()),
            consequence: "the service cancels a Data Box order it could not fulfil within 90 days",
            warn_ahead: true,
        });
    }
    let auto_complete = job
        .notices
        .action
        .as_ref()
        .and_then(|a| a.auto_complete_at.as_deref())
        .and_then(|at| humantime::parse_rfc3339(at).ok());
    if let Some(at) = auto_complete {
        found.push(ServiceClock {
            deadline: "auto_complete",
            at: secs(at),
            consequence: "the service completes the copy stage by itself, without the files that failed; answer in the portal before then",
            warn_ahead: true,
        });
    }
    if let (true, Some(since)) = (state.starts_with("Completed"), terminal_since) {
        found.push(ServiceClock {
            deadline: "purge",
            at: since.saturating_add(COMPLETED_PURGE.as_secs()),
            consequence: "the service deletes the completed job; its history stays in iewatch",
            warn_ahead: false,
        });
    }
    found
}

fn deadlines(
    clocks: &mut Clocks,
    job: &JobSnapshot,
    now: u64,
    input: &ClockInput<'_>,
    events: &mut Vec<Event>,
) {
    let found = service_clocks(clocks, job, input.terminal_since.map(secs));
    // A warning is keyed by the deadline it warns about, within a tolerance: a service
    // time that jitters by minutes between polls is the same deadline. A key that matches
    // follows the deadline (so a slow drift never repeats a warning); keys of clocks that
    // no longer apply go, so the list stays as short as the clocks.
    clocks.warned = std::mem::take(&mut clocks.warned)
        .into_iter()
        .filter_map(|key| {
            let (deadline, at, lead) = parse_key(&key)?;
            let clock = found
                .iter()
                .find(|c| c.deadline == deadline && c.at.abs_diff(at) <= SAME_DEADLINE.as_secs())?;
            Some(format!("{deadline}:{}:{lead}", clock.at))
        })
        .collect();
    for clock in found {
        let key = |lead: u64| format!("{}:{}:{lead}", clock.deadline, clock.at);
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
            .filter(|lead| now >= clock.at.saturating_sub(*lead))
            .filter(|lead| !clocks.warned.contains(&key(*lead)))
            .collect();
        let Some(nearest) = reached.iter().min().copied() else {
            continue;
        };
        clocks.warned.extend(reached.iter().map(|l| key(*l)));
        let counted_from = match (clock.deadline, clocks.created_by_service) {
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
        events.push(Event::notice(
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
        ));
    }
}

/// How far a service deadline may move between polls and still be the one warned of
/// (a `stageTime` or `createdAt` that jitters): further, it is a new deadline.
const SAME_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// A `warned` key's deadline, time and lead (`deletion:1767225600:345600`).
fn parse_key(key: &str) -> Option<(&str, u64, &str)> {
    let mut parts = key.splitn(3, ':');
    let deadline = parts.next()?;
    let at = parts.next()?.parse().ok()?;
    Some((deadline, at, parts.next()?))
}

/// An ETA from the rate since the anchor, once it means something.
fn eta(anchor: Option<(i64, u64)>, percent: Option<i64>, now: u64) -> Option<u64> {
    let (p0, t0) = anchor?;
    let p = percent?;
    let (points, elapsed) = (p.checked_sub(p0)?, now.checked_sub(t0)?);
    if p >= 100 || points < ETA_MIN_POINTS || elapsed < ETA_MIN_ELAPSED.as_secs() {
        return None;
    }
    let remaining =
        u128::from(elapsed) * u128::try_from(100 - p).ok()? / u128::try_from(points).ok()?;
    now.checked_add(u64::try_from(remaining).ok()?)
}

/// The anchor moves when the copy starts over (the percent goes down) or starts at all.
fn reanchor(anchor: Option<(i64, u64)>, percent: Option<i64>, now: u64) -> Option<(i64, u64)> {
    match (anchor, percent) {
        (_, None) => None,
        (Some((p0, t0)), Some(p)) if p >= p0 => Some((p0, t0)),
        (_, Some(p)) => Some((p, now)),
    }
}

fn progress(clocks: &mut Clocks, job: &JobSnapshot, now: u64) {
    clocks.anchor = reanchor(clocks.anchor, job.percent_complete, now);
    clocks.eta = eta(clocks.anchor, job.percent_complete, now);
    for drive in &job.drives {
        if let Some(clock) = clocks.drives.get_mut(drive.drive_id.as_str()) {
            clock.anchor = reanchor(clock.anchor, drive.percent_complete, now);
            clock.eta = eta(clock.anchor, drive.percent_complete, now);
        }
    }
}

/// The error condition that holds, most urgent first.
fn condition(clocks: &Clocks, input: &ClockInput<'_>) -> Option<&'static str> {
    if input.polls_failing {
        return Some("polls_failing");
    }
    let job = input.job?;
    if job.notices.action.is_some() {
        return Some("action_required");
    }
    if clocks.stalled {
        return Some("stalled");
    }
    let errors = job.state.as_str() == "CompletedWithErrors"
        || (job.state.is_terminal()
            && job.drives.iter().any(|d| {
                d.copy_status
                    .as_ref()
                    .is_some_and(|c| c.severity() == Severity::Error)
            }));
    errors.then_some("completed_with_errors")
}

fn remind(clocks: &mut Clocks, input: &ClockInput<'_>, now: u64, events: &mut Vec<Event>) {
    let Some(condition) = condition(clocks, input) else {
        clocks.reminder = None;
        return;
    };
    let reminder = match &mut clocks.reminder {
        Some(r) if r.condition == condition => r,
        slot => slot.insert(Reminder {
            condition: condition.to_owned(),
            since: now,
            count: 0,
            last: now,
        }),
    };
    let acked = input.acked_at.is_some_and(|at| secs(at) >= reminder.since);
    if !acked && !input.muted && reminder.is_due(now, input.settings) {
        reminder.count += 1;
        reminder.last = now;
        events.push(Event::notice(
            EventType::JobReminder,
            None,
            format!("{condition} since {} (reminder {})", rfc3339(reminder.since), reminder.count),
            Severity::Warning,
            json!({"condition": condition, "since": rfc3339(reminder.since), "count": reminder.count}),
        ));
    }
}

/// Progress events carry the copy's ETA once its rate means something.
pub fn with_eta(events: &mut [Event], clocks: &Clocks) {
    for event in events.iter_mut() {
        let eta = match (event.event_type, &event.drive_id) {
            (EventType::JobProgress, None) => clocks.eta,
            (EventType::DriveProgress, Some(drive)) => {
                clocks.drives.get(drive.as_str()).and_then(|d| d.eta)
            }
            _ => None,
        };
        if let Some(eta) = eta {
            event.details = Some(serde_json::json!({ "eta": rfc3339(eta) }));
        }
    }
}

/// True when a reminder may be due, so that the caller fetches the job's last ack
/// (from the database) only then.
pub fn reminder_due(clocks: &Clocks, now: SystemTime, settings: &ClockSettings) -> bool {
    clocks
        .reminder
        .as_ref()
        .is_some_and(|r| r.is_due(secs(now), settings))
}

impl Reminder {
    /// Under the cap, and `remind_every` since the last one (never when reminders are
    /// off).
    fn is_due(&self, now: u64, settings: &ClockSettings) -> bool {
        let Some(every) = settings.remind_every.filter(|e| !e.is_zero()) else {
            return false;
        };
        self.count < settings.remind_max && now.saturating_sub(self.last) >= every.as_secs()
    }
}

fn show(percent: Option<i64>) -> String {
    percent.map_or("-".into(), |p| p.to_string())
}

/// `3d 4h`, `90d`, `5h`, `12m`: a length of time in words, to the hour once it is a
/// day or more.
fn days(seconds: u64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (d, h) {
        (0, 0) if m == 0 => format!("{seconds}s"),
        (0, 0) => format!("{m}m"),
        (0, h) => format!("{h}h"),
        (d, 0) => format!("{d}d"),
        (d, h) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionRequired, Notices};

    const HOUR: u64 = 3600;
    const D: u64 = 86_400;
    const T0: u64 = 1_800_000_000;

    fn job(state: &str) -> JobSnapshot {
        JobSnapshot::assemble(None, state.into(), None, None)
    }

    /// Ticks `clocks` at `T0 + offset`, going through JSON each time as a restart does.
    fn tick_at(
        clocks: &Clocks,
        job: &JobSnapshot,
        offset: u64,
        extra: impl Fn(&mut ClockInput<'_>),
    ) -> (Vec<Event>, Clocks) {
        let settings = ClockSettings::default();
        let mut input = ClockInput {
            now: time(T0 + offset),
            job: Some(job),
            created_at: None,
            terminal_since: None,
            polls_failing: false,
            acked_at: None,
            muted: false,
            settings: &settings,
        };
        extra(&mut input);
        let (events, after) = tick(clocks, &input);
        let restarted: Clocks =
            serde_json::from_str(&serde_json::to_string(&after).unwrap()).unwrap();
        assert_eq!(restarted, after, "the clocks survive a restart");
        (events, restarted)
    }

    fn kinds(events: &[Event]) -> Vec<(EventType, Severity)> {
        events.iter().map(|e| (e.event_type, e.severity)).collect()
    }

    /// Plays `offsets` (hours) in order; returns the events of each.
    fn play(
        job: &JobSnapshot,
        hours: &[u64],
        extra: impl Fn(&mut ClockInput<'_>) + Copy,
    ) -> Vec<Vec<Event>> {
        let mut clocks = Clocks::default();
        hours
            .iter()
            .map(|h| {
                let (events, after) = tick_at(&clocks, job, h * HOUR, extra);
                clocks = after;
                events
            })
            .collect()
    }

    #[test]
    fn the_near_deadline_is_the_nearest_warned_one_not_passed_and_never_a_told_once_clock() {
        let clocks = Clocks {
            warned: vec![
                "deletion:5000:345600".into(),
                "deletion:5000:86400".into(),
                "auto_completion:3000:86400".into(),
                "cancellation:900:86400".into(),
                format!("purge:2000:{}", u64::MAX),
                "garbage".into(),
            ],
            ..Clocks::default()
        };
        assert_eq!(clocks.near_deadline(1000), Some(("auto_completion", 3000)));
        assert_eq!(clocks.near_deadline(3000), Some(("deletion", 5000)));
        assert_eq!(clocks.near_deadline(5000), None);
    }

    #[test]
    fn an_unshipped_job_is_warned_at_each_lead_once_from_the_service_creation_time() {
        let creating = job("AwaitingShipmentDetails");
        let created = |i: &mut ClockInput<'_>| i.created_at = Some(time(T0));
        // Days 0, 9, 10, 10¼, 13, 13½, 20.
        let seen = play(&creating, &[0, 216, 240, 246, 312, 324, 480], created);
        let counts: Vec<usize> = seen.iter().map(Vec::len).collect();
        assert_eq!(counts, [0, 0, 1, 0, 1, 0, 0]);
        let warning = &seen[2][0];
        assert_eq!(
            kinds(&seen[2]),
            [(EventType::JobDeadline, Severity::Warning)]
        );
        let fields = warning.details.as_ref().unwrap();
        assert_eq!(fields["deadline"], "deletion");
        assert_eq!(fields["at"], rfc3339(T0 + 14 * D));
        assert_eq!(fields["counted_from"], "the service's creation time");
        assert!(fields["consequence"].as_str().unwrap().contains("deletes"));
    }

    #[test]
    fn a_creation_time_that_jitters_between_polls_warns_once_per_lead() {
        let creating = job("AwaitingShipmentDetails");
        let mut clocks = Clocks::default();
        let mut warnings = 0;
        // From day 10 on (the 4d lead reached), every 15 s for an hour, the service's
        // creation time moves by up to a minute either way.
        for poll in 0..240_u64 {
            let jitter = (poll % 3) * 60;
            let created = move |i: &mut ClockInput<'_>| i.created_at = Some(time(T0 + jitter));
            let (events, after) = tick_at(&clocks, &creating, 10 * D + poll * 15, created);
            warnings += events.len();
            clocks = after;
        }
        assert_eq!(warnings, 1, "one 'within 4d', not one per jitter");
        // A deadline that really moves (a day later) is a new one, warned again.
        let moved = |i: &mut ClockInput<'_>| i.created_at = Some(time(T0 - D));
        let (events, _) = tick_at(&clocks, &creating, 10 * D + HOUR, moved);
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn a_deadline_already_past_on_first_sight_says_when_it_passed() {
        let creating = job("AwaitingShipmentDetails");
        let created = |i: &mut ClockInput<'_>| i.created_at = Some(time(T0));
        let (events, _) = tick_at(&Clocks::default(), &creating, 15 * D, created);
        assert_eq!(events.len(), 1);
        let text = events[0]
            .to
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let date = rfc3339(T0 + 14 * D);
        assert!(
            text.contains(&format!("deletion passed on {}", &date[..10])),
            "{text}"
        );
    }

    #[test]
    fn reminders_pause_while_muted_and_go_on_after() {
        let stalled = job("CompletedWithErrors");
        let muted = |i: &mut ClockInput<'_>| {
            i.terminal_since = Some(time(T0));
            i.muted = true;
        };
        let unmuted = |i: &mut ClockInput<'_>| i.terminal_since = Some(time(T0));
        // Four days muted: no reminder, none counted.
        let seen = play(&stalled, &[0, 25, 49, 73, 97], muted);
        let reminders = |events: &[Event]| {
            events
                .iter()
                .filter(|e| e.event_type == EventType::JobReminder)
                .count()
        };
        assert_eq!(seen.iter().map(|e| reminders(e)).sum::<usize>(), 0);
        // Unmuted: the first reminder comes at once, as reminder 1.
        let mut clocks = Clocks::default();
        for h in [0, 25, 49, 73, 97] {
            clocks = tick_at(&clocks, &stalled, h * HOUR, muted).1;
        }
        let (events, _) = tick_at(&clocks, &stalled, 98 * HOUR, unmuted);
        let reminder = events
            .iter()
            .find(|e| e.event_type == EventType::JobReminder)
            .expect("a reminder once the mute ends");
        assert_eq!(reminder.details.as_ref().unwrap()["count"], 1);
    }

    #[test]
    fn a_job_first_seen_late_gets_one_warning_counted_from_the_first_sighting() {
        let creating = job("Creating");
        let mut clocks = Clocks::default();
        let (none, after) = tick_at(&clocks, &creating, 0, |_| {});
        assert!(none.is_empty());
        clocks = after;
        // Thirteen and a half days later both leads are reached: one event.
        let (late, after) = tick_at(&clocks, &creating, 13 * D + 12 * HOUR, |_| {});
        assert_eq!(late.len(), 1);
        let fields = late[0].details.as_ref().unwrap();
        assert!(fields["counted_from"]
            .as_str()
            .unwrap()
            .contains("first sighting"));
        let (again, _) = tick_at(&after, &creating, 13 * D + 13 * HOUR, |_| {});
        assert!(again.is_empty(), "both leads marked");
    }

    #[test]
    fn the_copy_waiting_for_the_customer_and_the_order_cancellation_have_clocks() {
        let mut waiting = job("DataCopy");
        waiting.notices = Notices {
            action: Some(ActionRequired {
                stage: "DataCopy".into(),
                status: "WaitingForCustomerAction".into(),
                code: None,
                message: None,
                actions: vec![],
                since: Some(rfc3339(T0)),
                auto_complete_at: Some(rfc3339(T0 + 14 * D)),
            }),
            ..Notices::default()
        };
        let seen = play(&waiting, &[0, 9 * 24, 10 * 24, 13 * 24], |_| {});
        let deadlines: Vec<String> = seen
            .iter()
            .flatten()
            .filter(|e| e.event_type == EventType::JobDeadline)
            .map(|e| {
                e.details.as_ref().unwrap()["deadline"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(deadlines, ["auto_complete", "auto_complete"]);
        let ordered = job("DeviceOrdered");
        let seen = play(&ordered, &[0, 86 * 24], |_| {});
        let deadline = seen[1]
            .iter()
            .find(|e| e.event_type == EventType::JobDeadline)
            .unwrap();
        assert_eq!(
            deadline.details.as_ref().unwrap()["deadline"],
            "cancellation"
        );
    }

    #[test]
    fn a_completed_job_is_told_once_when_it_will_be_purged() {
        let completed = job("Completed");
        let since = |i: &mut ClockInput<'_>| i.terminal_since = Some(time(T0));
        let seen = play(&completed, &[0, 1, 24 * 80], since);
        assert_eq!(kinds(&seen[0]), [(EventType::JobDeadline, Severity::Info)]);
        assert_eq!(
            seen[0][0].details.as_ref().unwrap()["at"],
            rfc3339(T0 + 90 * D)
        );
        assert!(seen[1].is_empty() && seen[2].is_empty());
    }

    #[test]
    fn a_state_held_past_its_threshold_stalls_once_and_resumes_when_it_moves() {
        let shipping = job("Shipping");
        let mut clocks = Clocks::default();
        let mut all = Vec::new();
        for hours in [0, 9 * 24, 10 * 24, 11 * 24] {
            let (events, after) = tick_at(&clocks, &shipping, hours * HOUR, |_| {});
            all.push(kinds(&events));
            clocks = after;
        }
        assert_eq!(
            all,
            [
                vec![],
                vec![],
                vec![(EventType::JobStalled, Severity::Warning)],
                vec![(EventType::JobReminder, Severity::Warning)],
            ],
            "stalled once, then reminded a day later"
        );
        let (moved, clocks) = tick_at(&clocks, &job("Received"), 12 * D, |_| {});
        assert_eq!(kinds(&moved), [(EventType::JobResumed, Severity::Info)]);
        assert_eq!(moved[0].details.as_ref().unwrap()["state"], "Shipping");
        assert!(!clocks.stalled);
        let (quiet, _) = tick_at(&clocks, &job("Creating"), 40 * D, |_| {});
        assert!(
            quiet.iter().all(|e| e.event_type != EventType::JobStalled),
            "Creating has no threshold"
        );
    }

    #[test]
    fn a_copying_drive_that_does_not_move_stalls_and_resumes() {
        let at = |percent| {
            let mut job = job("Transferring");
            job.drives = vec![DriveSnapshot::new(
                "D1".into(),
                Some("Transferring".into()),
                Some("InProgress".into()),
                Some(percent),
            )];
            job
        };
        let mut clocks = Clocks::default();
        let mut seen = Vec::new();
        for (hours, percent) in [(0, 40), (23, 40), (24, 40), (30, 40), (31, 55)] {
            let (events, after) = tick_at(&clocks, &at(percent), hours * HOUR, |_| {});
            seen.push(kinds(&events));
            clocks = after;
        }
        assert_eq!(
            seen,
            [
                vec![],
                vec![],
                vec![(EventType::DriveStalled, Severity::Warning)],
                vec![],
                vec![(EventType::DriveResumed, Severity::Info)],
            ]
        );
    }

    #[test]
    fn reminders_repeat_up_to_the_cap_and_stop_at_an_ack() {
        let transferring = job("Transferring");
        let failing = |i: &mut ClockInput<'_>| i.polls_failing = true;
        let seen = play(&transferring, &[0, 12, 24, 48, 72, 96, 120], failing);
        let counts: Vec<usize> = seen.iter().map(Vec::len).collect();
        assert_eq!(
            counts,
            [0, 0, 1, 1, 1, 0, 0],
            "three reminders, a day apart"
        );
        let third = seen[4][0].details.as_ref().unwrap();
        assert_eq!(third["condition"], "polls_failing");
        assert_eq!(third["count"], 3);
        let acked = |i: &mut ClockInput<'_>| {
            i.polls_failing = true;
            i.acked_at = Some(time(T0 + HOUR));
        };
        let seen = play(&transferring, &[0, 24, 48], acked);
        assert!(seen.iter().all(Vec::is_empty), "acknowledged: no reminder");
        // A new condition after the ack is reminded of again.
        let old_ack = |i: &mut ClockInput<'_>| {
            i.polls_failing = true;
            i.acked_at = Some(time(T0 - HOUR));
        };
        let seen = play(&transferring, &[0, 24], old_ack);
        assert_eq!(seen[1].len(), 1);
    }

    #[test]
    fn the_eta_follows_the_observed_rate_once_it_means_something() {
        let at = |percent| {
            let mut job = job("Transferring");
            job.percent_complete = Some(percent);
            job
        };
        let mut clocks = Clocks::default();
        let mut etas = Vec::new();
        for (minutes, percent) in [(0, 10), (5, 20), (60, 30), (120, 50)] {
            let (_, after) = tick_at(&clocks, &at(percent), minutes * 60, |_| {});
            etas.push(after.eta.map(|e| e - T0));
            clocks = after;
        }
        // 5 min is too soon; then 20 points an hour, then 40 points in two hours.
        assert_eq!(
            etas,
            [None, None, Some(3600 + 70 * 180), Some(7200 + 50 * 180)]
        );
        let (_, restarted) = tick_at(&clocks, &at(5), 3 * HOUR, |_| {});
        assert_eq!(restarted.eta, None, "a copy that starts over measures anew");
        assert_eq!(eta(Some((0, 0)), Some(99), u64::MAX), None, "no overflow");
    }
}
