//! The error logs read for drives that ended with errors (`error_logs`): written with
//! their `drive.errors` event, once per log; read by the reader (what is done), by
//! `iewatch errors`, `status --json` and the job page.

use std::collections::{HashMap, HashSet};

use super::{resume::lenient, writer::Change, JobId, Store, StoreError, Writer};
use crate::{
    errorlog::Report,
    events::{Event, OutboxEntry},
    moment::Moment,
};

/// One log's report as stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredErrorLog {
    /// The job's account.
    pub account: String,
    /// The job.
    pub job: String,
    /// The drive, or the Data Box destination account.
    pub drive_id: String,
    /// When it was read (SQLite's text in JSON, as the column).
    #[serde(with = "crate::moment::sql_text")]
    pub read_at: Moment,
    /// The report (an unreadable stored value reads as an empty report naming why).
    pub report: Report,
}

#[derive(sqlx::FromRow)]
struct Row {
    drive_id: String,
    log: String,
    read_at: String,
    report: String,
}

impl Store {
    /// The logs of `job` already recorded.
    ///
    /// # Errors
    /// Database errors.
    pub async fn error_logs_recorded(&self, job: JobId) -> Result<HashSet<String>, StoreError> {
        let logs: Vec<String> = sqlx::query_scalar("SELECT log FROM error_logs WHERE job_id = $1")
            .bind(job.0)
            .fetch_all(&self.pool)
            .await?;
        Ok(logs.into_iter().collect())
    }

    /// Every recorded log of the jobs `job` names (`name` or `account/name`), in the
    /// order read.
    ///
    /// # Errors
    /// Database errors.
    pub async fn error_logs(&self, job: &str) -> Result<Vec<StoredErrorLog>, StoreError> {
        let mut logs = Vec::new();
        for (id, account, name) in self.jobs_named(job).await? {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT drive_id, log, read_at, report FROM error_logs
                 WHERE job_id = $1 ORDER BY read_at, drive_id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            logs.extend(
                rows.into_iter()
                    .map(|row| stored((account.clone(), name.clone()), row)),
            );
        }
        Ok(logs)
    }

    /// The recorded logs by job id, of the job `only` names or of every job.
    pub(super) async fn error_logs_by_job(
        &self,
        only: Option<(&str, &str)>,
    ) -> Result<HashMap<i64, Vec<StoredErrorLog>>, StoreError> {
        let (account, name) = only.unzip();
        let rows: Vec<(i64, String, String, String, String, String, String)> =
            sqlx::query_as(self.dialect().pick(
                "SELECT e.job_id, j.account, j.name, e.drive_id, e.log, e.read_at, e.report
                 FROM error_logs e JOIN jobs j ON j.id = e.job_id
                 WHERE $1 IS NULL OR (j.account = $1 AND j.name = $2)
                 ORDER BY e.read_at, e.drive_id",
                "SELECT e.job_id, j.account, j.name, e.drive_id, e.log, e.read_at, e.report
                 FROM error_logs e JOIN jobs j ON j.id = e.job_id
                 WHERE $1::text IS NULL OR (j.account = $1 AND j.name = $2)
                 ORDER BY e.read_at, e.drive_id",
            ))
            .bind(account)
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        let mut by_job: HashMap<i64, Vec<StoredErrorLog>> = HashMap::new();
        for (id, account, job, drive_id, log, read_at, report) in rows {
            by_job.entry(id).or_default().push(stored(
                (account, job),
                Row {
                    drive_id,
                    log,
                    read_at,
                    report,
                },
            ));
        }
        Ok(by_job)
    }
}

impl Writer {
    /// Records a drive's error log `report` and its `drive.errors` event (with the
    /// event's deliveries), unless the log was recorded before: then nothing is written
    /// and no event id is returned.
    ///
    /// # Errors
    /// Database errors; nothing is written then.
    pub async fn record_error_log(
        &self,
        job: JobId,
        report: &Report,
        drive_id: &str,
        event: &Event,
        outbox: &[OutboxEntry],
        at: Moment,
    ) -> Result<Vec<i64>, StoreError> {
        let change = Change::ErrorLog {
            log: report.log.clone(),
            drive: drive_id.to_owned(),
            readable: report.error.is_none(),
            report: serde_json::to_string(report).unwrap_or_default(),
        };
        self.submit(job, change, None, std::slice::from_ref(event), outbox, at)
            .await
    }
}

/// A row read back; an unreadable report reads as an empty one naming why.
fn stored((account, job): (String, String), row: Row) -> StoredErrorLog {
    let mut damaged = Vec::new();
    let mut report: Report = lenient("error_logs.report", Some(&row.report), &mut damaged);
    if report.log.is_empty() {
        report.log = row.log;
    }
    if let Some(why) = damaged.pop() {
        report.error.get_or_insert(why);
    }
    StoredErrorLog {
        account,
        job,
        drive_id: row.drive_id,
        read_at: Moment::parse_stored(&row.read_at),
        report,
    }
}
