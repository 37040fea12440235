//! The time-driven rules: what did *not* happen. Service clocks (`job.deadline`), jobs
//! and drives that stop moving (`job.stalled`/`job.resumed`, `drive.stalled`/
//! `drive.resumed`), reminders while an error condition holds (`job.reminder`), and the
//! ETA of a copy from its observed rate. Pure: the time, the settings and what the job
//! remembers ([`Clocks`]) in, events and the new [`Clocks`] out. Everything is keyed so
//! that a restart (the clocks live in `jobs.clocks`) never announces a thing twice.

use std::{borrow::Cow, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::json;

mod deadlines;
mod drive_clocks;
mod quiet;

use deadlines::deadlines;
pub use drive_clocks::DriveClocks;
pub use quiet::quiet_until;

use crate::{
    events::{Event, EventType},
    model::{DriveSnapshot, JobSnapshot, Severity},
    moment::Moment,
};

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

pub use crate::config::ClockSettings;

/// RFC 3339 UTC, seconds: how the events' details say a time.
fn rfc3339(at: Moment) -> String {
    at.rfc3339_seconds()
}

/// What the time-driven rules remember of a job (`jobs.clocks`, JSON; its times are
/// written as Unix seconds, so `sqlite3` users can read them with
/// `datetime(x, 'unixepoch')`, see [`Moment`]'s JSON form).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    /// When the job was created, and whether the service said so (else
    /// it is iewatch's first sighting).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::moment::unix_secs_opt"
    )]
    pub created: Option<Moment>,
    /// `created` is the service's own time.
    #[serde(default)]
    pub created_by_service: bool,
    /// The state the clocks below run for, and when it was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When `state` was first seen.
    #[serde(default, with = "crate::moment::unix_secs")]
    pub state_since: Moment,
    /// `job.stalled` was sent for the current state.
    #[serde(default)]
    pub stalled: bool,
    /// Deadline warnings already sent (`deadline:at:lead`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warned: Vec<String>,
    /// Where the job's copy was when its rate started being measured.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::moment::unix_secs_mark"
    )]
    pub anchor: Option<(i64, Moment)>,
    /// Where the job's copy last moved to, and when: its ETA is reckoned as of then, so
    /// that it stays put (and nothing is written) while the copy does not move.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::moment::unix_secs_mark"
    )]
    pub moved: Option<(i64, Moment)>,
    /// The job's ETA, once meaningful.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::moment::unix_secs_opt"
    )]
    pub eta: Option<Moment>,
    /// Per drive: progress, stall and ETA.
    #[serde(default, skip_serializing_if = "DriveClocks::is_empty")]
    pub drives: DriveClocks,
    /// The error condition being reminded of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<Reminder>,
}

impl Clocks {
    /// The nearest service deadline already warned of that has not passed yet at `now`:
    /// its kind (`deletion`, `auto_completion`, `cancellation`) and when. Clocks only
    /// told once (a completed job's purge) are not deadlines to act on.
    pub fn near_deadline(&self, now: Moment) -> Option<(&str, Moment)> {
        self.warned
            .iter()
            .filter_map(|key| {
                let mut parts = key.rsplitn(3, ':');
                let lead: u64 = parts.next()?.parse().ok()?;
                let at = Moment::from_unix_secs(parts.next()?.parse().ok()?);
                let kind = parts.next()?;
                (lead != u64::MAX && at > now).then_some((kind, at))
            })
            .min_by_key(|(_, at)| *at)
    }
}

/// A drive's clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveClock {
    /// The percent last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    /// Since when it has not moved.
    #[serde(with = "crate::moment::unix_secs")]
    pub since: Moment,
    /// `drive.stalled` was sent for this standstill.
    #[serde(default)]
    pub stalled: bool,
    /// Where its copy was when the rate started being measured.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::moment::unix_secs_mark"
    )]
    pub anchor: Option<(i64, Moment)>,
    /// Its ETA, once meaningful.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::moment::unix_secs_opt"
    )]
    pub eta: Option<Moment>,
}

/// An error condition and the reminders sent for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// `polls_failing`, `action_required`, `stalled` or `completed_with_errors`.
    pub condition: String,
    /// When it began.
    #[serde(with = "crate::moment::unix_secs")]
    pub since: Moment,
    /// Reminders sent.
    pub count: u32,
    /// When the last reminder (or the condition) was sent.
    #[serde(with = "crate::moment::unix_secs")]
    pub last: Moment,
}

/// What the rules read besides the clocks.
#[derive(Clone, Copy, Debug)]
pub struct ClockInput<'a> {
    /// Now.
    pub now: Moment,
    /// The job as last known (None: never seen).
    pub job: Option<&'a JobSnapshot>,
    /// The service's creation time, when this poll brought one.
    pub created_at: Option<Moment>,
    /// When the job became terminal.
    pub terminal_since: Option<Moment>,
    /// `job.poll_failing` stands.
    pub polls_failing: bool,
    /// The last `iewatch ack` of the job.
    pub acked_at: Option<Moment>,
    /// The job is muted: reminders pause (not counted), and go on when the mute ends.
    pub muted: bool,
    /// The settings.
    pub settings: &'a ClockSettings,
}

/// The clocks as the rules go: borrowed until a rule changes something, so that a poll
/// where nothing moved clones and allocates nothing.
type Working<'c> = Cow<'c, Clocks>;

/// Applies every time-driven rule; returns the events, and the clocks after them when
/// they changed (None: as they were).
pub fn tick(clocks: &Clocks, input: &ClockInput<'_>) -> (Vec<Event>, Option<Clocks>) {
    let now = input.now;
    let mut after = Cow::Borrowed(clocks);
    let mut events = Vec::new();
    if let Some(created) = input.created_at {
        if !after.created_by_service || after.created != Some(created) {
            let after = after.to_mut();
            after.created = Some(created);
            after.created_by_service = true;
        }
    }
    if let Some(job) = input.job {
        if after.created.is_none() {
            after.to_mut().created = Some(now);
        }
        job_stall(&mut after, job, now, input.settings, &mut events);
        drive_clocks(&mut after, job, now, input.settings, &mut events);
        deadlines(&mut after, job, now, input, &mut events);
        progress(&mut after, job, now);
    }
    remind(&mut after, input, now, &mut events);
    let changed = match after {
        Cow::Owned(after) if after != *clocks => Some(after),
        _ => None,
    };
    (events, changed)
}

fn job_stall(
    clocks: &mut Working<'_>,
    job: &JobSnapshot,
    now: Moment,
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
        let clocks = clocks.to_mut();
        clocks.state = Some(state.to_owned());
        clocks.state_since = now;
        clocks.stalled = false;
        return;
    }
    let Some(threshold) = settings.stall_after.get(state).filter(|t| !t.is_zero()) else {
        return;
    };
    let stuck_for = now.since(clocks.state_since);
    if !clocks.stalled && stuck_for >= *threshold {
        clocks.to_mut().stalled = true;
        events.push(Event::notice(
            EventType::JobStalled,
            None,
            format!("{state} for {}", days(stuck_for.as_secs())),
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
    clocks: &mut Working<'_>,
    job: &JobSnapshot,
    now: Moment,
    settings: &ClockSettings,
    events: &mut Vec<Event>,
) {
    let gone = |id: &str| !job.drives.iter().any(|d| d.drive_id.as_str() == id);
    if clocks.drives.ids().any(gone) {
        clocks.to_mut().drives.retain(|id| !gone(id));
    }
    for drive in &job.drives {
        let before = clocks.drives.get(drive.drive_id.as_str()).copied();
        let mut clock = before.unwrap_or(DriveClock {
            percent: drive.percent_complete,
            since: now,
            ..DriveClock::default()
        });
        drive_clock(&mut clock, drive, now, settings, events);
        if before != Some(clock) {
            let id = drive.drive_id.as_str().to_owned();
            clocks.to_mut().drives.insert(id, clock);
        }
    }
}

/// One drive's stall rules, on its clock (a copy: the caller writes it back if it moved).
fn drive_clock(
    clock: &mut DriveClock,
    drive: &DriveSnapshot,
    now: Moment,
    settings: &ClockSettings,
    events: &mut Vec<Event>,
) {
    let moved = clock.percent != drive.percent_complete;
    let copying = is_copying(drive);
    if (moved || !copying) && clock.stalled {
        events.push(Event::notice(
            EventType::DriveResumed,
            Some(&drive.drive_id),
            format!(
                "{}% after {}",
                show(drive.percent_complete),
                days(now.since(clock.since).as_secs())
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
        return;
    };
    if copying && !clock.stalled && now.since(clock.since) >= threshold {
        clock.stalled = true;
        events.push(Event::notice(
            EventType::DriveStalled,
            Some(&drive.drive_id),
            format!(
                "{}% for {}",
                show(drive.percent_complete),
                days(now.since(clock.since).as_secs())
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

/// An ETA from the rate between the anchor and the copy's last move (`percent`, reached
/// at `now`), once it means something.
fn eta(anchor: Option<(i64, Moment)>, percent: Option<i64>, now: Moment) -> Option<Moment> {
    let (p0, t0) = anchor?;
    let p = percent?;
    let (points, elapsed) = (p.checked_sub(p0)?, now.checked_since(t0)?);
    if p >= 100 || points < ETA_MIN_POINTS || elapsed < ETA_MIN_ELAPSED {
        return None;
    }
    let remaining = u128::from(elapsed.as_secs()) * u128::try_from(100 - p).ok()?
        / u128::try_from(points).ok()?;
    let at = now.saturating_add(Duration::from_secs(u64::try_from(remaining).ok()?));
    (at < Moment::LATEST).then_some(at)
}

/// The anchor moves when the copy starts over (the percent goes down) or starts at all.
fn reanchor(
    anchor: Option<(i64, Moment)>,
    percent: Option<i64>,
    now: Moment,
) -> Option<(i64, Moment)> {
    match (anchor, percent) {
        (_, None) => None,
        (Some((p0, t0)), Some(p)) if p >= p0 => Some((p0, t0)),
        (_, Some(p)) => Some((p, now)),
    }
}

fn progress(clocks: &mut Working<'_>, job: &JobSnapshot, now: Moment) {
    let moved = match (clocks.moved, job.percent_complete) {
        (Some((was, at)), Some(percent)) if was == percent => Some((was, at)),
        (_, percent) => percent.map(|p| (p, now)),
    };
    let anchor = reanchor(clocks.anchor, job.percent_complete, now);
    let job_eta = moved.and_then(|(percent, at)| eta(anchor, Some(percent), at));
    if (anchor, moved, job_eta) != (clocks.anchor, clocks.moved, clocks.eta) {
        let clocks = clocks.to_mut();
        (clocks.anchor, clocks.moved, clocks.eta) = (anchor, moved, job_eta);
    }
    for drive in &job.drives {
        let id = drive.drive_id.as_str();
        let Some(clock) = clocks.drives.get(id) else {
            continue;
        };
        let anchor = reanchor(clock.anchor, drive.percent_complete, now);
        // As of the drive's last move (`since`), like the job's.
        let drive_eta = eta(anchor, drive.percent_complete, clock.since);
        if (anchor, drive_eta) != (clock.anchor, clock.eta) {
            if let Some(clock) = clocks.to_mut().drives.get_mut(id) {
                (clock.anchor, clock.eta) = (anchor, drive_eta);
            }
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

fn remind(clocks: &mut Working<'_>, input: &ClockInput<'_>, now: Moment, events: &mut Vec<Event>) {
    let Some(condition) = condition(clocks, input) else {
        if clocks.reminder.is_some() {
            clocks.to_mut().reminder = None;
        }
        return;
    };
    let since = match &clocks.reminder {
        Some(r) if r.condition == condition => r.since,
        _ => {
            clocks.to_mut().reminder = Some(Reminder {
                condition: condition.to_owned(),
                since: now,
                count: 0,
                last: now,
            });
            now
        }
    };
    let acked = input.acked_at.is_some_and(|at| at >= since);
    let due = clocks
        .reminder
        .as_ref()
        .is_some_and(|r| r.is_due(now, input.settings));
    if acked || input.muted || !due {
        return;
    }
    if let Some(reminder) = clocks.to_mut().reminder.as_mut() {
        reminder.count += 1;
        reminder.last = now;
        events.push(Event::notice(
            EventType::JobReminder,
            None,
            format!(
                "{condition} since {} (reminder {})",
                rfc3339(since),
                reminder.count
            ),
            Severity::Warning,
            json!({"condition": condition, "since": rfc3339(since), "count": reminder.count}),
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
pub fn reminder_due(clocks: &Clocks, now: Moment, settings: &ClockSettings) -> bool {
    clocks
        .reminder
        .as_ref()
        .is_some_and(|r| r.is_due(now, settings))
}

impl Reminder {
    /// Under the cap, and `remind_every` since the last one (never when reminders are
    /// off).
    fn is_due(&self, now: Moment, settings: &ClockSettings) -> bool {
        let Some(every) = settings.remind_every.filter(|e| !e.is_zero()) else {
            return false;
        };
        self.count < settings.remind_max && now.since(self.last) >= every
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
mod tests;
