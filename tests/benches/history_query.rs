//! history_query: 1,000,000 events over 1,000 jobs; `history JOB` (1,000 events) must
//! take under 5 ms and `status` over 10,000 jobs under 100 ms.

mod support;

use std::time::{Duration, Instant};

use iewatch::store::Store;

fn main() {
    support::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("iewatch.db")).await.unwrap();
        let filled = Instant::now();
        let mut tx = store.pool().begin().await.unwrap();
        for statement in [
            "INSERT INTO jobs (account, name, job_type, state, percent_complete, last_polled_at, last_changed_at, first_seen_at)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
             SELECT 'prod', printf('job-%05d', i), 'Import', 'Transferring', i % 100,
                    '2026-11-24 10:00:00.000', '2026-11-24 09:00:00.000', '2026-11-01 09:00:00.000' FROM n",
            "INSERT INTO drives (job_id, drive_id, position, state, copy_status, percent_complete, updated_at)
             SELECT id, 'A' || id, 0, 'Transferring', 'InProgress', 40, '2026-11-24 09:00:00.000' FROM jobs",
            "INSERT INTO drives (job_id, drive_id, position, state, copy_status, percent_complete, updated_at)
             SELECT id, 'B' || id, 1, 'Completed', 'Completed', 100, '2026-11-24 09:00:00.000' FROM jobs",
            "INSERT INTO events (job_id, drive_id, type, from_value, to_value, observed_at, severity, details)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999)
             SELECT (i % 1000) + 1, 'A' || ((i % 1000) + 1), 'drive.progress',
                    CAST((i / 1000) % 100 AS TEXT), CAST((i / 1000 + 1) % 100 AS TEXT),
                    strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || (i / 1000) || ' minutes'), 'info',
                    '{\"job\":{\"type\":\"Import\",\"state\":\"Transferring\",\"percent_complete\":40}}'
             FROM n",
        ] {
            sqlx::query(statement).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(events, 1_000_000);
        eprintln!("filled in {:?}", filled.elapsed());

        let mut history = Vec::new();
        for i in 0..50 {
            let job = format!("job-{:05}", 1 + (i * 19) % 1000);
            let started = Instant::now();
            let entries = store.history(&job, None).await.unwrap();
            history.push(started.elapsed());
            assert_eq!(entries.len(), 1000);
        }
        let mut status = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let jobs = store.status().await.unwrap();
            status.push(started.elapsed());
            assert_eq!(jobs.len(), 10_000);
        }
        history.sort();
        status.sort();
        let ms = |d: &[Duration], p: f64| support::percentile_ms(d, p);
        support::report(
            "history_query",
            &[
                ("history_query_history_p50", ms(&history, 50.0), "ms"),
                ("history_query_history_max", ms(&history, 100.0), "ms"),
                ("history_query_status_10k_p50", ms(&status, 50.0), "ms"),
                ("history_query_status_10k_max", ms(&status, 100.0), "ms"),
            ],
        );
    });
}
