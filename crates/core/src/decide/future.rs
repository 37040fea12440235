//! Stored times ahead of now. A job first seen while the system clock ran ahead (or a
//! hand edit) leaves times in the future: a state "since" next month never stalls and
//! a deadline counted from it comes late. Such times are brought back to now, and the
//! caller says which, so the log shows what was repaired.

use std::time::Duration;

use super::Memory;
use crate::moment::Moment;

/// How far ahead a stored time may be and still be taken as it is (a clock slewed back
/// by a few seconds is no reason to touch anything).
pub const TOLERANCE: Duration = Duration::from_secs(60);

impl Memory {
    /// Brings every stored time later than `now` (beyond [`TOLERANCE`]) back to `now`;
    /// the names of the fields it changed. ETAs, deadlines and the service's own
    /// creation time are predictions or facts from outside, not ours to move.
    pub fn clamp_future(&mut self, now: Moment) -> Vec<&'static str> {
        let mut moved = Vec::new();
        let limit = now.saturating_add(TOLERANCE);
        if self.terminal_since.is_some_and(|at| at > limit) {
            self.terminal_since = Some(now);
            moved.push("terminal_since");
        }
        // Clocks keep whole seconds.
        let now = Moment::from_unix_secs(now.unix_secs());
        let mut clamp = |at: &mut Moment, name: &'static str| {
            if *at > limit {
                *at = now;
                if !moved.contains(&name) {
                    moved.push(name);
                }
            }
        };
        let clocks = &mut self.clocks;
        if !clocks.created_by_service {
            if let Some(created) = clocks.created.as_mut() {
                clamp(created, "clocks.created");
            }
        }
        clamp(&mut clocks.state_since, "clocks.state_since");
        if let Some((_, at)) = clocks.anchor.as_mut() {
            clamp(at, "clocks.anchor");
        }
        for drive in clocks.drives.values_mut() {
            clamp(&mut drive.since, "clocks.drives.since");
            if let Some((_, at)) = drive.anchor.as_mut() {
                clamp(at, "clocks.drives.anchor");
            }
        }
        if let Some(reminder) = clocks.reminder.as_mut() {
            clamp(&mut reminder.since, "clocks.reminder.since");
            clamp(&mut reminder.last, "clocks.reminder.last");
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::clocks::{Clocks, DriveClock, Reminder};

    #[test]
    fn times_ahead_of_now_come_back_to_now_and_are_named() {
        let at = |offset: i64| Moment::from_unix_secs(1_800_000_000 + offset);
        let (now, month) = (at(0), 30 * 86_400);
        let mut memory = Memory {
            terminal_since: Some(at(month)),
            clocks: Clocks {
                created: Some(at(month)),
                state_since: at(month),
                anchor: Some((10, at(-5))),
                eta: Some(at(2 * month)),
                drives: [(
                    "D1".to_owned(),
                    DriveClock {
                        since: at(30),
                        ..DriveClock::default()
                    },
                )]
                .into_iter()
                .collect(),
                reminder: Some(Reminder {
                    condition: "stalled".into(),
                    since: at(-100),
                    count: 1,
                    last: Moment::LATEST,
                }),
                ..Clocks::default()
            },
            ..Memory::default()
        };
        let moved = memory.clamp_future(now);
        assert_eq!(
            moved,
            [
                "terminal_since",
                "clocks.created",
                "clocks.state_since",
                "clocks.reminder.last"
            ]
        );
        assert_eq!(memory.terminal_since, Some(now));
        assert_eq!(memory.clocks.state_since, now);
        assert_eq!(memory.clocks.anchor, Some((10, at(-5))), "the past stays");
        assert_eq!(
            memory.clocks.drives.get("D1").unwrap().since,
            at(30),
            "within tolerance"
        );
        assert_eq!(memory.clocks.eta, Some(at(2 * month)), "a prediction");
        assert!(memory.clamp_future(now).is_empty(), "once");
        let mut by_service = Memory::default();
        by_service.clocks.created = Some(at(month));
        by_service.clocks.created_by_service = true;
        assert!(by_service.clamp_future(now).is_empty());
    }
}
