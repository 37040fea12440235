//! What every benchmark shares: reporting figures, CPU time, and a simulator started as
//! a separate process so that its CPU is not counted as iewatch's.

#![allow(dead_code)]

/// A PostgreSQL cluster of the benchmark's own (the tests' harness).
#[path = "../../common/postgres.rs"]
pub mod postgres;
/// What the PostgreSQL harness says when no server is installed.
#[path = "../../common/prerequisites.rs"]
pub mod prerequisites;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Runs a benchmark on the runtime every benchmark uses: two workers, the machine's size.
pub fn block_on<F: std::future::Future>(benchmark: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(benchmark)
}

/// One figure: name, value, unit.
pub type Figure = (&'static str, f64, &'static str);

/// Prints `name: value unit` lines and writes them as JSON under target/bench-results/.
pub fn report(bench: &str, figures: &[Figure]) {
    let mut json = serde_json::Map::new();
    for (name, value, unit) in figures {
        println!("{name}: {value:.2} {unit}");
        json.insert(
            (*name).to_owned(),
            serde_json::json!({ "value": value, "unit": unit }),
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-results");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{bench}.json"));
    if let Err(e) = std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

/// What a scale benchmark measured of the daemon over `run`: its peak RSS, its CPU, and
/// the gaps between each job's polls (any order).
pub struct ScaleRun {
    pub peak_rss_mib: f64,
    pub cpu: Duration,
    pub run: Duration,
    pub interval: Duration,
    pub gaps: Vec<Duration>,
}

impl ScaleRun {
    /// Polls later than the interval, its +10 % jitter and half a second.
    pub fn late_polls(&self) -> usize {
        let allowed = self.interval.mul_f64(1.1) + Duration::from_millis(500);
        self.gaps.iter().filter(|g| **g > allowed).count()
    }

    /// The figures every scale benchmark reports, under `names`: peak RSS, CPU, polls/s,
    /// gap p50, gap max, late polls.
    pub fn figures(mut self, names: [&'static str; 6]) -> Vec<Figure> {
        self.gaps.sort();
        let run = self.run.as_secs_f64();
        let late = self.late_polls() as f64;
        let [rss, cpu, polls, p50, max, late_name] = names;
        vec![
            (rss, self.peak_rss_mib, "MiB"),
            (cpu, self.cpu.as_secs_f64() / run * 100.0, "% of one core"),
            (polls, self.gaps.len() as f64 / run, "polls/s"),
            (p50, percentile_ms(&self.gaps, 50.0) / 1000.0, "s"),
            (max, percentile_ms(&self.gaps, 100.0) / 1000.0, "s"),
            (late_name, late, "polls later than interval + jitter"),
        ]
    }
}

/// CPU time (user + system) of a process, from /proc (clock ticks of 10 ms).
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Peak resident set size of a process, in MiB.
pub fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `iewatch simulate` as a child process on a free loopback port.
pub struct SimulatorProcess {
    pub child: Child,
    pub endpoint: String,
    pub certs: PathBuf,
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SimulatorProcess {
    pub fn start(scenario: &Path, dir: &Path) -> SimulatorProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let certs = dir.join("sim-certs");
        let mut child = Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args([
                "simulate",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--scenario",
            ])
            .arg(scenario)
            .arg("--certs")
            .arg(&certs)
            .env("IEWATCH_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let first = BufReader::new(stdout)
            .lines()
            .next()
            .and_then(Result::ok)
            .unwrap_or_default();
        assert!(
            first.starts_with("simulator listening on"),
            "simulator did not start: {first}"
        );
        SimulatorProcess {
            child,
            endpoint: format!("https://127.0.0.1:{port}"),
            certs,
        }
    }

    /// An `[[account]]` block for a config file.
    pub fn account_block(&self, name: &str) -> String {
        format!(
            "[[account]]\nname = \"{name}\"\nsubscription_id = \"afb1a4eb-bc88-4ce1-b1af-dfec80067464\"\nstorage_account = \"xttest\"\nendpoint = \"{}\"\ncertificate = \"{}\"\nca_certificate = \"{}\"\n",
            self.endpoint,
            self.certs.join("management.pem").display(),
            self.certs.join("ca.pem").display()
        )
    }
}

/// A scenario of `count` identical, unchanging jobs named `bench-00001`...
pub fn identical_jobs(dir: &Path, count: usize) -> PathBuf {
    let path = dir.join("bench.toml");
    std::fs::write(
        &path,
        format!("speed = 1\n\n[[job]]\nname = \"bench\"\ncount = {count}\nstate = \"Transferring\"\ndrive = [{{ id = \"B3NCH001\", state = \"Transferring\" }}]\n"),
    )
    .unwrap();
    path
}

/// Job names of [`identical_jobs`].
pub fn job_names(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("bench-{i:05}")).collect()
}

/// A config for `jobs` of the simulator, written into `dir`.
pub fn write_config(
    dir: &Path,
    sim: &SimulatorProcess,
    jobs: &[String],
    daemon_extra: &str,
) -> PathBuf {
    let mut text = format!(
        "[daemon]\ndatabase = \"{}\"\n{daemon_extra}\n",
        dir.join("iewatch.db").display()
    );
    text.push_str(&sim.account_block("sim"));
    for job in jobs {
        text.push_str(&format!("\n[[job]]\naccount = \"sim\"\nname = \"{job}\"\n"));
    }
    let path = dir.join("iewatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The value of one metric in a Prometheus text exposition; None when it is not there
/// (a labelled series appears at its first count) or is not a number.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// Percentile (0-100) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Queues `events` pending alerts for webhook `ops`, spread over `jobs` new jobs, as the
/// daemon leaves its database during an outage: jobs, events, deliveries and their lanes.
pub async fn queue_backlog(store: &iewatch::store::Store, jobs: i64, events: i64) {
    queue_backlog_for(store, jobs, events, &["ops"]).await;
}

/// [`queue_backlog`] with each event queued for every webhook of `webhooks`.
pub async fn queue_backlog_for(
    store: &iewatch::store::Store,
    jobs: i64,
    events: i64,
    webhooks: &[&str],
) {
    let names = webhooks
        .iter()
        .map(|w| format!("SELECT '{w}' AS name"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut tx = store.pool().begin().await.unwrap();
    for statement in [
        format!(
            "INSERT INTO jobs (account, name, job_type, state, percent_complete)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {jobs})
             SELECT 'prod', printf('job-%05d', i), 'Import', 'Transferring', 10 FROM n"
        ),
        format!(
            "INSERT INTO events (job_id, drive_id, type, from_value, to_value, observed_at, severity, details)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             SELECT (i % {jobs}) + 1, NULL, 'job.progress', CAST(i / {jobs} AS TEXT), CAST(i / {jobs} + 1 AS TEXT),
                    strftime('%Y-%m-%d %H:%M:%f', 'now'), 'info',
                    '{{\"job\":{{\"type\":\"Import\",\"state\":\"Transferring\",\"percent_complete\":10}}}}'
             FROM n",
            events - 1
        ),
        format!(
            "INSERT INTO deliveries (event_id, job_id, webhook, created_at, next_attempt_at)
             SELECT id, job_id, w.name, observed_at, observed_at FROM events, ({names}) AS w"
        ),
        // The lanes the daemon keeps beside its outbox (migrations/0002).
        "INSERT INTO outbox_lanes (webhook, job_id, next_attempt_at)
         SELECT webhook, job_id, MIN(next_attempt_at) FROM deliveries GROUP BY webhook, job_id"
            .to_owned(),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        events * webhooks.len() as i64
    );
}

/// 10,000 jobs (`job-00001` ...) in `prod` with two drives each (SQLite), for the
/// benchmarks that read a full database.
pub const SQLITE_JOBS_FILL: [&str; 3] = [
    "INSERT INTO jobs (account, name, job_type, state, percent_complete, last_polled_at, last_changed_at, first_seen_at)
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
     SELECT 'prod', printf('job-%05d', i), 'Import', 'Transferring', i % 100,
            '2026-11-24 10:00:00.000', '2026-11-24 09:00:00.000', '2026-11-01 09:00:00.000' FROM n",
    "INSERT INTO drives (job_id, drive_id, position, state, copy_status, percent_complete, updated_at)
     SELECT id, 'A' || id, 0, 'Transferring', 'InProgress', 40, '2026-11-24 09:00:00.000' FROM jobs",
    "INSERT INTO drives (job_id, drive_id, position, state, copy_status, percent_complete, updated_at)
     SELECT id, 'B' || id, 1, 'Completed', 'Completed', 100, '2026-11-24 09:00:00.000' FROM jobs",
];
