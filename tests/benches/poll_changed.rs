//! poll_changed: every poll brings a change. Changes recorded per second end to end on
//! the store side: detect, route to a webhook, one durable transaction per change (group
//! commit shares the fsync between concurrent jobs), outbox rows. Target: 2,500/s. So that
//! the figure can be read against the disk of any machine, the same run measures the
//! disk's bare commit rate (one-row transactions, `synchronous = FULL`) and prints how
//! many changes each commit carried.
//! The same on PostgreSQL (a durable cluster of the benchmark's own, on loopback) when
//! its server is installed, printed beside SQLite's figures.

mod support;

use std::time::{Duration, Instant, SystemTime};

use iewatch::{
    config::Config,
    detect::detect_changes,
    model::{JobName, JobSnapshot},
    notifier::route,
    source::classic_wire::Job,
    store::{Database, Dialect, Observed, Writer},
};

const MEASURE: Duration = Duration::from_secs(5);
const SAMPLE: &str = include_str!("../fixtures/get-job-sample.json");

fn main() {
    support::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = |name: &str| Database::File(dir.path().join(name));
        let bare = bare_commits(&dir.path().join("bare.db")).await;
        let serial = measure(&sqlite("serial.db"), 1).await;
        let concurrent = measure(&sqlite("concurrent.db"), 64).await;
        let mut figures = vec![
            ("poll_changed_rate", concurrent.0, "changes/s"),
            ("poll_changed_events", concurrent.1, "events/s"),
            ("poll_changed_per_commit", concurrent.2, "changes/commit"),
            ("poll_changed_bare_commit_rate", bare, "commits/s"),
            ("poll_changed_one_job_at_a_time", serial.0, "changes/s"),
        ];
        if let Some(cluster) = support::postgres::Cluster::start_durable() {
            let serial = measure(&cluster.create_database("serial").await, 1).await;
            let concurrent = measure(&cluster.create_database("concurrent").await, 64).await;
            figures.extend([
                ("poll_changed_postgres_rate", concurrent.0, "changes/s"),
                ("poll_changed_postgres_events", concurrent.1, "events/s"),
                (
                    "poll_changed_postgres_per_commit",
                    concurrent.2,
                    "changes/commit",
                ),
                (
                    "poll_changed_postgres_one_job_at_a_time",
                    serial.0,
                    "changes/s",
                ),
            ]);
        }
        support::report("poll_changed", &figures);
    });
}

/// The disk's limit: one-row transactions per second on a SQLite file in WAL mode with
/// `synchronous = FULL` (an fsync each), as the store commits.
async fn bare_commits(path: &std::path::Path) -> f64 {
    use sqlx::{
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
        ConnectOptions as _,
    };
    let mut connection = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(&mut connection)
        .await
        .unwrap();
    let (started, mut commits) = (Instant::now(), 0u64);
    while started.elapsed() < MEASURE / 2 {
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut connection)
            .await
            .unwrap();
        commits += 1;
    }
    commits as f64 / started.elapsed().as_secs_f64()
}

/// (changes/s, events/s, changes per commit) with `jobs` jobs changing concurrently.
async fn measure(database: &Database, jobs: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Writer::open(database).await.unwrap();
    if store.dialect() == Dialect::Postgres {
        // As a leader writes: every commit checks the lease first.
        let lease = iewatch::store::lease::try_acquire(store.pool(), "bench", MEASURE * 4);
        store.lead(
            lease
                .await
                .unwrap()
                .expect("a fresh database has no leader"),
        );
    }
    let webhooks = Config::parse(
        &dir.path().join("w.toml"),
        "[[webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap()
    .webhooks;
    let (base, document): (JobSnapshot, _) =
        serde_json::from_str::<Job>(SAMPLE).unwrap().into_parts();
    let (started, commits_before) = (Instant::now(), store.commits());
    let mut tasks = tokio::task::JoinSet::new();
    for j in 0..jobs {
        let (store, webhooks, base, document) = (
            store.clone(),
            webhooks.clone(),
            base.clone(),
            document.clone(),
        );
        tasks.spawn(async move {
            let name = JobName::new(format!("job-{j}"));
            let id = store.load_job("prod", name.as_str()).await.unwrap().id;
            let mut previous: Option<JobSnapshot> = None;
            let (mut changes, mut events_total) = (0u64, 0u64);
            let mut percent = 0;
            while started.elapsed() < MEASURE {
                percent = (percent + 1) % 101;
                let mut snapshot = base.clone();
                snapshot.percent_complete = Some(percent);
                snapshot.drives[0].percent_complete = Some(percent);
                let events = detect_changes(previous.as_ref(), &snapshot);
                let outbox = route(&webhooks, &name, &events);
                store
                    .record_observation(Observed {
                        job: id,
                        snapshot: &snapshot,
                        // Rendered per write, as the daemon does once per change.
                        document: &document.render(false),
                        etag: None,
                        last_modified: None,
                        memory: &Default::default(),
                        events: &events,
                        outbox: &outbox,
                        at: SystemTime::now().into(),
                    })
                    .await
                    .unwrap();
                changes += 1;
                events_total += events.len() as u64;
                previous = Some(snapshot);
            }
            (changes, events_total)
        });
    }
    let (mut changes, mut events) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (c, e) = done.unwrap();
        changes += c;
        events += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    let commits = store.commits().saturating_sub(commits_before).max(1);
    (
        changes as f64 / seconds,
        events as f64 / seconds,
        changes as f64 / commits as f64,
    )
}
