//! `retention` and `iewatch prune`: the history of jobs that ended long ago goes in
//! batches with an incremental vacuum; their current state, and every other job's
//! history, stays.

mod common;

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use iewatch::{
    decide::Memory,
    store::{Store, Writer},
};

const DAY: Duration = Duration::from_secs(86_400);

fn iewatch(args: &[&str]) -> (bool, String) {
    common::iewatch_output(args)
}

async fn count(db: &Path, table: &str) -> i64 {
    let store = Store::open_existing(db).await.unwrap();
    let n = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    n
}

/// Records the import lifecycle for `job`, every event queued for a webhook `ops`, and
/// marks the job ended `ended_ago` ago (None: still running).
async fn job(store: &Writer, name: &str, ended_ago: Option<Duration>) {
    let start = SystemTime::now() - 600 * DAY;
    common::record_lifecycle(store, name, common::to_ops, false, |i| {
        start + Duration::from_secs(3600 * i as u64)
    })
    .await;
    if let Some(ago) = ended_ago {
        let id = store.load_job("prod", name).await.unwrap().id;
        let memory = Memory {
            terminal_since: Some((SystemTime::now() - ago).into()),
            ..Memory::default()
        };
        store
            .record_bookkeeping(id, &memory, &[], &[], SystemTime::now().into())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_only_the_history_of_jobs_that_ended_before_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let store = Writer::open_file(&db).await.unwrap();
    job(&store, "EndedLongAgo", Some(500 * DAY)).await;
    job(&store, "EndedRecently", Some(10 * DAY)).await;
    job(&store, "StillRunning", None).await;
    let auto_vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(auto_vacuum, 2, "a new database frees pages incrementally");
    // Of the old job's 32 alerts, 25 were delivered, one failed long ago, one failed
    // yesterday (still redeliverable) and the last 5 are pending: the endpoint is down.
    let old_job = store.load_job("prod", "EndedLongAgo").await.unwrap().id.0;
    for (sql, range) in [
        (
            "delivered_at = '2025-01-01 00:00:00.000'",
            "e.id <= (SELECT MIN(id) FROM events WHERE job_id = $1) + 24",
        ),
        (
            "failed_at = '2025-01-01 00:00:00.000'",
            "e.id = (SELECT MIN(id) FROM events WHERE job_id = $1) + 25",
        ),
        (
            "failed_at = $2",
            "e.id = (SELECT MIN(id) FROM events WHERE job_id = $1) + 26",
        ),
    ] {
        sqlx::query(&format!(
            "UPDATE deliveries SET {sql} WHERE event_id IN
                (SELECT e.id FROM events e WHERE e.job_id = $1 AND {range})"
        ))
        .bind(old_job)
        .bind(iewatch::moment::Moment::from_system(SystemTime::now() - DAY).sql_text())
        .execute(store.pool())
        .await
        .unwrap();
    }
    store.close().await;
    let (events, deliveries) = (count(&db, "events").await, count(&db, "deliveries").await);
    assert_eq!(events, 3 * 32);
    let path = db.to_str().unwrap();

    let (ok, said) = iewatch(&[
        "prune",
        "--dry-run",
        "--retention",
        "400d",
        "--database",
        path,
    ]);
    assert!(ok, "{said}");
    assert!(said.contains("prod/EndedLongAgo"), "{said}");
    assert!(
        said.contains("26 event(s), 26 deliveries; 6 alert(s) not delivered yet are kept"),
        "{said}"
    );
    assert!(
        !said.contains("EndedRecently") && !said.contains("StillRunning"),
        "{said}"
    );
    assert!(
        said.contains("would remove 26 event(s) of 1 job(s)"),
        "{said}"
    );
    assert_eq!(
        count(&db, "events").await,
        events,
        "a dry run removes nothing"
    );

    let (ok, said) = iewatch(&["prune", "--retention", "400d", "--database", path]);
    assert!(ok, "{said}");
    assert!(said.contains("removed 26 event(s) of 1 job(s)"), "{said}");
    assert_eq!(count(&db, "events").await, events - 26);
    assert_eq!(count(&db, "deliveries").await, deliveries - 26);
    let store = Store::open_existing(&db).await.unwrap();
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(free, 0, "the freed pages went back");
    let status = store.status().await.unwrap();
    let old = status.iter().find(|j| j.name == "EndedLongAgo").unwrap();
    assert_eq!(
        old.state.as_deref(),
        Some("Completed"),
        "its current state stays"
    );
    assert_eq!(old.drives.len(), 2);
    assert_eq!(
        store
            .history("EndedLongAgo", None, iewatch::store::Details::Read)
            .await
            .unwrap()
            .len(),
        6,
        "the undelivered alerts keep their events"
    );
    assert_eq!(
        store
            .history("EndedRecently", None, iewatch::store::Details::Read)
            .await
            .unwrap()
            .len(),
        32
    );
    store.close().await;

    let (ok, said) = iewatch(&["prune", "--retention", "400d", "--database", path]);
    assert!(ok);
    assert!(
        said.contains("removed 0 event(s) of 0 job(s)"),
        "idempotent: {said}"
    );

    // The endpoint is back: the old job's five pending alerts still go out, in order.
    let receiver = common::Receiver::start(|_| common::Reply::Status(200)).await;
    let hooks = common::webhooks(
        dir.path(),
        &format!(
            "[[webhook]]\nname = \"ops\"\nurl = \"{}\"\n",
            receiver.url()
        ),
    );
    let store = Writer::open_file(&db).await.unwrap();
    let notifier = common::start_notifier(&store, hooks);
    notifier.waker.wake();
    let ids = |r: &common::Received| r.header("webhook-id").to_owned();
    // The two younger jobs' 64 alerts are pending too.
    let sent = common::wait_until(Duration::from_secs(20), || {
        receiver
            .received()
            .iter()
            .filter(|r| r.answered == Some(200))
            .count()
            >= 5 + 64
    })
    .await;
    notifier.stop().await;
    let delivered: Vec<String> = receiver.received().iter().map(ids).collect();
    assert!(sent, "{} delivered", delivered.len());
    let old: Vec<i64> = store
        .history("EndedLongAgo", None, iewatch::store::Details::Read)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let pending_sent = delivered
        .iter()
        .filter(|id| old.contains(&common::event_id_of(id)))
        .count();
    assert_eq!(pending_sent, 5, "{delivered:?} vs {old:?}");
    store.close().await;
}

/// Webhook ids are unique for the life of the database: after the newest events are
/// pruned, the next alert does not get an id (and a webhook-id) that was sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_is_never_handed_out_twice_after_a_prune() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let store = Writer::open_file(&db).await.unwrap();
    job(&store, "EndedLongAgo", Some(500 * DAY)).await;
    let newest: i64 = sqlx::query_scalar("SELECT MAX(id) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE deliveries SET delivered_at = '2025-01-01 00:00:00.000'")
        .execute(store.pool())
        .await
        .unwrap();
    store
        .prune((SystemTime::now() - 400 * DAY).into(), false)
        .await
        .unwrap();
    job(&store, "Next", None).await;
    let first_new: i64 = sqlx::query_scalar(
        "SELECT MIN(e.id) FROM events e JOIN jobs j ON j.id = e.job_id WHERE j.name = 'Next'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(
        first_new > newest,
        "{first_new} was handed out before (up to {newest})"
    );
    store.close().await;
}

/// The webhook ids a job's events go out with.
async fn webhook_ids(store: &Store, job: &str) -> Vec<(i64, String)> {
    let events = store
        .history(job, None, iewatch::store::Details::Read)
        .await
        .unwrap();
    events
        .iter()
        .map(|e| (e.id, iewatch::payload::webhook_id(e)))
        .collect()
}

/// A restore from an older backup rewinds the event ids; the alerts recorded after it
/// still go out with webhook ids never used before (receivers drop repeats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_ids_are_not_reused_after_a_restore_from_an_older_backup() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let backup = dir.path().join("backup.db");
    let store = Writer::open_file(&db).await.unwrap();
    let start = SystemTime::now() - 10 * DAY;
    async fn record(store: &Writer, name: &str, from: SystemTime) {
        common::record_lifecycle(
            store,
            name,
            |_| Vec::new(),
            false,
            |i| from + Duration::from_secs(60 * i as u64),
        )
        .await;
    }
    record(&store, "Kept", start).await;
    sqlx::query(&format!("VACUUM INTO '{}'", backup.display()))
        .execute(store.pool())
        .await
        .unwrap();
    record(&store, "Lost", start + DAY).await;
    let lost = webhook_ids(&store, "Lost").await;
    store.close().await;
    // The restored database is the backup itself, at its own path: the pool closed
    // above may still checkpoint (and remove its WAL) after `close` returns, so the
    // old path is left to it.
    // Opened as a daemon would after the restore: to write.
    let store = Writer::open_file(&backup).await.unwrap();
    assert!(store
        .history("Lost", None, iewatch::store::Details::Read)
        .await
        .unwrap()
        .is_empty());
    record(&store, "Found", start + 2 * DAY).await;
    let found = webhook_ids(&store, "Found").await;
    store.close().await;
    assert!(!lost.is_empty() && !found.is_empty());
    assert!(
        found
            .iter()
            .any(|(id, _)| lost.iter().any(|(old, _)| old == id)),
        "the restore rewound the ids: {lost:?} vs {found:?}"
    );
    for (_, webhook_id) in &found {
        assert!(
            lost.iter().all(|(_, sent)| sent != webhook_id),
            "{webhook_id} went out before the restore"
        );
    }
}

#[test]
fn retention_comes_from_the_config_and_its_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        "[daemon]\ndatabase = \"iewatch.db\"\nretention = \"400d\"\n",
    )
    .unwrap();
    let (ok, said) = iewatch(&["check", "-c", config.to_str().unwrap()]);
    assert!(ok, "{said}");
    let (ok, said) = iewatch(&["prune", "--dry-run", "-c", config.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(said.contains("would remove 0 event(s)"), "{said}");
    std::fs::write(
        &config,
        "[daemon]\ndatabase = \"iewatch.db\"\nretention = \"1h\"\n",
    )
    .unwrap();
    let (ok, said) = iewatch(&["check", "-c", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        said.contains("daemon.retention: \"1h\": give a day to a hundred years"),
        "{said}"
    );
    std::fs::write(&config, "[daemon]\ndatabase = \"iewatch.db\"\n").unwrap();
    let (ok, said) = iewatch(&["prune", "-c", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(said.contains("no retention"), "{said}");
}
