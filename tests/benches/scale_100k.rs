//! scale_100k: 100,000 jobs, half on a classic account and half over Resource Manager,
//! every 5 minutes (333 polls/s), the daemon a separate process.
//! Targets: peak RSS at most 320 MiB, no poll later than its interval plus jitter, CPU at
//! most 25 % of one core, startup with 100,000 jobs in the database at most 5 s.
//!
//! Phases: a cold start (empty database) is timed to READY=1 on a notify socket of the
//! benchmark's own, as systemd would see it; one interval lets the first polls (spread
//! over the interval) create every job's row; the next interval is measured (every job's
//! gap since its previous poll, CPU, RSS); then the daemon is stopped and started again
//! on the full database and that start is timed the same way. The simulator runs in this
//! process; its request log is drained as the run goes, so no poll is lost to its cap.

mod support;

use std::{
    collections::HashMap,
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use iewatch::simulator::{self, RunningSimulator, Scenario, SimulatorOptions};

const JOBS: usize = 100_000;
const INTERVAL: Duration = Duration::from_secs(300);
/// The first polls are spread over one interval; every job has been polled once after it.
const WARM_UP: Duration = Duration::from_secs(310);
const RUN: Duration = INTERVAL;
/// How often the simulator's log is drained (its cap is 200,000 requests).
const DRAIN: Duration = Duration::from_secs(5);
const READY_WITHIN: Duration = Duration::from_secs(60);

fn main() {
    support::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let scenario = Scenario::load(&support::identical_jobs(dir.path(), JOBS)).unwrap();
        let sim = simulator::start(SimulatorOptions {
            scenario,
            listen: "127.0.0.1:0".parse().unwrap(),
            certs_dir: dir.path().join("certs"),
            arm_listen: None,
        })
        .await
        .unwrap();
        let config_path = write_config(dir.path(), &sim);

        let (mut daemon, cold_start) = start_daemon(dir.path(), &config_path);
        let pid = daemon.id().to_string();
        let mut polls = Polls::default();
        polls.follow(&sim, Instant::now() + WARM_UP, None).await;
        let cpu_before = support::cpu_time(&pid);
        let measure_from = Instant::now();
        polls
            .follow(&sim, measure_from + RUN, Some(measure_from))
            .await;
        let cpu = support::cpu_time(&pid) - cpu_before;
        let peak_rss = support::peak_rss_mib(&pid);
        stop(&mut daemon);

        let (mut again, warm_start) = start_daemon(dir.path(), &config_path);
        stop(&mut again);

        assert_eq!(polls.last.len(), JOBS, "every job was polled");
        assert!(
            polls.gaps.len() >= JOBS * 9 / 10,
            "most jobs were polled twice: {} gaps",
            polls.gaps.len()
        );
        let measured = support::ScaleRun {
            peak_rss_mib: peak_rss,
            cpu,
            run: RUN,
            interval: INTERVAL,
            gaps: polls.gaps,
        };
        let mut figures = measured.figures([
            "scale_100k_peak_rss",
            "scale_100k_cpu",
            "scale_100k_polls",
            "scale_100k_gap_p50",
            "scale_100k_gap_max",
            "scale_100k_late_polls",
        ]);
        figures.extend([
            (
                "scale_100k_startup_empty",
                cold_start.as_secs_f64(),
                "s to READY=1, empty database",
            ),
            (
                "scale_100k_startup",
                warm_start.as_secs_f64(),
                "s to READY=1, 100,000 jobs in the database",
            ),
        ]);
        support::report("scale_100k", &figures);
        sim.stop().await;
    });
}

/// Half the jobs on the classic account, half on the Resource Manager one.
fn write_config(dir: &Path, sim: &RunningSimulator) -> std::path::PathBuf {
    let mut config = format!(
        "[daemon]\ndatabase = \"{}\"\npoll_interval = \"5m\"\nmax_concurrent_polls = 16\n\n",
        dir.join("iewatch.db").display()
    );
    config.push_str(&sim.account_block("classic"));
    config.push('\n');
    config.push_str(&sim.arm_account_block("arm"));
    for (i, job) in support::job_names(JOBS).iter().enumerate() {
        let account = if i % 2 == 0 { "classic" } else { "arm" };
        config.push_str(&format!(
            "\n[[job]]\naccount = \"{account}\"\nname = \"{job}\"\n"
        ));
    }
    let path = dir.join("iewatch.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Starts `iewatch run` with a notify socket of its own and waits for READY=1.
fn start_daemon(dir: &Path, config: &Path) -> (Child, Duration) {
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let started = Instant::now();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["run", "-c"])
        .arg(config)
        .env("IEWATCH_LOG", "warn")
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < READY_WITHIN {
        if let Ok(n) = socket.recv(&mut buffer) {
            if String::from_utf8_lossy(&buffer[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return (daemon, started.elapsed());
            }
        }
    }
    stop(&mut daemon);
    panic!("the daemon was not ready within {READY_WITHIN:?}");
}

/// SIGTERM, then wait: the daemon stops as systemd would stop it.
fn stop(daemon: &mut Child) {
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
}

/// Every job's last poll, and the gaps between polls seen in the measured window.
#[derive(Default)]
struct Polls {
    last: HashMap<String, Instant>,
    gaps: Vec<Duration>,
}

impl Polls {
    /// Drains the simulator's log until `until`; gaps ending at or after `measure_from`
    /// count.
    async fn follow(
        &mut self,
        sim: &RunningSimulator,
        until: Instant,
        measure_from: Option<Instant>,
    ) {
        loop {
            for request in sim.take_requests() {
                let Some(job) = request.job else { continue };
                if let Some(previous) = self.last.insert(job, request.at) {
                    if measure_from.is_some_and(|from| request.at >= from) {
                        self.gaps
                            .push(request.at.saturating_duration_since(previous));
                    }
                }
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep(DRAIN.min(until - now)).await;
        }
    }
}
