//! Hostile input: a service, a receiver, a scraper or a careless operator trying to make
//! iewatch leak a secret, starve, forge its metrics or record another job's answer.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{event_list, start_simulator, RunningDaemon};

/// Counts TCP connections to a listener on another loopback address (another origin).
async fn foreign_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let origin = format!("https://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (origin, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_to_another_origin_is_refused_and_the_token_stays_home() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = iewatch::simulator::Scenario::parse(
        "[[job]]\nname = \"Alpha\"\n[[job]]\nname = \"Bravo\"\n[[job]]\nname = \"Delta\"\n",
    )
    .unwrap();
    let sim = start_simulator(scenario, dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let (origin, connections) = foreign_listener().await;
    sim.set_next_link_origin(Some(origin));
    let account = sim
        .arm_account_block("arm")
        .replace("[[account]]\n", "[[account]]\njobs = \"all\"\n");
    let db = dir.path().join("iewatch.db");
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\n\n{account}",
            db.display()
        ),
    )
    .unwrap();
    let daemon = RunningDaemon::start(&config).await;
    let lists = |sim: &iewatch::simulator::RunningSimulator| {
        sim.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.job.is_none())
            .count()
    };
    assert!(
        common::wait_until(Duration::from_secs(15), || lists(&sim) >= 3).await,
        "discovery lists the jobs again and again"
    );
    daemon.stop().await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing, and so no bearer token, went to the other origin"
    );
    if db.exists() {
        assert!(
            event_list(&db, "Delta").await.is_empty(),
            "the page behind the foreign link was not read"
        );
    }
}

/// Runs the import lifecycle with `fault` over its second version and returns the
/// job's events once a `job.poll_failing` was recorded.
async fn lifecycle_under(fault: &str) -> Vec<common::EventRow> {
    let dir = tempfile::tempdir().unwrap();
    let scenario = common::scenario_with_faults(
        "import-lifecycle.toml",
        &format!("{{ from = \"12h\", until = \"2d\", kind = \"{fault}\" }}"),
    );
    let timeline = scenario.compile().unwrap().remove(0);
    let sim = start_simulator(scenario, dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let config = common::write_config(
        dir.path(),
        &sim,
        &["MySampleJob"],
        "failure_threshold = 2\npoll_interval_by_state = { Creating = \"100ms\" }",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("poll_interval = \"1s\"", "poll_interval = \"100ms\""),
    )
    .unwrap();
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    let etag = &timeline.versions[0].etag;
    assert!(common::wait_for_etag(&db, "MySampleJob", etag, Duration::from_secs(20)).await);
    sim.set_time(Some(timeline.versions[1].since));
    let failing = common::wait_for(Duration::from_secs(20), || async {
        event_list(&db, "MySampleJob")
            .await
            .iter()
            .any(|e| e.0 == "job.poll_failing")
    })
    .await;
    daemon.stop().await;
    assert!(failing, "the bad answers make the job fail");
    event_list(&db, "MySampleJob").await
}

/// The error `job.poll_failing` carries.
fn failing_error(events: &[common::EventRow]) -> &str {
    let failing = events.iter().find(|e| e.0 == "job.poll_failing").unwrap();
    failing.3.as_deref().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_naming_another_job_is_a_failure_not_a_recording() {
    let events = lifecycle_under("wrong_job").await;
    let error = failing_error(&events);
    assert!(
        error.contains("the answer is for job \"SomeoneElse\", not \"MySampleJob\""),
        "{error}"
    );
    assert!(
        !events.iter().any(|e| e.0 == "job.state_changed"),
        "the other job's state was not recorded as this one's: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_listing_forty_thousand_drives_is_refused() {
    let events = lifecycle_under("many_drives").await;
    let error = failing_error(&events);
    assert!(
        error.contains("40000 drives listed; at most 64 are accepted"),
        "{error}"
    );
    assert!(
        !events.iter().any(|e| e.0 == "drive.added"),
        "no drive of it was recorded"
    );
}

#[test]
fn the_resource_managers_real_404_body_with_null_details_is_decoded() {
    let Some(recordings) = common::Recordings::available() else {
        return;
    };
    let body = recordings
        .read("databox/recordings/extracted/2020-03_get_404_rp_SsemUserErrorEntityNotFound.json");
    let response = http::Response::builder()
        .status(404)
        .header("content-type", "application/json; charset=utf-8")
        .body(bytes::Bytes::from(body))
        .unwrap();
    let error = iewatch::source::arm::interpret(response).unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("HTTP 404 SsemUserErrorEntityNotFound: Could not find the entity job000004."),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_is_logged_once_names_the_app_registration_and_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(common::scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let account = sim.arm_account_block("arm").replace(
        "client_secret = \"iewatch-sim-secret\"",
        "client_secret = \"not-the-secret\"",
    );
    let db = dir.path().join("iewatch.db");
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\npoll_interval_by_state = {{ Creating = \"100ms\" }}\n\n{account}\n[[job]]\naccount = \"arm\"\nname = \"MySampleJob\"\n",
            db.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = common::DaemonCommand::new(&config)
        .log_to("info", &log)
        .spawn();
    let failures = || async {
        let Ok(store) = iewatch::store::Store::open_existing(&db).await else {
            return 0;
        };
        let failures: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(consecutive_failures), 0) FROM jobs")
                .fetch_one(store.pool())
                .await
                .unwrap_or(0);
        store.close().await;
        failures
    };
    assert!(
        common::wait_for(Duration::from_secs(30), || async { failures().await >= 10 }).await,
        "ten polls failed"
    );
    daemon.kill().await.unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("does not accept the credentials"))
        .collect();
    assert_eq!(refused.len(), 1, "once per streak:\n{log}");
    assert!(
        refused[0].contains("check app registration iewatch-sim-client (client secret)")
            && refused[0].contains("may read the jobs"),
        "{}",
        refused[0]
    );
    assert!(
        !refused[0].contains("management certificate"),
        "{}",
        refused[0]
    );
    assert!(!log.contains("poll failed"), "no warning per poll:\n{log}");
    let token_requests = sim.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(token_requests, 1, "one token request, then a backoff");
}

#[test]
fn a_bitlocker_key_under_any_spelling_is_kept_out_of_the_document() {
    let sample = include_str!("fixtures/get-job-sample.json")
        .replace("\"BitLockerKey\"", "\"bitlockerKEY\"");
    let job: iewatch::source::classic_wire::Job = serde_json::from_str(&sample).unwrap();
    let (_, document) = job.into_parts();
    assert_eq!(document.secret_count(), 2);
    assert!(!document.render(false).contains("259358"));
    assert!(
        document.render(true).contains("259358"),
        "kept for store_bitlocker_keys"
    );

    let arm = include_str!("fixtures/arm-get-job-2021-01-01.json").replace(
        "\"driveId\": \"9CA995BB\",",
        "\"driveId\": \"9CA995BB\", \"BITLOCKERKEY\": \"111111-222222-333333\",",
    );
    let job: iewatch::source::arm_wire::ArmJob = serde_json::from_str(&arm).unwrap();
    let (_, document) = job.into_parts();
    assert_eq!(document.secret_count(), 1);
    assert!(!document.render(false).contains("111111-222222"));
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_database_and_its_wal_are_made_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let store = iewatch::store::Writer::open_file(&db).await.unwrap();
    store.load_job("prod", "J").await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("iewatch.db{suffix}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // Opened again (as `check` and `run` open it: created if missing, then migrated) while
    // the first handle keeps the WAL alive.
    iewatch::store::Store::prepare(&iewatch::store::Database::File(db.clone()))
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("iewatch.db{suffix}"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    store.close().await;
}

#[tokio::test]
async fn status_and_history_never_print_raw_control_characters_from_the_service() {
    use iewatch::model::JobSnapshot;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let store = iewatch::store::Writer::open_file(&db).await.unwrap();
    let job = store.load_job("prod", "MySampleJob").await.unwrap();
    let snapshot = JobSnapshot::assemble(None, "Evil\u{1b}[2J\u{7}".into(), Some(5), None);
    common::record_first_sight(&store, job.id, &snapshot, |_| Vec::new())
        .await
        .unwrap();
    store.close().await;
    for args in [vec!["status"], vec!["history", "MySampleJob"]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args(&args)
            .arg("--database")
            .arg(&db)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains("Evil\\u{1b}[2J\\u{7}"), "{args:?}: {text:?}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {text:?}"
        );
    }
}

/// A daemon on the import lifecycle with an `[http]` listener configured by `http`.
async fn daemon_with_listener(
    dir: &std::path::Path,
    http: &str,
) -> (iewatch::simulator::RunningSimulator, RunningDaemon, String) {
    let sim = start_simulator(common::scenario("import-lifecycle.toml"), dir).await;
    sim.set_time(Some(Duration::ZERO));
    let config = common::write_config(dir, &sim, &["MySampleJob"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"127.0.0.1:0\"\n{http}\n\n{text}"),
    )
    .unwrap();
    let daemon = RunningDaemon::start(&config).await;
    let base = daemon.started.http.unwrap().to_string();
    (sim, daemon, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_starve_the_listener() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (_sim, daemon, addr) = daemon_with_listener(
        dir.path(),
        "header_read_timeout = \"1s\"\nmax_connections = 4",
    )
    .await;
    // Twenty connections that never send a request.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The listener still answers: the connections over the cap are closed at once,
    // the others after the header-read timeout.
    assert!(
        common::wait_for(Duration::from_secs(10), || async {
            common::http_status(&addr, "/healthz").await == Some(200)
        })
        .await,
        "/healthz answers beside twenty idle connections"
    );
    for mut stream in idle {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection is closed by the server: {closed:?}"
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_writes_nothing_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, daemon, addr) = daemon_with_listener(dir.path(), "").await;
    let db = dir.path().join("iewatch.db");
    let checked_at = || async {
        let store = iewatch::store::Store::open_existing(&db).await.unwrap();
        let at: Option<String> = sqlx::query_scalar("SELECT checked_at FROM health")
            .fetch_optional(store.pool())
            .await
            .unwrap();
        store.close().await;
        at
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        assert_eq!(common::http_status(&addr, "/healthz").await, Some(200));
        seen.insert(checked_at().await);
    }
    // The writer's own health commit comes every 5 s; thirty requests add none.
    assert!(seen.len() <= 2, "{seen:?}");
    daemon.stop().await;
}
