//! Times of unchanged polls, written together at the heartbeat instead of one
//! transaction per poll. Each poll worker notes its times in a batch of its own
//! ([`PollNotes`]) and hands the whole batch over now and then, so that an unchanged
//! poll, the commonest thing the daemon does, takes no lock and touches no line another
//! core writes (tests/benches/poll_unchanged.rs).

use std::sync::{Arc, Mutex, PoisonError};

use super::JobId;
use crate::{id_hash::IdMap, moment::Moment};

/// A worker hands its notes over after this many: one lock per 64 polls, held for 64
/// map updates (a few microseconds).
const BATCH: usize = 64;

/// The pending times of unchanged polls, latest per job (bounded by the number of jobs);
/// clones share them.
#[derive(Clone, Debug, Default)]
pub(super) struct PollTimes(Arc<Mutex<IdMap<JobId, Moment>>>);

/// A job's time becomes `at` unless a later one is known: batches arrive in any order.
fn keep_latest(latest: &mut IdMap<JobId, Moment>, job: JobId, at: Moment) {
    latest
        .entry(job)
        .and_modify(|known| *known = (*known).max(at))
        .or_insert(at);
}

impl PollTimes {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdMap<JobId, Moment>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `notes` pending (a worker's batch, or times put back).
    fn hand_over(&self, notes: &[(JobId, Moment)]) {
        let mut latest = self.lock();
        for &(job, at) in notes {
            keep_latest(&mut latest, job, at);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The pending times, no longer pending (the map keeps its room for the next ones).
    pub(super) fn take(&self) -> Vec<(JobId, Moment)> {
        self.lock().drain().collect()
    }

    /// Puts back times that could not be written (later ones noted meanwhile win).
    pub(super) fn restore(&self, batch: Vec<(JobId, Moment)>) {
        self.hand_over(&batch);
    }

    /// A batch of one's own to note times in.
    pub(super) fn notes(&self) -> PollNotes {
        PollNotes {
            batch: Vec::new(),
            pending: self.clone(),
        }
    }
}

/// One poll worker's notes of unchanged polls (see the module's doc). They become
/// pending, for the heartbeat to write, every [`BATCH`] notes, at
/// [`PollNotes::hand_over`] (a worker calls it before it waits for a due job) and when
/// dropped, so none is lost when the worker stops.
#[derive(Debug)]
pub struct PollNotes {
    batch: Vec<(JobId, Moment)>,
    pending: PollTimes,
}

impl PollNotes {
    /// Notes that `job` was polled at `at` and nothing changed.
    pub fn note(&mut self, job: JobId, at: Moment) {
        if self.batch.capacity() == 0 {
            self.batch.reserve_exact(BATCH);
        }
        self.batch.push((job, at));
        if self.batch.len() >= BATCH {
            self.hand_over();
        }
    }

    /// Makes the notes so far pending; the batch keeps its room for the next ones.
    pub fn hand_over(&mut self) {
        if !self.batch.is_empty() {
            self.pending.hand_over(&self.batch);
            self.batch.clear();
        }
    }
}

impl Drop for PollNotes {
    fn drop(&mut self) {
        self.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Moment {
        Moment::from_unix_secs(secs)
    }

    #[test]
    fn notes_are_pending_once_handed_over_and_the_latest_per_job_wins() {
        let pending = PollTimes::default();
        let (mut first, mut second) = (pending.notes(), pending.notes());
        first.note(JobId(1), at(100));
        first.note(JobId(2), at(100));
        assert!(pending.is_empty(), "not handed over yet");
        second.note(JobId(1), at(300));
        second.hand_over();
        first.note(JobId(1), at(200));
        drop(first);
        let mut taken = pending.take();
        taken.sort();
        assert_eq!(taken, vec![(JobId(1), at(300)), (JobId(2), at(100))]);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_full_batch_is_handed_over_and_pending_stays_one_time_per_job() {
        let pending = PollTimes::default();
        let mut notes = pending.notes();
        for i in 0..BATCH {
            notes.note(JobId(7), at(i as i64));
        }
        assert!(!pending.is_empty(), "a full batch goes without being asked");
        assert!(notes.batch.is_empty());
        for i in 0..100 * BATCH {
            notes.note(JobId(i as i64 % 10), at(1_000 + i as i64));
        }
        assert_eq!(pending.lock().len(), 10, "one time per job");
        drop(notes);
        let taken = pending.take();
        assert_eq!(taken.len(), 10);
        let last = 1_000 + 100 * BATCH as i64 - 1;
        assert!(taken.contains(&(JobId(last % 10), at(last))));
        assert!(
            taken.contains(&(JobId(7), at(last - 2))),
            "the later time wins"
        );
    }

    #[test]
    fn a_batch_handed_over_before_it_is_full_is_reused() {
        let pending = PollTimes::default();
        let mut notes = pending.notes();
        for i in 0..1_000 {
            notes.note(JobId(i % 3), at(i));
            notes.hand_over();
        }
        assert_eq!(pending.lock().len(), 3);
        assert_eq!(
            notes.batch.capacity(),
            BATCH,
            "the worker's batch is reused"
        );
        let mut taken = pending.take();
        taken.sort();
        assert_eq!(
            taken,
            vec![
                (JobId(0), at(999)),
                (JobId(1), at(997)),
                (JobId(2), at(998))
            ]
        );
    }

    #[test]
    fn restored_times_do_not_undo_later_notes() {
        let pending = PollTimes::default();
        let mut notes = pending.notes();
        notes.note(JobId(1), at(100));
        notes.hand_over();
        let failed = pending.take();
        notes.note(JobId(1), at(200));
        notes.hand_over();
        pending.restore(failed);
        assert_eq!(pending.take(), vec![(JobId(1), at(200))]);
    }
}
