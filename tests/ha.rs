//! PostgreSQL and high availability (issue 20), on a real PostgreSQL server started by
//! the test (see `common::postgres`): the commands read a PostgreSQL database exactly as
//! they read SQLite; the lease fences a leader that lost it; and two or three real
//! `iewatch run` processes on one database, the leader SIGKILLed at seeded moments, cut
//! off the database, or paused past its lease, record every change the simulator served
//! exactly once and deliver every alert, never under two ids.

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use common::{
    event_list, postgres::Cluster, scenario, start_simulator, wait_for, DaemonProcess, Receiver,
    Reply,
};
use iewatch::store::{lease, Attempt, Database, Store, StoreError, Writer};
use rand::{Rng as _, SeedableRng as _};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

use common::to_ops;

/// `iewatch ARGS -c CONFIG`: its stdout (asserting success).
fn cli(args: &[&str], config: &Path) -> String {
    common::iewatch_cli_on(args, "-c", config)
}

/// A config naming only a database (what the reading commands need).
fn database_config(dir: &Path, name: &str, database: &Database) -> PathBuf {
    let text = match database {
        Database::File(path) => format!("[daemon]\ndatabase = \"{}\"\n", path.display()),
        Database::Postgres(pg) => format!(
            "[daemon]\ndatabase = \"{}\"\ndatabase_password_file = \"{}\"\n",
            pg.url,
            pg.password_file.as_ref().unwrap().display()
        ),
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_read_postgres_exactly_as_they_read_sqlite() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let postgres = cluster.create_database("commands").await;
    let sqlite = Database::File(dir.path().join("iewatch.db"));
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let mut configs = Vec::new();
    for (name, database) in [("sqlite.toml", &sqlite), ("postgres.toml", &postgres)] {
        let store = Writer::open(database).await.unwrap();
        common::record_lifecycle(&store, "MySampleJob", to_ops, false, |i| {
            start + Duration::from_secs(600 * i as u64)
        })
        .await;
        // Every alert delivered, as a notifier would record it.
        let job = store.load_job("prod", "MySampleJob").await.unwrap().id;
        let ended = iewatch::decide::Memory {
            terminal_since: Some((start + Duration::from_secs(600 * 31)).into()),
            ..Default::default()
        };
        store
            .record_bookkeeping(
                job,
                &ended,
                &[],
                &[],
                (start + Duration::from_secs(600 * 31)).into(),
            )
            .await
            .unwrap();
        let lane = store.lane_deliveries("ops", job, 100).await.unwrap();
        let delivered: Vec<_> = lane
            .iter()
            .map(|item| (item.id, Attempt::Delivered { status: 204 }))
            .collect();
        store
            .record_lane(
                "ops",
                job,
                &delivered,
                (start + Duration::from_secs(7200)).into(),
            )
            .await
            .unwrap();
        // A drive's error log, recorded once however often it is offered.
        let log = r#"<DriveLog Version="2014-11-01"><DriveId>9WM3NZFS</DriveId><Blob Status="FileNameInvalid"><BlobPath>p/a?.jpg</BlobPath><FilePath>\p\a?.jpg</FilePath></Blob><Status>CompletedWithErrors</Status></DriveLog>"#;
        let summary =
            iewatch::errorlog::summarise(log.as_bytes(), iewatch::errorlog::Limits::default())
                .unwrap();
        let url = "https://xttest.blob.core.windows.net/waimportexport/waies/MySampleJob_9WM3NZFS_error.xml";
        let report = iewatch::errorlog::Report::read(url, &summary, 50);
        let event = iewatch::events::Event::notice(
            iewatch::events::EventType::DriveErrors,
            Some(&iewatch::model::DriveId::new("9WM3NZFS".to_owned())),
            report.headline(),
            iewatch::model::Severity::Warning,
            serde_json::json!(report),
        );
        let at = start + Duration::from_secs(600 * 32);
        let mut written = Vec::new();
        for _ in 0..2 {
            let ids = store
                .record_error_log(job, &report, "9WM3NZFS", &event, &[], at.into())
                .await
                .unwrap();
            written.push(ids.len());
        }
        assert_eq!(written, [1, 0], "{name}: one event per log");
        store.close().await;
        configs.push(database_config(dir.path(), name, database));
    }
    let (on_sqlite, on_postgres) = (&configs[0], &configs[1]);
    for args in [
        &["status", "--json"][..],
        &["history", "MySampleJob", "--json"],
        &["history", "prod/MySampleJob"],
        &["deliveries", "--json"],
        &["errors", "MySampleJob", "--json"],
    ] {
        let (a, b) = (cli(args, on_sqlite), cli(args, on_postgres));
        assert!(a.len() > 100, "{args:?}: {a}");
        assert_eq!(a, b, "{args:?} differs between SQLite and PostgreSQL");
    }
    let events = event_list(&postgres, "MySampleJob").await;
    assert_eq!(events.len(), 33, "{events:?}");
    assert_eq!(events, event_list(&sqlite, "MySampleJob").await);
    // What the status page reads, the same on both.
    let mut pages = Vec::new();
    for database in [&sqlite, &postgres] {
        let store = Store::open_existing_database(database).await.unwrap();
        let job = store.status_of("prod", "MySampleJob").await.unwrap();
        let page = store
            .timeline_page("prod", "MySampleJob", None, 10)
            .await
            .unwrap();
        let older = store
            .timeline_page("prod", "MySampleJob", page.older, 10)
            .await
            .unwrap();
        let chart = store.chart_events("prod", "MySampleJob").await.unwrap();
        let ids = |events: &[iewatch::store::EventRecord]| {
            events
                .iter()
                .map(|e| (e.id, e.event_type))
                .collect::<Vec<_>>()
        };
        pages.push((
            job.map(|j| j.name),
            ids(&page.events),
            ids(&older.events),
            older.older.is_some(),
            ids(&chart),
        ));
        store.close().await;
    }
    assert_eq!(pages[0].1.len(), 10);
    assert!(!pages[0].4.is_empty());
    assert_eq!(
        pages[0], pages[1],
        "the page's reads differ between SQLite and PostgreSQL"
    );

    // The README's queries for PostgreSQL, verbatim.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = |from: &str, to: &str| {
        let start = readme.find(from).expect("README section");
        let end = start + readme[start..].find(to).expect("section end");
        readme[start..end]
            .split("```sql\n")
            .skip(1)
            .map(|block| block.split("```").next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let unchanged = section("### Example queries", "## Performance");
    let postgres_queries = section("### The example queries on PostgreSQL", "## Reliability");
    assert_eq!((unchanged.len(), postgres_queries.len()), (5, 3));
    let mut connection = cluster.connect("commands").await;
    let mut results = Vec::new();
    for sql in [
        &postgres_queries[0],
        &unchanged[1],
        &unchanged[2],
        &postgres_queries[1],
        &postgres_queries[2],
    ] {
        results.push(sqlx::query(sql).fetch_all(&mut connection).await.unwrap());
    }
    let result = |i: usize| &results[i];
    let stays = result(0);
    let states: Vec<String> = stays.iter().map(|r| sqlx::Row::get(r, "state")).collect();
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
    assert_eq!(result(1).len(), 1, "one drive ended with errors");
    let curve = result(2);
    let percents: Vec<i32> = curve.iter().map(|r| sqlx::Row::get(r, "percent")).collect();
    assert_eq!(percents, [5, 40, 100]);
    assert!(result(3).is_empty(), "the lifecycle's error is months old");

    // The manual commands write to PostgreSQL too.
    for config in &configs {
        assert!(cli(&["redeliver", "3"], config).contains("queued again"));
        cli(&["ack", "MySampleJob", "--note", "seen"], config);
        cli(&["mute", "MySampleJob", "--for", "2d"], config);
    }
    let pending = |text: String| {
        let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "pending")
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(pending(cli(&["deliveries", "--json"], on_postgres)), [3]);
    assert_eq!(
        pending(cli(&["deliveries", "--json"], on_sqlite)),
        pending(cli(&["deliveries", "--json"], on_postgres))
    );
    let acked = cli(&["history", "MySampleJob", "--json"], on_postgres);
    assert!(acked.contains("job.acknowledged"), "{acked}");
    let status = cli(&["status", "--json"], on_postgres);
    assert!(status.contains("\"muted_until\": \"2"), "{status}");

    // `prune` finds and removes the same on both (the lifecycle ended months ago), all but
    // the alert queued again above, which is not delivered yet, and the newest event
    // (whose id must never be handed out again).
    let jobs_of = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("prod/"))
            .map(str::to_owned)
            .collect()
    };
    for args in [
        &["prune", "--dry-run", "--retention", "1d"][..],
        &["prune", "--retention", "1d"],
    ] {
        let (a, b) = (cli(args, on_sqlite), cli(args, on_postgres));
        assert_eq!(jobs_of(a.clone()).len(), 1, "{args:?}: {a}");
        assert!(
            a.contains("prod/MySampleJob")
                && a.contains(" 32 event(s)")
                && a.contains("1 alert(s) not delivered yet are kept"),
            "{a}"
        );
        assert_eq!(jobs_of(a), jobs_of(b), "{args:?} differs");
    }
    assert_eq!(event_list(&postgres, "MySampleJob").await.len(), 2);
    assert_eq!(event_list(&sqlite, "MySampleJob").await.len(), 2);
    assert_eq!(pending(cli(&["deliveries", "--json"], on_postgres)), [3]);
    let kept = cli(&["status", "--json"], on_postgres);
    assert!(
        kept.contains("\"Completed\""),
        "the job's row stays: {kept}"
    );

    // A wrong password is a clear error, not a hang.
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let Database::Postgres(pg) = &postgres else {
        unreachable!()
    };
    let bad = database_config(
        dir.path(),
        "bad.toml",
        &Database::parse(&pg.url, Some(wrong)),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["status", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_the_urls_to_ask_for_and_a_wrong_ca_is_refused_clearly() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    cluster.create_database("tls").await;
    let base = cluster.url_via(cluster.port, "tls", "iewatch-tls");
    let with = |params: String| {
        Database::parse(&format!("{base}&{params}"), Some(cluster.password_file()))
    };
    let ssl_in_use = |database: Database| async move {
        let store = Store::open_existing_database(&database).await?;
        let ssl: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(store.pool())
        .await?;
        store.close().await;
        Ok::<bool, StoreError>(ssl == 1)
    };
    let verified = format!(
        "sslmode=verify-full&sslrootcert={}",
        cluster.ca_file().display()
    );
    assert!(
        ssl_in_use(with(verified)).await.unwrap(),
        "verify-full with the CA: TLS"
    );
    assert!(
        !ssl_in_use(with("sslmode=disable".into())).await.unwrap(),
        "disable: plain"
    );
    // Another CA: refused, saying why, before any password is sent.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let stranger = iewatch::simulator::certs::CertificateAuthority::generate("a stranger").unwrap();
    std::fs::write(&other, stranger.cert_pem()).unwrap();
    let refused = ssl_in_use(with(format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    )))
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_lease_writes_nothing_and_learns_it() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database("fencing").await;
    let lease_time = Duration::from_secs(3);
    let old = Writer::open(&database).await.unwrap();
    let new = Writer::open(&database).await.unwrap();

    let first = lease::try_acquire(old.pool(), "old:1", lease_time)
        .await
        .unwrap();
    assert_eq!(first, Some(1));
    assert_eq!(
        lease::try_acquire(new.pool(), "new:2", lease_time)
            .await
            .unwrap(),
        None,
        "a live lease is not taken"
    );
    old.lead(1);
    let job = old.load_job("prod", "MySampleJob").await.unwrap().id;
    let snapshot = common::first_snapshot("import-lifecycle.toml");
    common::record_first_sight(&old, job, &snapshot, to_ops)
        .await
        .expect("the leader writes");

    // The old leader pauses past its lease; a standby takes over.
    cluster
        .admin(
            "fencing",
            "UPDATE leader SET expires_at = now() - interval '1 second'",
        )
        .await;
    assert_eq!(
        lease::try_acquire(new.pool(), "new:2", lease_time)
            .await
            .unwrap(),
        Some(2)
    );
    new.lead(2);
    let holder = lease::holder(new.pool()).await.unwrap().unwrap();
    assert_eq!(
        (holder.holder.as_str(), holder.epoch, holder.live),
        ("new:2", 2, true)
    );

    // Everything the old one tries is refused, and its lease keeper says why.
    let refused = common::record_first_sight(&old, job, &snapshot, to_ops).await;
    assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");
    assert!(old.writer_stopped().await.contains("lost the leader lease"));
    let lane = old
        .record_lane("ops", job, &[], SystemTime::now().into())
        .await;
    assert!(matches!(lane, Err(StoreError::LeaseLost)), "{lane:?}");
    // The refusals (the check rides in the BEGIN's round trip) left no session inside a
    // failed transaction: the old daemon's connections are as clean as before.
    let aborted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction (aborted)'",
    )
    .fetch_one(new.pool())
    .await
    .unwrap();
    assert_eq!(aborted, 0, "a session left in a failed transaction");
    for _ in 0..4 {
        let read: Result<i64, _> = sqlx::query_scalar("SELECT 1").fetch_one(old.pool()).await;
        assert!(read.is_ok(), "{read:?}");
    }
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        iewatch::leadership::hold(old.clone(), 1, lease_time),
    )
    .await
    .expect("the old leader learns within two renewals");
    assert!(lost.contains("another iewatch took over"), "{lost}");

    // A leader frozen inside a transaction holds the lease row's lock, which a takeover
    // waits for: PostgreSQL ends such a session after 5 s idle in it, and then the
    // takeover goes through.
    cluster
        .admin(
            "fencing",
            "UPDATE leader SET expires_at = now() - interval '1 second'",
        )
        .await;
    let mut frozen = new.pool().begin().await.unwrap();
    sqlx::query("SELECT epoch FROM leader WHERE id = 1 FOR SHARE")
        .fetch_one(&mut *frozen)
        .await
        .unwrap();
    let third = Writer::open(&database).await.unwrap();
    let asked = Instant::now();
    let mut epoch = None;
    while epoch.is_none() && asked.elapsed() < Duration::from_secs(12) {
        epoch = tokio::time::timeout(
            Duration::from_secs(2),
            lease::try_acquire(third.pool(), "third:3", lease_time),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    }
    assert_eq!(epoch, Some(3), "taken over once the frozen session ended");
    assert!(
        asked.elapsed() < Duration::from_secs(9),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        frozen.commit().await.is_err(),
        "the frozen transaction was ended"
    );
    third.close().await;
    new.lead(3);

    // The new leader writes; the old one's attempt left nothing.
    let events = common::record_first_sight(&new, job, &snapshot, to_ops)
        .await
        .expect("the new leader writes");
    assert!(!events.is_empty());
    let rows = event_list(&database, "MySampleJob").await;
    assert_eq!(
        rows.len(),
        2 * events.len(),
        "the old leader's first sight and the new one's"
    );

    // Nor does the old leader send what the database cannot fence: its notifier, past
    // its own lease, leaves the alerts to the new leader's.
    old.lease_held_until(Instant::now());
    let receiver = Receiver::start(|_| Reply::Status(204)).await;
    let hooks = iewatch::config::Config::parse(
        Path::new("hooks.toml"),
        &format!(
            "[[webhook]]\nname = \"ops\"\nurl = \"{}\"\nretry_initial = \"50ms\"\n",
            receiver.url()
        ),
    )
    .unwrap()
    .webhooks;
    let notify = |store: &Writer| {
        let (waker, wake) = iewatch::notifier::Waker::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(iewatch::notifier::run(
            store.clone(),
            hooks.clone(),
            wake,
            iewatch::telemetry::Telemetry::new(),
            stop.clone(),
        ));
        waker.wake();
        (waker, stop, task)
    };
    let old_notifier = notify(&old);
    // (Nothing to wait for when nothing is to happen: a second is many rounds of it.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        receiver.received().is_empty(),
        "the old leader sent {} alert(s) after its lease",
        receiver.received().len()
    );
    let new_notifier = notify(&new);
    assert!(
        wait_for(Duration::from_secs(15), || async {
            receiver.received().len() >= rows.len()
        })
        .await,
        "the new leader delivers every alert: {} of {}",
        receiver.received().len(),
        rows.len()
    );
    for (_, stop, task) in [old_notifier, new_notifier] {
        stop.cancel();
        task.await.unwrap();
    }
    old.close().await;
    new.close().await;
}

/// The import lifecycle served by a simulator at its start, and a webhook receiver.
struct Lifecycle {
    dir: tempfile::TempDir,
    scenario: iewatch::simulator::Scenario,
    timeline: iewatch::simulator::scenario::Timeline,
    /// When each version of the job starts, in the simulator's time.
    versions: Vec<Duration>,
    sim: iewatch::simulator::RunningSimulator,
    receiver: Receiver,
}

impl Lifecycle {
    async fn start() -> Lifecycle {
        let dir = tempfile::tempdir().unwrap();
        let scenario = scenario("import-lifecycle.toml");
        let timeline = scenario.compile().unwrap().remove(0);
        let versions = timeline.versions.iter().map(|v| v.since).collect();
        let sim = start_simulator(scenario.clone(), dir.path()).await;
        sim.set_time(Some(Duration::ZERO));
        let receiver = Receiver::start(|_| Reply::Status(200)).await;
        Lifecycle {
            dir,
            scenario,
            timeline,
            versions,
            sim,
            receiver,
        }
    }
}

/// A daemon's config on `url`: the lifecycle job, fast polls, its own `[http]`, the
/// webhook. Returns the file and the listen address.
fn daemon_config(
    dir: &Path,
    name: &str,
    sim: &iewatch::simulator::RunningSimulator,
    (url, password_file): (&str, &Path),
    lease_time: &str,
    receiver: &Receiver,
) -> (PathBuf, String) {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let text = format!(
        "[daemon]\ndatabase = \"{url}\"\ndatabase_password_file = \"{}\"\nlease = \"{lease_time}\"\n\
         poll_interval = \"100ms\"\npoll_interval_by_state = {{ Creating = \"100ms\", Completed = \"100ms\" }}\n\
         request_timeout = \"5s\"\n\n[http]\nlisten = \"{addr}\"\n\n{}\n\
         [[job]]\naccount = \"sim\"\nname = \"MySampleJob\"\n\n\
         [[webhook]]\nname = \"ops\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n",
        password_file.display(),
        sim.account_block("sim"),
        receiver.url()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    (path, addr)
}

/// `iewatch run -c config`, its log (info) appended to `config` with `.log`.
fn daemon(config: &Path) -> common::DaemonCommand {
    common::DaemonCommand::new(config).log_to("info", &config.with_extension("log"))
}

/// [`daemon`], started.
fn spawn(config: &Path) -> DaemonProcess {
    DaemonProcess(daemon(config).spawn())
}

/// The last lines of a daemon's log, for a failure message.
fn log_tail(config: &Path) -> String {
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits until `/healthz` at `addr` answers 200 with a body starting `ok: {role}`.
async fn wait_for_role(addr: &str, role: &str, deadline: Duration) -> bool {
    let wanted = format!("ok: {role}");
    wait_for(deadline, || async {
        common::http_get(addr, "/healthz")
            .await
            .is_some_and(|(status, body)| status == 200 && body.starts_with(&wanted))
    })
    .await
}

/// The pid of the live lease's holder.
async fn leader_pid(database: &Database) -> Option<u32> {
    let store = Store::open_existing_database(database).await.ok()?;
    let holder = lease::holder(store.pool()).await.ok().flatten();
    store.close().await;
    let holder = holder.filter(|h| h.live)?;
    holder.holder.rsplit(':').next()?.parse().ok()
}

async fn backlog(database: &Database) -> i64 {
    let store = Store::open_existing_database(database).await.unwrap();
    let pending = store.outbox_backlog().await.unwrap();
    store.close().await;
    pending
}

/// Every change of the lifecycle recorded exactly once; every event delivered, each
/// under one webhook-id (copies of a delivery cut off by a takeover carry the same id
/// and body).
async fn assert_nothing_lost_nothing_doubled(database: &Database, receiver: &Receiver) {
    assert!(
        wait_for(Duration::from_secs(30), || async {
            backlog(database).await == 0
        })
        .await,
        "outbox drained"
    );
    common::assert_import_lifecycle(database, "MySampleJob").await;
    common::assert_each_event_delivered_under_one_id(receiver, common::IMPORT_EVENTS.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_the_leader_sigkilled_at_seeded_moments_lose_nothing_and_double_nothing() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database("sigkill").await;
    let Lifecycle {
        dir,
        scenario,
        timeline,
        versions,
        sim,
        receiver,
    } = Lifecycle::start().await;
    let url = cluster.url_via(cluster.port, "sigkill", "iewatch");
    let password = cluster.password_file();
    let configs: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|name| daemon_config(dir.path(), name, &sim, (&url, &password), "3s", &receiver).0)
        .collect();
    let mut daemons: Vec<DaemonProcess> = configs.iter().map(|c| spawn(c)).collect();
    assert!(
        wait_for(Duration::from_secs(15), || async {
            leader_pid(&database).await.is_some()
        })
        .await,
        "one of three leads"
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261125);
    let mut next_version = 0;
    for kill in 0..5 {
        if next_version < versions.len() {
            if next_version > 0 {
                // A version no daemon lived to see is not a change the simulator served.
                let etag = &timeline.versions[next_version - 1].etag;
                let recorded =
                    common::wait_for_etag(&database, "MySampleJob", etag, Duration::from_secs(20))
                        .await;
                assert!(
                    recorded,
                    "version {} recorded (kill {kill})",
                    next_version - 1
                );
            }
            sim.set_time(Some(versions[next_version]));
            next_version += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..1500))).await;
        let pid = leader_pid(&database).await.expect("a leader");
        let index = daemons
            .iter()
            .position(|d| d.0.id() == Some(pid))
            .expect("the leader is ours");
        daemons[index].0.kill().await.unwrap(); // SIGKILL: no drain, no release
        let killed = Instant::now();
        daemons[index] = spawn(&configs[index]); // systemd's restart: a standby now
        assert!(
            wait_for(Duration::from_secs(15), || async {
                leader_pid(&database).await.is_some_and(|p| p != pid)
            })
            .await,
            "a standby takes over after kill {kill}"
        );
        let took = killed.elapsed();
        eprintln!("kill {kill}: a standby led after {took:?}");
        assert!(
            took <= Duration::from_secs(7),
            "takeover took {took:?}: more than the 3 s lease plus the standby's retry and a start"
        );
    }
    let resume_from = versions[next_version.saturating_sub(1)];
    common::play_versions(
        &sim,
        &scenario,
        &database,
        "MySampleJob",
        resume_from..=Duration::MAX,
    )
    .await;
    assert_nothing_lost_nothing_doubled(&database, &receiver).await;
    // (An exited child keeps its id until it is waited for: ask whether it runs.)
    for (daemon, config) in daemons.iter_mut().zip(&configs) {
        assert!(
            daemon.alive(),
            "{} exited: {:?}\n{}",
            config.display(),
            daemon.0.try_wait(),
            log_tail(config)
        );
    }
    for daemon in daemons {
        daemon.stop().await;
    }
    // The leader gave its lease up as it stopped: nobody needs to wait for it.
    let store = Store::open_existing_database(&database).await.unwrap();
    let holder = lease::holder(store.pool()).await.unwrap().unwrap();
    assert!(!holder.live, "{holder:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_or_paused_hands_over_within_15_s_and_never_writes_again() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database("handover").await;
    let Lifecycle {
        dir,
        scenario,
        versions,
        sim,
        receiver,
        ..
    } = Lifecycle::start().await;
    let password = cluster.password_file();
    // A reaches the database through a proxy that can cut it off; B directly. The
    // default lease (10 s): the documented bound is 15 s.
    let proxy = common::postgres::Proxy::start(cluster.port).await;
    let url_a = cluster.url_via(proxy.port, "handover", "iewatch-a");
    let url_b = cluster.url_via(cluster.port, "handover", "iewatch-b");
    let (config_a, http_a) =
        daemon_config(dir.path(), "a", &sim, (&url_a, &password), "10s", &receiver);
    let (config_b, http_b) =
        daemon_config(dir.path(), "b", &sim, (&url_b, &password), "10s", &receiver);
    let mut a = spawn(&config_a);
    assert!(
        wait_for_role(&http_a, "leader", Duration::from_secs(15)).await,
        "A leads"
    );
    // B tells systemd what it is (STATUS=, seen on a real notify socket).
    let socket_path = dir.path().join("notify-b.sock");
    let notes = common::Notifications::bind(&socket_path);
    let mut b = DaemonProcess(
        daemon(&config_b)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000")
            .spawn(),
    );
    assert!(
        wait_for_role(&http_b, "standby", Duration::from_secs(15)).await,
        "B stands by"
    );
    notes.wait_for("READY=1", 1).await;
    notes.wait_for("STATUS=standby: ", 1).await;
    let page = common::http_get(&http_b, "/")
        .await
        .expect("B's status page")
        .1;
    assert!(page.contains("This instance: standby: "), "{page}");
    let metric = |addr: String| async move {
        common::http_get(&addr, "/metrics").await.map(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with("iewatch_leader "))
                .map(str::to_owned)
        })
    };
    assert_eq!(
        metric(http_a.clone()).await.flatten().as_deref(),
        Some("iewatch_leader 1")
    );
    assert_eq!(
        metric(http_b.clone()).await.flatten().as_deref(),
        Some("iewatch_leader 0")
    );
    let third = versions.len() / 3;
    common::play_versions(
        &sim,
        &scenario,
        &database,
        "MySampleJob",
        Duration::ZERO..=versions[third],
    )
    .await;

    // A loses the database: its connections cut, new ones swallowed.
    proxy.cut();
    let cut = Instant::now();
    assert!(
        wait_for_role(&http_b, "leader", Duration::from_secs(15)).await,
        "B leads within 15 s of the cut: {}\n---- A:\n{}",
        log_tail(&config_b),
        log_tail(&config_a)
    );
    let took = cut.elapsed();
    let status = tokio::time::timeout(Duration::from_secs(20), a.0.wait())
        .await
        .expect("A exits once its lease ran out")
        .unwrap();
    assert!(
        !status.success(),
        "A exits non-zero (systemd restarts it): {status:?}"
    );
    eprintln!("cut off: B led after {took:?}");
    notes
        .wait_for("STATUS=leader (epoch 2): watching 1 jobs", 1)
        .await;
    proxy.restore();
    let a = spawn(&config_a);
    assert!(
        wait_for_role(&http_a, "standby", Duration::from_secs(15)).await,
        "A is back as a standby"
    );
    common::play_versions(
        &sim,
        &scenario,
        &database,
        "MySampleJob",
        versions[third + 1]..=versions[2 * third],
    )
    .await;

    // B freezes past its lease; A takes over; B, thawed, must not write and must exit.
    let pid_b = i32::try_from(b.pid()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid_b, libc::SIGSTOP) }, 0);
    let paused = Instant::now();
    assert!(
        wait_for_role(&http_a, "leader", Duration::from_secs(15)).await,
        "A leads within 15 s of the pause"
    );
    eprintln!("paused: A led after {:?}", paused.elapsed());
    let events_before = event_list(&database, "MySampleJob").await.len();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid_b, libc::SIGCONT) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(15), b.0.wait())
        .await
        .expect("B exits once it learns")
        .unwrap();
    assert!(!status.success(), "{status:?}");
    assert_eq!(
        event_list(&database, "MySampleJob").await.len(),
        events_before,
        "B wrote nothing"
    );
    let log_b = std::fs::read_to_string(config_b.with_extension("log")).unwrap();
    assert!(
        log_b.contains("lost the lease") || log_b.contains("lost the leader lease"),
        "{log_b}"
    );

    common::play_versions(
        &sim,
        &scenario,
        &database,
        "MySampleJob",
        versions[2 * third + 1]..=Duration::MAX,
    )
    .await;
    assert_nothing_lost_nothing_doubled(&database, &receiver).await;
    a.stop().await;
}
