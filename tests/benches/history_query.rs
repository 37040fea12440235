//! history_query: 1,000,000 events over 1,000 jobs; `history JOB` (1,000 events) must
//! take under 5 ms on SQLite and 3 ms on PostgreSQL, `history JOB --json` (which reads
//! each event's details too) is shown beside it, and `status` over 10,000 jobs must take
//! under 100 ms.

mod support;

use std::time::{Duration, Instant};

use iewatch::store::{Database, Details, Writer};

/// The fill after the jobs' (`support::SQLITE_JOBS_FILL`): 1,000,000 events over the
/// first 1,000 jobs.
const SQLITE_EVENTS_FILL: [&str; 1] = [
    "INSERT INTO events (job_id, drive_id, type, from_value, to_value, observed_at, severity, details)
     WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999)
     SELECT (i % 1000) + 1, 'A' || ((i % 1000) + 1), 'drive.progress',
            CAST((i / 1000) % 100 AS TEXT), CAST((i / 1000 + 1) % 100 AS TEXT),
            strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || (i / 1000) || ' minutes'), 'info',
            '{\"job\":{\"type\":\"Import\",\"state\":\"Transferring\",\"percent_complete\":40}}'
     FROM n",
];

/// The same rows on PostgreSQL.
const POSTGRES_FILL: [&str; 4] = [
    "INSERT INTO jobs (account, name, job_type, state, percent_complete, last_polled_at, last_changed_at, first_seen_at)
     SELECT 'prod', 'job-' || lpad(i::text, 5, '0'), 'Import', 'Transferring', i % 100,
            '2026-11-24 10:00:00.000', '2026-11-24 09:00:00.000', '2026-11-01 09:00:00.000'
     FROM generate_series(1, 10000) AS i",
    "INSERT INTO drives (job_id, drive_id, position, state, copy_status, percent_complete, updated_at)
     SELECT id, 'A' || id, 0, 'Transferring', 'InProgress', 40, '2026-11-24 09:00:00.000' FROM jobs",
    "INSERT INTO drives (job_id, drive_id, position, state, copy_status, percent_complete, updated_at)
     SELECT id, 'B' || id, 1, 'Completed', 'Completed', 100, '2026-11-24 09:00:00.000' FROM jobs",
    "INSERT INTO events (job_id, drive_id, type, from_value, to_value, observed_at, severity, details)
     SELECT (i % 1000) + 1, 'A' || ((i % 1000) + 1), 'drive.progress',
            ((i / 1000) % 100)::text, ((i / 1000 + 1) % 100)::text,
            to_char(timestamp '2026-01-01' + (i / 1000) * interval '1 minute', 'YYYY-MM-DD HH24:MI:SS.MS'), 'info',
            '{\"job\":{\"type\":\"Import\",\"state\":\"Transferring\",\"percent_complete\":40}}'
     FROM generate_series(0, 999999) AS i",
];

/// After PostgreSQL's fill, what autovacuum does to a table that took many inserts (within
/// a minute of them): fresh statistics for the planner, and the visibility map that lets
/// `history` read its rows from the index alone.
const POSTGRES_SETTLE: [&str; 1] = ["VACUUM (ANALYZE) events, jobs, drives"];

/// What `measure` returns, named, for each database.
const SQLITE_NAMES: [&str; 6] = [
    "history_query_history_p50",
    "history_query_history_max",
    "history_query_history_json_p50",
    "history_query_history_json_max",
    "history_query_status_10k_p50",
    "history_query_status_10k_max",
];
const POSTGRES_NAMES: [&str; 6] = [
    "history_query_postgres_history_p50",
    "history_query_postgres_history_max",
    "history_query_postgres_history_json_p50",
    "history_query_postgres_history_json_max",
    "history_query_postgres_status_10k_p50",
    "history_query_postgres_status_10k_max",
];

fn main() {
    support::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = measure(
            &Database::File(dir.path().join("iewatch.db")),
            &[&support::SQLITE_JOBS_FILL[..], &SQLITE_EVENTS_FILL].concat(),
            &[],
        )
        .await;
        let mut figures: Vec<support::Figure> = SQLITE_NAMES
            .into_iter()
            .zip(sqlite)
            .map(|(name, value)| (name, value, "ms"))
            .collect();
        if let Some(cluster) = support::postgres::Cluster::start_durable() {
            let postgres = cluster.create_database("history").await;
            let postgres = measure(&postgres, &POSTGRES_FILL, &POSTGRES_SETTLE).await;
            figures.extend(
                POSTGRES_NAMES
                    .into_iter()
                    .zip(postgres)
                    .map(|(name, value)| (name, value, "ms")),
            );
        }
        support::report("history_query", &figures);
    });
}

/// Fills `database` with `fill` (one transaction) then `settle`, and times `history`
/// without and with details (50 jobs of 1,000 events each) and `status` (10 reads of
/// 10,000 jobs): p50 and max of each, in that order.
async fn measure(database: &Database, fill: &[&str], settle: &[&str]) -> [f64; 6] {
    let store = Writer::open(database).await.unwrap();
    let filled = Instant::now();
    let mut tx = store.pool().begin().await.unwrap();
    for statement in fill {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    for statement in settle {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(events, 1_000_000);
    eprintln!("{database}: filled in {:?}", filled.elapsed());

    let mut history = [Vec::new(), Vec::new()];
    for (times, details) in history.iter_mut().zip([Details::Skip, Details::Read]) {
        for i in 0..50 {
            let job = format!("job-{:05}", 1 + (i * 19) % 1000);
            let started = Instant::now();
            let entries = store.history(&job, None, details).await.unwrap();
            times.push(started.elapsed());
            assert_eq!(entries.len(), 1000);
            assert_eq!(entries[999].details.is_some(), details == Details::Read);
        }
    }
    let mut status = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let jobs = store.status().await.unwrap();
        status.push(started.elapsed());
        assert_eq!(jobs.len(), 10_000);
    }
    store.close().await;
    for times in &mut history {
        times.sort();
    }
    status.sort();
    let ms = |d: &[Duration], p: f64| support::percentile_ms(d, p);
    [
        ms(&history[0], 50.0),
        ms(&history[0], 100.0),
        ms(&history[1], 50.0),
        ms(&history[1], 100.0),
        ms(&status, 50.0),
        ms(&status, 100.0),
    ]
}
