//! The database on real files: migrations, a recorded lifecycle read back through
//! `status`, `history` and plain SQL (the README's queries), WAL readers, secrets, modes.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use iewatch::{
    detect::detect_changes,
    model::JobSnapshot,
    source::classic_wire::Job,
    store::{Observed, Store, Writer},
};

use common::to_ops;

/// (account, job, drive, state, copy status) of the README's failed-drives query.
type FailedDrive = (String, String, String, Option<String>, Option<String>);

use common::iewatch_cli as iewatch;

#[tokio::test]
async fn migrate_reopen_record_and_read_back_through_status_history_and_sql() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state").join("iewatch.db");
    let store = Writer::open_file(&db).await.unwrap();
    store.close().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let store = Writer::open_file(&db).await.unwrap(); // reopening re-runs no migration
    let start = SystemTime::now() - Duration::from_secs(86_400);
    let recorded = common::record_lifecycle(&store, "MySampleJob", to_ops, false, |i| {
        start + Duration::from_secs(3600 * i as u64)
    })
    .await;
    assert_eq!(recorded.len(), 32);

    // A --since beyond the start of time reads from 1970, not a panic.
    let all = iewatch(&["history", "MySampleJob", "--since", "500000000000y"], &db);
    assert_eq!(all.lines().count(), 32, "{all}");

    let status = store.status().await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state.as_deref(), Some("Completed"));
    assert_eq!(status[0].percent_complete, Some(100));
    assert_eq!(status[0].drives.len(), 2);
    store.close().await;

    let text = iewatch(&["status"], &db);
    let line = text.lines().nth(1).unwrap();
    assert!(line.starts_with("prod/MySampleJob  Import  Completed  100%  2 drives: 1 ShippedBack, 1 ShippedBack (CompletedWithErrors)"), "{text}");
    assert!(text.lines().next().unwrap().starts_with("JOB "), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&iewatch(&["status", "--json"], &db)).unwrap();
    assert_eq!(json[0]["drives"][1]["copy_status"], "CompletedWithErrors");

    let history = iewatch(&["history", "MySampleJob"], &db);
    assert_eq!(history.lines().count(), 32);
    assert!(
        history
            .lines()
            .next()
            .unwrap()
            .contains("first seen, state Creating"),
        "{history}"
    );
    let error_line = history
        .lines()
        .find(|l| l.contains("CompletedWithErrors") && l.contains("copy status"))
        .unwrap();
    assert!(
        error_line.contains("drive 9WM3NZFS") && error_line.ends_with("[error]"),
        "{error_line}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&iewatch(&["history", "prod/MySampleJob", "--json"], &db)).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 32);
    assert!(
        entries
            .windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()),
        "oldest first"
    );
    assert_eq!(
        entries[0]["details"]["details"]["drives"][1]["drive_id"],
        "9WM3NZFS"
    );
    // Observations were recorded hourly from a day ago: the last (Completed, both drives
    // shipped back) 15 h ago, the one before 16 h ago.
    let recent = iewatch(&["history", "MySampleJob", "--since", "15h 30m"], &db);
    assert_eq!(recent.lines().count(), 4, "{recent}");
    assert!(recent.contains("state Packaging → Completed"), "{recent}");
    let unknown = Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["history", "Nope", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no job named \"Nope\""));

    // The README's queries, verbatim in spirit.
    let store = Store::open_existing(&db).await.unwrap();
    let stays: Vec<(String, String, f64)> = sqlx::query_as(
        "WITH stays AS (
           SELECT j.account || '/' || j.name AS job, e.to_value AS state, e.observed_at AS entered,
                  LEAD(e.observed_at) OVER (PARTITION BY e.job_id ORDER BY e.id) AS left_at
           FROM events e JOIN jobs j ON j.id = e.job_id
           WHERE e.type IN ('job.first_seen', 'job.state_changed'))
         SELECT job, state, ROUND((julianday(COALESCE(left_at, 'now')) - julianday(entered)) * 24, 2) AS hours
         FROM stays ORDER BY job, entered",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let states: Vec<&str> = stays.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        states,
        [
            "Creating",
            "Shipping",
            "Received",
            "Transferring",
            "Packaging",
            "Completed"
        ]
    );
    assert!(
        (stays[0].2 - 1.0).abs() < 0.01,
        "Creating lasted one recorded hour: {stays:?}"
    );

    let failed_drives: Vec<FailedDrive> = sqlx::query_as(
        "SELECT j.account, j.name AS job, d.drive_id, d.state, d.copy_status
         FROM drives d JOIN jobs j ON j.id = d.job_id
         WHERE d.copy_status NOT IN ('None', 'InProgress', 'Completed', 'CompletedWithWarnings')",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(failed_drives.len(), 1);
    assert_eq!(failed_drives[0].2, "9WM3NZFS");

    let curve: Vec<(String, i64)> = sqlx::query_as(
        "SELECT e.observed_at, CAST(e.to_value AS INTEGER) AS percent
         FROM events e JOIN jobs j ON j.id = e.job_id
         WHERE j.name = 'MySampleJob' AND e.drive_id = '9WM3NZFS' AND e.type = 'drive.progress'
         ORDER BY e.id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(curve.iter().map(|c| c.1).collect::<Vec<_>>(), [5, 40, 100]);
    let recent_errors: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE severity = 'error' AND observed_at > datetime('now', '-2 day')",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(recent_errors, 1, "timestamps compare with datetime()");
    let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        deliveries, 32,
        "one outbox row per event and webhook, in the same transactions"
    );
}

#[tokio::test]
async fn a_reader_with_its_own_connection_sees_consistent_data_while_a_writer_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let writer = Writer::open_file(&db).await.unwrap();
    let reader = Store::open_existing(&db).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let reading = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.is_cancelled() && reads < 100_000 {
                let mut tx = reader.pool().begin().await.unwrap();
                let state: Option<Option<String>> =
                    sqlx::query_scalar("SELECT state FROM jobs WHERE name = 'MySampleJob'")
                        .fetch_optional(&mut *tx)
                        .await
                        .unwrap();
                let last_transition: Option<String> = sqlx::query_scalar(
                    "SELECT to_value FROM events WHERE type IN ('job.first_seen', 'job.state_changed') ORDER BY id DESC LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await
                .unwrap();
                let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                // A half-written observation would break one of these.
                assert_eq!(
                    state.flatten(),
                    last_transition,
                    "job row and its events disagree"
                );
                assert_eq!(events, outbox, "events without their outbox rows");
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    // Three rounds of the lifecycle (each round goes back to Creating), while the reader reads.
    for _ in 0..3 {
        common::record_lifecycle(&writer, "MySampleJob", to_ops, false, |_| SystemTime::now())
            .await;
    }
    stop.cancel();
    let reads = reading.await.unwrap();
    assert!(reads > 0);
}

#[tokio::test]
async fn bitlocker_keys_of_the_sample_are_absent_from_the_file_unless_opted_in() {
    let sample: Job = serde_json::from_str(common::SAMPLE_JOB).unwrap();
    let key = "259358-100188-581471-154165-090552-296406-410091-426844";
    for opted_in in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("iewatch.db");
        let store = Writer::open_file(&db).await.unwrap();
        let job = store.load_job("prod", "MySampleJob").await.unwrap();
        let (snapshot, document) = sample.clone().into_parts();
        let events = detect_changes(None, &snapshot);
        store
            .record_observation(Observed {
                job: job.id,
                snapshot: &snapshot,
                document: &document.render(opted_in),
                etag: None,
                last_modified: None,
                memory: &Default::default(),
                events: &events,
                outbox: &[],
                at: SystemTime::now().into(),
            })
            .await
            .unwrap();
        // Look at the raw bytes before and after the WAL is checkpointed into the file.
        let bytes = |path: &Path| std::fs::read(path).unwrap_or_default();
        let contains = |haystack: &[u8]| haystack.windows(key.len()).any(|w| w == key.as_bytes());
        let in_wal = contains(&bytes(&dir.path().join("iewatch.db-wal")));
        store.close().await;
        let in_file = contains(&bytes(&db));
        assert_eq!(in_wal || in_file, opted_in, "opted_in = {opted_in}");
        if !opted_in {
            let store = Store::open_existing(&db).await.unwrap();
            let stored: String = sqlx::query_scalar("SELECT snapshot FROM jobs")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert!(
                stored.contains("B306C4B34DAA0E99957A4B9C779D2FA2"),
                "the rest of the document is kept"
            );
        }
    }
}

#[tokio::test]
async fn a_store_opened_for_reading_starts_no_task() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let writer = Writer::open_file(&db).await.unwrap();
    let recorded = common::record_lifecycle(&writer, "MySampleJob", to_ops, false, |i| {
        SystemTime::now() - Duration::from_secs(3600 * (40 - i as u64))
    })
    .await;
    assert!(!recorded.is_empty());
    writer.close().await;
    drop(writer);
    let runtime = tokio::runtime::Handle::current().metrics();
    // A store's tasks end with its last handle; wait (bounded) until they have.
    let all_ended = || async {
        for _ in 0..200 {
            if runtime.num_alive_tasks() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} task(s) outlived their store", runtime.num_alive_tasks());
    };
    all_ended().await;

    // The pool's own tasks are sqlx's; a store that writes adds the writer and its
    // watcher to them, one opened for reading (`status`, `history`, the page) adds none.
    let writer = Writer::open_file(&db).await.unwrap();
    let with_writer = runtime.num_alive_tasks();
    writer.close().await;
    drop(writer);
    all_ended().await;
    let reader = Store::open_existing(&db).await.unwrap();
    assert_eq!(reader.status().await.unwrap().len(), 1);
    // A connection being opened may hold a task of the pool's for a moment (seen on a
    // loaded machine): a reader's count must come down, a writer's never would.
    let settled = common::wait_until(Duration::from_secs(5), || {
        runtime.num_alive_tasks() + 2 <= with_writer
    })
    .await;
    assert!(
        settled,
        "a reader runs {} task(s), a writer {with_writer}",
        runtime.num_alive_tasks()
    );
    reader.close().await;
}

#[tokio::test]
async fn status_on_a_missing_database_is_a_clear_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nothing-here.db");
    let output = Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["status", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no such file"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!db.exists());
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_a_bad_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let snapshot: JobSnapshot =
        serde_json::from_str::<iewatch::source::classic_wire::Job>(common::SAMPLE_JOB)
            .unwrap()
            .into_snapshot();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..60 {
        let store = store.clone();
        let snapshot = snapshot.clone();
        writers.spawn(async move {
            let job = if i == 30 {
                iewatch::store::JobId(999_999) // no such job: its events cannot be inserted
            } else {
                store
                    .load_job("prod", &format!("job-{i}"))
                    .await
                    .unwrap()
                    .id
            };
            let written = common::record_first_sight(&store, job, &snapshot, to_ops).await;
            (i, written)
        });
    }
    while let Some(joined) = writers.join_next().await {
        let (i, written) = joined.unwrap();
        assert_eq!(written.is_err(), i == 30, "write {i}: {written:?}");
    }
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!((events, outbox), (59, 59));
}

#[tokio::test]
async fn the_lanes_migration_picks_up_deliveries_queued_by_the_first_release() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    // The database as the first release left it: schema 0001 with alerts still pending.
    let mut first_release =
        sqlx::migrate::Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
            .await
            .unwrap();
    first_release.migrations = std::borrow::Cow::Owned(first_release.migrations[..1].to_vec());
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    first_release.run(&pool).await.unwrap();
    for statement in [
        "INSERT INTO jobs (id, account, name) VALUES (1, 'prod', 'A'), (2, 'prod', 'B')",
        "INSERT INTO events (id, job_id, type, observed_at, severity)
         VALUES (1, 1, 'job.progress', '2026-01-01 00:00:00.000', 'info'),
                (2, 1, 'job.progress', '2026-01-01 00:00:01.000', 'info'),
                (3, 2, 'job.progress', '2026-01-01 00:00:02.000', 'info')",
        "INSERT INTO deliveries (event_id, job_id, webhook, created_at, next_attempt_at, delivered_at)
         VALUES (1, 1, 'ops', '2026-01-01 00:00:00.000', '2026-01-01 00:05:00.000', NULL),
                (2, 1, 'ops', '2026-01-01 00:00:01.000', '2026-01-01 00:00:01.000', NULL),
                (3, 2, 'ops', '2026-01-01 00:00:02.000', '2026-01-01 00:00:02.000', '2026-01-01 00:00:03.000')",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Writer::open_file(&db).await.unwrap();
    let lanes = store.lanes("ops", 10).await.unwrap();
    assert_eq!(lanes.len(), 1, "one lane: job A; job B has nothing pending");
    assert_eq!(lanes[0].0, iewatch::store::JobId(1));
    assert_eq!(
        lanes[0].1.sql_text(),
        "2026-01-01 00:05:00.000",
        "due when its oldest pending delivery is"
    );
    let queued = store
        .lane_deliveries("ops", iewatch::store::JobId(1), 10)
        .await
        .unwrap();
    assert_eq!(
        queued.iter().map(|d| d.event.id).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[tokio::test]
async fn a_hand_edited_memory_row_is_taken_as_empty_said_and_stops_no_other_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iewatch.db");
    let store = Writer::open_file(&path).await.unwrap();
    for name in ["Broken", "Negative", "Huge", "Fine"] {
        store.load_job("prod", name).await.unwrap();
    }
    for (name, clocks, terminal_since) in [
        ("Broken", "{not json", None),
        ("Negative", "{\"state_since\":-5}", Some("yesterday-ish")),
        (
            "Huge",
            "{\"state_since\":18446744073709551615,\"eta\":18446744073709551615,\"created\":253402300800}",
            Some("10000-01-01 00:00:00.000"),
        ),
    ] {
        sqlx::query("UPDATE jobs SET state = 'Transferring', clocks = $1, terminal_since = $2 WHERE name = $3")
            .bind(clocks)
            .bind(terminal_since)
            .bind(name)
            .execute(store.pool())
            .await
            .unwrap();
    }
    // The daemon's view: each job loads, the damage said, the memory safe.
    let broken = store.load_job("prod", "Broken").await.unwrap();
    assert_eq!(broken.memory.clocks, Default::default());
    assert!(
        broken.damaged[0].contains("jobs.clocks"),
        "{:?}",
        broken.damaged
    );
    let negative = store.load_job("prod", "Negative").await.unwrap();
    assert_eq!(negative.damaged.len(), 2, "{:?}", negative.damaged);
    assert!(negative.memory.terminal_since.is_none());
    let huge = store.load_job("prod", "Huge").await.unwrap();
    assert!(
        huge.damaged.iter().any(|d| d.contains("terminal_since")),
        "{:?}",
        huge.damaged
    );
    assert!(store
        .load_job("prod", "Fine")
        .await
        .unwrap()
        .damaged
        .is_empty());
    // `status` shows every job, the damaged ones said, and never panics on huge times.
    let jobs = store.status().await.unwrap();
    assert_eq!(jobs.len(), 4);
    store.close().await;
    let (ok, said) = common::iewatch_output(&["status", "--database", path.to_str().unwrap()]);
    assert!(ok, "{said}");
    for name in ["prod/Broken", "prod/Negative", "prod/Huge", "prod/Fine"] {
        assert!(said.contains(name), "{name}: {said}");
    }
    assert!(said.contains("warning: prod/Broken: jobs.clocks"), "{said}");
    assert!(!said.contains("warning: prod/Fine"), "{said}");
    let (ok, said) =
        common::iewatch_output(&["status", "--json", "--database", path.to_str().unwrap()]);
    assert!(ok && said.contains("\"damaged\""), "{said}");
}

/// The daemon on a database whose memory row of the job was edited by hand: the job's
/// memory is reset, recorded in its history as `job.memory_reset` and sent, `/healthz`
/// (still 200) names it, the row is repaired, and the watch goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_memory_row_is_reset_recorded_sent_and_named_by_healthz() {
    use common::{Receiver, Reply};
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_simulator(common::scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(std::time::Duration::ZERO));
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let db = dir.path().join("iewatch.db");
    let store = Writer::open_file(&db).await.unwrap();
    store.load_job("sim", "MySampleJob").await.unwrap();
    sqlx::query("UPDATE jobs SET clocks = '{not json' WHERE name = 'MySampleJob'")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let addr = format!("127.0.0.1:{}", common::free_port());
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\n\n[http]\nlisten = \"{addr}\"\n\n{}\n[[job]]\naccount = \"sim\"\nname = \"MySampleJob\"\n\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\n",
            db.display(),
            sim.account_block("sim"),
            hook.url()
        ),
    )
    .unwrap();
    let daemon = common::RunningDaemon::start(&config).await;
    let sent = common::wait_until(std::time::Duration::from_secs(15), || {
        hook.received()
            .iter()
            .any(|r| r.json()["type"] == "job.memory_reset")
    })
    .await;
    let health = common::http_get(&addr, "/healthz").await;
    let first_seen = common::wait_until(std::time::Duration::from_secs(15), || {
        hook.received()
            .iter()
            .any(|r| r.json()["type"] == "job.first_seen")
    })
    .await;
    daemon.stop().await;
    assert!(sent, "job.memory_reset sent");
    let reset = hook
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|b| b["type"] == "job.memory_reset")
        .unwrap();
    assert_eq!(reset["data"]["severity"], "warning", "{reset}");
    assert!(
        reset["data"]["damaged"][0]
            .as_str()
            .is_some_and(|d| d.contains("jobs.clocks") && d.contains("{not json")),
        "{reset}"
    );
    let (status, body) = health.expect("/healthz answers");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ok\n")
            && body.contains("memory reset: sim/MySampleJob at ")
            && body.contains("jobs.clocks"),
        "{body}"
    );
    assert!(first_seen, "the job is watched on");
    let events = common::event_list(&db, "MySampleJob").await;
    assert_eq!(events[0].0, "job.memory_reset", "{events:?}");
    let (ok, said) = common::iewatch_output(&["status", "--database", db.to_str().unwrap()]);
    assert!(
        ok && !said.contains("warning:"),
        "the row is repaired: {said}"
    );
}
