//! poll_unchanged: 1,000 jobs polled against the simulator (a separate process) over TLS
//! keep-alive, every answer a 412. Measures iewatch's poll rate and CPU per 1,000 polls,
//! and in the same run a bare hyper-rustls loop sending the same requests, before and after
//! the daemon: the wire limit. Target: iewatch reaches at least 0.97 of the bare loop's
//! rate (the mean of its two runs).

mod support;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use iewatch::{http_client, tls};

const JOBS: usize = 1000;
const CONCURRENCY: usize = 8;
const MEASURE: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(8);

fn main() {
    support::block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let sim =
        support::SimulatorProcess::start(&support::identical_jobs(dir.path(), JOBS), dir.path());
    let jobs = support::job_names(JOBS);

    // The wire limit: the same requests from a bare client, as fast as 8 workers can go.
    let identity = tls::Identity::load(&sim.certs.join("management.pem"), None).unwrap();
    let ca = tls::load_certificates(&sim.certs.join("ca.pem")).unwrap();
    let client = http_client::build_client(
        tls::client_config(tls::root_store(&ca, false), Some(&identity)).unwrap(),
        Duration::from_secs(5),
        true,
    );
    let url = |job: &str| {
        format!("{}/afb1a4eb-bc88-4ce1-b1af-dfec80067464/services/importexport/storageaccounts/xttest/jobs/{job}", sim.endpoint)
    };
    let request = |job: &str, etag: Option<&str>| {
        let mut builder = http::Request::get(url(job))
            .header("x-ms-version", "2014-11-01")
            .header("accept", "application/json;odata=minimalmetadata")
            .header("user-agent", http_client::USER_AGENT);
        if let Some(etag) = etag {
            builder = builder.header("if-none-match", etag);
        }
        builder.body(Full::new(Bytes::new())).unwrap()
    };
    let first = http_client::send(
        &client,
        request(&jobs[0], None),
        Duration::from_secs(5),
        1 << 20,
    )
    .await
    .unwrap();
    let etag: Arc<str> = first.headers()["etag"].to_str().unwrap().into();
    let bare = Bare {
        client,
        etag,
        jobs: Arc::new(jobs.clone()),
        url: sim.endpoint.clone(),
    };
    // Unmeasured: the simulator's first couple of hundred thousand requests fill its
    // request log (new memory, page faults); after that it runs as it will for the rest.
    // Without this the first bare run was 10-50 % slower than the one after the daemon.
    bare.run(WARM_UP).await;
    let (bare_before, bare_cpu_before) = bare.run(MEASURE).await;

    // iewatch: the real daemon, every job due again after 1 ms, 8 polls in flight.
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_path = support::write_config(
        dir.path(),
        &sim,
        &jobs,
        &format!("poll_interval = \"1ms\"\nmax_concurrent_polls = {CONCURRENCY}\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n"),
    );
    let config = iewatch::config::Config::load(&config_path).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_reload, reload_rx) = tokio::sync::mpsc::channel(1);
    let daemon = tokio::spawn(iewatch::daemon::run(
        config_path,
        config,
        shutdown.clone(),
        reload_rx,
        None,
    ));
    let metrics_url = format!("http://127.0.0.1:{http_port}/metrics");
    let plain = http_client::build_client(
        tls::client_config(tls::root_store(&[], false), None).unwrap(),
        Duration::from_secs(2),
        false,
    );
    let not_modified = || {
        let plain = plain.clone();
        let url = metrics_url.clone();
        async move {
            let request = http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap();
            match http_client::send(&plain, request, Duration::from_secs(5), 1 << 22).await {
                Ok(response) => support::metric(
                    &String::from_utf8_lossy(response.body()),
                    "iewatch_polls_total{outcome=\"not_modified\"}",
                ),
                Err(_) => 0.0,
            }
        }
    };
    let warm = Instant::now();
    while not_modified().await < (2 * JOBS) as f64 {
        assert!(
            warm.elapsed() < Duration::from_secs(60),
            "daemon did not warm up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let polls_before = not_modified().await;
    let cpu_before = support::cpu_time("self");
    let started = Instant::now();
    tokio::time::sleep(MEASURE).await;
    let polls = not_modified().await - polls_before;
    let elapsed = started.elapsed();
    let cpu = support::cpu_time("self") - cpu_before;
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
    let rate = polls / elapsed.as_secs_f64();
    // The bare loop again: the daemon is compared with the mean of the runs on either
    // side, so a machine that drifts (a neighbour on the host) moves both alike.
    let (bare_after, bare_cpu_after) = bare.run(MEASURE).await;
    let bare_rate = (bare_before + bare_after) / 2.0;
    let bare_cpu = (bare_cpu_before + bare_cpu_after) / 2.0;

    support::report(
        "poll_unchanged",
        &[
            ("poll_unchanged_iewatch_rate", rate, "polls/s"),
            ("poll_unchanged_bare_rate", bare_rate, "polls/s"),
            ("poll_unchanged_bare_rate_before", bare_before, "polls/s"),
            ("poll_unchanged_bare_rate_after", bare_after, "polls/s"),
            ("poll_unchanged_ratio", rate / bare_rate, "x"),
            (
                "poll_unchanged_iewatch_cpu",
                cpu.as_secs_f64() * 1000.0 / (polls / 1000.0),
                "cpu-ms/1000 polls",
            ),
            ("poll_unchanged_bare_cpu", bare_cpu, "cpu-ms/1000 polls"),
        ],
    );
}

/// The wire limit: the daemon's requests from a bare client, as fast as 8 workers go.
struct Bare {
    client: http_client::HttpsClient,
    etag: Arc<str>,
    jobs: Arc<Vec<String>>,
    url: String,
}

impl Bare {
    /// Polls for `period`: the rate, and CPU-ms per 1,000 polls.
    async fn run(&self, period: Duration) -> (f64, f64) {
        let count = Arc::new(AtomicU64::new(0));
        let cpu_before = support::cpu_time("self");
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..CONCURRENCY {
            let (client, count, etag, jobs) = (
                self.client.clone(),
                count.clone(),
                self.etag.clone(),
                self.jobs.clone(),
            );
            let url = self.url.clone();
            workers.spawn(async move {
                let mut i = worker;
                while started.elapsed() < period {
                    let job = &jobs[i % jobs.len()];
                    let request = http::Request::get(format!("{url}/afb1a4eb-bc88-4ce1-b1af-dfec80067464/services/importexport/storageaccounts/xttest/jobs/{job}"))
                        .header("x-ms-version", "2014-11-01")
                        .header("accept", "application/json;odata=minimalmetadata")
                        .header("user-agent", http_client::USER_AGENT)
                        .header("if-none-match", &*etag)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let response = http_client::send(&client, request, Duration::from_secs(5), 1 << 20).await.unwrap();
                    assert_eq!(response.status(), 412);
                    count.fetch_add(1, Ordering::Relaxed);
                    i += CONCURRENCY;
                }
            });
        }
        while workers.join_next().await.is_some() {}
        let bare_elapsed = started.elapsed();
        let bare_cpu = support::cpu_time("self") - cpu_before;
        let bare_polls = count.load(Ordering::Relaxed) as f64;
        let bare_rate = bare_polls / bare_elapsed.as_secs_f64();
        (
            bare_rate,
            bare_cpu.as_secs_f64() * 1000.0 / (bare_polls / 1000.0),
        )
    }
}
