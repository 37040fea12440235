//! Nothing lost, nothing leaked: the real binary killed at random moments, a webhook
//! endpoint that refuses connections for a long stretch, a database that stops taking
//! writes (a lock held by another process, a read-only file, a full disk), and secrets
//! looked for everywhere iewatch writes or prints; a batch of writes with one that fails.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    event_list, scenario, start_simulator, wait_for, write_config, DaemonProcess, Receiver, Reply,
    WriteStop,
};
use rand::{Rng as _, SeedableRng as _};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FAST: &str = "poll_interval = \"100ms\"\npoll_interval_by_state = { Creating = \"100ms\", Completed = \"100ms\" }";

fn webhook(receiver: &Receiver) -> String {
    format!("\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n", receiver.url())
}

fn fast_config(dir: &Path, sim: &iewatch::simulator::RunningSimulator, extra: &str) -> PathBuf {
    let path = write_config(dir, sim, &["MySampleJob"], &format!("{FAST}\n{extra}"));
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("poll_interval = \"1s\"\n", "");
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_daemon(config: &Path, log: Option<&Path>) -> tokio::process::Child {
    let command = common::DaemonCommand::new(config);
    match log {
        Some(path) => command.log_to("debug", path),
        None => command,
    }
    .spawn()
}

async fn pending_deliveries(db: &Path) -> i64 {
    let store = iewatch::store::Store::open_existing(db).await.unwrap();
    let pending = store.outbox_backlog().await.unwrap();
    store.close().await;
    pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_20_random_moments_the_daemon_records_every_change_once_and_delivers_every_alert()
{
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario("import-lifecycle.toml");
    let timeline = scenario.compile().unwrap().remove(0);
    let versions: Vec<Duration> = timeline.versions.iter().map(|v| v.since).collect();
    let sim = start_simulator(scenario.clone(), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let receiver = Receiver::start(|_| Reply::Status(200)).await;
    let config = fast_config(dir.path(), &sim, &webhook(&receiver));
    let db = dir.path().join("iewatch.db");

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261124);
    let mut next_version = 0;
    for kill in 0..20 {
        let mut daemon = spawn_daemon(&config, None);
        if kill % 2 == 0 && next_version < versions.len() {
            // Move on only once the version being served is recorded: a version no
            // daemon lived to see is not a change the simulator served.
            if next_version > 0 {
                let etag = &timeline.versions[next_version - 1].etag;
                let recorded =
                    common::wait_for_etag(&db, "MySampleJob", etag, Duration::from_secs(20)).await;
                assert!(
                    recorded,
                    "version {} recorded after restart",
                    next_version - 1
                );
            }
            sim.set_time(Some(versions[next_version]));
            next_version += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..400))).await;
        daemon.kill().await.unwrap(); // SIGKILL: no drain, no flush
    }
    // One last start: let it see the remaining versions and deliver everything.
    let mut daemon = spawn_daemon(&config, None);
    let resume_from = versions[next_version.saturating_sub(1)];
    common::play_versions(
        &sim,
        &scenario,
        &db,
        "MySampleJob",
        resume_from..=Duration::MAX,
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            pending_deliveries(&db).await == 0
        })
        .await,
        "outbox drained"
    );
    daemon.kill().await.unwrap();

    common::assert_import_lifecycle(&db, "MySampleJob").await;
    common::assert_each_event_delivered_under_one_id(&receiver, common::IMPORT_EVENTS.len() + 1);
}

#[tokio::test]
async fn an_endpoint_refusing_connections_for_a_long_stretch_gets_every_alert_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: connections are refused until the receiver comes up.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hooks = iewatch::config::Config::parse(
        &dir.path().join("w.toml"),
        &format!("[[webhook]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nretry_initial = \"20ms\"\nretry_max = \"100ms\"\n"),
    )
    .unwrap()
    .webhooks;
    let store = iewatch::store::Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let (waker, wake) = iewatch::notifier::Waker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let notifier = tokio::spawn(iewatch::notifier::run(
        store.clone(),
        hooks.clone(),
        wake,
        iewatch::telemetry::Telemetry::new(),
        stop.clone(),
    ));
    for job in ["JobA", "JobB"] {
        let name = iewatch::model::JobName::from(job);
        common::record_lifecycle(
            &store,
            job,
            |e| iewatch::notifier::route(&hooks, &name, e),
            false,
            |_| std::time::SystemTime::now(),
        )
        .await;
    }
    waker.wake();
    // The outage: a long stretch of refused connections (dozens of retries per delivery).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed_attempts: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(attempts), 0) FROM deliveries")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(
        failed_attempts >= 40,
        "only {failed_attempts} attempts during the outage"
    );
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        64,
        "nothing given up or lost during the outage"
    );
    let receiver = Receiver::start_on(addr, |_| Reply::Status(200)).await;
    assert!(common::wait_until(Duration::from_secs(20), || receiver.received().len() >= 64).await);
    stop.cancel();
    notifier.await.unwrap();
    for job in ["JobA", "JobB"] {
        let order: Vec<i64> = receiver
            .received()
            .iter()
            .filter(|r| r.json()["data"]["job"]["name"] == job)
            .map(|r| common::event_id_of(r.header("webhook-id")))
            .collect();
        assert_eq!(order.len(), 32, "{job}");
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{job} out of order");
    }
}

/// The first 503 from /healthz within 20 s (/healthz proves that the database takes
/// writes by a commit of the health row when its last commit is old or failed).
async fn first_503(base: &str) -> (u16, String) {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, reason) = health(base).await;
        if status == 503 || tokio::time::Instant::now() >= end {
            return (status, reason);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn health(base: &str) -> (u16, String) {
    let config = iewatch::tls::client_config(iewatch::tls::root_store(&[], false), None).unwrap();
    let client = iewatch::http_client::build_client(config, Duration::from_secs(2), false);
    let request = http::Request::get(format!("{base}/healthz"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = iewatch::http_client::send(&client, request, Duration::from_secs(10), 1 << 16)
        .await
        .unwrap();
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

/// Moves the simulator to version `index` and returns its ETag.
fn step(sim: &iewatch::simulator::RunningSimulator, index: usize) -> String {
    let timeline = &scenario("import-lifecycle.toml").compile().unwrap()[0];
    sim.set_time(Some(timeline.versions[index].since));
    timeline.versions[index].etag.clone()
}

/// The daemon, as a child process, on a fast config with `[http]` on a free port.
fn http_daemon(
    dir: &Path,
    database_dir: &Path,
    sim: &iewatch::simulator::RunningSimulator,
) -> (DaemonProcess, String) {
    let port = common::free_port();
    let config = fast_config(
        dir,
        sim,
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.join("iewatch.db").display().to_string(),
        &database_dir.join("iewatch.db").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    (
        DaemonProcess::start(&config),
        format!("http://127.0.0.1:{port}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_lock_and_a_read_only_database_turn_health_503_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    let db = dir.path().join("iewatch.db");
    let first = step(&sim, 0);
    let (mut daemon, base) = http_daemon(dir.path(), dir.path(), &sim);
    assert!(common::wait_for_etag(&db, "MySampleJob", &first, Duration::from_secs(10)).await);

    // Another process holds the write lock.
    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let second = step(&sim, 1);
    let (status, reason) = first_503(&base).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("database"), "{reason}");
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    drop(locker);
    assert!(
        common::wait_for_etag(&db, "MySampleJob", &second, Duration::from_secs(30)).await,
        "resumed after the lock"
    );

    // The database file stops taking writes (immutable as root; else the daemon's file
    // size limit at 0).
    let wal = dir.path().join("iewatch.db-wal");
    let stop = WriteStop::read_only(&[&db, &wal], daemon.pid());
    let third = step(&sim, 2);
    let (status, reason) = first_503(&base).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stop);
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("database"), "{reason}");
    assert!(daemon.alive(), "no crash");
    assert!(
        common::wait_for_etag(&db, "MySampleJob", &third, Duration::from_secs(30)).await,
        "resumed after read-only"
    );
    assert!(
        wait_for(Duration::from_secs(10), || async {
            health(&base).await.0 == 200
        })
        .await
    );
    daemon.stop().await;
    let events: Vec<String> = event_list(&db, "MySampleJob")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        &events[..4],
        [
            "job.first_seen",
            "job.state_changed",
            "job.shipping_updated",
            "job.state_changed"
        ],
        "each change exactly once: {events:?}"
    );
    assert_eq!(events.len(), 6);
}

/// A small tmpfs, unmounted when dropped (root only).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf) -> SmallDisk {
        std::fs::create_dir(&at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(&at)
            .status();
        assert!(mounted.is_ok_and(|s| s.success()), "mounting a small tmpfs");
        SmallDisk(at)
    }

    /// Fills it to the last byte; the filler goes when dropped.
    fn fill(&self) -> Filler {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&[0u8]).is_ok() {}
        let _ = file.sync_all();
        Filler(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

struct Filler(PathBuf);

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// As root, a real full disk (a 3 MiB tmpfs filled to the last byte); as anyone else,
/// every write of the daemon refused by its file size limit (see [`WriteStop`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_turns_health_503_and_work_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let small = common::is_root().then(|| SmallDisk::mount(dir.path().join("small")));
    let database_dir = small
        .as_ref()
        .map_or(dir.path().to_owned(), |disk| disk.0.clone());
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    let db = database_dir.join("iewatch.db");
    let first = step(&sim, 0);
    let (mut daemon, base) = http_daemon(dir.path(), &database_dir, &sim);
    assert!(common::wait_for_etag(&db, "MySampleJob", &first, Duration::from_secs(10)).await);

    let full: Box<dyn std::any::Any> = match &small {
        Some(disk) => Box::new(disk.fill()),
        None => Box::new(WriteStop::size_limit(daemon.pid())),
    };
    let second = step(&sim, 1);
    let (status, reason) = first_503(&base).await;
    drop(full);
    assert_eq!(status, 503, "health stayed 200 with a full disk: {reason}");
    assert!(reason.contains("database"), "{reason}");
    assert!(daemon.alive(), "no crash");
    assert!(
        common::wait_for_etag(&db, "MySampleJob", &second, Duration::from_secs(30)).await,
        "resumed"
    );
    assert!(
        wait_for(Duration::from_secs(10), || async {
            health(&base).await.0 == 200
        })
        .await
    );
    daemon.stop().await;
    let events: Vec<String> = event_list(&db, "MySampleJob")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        events,
        [
            "job.first_seen",
            "job.state_changed",
            "job.shipping_updated"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_payloads_outputs_or_the_database_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario("import-lifecycle.toml");
    let sim = start_simulator(scenario.clone(), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let receiver = Receiver::start(|_| Reply::Status(200)).await;
    let config = fast_config(dir.path(), &sim, &webhook(&receiver));
    let db = dir.path().join("iewatch.db");
    let log = dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(&config, Some(&log));
    common::play_versions(
        &sim,
        &scenario,
        &db,
        "MySampleJob",
        Duration::ZERO..=Duration::MAX,
    )
    .await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            pending_deliveries(&db).await == 0
        })
        .await
    );
    let served = sim.requests().len();
    assert!(
        common::wait_until(Duration::from_secs(10), || sim.requests()[served..]
            .iter()
            .any(|r| r.status == 412))
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.kill().await.unwrap();

    // The secrets: every BitLocker key the simulator served, the private key, the webhook secret.
    let mut secrets: Vec<String> = scenario.compile().unwrap()[0]
        .versions
        .iter()
        .filter_map(|v| v.job.as_ref()?.drive_list.clone())
        .flatten()
        .filter_map(|d| d.bit_locker_key.map(|k| k.expose().to_owned()))
        .collect();
    assert!(!secrets.is_empty(), "the simulator serves BitLocker keys");
    let pem = std::fs::read_to_string(&sim.certs.client).unwrap();
    let key_line = pem
        .split("PRIVATE KEY-----")
        .nth(1)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    secrets.push(key_line);
    secrets.push(SECRET.trim_start_matches("whsec_").to_owned());

    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let mut places: Vec<(String, Vec<u8>)> = vec![
        (
            "daemon log (debug level)".into(),
            std::fs::read(&log).unwrap(),
        ),
        ("check".into(), run(&["check", "--online"]).into_bytes()),
        ("status".into(), run(&["status", "--json"]).into_bytes()),
        (
            "history".into(),
            run(&["history", "MySampleJob", "--json"]).into_bytes(),
        ),
        (
            "deliveries".into(),
            run(&["deliveries", "--json"]).into_bytes(),
        ),
    ];
    for r in receiver.received() {
        places.push(("webhook payload".into(), r.body.to_vec()));
    }
    for file in ["iewatch.db", "iewatch.db-wal"] {
        places.push((
            file.into(),
            std::fs::read(dir.path().join(file)).unwrap_or_default(),
        ));
    }
    let log_text = String::from_utf8_lossy(&places[0].1).to_string();
    assert!(
        log_text.contains("not modified") && log_text.contains("CompletedWithErrors"),
        "the log was at debug level:\n{log_text}"
    );
    assert!(
        String::from_utf8_lossy(&places[1].1).contains("ok:"),
        "check ran"
    );
    for (place, bytes) in &places {
        for secret in &secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "a secret ({}...) appears in {place}", &secret[..6]);
        }
    }

    use std::os::unix::fs::PermissionsExt as _;
    for file in ["iewatch.db", "iewatch.db-wal", "iewatch.db-shm"] {
        let path = dir.path().join(file);
        if path.exists() {
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600,
                "{file}"
            );
        }
    }
    for file in [&sim.certs.ca_key, &sim.certs.client, &sim.certs.server] {
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            file.display()
        );
    }
    // A management certificate readable by others gets a warning.
    std::fs::set_permissions(&sim.certs.client, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = run(&["check"]);
    assert!(warned.contains("readable by group or others"), "{warned}");
}

use sqlx::Connection as _;

/// Group commit: writes that wait together commit together, and one that fails fails
/// alone (the batch is applied again, each write in a savepoint of its own): the others
/// are recorded, and the store takes writes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_in_a_batch_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = iewatch::store::Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let snapshot = common::first_snapshot("import-lifecycle.toml");
    let mut jobs = Vec::new();
    for i in 0..50 {
        let name = format!("job-{i}");
        jobs.push(store.load_job("prod", &name).await.unwrap().id);
    }
    // A job the database does not have: its events have no job row to come from.
    let missing = iewatch::store::JobId(i64::MAX);
    let before = store.commits();
    let mut writes = tokio::task::JoinSet::new();
    for (i, job) in jobs.iter().copied().chain([missing]).enumerate() {
        let (store, snapshot) = (store.clone(), snapshot.clone());
        writes.spawn(async move {
            let written = common::record_first_sight(&store, job, &snapshot, |_| Vec::new());
            (i, job, written.await)
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = writes.join_next().await {
        outcomes.push(done.unwrap());
    }
    let commits = store.commits() - before;
    assert!(commits < 51, "the writes were batched: {commits} commits");
    for (i, job, outcome) in &outcomes {
        assert_eq!(outcome.is_ok(), *job != missing, "write {i}: {outcome:?}");
    }
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT job_id) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(recorded, 50, "every other write is recorded");
    let after = store.load_job("prod", "after").await.unwrap().id;
    assert!(
        common::record_first_sight(&store, after, &snapshot, |_| Vec::new())
            .await
            .is_ok()
    );
}
