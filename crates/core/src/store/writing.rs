//! The daemon's side of the database, [`Writer`]: the group-commit writer task
//! ([`super::writer`]) and what fences its commits (the reload generation, the PostgreSQL
//! lease epoch, the SQLite file's lock and identity), the pending times of unchanged
//! polls, and the proof that the database takes writes. Only `iewatch run` opens one; a
//! [`Store`] (`status`, `history`, the status page, `check`) has none of it and starts no
//! task, so a read-only command cannot write by mistake: it has no method to.

use std::{
    ops::Deref,
    path::PathBuf,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use sqlx::AnyPool;

use super::{
    guard::{self, FileIdentity},
    lease,
    poll_times::{PollNotes, PollTimes},
    writer::{self, Change, Write},
    Database, Dialect, Failed, JobId, Observed, Store, StoreError, HEALTH_PROOF_AGE,
};
use crate::{
    decide::Memory,
    events::{Event, OutboxEntry},
    moment::Moment,
};

/// Unchanged polls' times written by one statement.
const POLL_TIMES_PER_STATEMENT: usize = 1000;
/// How long `/healthz` waits for a proof before answering from the last known outcome.
const PROOF_WAIT: Duration = Duration::from_secs(2);

/// The daemon's handle on its database: every write of a poll, a delivery or an error
/// log goes through it, fenced by the reload generation and, on PostgreSQL, the lease.
/// Cheap to clone; clones share one writer task. Reads go through the [`Store`] it
/// dereferences to (a writer is a store that also writes).
#[derive(Clone, Debug)]
pub struct Writer {
    store: Store,
    writing: Writing,
    /// The hold on a SQLite file (None on PostgreSQL, where the lease decides).
    owner: Option<Arc<Owner>>,
    /// The generation of job tasks whose writes this handle carries.
    generation: u64,
}

impl Deref for Writer {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

/// What `iewatch run` holds of a SQLite file: the lock, and the file's identity.
#[derive(Debug)]
struct Owner {
    lock: Mutex<Option<guard::WriterLock>>,
    identity: FileIdentity,
}

/// The writer task's handles and the fences it commits under; clones share them.
#[derive(Clone, Debug)]
pub(super) struct Writing {
    queue: tokio::sync::mpsc::Sender<writer::Request>,
    busy_since_ms: Arc<AtomicU64>,
    last_commit: writer::LastCommit,
    /// Why the writer task stopped, once it has.
    stopped: tokio::sync::watch::Receiver<Option<String>>,
    poll_times: PollTimes,
    /// On PostgreSQL, the epoch of the lease this daemon holds (0: none); its writes are
    /// fenced by it (see [`lease`]).
    epoch: Arc<AtomicI64>,
    /// Until when that lease is surely still this daemon's, on its own monotonic clock
    /// (None: not renewed yet since it was taken).
    lease_until: Arc<Mutex<Option<Instant>>>,
    /// Writes of generations older than this are refused.
    fence: Arc<AtomicU64>,
}

impl Writing {
    /// Starts the writer task on `pool`; with `file` (the daemon's SQLite file and its
    /// identity) no commit goes into a file deleted or replaced since.
    pub(super) fn spawn(
        pool: AnyPool,
        dialect: Dialect,
        file: Option<(PathBuf, FileIdentity)>,
    ) -> Writing {
        let fence = Arc::new(AtomicU64::new(0));
        let epoch = Arc::new(AtomicI64::new(0));
        let writer = writer::spawn(pool, dialect, (fence.clone(), epoch.clone()), file);
        Writing {
            queue: writer.queue,
            busy_since_ms: writer.busy_since_ms,
            last_commit: writer.last_commit,
            stopped: writer.stopped,
            poll_times: PollTimes::default(),
            epoch,
            lease_until: Arc::default(),
            fence,
        }
    }
}

impl Writer {
    /// Opens the database for `iewatch run`: creates it (a SQLite file with mode 0600)
    /// and migrates it; a SQLite file after taking the one lock a database has, and
    /// remembering which file it is (see [`Writer::check_identity`]). On PostgreSQL
    /// several daemons may open one database; which of them writes is the lease's to say
    /// ([`Writer::lead`]).
    ///
    /// # Errors
    /// [`StoreError::InUse`] when another daemon runs on the file; the database cannot
    /// be created, opened or reached; a migration fails.
    pub async fn open(database: &Database) -> Result<Writer, StoreError> {
        let owner = match database.file() {
            None => None,
            Some(path) => {
                guard::create_private_file(path)?;
                let lock = guard::WriterLock::acquire(path)?;
                let identity = FileIdentity::of(path).map_err(|e| StoreError::Open {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                Some(Arc::new(Owner {
                    lock: Mutex::new(Some(lock)),
                    identity,
                }))
            }
        };
        let store = Store::connect(database, true).await?;
        let file = owner
            .as_ref()
            .zip(database.file())
            .map(|(o, path)| (path.to_owned(), o.identity));
        let writing = Writing::spawn(store.pool.clone(), database.dialect(), file);
        Ok(Writer {
            store,
            writing,
            owner,
            generation: 0,
        })
    }

    /// [`Writer::open`] on a SQLite file.
    ///
    /// # Errors
    /// As [`Writer::open`].
    pub async fn open_file(path: &std::path::Path) -> Result<Writer, StoreError> {
        Self::open(&Database::File(path.to_owned())).await
    }

    /// The store to read through (for a task that only reads).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks that the SQLite file at the database's path is still the one opened (not
    /// deleted, not replaced).
    ///
    /// # Errors
    /// [`StoreError::Replaced`].
    pub fn check_identity(&self) -> Result<(), StoreError> {
        match (&self.owner, self.database.file()) {
            (Some(owner), Some(path)) => guard::check_identity(path, owner.identity),
            _ => Ok(()),
        }
    }

    /// Writes the poll times still pending, gives up the lease, closes every connection
    /// (checkpointing the WAL) and gives up the lock.
    pub async fn close(&self) {
        if self.poll_times_pending() {
            if let Err(e) = self.flush_poll_times().await {
                tracing::warn!("last poll times not written: {e}");
            }
        }
        if let Some(epoch) = self.leading_epoch() {
            if let Err(e) = lease::release(&self.pool, epoch).await {
                tracing::warn!(
                    "the lease was not given up (a standby takes over when it expires): {e}"
                );
            }
        }
        self.store.close().await;
        if let Some(owner) = &self.owner {
            owner
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
    }

    /// From now on this writer writes as the holder of lease `epoch` (PostgreSQL): every
    /// write is refused with [`StoreError::LeaseLost`] once another daemon took over.
    pub fn lead(&self, epoch: i64) {
        self.writing.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The lease keeper's word after a renewal: the lease is this daemon's until `until`
    /// (its own monotonic clock) at least.
    pub fn lease_held_until(&self, until: Instant) {
        *self
            .writing
            .lease_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(until);
    }

    /// Whether this daemon may still act as the leader: false once its lease may have
    /// run out without a renewal (a process paused or cut off past it), when a standby
    /// may already lead. What the database fences (writes) needs no such check; what it
    /// cannot (an HTTP delivery) does. Always true without a lease.
    pub fn within_lease(&self) -> bool {
        self.leading_epoch().is_none()
            || self
                .writing
                .lease_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none_or(|until| Instant::now() < until)
    }

    /// The lease epoch this writer writes under, if it leads.
    pub fn leading_epoch(&self) -> Option<i64> {
        Some(self.writing.epoch.load(Ordering::SeqCst)).filter(|e| *e != 0)
    }

    /// A transaction whose writes commit only while this daemon holds the lease (on
    /// PostgreSQL: [`lease::begin`] checks the lease with the `BEGIN`): for the notifier's writes,
    /// which the group-commit writer does not carry. (A closure taking the transaction
    /// would be tidier, but an async closure's future cannot yet be proven `Send` for a
    /// spawned lane.)
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`], or the database's.
    pub(super) async fn begin_fenced(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        lease::begin(&self.pool, self.leading_epoch().unwrap_or(0)).await
    }

    /// A handle whose writes belong to generation `generation` of job tasks, which
    /// from now on is the only one allowed to write: every older generation's writes are
    /// refused with [`StoreError::Fenced`]. A reload calls this before starting the new
    /// generation, so a poll abandoned by the old one can never record a change twice.
    pub fn fence_for(&self, generation: u64) -> Writer {
        self.writing.fence.fetch_max(generation, Ordering::SeqCst);
        Writer {
            generation,
            ..self.clone()
        }
    }

    /// Resolves with the reason once the writer task has stopped (it should not while
    /// any handle lives).
    pub async fn writer_stopped(&self) -> String {
        let mut stopped = self.writing.stopped.clone();
        let reason = match stopped.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        reason.unwrap_or_else(|| "the database writer has stopped".into())
    }

    /// Transactions the writer task has ended since it started: with the writes it was
    /// handed, how well group commit shares the fsync (benchmarks print it).
    pub fn commits(&self) -> u64 {
        self.writing.last_commit.count()
    }

    /// How long the commit under way has taken, if one is under way (the watchdog's view
    /// of the writer).
    pub fn writer_busy_for(&self) -> Option<Duration> {
        let since = self.writing.busy_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis(writer::now_ms().saturating_sub(since)))
    }

    /// Whether the database takes writes, as the last commit showed. A commit older than
    /// [`HEALTH_PROOF_AGE`] (or a failed one older than a second) is not trusted: the
    /// writer is asked to commit the health row, and its outcome is the answer. So an idle
    /// daemon writes nothing until asked, and however often `/healthz` is asked it adds at
    /// most one small commit per [`HEALTH_PROOF_AGE`] (one a second while failing).
    ///
    /// # Errors
    /// Why the database does not take writes.
    pub async fn takes_writes(&self) -> Result<(), String> {
        let w = &self.writing;
        let (at, error) = w.last_commit.get();
        let age = crate::wall_clock::now().since(at);
        let trusted = if error.is_some() {
            age < Duration::from_secs(1)
        } else {
            age < HEALTH_PROOF_AGE
        };
        if !trusted {
            // A writer busy past the deadline is the writer's liveness probe's to report;
            // here the last known outcome stands.
            let proof = tokio::time::timeout(PROOF_WAIT, self.ask_writer(writer::Work::Prove));
            if let Ok(Err(e)) = proof.await {
                return Err(format!("database not writable: {e}"));
            }
        }
        match w.last_commit.get().1 {
            Some(error) => Err(format!("database not writable: {error}")),
            None => Ok(()),
        }
    }

    /// Writes a changed observation: job row, drives, events and outbox, atomically.
    /// Returns the new event ids in order. Concurrent writes are committed together
    /// (see [`writer`]), each in its own savepoint.
    ///
    /// # Errors
    /// Database errors; nothing of this observation is written then.
    pub async fn record_observation(&self, observed: Observed<'_>) -> Result<Vec<i64>, StoreError> {
        let change = Change::Observation {
            snapshot: Box::new(observed.snapshot.clone()),
            document: observed.document.to_owned(),
            etag: observed.etag.cloned(),
            last_modified: observed.last_modified.map(str::to_owned),
        };
        self.submit(
            observed.job,
            change,
            Some(observed.memory),
            observed.events,
            observed.outbox,
            observed.at,
        )
        .await
    }

    /// Writes a failed poll (and its failure events, if any), atomically.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_failure(&self, failed: Failed<'_>) -> Result<Vec<i64>, StoreError> {
        let change = Change::Failure {
            error: failed.error.to_owned(),
        };
        self.submit(
            failed.job,
            change,
            Some(failed.memory),
            failed.events,
            failed.outbox,
            failed.at,
        )
        .await
    }

    /// Writes a success that brought no new document (304/412) but changed the
    /// bookkeeping (a failure streak ended), with its events.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_bookkeeping(
        &self,
        job: JobId,
        memory: &Memory,
        events: &[Event],
        outbox: &[OutboxEntry],
        at: Moment,
    ) -> Result<Vec<i64>, StoreError> {
        self.submit(job, Change::Bookkeeping, Some(memory), events, outbox, at)
            .await
    }

    pub(super) async fn submit(
        &self,
        job: JobId,
        change: Change,
        memory: Option<&Memory>,
        events: &[Event],
        outbox: &[OutboxEntry],
        at: Moment,
    ) -> Result<Vec<i64>, StoreError> {
        let write = Write {
            generation: self.generation,
            job,
            change,
            memory: memory.cloned(),
            events: events.to_vec(),
            outbox: outbox.to_vec(),
            at,
        };
        match self
            .ask_writer(writer::Work::Write(Box::new(write)))
            .await?
        {
            writer::Done::Events(ids) => Ok(ids),
            _ => Err(StoreError::Commit("unexpected writer answer".into())),
        }
    }

    /// The row id of a job, its row created on first sight (by the writer task).
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn register_job(
        &self,
        account: &str,
        name: &str,
    ) -> Result<JobId, StoreError> {
        let work = writer::Work::Register {
            account: account.to_owned(),
            name: name.to_owned(),
        };
        match self.ask_writer(work).await? {
            writer::Done::Registered(id) => Ok(id),
            _ => Err(StoreError::Commit("unexpected writer answer".into())),
        }
    }

    async fn ask_writer(&self, work: writer::Work) -> Result<writer::Done, StoreError> {
        let stopped = || StoreError::Commit("the database writer has stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writing
            .queue
            .send(writer::Request { work, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// A poll worker's own batch to note the times of unchanged polls in;
    /// [`Writer::flush_poll_times`] writes them.
    pub fn poll_notes(&self) -> PollNotes {
        self.writing.poll_times.notes()
    }

    /// Whether times of unchanged polls wait to be written.
    pub fn poll_times_pending(&self) -> bool {
        !self.writing.poll_times.is_empty()
    }

    /// Writes the pending times of unchanged polls, a statement per thousand (through
    /// the writer); on failure they stay pending.
    ///
    /// # Errors
    /// Database errors.
    pub async fn flush_poll_times(&self) -> Result<(), StoreError> {
        let w = &self.writing;
        let mut batch = w.poll_times.take();
        // A statement per chunk keeps the JSON handed to SQLite (and its working set)
        // small with ten thousand jobs.
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(POLL_TIMES_PER_STATEMENT));
            if let Err(e) = self
                .ask_writer(writer::Work::PollTimes(batch.clone()))
                .await
            {
                batch.extend(rest);
                w.poll_times.restore(batch);
                return Err(e);
            }
            batch = rest;
        }
        Ok(())
    }
}
