//! How one write becomes rows: the job row and its bookkeeping in one statement, its
//! drives, its events and their outbox. Each statement is a round trip to the database
//! (for SQLite, to sqlx's connection thread), so a write uses as few as it can: this is
//! the writer's cost per recorded change (tests/benches/poll_changed.rs).

use sqlx::{Any, Transaction};

use super::{
    insert_events,
    writer::{Change, Write},
    Dialect, JobId, StoreError,
};
use crate::{
    decide::{clocks::Clocks, Memory},
    model::{CopyStatus, DriveState, ETag, JobSnapshot},
    moment::Moment,
};

/// Applies `write` inside the writer's transaction; returns the ids of its events.
pub(super) async fn apply(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    write: &Write,
) -> Result<Vec<i64>, StoreError> {
    let (job, now) = (write.job, write.at.sql_text());
    match &write.change {
        Change::Observation {
            snapshot,
            document,
            etag,
            last_modified,
        } => {
            let job_row = JobRow {
                snapshot,
                document,
                etag: etag.as_ref(),
                last_modified: last_modified.as_deref(),
            };
            write_observation(tx, dialect, write, &job_row, &now).await?;
        }
        Change::Failure { error } => {
            sqlx::query(
                "UPDATE jobs SET last_error = $1, last_error_at = $2, last_polled_at = $2 WHERE id = $3",
            )
            .bind(error)
            .bind(&now)
            .bind(job.0)
            .execute(&mut **tx)
            .await?;
        }
        Change::ErrorLog {
            log,
            drive,
            readable,
            report,
        } => {
            let added = sqlx::query(
                "INSERT INTO error_logs (job_id, log, drive_id, read_at, readable, report)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id, log) DO NOTHING",
            )
            .bind(job.0)
            .bind(log)
            .bind(drive)
            .bind(&now)
            .bind(i64::from(*readable))
            .bind(report)
            .execute(&mut **tx)
            .await?;
            if added.rows_affected() == 0 {
                return Ok(Vec::new());
            }
        }
        Change::Bookkeeping => {
            sqlx::query(
                "UPDATE jobs SET last_error = NULL, last_error_at = NULL, last_polled_at = $1 WHERE id = $2",
            )
            .bind(&now)
            .bind(job.0)
            .execute(&mut **tx)
            .await?;
        }
    }
    let written_with_the_job = matches!(write.change, Change::Observation { .. });
    if let (Some(memory), false) = (&write.memory, written_with_the_job) {
        write_memory(tx, job, memory).await?;
    }
    insert_events(tx, dialect, job, &write.events, &write.outbox, &now).await
}

type Query<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Binds `memory` as the bookkeeping columns `$13`…`$18` of an observation's statement:
/// whether there is one, then its columns as [`write_memory`] writes them.
fn bind_memory<'q>(query: Query<'q>, memory: Option<&Memory>) -> Query<'q> {
    query
        .bind(memory.is_some())
        .bind(memory.map(|m| i64::from(m.consecutive_failures)))
        .bind(memory.map(|m| i64::from(m.failing_alerted)))
        .bind(memory.map(|m| i64::from(m.not_found_alerted)))
        .bind(memory.and_then(|m| m.terminal_since).map(Moment::sql_text))
        .bind(memory.and_then(clocks_text))
}

/// `jobs.clocks`: JSON, or NULL while the clocks hold nothing.
fn clocks_text(memory: &Memory) -> Option<String> {
    (memory.clocks != Clocks::default())
        .then(|| serde_json::to_string(&memory.clocks).unwrap_or_default())
}

/// The bookkeeping columns, exactly as `decide` left them.
async fn write_memory(
    tx: &mut Transaction<'_, Any>,
    job: JobId,
    memory: &Memory,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET consecutive_failures = $1, failing_alerted = $2, not_found_alerted = $3,
            terminal_since = $4, clocks = $6 WHERE id = $5",
    )
    .bind(i64::from(memory.consecutive_failures))
    .bind(i64::from(memory.failing_alerted))
    .bind(i64::from(memory.not_found_alerted))
    .bind(memory.terminal_since.map(Moment::sql_text))
    .bind(job.0)
    .bind(clocks_text(memory))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The job row's part of an observation.
struct JobRow<'a> {
    snapshot: &'a JobSnapshot,
    document: &'a str,
    etag: Option<&'a ETag>,
    last_modified: Option<&'a str>,
}

/// The job row with its bookkeeping ($13: whether the write has it).
const JOB_ROW: &str = "UPDATE jobs SET job_type = $1, state = $2, percent_complete = $3,
    cancel_requested = $4, etag = $5, last_modified = $6, snapshot = $7,
    first_seen_at = COALESCE(first_seen_at, $8), last_polled_at = $8,
    last_changed_at = CASE WHEN $9 THEN $8 ELSE last_changed_at END,
    last_error = NULL, last_error_at = NULL, sku = $11, notices = $12,
    consecutive_failures = CASE WHEN $13 THEN $14 ELSE consecutive_failures END,
    failing_alerted = CASE WHEN $13 THEN $15 ELSE failing_alerted END,
    not_found_alerted = CASE WHEN $13 THEN $16 ELSE not_found_alerted END,
    terminal_since = CASE WHEN $13 THEN $17 ELSE terminal_since END,
    clocks = CASE WHEN $13 THEN $18 ELSE clocks END
 WHERE id = $10";
/// Every drive of the job marked absent; the document's are marked present again next.
const DRIVES_ABSENT: &str =
    "UPDATE drives SET present = 0, updated_at = $8 WHERE job_id = $10 AND present = 1";
/// The document's drives, `$19` = `[[id, state, copy status, percent, position], ...]`.
const DRIVES_SQLITE: &str = "INSERT INTO drives (job_id, drive_id, position, present, state,
        copy_status, percent_complete, updated_at)
    SELECT $10, json_extract(value, '$[0]'), json_extract(value, '$[4]'), 1,
        json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'), $8
    FROM json_each($19) WHERE true
    ON CONFLICT (job_id, drive_id) DO UPDATE SET position = excluded.position, present = 1,
        state = excluded.state, copy_status = excluded.copy_status,
        percent_complete = excluded.percent_complete, updated_at = excluded.updated_at";
/// [`DRIVES_SQLITE`] for PostgreSQL.
const DRIVES_POSTGRES: &str = "INSERT INTO drives (job_id, drive_id, position, present, state,
        copy_status, percent_complete, updated_at)
    SELECT $10, d->>0, (d->>4)::bigint, 1, d->>1, d->>2, (d->>3)::bigint, $8
    FROM jsonb_array_elements($19::jsonb) AS d
    ON CONFLICT (job_id, drive_id) DO UPDATE SET position = excluded.position, present = 1,
        state = excluded.state, copy_status = excluded.copy_status,
        percent_complete = excluded.percent_complete, updated_at = excluded.updated_at";

/// On SQLite the three statements of an observation as one query: sqlx steps them on its
/// connection thread in one go, one round trip instead of three (`$N` names the same
/// argument in each). PostgreSQL's extended protocol takes one statement a query.
static OBSERVATION_SQLITE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| [JOB_ROW, DRIVES_ABSENT, DRIVES_SQLITE].join(";\n"));

/// A new document: the job row and its bookkeeping, its drives (listed ones upserted in
/// order, the rest marked absent).
async fn write_observation(
    tx: &mut Transaction<'_, Any>,
    dialect: Dialect,
    write: &Write,
    row: &JobRow<'_>,
    now: &str,
) -> Result<(), StoreError> {
    let args = |sql| observation_arguments(sqlx::query(sql), write, row, now);
    match dialect {
        Dialect::Sqlite => {
            args(OBSERVATION_SQLITE.as_str()).execute(&mut **tx).await?;
        }
        Dialect::Postgres => {
            for sql in [JOB_ROW, DRIVES_ABSENT, DRIVES_POSTGRES] {
                args(sql).execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
}

/// `$1`…`$19` of an observation's statements.
fn observation_arguments<'q>(
    query: Query<'q>,
    write: &'q Write,
    row: &JobRow<'q>,
    now: &'q str,
) -> Query<'q> {
    let snapshot = row.snapshot;
    let query = query
        .bind(&snapshot.job_type)
        .bind(snapshot.state.as_str())
        .bind(snapshot.percent_complete)
        .bind(i64::from(snapshot.cancel_requested))
        .bind(row.etag.map(ETag::as_str))
        .bind(row.last_modified)
        .bind(row.document)
        .bind(now)
        .bind(!write.events.is_empty())
        .bind(write.job.0)
        .bind(&snapshot.sku)
        .bind(
            (!snapshot.notices.is_empty())
                .then(|| serde_json::to_string(&snapshot.notices).unwrap_or_default()),
        );
    bind_memory(query, write.memory.as_ref()).bind(drives_json(snapshot))
}

/// The document's drives for [`DRIVES_SQLITE`]: a drive listed twice counts once, as its
/// last listing (one upsert may not touch a row twice on PostgreSQL).
pub(super) fn drives_json(snapshot: &JobSnapshot) -> String {
    type Drive<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<i64>,
        usize,
    );
    let mut drives: Vec<Drive<'_>> = Vec::with_capacity(snapshot.drives.len());
    for (position, drive) in snapshot.drives.iter().enumerate() {
        let id = drive.drive_id.as_str();
        drives.retain(|d| d.0 != id);
        drives.push((
            id,
            drive.state.as_ref().map(DriveState::as_str),
            drive.copy_status.as_ref().map(CopyStatus::as_str),
            drive.percent_complete,
            position,
        ));
    }
    serde_json::to_string(&drives).unwrap_or_default()
}
