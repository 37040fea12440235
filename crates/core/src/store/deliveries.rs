//! The webhook outbox: the notifier's queries over `deliveries` and `outbox_lanes`. A
//! lane is one (webhook, job) with pending deliveries; its deliveries go out oldest
//! first (so events of one job reach one endpoint in order), and the lane row says when
//! its oldest one may be tried. Every query here is an index range: a backlog costs its
//! own size to drain and nothing to wait on.

use crate::moment::Moment;

use serde::Serialize;

use super::{reads::parse_details, EventRecord, JobId, Store, StoreError, Writer};
use crate::{
    events::EventType,
    model::{DriveId, Severity},
};

/// A delivery to attempt, with everything its payload needs.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    /// Delivery id.
    pub id: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// The first attempt, if any: `give_up_after` counts from here, so that events
    /// queued behind a failing one of the same job get their own full retry window.
    pub first_attempt_at: Option<Moment>,
    /// The event; its id is the stable `webhook-id`.
    pub event: EventRecord,
}

/// The outcome of one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Failed; try again at `next_at`.
    Retry {
        /// The status, if a response came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_at: Moment,
    },
    /// Given up (give_up_after passed, or 410 Gone).
    Failed {
        /// The status, if a response came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

/// A delivery as `iewatch deliveries` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRow {
    /// Delivery id (for `redeliver`).
    pub id: i64,
    /// Event id.
    pub event_id: i64,
    /// Webhook name.
    pub webhook: String,
    /// `account/job`.
    pub job: String,
    /// Event type.
    pub event_type: EventType,
    /// Attempts made.
    pub attempts: i64,
    /// pending, delivered or failed.
    pub status: &'static str,
    /// Queued at (SQLite's text in JSON, as the column).
    #[serde(with = "crate::moment::sql_text")]
    pub created_at: Moment,
    /// Next attempt (pending only).
    #[serde(with = "crate::moment::sql_text_opt")]
    pub next_attempt_at: Option<Moment>,
    /// Delivered or failed at.
    #[serde(with = "crate::moment::sql_text_opt")]
    pub finished_at: Option<Moment>,
    /// Last HTTP status.
    pub last_status: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
}

impl Store {
    /// The first `limit` lanes of `webhook` by the time their head may be tried,
    /// due or not: (job, when).
    ///
    /// # Errors
    /// Database errors.
    pub async fn lanes(
        &self,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<(JobId, Moment)>, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT job_id, next_attempt_at FROM outbox_lanes WHERE webhook = $1
             ORDER BY next_attempt_at LIMIT $2",
        )
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        // An unreadable time (a hand edit) is the epoch: the lane is due now, its next
        // write repairs it, and the alerts behind it are not held up.
        Ok(rows
            .into_iter()
            .map(|(job, at)| (JobId(job), Moment::parse_stored(&at)))
            .collect())
    }

    /// The oldest `limit` pending deliveries of one lane, in event order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn lane_deliveries(
        &self,
        webhook: &str,
        job: JobId,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            delivery_id: i64,
            attempts: i64,
            first_attempt_at: Option<String>,
            id: i64,
            account: String,
            name: String,
            #[sqlx(rename = "type")]
            event_type: EventType,
            drive_id: Option<String>,
            from_value: Option<String>,
            to_value: Option<String>,
            observed_at: String,
            severity: Severity,
            details: Option<String>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT d.id AS delivery_id, d.attempts, d.first_attempt_at, e.id, j.account, j.name, e.type,
                    e.drive_id, e.from_value, e.to_value, e.observed_at, e.severity, e.details
             FROM deliveries d JOIN events e ON e.id = d.event_id JOIN jobs j ON j.id = d.job_id
             WHERE d.webhook = $1 AND d.job_id = $2 AND d.delivered_at IS NULL AND d.failed_at IS NULL
             ORDER BY d.event_id LIMIT $3",
        )
        .bind(webhook)
        .bind(job.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(OutboxItem {
                    id: r.delivery_id,
                    attempts: u32::try_from(r.attempts).unwrap_or(0),
                    first_attempt_at: r.first_attempt_at.as_deref().and_then(Moment::parse),
                    event: EventRecord {
                        id: r.id,
                        account: r.account,
                        job: r.name,
                        event_type: r.event_type,
                        drive_id: r.drive_id.map(DriveId::new),
                        from: r.from_value,
                        to: r.to_value,
                        observed_at: Moment::parse_stored(&r.observed_at),
                        severity: r.severity,
                        details: parse_details(r.details.as_deref())?,
                    },
                })
            })
            .collect()
    }

    /// Pending deliveries over all webhooks (metrics, status line).
    ///
    /// # Errors
    /// Database errors.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE delivered_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Puts a delivery back in the queue, due now. Returns false if there is no such id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn redeliver(&self, id: i64, now: Moment) -> Result<bool, StoreError> {
        let now = now.sql_text();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE deliveries SET delivered_at = NULL, failed_at = NULL, attempts = 0,
                first_attempt_at = NULL, next_attempt_at = $1, last_error = NULL WHERE id = $2",
        )
        .bind(&now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Its lane is due now, whatever it waited for: a person asked.
        sqlx::query(
            "INSERT INTO outbox_lanes (webhook, job_id, next_attempt_at)
             SELECT webhook, job_id, $1 FROM deliveries WHERE id = $2
             ON CONFLICT (webhook, job_id) DO UPDATE SET next_attempt_at = excluded.next_attempt_at",
        )
        .bind(&now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The delivery log, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn deliveries(
        &self,
        failed_only: bool,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.delivery_rows(failed_only, None, limit).await
    }

    /// The deliveries of one job's alerts, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn job_deliveries(
        &self,
        account: &str,
        name: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.delivery_rows(false, Some((account, name)), limit)
            .await
    }

    async fn delivery_rows(
        &self,
        failed_only: bool,
        job: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            event_id: i64,
            webhook: String,
            account: String,
            name: String,
            #[sqlx(rename = "type")]
            event_type: EventType,
            attempts: i64,
            created_at: String,
            next_attempt_at: String,
            delivered_at: Option<String>,
            failed_at: Option<String>,
            last_status: Option<i64>,
            last_error: Option<String>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT d.id, d.event_id, d.webhook, j.account, j.name, e.type, d.attempts, d.created_at,
                    d.next_attempt_at, d.delivered_at, d.failed_at, d.last_status, d.last_error
             FROM deliveries d JOIN events e ON e.id = d.event_id JOIN jobs j ON j.id = d.job_id
             WHERE ($1 = 0 OR d.failed_at IS NOT NULL)
               AND ($3 IS NULL OR d.job_id = (SELECT id FROM jobs WHERE account = $3 AND name = $4))
             ORDER BY d.id DESC LIMIT $2",
        )
        .bind(i64::from(failed_only))
        .bind(i64::from(limit))
        .bind(job.map(|(account, _)| account))
        .bind(job.map(|(_, name)| name))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let status = match (&r.delivered_at, &r.failed_at) {
                    (Some(_), _) => "delivered",
                    (None, Some(_)) => "failed",
                    (None, None) => "pending",
                };
                DeliveryRow {
                    id: r.id,
                    event_id: r.event_id,
                    webhook: r.webhook,
                    job: format!("{}/{}", r.account, r.name),
                    event_type: r.event_type,
                    attempts: r.attempts,
                    status,
                    created_at: Moment::parse_stored(&r.created_at),
                    next_attempt_at: (status == "pending")
                        .then(|| Moment::parse_stored(&r.next_attempt_at)),
                    finished_at: r
                        .delivered_at
                        .or(r.failed_at)
                        .as_deref()
                        .and_then(Moment::parse),
                    last_status: r.last_status,
                    last_error: r.last_error,
                }
            })
            .collect())
    }
}

impl Writer {
    /// Makes a lane wait until `until` (an e-mail digest not yet due).
    ///
    /// # Errors
    /// Database errors.
    pub async fn postpone_lane(
        &self,
        webhook: &str,
        job: JobId,
        until: Moment,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_fenced().await?;
        sqlx::query(
            "UPDATE outbox_lanes SET next_attempt_at = $1 WHERE webhook = $2 AND job_id = $3",
        )
        .bind(until.sql_text())
        .bind(webhook)
        .bind(job.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the outcomes of a lane's attempts, in order, in one transaction, and
    /// moves the lane on: due again at once while it has pending deliveries and the last
    /// attempt did not ask to wait, due at the retry time if it did, gone when empty.
    ///
    /// # Errors
    /// Database errors; none of the outcomes is recorded then (the deliveries are sent
    /// again: at-least-once, under the same webhook-id).
    pub async fn record_lane(
        &self,
        webhook: &str,
        job: JobId,
        attempts: &[(i64, Attempt)],
        at: Moment,
    ) -> Result<(), StoreError> {
        let now = at.sql_text();
        let mut tx = self.begin_fenced().await?;
        record_attempts(&mut tx, (webhook, job), attempts, &now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A lane's attempts and its next due time (or its end), in the caller's transaction.
async fn record_attempts(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    (webhook, job): (&str, JobId),
    attempts: &[(i64, Attempt)],
    now: &str,
) -> Result<(), StoreError> {
    for (id, attempt) in attempts {
        let (delivered, failed, next, status, error) = match attempt {
            Attempt::Delivered { status } => (Some(now), None, None, Some(*status), None),
            Attempt::Retry {
                status,
                error,
                next_at,
            } => (
                None,
                None,
                Some(next_at.sql_text()),
                *status,
                Some(error.as_str()),
            ),
            Attempt::Failed { status, error } => {
                (None, Some(now), None, *status, Some(error.as_str()))
            }
        };
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, delivered_at = $1, failed_at = $2,
                next_attempt_at = COALESCE($3, next_attempt_at), last_status = $4, last_error = $5,
                first_attempt_at = COALESCE(first_attempt_at, $7)
             WHERE id = $6",
        )
        .bind(delivered)
        .bind(failed)
        .bind(next)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let retry_at = match attempts.last() {
        Some((_, Attempt::Retry { next_at, .. })) => next_at.sql_text(),
        _ => now.to_owned(),
    };
    sqlx::query("UPDATE outbox_lanes SET next_attempt_at = $3 WHERE webhook = $1 AND job_id = $2")
        .bind(webhook)
        .bind(job.0)
        .bind(&retry_at)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM outbox_lanes WHERE webhook = $1 AND job_id = $2 AND NOT EXISTS
            (SELECT 1 FROM deliveries WHERE webhook = $1 AND job_id = $2
             AND delivered_at IS NULL AND failed_at IS NULL)",
    )
    .bind(webhook)
    .bind(job.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
