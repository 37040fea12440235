//! PostgreSQL and high availability (issue 20), on a real PostgreSQL server started by
//! the test (see `common::postgres`): the commands read a PostgreSQL database exactly as
//! they read SQLite; the lease fences a leader that lost it; and two or three real
//! `iewatch run` processes on one database, the leader SIGKILLed at seeded moments, cut
//! off the database, or paused past its lease, record every change the simulator served
//! exactly once and deliver every alert, never under two ids.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use common::{
    event_list, postgres::Cluster, scenario, start_simulator, wait_for, DaemonProcess, Receiver,
    Reply,
};
use iewatch::{
    events::OutboxEntry,
    store::{lease, Attempt, Database, Store, StoreError},
};
use rand::{Rng as _, SeedableRng as _};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Every event of an observation to the webhook "ops".
fn to_ops(events: &[iewatch::events::Event]) -> Vec<OutboxEntry> {
    (0..events.len())
        .map(|event| OutboxEntry {
            event,
            webhook: "ops".into(),
        })
        .collect()
}

/// `iewatch ARGS -c CONFIG`: its stdout (asserting success).
fn cli(args: &[&str], config: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A config naming only a database (what the reading commands need).
fn database_config(dir: &Path, name: &str, database: &Database) -> PathBuf {
    let text = match database {
        Database::File(path) => format!("[daemon]\ndatabase = \"{}\"\n", path.display()),
        Database::Postgres(pg) => format!(
            "[daemon]\ndatabase = \"{}\"\ndatabase_password_file = \"{}\"\n",
            pg.url,
            pg.password_file.as_ref().unwrap().display()
        ),
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_read_postgres_exactly_as_they_read_sqlite() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let postgres = cluster.create_database("commands").await;
    let sqlite = Database::File(dir.path().join("iewatch.db"));
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let mut configs = Vec::new();
    for (name, database) in [("sqlite.toml", &sqlite), ("postgres.toml", &postgres)] {
        let store = Store::open_database(database).await.unwrap();
        common::record_lifecycle(&store, "MySampleJob", to_ops, false, |i| {
            start + Duration::from_secs(600 * i as u64)
        })
        .await;
        // Every alert delivered, as a notifier would record it.
        let job = store.load_job("prod", "MySampleJob").await.unwrap().id;
        let lane = store.lane_deliveries("ops", job, 100).await.unwrap();
        let delivered: Vec<_> = lane
            .iter()
            .map(|item| (item.id, Attempt::Delivered { status: 204 }))
            .collect();
        store
            .record_lane("ops", job, &delivered, start + Duration::from_secs(7200))
            .await
            .unwrap();
        store.close().await;
        configs.push(database_config(dir.path(), name, database));
    }
    let (on_sqlite, on_postgres) = (&configs[0], &configs[1]);
    for args in [
        &["status", "--json"][..],
        &["history", "MySampleJob", "--json"],
        &["history", "prod/MySampleJob"],
        &["deliveries", "--json"],
    ] {
        let (a, b) = (cli(args, on_sqlite), cli(args, on_postgres));
        assert!(a.len() > 100, "{args:?}: {a}");
        assert_eq!(a, b, "{args:?} differs between SQLite and PostgreSQL");
    }
    let events = event_list(&postgres, "MySampleJob").await;
    assert_eq!(events.len(), 32, "{events:?}");
    assert_eq!(events, event_list(&sqlite, "MySampleJob").await);

    // The manual commands write to PostgreSQL too.
    for config in &configs {
        assert!(cli(&["redeliver", "3"], config).contains("queued again"));
        cli(&["ack", "MySampleJob", "--note", "seen"], config);
        cli(&["mute", "MySampleJob", "--for", "2d"], config);
    }
    let pending = |text: String| {
        let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "pending")
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(pending(cli(&["deliveries", "--json"], on_postgres)), [3]);
    assert_eq!(
        pending(cli(&["deliveries", "--json"], on_sqlite)),
        pending(cli(&["deliveries", "--json"], on_postgres))
    );
    let acked = cli(&["history", "MySampleJob", "--json"], on_postgres);
    assert!(acked.contains("job.acknowledged"), "{acked}");
    let status = cli(&["status", "--json"], on_postgres);
    assert!(status.contains("\"muted_until\": \"2"), "{status}");

    // A wrong password is a clear error, not a hang.
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let Database::Postgres(pg) = &postgres else {
        unreachable!()
    };
    let bad = database_config(
        dir.path(),
        "bad.toml",
        &Database::parse(&pg.url, Some(wrong)),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["status", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("password authentication failed"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_lease_writes_nothing_and_learns_it() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database("fencing").await;
    let lease_time = Duration::from_secs(3);
    let old = Store::open_for_daemon(&database).await.unwrap();
    let new = Store::open_for_daemon(&database).await.unwrap();

    let first = lease::try_acquire(old.pool(), "old:1", lease_time).await.unwrap();
    assert_eq!(first, Some(1));
    assert_eq!(
        lease::try_acquire(new.pool(), "new:2", lease_time).await.unwrap(),
        None,
        "a live lease is not taken"
    );
    old.lead(1);
    let job = old.load_job("prod", "MySampleJob").await.unwrap().id;
    let snapshot = common::scenario("import-lifecycle.toml").compile().unwrap()[0].versions[0]
        .job
        .clone()
        .unwrap()
        .into_parts()
        .0;
    common::record_first_sight(&old, job, &snapshot, to_ops)
        .await
        .expect("the leader writes");

    // The old leader pauses past its lease; a standby takes over.
    cluster
        .admin("fencing", "UPDATE leader SET expires_at = now() - interval '1 second'")
        .await;
    assert_eq!(
        lease::try_acquire(new.pool(), "new:2", lease_time).await.unwrap(),
        Some(2)
    );
    new.lead(2);
    let holder = lease::holder(new.pool()).await.unwrap().unwrap();
    assert_eq!((holder.holder.as_str(), holder.epoch, holder.live), ("new:2", 2, true));

    // Everything the old one tries is refused, and its lease keeper says why.
    let refused = common::record_first_sight(&old, job, &snapshot, to_ops).await;
    assert!(matches!(refused, Err(StoreError::LeaseLost)), "{refused:?}");
    assert!(old.writer_stopped().await.contains("lost the leader lease"));
    let lane = old
        .record_lane("ops", job, &[], SystemTime::now())
        .await;
    assert!(matches!(lane, Err(StoreError::LeaseLost)), "{lane:?}");
    let lost = tokio::time::timeout(
        Duration::from_secs(5),
        iewatch::leadership::hold(old.clone(), 1, lease_time),
    )
    .await
    .expect("the old leader learns within two renewals");
    assert!(lost.contains("another iewatch took over"), "{lost}");

    // The new leader writes; the old one's attempt left nothing.
    let events = common::record_first_sight(&new, job, &snapshot, to_ops)
        .await
        .expect("the new leader writes");
    assert!(!events.is_empty());
    let rows = event_list(&database, "MySampleJob").await;
    assert_eq!(rows.len(), 2 * events.len(), "the old leader's first sight and the new one's");
    old.close().await;
    new.close().await;
}
