//! `retention`: the events and deliveries of jobs that ended longer ago than that go, in
//! small batches (a running daemon's writes wait a batch at most), followed by an
//! incremental vacuum. A job's row and drives — its current state — always stay.

use std::time::SystemTime;

use serde::Serialize;

use super::{timestamp, Store, StoreError};

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
    /// When it ended (first seen terminal).
    pub ended_at: String,
    /// Its events.
    pub events: i64,
    /// Their deliveries.
    pub deliveries: i64,
}

impl Store {
    /// The events and deliveries of jobs terminal since before `cutoff`: removed, or
    /// only counted with `dry_run`.
    ///
    /// # Errors
    /// Database errors; what was removed before stays removed (each batch is whole).
    pub async fn prune(
        &self,
        cutoff: SystemTime,
        dry_run: bool,
    ) -> Result<Vec<Pruned>, StoreError> {
        let jobs: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT j.id, j.account, j.name, j.terminal_since,
                    (SELECT COUNT(*) FROM events e WHERE e.job_id = j.id),
                    (SELECT COUNT(*) FROM deliveries d WHERE d.job_id = j.id)
             FROM jobs j WHERE j.terminal_since IS NOT NULL AND j.terminal_since < $1
             ORDER BY j.terminal_since",
        )
        .bind(timestamp(cutoff))
        .fetch_all(&self.pool)
        .await?;
        let mut report = Vec::new();
        for (id, account, name, ended_at, events, deliveries) in jobs {
            if events == 0 && deliveries == 0 {
                continue;
            }
            if !dry_run {
                self.prune_job(id).await?;
            }
            report.push(Pruned {
                account,
                name,
                ended_at,
                events,
                deliveries,
            });
        }
        Ok(report)
    }

    async fn prune_job(&self, job: i64) -> Result<(), StoreError> {
        loop {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "DELETE FROM deliveries WHERE event_id IN
                    (SELECT id FROM events WHERE job_id = $1 ORDER BY id LIMIT $2)",
            )
            .bind(job)
            .bind(PRUNE_BATCH)
            .execute(&mut *tx)
            .await?;
            let removed = sqlx::query(
                "DELETE FROM events WHERE id IN
                    (SELECT id FROM events WHERE job_id = $1 ORDER BY id LIMIT $2)",
            )
            .bind(job)
            .bind(PRUNE_BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed == 0 {
                sqlx::query("DELETE FROM outbox_lanes WHERE job_id = $1")
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
