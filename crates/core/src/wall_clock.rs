//! The time iewatch acts on: the system's wall clock, except that a step of it is taken
//! only once it has held for [`STEP_HOLD`] by the monotonic clock. Stalls and reminders
//! measure durations, deadline warnings compare with the service's times, and both are
//! remembered: an excursion of the system clock (a bad NTP source, a `date -s` undone a
//! minute later) would otherwise fire a stall and a deadline and leave them marked as
//! sent, so the real warnings never came. While a step is held, iewatch's time runs on
//! with the monotonic clock from where the wall clock last agreed; small corrections
//! (NTP slewing, up to [`SLEW`]) are followed at once. The monotonic clock stops while a
//! machine sleeps; a resumed laptop's clock is taken after the hold like any step.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        LazyLock, Mutex, PoisonError,
    },
    time::{Duration, Instant, SystemTime},
};

/// How far the wall clock may move against the monotonic clock between two readings
/// and still be followed at once.
pub const SLEW: Duration = Duration::from_secs(5);

/// How long a step of the wall clock must hold before iewatch takes it.
pub const STEP_HOLD: Duration = Duration::from_secs(600);

/// What one reading found, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The wall clock is taken as it is.
    Follows,
    /// The wall clock has just stepped by this many milliseconds (negative: back).
    StepSeen(i128),
    /// A step seen before still holds, not yet for [`STEP_HOLD`].
    Holding,
    /// The wall clock came back before the hold ended: nothing was taken from it.
    StepUndone,
    /// A step held for [`STEP_HOLD`] and is taken from now on (milliseconds).
    StepTaken(i128),
}

/// The readings so far: where the wall and monotonic clocks last agreed, and a step
/// being held (its size in milliseconds, and since when).
#[derive(Debug, Default)]
pub struct SteadyClock {
    agreed: Option<(SystemTime, Instant)>,
    held: Option<(i128, Instant)>,
}

/// `a - b` in milliseconds, signed.
fn signed_millis(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(ahead) => i128::try_from(ahead.as_millis()).unwrap_or(i128::MAX),
        Err(behind) => -i128::try_from(behind.duration().as_millis()).unwrap_or(i128::MAX),
    }
}

impl SteadyClock {
    /// A clock that has read nothing yet: its first reading is taken as it is.
    pub const fn new() -> SteadyClock {
        SteadyClock {
            agreed: None,
            held: None,
        }
    }

    /// iewatch's time for a reading of the wall clock `wall` taken at `mono`.
    pub fn read(&mut self, wall: SystemTime, mono: Instant) -> (SystemTime, Reading) {
        let slew = i128::from(u32::try_from(SLEW.as_millis()).unwrap_or(u32::MAX));
        let Some((agreed_wall, agreed_mono)) = self.agreed else {
            self.agreed = Some((wall, mono));
            return (wall, Reading::Follows);
        };
        let ours = agreed_wall
            .checked_add(mono.saturating_duration_since(agreed_mono))
            .unwrap_or(wall);
        let step = signed_millis(wall, ours);
        if step.abs() <= slew {
            let undone = self.held.take().is_some();
            self.agreed = Some((wall, mono));
            let reading = if undone {
                Reading::StepUndone
            } else {
                Reading::Follows
            };
            return (wall, reading);
        }
        match self.held {
            Some((size, since)) if (size - step).abs() <= slew => {
                if mono.saturating_duration_since(since) < STEP_HOLD {
                    return (ours, Reading::Holding);
                }
                self.held = None;
                self.agreed = Some((wall, mono));
                (wall, Reading::StepTaken(step))
            }
            _ => {
                self.held = Some((step, mono));
                (ours, Reading::StepSeen(step))
            }
        }
    }
}

static CLOCK: Mutex<SteadyClock> = Mutex::new(SteadyClock::new());

/// The agreement `now` may answer from without [`CLOCK`]'s lock (see [`Agreement`]).
static AGREEMENT: Agreement = Agreement::unsettled();

/// iewatch's time now (see the module's words); said in the log when a step of the
/// system clock is seen, undone or taken.
pub fn now() -> crate::moment::Moment {
    let mono = Instant::now();
    let wall = SystemTime::now();
    if AGREEMENT.holds(wall, mono) {
        return crate::moment::Moment::from_system(wall);
    }
    let (at, reading) = {
        let mut clock = CLOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let read = clock.read(wall, mono);
        AGREEMENT.publish(&clock);
        read
    };
    let hold = humantime::format_duration(STEP_HOLD);
    match reading {
        Reading::Follows | Reading::Holding => {}
        Reading::StepSeen(by) => tracing::warn!(
            "the system clock stepped {}; iewatch keeps its own time and takes the step \
             only if it holds for {hold}",
            step_words(by)
        ),
        Reading::StepUndone => {
            tracing::info!(
                "the system clock is back where iewatch's time is; nothing was taken from the step"
            );
        }
        Reading::StepTaken(by) => tracing::warn!(
            "the system clock's step {} held for {hold}; iewatch follows it from now on",
            step_words(by)
        ),
    }
    crate::moment::Moment::from_system(at)
}

/// The wall clock's offset from the monotonic clock when [`SteadyClock`] last agreed
/// with it, published while no step is held. A reading within [`Agreement::DRIFT`] of it
/// is one the steady clock would follow as it is, so `now` answers it with one shared
/// load instead of the lock (every poll asks; with the lock, two cores passed its line
/// back and forth at each). A reading that drifted further renews the agreement through
/// the lock, so the steady clock's own agreement never ages past it.
struct Agreement {
    /// Wall minus monotonic (since [`MONO_BASE`]), in nanoseconds; [`Agreement::NONE`]
    /// before the first reading and while a step is held.
    offset: AtomicI64,
}

/// The monotonic clock's zero for [`Agreement`]'s offsets.
static MONO_BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Agreement {
    const NONE: i64 = i64::MIN;
    /// Far below [`SLEW`]: NTP slewing moves the clocks apart 0.5 ms a second at most.
    const DRIFT: u64 = 1_000_000;

    const fn unsettled() -> Agreement {
        Agreement {
            offset: AtomicI64::new(Agreement::NONE),
        }
    }

    /// Wall minus monotonic, in nanoseconds; None out of range (before 1970, past 2262).
    fn offset_of(wall: SystemTime, mono: Instant) -> Option<i64> {
        let wall = i64::try_from(wall.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos());
        let base = *MONO_BASE;
        let mono = match mono.checked_duration_since(base) {
            Some(after) => i64::try_from(after.as_nanos()).ok()?,
            None => -i64::try_from(base.duration_since(mono).as_nanos()).ok()?,
        };
        wall.ok()?.checked_sub(mono)
    }

    /// True when a reading agrees with the published agreement: the steady clock
    /// would take `wall` as it is.
    fn holds(&self, wall: SystemTime, mono: Instant) -> bool {
        let agreed = self.offset.load(Ordering::Relaxed);
        agreed != Agreement::NONE
            && Agreement::offset_of(wall, mono)
                .is_some_and(|offset| offset.abs_diff(agreed) <= Agreement::DRIFT)
    }

    /// Publishes `clock`'s agreement, or none while it holds a step (under its lock).
    fn publish(&self, clock: &SteadyClock) {
        let offset = match (clock.agreed, clock.held) {
            (Some((wall, mono)), None) => Agreement::offset_of(wall, mono),
            _ => None,
        };
        self.offset
            .store(offset.unwrap_or(Agreement::NONE), Ordering::Relaxed);
    }
}

/// "forward by 30days" / "back by 2h".
fn step_words(millis: i128) -> String {
    // To the nearest second: the two clocks are read a moment apart, so a step of a
    // whole day measures a few milliseconds either side of it.
    let seconds = millis.unsigned_abs().saturating_add(500) / 1000;
    let size = Duration::from_secs(u64::try_from(seconds).unwrap_or(u64::MAX));
    let way = if millis >= 0 { "forward" } else { "back" };
    format!("{way} by {}", humantime::format_duration(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_step_is_said_to_the_nearest_second() {
        let thirty_days = 30 * 86_400_000;
        assert_eq!(step_words(thirty_days - 3), "forward by 30days");
        assert_eq!(step_words(-(thirty_days + 499)), "back by 30days");
        assert_eq!(step_words(1_600), "forward by 2s");
        // The largest step says a size, and does not overflow on the way.
        assert!(step_words(i128::MAX).len() > "forward by ".len());
    }

    #[test]
    fn an_excursion_is_never_taken_and_a_step_that_holds_is() {
        let mut clock = SteadyClock::new();
        let wall = SystemTime::now();
        let mono = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(clock.read(wall, mono), (wall, Reading::Follows));
        // Slewing by a second in a minute is followed.
        let (at, reading) = clock.read(wall + 61 * second, mono + 60 * second);
        assert_eq!((at, reading), (wall + 61 * second, Reading::Follows));
        // Thirty days ahead for a minute, then back: iewatch's time never left.
        let base = (wall + 61 * second, mono + 60 * second);
        let (at, reading) = clock.read(base.0 + 30 * DAY + second, base.1 + second);
        assert_eq!(at, base.0 + second);
        assert!(matches!(reading, Reading::StepSeen(ms) if ms == 30 * 86_400_000));
        let (at, reading) = clock.read(base.0 + 30 * DAY + 60 * second, base.1 + 60 * second);
        assert_eq!((at, reading), (base.0 + 60 * second, Reading::Holding));
        let (at, reading) = clock.read(base.0 + 61 * second, base.1 + 61 * second);
        assert_eq!((at, reading), (base.0 + 61 * second, Reading::StepUndone));
        // A step back that holds for the whole hold is taken, and followed after.
        let base = (base.0 + 61 * second, base.1 + 61 * second);
        let (at, reading) = clock.read(base.0 - 2 * 3600 * second, base.1);
        assert_eq!(at, base.0);
        assert!(matches!(reading, Reading::StepSeen(ms) if ms == -7_200_000));
        let later = base.1 + STEP_HOLD;
        let wall_later = base.0 - 2 * 3600 * second + STEP_HOLD;
        let (at, reading) = clock.read(wall_later, later);
        assert_eq!(at, wall_later);
        assert!(matches!(reading, Reading::StepTaken(ms) if ms == -7_200_000));
        let (at, reading) = clock.read(wall_later + second, later + second);
        assert_eq!((at, reading), (wall_later + second, Reading::Follows));
    }

    #[test]
    fn only_a_reading_the_steady_clock_follows_is_answered_without_its_lock() {
        let (agreement, mut clock) = (Agreement::unsettled(), SteadyClock::new());
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let ms = Duration::from_millis(1);
        assert!(!agreement.holds(wall, mono), "nothing agreed yet");
        clock.read(wall, mono);
        agreement.publish(&clock);
        assert!(agreement.holds(wall + 60_000 * ms, mono + 60_000 * ms));
        assert!(agreement.holds(wall + 60_001 * ms, mono + 60_000 * ms));
        // Past the drift the lock's path decides (and renews the agreement).
        assert!(!agreement.holds(wall + 60_002 * ms, mono + 60_000 * ms));
        assert!(!agreement.holds(wall - 2 * ms, mono));
        // A step held: nothing is answered without the lock, the old agreement neither.
        clock.read(wall + DAY, mono + ms);
        agreement.publish(&clock);
        assert!(!agreement.holds(wall + 2 * ms, mono + 2 * ms));
        assert!(!agreement.holds(wall + DAY + 2 * ms, mono + 2 * ms));
        // Undone: the agreement is back.
        clock.read(wall + 3 * ms, mono + 3 * ms);
        agreement.publish(&clock);
        assert!(agreement.holds(wall + 4 * ms, mono + 4 * ms));
    }

    #[test]
    fn a_clock_that_keeps_moving_is_held_from_its_latest_step() {
        let mut clock = SteadyClock::new();
        let wall = SystemTime::now();
        let mono = Instant::now();
        clock.read(wall, mono);
        let (_, first) = clock.read(wall + DAY, mono);
        assert!(matches!(first, Reading::StepSeen(_)));
        // Another step before the hold ended starts the hold again.
        let (at, second) = clock.read(wall + 2 * DAY, mono + STEP_HOLD / 2);
        assert_eq!(at, wall + STEP_HOLD / 2);
        assert!(matches!(second, Reading::StepSeen(_)));
        let (at, reading) = clock.read(wall + 2 * DAY + STEP_HOLD / 2, mono + STEP_HOLD);
        assert_eq!((at, reading), (wall + STEP_HOLD, Reading::Holding));
        assert_eq!(step_words(-7_200_000), "back by 2h");
    }
}
