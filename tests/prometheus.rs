//! What a real Prometheus (Debian's `prometheus` package, default scrape settings) makes
//! of `/metrics`, read back through its HTTP API with the shipped dashboard's own
//! queries: one legend per watched job, no label renamed. And the last-success gauge,
//! which must move on unchanged polls too.
//!
//! Without Prometheus the first test says so once and passes without running; `.ci/run`
//! installs it and sets IEWATCH_REQUIRE_PROMETHEUS, which makes its absence a failure.

mod common;

use std::{collections::BTreeSet, path::Path, time::Duration};

use bytes::Bytes;
use common::{http_config, scenario, start_simulator, RunningDaemon};
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;

const JOBS: [&str; 2] = ["MySampleJob", "SecondJob"];

/// The import lifecycle with a second job beside the first, both frozen mid-copy.
async fn two_jobs(dir: &Path) -> iewatch::simulator::RunningSimulator {
    let mut lifecycle = scenario("import-lifecycle.toml");
    let mut second = lifecycle.jobs[0].clone();
    second.name = JOBS[1].into();
    lifecycle.jobs.push(second);
    let sim = start_simulator(lifecycle, dir).await;
    sim.set_time(Some(Duration::from_secs(3 * 86_400))); // Transferring, 15 %
    sim
}

/// GET `path` on `addr` (plain HTTP): the body as JSON.
async fn get_json(addr: &str, path: &str) -> Option<Value> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}").parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// An instant query through Prometheus' API: the result vector.
async fn query(prometheus: &str, expr: &str) -> Vec<Value> {
    let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let answer = get_json(prometheus, &format!("/api/v1/query?query={encoded}"))
        .await
        .unwrap_or_else(|| panic!("Prometheus answers {expr}"));
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `{{label}}` in `format` replaced by the series' labels, as Grafana draws a legend.
fn legend(format: &str, labels: &Value) -> String {
    let mut out = format.to_owned();
    if let Some(labels) = labels.as_object() {
        for (name, value) in labels {
            out = out.replace(
                &format!("{{{{{name}}}}}"),
                value.as_str().unwrap_or_default(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_prometheus_scrape_gives_the_dashboard_one_legend_per_job() {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        common::prerequisites::not_run(
            "IEWATCH_REQUIRE_PROMETHEUS",
            "the dashboard through a real Prometheus (tests/prometheus.rs): prometheus is \
             not installed; `apt-get install prometheus` runs it",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sim = two_jobs(dir.path()).await;
    let (config, addr) = http_config(dir.path(), &sim, &JOBS, "");
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    for job in JOBS {
        assert!(
            common::wait_for(Duration::from_secs(20), || async {
                common::stored_etag(&db, job).await.is_some()
            })
            .await,
            "{job} polled"
        );
    }
    // Prometheus as packaged, with the scrape settings a newcomer writes: a job name,
    // a target, nothing about labels.
    let prometheus_addr = format!("127.0.0.1:{}", common::free_port());
    let settings = dir.path().join("prometheus.yml");
    std::fs::write(
        &settings,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: iewatch\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", settings.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let scraped = common::wait_for(Duration::from_secs(60), || async {
        let up = get_json(&prometheus_addr, "/api/v1/query?query=iewatch_jobs_watched").await;
        up.is_some_and(|u| {
            u["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        })
    })
    .await;
    assert!(scraped, "Prometheus scraped the daemon within 60 s");

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/iewatch.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let wanted: BTreeSet<String> = JOBS.iter().map(|j| format!("sim/{j}")).collect();
    let mut per_job_panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let series = query(&prometheus_addr, expr).await;
            for s in &series {
                let labels = &s["metric"];
                assert!(
                    labels.get("exported_job").is_none()
                        && labels.get("exported_instance").is_none(),
                    "{expr}: a label of ours was renamed: {labels}"
                );
            }
            let per_job = expr.contains("iewatch_job_") && !expr.contains("min(");
            if !per_job || expr.contains("eta_timestamp") {
                continue; // Totals; the ETA exists only once a copy has run a while.
            }
            per_job_panels += 1;
            let format = target["legendFormat"]
                .as_str()
                .unwrap_or("{{account}}/{{job_name}}");
            let legends: BTreeSet<String> = series
                .iter()
                .map(|s| legend(format, &s["metric"]))
                .collect();
            assert_eq!(
                legends, wanted,
                "{}: {expr} draws one legend per job",
                panel["title"]
            );
        }
    }
    assert!(per_job_panels >= 3, "{per_job_panels} per-job panels");
    prometheus.kill().await.unwrap();
    daemon.stop().await;
}

/// A quiet classic job answers 412 to every poll; its last success still moves, so an
/// alert on "oldest successful poll" does not fire for a healthy job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_success_moves_on_polls_that_find_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let sim = two_jobs(dir.path()).await;
    let (config, addr) = http_config(dir.path(), &sim, &JOBS[..1], "");
    let daemon = RunningDaemon::start(&config).await;
    let series =
        "iewatch_job_last_success_timestamp_seconds{account=\"sim\",job_name=\"MySampleJob\"}";
    let read = || async {
        let (_, scrape) = common::http_get(&addr, "/metrics").await?;
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert!(
        common::wait_for(Duration::from_secs(20), || async { read().await.is_some() }).await,
        "the first poll sets it"
    );
    let first = read().await.unwrap();
    let unchanged_before = sim.requests().len();
    let moved = common::wait_for(Duration::from_secs(10), || async {
        read().await.is_some_and(|now| now > first)
    })
    .await;
    let polls = sim.requests().len() - unchanged_before;
    daemon.stop().await;
    assert!(moved, "still {first} after {polls} unchanged polls");
}
