//! The change detector: a pure function from (previous snapshot, new snapshot) to the
//! ordered events of DESIGN.md. No I/O, no clock: the store and the scheduler decide what
//! to do with its answer, and tests can check it exhaustively.

use serde_json::json;

use crate::{
    events::{ChangeValue, Event, EventType},
    model::{DriveSnapshot, JobSnapshot, Severity},
};

/// The events that turn `previous` into `current`, job-level first, then drives in the
/// order the service lists them, then removed drives. `None` previous means the job was
/// never seen: one `job.first_seen` carrying the whole summary.
pub fn detect_changes(previous: Option<&JobSnapshot>, current: &JobSnapshot) -> Vec<Event> {
    let Some(previous) = previous else {
        return vec![Event {
            event_type: EventType::JobFirstSeen,
            drive_id: None,
            from: None,
            to: Some(ChangeValue::text(&current.state)),
            severity: current.state.severity(),
            details: Some(summary(current)),
        }];
    };
    let mut events = Vec::new();
    if previous.state != current.state {
        events.push(Event::change(
            EventType::JobStateChanged,
            None,
            Some(ChangeValue::text(&previous.state)),
            Some(ChangeValue::text(&current.state)),
            current.state.severity(),
        ));
    }
    if current.cancel_requested && !previous.cancel_requested {
        events.push(Event::change(
            EventType::JobCancelRequested,
            None,
            Some(ChangeValue::Flag(false)),
            Some(ChangeValue::Flag(true)),
            Severity::Info,
        ));
    }
    if previous.percent_complete != current.percent_complete {
        events.push(Event::change(
            EventType::JobProgress,
            None,
            previous.percent_complete.map(ChangeValue::Percent),
            current.percent_complete.map(ChangeValue::Percent),
            Severity::Info,
        ));
    }
    for drive in &current.drives {
        match previous.drive(&drive.drive_id) {
            None => events.push(Event {
                event_type: EventType::DriveAdded,
                drive_id: Some(drive.drive_id.clone()),
                from: None,
                to: drive.state.as_ref().map(ChangeValue::text),
                severity: Severity::Info,
                details: Some(drive_summary(drive)),
            }),
            Some(before) => drive_changes(before, drive, &mut events),
        }
    }
    for drive in &previous.drives {
        if current.drive(&drive.drive_id).is_none() {
            events.push(Event::change(
                EventType::DriveRemoved,
                Some(&drive.drive_id),
                drive.state.as_ref().map(ChangeValue::text),
                None,
                Severity::Info,
            ));
        }
    }
    events
}

fn drive_changes(before: &DriveSnapshot, after: &DriveSnapshot, events: &mut Vec<Event>) {
    let id = Some(&after.drive_id);
    if before.state != after.state {
        events.push(Event::change(
            EventType::DriveStateChanged,
            id,
            before.state.as_ref().map(ChangeValue::text),
            after.state.as_ref().map(ChangeValue::text),
            after
                .state
                .as_ref()
                .map_or(Severity::Info, |s| s.severity()),
        ));
    }
    if before.copy_status != after.copy_status {
        events.push(Event::change(
            EventType::DriveCopyStatusChanged,
            id,
            before.copy_status.as_ref().map(ChangeValue::text),
            after.copy_status.as_ref().map(ChangeValue::text),
            after
                .copy_status
                .as_ref()
                .map_or(Severity::Info, |c| c.severity()),
        ));
    }
    if before.percent_complete != after.percent_complete {
        events.push(Event::change(
            EventType::DriveProgress,
            id,
            before.percent_complete.map(ChangeValue::Percent),
            after.percent_complete.map(ChangeValue::Percent),
            Severity::Info,
        ));
    }
}

/// The job and its drives as `job.first_seen` carries them.
pub fn summary(job: &JobSnapshot) -> serde_json::Value {
    json!({
        "type": job.job_type,
        "state": job.state,
        "percent_complete": job.percent_complete,
        "cancel_requested": job.cancel_requested,
        "drives": job.drives.iter().map(drive_summary).collect::<Vec<_>>(),
    })
}

fn drive_summary(drive: &DriveSnapshot) -> serde_json::Value {
    json!({
        "drive_id": drive.drive_id,
        "state": drive.state,
        "copy_status": drive.copy_status,
        "percent_complete": drive.percent_complete,
    })
}
