//! The change detector: a pure function from (previous snapshot, new snapshot) to the
//! ordered events of [`crate::events`]. No I/O, no clock: the store and the scheduler decide what
//! to do with its answer, and tests can check it exhaustively.

use serde_json::json;

use crate::{
    events::{ChangeValue, Event, EventType},
    model::{ActionRequired, Delay, DriveSnapshot, JobSnapshot, Notices, Package, Severity},
};

/// The events that turn `previous` into `current`, job-level first, then drives in the
/// order the service lists them, then removed drives, then the notices (shipping, action
/// required, delays). `None` previous means the job was never seen: one
/// `job.first_seen` carrying the whole summary, followed by what already needs a person
/// (an action the service waits for, an active delay).
pub fn detect_changes(previous: Option<&JobSnapshot>, current: &JobSnapshot) -> Vec<Event> {
    let Some(previous) = previous else {
        let mut events = vec![Event {
            event_type: EventType::JobFirstSeen,
            drive_id: None,
            from: None,
            to: Some(ChangeValue::text(&current.state)),
            severity: current.state.severity(),
            details: Some(summary(current)),
        }];
        notice_changes(None, &current.notices, &mut events);
        return events;
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
                // A Data Box unit has no state: its copy status stands in.
                to: (drive.state.as_ref().map(ChangeValue::text))
                    .or_else(|| drive.copy_status.as_ref().map(ChangeValue::text)),
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
    notice_changes(Some(&previous.notices), &current.notices, &mut events);
    events
}

/// Shipping, action-required and delay events. Without a previous version (first sight)
/// packages are only in the summary; an action or an active delay is announced.
fn notice_changes(previous: Option<&Notices>, current: &Notices, events: &mut Vec<Event>) {
    if let Some(previous) = previous {
        for package in &current.packages {
            let before = previous
                .packages
                .iter()
                .find(|p| p.package == package.package);
            if before.is_none_or(|b| b.carrier != package.carrier || b.tracking != package.tracking)
            {
                events.push(shipping_event(package));
            }
        }
    }
    let before = previous.and_then(|p| p.action.as_ref());
    if let Some(action) = &current.action {
        let same = before.is_some_and(|b| {
            b.stage == action.stage && b.status == action.status && b.code == action.code
        });
        if !same {
            events.push(action_event(action));
        }
    }
    for delay in &current.delays {
        let before = previous.and_then(|p| p.delays.iter().find(|d| d.same_notice(delay)));
        let was_active = before.is_some_and(Delay::is_active);
        if delay.is_active() && !was_active {
            events.push(delay_event(EventType::JobDelayed, delay, Severity::Warning));
        } else if !delay.is_active() && was_active {
            events.push(delay_event(
                EventType::JobDelayResolved,
                delay,
                Severity::Info,
            ));
        }
    }
}

fn shipping_event(package: &Package) -> Event {
    let text = [
        Some(package.package.as_str()),
        package.carrier.as_deref(),
        package.tracking.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    Event::notice(
        EventType::JobShippingUpdated,
        None,
        text,
        Severity::Info,
        json!({
            "package": package.package,
            "carrier": package.carrier,
            "tracking": package.tracking,
            "url": package.url,
        }),
    )
}

fn action_event(action: &ActionRequired) -> Event {
    let mut text = format!("{} {}", action.stage, action.status);
    if let Some(code) = &action.code {
        text.push_str(&format!(": {code}"));
    }
    Event::notice(
        EventType::JobActionRequired,
        None,
        text,
        Severity::Error,
        json!({
            "stage": action.stage,
            "status": action.status,
            "code": action.code,
            "message": action.message,
            "actions": action.actions,
            "since": action.since,
            "auto_complete_at": action.auto_complete_at,
        }),
    )
}

fn delay_event(event_type: EventType, delay: &Delay, severity: Severity) -> Event {
    Event::notice(
        event_type,
        None,
        format!("{} {}", delay.stage, delay.code),
        severity,
        json!({
            "stage": delay.stage,
            "code": delay.code,
            "description": delay.description,
            "started_at": delay.started_at,
        }),
    )
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
    let mut summary = json!({
        "type": job.job_type,
        "state": job.state,
        "percent_complete": job.percent_complete,
        "cancel_requested": job.cancel_requested,
        "drives": job.drives.iter().map(drive_summary).collect::<Vec<_>>(),
    });
    if let Some(object) = summary.as_object_mut() {
        if let Some(sku) = &job.sku {
            object.insert("sku".into(), sku.as_str().into());
        }
        if !job.notices.packages.is_empty() {
            object.insert("packages".into(), json!(job.notices.packages));
        }
    }
    summary
}

fn drive_summary(drive: &DriveSnapshot) -> serde_json::Value {
    json!({
        "drive_id": drive.drive_id,
        "state": drive.state,
        "copy_status": drive.copy_status,
        "percent_complete": drive.percent_complete,
    })
}
