//! The real daemon under libfaketime (Debian's `faketime`), only its wall clock moved:
//! the monotonic clock, the simulator and the receiver keep the real time. An excursion
//! of the system clock fires nothing and leaves nothing marked; times stored while the
//! clock ran ahead are brought back when it is right again.
//!
//! Without libfaketime these tests say so once and pass without running; `.ci/run`
//! installs it and sets IEWATCH_REQUIRE_FAKETIME, which makes its absence a failure.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{event_list, scenario, start_simulator, DaemonCommand, Receiver, Reply};
use iewatch::simulator::RunningSimulator;

/// libfaketime's library, where Debian puts it.
fn libfaketime() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/lib").ok()?.find_map(|entry| {
        let path = entry.ok()?.path().join("faketime/libfaketime.so.1");
        path.is_file().then_some(path)
    });
    if found.is_none() {
        common::prerequisites::not_run(
            "IEWATCH_REQUIRE_FAKETIME",
            "the wall-clock tests (tests/wall_clock.rs): libfaketime is not installed; \
             `apt-get install faketime` runs them",
        );
    }
    found
}

/// A daemon whose wall clock is real time moved by what `offset` holds (libfaketime's
/// syntax: `+0`, `+30d`), read again at every call; its log at info level in `log`.
fn faked_daemon(config: &Path, library: &Path, offset: &Path, log: &Path) -> tokio::process::Child {
    DaemonCommand::new(config)
        .log_to("info", log)
        .env("LD_PRELOAD", library)
        .env("FAKETIME_TIMESTAMP_FILE", offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .spawn()
}

fn config(dir: &Path, sim: &RunningSimulator, stall_after: &str, hook: &Receiver) -> PathBuf {
    let path = dir.join("iewatch.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\nrequest_timeout = \"5s\"\n\
             stall_after = {{ Creating = \"{stall_after}\" }}\ndrive_stall_after = \"off\"\n\n\
             {}\n[[job]]\naccount = \"sim\"\nname = \"MySampleJob\"\n\n\
             [[webhook]]\nname = \"ops\"\nurl = \"{}\"\n",
            dir.join("iewatch.db").display(),
            sim.account_block("sim"),
            hook.url()
        ),
    )
    .unwrap();
    path
}

/// Waits until the simulator has answered `n` more Get Job requests than now.
async fn polls(sim: &RunningSimulator, n: usize) {
    let seen = sim.requests().iter().filter(|r| r.job.is_some()).count();
    let polled = common::wait_until(Duration::from_secs(20), || {
        sim.requests().iter().filter(|r| r.job.is_some()).count() >= seen + n
    })
    .await;
    assert!(polled, "{n} more polls");
}

async fn stop(mut daemon: tokio::process::Child) {
    let pid = i32::try_from(daemon.id().expect("running")).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(15), daemon.wait())
        .await
        .expect("stops within 15 s")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The system clock jumps 30 days ahead for a few seconds and comes back. Taken as it
/// is, the job in `Creating` would stall (20 days) and its deletion deadline (14 days
/// from first sight) would be announced as passed, and both would stay marked as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excursion_of_the_system_clock_fires_nothing_and_leaves_nothing_marked() {
    let Some(library) = libfaketime() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO)); // Creating
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let config = config(dir.path(), &sim, "20d", &hook);
    let offset = dir.path().join("offset");
    let log = dir.path().join("daemon.log");
    std::fs::write(&offset, "+0\n").unwrap();
    let daemon = faked_daemon(&config, &library, &offset, &log);
    polls(&sim, 5).await;
    std::fs::write(&offset, "+30d\n").unwrap();
    polls(&sim, 20).await;
    std::fs::write(&offset, "+0\n").unwrap();
    polls(&sim, 10).await;
    stop(daemon).await;

    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("the system clock stepped forward by 30days"),
        "{said}"
    );
    assert!(said.contains("the system clock is back"), "{said}");
    let db = dir.path().join("iewatch.db");
    let events = event_list(&db, "MySampleJob").await;
    assert!(
        events
            .iter()
            .all(|e| e.0 != "job.stalled" && e.0 != "job.deadline"),
        "{events:?}"
    );
    let sent: Vec<String> = hook
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        sent.iter()
            .all(|t| t != "job.stalled" && t != "job.deadline"),
        "{sent:?}"
    );
    let store = iewatch::store::Store::open_existing(&db).await.unwrap();
    let clocks: String = sqlx::query_scalar("SELECT clocks FROM jobs WHERE name = 'MySampleJob'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    let clocks: serde_json::Value = serde_json::from_str(&clocks).unwrap();
    assert!(
        clocks.get("warned").is_none(),
        "no deadline marked: {clocks}"
    );
    assert_eq!(clocks["stalled"], false, "{clocks}");
}

/// First seen while the system clock ran 30 days ahead, the job's state is stored as
/// "since next month". Once the clock is right (a restart here), that time is brought
/// back to now and said, so the stall (1 s here) is counted and announced; left in the
/// future, it would not be for a month.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_stored_while_the_clock_ran_ahead_are_brought_back_and_said() {
    let Some(library) = libfaketime() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO)); // Creating
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let offset = dir.path().join("offset");
    let log = dir.path().join("daemon.log");
    let db = dir.path().join("iewatch.db");
    std::fs::write(&offset, "+30d\n").unwrap();
    let config = config(dir.path(), &sim, "20d", &hook);
    let daemon = faked_daemon(&config, &library, &offset, &log);
    polls(&sim, 5).await;
    stop(daemon).await;
    let events = event_list(&db, "MySampleJob").await;
    assert!(events.iter().all(|e| e.0 != "job.stalled"), "{events:?}");

    std::fs::write(&offset, "+0\n").unwrap();
    let config = self::config(dir.path(), &sim, "1s", &hook);
    let daemon = faked_daemon(&config, &library, &offset, &log);
    let stalled = common::wait_for(Duration::from_secs(15), || async {
        event_list(&db, "MySampleJob")
            .await
            .iter()
            .any(|e| e.0 == "job.stalled")
    })
    .await;
    stop(daemon).await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        stalled,
        "{:?}\n{said}",
        event_list(&db, "MySampleJob").await
    );
    assert!(
        said.contains("stored time(s) ahead of now brought back to now")
            && said.contains("clocks.state_since"),
        "{said}"
    );
    let events = event_list(&db, "MySampleJob").await;
    assert!(
        events.iter().all(|e| e.0 != "job.deadline"),
        "the deletion deadline counts from now, 14 days off: {events:?}"
    );
}
