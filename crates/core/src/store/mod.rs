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
mod error_logs;
mod guard;
mod incidents;
pub mod lease;
mod poll_times;
mod reads;
mod resume;
mod retention;
mod rows;
mod timeline;
pub mod writer;
mod writing;

use std::{path::Path, time::Duration};

use sqlx::{migrate::Migrator, AnyPool};

pub use crate::config::{is_postgres_url, Database, Postgres};
pub use crate::events::EventRecord;
pub use attention::Attention;
pub(crate) use database::postgres_url;
pub use database::Dialect;
pub use deliveries::{Attempt, DeliveryRow, OutboxItem};
pub use error_logs::StoredErrorLog;
pub use guard::beside;
pub use poll_times::PollNotes;
pub use reads::{Details, DriveStatus, JobStatus, NearDeadline};
pub use retention::Pruned;
pub use timeline::TimelinePage;
pub use writing::Writer;

/// How old the last commit may be for `/healthz` to trust it without a new proof.
pub const HEALTH_PROOF_AGE: Duration = Duration::from_secs(30);

use crate::{
    decide::Memory,
    events::{Event, OutboxEntry},
    model::{DriveId, ETag, JobSnapshot},
    moment::Moment,
};

/// The SQLite schema, embedded in the binary; every way of opening the database runs it.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");
/// The same tables on PostgreSQL, plus the leader lease.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

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
    pub at: Moment,
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
    pub at: Moment,
}

/// The database, for reading and for an operator's manual changes (`ack`, `mute`,
/// `redeliver`, `prune`); cheap to clone. It starts no task and takes no lock: the
/// daemon's writes go through a [`Writer`], which only `iewatch run` opens.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    database: Database,
}

impl Store {
    /// Creates and migrates `database` as [`Writer::open`] would, and closes it:
    /// `iewatch check` proves the daemon could open it, without starting a writer.
    ///
    /// # Errors
    /// As [`Writer::open`].
    pub async fn prepare(database: &Database) -> Result<(), StoreError> {
        if let Some(path) = database.file() {
            guard::create_private_file(path)?;
        }
        Self::connect(database, true).await?.close().await;
        Ok(())
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
        Self::connect(database, false).await
    }

    /// Connects to `database`, migrating it first if `migrate`.
    pub(super) async fn connect(database: &Database, migrate: bool) -> Result<Store, StoreError> {
        let pool = database::connect(database, migrate).await?;
        if migrate {
            match database.dialect() {
                Dialect::Sqlite => MIGRATOR.run(&pool).await?,
                Dialect::Postgres => POSTGRES_MIGRATOR.run(&pool).await?,
            }
            if let Some(path) = database.file() {
                guard::make_private(path);
            }
        }
        Ok(Store {
            pool,
            database: database.clone(),
        })
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

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
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
    // Every delivery in one statement, and each webhook's lane in one more, whatever
    // their number: `[[event id, webhook], ...]` read back by the database.
    let deliveries: Vec<(i64, &str)> = outbox
        .iter()
        .filter_map(|entry| Some((*ids.get(entry.event)?, entry.webhook.as_str())))
        .collect();
    if deliveries.is_empty() {
        return Ok(ids);
    }
    let deliveries = serde_json::to_string(&deliveries).unwrap_or_default();
    let statements: &[&str] = match dialect {
        // One query of two statements: one round trip to sqlx's SQLite thread.
        Dialect::Sqlite => &[OUTBOX_SQLITE],
        Dialect::Postgres => &[DELIVERIES_POSTGRES, LANES_POSTGRES],
    };
    for sql in statements {
        sqlx::query(sql)
            .bind(job.0)
            .bind(now)
            .bind(&deliveries)
            .execute(&mut **tx)
            .await?;
    }
    Ok(ids)
}

/// A write's deliveries, `$3` = `[[event id, webhook], ...]`, then each webhook's lane (a
/// lane waiting for a retry keeps waiting: these events go out behind its head).
const OUTBOX_SQLITE: &str =
    "INSERT INTO deliveries (event_id, job_id, webhook, created_at, next_attempt_at)
     SELECT json_extract(value, '$[0]'), $1, json_extract(value, '$[1]'), $2, $2
     FROM json_each($3) WHERE true ON CONFLICT DO NOTHING;
     INSERT INTO outbox_lanes (webhook, job_id, next_attempt_at)
     SELECT DISTINCT json_extract(value, '$[1]'), $1, $2 FROM json_each($3) WHERE true
     ON CONFLICT (webhook, job_id) DO NOTHING";
/// The deliveries of [`OUTBOX_SQLITE`] on PostgreSQL.
const DELIVERIES_POSTGRES: &str =
    "INSERT INTO deliveries (event_id, job_id, webhook, created_at, next_attempt_at)
     SELECT (d->>0)::bigint, $1, d->>1, $2, $2 FROM jsonb_array_elements($3::jsonb) AS d
     ON CONFLICT DO NOTHING";
/// The lanes of [`OUTBOX_SQLITE`] on PostgreSQL.
const LANES_POSTGRES: &str = "INSERT INTO outbox_lanes (webhook, job_id, next_attempt_at)
     SELECT DISTINCT d->>1, $1, $2 FROM jsonb_array_elements($3::jsonb) AS d
     ON CONFLICT (webhook, job_id) DO NOTHING";

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
