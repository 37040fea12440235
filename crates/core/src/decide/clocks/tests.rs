//! The clocks' rules, one behaviour per test, on hand-made snapshots.

use super::*;
use crate::model::{ActionRequired, Notices};

const HOUR: u64 = 3600;
const D: u64 = 86_400;
const T0: u64 = 1_800_000_000;

/// The moment `secs` after the epoch.
fn time(secs: u64) -> Moment {
    Moment::from_unix_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The RFC 3339 text of [`time`]`(secs)`, as the events' details say it.
fn rfc3339(secs: u64) -> String {
    time(secs).rfc3339_seconds()
}

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
    let after = after.unwrap_or_else(|| clocks.clone());
    let restarted: Clocks = serde_json::from_str(&serde_json::to_string(&after).unwrap()).unwrap();
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
    assert_eq!(
        clocks.near_deadline(time(1000)),
        Some(("auto_completion", time(3000)))
    );
    assert_eq!(
        clocks.near_deadline(time(3000)),
        Some(("deletion", time(5000)))
    );
    assert_eq!(clocks.near_deadline(time(5000)), None);
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
            since: Some(time(T0)),
            auto_complete_at: Some(time(T0 + 14 * D)),
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
        etas.push(after.eta.map(|e| e.since(time(T0)).as_secs()));
        clocks = after;
    }
    // 5 min is too soon; then 20 points an hour, then 40 points in two hours.
    assert_eq!(
        etas,
        [None, None, Some(3600 + 70 * 180), Some(7200 + 50 * 180)]
    );
    let (_, restarted) = tick_at(&clocks, &at(5), 3 * HOUR, |_| {});
    assert_eq!(restarted.eta, None, "a copy that starts over measures anew");
    assert_eq!(
        eta(Some((0, Moment::EPOCH)), Some(99), Moment::LATEST),
        None,
        "no overflow"
    );
}

/// A tick where nothing is due and nothing moved hands back no clocks: every rule ran
/// (a deadline warned of, a copying drive with an ETA, a reminder counting) and the
/// clocks were borrowed, not cloned. A tick where one thing moves hands them back.
#[test]
fn a_quiet_tick_changes_nothing_and_a_moving_one_does() {
    let copying = |percent| {
        let mut job = job("Creating");
        job.percent_complete = Some(percent);
        job.drives = vec![DriveSnapshot::new(
            "D1".into(),
            Some("Transferring".into()),
            Some("InProgress".into()),
            Some(percent),
        )];
        job
    };
    let failing = |i: &mut ClockInput<'_>| i.polls_failing = true;
    let mut clocks = Clocks::default();
    for (hours, percent) in [(0, 10), (1, 20), (2, 30), (11 * 24, 40)] {
        clocks = tick_at(&clocks, &copying(percent), hours * HOUR, failing).1;
    }
    assert!(
        clocks.eta.is_some() && !clocks.warned.is_empty() && clocks.reminder.is_some(),
        "{clocks:?}"
    );
    let settings = ClockSettings::default();
    let input = |job, minutes: u64| ClockInput {
        now: time(T0 + 11 * D + minutes * 60),
        job: Some(job),
        created_at: None,
        terminal_since: None,
        polls_failing: true,
        acked_at: None,
        muted: false,
        settings: &settings,
    };
    let same = copying(40);
    let (events, after) = tick(&clocks, &input(&same, 1));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(after, None, "nothing moved");
    let moved = copying(41);
    let (_, after) = tick(&clocks, &input(&moved, 1));
    let after = after.expect("the copy moved");
    assert_eq!(after.drives.get("D1").unwrap().percent, Some(41));
}

/// A deadline counted from a time with a fraction of a second (the wall clock's
/// `terminal_since`) is the same deadline at the next poll: its key says seconds.
#[test]
fn a_deadline_from_a_time_with_milliseconds_is_told_once() {
    let completed = job("Completed");
    let since = |i: &mut ClockInput<'_>| {
        i.terminal_since = Some(time(T0).saturating_add(Duration::from_millis(250)));
    };
    let seen = play(&completed, &[0, 1, 2], since);
    assert_eq!(kinds(&seen[0]), [(EventType::JobDeadline, Severity::Info)]);
    assert!(seen[1].is_empty() && seen[2].is_empty(), "{seen:?}");
}
