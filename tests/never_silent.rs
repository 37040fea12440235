//! Never silent: each way the daemon could once be made to stop watching while it kept
//! running, tried again against the real binary (or the real daemon loop): a log pipe
//! whose reader went away, a second daemon on the same database, a database deleted
//! under the daemon, a reload while a poll outlives the drain deadline, a reload while
//! another process holds the database, and absurd Retry-After headers.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::{
    event_list, scenario, start_simulator, wait_for, wait_for_etag, write_config, RunningDaemon,
};
use iewatch::simulator::{FaultKind, RunningSimulator, Scenario};
use tokio::io::AsyncBufReadExt as _;

const FAST: &str = "poll_interval_by_state = { Creating = \"100ms\", Shipping = \"100ms\", Completed = \"100ms\" }";

/// A config polling every 100 ms, with `extra` in `[daemon]`.
fn fast_config(dir: &Path, sim: &RunningSimulator, extra: &str) -> PathBuf {
    let path = write_config(dir, sim, &["MySampleJob"], &format!("{FAST}\n{extra}"));
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("poll_interval = \"1s\"", "poll_interval = \"100ms\"");
    std::fs::write(&path, text).unwrap();
    path
}

/// The import lifecycle served by a simulator at its first version, a directory for the
/// daemon's files, and its database's path.
struct Lifecycle {
    dir: tempfile::TempDir,
    timeline: iewatch::simulator::scenario::Timeline,
    sim: RunningSimulator,
    db: PathBuf,
}

impl Lifecycle {
    async fn start(scenario: Scenario) -> Lifecycle {
        let dir = tempfile::tempdir().unwrap();
        let timeline = scenario.compile().unwrap().remove(0);
        let sim = start_simulator(scenario, dir.path()).await;
        sim.set_time(Some(Duration::ZERO));
        let db = dir.path().join("iewatch.db");
        Lifecycle {
            dir,
            timeline,
            sim,
            db,
        }
    }

    /// A config polling every 100 ms, with `extra` in `[daemon]`.
    fn config(&self, extra: &str) -> PathBuf {
        fast_config(self.dir.path(), &self.sim, extra)
    }

    /// The service moves on to version `i`.
    fn show(&self, i: usize) {
        self.sim.set_time(Some(self.timeline.versions[i].since));
    }

    /// True once the daemon recorded version `i` (its ETag) within `deadline`.
    async fn recorded(&self, i: usize, deadline: Duration) -> bool {
        let etag = &self.timeline.versions[i].etag;
        wait_for_etag(&self.db, "MySampleJob", etag, deadline).await
    }

    /// True once the service got a poll it answers with fault `kind` (within 10 s): that
    /// poll is in flight.
    async fn faulted(&self, kind: FaultKind) -> bool {
        let seen = || self.sim.requests().iter().any(|r| r.fault == Some(kind));
        common::wait_until(Duration::from_secs(10), seen).await
    }
}

fn spawn_daemon(config: &Path, stderr: Stdio) -> tokio::process::Child {
    common::DaemonCommand::new(config)
        .stderr("debug", stderr)
        // A heartbeat every second (half this watchdog): a daemon with nothing to write
        // notices a deleted database within a second, not at the default 30 s beat.
        .env("WATCHDOG_USEC", "2000000")
        .spawn()
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn signal(child: &tokio::process::Child, signal: i32) {
    let pid = i32::try_from(child.id().expect("still running")).unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc_kill(pid, signal) }, 0);
}

async fn exit_within(
    child: &mut tokio::process::Child,
    deadline: Duration,
) -> std::process::ExitStatus {
    tokio::time::timeout(deadline, child.wait())
        .await
        .expect("the daemon exits in time")
        .unwrap()
}

/// The shipped import lifecycle.
fn lifecycle() -> Scenario {
    scenario("import-lifecycle.toml")
}

/// The import lifecycle with `faults` (TOML array entries) added.
fn lifecycle_with(faults: &str) -> Scenario {
    common::scenario_with_faults("import-lifecycle.toml", faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_log_pipe_closed_the_daemon_keeps_recording_and_stops_on_sigterm() {
    let run = Lifecycle::start(lifecycle()).await;
    let mut daemon = spawn_daemon(&run.config(""), Stdio::piped());
    let mut log = tokio::io::BufReader::new(daemon.stderr.take().unwrap());
    let mut first_line = String::new();
    tokio::time::timeout(Duration::from_secs(10), log.read_line(&mut first_line))
        .await
        .expect("the daemon logs")
        .unwrap();
    // The reader goes away: every later log line meets a closed pipe.
    drop(log);
    for i in 0..3 {
        run.show(i);
        assert!(
            run.recorded(i, Duration::from_secs(20)).await,
            "version {i} recorded with the log pipe closed"
        );
    }
    signal(&daemon, 15);
    let status = exit_within(&mut daemon, Duration::from_secs(15)).await;
    assert!(status.success(), "SIGTERM stops it cleanly: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_refuses_to_start_and_names_the_first() {
    let run = Lifecycle::start(lifecycle()).await;
    let config = run.config("");
    let mut first = spawn_daemon(&config, Stdio::null());
    assert!(
        run.recorded(0, Duration::from_secs(20)).await,
        "the first daemon records"
    );
    let output = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args(["run", "-c"])
            .arg(&config)
            .output(),
    )
    .await
    .expect("the second daemon gives up at once")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let pid = first.id().unwrap();
    assert!(
        stderr.contains("in use by another `iewatch run`")
            && stderr.contains(&format!("pid {pid}")),
        "{stderr}"
    );
    // Read-only commands take no lock: status works beside the running daemon.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["status", "--database"])
        .arg(&run.db)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // A SIGKILLed daemon's lock dies with it: the next one starts.
    signal(&first, 9);
    exit_within(&mut first, Duration::from_secs(10)).await;
    let mut second = spawn_daemon(&config, Stdio::null());
    let polls = run.sim.requests().len();
    assert!(
        common::wait_until(Duration::from_secs(20), || run.sim.requests().len()
            > polls + 3)
        .await,
        "the successor polls"
    );
    assert!(second.try_wait().unwrap().is_none(), "and keeps running");
    signal(&second, 15);
    assert!(exit_within(&mut second, Duration::from_secs(15))
        .await
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_under_the_daemon_turns_healthz_503_and_ends_the_process() {
    // From the second version on every poll stalls (until the 5 s request timeout): the
    // database goes while one is in flight, so nothing commits, the heartbeat notices,
    // and the daemon says 503 while it waits for that poll (3 s at most) before it
    // exits. Without a poll in flight it could end within a millisecond of saying it.
    let run = Lifecycle::start(lifecycle_with(
        "{ from = \"12h\", until = \"100d\", kind = \"stall\" }",
    ))
    .await;
    let port = common::free_port();
    let config = run.config("");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"127.0.0.1:{port}\"\n\n{text}"),
    )
    .unwrap();
    let log = run.dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(&config, Stdio::from(std::fs::File::create(&log).unwrap()));
    assert!(
        wait_for(Duration::from_secs(20), || async {
            common::http_status(&format!("127.0.0.1:{port}"), "/healthz").await == Some(200)
        })
        .await,
        "healthy at first"
    );
    assert!(run.recorded(0, Duration::from_secs(20)).await);
    run.show(1);
    assert!(
        run.faulted(FaultKind::Stall).await,
        "a stalled poll is in flight"
    );
    std::fs::remove_file(&run.db).unwrap();
    let mut saw_503 = false;
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(status) = daemon.try_wait().unwrap() {
                return status;
            }
            saw_503 |=
                common::http_status(&format!("127.0.0.1:{port}"), "/healthz").await == Some(503);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the daemon exits within seconds");
    assert!(!status.success(), "{status:?}");
    assert!(saw_503, "/healthz said 503 before the process ended");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("was deleted while the daemon ran"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_a_poll_outlives_the_drain_records_each_change_once() {
    // Every answer from the second version on comes 3 s late.
    let run = Lifecycle::start(lifecycle_with(
        "{ from = \"12h\", until = \"100d\", kind = \"slow\" }",
    ))
    .await;
    let config = run.config("shutdown_timeout = \"200ms\"");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("request_timeout = \"5s\"", "request_timeout = \"10s\""),
    )
    .unwrap();
    let daemon = RunningDaemon::start(&config).await;
    assert!(run.recorded(0, Duration::from_secs(20)).await);
    run.show(1);
    assert!(
        run.faulted(FaultKind::Slow).await,
        "a slow poll is in flight"
    );
    // The reload gives up on the poll in flight after 200 ms and starts over.
    daemon.reload.send(()).await.unwrap();
    assert!(run.recorded(1, Duration::from_secs(20)).await);
    // The abandoned poll answers 3 s after it was sent; give it that long to write.
    let requests = run.sim.requests().len();
    assert!(
        common::wait_until(Duration::from_secs(20), || run.sim.requests().len()
            >= requests + 3)
        .await
    );
    tokio::time::sleep(iewatch::simulator::scenario::SLOW_ANSWER).await;
    daemon.stop().await;
    let events = event_list(&run.db, "MySampleJob").await;
    let shipping = events
        .iter()
        .filter(|e| e.0 == "job.state_changed" && e.3.as_deref() == Some("Shipping"))
        .count();
    assert_eq!(
        shipping, 1,
        "recorded once, not by both generations: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_another_process_holds_the_database_keeps_the_daemon_running() {
    let run = Lifecycle::start(lifecycle()).await;
    let daemon = RunningDaemon::start(&run.config("")).await;
    assert!(run.recorded(0, Duration::from_secs(20)).await);
    let mut holder = {
        use sqlx::ConnectOptions as _;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&run.db)
            .connect()
            .await
            .unwrap()
    };
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut holder)
        .await
        .unwrap();
    daemon.reload.send(()).await.unwrap();
    // Past the daemon's 5 s busy timeout, it must still be running.
    let died = common::wait_until(Duration::from_secs(7), || daemon.task.is_finished()).await;
    assert!(
        !died,
        "the daemon survived a reload against a locked database"
    );
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    drop(holder);
    run.show(1);
    assert!(
        run.recorded(1, Duration::from_secs(20)).await,
        "and records again once the lock is gone"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_from_the_service_delays_a_job_by_at_most_max_retry_after() {
    // 31,700 years asked for, while the service throttles the second version.
    let run = Lifecycle::start(lifecycle_with(
        "{ from = \"12h\", until = \"2d\", kind = \"throttled\", retry_after = 1000000000000 }",
    ))
    .await;
    let daemon = RunningDaemon::start(&run.config("max_retry_after = \"1s\"")).await;
    assert!(run.recorded(0, Duration::from_secs(20)).await);
    run.show(1);
    assert!(
        common::wait_until(Duration::from_secs(10), || run
            .sim
            .requests()
            .iter()
            .any(|r| r.status == 429))
        .await,
        "throttled"
    );
    // The throttling ends; the job is polled again within max_retry_after.
    run.show(2);
    assert!(
        run.recorded(2, Duration::from_secs(10)).await,
        "the job is still polled"
    );
    daemon.stop().await;
}

/// A config for `run` with one webhook to `url` (`timeout` per attempt).
fn with_webhook(run: &Lifecycle, jobs: &[&str], url: &str, timeout: &str) -> PathBuf {
    let dir = run.dir.path();
    let config = write_config(
        dir,
        &run.sim,
        jobs,
        &format!("{FAST}\nshutdown_timeout = \"1s\""),
    );
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("poll_interval = \"1s\"", "poll_interval = \"100ms\"");
    text.push_str(&format!(
        "\n[[webhook]]\nname = \"ops\"\nurl = \"{url}\"\ntimeout = \"{timeout}\"\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_from_a_webhook_never_stops_its_worker() {
    let run = Lifecycle::start(lifecycle()).await;
    let hook = common::Receiver::start(|n| {
        if n == 0 {
            common::Reply::WithHeaders(503, &[("retry-after", "18446744073709551615")])
        } else {
            common::Reply::Status(200)
        }
    })
    .await;
    let daemon =
        RunningDaemon::start(&with_webhook(&run, &["MySampleJob"], &hook.url(), "5s")).await;
    assert!(
        common::wait_until(Duration::from_secs(20), || hook.received().len() >= 2).await,
        "the refused alert is sent again, within retry_max"
    );
    assert!(!daemon.task.is_finished(), "and the daemon runs on");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_with_a_large_body_is_a_delivery_not_a_failure() {
    let run = Lifecycle::start(lifecycle()).await;
    let hook = common::Receiver::start(|_| common::Reply::Body(200, 200 * 1024)).await;
    let daemon =
        RunningDaemon::start(&with_webhook(&run, &["MySampleJob"], &hook.url(), "5s")).await;
    assert!(
        wait_for(Duration::from_secs(20), || async {
            let store = iewatch::store::Store::open_existing(&run.db).await.unwrap();
            let delivered = store.deliveries(false, 10).await.unwrap();
            store.close().await;
            delivered.iter().any(|d| d.status == "delivered")
        })
        .await,
        "the first alert is delivered"
    );
    daemon.stop().await;
    let ids: Vec<String> = hook
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "each alert sent once: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_deliveries_hang_does_not_hold_back_another_jobs() {
    let run = Lifecycle::start(lifecycle()).await;
    // SlowJob is not in the scenario: its alert is job.not_found, and that one hangs for
    // 30 s (past the webhook's 20 s timeout); the others are answered at once.
    let hook = common::Receiver::start_inspecting("127.0.0.1:0".parse().unwrap(), |_, r| {
        if String::from_utf8_lossy(&r.body).contains("SlowJob") {
            common::Reply::Hang(Duration::from_secs(30))
        } else {
            common::Reply::Status(200)
        }
    })
    .await;
    let config = with_webhook(&run, &["SlowJob", "MySampleJob"], &hook.url(), "20s");
    let daemon = RunningDaemon::start(&config).await;
    let quick_alerts = |hook: &common::Receiver| {
        hook.received()
            .iter()
            .filter(|r| r.answered == Some(200))
            .count()
    };
    let slow_hanging = |hook: &common::Receiver| {
        hook.received()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("SlowJob"))
    };
    assert!(
        common::wait_until(Duration::from_secs(20), || slow_hanging(&hook)).await,
        "SlowJob's first alert is hanging"
    );
    // While it hangs, MySampleJob's alerts keep arriving, version after version.
    let before = quick_alerts(&hook);
    run.show(1);
    assert!(
        common::wait_until(Duration::from_secs(10), || quick_alerts(&hook) > before).await,
        "another job's alert went out within the slow job's attempt"
    );
    daemon.stop().await;
}
