//! What people tell iewatch about a job: `iewatch ack` (stop reminding me of what is
//! wrong now; recorded in the history) and `iewatch mute` (no alerts for a while; events
//! are still recorded). The commands write these; the daemon reads them only when it is
//! about to remind or alert, so a quiet job costs no read.

use crate::moment::Moment;

use super::{insert_events, JobId, Store, StoreError};
use crate::{
    events::{ChangeValue, Event, EventType, OutboxEntry},
    model::Severity,
};

/// A job's acknowledgement and mute, as the daemon reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attention {
    /// The last `iewatch ack`.
    pub acked_at: Option<Moment>,
    /// Alerts are silenced (not sent, then or later) until then.
    pub muted_until: Option<Moment>,
}

impl Attention {
    /// True while alerts are silenced.
    pub fn is_muted(&self, now: Moment) -> bool {
        self.muted_until.is_some_and(|until| now < until)
    }
}

impl Store {
    /// The rows of `job` (`name`, or `account/name`).
    async fn job_ids(&self, job: &str) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .jobs_named(job)
            .await?
            .into_iter()
            .map(|(id, ..)| id)
            .collect())
    }

    /// `iewatch ack`: stops the reminders of the job's current condition and records a
    /// `job.acknowledged` event with the note, sent only to the PagerDuty webhooks with
    /// the job's `errors` incident open (it resolves it). Returns how many jobs
    /// matched.
    ///
    /// # Errors
    /// Database errors.
    pub async fn acknowledge(
        &self,
        job: &str,
        note: Option<&str>,
        now: Moment,
    ) -> Result<usize, StoreError> {
        let ids = self.job_ids(job).await?;
        let at = now.sql_text();
        for id in &ids {
            let mut tx = self.pool.begin().await?;
            let condition: Option<String> = sqlx::query_scalar(self.dialect().pick(
                "UPDATE jobs SET acked_at = $1 WHERE id = $2
                 RETURNING json_extract(clocks, '$.reminder.condition')",
                "UPDATE jobs SET acked_at = $1 WHERE id = $2
                 RETURNING clocks::json #>> '{reminder,condition}'",
            ))
            .bind(&at)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let event = Event {
                event_type: EventType::JobAcknowledged,
                drive_id: None,
                from: None,
                to: Some(ChangeValue::Text(
                    note.unwrap_or("acknowledged").chars().take(500).collect(),
                )),
                severity: Severity::Info,
                details: Some(serde_json::json!({ "note": note, "condition": condition })),
            };
            // PagerDuty webhooks with the job's `errors` incident open get the ack, which
            // resolves it: someone has it in hand.
            let outbox: Vec<OutboxEntry> = sqlx::query_scalar(
                "SELECT webhook FROM pagerduty_incidents WHERE job_id = $1 AND condition = 'errors'",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|webhook| OutboxEntry { event: 0, webhook })
            .collect();
            insert_events(&mut tx, self.dialect(), JobId(*id), &[event], &outbox, &at).await?;
            tx.commit().await?;
        }
        Ok(ids.len())
    }

    /// `iewatch mute`: holds the job's alerts back until `until` (None: unmute). Returns
    /// how many jobs matched.
    ///
    /// # Errors
    /// Database errors.
    pub async fn mute(&self, job: &str, until: Option<Moment>) -> Result<usize, StoreError> {
        let ids = self.job_ids(job).await?;
        for id in &ids {
            sqlx::query("UPDATE jobs SET muted_until = $1 WHERE id = $2")
                .bind(until.map(Moment::sql_text))
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(ids.len())
    }

    /// The job's acknowledgement and mute.
    ///
    /// # Errors
    /// Database errors, or a stored time that cannot be read.
    pub async fn attention(&self, job: JobId) -> Result<Attention, StoreError> {
        let (acked, muted): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT acked_at, muted_until FROM jobs WHERE id = $1")
                .bind(job.0)
                .fetch_one(&self.pool)
                .await?;
        let read = |column: &str, text: Option<String>| {
            text.map(|t| {
                Moment::parse(&t)
                    .ok_or_else(|| StoreError::Corrupt(format!("jobs.{column}: {t:?}")))
            })
            .transpose()
        };
        Ok(Attention {
            acked_at: read("acked_at", acked)?,
            muted_until: read("muted_until", muted)?,
        })
    }
}
