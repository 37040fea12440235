//! Group commit. `synchronous = FULL` costs one fsync per commit (2-3 ms on a common
//! VM disk), which would cap iewatch at a few hundred recorded changes a second. So every
//! change, failure and recovery goes to one writer task: it takes the first request
//! waiting, everything else already queued behind it (up to [`MAX_BATCH`]), applies each
//! in its own savepoint (one bad write cannot sink the others) and commits them all with
//! one fsync. Under light load a batch is a single write, exactly as before; under heavy
//! load the fsync is shared. Callers still learn their own outcome, after the commit.
//! The same task writes the batched times of unchanged polls when the daemon's heartbeat
//! asks, and proves on request that the database takes writes. It has no timer: with
//! nothing to write it sleeps.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc, Mutex,
};

use sqlx::{Acquire as _, Any, AnyPool, Transaction};
use tokio::sync::{mpsc, oneshot, watch};

use super::{lease, rows, Dialect, JobId, StoreError};
use crate::{
    decide::Memory,
    events::{Event, OutboxEntry},
    model::{ETag, JobSnapshot},
    moment::Moment,
};

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait for room.
const QUEUE: usize = 1024;

/// One write, owned so that it can wait in the queue: a change to the job row, and the
/// events (with their outbox rows) it brings.
#[derive(Debug)]
pub(super) struct Write {
    /// The generation of job tasks that wrote it (see [`super::Store::fence_for`]).
    pub(super) generation: u64,
    pub(super) job: JobId,
    pub(super) change: Change,
    /// The job's bookkeeping, written as handed (the rules live in `decide`); none for
    /// a write that is not a poll's (an error log read).
    pub(super) memory: Option<Memory>,
    pub(super) events: Vec<Event>,
    pub(super) outbox: Vec<OutboxEntry>,
    pub(super) at: Moment,
}

/// What a write does to the job row.
#[derive(Debug)]
pub(super) enum Change {
    /// A new document: job row and drives.
    Observation {
        snapshot: Box<JobSnapshot>,
        document: String,
        etag: Option<ETag>,
        last_modified: Option<String>,
    },
    /// A failed poll.
    Failure { error: String },
    /// Only the bookkeeping (a success without a document after failures).
    Bookkeeping,
    /// A drive's error log, read or found unreadable: its row, and its events only if
    /// the log had no row yet (each log is reported once).
    ErrorLog {
        log: String,
        drive: String,
        readable: bool,
        report: String,
    },
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Work {
    /// A poll's write.
    Write(Box<Write>),
    /// Create the row of a job seen for the first time (if it is not there yet). It goes
    /// through the writer like every write, so that it cannot be starved of the lock by
    /// group commits in a busy daemon.
    Register { account: String, name: String },
    /// Write the health row: a commit that proves the database takes writes.
    Prove,
    /// Write the times of unchanged polls.
    PollTimes(Vec<(JobId, Moment)>),
}

/// What the writer did.
#[derive(Debug)]
pub(super) enum Done {
    /// The ids of the events written, in order.
    Events(Vec<i64>),
    /// The job's row id.
    Registered(JobId),
    /// Written (the health row, poll times).
    Written,
}

/// A piece of work and where its outcome goes.
pub(super) struct Request {
    pub(super) work: Work,
    pub(super) reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// One statement (one trip to the database) for every pending time: `[[id, time], ...]`
/// as JSON. A later time already stored stays: a change committed after the unchanged
/// poll was noted wrote its own. Only a time in our own form and not past `now` counts
/// as later, so a hand-edited value (another form, the far future) cannot hold the
/// column still.
async fn write_poll_times(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    polls: &[(JobId, Moment)],
) -> Result<(), StoreError> {
    let rows: Vec<(i64, String)> = polls
        .iter()
        .map(|(job, at)| (job.0, at.sql_text()))
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| StoreError::Commit(e.to_string()))?;
    let now = crate::wall_clock::now().sql_text();
    sqlx::query(dialect.pick(
        "UPDATE jobs SET last_polled_at = json_extract(polled.value, '$[1]')
         FROM json_each($1) AS polled
         WHERE jobs.id = json_extract(polled.value, '$[0]')
           AND NOT COALESCE(length(jobs.last_polled_at) = length($2)
                            AND jobs.last_polled_at > json_extract(polled.value, '$[1]')
                            AND jobs.last_polled_at <= $2, 0)",
        "UPDATE jobs SET last_polled_at = polled.value ->> 1
         FROM json_array_elements($1::json) AS polled (value)
         WHERE jobs.id = (polled.value ->> 0)::bigint
           AND NOT COALESCE(length(jobs.last_polled_at) = length($2)
                            AND jobs.last_polled_at COLLATE \"C\" > polled.value ->> 1
                            AND jobs.last_polled_at COLLATE \"C\" <= $2, false)",
    ))
    .bind(rows)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The outcome of the writer's last commit, for `/healthz`: the database proves it takes
/// writes by taking them; a proof of its own only when the last commit is old (see
/// [`super::Store::takes_writes`]).
#[derive(Clone, Debug)]
pub(super) struct LastCommit {
    last: Arc<Mutex<(Moment, Option<String>)>>,
    /// Transactions ended so far (benchmarks read changes per commit from it).
    count: Arc<AtomicU64>,
}

impl Default for LastCommit {
    fn default() -> Self {
        Self {
            last: Arc::new(Mutex::new((crate::wall_clock::now(), None))),
            count: Arc::default(),
        }
    }
}

impl LastCommit {
    fn record(&self, outcome: Result<(), String>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (crate::wall_clock::now(), outcome.err());
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// When the last commit ended, and its error if it failed.
    pub(super) fn get(&self) -> (Moment, Option<String>) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Transactions the writer ended since it started.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The running writer as the store sees it.
pub(super) struct WriterHandle {
    /// Where writes go.
    pub(super) queue: mpsc::Sender<Request>,
    /// Set, with the reason, once the writer task has stopped.
    pub(super) stopped: watch::Receiver<Option<String>>,
    /// Milliseconds since the epoch when the commit under way started; 0 when idle.
    pub(super) busy_since_ms: Arc<AtomicU64>,
    /// The last commit's outcome.
    pub(super) last_commit: LastCommit,
}

/// Where the writer writes and what it checks before: the pool, its dialect, the
/// generation fence and the lease epoch (0: none).
struct Target {
    pool: AnyPool,
    dialect: Dialect,
    fence: Arc<AtomicU64>,
    epoch: Arc<AtomicI64>,
}

/// Starts the writer; it ends when every sender (every `Store` clone) is gone. Writes of
/// generations older than `fence` are refused; with a lease epoch set, a batch commits
/// only while the lease is this daemon's (else the writer stops, and the daemon with
/// it). With `file` (the daemon's SQLite store), no commit goes into a database file
/// deleted or replaced since it was opened: the writer stops instead.
pub(super) fn spawn(
    pool: AnyPool,
    dialect: Dialect,
    (fence, epoch): (Arc<AtomicU64>, Arc<AtomicI64>),
    file: Option<(std::path::PathBuf, super::guard::FileIdentity)>,
) -> WriterHandle {
    let (queue, rx) = mpsc::channel(QUEUE);
    let (stopped_tx, stopped) = watch::channel(None);
    let busy_since_ms = Arc::new(AtomicU64::new(0));
    let last_commit = LastCommit::default();
    let target = Target {
        pool,
        dialect,
        fence,
        epoch,
    };
    let task = tokio::spawn(run(
        target,
        rx,
        file,
        (busy_since_ms.clone(), last_commit.clone()),
    ));
    tokio::spawn(async move {
        let reason = match task.await {
            Ok(Some(reason)) => reason,
            Ok(None) => "the database writer stopped".to_owned(),
            Err(e) => format!("the database writer failed: {e}"),
        };
        let _ = stopped_tx.send(Some(reason));
    });
    WriterHandle {
        queue,
        stopped,
        busy_since_ms,
        last_commit,
    }
}

/// Milliseconds since the epoch (the writer's busy mark).
pub(super) fn now_ms() -> u64 {
    u64::try_from(crate::wall_clock::now().unix_millis()).unwrap_or(0)
}

/// Returns why it stopped, if not because every sender is gone.
async fn run(
    target: Target,
    mut queue: mpsc::Receiver<Request>,
    file: Option<(std::path::PathBuf, super::guard::FileIdentity)>,
    (busy_since_ms, last_commit): (Arc<AtomicU64>, LastCommit),
) -> Option<String> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Some(Err(e)) = file
            .as_ref()
            .map(|(path, id)| super::guard::check_identity(path, *id))
        {
            let reason = e.to_string();
            last_commit.record(Err(reason.clone()));
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(StoreError::Commit(reason.clone())));
            }
            return Some(reason);
        }
        busy_since_ms.store(now_ms().max(1), Ordering::Relaxed);
        let outcomes = commit(&target, &batch).await;
        busy_since_ms.store(0, Ordering::Relaxed);
        let lease_lost = outcomes
            .iter()
            .any(|o| matches!(o, Err(StoreError::LeaseLost)));
        // A refused (fenced) write says nothing about the database.
        let failure = outcomes.iter().find_map(|o| match o {
            Err(StoreError::Fenced) | Ok(_) => None,
            Err(e) => Some(e.to_string()),
        });
        last_commit.record(failure.map_or(Ok(()), Err));
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone (shutdown); its write is committed regardless.
            let _ = request.reply.send(outcome);
        }
        if lease_lost {
            return Some(StoreError::LeaseLost.to_string());
        }
    }
    None
}

/// Applies a batch and commits it once. Returns one outcome per write; if the commit
/// itself fails, every write fails with it. Writes of a generation older than the fence
/// are refused, not applied; so is the whole batch when the lease is lost.
///
/// One bad write must not sink the others, which a savepoint per write would ensure at
/// two statements a write. So the batch goes in plainly first; only when a write fails
/// is the transaction rolled back and the batch applied again, each write in its own
/// savepoint, so that the failing one rolls back alone.
async fn commit(target: &Target, batch: &[Request]) -> Vec<Result<Done, StoreError>> {
    match commit_as(target, batch, Isolation::Plain).await {
        Committed::Outcomes(outcomes) => outcomes,
        Committed::WriteFailed => match commit_as(target, batch, Isolation::Savepoints).await {
            Committed::Outcomes(outcomes) => outcomes,
            // Not returned with savepoints: each write's failure is its own outcome.
            Committed::WriteFailed => batch
                .iter()
                .map(|_| Err(StoreError::Commit("a write failed".into())))
                .collect(),
        },
    }
}

/// How the writes of a batch are applied (see [`commit`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// One after the other in the transaction: a failure ends the attempt.
    Plain,
    /// Each in its own savepoint.
    Savepoints,
}

/// What one attempt at a batch came to.
enum Committed {
    Outcomes(Vec<Result<Done, StoreError>>),
    /// A write failed without savepoints: nothing was committed.
    WriteFailed,
}

async fn commit_as(target: &Target, batch: &[Request], isolation: Isolation) -> Committed {
    let all_failed = |e: &dyn std::fmt::Display| {
        Committed::Outcomes(
            batch
                .iter()
                .map(|_| Err(StoreError::Commit(e.to_string())))
                .collect(),
        )
    };
    let mut tx = match lease::begin(&target.pool, target.epoch.load(Ordering::SeqCst)).await {
        Ok(tx) => tx,
        Err(StoreError::LeaseLost) => {
            return Committed::Outcomes(batch.iter().map(|_| Err(StoreError::LeaseLost)).collect())
        }
        Err(e) => return all_failed(&e),
    };
    let (fence, dialect) = (target.fence.load(Ordering::SeqCst), target.dialect);
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        if matches!(&request.work, Work::Write(write) if write.generation < fence) {
            outcomes.push(Err(StoreError::Fenced));
            continue;
        }
        let outcome = match isolation {
            Isolation::Plain => match work(&mut tx, dialect, &request.work).await {
                Ok(done) => Ok(done),
                // Rolled back when `tx` drops. A lock another holds fails every write
                // alike: a second pass would only wait out the busy timeout again.
                Err(e) if waits_on_a_lock(&e) => return all_failed(&e),
                Err(_) => return Committed::WriteFailed,
            },
            Isolation::Savepoints => match tx.begin().await {
                Err(e) => Err(StoreError::from(e)),
                Ok(mut savepoint) => match work(&mut savepoint, dialect, &request.work).await {
                    Ok(done) => savepoint
                        .commit()
                        .await
                        .map(|()| done)
                        .map_err(StoreError::from),
                    Err(e) => {
                        let _ = savepoint.rollback().await;
                        Err(e)
                    }
                },
            },
        };
        outcomes.push(outcome);
    }
    match tx.commit().await {
        Ok(()) => Committed::Outcomes(outcomes),
        Err(e) => all_failed(&e),
    }
}

/// SQLite's busy and locked (any extended code), PostgreSQL's `lock_not_available`:
/// the transaction waited for a lock another connection holds, not for this write.
fn waits_on_a_lock(error: &StoreError) -> bool {
    let StoreError::Sqlx(sqlx::Error::Database(e)) = error else {
        return false;
    };
    match e.code().as_deref() {
        Some("55P03") => true,
        Some(code) => code
            .parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
        None => false,
    }
}

async fn work(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    work: &Work,
) -> Result<Done, StoreError> {
    match work {
        Work::Write(write) => rows::apply(tx, dialect, write).await.map(Done::Events),
        Work::Register { account, name } => {
            sqlx::query(
                "INSERT INTO jobs (account, name) VALUES ($1, $2) ON CONFLICT (account, name) DO NOTHING",
            )
            .bind(account)
            .bind(name)
            .execute(&mut **tx)
            .await?;
            let id: i64 =
                sqlx::query_scalar("SELECT id FROM jobs WHERE account = $1 AND name = $2")
                    .bind(account)
                    .bind(name)
                    .fetch_one(&mut **tx)
                    .await?;
            Ok(Done::Registered(JobId(id)))
        }
        Work::PollTimes(polls) => {
            write_poll_times(tx, dialect, polls).await?;
            Ok(Done::Written)
        }
        Work::Prove => {
            sqlx::query(
                "INSERT INTO health (id, checked_at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = $1",
            )
            .bind(crate::wall_clock::now().sql_text())
            .execute(&mut **tx)
            .await?;
            Ok(Done::Written)
        }
    }
}
