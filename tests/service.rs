//! Running as a service: the systemd notify protocol seen on a real NOTIFY_SOCKET,
//! /healthz and /metrics scraped over HTTP, health turning 503 when the database stops
//! taking writes, and the demo run to completion.

mod common;

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use common::{scenario, start_simulator, write_config, RunningDaemon};
use http_body_util::Full;
use iewatch::http_client;

async fn get(url: &str) -> (u16, String) {
    let config = iewatch::tls::client_config(iewatch::tls::root_store(&[], false), None).unwrap();
    let client = http_client::build_client(config, Duration::from_secs(2), false);
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http_client::send(&client, request, Duration::from_secs(10), 1 << 20)
        .await
        .unwrap();
    (
        response.status().as_u16(),
        String::from_utf8(response.body().to_vec()).unwrap(),
    )
}

/// `GET /metrics` with `Accept`: the Content-Type and the body.
async fn scrape(url: &str, accept: Option<&str>) -> (String, String) {
    let config = iewatch::tls::client_config(iewatch::tls::root_store(&[], false), None).unwrap();
    let client = http_client::build_client(config, Duration::from_secs(2), false);
    let mut request = http::Request::get(url);
    if let Some(accept) = accept {
        request = request.header(http::header::ACCEPT, accept);
    }
    let response = http_client::send(
        &client,
        request.body(Full::new(Bytes::new())).unwrap(),
        Duration::from_secs(10),
        1 << 20,
    )
    .await
    .unwrap();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        content_type,
        String::from_utf8(response.body().to_vec()).unwrap(),
    )
}

/// `promtool check metrics` on a scrape (Debian's prometheus package, which `.ci/run`
/// installs and requires with IEWATCH_REQUIRE_PROMTOOL; elsewhere said once and passed).
fn promtool_check(scrape: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        common::not_run(
            "IEWATCH_REQUIRE_PROMTOOL",
            "promtool check metrics (tests/service.rs): promtool is not installed; \
             install Debian's prometheus package",
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `name{labels}` → value, from the Prometheus/OpenMetrics text.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad metrics line {l:?}"));
            (
                name.to_owned(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_are_served_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::from_secs(3 * 86_400)));
    let config = write_config(
        dir.path(),
        &sim,
        &["MySampleJob"],
        "[http]\nlisten = \"127.0.0.1:0\"\n",
    );
    let daemon = RunningDaemon::start(&config).await;
    let base = format!("http://{}", daemon.started.http.unwrap());
    assert!(common::wait_until(Duration::from_secs(10), || sim.requests().len() >= 2).await);

    assert_eq!(
        get(&format!("{base}/healthz")).await,
        (200, "ok\n".to_owned())
    );
    // What Prometheus sends: OpenMetrics preferred, the text format accepted.
    let (content_type, text) = scrape(
        &format!("{base}/metrics"),
        Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"),
    )
    .await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // A scraper that asks for the text format (or says nothing) gets it, and it is
    // clean by promtool's reading.
    for accept in [Some("text/plain;version=0.0.4"), None] {
        let (content_type, plain) = scrape(&format!("{base}/metrics"), accept).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!plain.contains("# EOF"), "{plain}");
        assert!(
            plain.contains("# TYPE iewatch_polls_total counter"),
            "{plain}"
        );
        promtool_check(&plain);
    }
    let metrics = parse_metrics(&text);
    assert!(
        metrics["iewatch_polls_total{outcome=\"modified\"}"] >= 1.0,
        "{text}"
    );
    assert!(
        metrics["iewatch_polls_total{outcome=\"not_modified\"}"] >= 1.0,
        "{text}"
    );
    assert!(
        metrics["iewatch_poll_duration_seconds_count"] >= 2.0,
        "{text}"
    );
    assert_eq!(
        metrics
            ["iewatch_job_state{account=\"sim\",job_name=\"MySampleJob\",state=\"Transferring\"}"],
        1.0
    );
    assert_eq!(
        metrics["iewatch_job_percent_complete{account=\"sim\",job_name=\"MySampleJob\"}"],
        15.0
    );
    assert!(
        metrics
            ["iewatch_job_last_success_timestamp_seconds{account=\"sim\",job_name=\"MySampleJob\"}"]
            > 1.7e9
    );
    assert_eq!(
        metrics["iewatch_events_total{type=\"job.first_seen\"}"],
        1.0
    );
    assert_eq!(metrics["iewatch_jobs_watched"], 1.0);
    assert!(metrics.contains_key("iewatch_outbox_backlog"));
    assert_eq!(get(&format!("{base}/nope")).await.0, 404);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_when_the_database_stops_taking_writes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    let (config, addr) = common::http_config(dir.path(), &sim, &["MySampleJob"], "");
    let mut daemon = common::DaemonProcess::start(&config);
    let base = format!("http://{addr}");
    assert!(
        common::wait_for(Duration::from_secs(10), || async {
            common::http_status(&addr, "/healthz").await == Some(200)
        })
        .await,
        "healthy at first"
    );

    let db = dir.path().join("iewatch.db");
    let wal = dir.path().join("iewatch.db-wal");
    let stop = common::WriteStop::read_only(&[&db, &wal], daemon.pid());
    // /healthz proves with a commit of its own when the last one is old or failed.
    let mut answer = get(&format!("{base}/healthz")).await;
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while answer.0 != 503 && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = get(&format!("{base}/healthz")).await;
    }
    let (status, reason) = answer;
    drop(stop);
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("database"), "{reason}");
    assert!(daemon.alive(), "no crash");
    assert!(
        common::wait_for(Duration::from_secs(10), || async {
            get(&format!("{base}/healthz")).await.0 == 200
        })
        .await
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notify_socket_sees_ready_status_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    let config = write_config(dir.path(), &sim, &["MySampleJob"], "");
    let socket_path = dir.path().join("notify.sock");
    let notes = common::Notifications::bind(&socket_path);
    let mut child = common::DaemonCommand::new(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .spawn();
    let pid = child.id().unwrap() as i32;
    notes.wait_for("READY=1", 1).await;
    notes.wait_for("STATUS=watching 1 jobs", 1).await;
    notes.wait_for("WATCHDOG=1", 1).await;
    assert_eq!(notes.count("READY=1"), 1);
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { kill(pid, 1) }, 0); // SIGHUP
    notes.wait_for("RELOADING=1", 1).await;
    let messages = notes.messages();
    let reloading = messages.iter().find(|m| m.contains("RELOADING=1")).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notes.wait_for("READY=1", 2).await;
    assert_eq!(unsafe { kill(pid, 15) }, 0); // SIGTERM
    notes.wait_for("STOPPING=1", 1).await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

/// Runs `iewatch ARGS` (a demo) to its end; what it printed.
async fn demo(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(170),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("demo finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_demo_runs_to_completion_and_prints_the_completed_with_errors_alert() {
    let stdout = demo(&["demo"]).await;
    let alert = stdout
        .lines()
        .find(|l| {
            l.starts_with("ALERT") && l.contains("copy status InProgress → CompletedWithErrors")
        })
        .unwrap_or_else(|| panic!("no CompletedWithErrors alert in:\n{stdout}"));
    assert!(
        alert.contains("error") && alert.contains("drive 9WM3NZFS") && alert.contains("signed ✓"),
        "{alert}"
    );
    // And what failed on that drive, from its error log.
    assert!(
        stdout.lines().any(|l| l.starts_with("ALERT")
            && l.contains("drive.errors")
            && l.contains(&format!("errors: {}", common::IMPORT_REPORT))),
        "{stdout}"
    );
    assert!(
        stdout.contains("What failed on the drives:    iewatch errors MySampleJob --database"),
        "{stdout}"
    );
    assert!(!stdout.contains("BAD SIGNATURE"), "{stdout}");
    assert!(
        stdout.contains("Timeline of demo/MySampleJob (34 events, 34 alerts delivered)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_databox_demo_follows_a_portal_order_to_completion() {
    let stdout = demo(&["demo", "--databox"]).await;
    for (event, text) in [
        ("job.shipping_updated", "shipping: delivery UPS 1Z"),
        ("job.delayed", "delayed: AtAzureDC HighDemandDelay"),
        (
            "drive.copy_status_changed",
            "InProgress → CompletedWithErrors",
        ),
        ("job.state_changed", "ShippedToCustomer → Completed"),
        (
            "drive.errors",
            "errors: 3 files failed: 3 UploadErrorCloudHttp; first: photos/a?.jpg",
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with("ALERT")
                && l.contains(event)
                && l.contains(text)
                && l.contains("signed ✓")),
            "no {event} alert with {text:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("BAD SIGNATURE"), "{stdout}");
    assert!(
        stdout.contains("Timeline of demo/portal-import-01 (27 events, 27 alerts delivered)"),
        "{stdout}"
    );
}
