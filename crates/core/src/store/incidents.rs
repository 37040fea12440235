//! The PagerDuty incidents iewatch has opened and not closed yet, per webhook, job and
//! condition (`pagerduty_incidents`). The lane that sends to PagerDuty reads them to know
//! what a resolve closes, and writes them after PagerDuty took the trigger or resolve; so
//! a resolve never names a key that was never triggered, and an incident opened before a
//! restart or a failover is still closed after it.

use crate::moment::Moment;

use super::{JobId, Store, StoreError, Writer};
use crate::decide::clocks::Clocks;

/// The condition of a job that completed with errors (the reminders' and the status
/// page's name for it): its `errors` incident stays open until someone acknowledges it.
const COMPLETED_WITH_ERRORS: &str = "completed_with_errors";

impl Store {
    /// The conditions with an incident open on `webhook` for `job`, in name order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn open_incidents(
        &self,
        webhook: &str,
        job: JobId,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT condition FROM pagerduty_incidents WHERE webhook = $1 AND job_id = $2
             ORDER BY condition",
        )
        .bind(webhook)
        .bind(job.0)
        .fetch_all(&self.pool)
        .await?)
    }

    /// True while `job` completed with errors and nobody acknowledged it since (the rule
    /// the reminders and the status page use). Unreadable clocks count as true: an
    /// incident left open is closed by `iewatch ack`; one closed wrongly is not seen.
    ///
    /// # Errors
    /// Database errors.
    pub async fn needs_someone(&self, job: JobId) -> Result<bool, StoreError> {
        let clocks: Option<String> = sqlx::query_scalar("SELECT clocks FROM jobs WHERE id = $1")
            .bind(job.0)
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        let Some(text) = clocks else {
            return Ok(false);
        };
        Ok(match serde_json::from_str::<Clocks>(&text) {
            Ok(clocks) => clocks
                .reminder
                .is_some_and(|r| r.condition == COMPLETED_WITH_ERRORS),
            Err(_) => true,
        })
    }
}

impl Writer {
    /// Remembers that PagerDuty took a trigger of `condition` (a second trigger of an
    /// open incident changes nothing).
    ///
    /// # Errors
    /// Database errors, or this daemon no longer holds the lease.
    pub async fn incident_opened(
        &self,
        webhook: &str,
        job: JobId,
        condition: &str,
        at: Moment,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_fenced().await?;
        sqlx::query(
            "INSERT INTO pagerduty_incidents (webhook, job_id, condition, opened_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (webhook, job_id, condition) DO NOTHING",
        )
        .bind(webhook)
        .bind(job.0)
        .bind(condition)
        .bind(at.sql_text())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets an incident PagerDuty took the resolve of.
    ///
    /// # Errors
    /// Database errors, or this daemon no longer holds the lease.
    pub async fn incident_closed(
        &self,
        webhook: &str,
        job: JobId,
        condition: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_fenced().await?;
        sqlx::query(
            "DELETE FROM pagerduty_incidents WHERE webhook = $1 AND job_id = $2 AND condition = $3",
        )
        .bind(webhook)
        .bind(job.0)
        .bind(condition)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
