//! Until when a tick that found nothing to do stays that way. Every time-driven rule
//! fires once the time passes a point that the clocks and the job fix (a state held for
//! its stall threshold, a drive still for its own, a deadline's lead, a reminder's
//! period), and no rule fires again on the way back: so while the job and its clocks do
//! not change, nothing can happen before the earliest such point, and a poll that brings
//! nothing new need not run the rules at all (tests/benches/poll_unchanged.rs).

use super::{deadlines, is_copying, ClockInput, Clocks};
use crate::moment::Moment;

/// The earliest moment at which a tick of `clocks` with `input` (but another `now`)
/// could do anything, given that a tick at `input.now` did nothing: no event, no change.
/// [`Moment::LATEST`] when no rule is waiting for a time.
pub fn quiet_until(clocks: &Clocks, input: &ClockInput<'_>) -> Moment {
    let mut until = Moment::LATEST;
    let settings = input.settings;
    if let Some(job) = input.job {
        let job_stall = settings
            .stall_after
            .get(job.state.as_str())
            .filter(|t| !t.is_zero() && !clocks.stalled);
        if let Some(threshold) = job_stall {
            until = until.min(clocks.state_since.saturating_add(*threshold));
        }
        if let Some(threshold) = settings.drive_stall_after.filter(|t| !t.is_zero()) {
            for drive in job.drives.iter().filter(|d| is_copying(d)) {
                match clocks.drives.get(drive.drive_id.as_str()) {
                    Some(clock) if !clock.stalled => {
                        until = until.min(clock.since.saturating_add(threshold));
                    }
                    Some(_) => {}
                    // Not quiet after all: the next tick starts its clock.
                    None => return input.now,
                }
            }
        }
        if let Some(warning) = deadlines::next_warning(clocks, job, input) {
            until = until.min(warning);
        }
    }
    if let (Some(reminder), Some(every)) = (&clocks.reminder, settings.remind_every) {
        if !every.is_zero() && reminder.count < settings.remind_max {
            until = until.min(reminder.last.saturating_add(every));
        }
    }
    until
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::super::{tick, ClockSettings};
    use super::*;
    use crate::model::{
        ActionRequired, CopyStatus, DriveId, DriveSnapshot, DriveState, JobSnapshot, JobState,
    };

    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;
    const T0: i64 = 1_800_000_000;

    fn pick<'a, T>(rng: &mut StdRng, from: &'a [T]) -> &'a T {
        &from[rng.gen_range(0..from.len())]
    }

    fn settings(rng: &mut StdRng) -> ClockSettings {
        let hour = Duration::from_secs(HOUR);
        let day = Duration::from_secs(DAY);
        let warnings = rng.gen_bool(0.3).then(|| vec![10 * day, hour]);
        ClockSettings {
            drive_stall_after: *pick(rng, &[None, Some(Duration::ZERO), Some(hour)]),
            remind_every: *pick(rng, &[None, Some(day), Some(5 * hour)]),
            remind_max: rng.gen_range(0..4),
            deadline_warnings: warnings
                .unwrap_or_else(|| ClockSettings::default().deadline_warnings),
            ..ClockSettings::default()
        }
    }

    fn job(rng: &mut StdRng, now: Moment) -> JobSnapshot {
        let state = if rng.gen_bool(0.1) {
            "Unheard"
        } else {
            *pick(rng, &JobState::KNOWN)
        };
        let percent = *pick(rng, &[None, Some(0), Some(40), Some(100)]);
        let mut job = JobSnapshot::assemble(None, state.into(), percent, None);
        for i in 0..rng.gen_range(0..3) {
            job.drives.push(DriveSnapshot {
                drive_id: DriveId::new(format!("D{i}")),
                state: pick(rng, &[None, Some("Transferring"), Some("Completed")])
                    .map(DriveState::from),
                copy_status: pick(
                    rng,
                    &[None, Some("InProgress"), Some("CompletedWithErrors")],
                )
                .map(CopyStatus::from),
                percent_complete: *pick(rng, &[None, Some(10), Some(99)]),
            });
        }
        if rng.gen_bool(0.2) {
            job.notices.action = Some(ActionRequired {
                stage: "DataCopy".into(),
                status: "WaitingForCustomerAction".into(),
                code: None,
                message: None,
                actions: vec![],
                since: Some(now),
                auto_complete_at: Some(
                    now.saturating_add(Duration::from_secs(rng.gen_range(0..20) * DAY)),
                ),
            });
        }
        job
    }

    /// The property the scheduler relies on: after a tick that did nothing, no tick before
    /// [`quiet_until`] does anything either, and (with no ack or mute holding a reminder
    /// back) the tick at it does. Played over thousands of random jobs, settings and
    /// histories, the clocks going through each tick as a poll carries them.
    #[test]
    fn nothing_happens_before_the_quiet_ends_and_something_at_it() {
        let mut rng = StdRng::seed_from_u64(32);
        let (mut quiet, mut exact) = (0, 0);
        for _ in 0..3_000 {
            let settings = settings(&mut rng);
            let mut now = Moment::from_unix_secs(T0 + rng.gen_range(0..1_000));
            let mut job = job(&mut rng, now);
            let mut clocks = Clocks::default();
            let terminal_since = rng.gen_bool(0.5).then_some(now);
            let (polls_failing, muted) = (rng.gen_bool(0.2), rng.gen_bool(0.1));
            let acked_at = rng.gen_bool(0.1).then_some(now);
            for _ in 0..12 {
                if rng.gen_bool(0.15) {
                    job = self::job(&mut rng, now);
                }
                let input = |now| ClockInput {
                    now,
                    job: Some(&job),
                    created_at: None,
                    terminal_since,
                    polls_failing,
                    acked_at,
                    muted,
                    settings: &settings,
                };
                let (events, after) = tick(&clocks, &input(now));
                if events.is_empty() && after.is_none() {
                    quiet += 1;
                    let until = quiet_until(&clocks, &input(now));
                    // An ack or a mute holds a due reminder back: quiet, but only
                    // for this tick.
                    let held = acked_at.is_some() || muted;
                    assert!(
                        until > now || held,
                        "quiet until {until:?}, not after {now:?}: {clocks:?} {job:?}"
                    );
                    if until > now {
                        let horizon = until.min(now.saturating_add(Duration::from_secs(400 * DAY)));
                        let last = horizon.since(now).as_secs().saturating_sub(1);
                        for later in [1.min(last), last / 2, last] {
                            let at = now.saturating_add(Duration::from_secs(later));
                            let (events, after) = tick(&clocks, &input(at));
                            assert!(
                                events.is_empty() && after.is_none(),
                                "a tick at {at:?}, before {until:?}, did {events:?} for {clocks:?} {job:?}"
                            );
                        }
                    }
                    if until < Moment::LATEST && !held {
                        let (events, after) = tick(&clocks, &input(until));
                        assert!(
                            !events.is_empty() || after.is_some(),
                            "nothing at {until:?}: {clocks:?} {job:?}"
                        );
                        exact += 1;
                    }
                }
                if let Some(after) = after {
                    clocks = after;
                }
                now = now.saturating_add(Duration::from_secs(*pick(
                    &mut rng,
                    &[1, HOUR, DAY, 5 * DAY, 20 * DAY],
                )));
            }
        }
        assert!(
            quiet > 5_000 && exact > 1_000,
            "{quiet} quiet ticks, {exact} exact ends"
        );
    }
}
