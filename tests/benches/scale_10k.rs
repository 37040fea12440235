//! scale_10k: 10,000 jobs at a 10 s interval for 60 s, the daemon a separate process.
//! Targets: peak RSS at most 64 MiB, CPU at most 30% of one core, no poll later than its
//! interval plus jitter (10 s + 10%). The simulator runs in this process, so its request
//! log gives every job's poll times and its CPU is not the daemon's.

mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use iewatch::simulator::{self, Scenario, SimulatorOptions};

const JOBS: usize = 10_000;
const INTERVAL: Duration = Duration::from_secs(10);
const RUN: Duration = Duration::from_secs(60);
/// Startup: the first polls are spread over 10 s; measure after they are all done.
const WARM_UP: Duration = Duration::from_secs(15);

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
        let jobs = support::job_names(JOBS);
        let mut config = format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"10s\"\nmax_concurrent_polls = 8\n\n",
            dir.path().join("iewatch.db").display()
        );
        config.push_str(&sim.account_block("sim"));
        for job in &jobs {
            config.push_str(&format!("\n[[job]]\naccount = \"sim\"\nname = \"{job}\"\n"));
        }
        let config_path = dir.path().join("iewatch.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args(["run", "-c"])
            .arg(&config_path)
            .env("IEWATCH_LOG", "warn")
            .spawn()
            .unwrap();
        let pid = daemon.id().to_string();
        tokio::time::sleep(WARM_UP).await;
        let cpu_before = support::cpu_time(&pid);
        let measure_from = Instant::now();
        tokio::time::sleep(RUN).await;
        let cpu = support::cpu_time(&pid) - cpu_before;
        let peak_rss = support::peak_rss_mib(&pid);
        let _ = std::process::Command::new("kill").arg(&pid).status();
        let _ = daemon.wait();

        let mut by_job: HashMap<String, Vec<Instant>> = HashMap::new();
        for request in sim.requests() {
            if let Some(job) = request.job {
                by_job.entry(job).or_default().push(request.at);
            }
        }
        let gaps: Vec<Duration> = by_job
            .values()
            .flat_map(|times| {
                times
                    .windows(2)
                    .filter(|w| w[1] >= measure_from)
                    .map(|w| w[1] - w[0])
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(by_job.len(), JOBS, "every job was polled");
        let measured = support::ScaleRun {
            peak_rss_mib: peak_rss,
            cpu,
            run: RUN,
            interval: INTERVAL,
            gaps,
        };
        let figures = measured.figures([
            "scale_10k_peak_rss",
            "scale_10k_cpu",
            "scale_10k_polls",
            "scale_10k_gap_p50",
            "scale_10k_gap_max",
            "scale_10k_late_polls",
        ]);
        support::report("scale_10k", &figures);
        sim.stop().await;
    });
}
