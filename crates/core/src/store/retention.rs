//! `retention`: the events and deliveries of jobs that ended longer ago than that go, in
//! small batches (a running daemon's writes wait a batch at most), followed by an
//! incremental vacuum. A job's row and drives — its current state — always stay.

use crate::moment::Moment;

use serde::Serialize;

use super::{Store, StoreError};

/// An event of `e` that may go: none of its deliveries is pending, and none failed at
/// or after the cutoff (`$CUTOFF`): an alert never delivered is never pruned, and a
/// failed one stays redeliverable for as long as the history would have.
///
/// The newest event of the database never goes: SQLite gives a new row the largest id
/// plus one, so removing the newest rows would hand their ids (and `webhook-id`s) out
/// again, and receivers that drop duplicates by webhook-id would drop real alerts.
const REMOVABLE: &str = "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id
     AND d.delivered_at IS NULL AND (d.failed_at IS NULL OR d.failed_at >= $CUTOFF))
     AND e.id < (SELECT MAX(id) FROM events)";

/// Events deleted per transaction.
const PRUNE_BATCH: i64 = 500;
/// Free pages handed back to the file system after each batch.
const VACUUM_PAGES: i64 = 2000;

/// What pruning removes (or would) of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Account.
    pub account: String,
    /// Job name.
    pub name: String,
    /// When it ended (first seen terminal; SQLite's text in JSON, as the column).
    #[serde(with = "crate::moment::sql_text")]
    pub ended_at: Moment,
    /// Its events.
    pub events: i64,
    /// Their deliveries.
    pub deliveries: i64,
    /// Deliveries kept although the job ended long ago: pending, or failed since the
    /// cutoff (with their events).
    pub kept: i64,
}

impl Store {
    /// The events and deliveries of jobs terminal since before `cutoff`: removed, or
    /// only counted with `dry_run`.
    ///
    /// # Errors
    /// Database errors; what was removed before stays removed (each batch is whole).
    pub async fn prune(&self, cutoff: Moment, dry_run: bool) -> Result<Vec<Pruned>, StoreError> {
        let removable = REMOVABLE.replace("$CUTOFF", "$1");
        let jobs: Vec<(i64, String, String, String, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT j.id, j.account, j.name, j.terminal_since,
                    (SELECT COUNT(*) FROM events e WHERE e.job_id = j.id AND {removable}),
                    (SELECT COUNT(*) FROM deliveries d2 JOIN events e ON e.id = d2.event_id
                      WHERE e.job_id = j.id AND {removable}),
                    (SELECT COUNT(*) FROM deliveries d3 WHERE d3.job_id = j.id
                      AND d3.delivered_at IS NULL
                      AND (d3.failed_at IS NULL OR d3.failed_at >= $1))
             FROM jobs j WHERE j.terminal_since IS NOT NULL AND j.terminal_since < $1
             ORDER BY j.terminal_since"
        ))
        .bind(cutoff.sql_text())
        .fetch_all(&self.pool)
        .await?;
        let mut report = Vec::new();
        for (id, account, name, ended_at, events, deliveries, kept) in jobs {
            if events == 0 && deliveries == 0 {
                continue;
            }
            if kept > 0 {
                tracing::info!(
                    "retention keeps {kept} alert(s) of {account}/{name} that are not delivered yet"
                );
            }
            if !dry_run {
                self.prune_job(id, cutoff).await?;
            }
            report.push(Pruned {
                account,
                name,
                ended_at: Moment::parse_stored(&ended_at),
                events,
                deliveries,
                kept,
            });
        }
        Ok(report)
    }

    async fn prune_job(&self, job: i64, cutoff: Moment) -> Result<(), StoreError> {
        let removable = REMOVABLE.replace("$CUTOFF", "$3");
        let cutoff = cutoff.sql_text();
        loop {
            let mut tx = self.pool.begin().await?;
            sqlx::query(&format!(
                "DELETE FROM deliveries WHERE event_id IN
                    (SELECT e.id FROM events e WHERE e.job_id = $1 AND {removable}
                     ORDER BY e.id LIMIT $2)"
            ))
            .bind(job)
            .bind(PRUNE_BATCH)
            .bind(&cutoff)
            .execute(&mut *tx)
            .await?;
            let removed = sqlx::query(&format!(
                "DELETE FROM events WHERE id IN
                    (SELECT e.id FROM events e WHERE e.job_id = $1 AND {removable}
                     ORDER BY e.id LIMIT $2)"
            ))
            .bind(job)
            .bind(PRUNE_BATCH)
            .bind(&cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed == 0 {
                // A lane goes only with the last of its job's deliveries.
                sqlx::query(
                    "DELETE FROM outbox_lanes WHERE job_id = $1
                     AND NOT EXISTS (SELECT 1 FROM deliveries WHERE job_id = $1)",
                )
                .bind(job)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            // A no-op on a database created before incremental vacuum (see README);
            // PostgreSQL's autovacuum does this on its own.
            if self.dialect() == super::Dialect::Sqlite {
                sqlx::query(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
                    .execute(&self.pool)
                    .await?;
            }
            if removed == 0 {
                return Ok(());
            }
        }
    }
}
