//! Group commit. `synchronous = FULL` costs one fsync per commit (2-3 ms on a common
//! VM disk), which would cap iewatch at a few hundred recorded changes a second. So every
//! change, failure and recovery goes to one writer task: it takes the first request
//! waiting, everything else already queued behind it (up to [`MAX_BATCH`]), applies each
//! in its own savepoint (one bad write cannot sink the others) and commits them all with
//! one fsync. Under light load a batch is a single write, exactly as before; under heavy
//! load the fsync is shared. Callers still learn their own outcome, after the commit.

use std::time::SystemTime;

use sqlx::{Acquire as _, Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{insert_events, timestamp, JobId, StoreError};
use crate::{
    events::Event,
    model::{CopyStatus, DriveState, ETag, JobSnapshot},
};

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait for room.
const QUEUE: usize = 1024;

/// One write, owned so that it can wait in the queue: a change to the job row, and the
/// events (with their outbox rows) it brings.
#[derive(Debug)]
pub(super) struct Write {
    pub(super) job: JobId,
    pub(super) change: Change,
    pub(super) events: Vec<Event>,
    pub(super) outbox: Vec<(usize, String)>,
    pub(super) at: SystemTime,
}

/// What a write does to the job row.
#[derive(Debug)]
pub(super) enum Change {
    /// A new document: job row and drives.
    Observation {
        snapshot: JobSnapshot,
        document: String,
        etag: Option<ETag>,
        last_modified: Option<String>,
    },
    /// A failed poll.
    Failure {
        error: String,
        consecutive_failures: u32,
        failing_alerted: bool,
        not_found_alerted: bool,
    },
    /// A success without a document after failures: the streak ends.
    Recovery,
}

/// A write and where its outcome goes.
pub(super) struct Request {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<Vec<i64>, StoreError>>,
}

/// Starts the writer; it ends when every sender (every `Store` clone) is gone.
pub(super) fn spawn(pool: SqlitePool) -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(pool, rx));
    tx
}

async fn run(pool: SqlitePool, mut queue: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcomes = commit(&pool, &batch).await;
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone (shutdown); its write is committed regardless.
            let _ = request.reply.send(outcome);
        }
    }
}

/// Applies every write in its own savepoint and commits once. Returns one outcome per
/// write; if the commit itself fails, every write fails with it.
async fn commit(pool: &SqlitePool, batch: &[Request]) -> Vec<Result<Vec<i64>, StoreError>> {
    let all_failed = |e: &dyn std::fmt::Display| {
        batch
            .iter()
            .map(|_| Err(StoreError::Commit(e.to_string())))
            .collect()
    };
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return all_failed(&e),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let outcome = match tx.begin().await {
            Err(e) => Err(StoreError::from(e)),
            Ok(mut savepoint) => match apply(&mut savepoint, &request.write).await {
                Ok(ids) => savepoint
                    .commit()
                    .await
                    .map(|()| ids)
                    .map_err(StoreError::from),
                Err(e) => {
                    let _ = savepoint.rollback().await;
                    Err(e)
                }
            },
        };
        outcomes.push(outcome);
    }
    match tx.commit().await {
        Ok(()) => outcomes,
        Err(e) => all_failed(&e),
    }
}

async fn apply(tx: &mut Transaction<'_, Sqlite>, write: &Write) -> Result<Vec<i64>, StoreError> {
    let (job, now) = (write.job, timestamp(write.at));
    match &write.change {
        Change::Observation {
            snapshot,
            document,
            etag,
            last_modified,
        } => {
            sqlx::query(
                "UPDATE jobs SET job_type = ?1, state = ?2, percent_complete = ?3, cancel_requested = ?4,
                    etag = ?5, last_modified = ?6, snapshot = ?7,
                    first_seen_at = COALESCE(first_seen_at, ?8), last_polled_at = ?8,
                    last_changed_at = CASE WHEN ?9 THEN ?8 ELSE last_changed_at END,
                    last_error = NULL, last_error_at = NULL, consecutive_failures = 0,
                    failing_alerted = 0, not_found_alerted = 0,
                    terminal_since = CASE WHEN ?10 THEN COALESCE(terminal_since, ?8) ELSE NULL END
                 WHERE id = ?11",
            )
            .bind(&snapshot.job_type)
            .bind(snapshot.state.as_str())
            .bind(snapshot.percent_complete)
            .bind(snapshot.cancel_requested)
            .bind(etag.as_ref().map(ETag::as_str))
            .bind(last_modified)
            .bind(document)
            .bind(&now)
            .bind(!write.events.is_empty())
            .bind(snapshot.state.is_terminal())
            .bind(job.0)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE drives SET present = 0, updated_at = ?1 WHERE job_id = ?2 AND present = 1",
            )
            .bind(&now)
            .bind(job.0)
            .execute(&mut **tx)
            .await?;
            for (position, drive) in snapshot.drives.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO drives (job_id, drive_id, position, present, state, copy_status, percent_complete, updated_at)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)
                     ON CONFLICT (job_id, drive_id) DO UPDATE SET position = excluded.position, present = 1,
                        state = excluded.state, copy_status = excluded.copy_status,
                        percent_complete = excluded.percent_complete, updated_at = excluded.updated_at",
                )
                .bind(job.0)
                .bind(drive.drive_id.as_str())
                .bind(position as i64)
                .bind(drive.state.as_ref().map(DriveState::as_str))
                .bind(drive.copy_status.as_ref().map(CopyStatus::as_str))
                .bind(drive.percent_complete)
                .bind(&now)
                .execute(&mut **tx)
                .await?;
            }
        }
        Change::Failure {
            error,
            consecutive_failures,
            failing_alerted,
            not_found_alerted,
        } => {
            sqlx::query(
                "UPDATE jobs SET last_error = ?1, last_error_at = ?2, last_polled_at = ?2,
                    consecutive_failures = ?3, failing_alerted = ?4, not_found_alerted = ?5 WHERE id = ?6",
            )
            .bind(error)
            .bind(&now)
            .bind(i64::from(*consecutive_failures))
            .bind(failing_alerted)
            .bind(not_found_alerted)
            .bind(job.0)
            .execute(&mut **tx)
            .await?;
        }
        Change::Recovery => {
            sqlx::query(
                "UPDATE jobs SET last_error = NULL, last_error_at = NULL, consecutive_failures = 0,
                    failing_alerted = 0, not_found_alerted = 0, last_polled_at = ?1 WHERE id = ?2",
            )
            .bind(&now)
            .bind(job.0)
            .execute(&mut **tx)
            .await?;
        }
    }
    insert_events(tx, job, &write.events, &write.outbox, &now).await
}
