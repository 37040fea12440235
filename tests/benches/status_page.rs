//! status_page: what the status page costs to make, as its handler makes it (the same
//! reads and the same rendering): the page of a job with 20,000 events (target ≤ 50 ms)
//! and the front page over 10,000 jobs (target ≤ 150 ms).

mod support;

use std::time::{Duration, Instant, SystemTime};

use iewatch::{
    status_page::{self, JobPage, PAGE_EVENTS},
    store::Store,
};

/// After the 10,000 jobs of `support::SQLITE_JOBS_FILL`: job 1's 20,000 events, its
/// state changes, its drives' progress and reminders, interleaved.
const EVENTS_FILL: [&str; 1] = [
    "INSERT INTO events (job_id, drive_id, type, from_value, to_value, observed_at, severity, details)
     WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
     SELECT 1, CASE i % 4 WHEN 0 THEN NULL WHEN 3 THEN NULL ELSE 'A1' END,
            CASE i % 4 WHEN 0 THEN 'job.state_changed' WHEN 3 THEN 'job.reminder' ELSE 'drive.progress' END,
            CAST(i % 100 AS TEXT), CASE i % 4 WHEN 0 THEN 'State' || (i % 7) ELSE CAST((i + 1) % 100 AS TEXT) END,
            strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || i || ' minutes'), 'info',
            '{\"job\":{\"type\":\"Import\",\"state\":\"Transferring\",\"percent_complete\":40}}'
     FROM n",
];

fn main() {
    support::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("iewatch.db")).await.unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        for statement in support::SQLITE_JOBS_FILL.iter().chain(&EVENTS_FILL) {
            sqlx::query(statement).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        let now = SystemTime::now();
        let mut job_page = Vec::new();
        let mut size = 0;
        for _ in 0..30 {
            let started = Instant::now();
            let job = store.status_of("prod", "job-00001").await.unwrap().unwrap();
            let (timeline, chart, deliveries) = tokio::try_join!(
                store.timeline_page("prod", "job-00001", None, PAGE_EVENTS),
                store.chart_events("prod", "job-00001"),
                store.job_deliveries("prod", "job-00001", 200),
            )
            .unwrap();
            assert_eq!(timeline.events.len(), PAGE_EVENTS as usize);
            assert_eq!(chart.len(), 15_000, "state changes and progress");
            let shown = JobPage {
                timeline: &timeline,
                chart: &chart,
                deliveries: &deliveries,
            };
            size = status_page::job(&job, &shown, now, None).len();
            job_page.push(started.elapsed());
        }
        let mut front_page = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            let jobs = store.status().await.unwrap();
            assert_eq!(jobs.len(), 10_000);
            let html = status_page::index(&jobs, now, None, None);
            assert!(html.len() > 10_000);
            front_page.push(started.elapsed());
        }
        store.close().await;
        job_page.sort();
        front_page.sort();
        let ms = |d: &[Duration], p: f64| support::percentile_ms(d, p);
        support::report(
            "status_page",
            &[
                ("status_page_job_20k_events_p50", ms(&job_page, 50.0), "ms"),
                ("status_page_job_20k_events_max", ms(&job_page, 100.0), "ms"),
                (
                    "status_page_job_20k_events_size",
                    size as f64 / 1024.0,
                    "KiB",
                ),
                (
                    "status_page_front_10k_jobs_p50",
                    ms(&front_page, 50.0),
                    "ms",
                ),
                (
                    "status_page_front_10k_jobs_max",
                    ms(&front_page, 100.0),
                    "ms",
                ),
            ],
        );
    });
}
