//! No stored value is a poison pill: every time column of every table, and the times in
//! the JSON columns, set to the extremes an `sqlite3` user or a damaged disk can leave
//! (year 10000, year 1, before the epoch, text that is no time, empty), then every
//! command and the daemon. A command may say a value is bad; none may panic, and the
//! daemon keeps watching. And no value is too long to record: a service's error message
//! as long as its body, on SQLite and PostgreSQL, before and after an upgrade. And
//! `last_polled_at` never moves back, nor does a hand-edited value hold it still.

mod common;

use std::{path::Path, time::Duration};

use common::{Receiver, Reply};
use iewatch::store::{Store, Writer};

/// Every column that holds a time, by table.
const TIME_COLUMNS: &[(&str, &[&str])] = &[
    (
        "jobs",
        &[
            "last_modified",
            "first_seen_at",
            "last_polled_at",
            "last_changed_at",
            "last_error_at",
            "terminal_since",
            "acked_at",
            "muted_until",
        ],
    ),
    ("drives", &["updated_at"]),
    ("events", &["observed_at"]),
    (
        "deliveries",
        &[
            "created_at",
            "first_attempt_at",
            "next_attempt_at",
            "delivered_at",
            "failed_at",
        ],
    ),
    ("outbox_lanes", &["next_attempt_at"]),
    ("pagerduty_incidents", &["opened_at"]),
    ("error_logs", &["read_at"]),
];

const EXTREMES: &[&str] = &[
    "10000-01-01 00:00:00.000",
    "0001-01-01 00:00:00.000",
    "1969-12-31 23:59:59.999",
    "not a time",
    "",
];

/// The JSON times at their extremes: u64::MAX, a negative number, a float.
const CLOCKS: &[&str] = &[
    r#"{"created":18446744073709551615,"state":"Creating","state_since":18446744073709551615,"eta":18446744073709551615,"anchor":[5,18446744073709551615],"reminder":{"condition":"stalled","since":18446744073709551615,"count":4294967295,"last":18446744073709551615},"warned":["deletion:18446744073709551615:345600"]}"#,
    r#"{"state_since":-1,"created":1.5}"#,
];

/// The times in `jobs.notices` (a stage waiting since, its auto-completion, a delay's
/// start) at their extremes: year 10000, no time at all, a number.
const NOTICES: &str = r#"{"action":{"stage":"DataCopy","status":"WaitingForCustomerAction","code":null,"message":null,"actions":[],"since":"10000-01-01T00:00:00Z","auto_complete_at":"not a time"},"delays":[{"stage":"DataCopy","code":"HighDemandDelay","description":null,"status":"Active","started_at":-1}]}"#;

/// Every column of the list set to `value` (and `jobs.clocks` to `clocks`, the notices
/// to [`NOTICES`]).
async fn set_everything(db: &Path, value: &str, clocks: &str) {
    let store = Store::open_existing(db).await.unwrap();
    for (table, columns) in TIME_COLUMNS {
        for column in *columns {
            sqlx::query(&format!("UPDATE {table} SET {column} = $1"))
                .bind(value)
                .execute(store.pool())
                .await
                .unwrap_or_else(|e| panic!("{table}.{column}: {e}"));
        }
    }
    sqlx::query("UPDATE jobs SET clocks = $1, notices = $2")
        .bind(clocks)
        .bind(NOTICES)
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
}

fn every_command(db: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["status", "--database", db],
        vec!["status", "--json", "--database", db],
        vec!["history", "MySampleJob", "--database", db],
        vec!["history", "sim/MySampleJob", "--json", "--database", db],
        vec!["history", "MySampleJob", "--since", "7d", "--database", db],
        vec!["deliveries", "--database", db],
        vec!["errors", "MySampleJob", "--database", db],
        vec!["errors", "MySampleJob", "--json", "--database", db],
        vec!["deliveries", "--failed", "--json", "--database", db],
        vec!["redeliver", "1", "--database", db],
        vec!["ack", "MySampleJob", "--note", "x", "--database", db],
        vec!["mute", "MySampleJob", "--for", "1h", "--database", db],
        vec!["mute", "MySampleJob", "--off", "--database", db],
        vec!["prune", "--dry-run", "--retention", "1d", "--database", db],
        vec!["prune", "--retention", "1d", "--database", db],
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_time_at_its_extremes_panics_no_command_and_stops_no_watch() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_simulator(common::scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let db = dir.path().join("iewatch.db");
    let store = Writer::open_file(&db).await.unwrap();
    common::record_lifecycle(&store, "MySampleJob", common::to_ops, false, |i| {
        std::time::SystemTime::now() - Duration::from_secs(3600 * (40 - i as u64))
    })
    .await;
    let job: i64 = sqlx::query_scalar("SELECT id FROM jobs")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO pagerduty_incidents VALUES ('pd', $1, 'stalled', '2026-01-01 00:00:00.000')",
    )
    .bind(job)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO error_logs VALUES ($1, 'https://a.blob.core.windows.net/w/l.xml', 'D1', '2026-01-01 00:00:00.000', 1, '{}')",
    )
    .bind(job)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET account = 'sim'")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\nretention = \"400d\"\n\n{}\n[[job]]\naccount = \"sim\"\nname = \"MySampleJob\"\n\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\n",
            db.display(),
            sim.account_block("sim"),
            hook.url()
        ),
    )
    .unwrap();
    let path = db.to_str().unwrap();
    for (i, value) in EXTREMES.iter().enumerate() {
        let clocks = CLOCKS[i % CLOCKS.len()];
        set_everything(&db, value, clocks).await;
        for args in every_command(path) {
            let (_, said) = tokio::task::spawn_blocking({
                let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
                move || common::iewatch_output(&args)
            })
            .await
            .unwrap();
            assert!(
                !said.contains("panicked") && !said.contains("[killed"),
                "{value:?}: {args:?}: {said}"
            );
        }
        set_everything(&db, value, clocks).await;
        let seen = sim.requests().iter().filter(|r| r.job.is_some()).count();
        let daemon = common::RunningDaemon::start(&config).await;
        let polled = common::wait_until(Duration::from_secs(20), || {
            sim.requests().iter().filter(|r| r.job.is_some()).count() >= seen + 5
        })
        .await;
        assert!(!daemon.task.is_finished(), "{value:?}: the daemon runs on");
        daemon.stop().await;
        assert!(polled, "{value:?}: the job is polled");
        let (ok, said) = common::iewatch_output(&["status", "--database", path]);
        assert!(ok && said.contains("sim/MySampleJob"), "{value:?}: {said}");
    }
}

/// A service's error message can be as long as its body (1 MiB). The store keeps its first
/// 700 bytes (PostgreSQL's history index carries every column but `details`, and an entry
/// holds at most 2,704 bytes): the poll is recorded on both databases and reads back the
/// same. Rows written before that bound are clipped by the upgrade, which would fail to
/// build the index otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_of_any_length_is_recorded_clipped_on_both_databases() {
    use iewatch::{
        events::{ChangeValue, Event, EventType, MAX_VALUE_BYTES},
        model::Severity,
        store::{Database, Details, Failed},
    };
    let Some(cluster) = common::postgres::Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Incompressible text of one- to four-byte characters.
    let mut seed = 32_u64;
    let error: String = std::iter::repeat_with(|| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        char::from_u32(0x20 + (seed >> 40) as u32 % 0x2_0000)
            .filter(|c| !c.is_control())
            .unwrap_or('x')
    })
    .take(300_000)
    .collect();
    let clipped = |value: &str| {
        value.len() <= MAX_VALUE_BYTES
            && value.len() > MAX_VALUE_BYTES / 2
            && value.ends_with('…')
            && error.starts_with(value.trim_end_matches('…'))
    };
    let postgres = cluster.create_database("long_values").await;
    let sqlite = Database::File(dir.path().join("iewatch.db"));
    let mut read = Vec::new();
    for database in [&sqlite, &postgres] {
        let store = Writer::open(database).await.unwrap();
        let job = store.load_job("prod", "Failing").await.unwrap().id;
        let event = Event::change(
            EventType::JobPollFailing,
            None,
            None,
            Some(ChangeValue::text(&error)),
            Severity::Error,
        );
        store
            .record_failure(Failed {
                job,
                error: &error,
                memory: &Default::default(),
                events: &[event],
                outbox: &[],
                at: iewatch::wall_clock::now(),
            })
            .await
            .unwrap();
        let mut both = Vec::new();
        for details in [Details::Skip, Details::Read] {
            let events = store.history("Failing", None, details).await.unwrap();
            both.push(events.into_iter().map(|e| e.to).collect::<Vec<_>>());
        }
        store.close().await;
        assert_eq!(both[0], both[1]);
        read.push(both.remove(0));
    }
    let stored = read[0][0].as_deref().unwrap();
    assert!(clipped(stored), "{} bytes: {stored:?}", stored.len());
    assert_eq!(read[0], read[1], "SQLite and PostgreSQL differ");

    // A database from before the bound, with such a row, upgraded.
    let old = cluster.create_database("long_values_old").await;
    let before = tempfile::tempdir().unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    for name in [
        "0001_initial.sql",
        "0002_incidents.sql",
        "0003_error_logs.sql",
    ] {
        std::fs::copy(migrations.join(name), before.path().join(name)).unwrap();
    }
    let mut connection = cluster.connect("long_values_old").await;
    sqlx::migrate::Migrator::new(before.path())
        .await
        .unwrap()
        .run(&mut connection)
        .await
        .unwrap();
    sqlx::query("INSERT INTO jobs (account, name, first_seen_at) VALUES ('prod', 'Old', '2026-01-01 00:00:00.000')")
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (job_id, type, from_value, to_value, observed_at, severity)
         SELECT id, 'job.poll_failing', repeat('a', 5000), $1, '2026-01-01 00:00:00.000', 'error'
         FROM jobs",
    )
    .bind(&error)
    .execute(&mut connection)
    .await
    .unwrap();
    let store = Writer::open(&old).await.unwrap();
    let events = store.history("Old", None, Details::Skip).await.unwrap();
    store.close().await;
    let to = events[0].to.as_deref().unwrap();
    assert!(clipped(to), "{} bytes: {to:?}", to.len());
    assert_eq!(
        events[0].from.as_deref(),
        Some(format!("{}…", "a".repeat(697)).as_str())
    );
}

/// `last_polled_at` never moves back: an unchanged poll's time, written at the heartbeat,
/// loses to a change's later one committed meanwhile. And no hand-edited value holds the
/// column still: one in another form, or in the far future, gives way to the next poll.
/// On SQLite, and on PostgreSQL when a server is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_polls_time_never_moves_last_polled_at_back() {
    use iewatch::{
        moment::Moment,
        store::{Database, Failed},
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    let mut databases = vec![Database::File(dir.path().join("iewatch.db"))];
    if let Some(cluster) = &cluster {
        databases.push(cluster.create_database("last_polled").await);
    }
    // Stored to the millisecond.
    let now = Moment::parse(&iewatch::wall_clock::now().sql_text()).unwrap();
    let ago = |secs| now.saturating_sub(Duration::from_secs(secs));
    for database in &databases {
        let store = Writer::open(database).await.unwrap();
        let job = store.load_job("prod", "Polled").await.unwrap().id;
        let stored = || async {
            let text: Option<String> =
                sqlx::query_scalar("SELECT last_polled_at FROM jobs WHERE id = $1")
                    .bind(job.0)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            text.as_deref().and_then(Moment::parse)
        };
        let mut notes = store.poll_notes();
        notes.note(job, ago(60));
        notes.hand_over();
        store
            .record_failure(Failed {
                job,
                error: "refused",
                memory: &Default::default(),
                events: &[],
                outbox: &[],
                at: ago(50),
            })
            .await
            .unwrap();
        store.flush_poll_times().await.unwrap();
        assert_eq!(stored().await, Some(ago(50)), "{database:?}: moved back");

        for (edited, polled) in [
            ("9999-12-31 23:59:59.999", 40),
            ("Tuesday", 30),
            ("2026-12-07T06:00:00.000Z", 20),
            ("", 10),
        ] {
            sqlx::query("UPDATE jobs SET last_polled_at = $1 WHERE id = $2")
                .bind(edited)
                .bind(job.0)
                .execute(store.pool())
                .await
                .unwrap();
            notes.note(job, ago(polled));
            notes.hand_over();
            store.flush_poll_times().await.unwrap();
            assert_eq!(
                stored().await,
                Some(ago(polled)),
                "{database:?}: {edited:?} held it"
            );
        }
        drop(notes);
        store.close().await;
    }
}
