//! What `status` and `history` read: one row per job with its drives, and one job's
//! events in order.

use std::time::SystemTime;

use serde::Serialize;
use sqlx::Row;

use super::{timestamp, Store, StoreError};

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
    /// Last change (SQLite timestamp text).
    pub last_changed_at: Option<String>,
    /// Last poll.
    pub last_polled_at: Option<String>,
    /// Current error, if the last poll failed.
    pub last_error: Option<String>,
    /// Failed polls in a row.
    pub consecutive_failures: i64,
}

/// One recorded event with its job: a line of `history`, the content of a webhook.
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    /// Event id (ascending = order observed).
    pub id: i64,
    /// Account.
    pub account: String,
    /// Job name.
    pub job: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Drive, for drive events.
    pub drive_id: Option<String>,
    /// Old value.
    pub from: Option<String>,
    /// New value (or error).
    pub to: Option<String>,
    /// When.
    pub observed_at: String,
    /// info, warning, error.
    pub severity: String,
    /// Job context and extras.
    pub details: Option<serde_json::Value>,
}

/// Reads an event row selected with the columns `id, account, name, type, drive_id,
/// from_value, to_value, observed_at, severity, details`.
pub(super) fn event_record(r: &sqlx::sqlite::SqliteRow) -> Result<EventRecord, StoreError> {
    let details: Option<String> = r.get("details");
    Ok(EventRecord {
        id: r.get("id"),
        account: r.get("account"),
        job: r.get("name"),
        event_type: r.get("type"),
        drive_id: r.get("drive_id"),
        from: r.get("from_value"),
        to: r.get("to_value"),
        observed_at: r.get("observed_at"),
        severity: r.get("severity"),
        details: details
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("events.details: {e}")))?,
    })
}

impl Store {
    /// Every job with its current drives, by account and name.
    ///
    /// # Errors
    /// Database errors.
    pub async fn status(&self) -> Result<Vec<JobStatus>, StoreError> {
        let jobs = sqlx::query(
            "SELECT id, account, name, job_type, state, percent_complete, last_changed_at,
                    last_polled_at, last_error, consecutive_failures
             FROM jobs ORDER BY account, name",
        )
        .fetch_all(&self.pool)
        .await?;
        let drives = sqlx::query(
            "SELECT job_id, drive_id, state, copy_status, percent_complete FROM drives
             WHERE present = 1 ORDER BY job_id, position",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_job: std::collections::HashMap<i64, Vec<DriveStatus>> =
            std::collections::HashMap::new();
        for d in drives {
            by_job
                .entry(d.get("job_id"))
                .or_default()
                .push(DriveStatus {
                    drive_id: d.get("drive_id"),
                    state: d.get("state"),
                    copy_status: d.get("copy_status"),
                    percent_complete: d.get("percent_complete"),
                });
        }
        Ok(jobs
            .into_iter()
            .map(|j| JobStatus {
                account: j.get("account"),
                name: j.get("name"),
                job_type: j.get("job_type"),
                state: j.get("state"),
                percent_complete: j.get("percent_complete"),
                drives: by_job.remove(&j.get::<i64, _>("id")).unwrap_or_default(),
                last_changed_at: j.get("last_changed_at"),
                last_polled_at: j.get("last_polled_at"),
                last_error: j.get("last_error"),
                consecutive_failures: j.get("consecutive_failures"),
            })
            .collect())
    }

    /// The events of job `name` (any account, or `account/name`), oldest first, observed
    /// at or after `since`.
    ///
    /// # Errors
    /// Database errors, or a stored details value that is not JSON.
    pub async fn history(
        &self,
        job: &str,
        since: Option<SystemTime>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let (account, name) = match job.split_once('/') {
            Some((account, name)) => (Some(account), name),
            None => (None, job),
        };
        let since = since.map(timestamp).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT e.id, j.account, j.name, e.type, e.drive_id, e.from_value, e.to_value,
                    e.observed_at, e.severity, e.details
             FROM jobs j JOIN events e ON e.job_id = j.id
             WHERE j.name = ?1 AND (?2 IS NULL OR j.account = ?2) AND e.observed_at >= ?3
             ORDER BY e.id",
        )
        .bind(name)
        .bind(account)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_record).collect()
    }

    /// True when a job of that name (or `account/name`) is known.
    ///
    /// # Errors
    /// Database errors.
    pub async fn has_job(&self, job: &str) -> Result<bool, StoreError> {
        let (account, name) = match job.split_once('/') {
            Some((account, name)) => (Some(account), name),
            None => (None, job),
        };
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE name = ?1 AND (?2 IS NULL OR account = ?2)",
        )
        .bind(name)
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        Ok(count > 0)
    }
}
