//! poll_unchanged: 1,000 jobs polled against the simulator (a separate process) over TLS
//! keep-alive, every answer a 412. Measures iewatch's poll rate and CPU per 1,000 polls
//! against a bare hyper-rustls loop sending the same requests: the wire limit. Target:
//! iewatch reaches at least 0.97 of the bare loop's rate.
//!
//! The host's neighbours move the rate by up to 30 % over seconds, so the two are
//! interleaved: a bare slice, then rounds of a daemon slice and a bare slice. The daemon
//! is the real binary in its own process, warmed up once and stopped (SIGSTOP) while the
//! bare loop runs. Each round's ratio is its daemon slice against the mean of the bare
//! slices on either side; the figure is the median round, the lowest and highest beside
//! it.

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
/// One slice of either loop.
const SLICE: Duration = Duration::from_millis(1000);
/// Daemon slices, each between two bare ones.
const ROUNDS: usize = 21;
const WARM_UP: Duration = Duration::from_secs(8);
/// After the first polls, before the daemon is first stopped.
const SETTLE: Duration = Duration::from_secs(2);
/// After each resume, unmeasured: the polls that fell due while it was stopped.
const CATCH_UP: Duration = Duration::from_millis(200);

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
    let daemon = Daemon::start(
        &config_path,
        format!("http://127.0.0.1:{http_port}/metrics"),
    )
    .await;
    let mut bare_slices = vec![bare.run(SLICE).await];
    let mut daemon_slices = Vec::new();
    for _ in 0..ROUNDS {
        daemon_slices.push(daemon.run(SLICE).await);
        bare_slices.push(bare.run(SLICE).await);
    }
    let mut ratios: Vec<f64> = daemon_slices
        .iter()
        .zip(bare_slices.windows(2))
        .map(|(daemon, bare)| daemon.rate() / ((bare[0].rate() + bare[1].rate()) / 2.0))
        .collect();
    ratios.sort_by(f64::total_cmp);
    daemon.stop();
    let (iewatch, bare) = (Slice::sum(&daemon_slices), Slice::sum(&bare_slices));

    support::report(
        "poll_unchanged",
        &[
            ("poll_unchanged_iewatch_rate", iewatch.rate(), "polls/s"),
            ("poll_unchanged_bare_rate", bare.rate(), "polls/s"),
            ("poll_unchanged_ratio", ratios[ROUNDS / 2], "x"),
            ("poll_unchanged_ratio_lowest", ratios[0], "x"),
            ("poll_unchanged_ratio_highest", ratios[ROUNDS - 1], "x"),
            (
                "poll_unchanged_iewatch_cpu",
                iewatch.cpu_per_1000(),
                "cpu-ms/1000 polls",
            ),
            (
                "poll_unchanged_bare_cpu",
                bare.cpu_per_1000(),
                "cpu-ms/1000 polls",
            ),
        ],
    );
}

/// What one slice of polling did.
#[derive(Clone, Copy, Default)]
struct Slice {
    polls: f64,
    elapsed: Duration,
    cpu: Duration,
}

impl Slice {
    fn rate(self) -> f64 {
        self.polls / self.elapsed.as_secs_f64()
    }

    fn cpu_per_1000(self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / (self.polls / 1000.0)
    }

    fn sum(slices: &[Slice]) -> Slice {
        slices.iter().fold(Slice::default(), |sum, s| Slice {
            polls: sum.polls + s.polls,
            elapsed: sum.elapsed + s.elapsed,
            cpu: sum.cpu + s.cpu,
        })
    }
}

/// iewatch: the real daemon, every job due again after 1 ms, 8 polls in flight; stopped
/// (SIGSTOP) between its slices.
struct Daemon {
    child: std::process::Child,
    pid: String,
    metrics_url: String,
    plain: http_client::HttpsClient,
}

impl Daemon {
    /// Starts the daemon and waits until every job was polled twice (loaded, quiet) and
    /// a settling second more; leaves it stopped.
    async fn start(config: &std::path::Path, metrics_url: String) -> Daemon {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args(["run", "-c"])
            .arg(config)
            .env("IEWATCH_LOG", "warn")
            .spawn()
            .unwrap();
        let daemon = Daemon {
            pid: child.id().to_string(),
            child,
            metrics_url,
            plain: http_client::build_client(
                tls::client_config(tls::root_store(&[], false), None).unwrap(),
                Duration::from_secs(2),
                false,
            ),
        };
        let warm = Instant::now();
        // Until its listener is up a scrape fails, and until its first unchanged poll the
        // count is not there: both are waited out.
        while daemon.scrape().await.ok().flatten().unwrap_or(0.0) < (2 * JOBS) as f64 {
            assert!(
                warm.elapsed() < Duration::from_secs(60),
                "daemon did not warm up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(SETTLE).await;
        daemon.signal("-STOP");
        daemon
    }

    /// Lets the daemon run for `period` (after a moment to catch up) and stops it again.
    async fn run(&self, period: Duration) -> Slice {
        self.signal("-CONT");
        tokio::time::sleep(CATCH_UP).await;
        let polls_before = self.not_modified().await;
        let cpu_before = support::cpu_time(&self.pid);
        let started = Instant::now();
        tokio::time::sleep(period).await;
        let polls = self.not_modified().await - polls_before;
        let slice = Slice {
            polls,
            elapsed: started.elapsed(),
            cpu: support::cpu_time(&self.pid) - cpu_before,
        };
        self.signal("-STOP");
        slice
    }

    fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {}", self.pid);
    }

    /// Stops the daemon for good; it must exit cleanly.
    fn stop(mut self) {
        self.signal("-CONT");
        self.signal("-TERM");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the daemon failed: {exit}");
    }

    /// The daemon's count of unchanged polls. A scrape that fails or lacks the count once
    /// the daemon is up fails the run: a count taken as 0 would make a slice's figure up.
    async fn not_modified(&self) -> f64 {
        match self.scrape().await {
            Ok(Some(count)) => count,
            Ok(None) => panic!("the daemon's /metrics has no count of unchanged polls"),
            Err(e) => panic!("the daemon's /metrics: {e}"),
        }
    }

    async fn scrape(&self) -> Result<Option<f64>, http_client::HttpError> {
        let request = http::Request::get(&self.metrics_url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response =
            http_client::send(&self.plain, request, Duration::from_secs(5), 1 << 22).await?;
        Ok(support::metric(
            &String::from_utf8_lossy(response.body()),
            "iewatch_polls_total{outcome=\"not_modified\"}",
        ))
    }
}

impl Drop for Daemon {
    /// A failed run leaves no stopped daemon behind; one that exited (`stop`) is left be.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.pid])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The wire limit: the daemon's requests from a bare client, as fast as 8 workers go.
struct Bare {
    client: http_client::HttpsClient,
    etag: Arc<str>,
    jobs: Arc<Vec<String>>,
    url: String,
}

impl Bare {
    /// Polls for `period`.
    async fn run(&self, period: Duration) -> Slice {
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
        Slice {
            polls: count.load(Ordering::Relaxed) as f64,
            elapsed: started.elapsed(),
            cpu: support::cpu_time("self") - cpu_before,
        }
    }
}
