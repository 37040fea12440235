//! The change detector: exhaustive cases per event type, and properties over random
//! snapshot pairs.

use std::collections::BTreeMap;

use iewatch::{
    detect::detect_changes,
    events::{ChangeValue, Event, EventType},
    model::{
        ActionRequired, CopyStatus, Delay, DriveId, DriveSnapshot, DriveState, JobSnapshot,
        JobState, Notices, Package, PackageKind, Severity,
    },
};
use proptest::prelude::*;

fn job(state: &str, percent: Option<i64>, drives: Vec<DriveSnapshot>) -> JobSnapshot {
    JobSnapshot {
        job_type: Some("Import".into()),
        state: JobState::from(state),
        percent_complete: percent,
        cancel_requested: false,
        drives,
        sku: None,
        notices: Notices::default(),
    }
}

fn drive(id: &str, state: &str, copy: Option<&str>, percent: Option<i64>) -> DriveSnapshot {
    DriveSnapshot {
        drive_id: DriveId::from(id),
        state: Some(DriveState::from(state)),
        copy_status: copy.map(CopyStatus::from),
        percent_complete: percent,
    }
}

/// (type, drive, from, to, severity) of an event, for compact assertions.
type Seen<'a> = (
    EventType,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Severity,
);

/// The same with owned text, as events carry typed values rendered on demand.
type Owned = (
    EventType,
    Option<String>,
    Option<String>,
    Option<String>,
    Severity,
);

fn kinds(events: &[Event]) -> Vec<Owned> {
    events
        .iter()
        .map(|e| {
            (
                e.event_type,
                e.drive_id.as_ref().map(|d| d.as_str().to_owned()),
                e.from_text(),
                e.to_text(),
                e.severity,
            )
        })
        .collect()
}

fn owned(expected: Vec<Seen<'_>>) -> Vec<Owned> {
    let text = |v: Option<&str>| v.map(str::to_owned);
    expected
        .into_iter()
        .map(|(t, drive, from, to, severity)| (t, text(drive), text(from), text(to), severity))
        .collect()
}

#[test]
fn first_sight_is_one_first_seen_with_the_whole_summary() {
    let new = job(
        "Transferring",
        Some(40),
        vec![drive("A", "Transferring", Some("InProgress"), Some(40))],
    );
    let events = detect_changes(None, &new);
    assert_eq!(
        kinds(&events),
        owned(vec![(
            EventType::JobFirstSeen,
            None,
            None,
            Some("Transferring"),
            Severity::Info
        )])
    );
    let summary = events[0].details.as_ref().unwrap();
    assert_eq!(summary["percent_complete"], 40);
    assert_eq!(summary["drives"][0]["drive_id"], "A");
    assert_eq!(summary["drives"][0]["copy_status"], "InProgress");
}

#[test]
fn job_state_progress_and_cancel() {
    let old = job("Shipping", None, vec![]);
    let mut new = job("Transferring", Some(0), vec![]);
    new.cancel_requested = true;
    assert_eq!(
        kinds(&detect_changes(Some(&old), &new)),
        owned(vec![
            (
                EventType::JobStateChanged,
                None,
                Some("Shipping"),
                Some("Transferring"),
                Severity::Info
            ),
            (
                EventType::JobCancelRequested,
                None,
                Some("false"),
                Some("true"),
                Severity::Info
            ),
            (
                EventType::JobProgress,
                None,
                None,
                Some("0"),
                Severity::Info
            ),
        ])
    );
    // Cancel going back to false is not an event of DESIGN.md's table.
    let mut back = new.clone();
    back.cancel_requested = false;
    assert!(detect_changes(Some(&new), &back).is_empty());
}

#[test]
fn faulted_is_an_error_and_unknown_states_are_kept() {
    let old = job("Transferring", Some(10), vec![]);
    let faulted = job("Faulted", Some(10), vec![]);
    assert_eq!(
        detect_changes(Some(&old), &faulted)[0].severity,
        Severity::Error
    );
    let novel = job("Teleporting", Some(10), vec![]);
    let events = detect_changes(Some(&old), &novel);
    assert_eq!(events[0].to_text().as_deref(), Some("Teleporting"));
    assert_eq!(events[0].severity, Severity::Info);
}

#[test]
fn drive_changes_are_attributed_and_graded() {
    let old = job(
        "Transferring",
        Some(40),
        vec![
            drive("A", "Transferring", Some("InProgress"), Some(80)),
            drive("B", "Transferring", Some("InProgress"), Some(10)),
            drive("C", "Received", None, None),
        ],
    );
    let new = job(
        "Transferring",
        Some(40),
        vec![
            drive("A", "Completed", Some("Completed"), Some(100)),
            drive(
                "B",
                "CompletedMoreInfo",
                Some("CompletedWithErrors"),
                Some(10),
            ),
            drive("C", "Received", None, None),
            drive("D", "Received", None, None),
        ],
    );
    assert_eq!(
        kinds(&detect_changes(Some(&old), &new)),
        owned(vec![
            (
                EventType::DriveStateChanged,
                Some("A"),
                Some("Transferring"),
                Some("Completed"),
                Severity::Info
            ),
            (
                EventType::DriveCopyStatusChanged,
                Some("A"),
                Some("InProgress"),
                Some("Completed"),
                Severity::Info
            ),
            (
                EventType::DriveProgress,
                Some("A"),
                Some("80"),
                Some("100"),
                Severity::Info
            ),
            (
                EventType::DriveStateChanged,
                Some("B"),
                Some("Transferring"),
                Some("CompletedMoreInfo"),
                Severity::Warning
            ),
            (
                EventType::DriveCopyStatusChanged,
                Some("B"),
                Some("InProgress"),
                Some("CompletedWithErrors"),
                Severity::Error
            ),
            (
                EventType::DriveAdded,
                Some("D"),
                None,
                Some("Received"),
                Severity::Info
            ),
        ])
    );
    let removed = job(
        "Transferring",
        Some(40),
        vec![drive("A", "Completed", Some("Completed"), Some(100))],
    );
    assert_eq!(
        kinds(&detect_changes(Some(&new), &removed)),
        owned(vec![
            (
                EventType::DriveRemoved,
                Some("B"),
                Some("CompletedMoreInfo"),
                None,
                Severity::Info
            ),
            (
                EventType::DriveRemoved,
                Some("C"),
                Some("Received"),
                None,
                Severity::Info
            ),
            (
                EventType::DriveRemoved,
                Some("D"),
                Some("Received"),
                None,
                Severity::Info
            ),
        ])
    );
}

#[test]
fn copy_status_severities() {
    let base = job(
        "Transferring",
        None,
        vec![drive("A", "Transferring", Some("InProgress"), None)],
    );
    for (status, severity) in [
        ("CompletedWithWarnings", Severity::Warning),
        ("BitLockerKeyInvalid", Severity::Error),
        ("ManifestCorrupted", Severity::Error),
        ("BrandNewFailure", Severity::Error),
        ("Completed", Severity::Info),
    ] {
        let new = job(
            "Transferring",
            None,
            vec![drive("A", "Transferring", Some(status), None)],
        );
        let events = detect_changes(Some(&base), &new);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].severity, severity, "{status}");
    }
}

// ----- properties -------------------------------------------------------------------

const STATES: [&str; 5] = [
    "Creating",
    "Shipping",
    "Transferring",
    "Completed",
    "Faulted",
];
const DRIVE_STATES: [&str; 4] = ["Specified", "Received", "Transferring", "Completed"];
const COPY: [&str; 4] = ["InProgress", "Completed", "CompletedWithErrors", "X"];

fn arb_drive() -> impl Strategy<Value = DriveSnapshot> {
    (
        0..6usize,
        proptest::option::of(0..4usize),
        proptest::option::of(0..4usize),
        proptest::option::of(0..101i64),
    )
        .prop_map(|(id, state, copy, percent)| DriveSnapshot {
            drive_id: DriveId::new(format!("D{id}")),
            state: state.map(|s| DriveState::from(DRIVE_STATES[s])),
            copy_status: copy.map(|c| CopyStatus::from(COPY[c])),
            percent_complete: percent,
        })
}

fn arb_job() -> impl Strategy<Value = JobSnapshot> {
    (
        0..5usize,
        proptest::option::of(0..101i64),
        any::<bool>(),
        proptest::collection::vec(arb_drive(), 0..5),
    )
        .prop_map(|(state, percent, cancel, drives)| {
            let mut seen = std::collections::HashSet::new();
            let drives = drives
                .into_iter()
                .filter(|d| seen.insert(d.drive_id.clone()))
                .collect();
            let mut j = job(STATES[state], percent, drives);
            j.cancel_requested = cancel;
            j
        })
}

/// Applies events to a snapshot's watched fields; drives keyed by id.
fn replay(
    old: &JobSnapshot,
    events: &[Event],
) -> (String, Option<i64>, bool, BTreeMap<DriveId, DriveSnapshot>) {
    let mut state = old.state.to_string();
    let mut percent = old.percent_complete;
    let mut cancel = old.cancel_requested;
    let mut drives: BTreeMap<DriveId, DriveSnapshot> = old
        .drives
        .iter()
        .map(|d| (d.drive_id.clone(), d.clone()))
        .collect();
    let num = |v: &Option<ChangeValue>| v.as_ref().map(|p| p.percent().unwrap());
    let text = |v: &Option<ChangeValue>| v.as_ref().map(ToString::to_string);
    for e in events {
        let id = e.drive_id.clone();
        match e.event_type {
            EventType::JobStateChanged => state = text(&e.to).unwrap(),
            EventType::JobProgress => percent = num(&e.to),
            EventType::JobCancelRequested => cancel = true,
            EventType::DriveAdded => {
                let added: DriveSnapshot =
                    serde_json::from_value(e.details.clone().unwrap()).unwrap();
                drives.insert(id.unwrap(), added);
            }
            EventType::DriveRemoved => {
                drives.remove(&id.unwrap());
            }
            EventType::DriveStateChanged => {
                drives.get_mut(&id.unwrap()).unwrap().state =
                    text(&e.to).as_deref().map(DriveState::from)
            }
            EventType::DriveCopyStatusChanged => {
                drives.get_mut(&id.unwrap()).unwrap().copy_status =
                    text(&e.to).as_deref().map(CopyStatus::from)
            }
            EventType::DriveProgress => {
                drives.get_mut(&id.unwrap()).unwrap().percent_complete = num(&e.to)
            }
            other => panic!("unexpected {other}"),
        }
    }
    (state, percent, cancel, drives)
}

proptest! {
    #[test]
    fn identical_snapshots_make_no_events(a in arb_job()) {
        prop_assert!(detect_changes(Some(&a), &a).is_empty());
    }

    #[test]
    fn replaying_the_events_gives_the_new_watched_fields(a in arb_job(), b in arb_job()) {
        let events = detect_changes(Some(&a), &b);
        let (state, percent, cancel, drives) = replay(&a, &events);
        prop_assert_eq!(state, b.state.to_string());
        prop_assert_eq!(percent, b.percent_complete);
        // CancelRequested only ever reports becoming true.
        prop_assert_eq!(cancel, a.cancel_requested || b.cancel_requested);
        let expected: BTreeMap<DriveId, DriveSnapshot> = b.drives.iter().map(|d| (d.drive_id.clone(), d.clone())).collect();
        prop_assert_eq!(drives, expected);
    }

    #[test]
    fn every_drive_event_names_a_drive_that_changed(a in arb_job(), b in arb_job()) {
        for e in detect_changes(Some(&a), &b) {
            let is_drive_event = e.event_type.as_str().starts_with("drive.");
            prop_assert_eq!(is_drive_event, e.drive_id.is_some());
            if let Some(id) = &e.drive_id {
                prop_assert_ne!(a.drive(id), b.drive(id));
            }
        }
    }
}

fn with_notices(state: &str, notices: Notices) -> JobSnapshot {
    JobSnapshot {
        notices,
        sku: Some("DataBoxCustomerDisk".into()),
        ..job(state, None, vec![])
    }
}

fn package(kind: PackageKind, tracking: &str) -> Package {
    Package::new(kind, Some("UPS".into()), Some(tracking.into()), None).unwrap()
}

fn types(events: &[Event]) -> Vec<(EventType, Severity, Option<String>)> {
    events
        .iter()
        .map(|e| (e.event_type, e.severity, e.to_text()))
        .collect()
}

#[test]
fn a_tracking_number_that_appears_or_changes_is_one_shipping_event() {
    let none = with_notices("ShippedToAzureDC", Notices::default());
    let shipped = with_notices(
        "ShippedToAzureDC",
        Notices {
            packages: vec![package(PackageKind::Delivery, "1Z1")],
            ..Notices::default()
        },
    );
    assert_eq!(
        types(&detect_changes(Some(&none), &shipped)),
        [(
            EventType::JobShippingUpdated,
            Severity::Info,
            Some("delivery UPS 1Z1".into())
        )]
    );
    assert!(detect_changes(Some(&shipped), &shipped).is_empty());
    let both = with_notices(
        "ShippedToCustomer",
        Notices {
            packages: vec![
                package(PackageKind::Delivery, "1Z1"),
                package(PackageKind::Return, "1Z2"),
            ],
            ..Notices::default()
        },
    );
    let events = detect_changes(Some(&shipped), &both);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].to_text().as_deref(), Some("return UPS 1Z2"));
    assert_eq!(
        events[1].details.as_ref().unwrap()["package"],
        serde_json::json!("return")
    );
    // Empty strings, as the service sends before anything shipped, are no package.
    assert!(Package::new(PackageKind::Return, Some("".into()), Some(" ".into()), None).is_none());
    // On first sight the packages are in the summary, not separate events.
    let first = detect_changes(None, &both);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].details.as_ref().unwrap()["packages"][1]["tracking"],
        "1Z2"
    );
}

#[test]
fn an_action_required_is_announced_once_as_an_error_even_on_first_sight() {
    let action = ActionRequired {
        stage: "DataCopy".into(),
        status: "WaitingForCustomerAction".into(),
        code: Some("SsemUserCopyErrorWaitingForAction".into()),
        message: Some("Review the copy logs.".into()),
        actions: vec!["MoveToCleanUpDevice".into()],
        since: iewatch::moment::Moment::parse("2026-01-10T09:00:00Z"),
        auto_complete_at: iewatch::moment::Moment::parse("2026-01-24T09:00:00Z"),
    };
    let waiting = with_notices(
        "DataCopy",
        Notices {
            action: Some(action.clone()),
            ..Notices::default()
        },
    );
    let copying = with_notices("DataCopy", Notices::default());
    let events = detect_changes(Some(&copying), &waiting);
    assert_eq!(
        types(&events),
        [(
            EventType::JobActionRequired,
            Severity::Error,
            Some("DataCopy WaitingForCustomerAction: SsemUserCopyErrorWaitingForAction".into())
        )]
    );
    let fields = events[0].details.as_ref().unwrap();
    assert_eq!(fields["auto_complete_at"], "2026-01-24T09:00:00Z");
    assert_eq!(fields["actions"][0], "MoveToCleanUpDevice");
    assert!(detect_changes(Some(&waiting), &waiting).is_empty(), "once");
    assert!(
        detect_changes(Some(&waiting), &copying).is_empty(),
        "cleared silently"
    );
    let first = detect_changes(None, &waiting);
    assert_eq!(
        first.iter().map(|e| e.event_type).collect::<Vec<_>>(),
        [EventType::JobFirstSeen, EventType::JobActionRequired]
    );
}

#[test]
fn a_delay_is_announced_when_active_and_when_resolved() {
    let delay = |status: &str| Delay {
        stage: "AtAzureDC".into(),
        code: "HighDemandDelay".into(),
        description: Some("High demand.".into()),
        status: status.into(),
        started_at: iewatch::moment::Moment::parse("2026-01-07T15:00:00Z"),
    };
    let state = |delays: Vec<Delay>| {
        with_notices(
            "AtAzureDC",
            Notices {
                delays,
                ..Notices::default()
            },
        )
    };
    let (none, active, resolved) = (
        state(vec![]),
        state(vec![delay("Active")]),
        state(vec![delay("Resolved")]),
    );
    assert_eq!(
        types(&detect_changes(Some(&none), &active)),
        [(
            EventType::JobDelayed,
            Severity::Warning,
            Some("AtAzureDC HighDemandDelay".into())
        )]
    );
    assert!(detect_changes(Some(&active), &active).is_empty());
    assert_eq!(
        types(&detect_changes(Some(&active), &resolved))[0].0,
        EventType::JobDelayResolved
    );
    assert!(
        detect_changes(Some(&none), &resolved).is_empty(),
        "a delay first seen resolved was never announced, so its end is not either"
    );
    assert_eq!(detect_changes(None, &active).len(), 2);
}
