//! The database (SQLite, or PostgreSQL with a standby), the daemon's memory: the tables of
//! the README's "The database", created by the migrations in `migrations/` (and
//! `migrations/postgres/`), written one transaction per observed change (job row, drive rows,
//! events and the webhook outbox together) and read by `status`, `history` and the
//! notifier. Unchanged polls are written in batches, never one transaction each: their
//! times are noted here and written by the writer task at the daemon's heartbeat.
//! Values from disk are decoded into types at this boundary, with errors, never panics.

mod attention;
mod database;
mod deliveries;
mod guard;
mod incidents;
pub mod lease;
mod reads;
mod resume;
mod retention;
mod timeline;
pub mod writer;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant, SystemTime},
};

use sqlx::{migrate::Migrator, AnyPool};

pub use attention::Attention;
pub(crate) use database::postgres_url;
pub use database::{is_postgres_url, Database, Dialect, Postgres};
pub use deliveries::{Attempt, DeliveryRow, OutboxItem};
pub use guard::beside;
pub use reads::{DriveStatus, EventRecord, JobStatus, NearDeadline};
pub use retention::Pruned;
pub use timeline::TimelinePage;

/// Unchanged polls' times written by one statement.
const POLL_TIMES_PER_STATEMENT: usize = 1000;
/// How old the last commit may be for `/healthz` to trust it without a new proof.
pub const HEALTH_PROOF_AGE: Duration = Duration::from_secs(30);
/// How long `/healthz` waits for a proof before answering from the last known outcome.
const PROOF_WAIT: Duration = Duration::from_secs(2);
use writer::{Change, PollTimes, Write};

use crate::{
    decide::Memory,
    events::{Event, OutboxEntry},
    model::{DriveId, ETag, JobSnapshot},
};

/// The SQLite schema, embedded in the binary; every way of opening the database runs it.
pub static MIGRATOR: Migrator = sqlx::migrate!();
/// The same tables on PostgreSQL, plus the leader lease.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Why the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be created or opened.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A migration failed.
    #[error("cannot migrate database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed (disk full, read-only, locked, ...).
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A group commit failed; every write in it was rolled back.
    #[error("database commit: {0}")]
    Commit(String),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Another `iewatch run` owns the database.
    #[error("database {database} is in use by another `iewatch run` ({holder}); one daemon per database")]
    InUse {
        /// The database file.
        database: String,
        /// Who holds it.
        holder: String,
    },
    /// The database file is no longer the one the daemon opened.
    #[error("database {path} was {what} while the daemon ran; restart to open it again")]
    Replaced {
        /// The database file.
        path: String,
        /// What happened to it.
        what: String,
    },
    /// The write came from a generation of job tasks that a reload replaced.
    #[error("write refused: it comes from a generation of job tasks that a reload replaced")]
    Fenced,
    /// On PostgreSQL: this daemon no longer holds the leader lease.
    #[error("write refused: this daemon lost the leader lease (another iewatch leads now)")]
    LeaseLost,
}

/// A watched job's row id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

/// What the scheduler needs to resume watching a job after a restart.
#[derive(Clone, Debug)]
pub struct StoredJob {
    /// Row id.
    pub id: JobId,
    /// The ETag to send next.
    pub etag: Option<ETag>,
    /// The watched fields last recorded (None: never seen).
    pub snapshot: Option<JobSnapshot>,
    /// The bookkeeping of [`crate::decide`].
    pub memory: Memory,
    /// Stored values that could not be read back (a hand-edited row) and were taken as
    /// their safe default: said once, repaired by the job's next write.
    pub damaged: Vec<String>,
}

/// One successful poll that changed something, to be written in one transaction.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The job.
    pub job: JobId,
    /// The watched fields.
    pub snapshot: &'a JobSnapshot,
    /// The source's document as `jobs.snapshot` keeps it.
    pub document: &'a str,
    /// Its ETag.
    pub etag: Option<&'a ETag>,
    /// Its Last-Modified.
    pub last_modified: Option<&'a str>,
    /// The job's bookkeeping after this poll.
    pub memory: &'a Memory,
    /// The changes found (possibly none: a new ETag with equal content).
    pub events: &'a [Event],
    /// Every delivery to queue for them.
    pub outbox: &'a [OutboxEntry],
    /// When it was observed.
    pub at: SystemTime,
}

/// One failed poll, to be written in one transaction.
#[derive(Debug)]
pub struct Failed<'a> {
    /// The job.
    pub job: JobId,
    /// The error, one line, no secrets.
    pub error: &'a str,
    /// The job's bookkeeping after this poll.
    pub memory: &'a Memory,
    /// Events to record (poll_failing, not_found), usually none.
    pub events: &'a [Event],
    /// Deliveries to queue for them.
    pub outbox: &'a [OutboxEntry],
    /// When.
    pub at: SystemTime,
}

/// The database handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    database: Database,
    /// On PostgreSQL, the epoch of the lease this daemon holds (0: none); its writes are
    /// fenced by it (see [`lease`]).
    epoch: Arc<AtomicI64>,
    /// Until when that lease is surely still this daemon's, on its own monotonic clock
    /// (None: not renewed yet since it was taken).
    lease_until: Arc<Mutex<Option<Instant>>>,
    writer: tokio::sync::mpsc::Sender<writer::Request>,
    writer_busy_since_ms: Arc<AtomicU64>,
    last_commit: writer::LastCommit,
    poll_times: PollTimes,
    /// The daemon's hold on the file (None for other commands).
    owner: Option<Arc<Owner>>,
    /// The generation of job tasks whose writes this handle carries.
    generation: u64,
    /// Writes of generations older than this are refused.
    fence: Arc<AtomicU64>,
    /// Why the writer task stopped, once it has.
    writer_stopped: tokio::sync::watch::Receiver<Option<String>>,
}

/// What `iewatch run` holds of its database: the lock, and the file's identity.
#[derive(Debug)]
struct Owner {
    lock: Mutex<Option<guard::WriterLock>>,
    identity: guard::FileIdentity,
}

/// A timestamp in SQLite's own form (`YYYY-MM-DD HH:MM:SS.SSS`, UTC), so that
/// `datetime('now', '-1 day')` comparisons work on the text.
pub fn timestamp(at: SystemTime) -> String {
    let text = crate::moment::rfc3339_millis(at);
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

/// Reads a [`timestamp`] back; None for text that is not one, or a time outside 1970 to
/// 9999 (a hand-edited row).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(crate::moment::bounded)
}

impl Store {
    /// Opens (creating with mode 0600 if needed) and migrates a SQLite database.
    ///
    /// # Errors
    /// The file cannot be created or opened, or a migration fails.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_database(&Database::File(path.to_owned())).await
    }

    /// Opens and migrates `database` (a SQLite file is created, mode 0600, if needed).
    ///
    /// # Errors
    /// It cannot be created, opened or reached, or a migration fails.
    pub async fn open_database(database: &Database) -> Result<Store, StoreError> {
        if let Some(path) = database.file() {
            guard::create_private_file(path)?;
        }
        Self::connect(database, true, None).await
    }

    /// Opens the database for `iewatch run`: as [`Store::open_database`]; a SQLite file
    /// after taking the one lock a database has, and remembering which file it is (see
    /// [`Store::check_identity`]). On PostgreSQL several daemons may open one database;
    /// which of them writes is the lease's to say ([`Store::lead`]).
    ///
    /// # Errors
    /// [`StoreError::InUse`] when another daemon runs on the file; else as
    /// [`Store::open_database`].
    pub async fn open_for_daemon(database: &Database) -> Result<Store, StoreError> {
        let Some(path) = database.file() else {
            return Self::connect(database, true, None).await;
        };
        guard::create_private_file(path)?;
        let lock = guard::WriterLock::acquire(path)?;
        let identity = guard::FileIdentity::of(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let owner = Owner {
            lock: Mutex::new(Some(lock)),
            identity,
        };
        Self::connect(database, true, Some(Arc::new(owner))).await
    }

    /// Opens an existing SQLite database for reading or a manual change.
    ///
    /// # Errors
    /// As [`Store::open_existing_database`].
    pub async fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Self::open_existing_database(&Database::File(path.to_owned())).await
    }

    /// Opens an existing database for reading (`status`, `history`, `deliveries`) or a
    /// manual change (`redeliver`): never creates, never migrates, takes no lock.
    ///
    /// # Errors
    /// The file does not exist, or the database cannot be opened or reached.
    pub async fn open_existing_database(database: &Database) -> Result<Store, StoreError> {
        if let Some(path) = database.file() {
            if !path.exists() {
                return Err(StoreError::Open {
                    path: path.display().to_string(),
                    reason: "no such file (has `iewatch run` started with this config?)".into(),
                });
            }
        }
        Self::connect(database, false, None).await
    }

    async fn connect(
        database: &Database,
        migrate: bool,
        owner: Option<Arc<Owner>>,
    ) -> Result<Store, StoreError> {
        let pool = database::connect(database, migrate).await?;
        let dialect = database.dialect();
        if migrate {
            match dialect {
                Dialect::Sqlite => MIGRATOR.run(&pool).await?,
                Dialect::Postgres => POSTGRES_MIGRATOR.run(&pool).await?,
            }
            if let Some(path) = database.file() {
                guard::make_private(path);
            }
        }
        let poll_times = PollTimes::default();
        let fence = Arc::new(AtomicU64::new(0));
        let epoch = Arc::new(AtomicI64::new(0));
        let writer = writer::spawn(
            pool.clone(),
            dialect,
            (fence.clone(), epoch.clone()),
            owner
                .as_ref()
                .zip(database.file())
                .map(|(o, path)| (path.to_owned(), o.identity)),
        );
        Ok(Store {
            writer: writer.queue,
            writer_busy_since_ms: writer.busy_since_ms,
            last_commit: writer.last_commit,
            writer_stopped: writer.stopped,
            pool,
            database: database.clone(),
            epoch,
            lease_until: Arc::default(),
            poll_times,
            owner,
            generation: 0,
            fence,
        })
    }

    /// From now on this store writes as the holder of lease `epoch` (PostgreSQL): every
    /// write is refused with [`StoreError::LeaseLost`] once another daemon took over.
    pub fn lead(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The lease keeper's word after a renewal: the lease is this daemon's until `until`
    /// (its own monotonic clock) at least.
    pub fn lease_held_until(&self, until: Instant) {
        *self
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
                .lease_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none_or(|until| Instant::now() < until)
    }

    /// The lease epoch this store writes under, if it leads.
    pub fn leading_epoch(&self) -> Option<i64> {
        Some(self.epoch.load(Ordering::SeqCst)).filter(|e| *e != 0)
    }

    /// In a transaction of the leader's: the lease check of [`lease::check`].
    pub(crate) async fn fence_lease(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<(), StoreError> {
        lease::check(tx, self.epoch.load(Ordering::SeqCst)).await
    }

    /// A handle whose writes belong to generation `generation` of job tasks, which
    /// from now on is the only one allowed to write: every older generation's writes are
    /// refused with [`StoreError::Fenced`]. A reload calls this before starting the new
    /// generation, so a poll abandoned by the old one can never record a change twice.
    pub fn fence_for(&self, generation: u64) -> Store {
        self.fence.fetch_max(generation, Ordering::SeqCst);
        Store {
            generation,
            ..self.clone()
        }
    }

    /// Resolves with the reason once the writer task has stopped (it should not while
    /// any handle lives).
    pub async fn writer_stopped(&self) -> String {
        let mut stopped = self.writer_stopped.clone();
        let reason = match stopped.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        reason.unwrap_or_else(|| "the database writer has stopped".into())
    }

    /// How long the commit under way has taken, if one is under way (the watchdog's view
    /// of the writer).
    pub fn writer_busy_for(&self) -> Option<Duration> {
        let since = self.writer_busy_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| Duration::from_millis(writer::now_ms().saturating_sub(since)))
    }

    /// For the daemon's database: checks that the file at its path is still the one it
    /// opened (not deleted, not replaced).
    ///
    /// # Errors
    /// [`StoreError::Replaced`].
    pub fn check_identity(&self) -> Result<(), StoreError> {
        match (&self.owner, self.database.file()) {
            (Some(owner), Some(path)) => guard::check_identity(path, owner.identity),
            _ => Ok(()),
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Its SQL dialect.
    pub fn dialect(&self) -> Dialect {
        self.database.dialect()
    }

    /// The pool, for queries the façade does not cover (tests, benchmarks, the lease).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Writes the poll times still pending, closes every connection (checkpointing the
    /// WAL) and, for the daemon, gives up the lock or the lease.
    pub async fn close(&self) {
        if !self.poll_times.is_empty() {
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
        self.pool.close().await;
        if let Some(owner) = &self.owner {
            owner.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
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
        let (at, error) = self.last_commit.get();
        let age = crate::wall_clock::now()
            .duration_since(at)
            .unwrap_or_default();
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
        match self.last_commit.get().1 {
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
            observed.memory,
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
            failed.memory,
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
        at: SystemTime,
    ) -> Result<Vec<i64>, StoreError> {
        self.submit(job, Change::Bookkeeping, memory, events, outbox, at)
            .await
    }

    async fn submit(
        &self,
        job: JobId,
        change: Change,
        memory: &Memory,
        events: &[Event],
        outbox: &[OutboxEntry],
        at: SystemTime,
    ) -> Result<Vec<i64>, StoreError> {
        let write = Write {
            generation: self.generation,
            job,
            change,
            memory: memory.clone(),
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
        self.writer
            .send(writer::Request { work, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Notes the time of an unchanged poll; [`Store::flush_poll_times`] writes them.
    pub fn note_poll(&self, job: JobId, at: SystemTime) {
        self.poll_times.note(job, at);
    }

    /// Whether times of unchanged polls wait to be written.
    pub fn poll_times_pending(&self) -> bool {
        !self.poll_times.is_empty()
    }

    /// Writes the pending times of unchanged polls, a statement per thousand (through
    /// the writer); on failure they stay pending.
    ///
    /// # Errors
    /// Database errors.
    pub async fn flush_poll_times(&self) -> Result<(), StoreError> {
        let mut batch = self.poll_times.take();
        // A statement per chunk keeps the JSON handed to SQLite (and its working set)
        // small with ten thousand jobs.
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(POLL_TIMES_PER_STATEMENT));
            if let Err(e) = self
                .ask_writer(writer::Work::PollTimes(batch.clone()))
                .await
            {
                batch.extend(rest);
                self.poll_times.restore(batch);
                return Err(e);
            }
            batch = rest;
        }
        Ok(())
    }
}

pub(crate) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    job: JobId,
    events: &[Event],
    outbox: &[OutboxEntry],
    now: &str,
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(events.len());
    for event in events {
        // The job as it is after this observation travels with every event, so that a
        // payload built hours later still says what the job looked like at the time.
        let id: i64 = sqlx::query_scalar(dialect.pick(
            "INSERT INTO events (job_id, drive_id, type, from_value, to_value, observed_at, severity, details)
             SELECT id, $1, $2, $3, $4, $5, $6,
                    json_patch(json_object('job', json_patch(json_object('type', job_type, 'state', state,
                                                              'percent_complete', percent_complete),
                                                  CASE WHEN sku IS NULL THEN '{}' ELSE json_object('sku', sku) END)),
                               COALESCE($7, '{}'))
             FROM jobs WHERE id = $8
             RETURNING id",
            "INSERT INTO events (job_id, drive_id, type, from_value, to_value, observed_at, severity, details)
             SELECT id, $1, $2, $3, $4, $5, $6,
                    (jsonb_build_object('job', jsonb_build_object('type', job_type, 'state', state,
                                                                  'percent_complete', percent_complete)
                                               || CASE WHEN sku IS NULL THEN '{}'::jsonb
                                                       ELSE jsonb_build_object('sku', sku) END)
                     || COALESCE($7::jsonb, '{}'::jsonb))::text
             FROM jobs WHERE id = $8
             RETURNING id",
        ))
        .bind(event.drive_id.as_ref().map(DriveId::as_str))
        .bind(event.event_type)
        .bind(event.from_text())
        .bind(event.to_text())
        .bind(now)
        .bind(event.severity)
        .bind(
            event
                .details
                .as_ref()
                .map(|d| merge_patch(serde_json::json!({ "details": d })).to_string()),
        )
        .bind(job.0)
        .fetch_one(&mut **tx)
        .await?;
        ids.push(id);
    }
    for entry in outbox {
        let Some(event_id) = ids.get(entry.event) else {
            continue;
        };
        sqlx::query(
            "INSERT INTO deliveries (event_id, job_id, webhook, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(job.0)
        .bind(&entry.webhook)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        // A lane waiting for a retry keeps waiting: this event goes out behind its head.
        sqlx::query(
            "INSERT INTO outbox_lanes (webhook, job_id, next_attempt_at) VALUES ($1, $2, $3)
             ON CONFLICT (webhook, job_id) DO NOTHING",
        )
        .bind(&entry.webhook)
        .bind(job.0)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(ids)
}

/// `patch` as a JSON merge patch (RFC 7396) leaves it on an empty object: members whose
/// value is null dropped, in nested objects too but not inside arrays. SQLite's
/// `json_patch` reads the details this way; handing both dialects the result makes
/// PostgreSQL's plain `||` store the same text.
fn merge_patch(patch: serde_json::Value) -> serde_json::Value {
    match patch {
        serde_json::Value::Object(members) => members
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, merge_patch(v)))
            .collect(),
        other => other,
    }
}

#[cfg(test)]
mod tests;
