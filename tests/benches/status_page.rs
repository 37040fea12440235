//! status_page: what the status page costs to make, as its handler makes it (the same
//! reads and the same rendering): the page of a job with 20,000 events (target ≤ 50 ms)
//! and the front page over 10,000 jobs (target ≤ 150 ms); and what 50 clients reading
//! the pages for 30 s cost the writer: a recorded change's time to commit, beside them
//! and alone (target ≤ 1.5×).

mod support;

use std::time::{Duration, Instant, SystemTime};

use iewatch::{
    status_page::{self, JobPage, PAGE_EVENTS},
    store::{Store, Writer},
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
        let store = Writer::open_file(&dir.path().join("iewatch.db"))
            .await
            .unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        for statement in support::SQLITE_JOBS_FILL.iter().chain(&EVENTS_FILL) {
            sqlx::query(statement).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        let now = SystemTime::now().into();
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
        let (alone, beside) = commits_beside_readers(&store).await;
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
                ("status_page_commit_alone_p50", ms(&alone, 50.0), "ms"),
                (
                    "status_page_commit_beside_50_readers_p50",
                    ms(&beside, 50.0),
                    "ms",
                ),
                ("status_page_commit_alone_p99", ms(&alone, 99.0), "ms"),
                (
                    "status_page_commit_beside_50_readers_p99",
                    ms(&beside, 99.0),
                    "ms",
                ),
                (
                    "status_page_commit_cost_of_50_readers",
                    ms(&beside, 50.0) / ms(&alone, 50.0).max(0.001),
                    "x",
                ),
            ],
        );
    });
}

/// A change recorded every 20 ms, its time to commit measured: 10 s alone, then 30 s
/// while 50 clients read `/` and the long job's page through the real listener as fast
/// as it answers. Both sorted.
async fn commits_beside_readers(store: &Writer) -> (Vec<Duration>, Vec<Duration>) {
    use http_body_util::BodyExt as _;
    let settings = iewatch::config::HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 64,
        token: None,
    };
    let (supervisor, _deaths) = iewatch::supervise::Supervisor::new();
    let stores = iewatch::http_server::Stores::new(
        store.clone(),
        Store::open_existing(store.database().file().unwrap())
            .await
            .unwrap(),
    );
    let addr = iewatch::http_server::serve(&settings, stores, Default::default(), &supervisor)
        .await
        .unwrap();
    let job = store.load_job("prod", "job-00002").await.unwrap();
    let commits = |seconds: u64| {
        let store = store.clone();
        let (id, memory) = (job.id, job.memory.clone());
        async move {
            let mut took = Vec::new();
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                let event = iewatch::events::Event::notice(
                    iewatch::events::EventType::JobReminder,
                    None,
                    "measured".into(),
                    iewatch::model::Severity::Info,
                    serde_json::json!({}),
                );
                let started = Instant::now();
                store
                    .record_bookkeeping(id, &memory, &[event], &[], SystemTime::now().into())
                    .await
                    .unwrap();
                took.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            took.sort();
            took
        }
    };
    let alone = commits(10).await;
    let stop = Instant::now() + Duration::from_secs(30);
    let readers: Vec<_> = (0..50)
        .map(|i| {
            tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Full<bytes::Bytes>>();
                let path = if i % 2 == 0 {
                    "/"
                } else {
                    "/jobs/prod/job-00001"
                };
                let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
                let mut pages = 0u64;
                while Instant::now() < stop {
                    if let Ok(response) = client.get(uri.clone()).await {
                        let _ = response.into_body().collect().await;
                        pages += 1;
                    }
                }
                pages
            })
        })
        .collect();
    let beside = commits(30).await;
    let mut pages = 0;
    for reader in readers {
        pages += reader.await.unwrap();
    }
    eprintln!("50 readers: {pages} pages in 30 s");
    supervisor.stop(Duration::from_secs(5)).await;
    (alone, beside)
}
