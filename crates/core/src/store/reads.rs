//! What `status` and `history` read: one row per job with its drives, and one job's
//! events in order.

use crate::moment::Moment;

use serde::Serialize;
use sqlx::AnyConnection;

use super::{Store, StoreError};
use crate::{
    decide::clocks::Clocks,
    events::{EventRecord, EventType},
    model::{DriveId, Notices, Severity},
};

/// One drive of a job as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DriveStatus {
    /// Serial number.
    pub drive_id: String,
    /// Drive state.
    pub state: Option<String>,
    /// Copy status.
    pub copy_status: Option<String>,
    /// Percent copied.
    pub percent_complete: Option<i64>,
    /// When its copy should finish at the observed rate (RFC 3339 in JSON).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::moment::rfc3339_opt"
    )]
    pub eta: Option<Moment>,
}

/// A service deadline near enough to have been warned of.
#[derive(Clone, Debug, Serialize)]
pub struct NearDeadline {
    /// `deletion`, `auto_completion` or `cancellation`.
    pub kind: String,
    /// When it runs out (RFC 3339 in JSON).
    #[serde(with = "crate::moment::rfc3339")]
    pub at: Moment,
}

/// One job as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    /// Account name (config).
    pub account: String,
    /// Job name.
    pub name: String,
    /// Import or Export.
    pub job_type: Option<String>,
    /// Job state (None: never polled successfully).
    pub state: Option<String>,
    /// Percent complete.
    pub percent_complete: Option<i64>,
    /// Drives currently listed.
    pub drives: Vec<DriveStatus>,
    /// Last change (SQLite's text in JSON, as the column).
    #[serde(with = "crate::moment::sql_text_opt")]
    pub last_changed_at: Option<Moment>,
    /// Last poll.
    #[serde(with = "crate::moment::sql_text_opt")]
    pub last_polled_at: Option<Moment>,
    /// Current error, if the last poll failed.
    pub last_error: Option<String>,
    /// Failed polls in a row.
    pub consecutive_failures: i64,
    /// Data Box: the order's SKU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Packages, an action the service waits for, delays.
    #[serde(skip_serializing_if = "Notices::is_empty")]
    pub notices: Notices,
    /// When the copy should finish at the observed rate (RFC 3339 in JSON).
    #[serde(with = "crate::moment::rfc3339_opt")]
    pub eta: Option<Moment>,
    /// The job has stayed in its state longer than the state allows.
    pub stalled: bool,
    /// A service deadline warned of (`job.deadline`) that has not passed yet.
    pub deadline: Option<NearDeadline>,
    /// The error condition being reminded of (`polls_failing`, `action_required`,
    /// `stalled`, `completed_with_errors`), if any.
    pub condition: Option<String>,
    /// The last `iewatch ack` (SQLite's text in JSON).
    #[serde(with = "crate::moment::sql_text_opt")]
    pub acked_at: Option<Moment>,
    /// Alerts silenced until then (`iewatch mute`).
    #[serde(with = "crate::moment::sql_text_opt")]
    pub muted_until: Option<Moment>,
    /// Stored values that cannot be read back (a hand-edited row), shown as their safe
    /// default until the daemon's next write of the job repairs them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
    /// What the error logs of drives that ended with errors said (`drive.errors`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_logs: Vec<super::StoredErrorLog>,
}

/// Whether a read of events brings their `details` (the job as it was, a notice's
/// fields): `history --json` and the API need them; `history`'s lines, the page's
/// timeline and its charts do not, and without them PostgreSQL reads a job's events from
/// its index alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Details {
    /// Read and parse each event's details.
    Read,
    /// Leave them: `details` is `None` in every record.
    Skip,
}

impl Details {
    /// The events' columns to select, `details` last (NULL when skipped).
    pub(super) fn columns(self) -> &'static str {
        match self {
            Details::Read => {
                "id, type, drive_id, from_value, to_value, observed_at, severity, details"
            }
            Details::Skip => {
                "id, type, drive_id, from_value, to_value, observed_at, severity, NULL AS details"
            }
        }
    }
}

/// An event's columns as stored: id, type, drive, from, to, observed at, severity,
/// details.
type TextRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
);

/// An event's columns as read, borrowed from a row or a parsed JSON array.
struct EventColumns<'r> {
    id: i64,
    event_type: &'r str,
    drive_id: Option<&'r str>,
    from: Option<&'r str>,
    to: Option<&'r str>,
    observed_at: &'r str,
    severity: &'r str,
    details: Option<&'r str>,
}

impl<'r> EventColumns<'r> {
    /// The columns of a row of [`Details::columns`], in place.
    fn of(row: &'r sqlx::any::AnyRow) -> Result<EventColumns<'r>, StoreError> {
        use sqlx::Row as _;
        Ok(EventColumns {
            id: row.try_get(0)?,
            event_type: row.try_get(1)?,
            drive_id: row.try_get(2)?,
            from: row.try_get(3)?,
            to: row.try_get(4)?,
            observed_at: row.try_get(5)?,
            severity: row.try_get(6)?,
            details: row.try_get(7)?,
        })
    }
}

/// The record of an event of `job` (account, name) from its columns.
fn event_record(
    (account, job): (&str, &str),
    columns: EventColumns<'_>,
) -> Result<EventRecord, StoreError> {
    let corrupt =
        |what: &str, value: &str| StoreError::Corrupt(format!("history: unknown {what} {value:?}"));
    Ok(EventRecord {
        id: columns.id,
        account: account.to_owned(),
        job: job.to_owned(),
        event_type: EventType::parse(columns.event_type)
            .ok_or_else(|| corrupt("event type", columns.event_type))?,
        drive_id: columns.drive_id.map(|d| DriveId::new(d.to_owned())),
        from: columns.from.map(str::to_owned),
        to: columns.to.map(str::to_owned),
        observed_at: Moment::parse_stored(columns.observed_at),
        severity: Severity::parse(columns.severity)
            .ok_or_else(|| corrupt("severity", columns.severity))?,
        details: parse_details(columns.details)?,
    })
}

/// A value bound after the job's id in [`Store::events_in`].
pub(super) enum EventParam {
    /// Text (a timestamp).
    Text(String),
    /// A number (an event id, a limit).
    Int(i64),
}

/// Parses the `details` column.
pub(super) fn parse_details(
    details: Option<&str>,
) -> Result<Option<serde_json::Value>, StoreError> {
    details
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("events.details: {e}")))
}

impl Store {
    /// Every job with its current drives, by account and name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn status(&self) -> Result<Vec<JobStatus>, StoreError> {
        self.statuses(None).await
    }

    /// One job with its current drives (its page reads it alone, not every job).
    ///
    /// # Errors
    /// Database errors.
    pub async fn status_of(
        &self,
        account: &str,
        name: &str,
    ) -> Result<Option<JobStatus>, StoreError> {
        Ok(self.statuses(Some((account, name))).await?.pop())
    }

    /// The jobs `only` names (account, name), or every job.
    // Long: two queries (jobs, then their drives, each one JSON array for speed at
    // 10,000 jobs) and every column decoded at this boundary with its own error.
    async fn statuses(&self, only: Option<(&str, &str)>) -> Result<Vec<JobStatus>, StoreError> {
        let (account, name) = only.unzip();
        let now = crate::wall_clock::now();
        // Each table comes back as one JSON array of arrays built by SQLite and parsed
        // once: decoding 30,000 rows one by one through the driver, or building keyed
        // objects in SQL, costs several times more (tests/benches/history_query.rs).
        type JobRow = (
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        type DriveRow = (
            i64,
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let jobs: String = sqlx::query_scalar(self.dialect().pick(
            "SELECT json_group_array(json_array(id, account, name, job_type, state, percent_complete,
                    last_changed_at, last_polled_at, last_error, consecutive_failures, sku, notices, clocks, acked_at, muted_until))
             FROM jobs WHERE $1 IS NULL OR (account = $1 AND name = $2)",
            "SELECT COALESCE(json_agg(json_build_array(id, account, name, job_type, state, percent_complete,
                    last_changed_at, last_polled_at, last_error, consecutive_failures, sku, notices, clocks, acked_at, muted_until)), '[]')::text
             FROM jobs WHERE $1::text IS NULL OR (account = $1 AND name = $2)",
        ))
        .bind(account)
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        let drives: String = sqlx::query_scalar(self.dialect().pick(
            "SELECT json_group_array(json_array(job_id, position, drive_id, state, copy_status, percent_complete))
             FROM drives WHERE present = 1 AND ($1 IS NULL OR job_id IN
                 (SELECT id FROM jobs WHERE account = $1 AND name = $2))",
            "SELECT COALESCE(json_agg(json_build_array(job_id, position, drive_id, state, copy_status, percent_complete)), '[]')::text
             FROM drives WHERE present = 1 AND ($1::text IS NULL OR job_id IN
                 (SELECT id FROM jobs WHERE account = $1 AND name = $2))",
        ))
        .bind(account)
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("status: {e}"));
        let jobs: Vec<JobRow> = serde_json::from_str(&jobs).map_err(corrupt)?;
        let mut drives: Vec<DriveRow> = serde_json::from_str(&drives).map_err(corrupt)?;
        drives.sort_unstable_by_key(|d| (d.0, d.1));
        let mut by_job: std::collections::HashMap<i64, Vec<DriveStatus>> =
            std::collections::HashMap::new();
        for (job_id, _, drive_id, state, copy_status, percent_complete) in drives {
            by_job.entry(job_id).or_default().push(DriveStatus {
                drive_id,
                state,
                copy_status,
                percent_complete,
                eta: None,
            });
        }
        let mut logs = self.error_logs_by_job(only).await?;
        let mut status: Vec<JobStatus> = jobs
            .into_iter()
            .map(|j| {
                let mut damaged = Vec::new();
                let notices: Notices =
                    super::resume::lenient("jobs.notices", j.11.as_deref(), &mut damaged);
                let clocks: Clocks =
                    super::resume::lenient("jobs.clocks", j.12.as_deref(), &mut damaged);
                let mut drives = by_job.remove(&j.0).unwrap_or_default();
                for drive in &mut drives {
                    drive.eta = clocks.drives.get(&drive.drive_id).and_then(|d| d.eta);
                }
                let deadline = clocks.near_deadline(now).map(|(kind, at)| NearDeadline {
                    kind: kind.to_owned(),
                    at,
                });
                Ok(JobStatus {
                    error_logs: logs.remove(&j.0).unwrap_or_default(),
                    damaged,
                    drives,
                    deadline,
                    eta: clocks.eta,
                    stalled: clocks.stalled,
                    condition: clocks.reminder.map(|r| r.condition),
                    acked_at: j.13.as_deref().and_then(Moment::parse),
                    muted_until: j.14.as_deref().and_then(Moment::parse),
                    account: j.1,
                    name: j.2,
                    job_type: j.3,
                    state: j.4,
                    percent_complete: j.5,
                    last_changed_at: j.6.as_deref().and_then(Moment::parse),
                    last_polled_at: j.7.as_deref().and_then(Moment::parse),
                    last_error: j.8,
                    consecutive_failures: j.9,
                    sku: j.10,
                    notices,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        status.sort_unstable_by(|a, b| (&a.account, &a.name).cmp(&(&b.account, &b.name)));
        Ok(status)
    }

    /// The events of job `name` (any account, or `account/name`), oldest first, observed
    /// at or after `since`.
    ///
    /// # Errors
    /// Database errors, or a stored details value that is not JSON.
    pub async fn history(
        &self,
        job: &str,
        since: Option<Moment>,
        details: Details,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // One connection for both reads: on PostgreSQL each connection taken from the
        // pool is tested with a round trip first.
        let mut conn = self.pool.acquire().await?;
        let jobs = self.jobs_named_on(&mut conn, job).await?;
        self.events_of(&mut conn, jobs, since, details).await
    }

    /// The events of the job `name` of `account` (a name may hold `/`), oldest first,
    /// observed at or after `since`.
    ///
    /// # Errors
    /// Database errors, or a stored details value that is not JSON.
    pub async fn history_of(
        &self,
        account: &str,
        name: &str,
        since: Option<Moment>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let jobs = self.job_named(&mut conn, account, name).await?;
        self.events_of(&mut conn, jobs, since, Details::Read).await
    }

    /// (id, account, name) of the job `name` of `account`, if there is one.
    pub(super) async fn job_named(
        &self,
        conn: &mut AnyConnection,
        account: &str,
        name: &str,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, account, name FROM jobs WHERE account = $1 AND name = $2")
                .bind(account)
                .bind(name)
                .fetch_all(conn)
                .await?,
        )
    }

    /// The events of `jobs` (id, account, name), in id order.
    async fn events_of(
        &self,
        conn: &mut AnyConnection,
        jobs: Vec<(i64, String, String)>,
        since: Option<Moment>,
        details: Details,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let since = since.map(Moment::sql_text).unwrap_or_default();
        let rows = format!(
            "(SELECT {} FROM events WHERE job_id = $1 AND observed_at >= $2 ORDER BY id)",
            details.columns()
        );
        let (sqlite, postgres) = (rows.clone(), format!("{rows} e"));
        self.events_in(conn, jobs, [&sqlite, &postgres], &[EventParam::Text(since)])
            .await
    }

    /// The events of `jobs` that `rows` selects (a subquery per dialect, SQLite's in id
    /// order, with `$1` the job's id and `params` from `$2` on), in id order.
    pub(super) async fn events_in(
        &self,
        conn: &mut AnyConnection,
        jobs: Vec<(i64, String, String)>,
        rows: [&str; 2],
        params: &[EventParam],
    ) -> Result<Vec<EventRecord>, StoreError> {
        // The job first, so that each job's events come straight off events_by_job in
        // order. SQLite hands them over as one JSON array of arrays (see `status`);
        // PostgreSQL as rows, which its driver decodes faster than its server builds
        // JSON. `details` passes through as text and is parsed here.
        let mut entries = Vec::new();
        for (job_id, account, job) in jobs {
            let job = (account.as_str(), job.as_str());
            match self.dialect() {
                super::Dialect::Sqlite => {
                    let rows = self
                        .event_rows_as_json(&mut *conn, rows[0], job_id, params)
                        .await?;
                    for (id, event_type, drive_id, from, to, observed_at, severity, details) in
                        &rows
                    {
                        entries.push(event_record(
                            job,
                            EventColumns {
                                id: *id,
                                event_type,
                                drive_id: drive_id.as_deref(),
                                from: from.as_deref(),
                                to: to.as_deref(),
                                observed_at,
                                severity,
                                details: details.as_deref(),
                            },
                        )?);
                    }
                }
                super::Dialect::Postgres => {
                    let sql = format!("SELECT {} FROM {}", Details::Read.columns(), rows[1]);
                    let mut query = sqlx::query(&sql).bind(job_id);
                    for param in params {
                        query = match param {
                            EventParam::Text(text) => query.bind(text.clone()),
                            EventParam::Int(n) => query.bind(*n),
                        };
                    }
                    // Read in place: only the values a record keeps are copied.
                    for row in query.fetch_all(&mut *conn).await? {
                        entries.push(event_record(job, EventColumns::of(&row)?)?);
                    }
                }
            }
        }
        entries.sort_unstable_by_key(|e| e.id);
        Ok(entries)
    }

    /// The events `rows` selects for job `job_id` (SQLite), as one JSON array of arrays.
    async fn event_rows_as_json(
        &self,
        conn: &mut AnyConnection,
        rows: &str,
        job_id: i64,
        params: &[EventParam],
    ) -> Result<Vec<TextRow>, StoreError> {
        let sql = format!(
            "SELECT json_group_array(json_array({})) FROM {rows}",
            Details::Read.columns()
        );
        let mut query = sqlx::query_scalar(&sql).bind(job_id);
        for param in params {
            query = match param {
                EventParam::Text(text) => query.bind(text.clone()),
                EventParam::Int(n) => query.bind(*n),
            };
        }
        let json: String = query.fetch_one(conn).await?;
        serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("history: {e}")))
    }

    /// True when a job of that name (or `account/name`) is known.
    ///
    /// # Errors
    /// Database errors.
    pub async fn has_job(&self, job: &str) -> Result<bool, StoreError> {
        Ok(!self.jobs_named(job).await?.is_empty())
    }

    /// (id, account, name) of the jobs a command names: `name` (in any account) or
    /// `account/name`, oldest first. A name may hold `/` itself: `a/b` is also the job
    /// named `a/b` in any account.
    ///
    /// # Errors
    /// Database errors.
    pub(super) async fn jobs_named(
        &self,
        job: &str,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.jobs_named_on(&mut conn, job).await
    }

    /// [`Store::jobs_named`] on a connection already taken.
    async fn jobs_named_on(
        &self,
        conn: &mut AnyConnection,
        job: &str,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let (account, name) = match job.split_once('/') {
            Some((account, name)) => (Some(account), name),
            None => (None, job),
        };
        Ok(sqlx::query_as(self.dialect().pick(
            "SELECT id, account, name FROM jobs
             WHERE (name = $1 AND ($2 IS NULL OR account = $2)) OR name = $3 ORDER BY id",
            "SELECT id, account, name FROM jobs
             WHERE (name = $1 AND ($2::text IS NULL OR account = $2)) OR name = $3 ORDER BY id",
        ))
        .bind(name)
        .bind(account)
        .bind(job)
        .fetch_all(conn)
        .await?)
    }
}
