//! idle: the real daemon (`iewatch run`, a child process) watching 10 unchanging jobs
//! at 5 m, with the systemd watchdog on (WatchdogSec=60s, as the unit sets it), the
//! `[http]` listener and a webhook. Once every job has been polled and two heartbeats
//! have passed, it counts the context switches of all the daemon's threads (each is a
//! thread going to sleep after a wakeup, or preempted) and reads its RSS over 60 s:
//! what the daemon does between polls. Target: under 0.2 wakeups a second.

mod support;

use std::{
    collections::BTreeMap,
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const JOBS: usize = 10;
const WINDOW: Duration = Duration::from_secs(60);

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sim =
        support::SimulatorProcess::start(&support::identical_jobs(dir.path(), JOBS), dir.path());
    // A webhook that takes errors only: the notifier's worker is there, and idle.
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = support::write_config(
        dir.path(),
        &sim,
        &support::job_names(JOBS),
        &format!(
            "poll_interval = \"5m\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[[webhook]]\nname = \"ops\"\nurl = \"http://{}/hook\"\nmin_severity = \"error\"\n",
            receiver.local_addr().unwrap()
        ),
    );
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["run", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "60000000")
        .env("IEWATCH_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = daemon.id().to_string();

    // Ready, then every job polled once (the first polls are spread over 10 s).
    let mut buffer = [0u8; 4096];
    let started = Instant::now();
    loop {
        let n = notify.recv(&mut buffer).expect("READY=1 within 40 s");
        if String::from_utf8_lossy(&buffer[..n]).contains("READY=1") {
            break;
        }
    }
    let db = dir.path().join("iewatch.db");
    while polled(&db) < JOBS {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "jobs not polled"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Idle from here: two heartbeats (one pets the watchdog every 30 s) after the first
    // polls, so that what those polls left to do (the outbox backlog read, pending poll
    // times) is done. The window then holds the wakeups between polls.
    let mut beats = 0;
    while beats < 2 {
        let n = notify.recv(&mut buffer).expect("a heartbeat within 40 s");
        if String::from_utf8_lossy(&buffer[..n]).contains("WATCHDOG=1") {
            beats += 1;
        }
    }

    let before = context_switches(&pid);
    let cpu_before = support::cpu_time(&pid);
    let window = Instant::now();
    std::thread::sleep(WINDOW);
    let after = context_switches(&pid);
    // Which threads woke: the figure is their sum.
    let mut switches = 0;
    for (thread, count) in &after {
        let delta = count.saturating_sub(before.get(thread).copied().unwrap_or(0));
        if delta > 0 {
            eprintln!("  {thread}: {delta} switches");
        }
        switches += delta;
    }
    let elapsed = window.elapsed().as_secs_f64();
    let cpu = support::cpu_time(&pid) - cpu_before;
    let rss = rss_mib(&pid);
    let alive = daemon.try_wait().unwrap().is_none();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(alive, "the daemon died during the window");

    support::report(
        "idle",
        &[
            ("idle_wakeups", switches as f64 / elapsed, "per s"),
            ("idle_cpu", cpu.as_secs_f64() * 1000.0 / elapsed, "ms per s"),
            ("idle_rss", rss, "MiB"),
        ],
    );
}

/// Jobs with a recorded poll.
fn polled(db: &std::path::Path) -> usize {
    use sqlx::Connection as _;
    support::block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let Ok(mut connection) = sqlx::SqliteConnection::connect(&url).await else {
            return 0;
        };
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE last_polled_at IS NOT NULL")
            .fetch_one(&mut connection)
            .await
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    })
}

/// Context switches (voluntary and not) of every thread of a process: each is the
/// thread going to sleep after a wakeup, or being preempted.
fn context_switches(pid: &str) -> BTreeMap<String, u64> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("?")
            .trim();
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let key = format!("{name} ({})", task.file_name().to_string_lossy());
        threads.insert(key, switches);
    }
    threads
}

/// Resident set size now, in MiB.
fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
