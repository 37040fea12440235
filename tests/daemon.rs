//! `iewatch run` end to end: the in-process simulator over real TLS, a real database,
//! the real daemon loop driven by a cancellation token and a reload channel.

mod common;

use std::time::Duration;

use common::{
    event_list, play_versions, scenario, start_simulator, stored_etag, wait_for, write_config,
    RunningDaemon,
};

const ALL: std::ops::RangeInclusive<Duration> = Duration::ZERO..=Duration::MAX;
const FAST: &str =
    "poll_interval_by_state = { Creating = \"100ms\", Completed = \"100ms\", Closed = \"100ms\" }";

fn fast_config(extra: &str) -> String {
    format!("{FAST}\n{extra}").replace("poll_interval = \"1s\"", "poll_interval = \"100ms\"")
}

/// A daemon watching MySampleJob of `sim` (its clock held at the start) from `dir`, once
/// its first document is recorded: the config, the database and the daemon.
async fn first_document_recorded(
    sim: &iewatch::simulator::RunningSimulator,
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, RunningDaemon) {
    sim.set_time(Some(Duration::ZERO));
    let config = write_config(dir, sim, &["MySampleJob"], &fast_config(""));
    let db = dir.join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            stored_etag(&db, "MySampleJob").await.is_some()
        })
        .await,
        "the first document is recorded"
    );
    (config, db, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_lifecycle_yields_exactly_the_expected_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario("import-lifecycle.toml");
    let sim = start_simulator(scenario.clone(), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let config = write_config(dir.path(), &sim, &["MySampleJob"], &fast_config(""));
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    play_versions(&sim, &scenario, &db, "MySampleJob", ALL).await;
    // Unchanged polls are answered 412: the daemon sends the stored ETag.
    assert!(
        common::wait_until(Duration::from_secs(10), || sim
            .requests()
            .iter()
            .any(|r| r.status == 412))
        .await
    );
    daemon.stop().await;
    common::assert_import_lifecycle(&db, "MySampleJob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_stored_etag_is_sent_and_nothing_is_recorded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario("import-lifecycle.toml");
    let sim = start_simulator(scenario.clone(), dir.path()).await;
    let config = write_config(dir.path(), &sim, &["MySampleJob"], &fast_config(""));
    let db = dir.path().join("iewatch.db");

    let daemon = RunningDaemon::start(&config).await;
    let half_way = Duration::from_secs(3 * 86_400);
    play_versions(
        &sim,
        &scenario,
        &db,
        "MySampleJob",
        Duration::ZERO..=half_way,
    )
    .await;
    daemon.stop().await;
    let before = event_list(&db, "MySampleJob").await;
    let etag = stored_etag(&db, "MySampleJob").await.unwrap();
    let requests_before = sim.requests().len();

    let daemon = RunningDaemon::start(&config).await;
    let first_after = wait_for(Duration::from_secs(10), || async {
        sim.requests().len() > requests_before
    })
    .await;
    assert!(first_after);
    let first = sim.requests()[requests_before].clone();
    assert_eq!(
        first.if_none_match.as_deref(),
        Some(etag.as_str()),
        "the first request after restart carries the stored ETag"
    );
    assert_eq!(first.status, 412);
    assert_eq!(
        event_list(&db, "MySampleJob").await,
        before,
        "no duplicate events"
    );

    play_versions(
        &sim,
        &scenario,
        &db,
        "MySampleJob",
        half_way + Duration::from_secs(1)..=Duration::MAX,
    )
    .await;
    daemon.stop().await;
    common::assert_import_lifecycle(&db, "MySampleJob").await;
}

/// A stored ETag no header can carry (a control character typed in with `sqlite3`) is
/// no poison pill: the job is asked for its whole document, whose tag replaces it, and
/// nothing is recorded as an event or a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_etag_no_header_can_carry_is_replaced_by_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    let (config, db, daemon) = first_document_recorded(&sim, dir.path()).await;
    daemon.stop().await;
    let etag = stored_etag(&db, "MySampleJob").await.unwrap();
    let events = event_list(&db, "MySampleJob").await;
    let store = iewatch::store::Store::open_existing(&db).await.unwrap();
    sqlx::query("UPDATE jobs SET etag = 'W/\"bad' || char(1) || 'tag\"'")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let requests_before = sim.requests().len();

    let daemon = RunningDaemon::start(&config).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            stored_etag(&db, "MySampleJob").await.as_deref() == Some(etag.as_str())
                && sim.requests().len() >= requests_before + 3
        })
        .await,
        "the service's tag replaces the bad one, and the polls after carry it"
    );
    daemon.stop().await;
    let first = sim.requests()[requests_before].clone();
    assert_eq!(first.if_none_match, None, "no header for the bad tag");
    assert_eq!(first.status, 200);
    assert_eq!(
        event_list(&db, "MySampleJob").await,
        events,
        "nothing new to say"
    );
    let later = &sim.requests()[requests_before + 1..];
    assert!(later.len() >= 2, "polls after the first: {}", later.len());
    assert!(later
        .iter()
        .all(|r| r.if_none_match.as_deref() == Some(etag.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_delays_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = scenario("import-lifecycle.toml");
    scenario.faults = iewatch::simulator::Scenario::parse(
        "[[fault]]\njob = \"MySampleJob\"\nfrom = \"1h\"\nuntil = \"2h\"\nkind = \"unavailable\"\nretry_after = 2\n",
    )
    .unwrap()
    .faults;
    let sim = start_simulator(scenario, dir.path()).await;
    let (_, _, daemon) = first_document_recorded(&sim, dir.path()).await;

    sim.set_time(Some(Duration::from_secs(5400)));
    assert!(
        common::wait_until(Duration::from_secs(10), || sim
            .requests()
            .iter()
            .any(|r| r.status == 503))
        .await
    );
    let faulted = sim
        .requests()
        .into_iter()
        .find(|r| r.status == 503)
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), || sim
            .requests()
            .iter()
            .any(|r| r.at > faulted.at))
        .await
    );
    let next = sim
        .requests()
        .into_iter()
        .find(|r| r.at > faulted.at)
        .unwrap();
    let gap = next.at - faulted.at;
    assert!(
        gap >= Duration::from_secs(2),
        "next request after {gap:?}, Retry-After was 2 s"
    );
    assert!(
        gap < Duration::from_secs(4),
        "Retry-After should not be stretched much: {gap:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_storm_records_every_real_change_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario("fault-storm.toml");
    let sim = start_simulator(scenario.clone(), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let extra = fast_config("failure_threshold = 2");
    let config = write_config(
        dir.path(),
        &sim,
        &["StormJob", "CalmJob"],
        &extra.replace("request_timeout = \"5s\"", ""),
    );
    // Every state polled every 100 ms: the walk through 33 fault windows waits on polls,
    // and at the 1 s default (×3, ×12 in some states) it took a minute.
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("request_timeout = \"5s\"", "request_timeout = \"500ms\"")
        .replace("poll_interval = \"1s\"", "poll_interval = \"100ms\"");
    std::fs::write(&config, config_text).unwrap();
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    // Walk simulated time in 6-hour steps through every fault window; at each step let
    // the daemon make a few requests of the stormy job, whatever the fault does to them.
    let step = Duration::from_secs(6 * 3600);
    for i in 0..=32u32 {
        let at = step * i;
        sim.set_time(Some(at));
        let storm_requests = || {
            sim.requests()
                .iter()
                .filter(|r| r.sim_offset == at && r.job.as_deref() == Some("StormJob"))
                .count()
        };
        assert!(
            common::wait_until(Duration::from_secs(20), || storm_requests() >= 2).await,
            "no polls at {at:?}"
        );
    }
    // After the storm, the last versions of both jobs are recorded.
    play_versions(
        &sim,
        &scenario,
        &db,
        "StormJob",
        Duration::from_secs(7 * 86_400)..=Duration::MAX,
    )
    .await;
    play_versions(
        &sim,
        &scenario,
        &db,
        "CalmJob",
        Duration::from_secs(5 * 86_400)..=Duration::MAX,
    )
    .await;
    assert!(!daemon.task.is_finished(), "the daemon is still up");

    let events = event_list(&db, "StormJob").await;
    let states: Vec<_> = events
        .iter()
        .filter(|e| e.0 == "job.state_changed")
        .map(|e| e.3.clone().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "Shipping",
            "Received",
            "Transferring",
            "Packaging",
            "Completed"
        ]
    );
    let progress: Vec<_> = events
        .iter()
        .filter(|e| e.0 == "job.progress")
        .map(|e| e.3.clone().unwrap())
        .collect();
    assert_eq!(progress, ["0", "50", "100"], "each real progress step once");
    let drive_states: Vec<_> = events
        .iter()
        .filter(|e| e.0 == "drive.state_changed")
        .map(|e| e.3.clone().unwrap())
        .collect();
    assert_eq!(drive_states, ["Received", "Transferring", "Completed"]);
    // The storm made failure streaks: each alerted once and then recovered.
    let failing = events.iter().filter(|e| e.0 == "job.poll_failing").count();
    let recovered = events
        .iter()
        .filter(|e| e.0 == "job.poll_recovered")
        .count();
    assert!(failing >= 1, "no job.poll_failing in {events:?}");
    assert_eq!(failing, recovered);
    // The calm job was never held up by the stormy one.
    let calm: Vec<_> = event_list(&db, "CalmJob")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        calm,
        [
            "job.first_seen",
            "job.state_changed",
            "job.shipping_updated",
            "job.state_changed"
        ]
    );
    let faults = sim.requests().iter().filter(|r| r.fault.is_some()).count();
    assert!(faults >= 9, "only {faults} faults were injected");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_jobs_and_keeps_running_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = scenario("bench-1000.toml");
    scenario.jobs[0].count = Some(2);
    let sim = start_simulator(scenario, dir.path()).await;
    let config = write_config(dir.path(), &sim, &["bench-00001"], &fast_config(""));
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    let polled = |job: &'static str| {
        let sim = &sim;
        move || sim.requests().iter().any(|r| r.job.as_deref() == Some(job))
    };
    assert!(common::wait_until(Duration::from_secs(10), polled("bench-00001")).await);

    // A broken config is refused; the running one keeps polling.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("[[job]]", "[[job]]\nsurprise = 1")).unwrap();
    daemon.reload.send(()).await.unwrap();
    let count = sim.requests().len();
    assert!(common::wait_until(Duration::from_secs(10), || sim.requests().len() > count + 3).await);
    assert!(!daemon.task.is_finished());

    std::fs::write(&config, good.replace("bench-00001", "bench-00002")).unwrap();
    daemon.reload.send(()).await.unwrap();
    assert!(common::wait_until(Duration::from_secs(10), polled("bench-00002")).await);
    let switched = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late_polls_of_removed = sim
        .requests()
        .iter()
        .filter(|r| r.job.as_deref() == Some("bench-00001") && r.at > switched)
        .count();
    assert_eq!(
        late_polls_of_removed, 0,
        "the removed job is no longer polled"
    );
    daemon.stop().await;
    // The removed job's history stays.
    assert_eq!(event_list(&db, "bench-00001").await.len(), 1);
    assert_eq!(event_list(&db, "bench-00002").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_polling_exits_zero_with_the_database_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = scenario("bench-1000.toml");
    scenario.jobs[0].count = Some(50);
    let sim = start_simulator(scenario, dir.path()).await;
    let jobs: Vec<String> = (1..=50).map(|i| format!("bench-{i:05}")).collect();
    let job_refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
    let config = write_config(
        dir.path(),
        &sim,
        &job_refs,
        &fast_config("shutdown_timeout = \"5s\""),
    );
    let mut child = common::DaemonCommand::new(&config)
        .stderr("warn", std::process::Stdio::inherit())
        .spawn();
    assert!(
        common::wait_until(Duration::from_secs(15), || sim.requests().len() > 400).await,
        "daemon polls"
    );
    let pid = child.id().unwrap() as i32;
    let started = std::time::Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the deadline")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
    let store = iewatch::store::Store::open_existing(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE type = 'job.first_seen'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(seen, 50);
    // Every job was polled again after its first sight, unchanged: the times of those
    // polls (noted by the workers, written at the heartbeat or on the way out) reached
    // the database.
    let polled_since: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE last_polled_at > first_seen_at")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(polled_since, 50);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
