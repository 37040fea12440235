//! What the scheduler resumes a job from after a start or a reload: its row (created on
//! first sight), its ETag, its watched fields and its bookkeeping, decoded with errors,
//! never panics.

use super::{JobId, StoreError, StoredJob, Writer};
use crate::{
    decide::Memory,
    model::{CopyStatus, DriveId, DriveSnapshot, DriveState, ETag, JobSnapshot, JobState},
    moment::Moment,
};

/// The columns of `jobs` that [`Writer::load_job`] resumes from.
#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    job_type: Option<String>,
    state: Option<String>,
    percent_complete: Option<i64>,
    cancel_requested: i64,
    etag: Option<String>,
    consecutive_failures: i64,
    failing_alerted: i64,
    not_found_alerted: i64,
    terminal_since: Option<String>,
    sku: Option<String>,
    notices: Option<String>,
    clocks: Option<String>,
}
/// A present drive, for [`Writer::load_job`].
#[derive(sqlx::FromRow)]
struct DriveRow {
    drive_id: String,
    state: Option<String>,
    copy_status: Option<String>,
    percent_complete: Option<i64>,
}

impl Writer {
    /// The job's stored state, creating its row on first sight.
    ///
    /// # Errors
    /// Database errors, or a stored value that cannot be read back.
    pub async fn load_job(&self, account: &str, name: &str) -> Result<StoredJob, StoreError> {
        let id = self.register_job(account, name).await?;
        let row: JobRow = sqlx::query_as(
            "SELECT id, job_type, state, percent_complete, cancel_requested, etag, consecutive_failures,
                    failing_alerted, not_found_alerted, terminal_since, sku, notices, clocks
             FROM jobs WHERE id = $1",
        )
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        let mut damaged = Vec::new();
        let snapshot = match row.state {
            None => None,
            Some(state) => {
                let drives: Vec<DriveRow> = sqlx::query_as(
                    "SELECT drive_id, state, copy_status, percent_complete FROM drives
                     WHERE job_id = $1 AND present = 1 ORDER BY position",
                )
                .bind(row.id)
                .fetch_all(&self.pool)
                .await?;
                Some(JobSnapshot {
                    job_type: row.job_type,
                    state: JobState::new(state),
                    percent_complete: row.percent_complete,
                    cancel_requested: row.cancel_requested != 0,
                    drives: drives
                        .into_iter()
                        .map(|d| DriveSnapshot {
                            drive_id: DriveId::new(d.drive_id),
                            state: d.state.map(DriveState::new),
                            copy_status: d.copy_status.map(CopyStatus::new),
                            percent_complete: d.percent_complete,
                        })
                        .collect(),
                    sku: row.sku,
                    notices: lenient("jobs.notices", row.notices.as_deref(), &mut damaged),
                })
            }
        };
        let terminal_since = match row.terminal_since.as_deref() {
            None => None,
            Some(text) => {
                let read = Moment::parse(text);
                if read.is_none() {
                    damaged.push(format!("jobs.terminal_since {:?} is no time", short(text)));
                }
                read
            }
        };
        let clocks = lenient("jobs.clocks", row.clocks.as_deref(), &mut damaged);
        Ok(StoredJob {
            id: JobId(row.id),
            etag: row.etag.map(ETag::new),
            snapshot,
            memory: Memory {
                consecutive_failures: u32::try_from(row.consecutive_failures).unwrap_or(0),
                failing_alerted: row.failing_alerted != 0,
                not_found_alerted: row.not_found_alerted != 0,
                terminal_since,
                clocks,
            },
            damaged,
        })
    }
}

/// A JSON column read back, or (a hand-edited row: `{not json`, a negative time) its
/// safe default, with why in `damaged`. One bad row must not stop a job's watch, nor
/// `status` for every job: the default is written over it at the job's next write.
pub(crate) fn lenient<T: serde::de::DeserializeOwned + Default>(
    column: &str,
    text: Option<&str>,
    damaged: &mut Vec<String>,
) -> T {
    let Some(text) = text else {
        return T::default();
    };
    serde_json::from_str(text).unwrap_or_else(|e| {
        damaged.push(format!("{column} {:?} cannot be read ({e})", short(text)));
        T::default()
    })
}

/// The start of a stored value, for a message.
fn short(text: &str) -> String {
    let mut cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}
