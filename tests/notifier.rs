//! Webhook delivery against real HTTP receivers on 127.0.0.1: Standard Webhooks
//! signatures checked by an independent implementation (ring), retries while the endpoint
//! is down, per-job order, filters, Slack format, 410, give-up and redelivery, and a
//! daemon killed in the middle of a delivery.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, SystemTime},
};

use common::{start_notifier, webhooks, Receiver, Reply};
use iewatch::{
    config::Webhook,
    events::Event,
    model::JobName,
    notifier::route,
    payload,
    store::{Store, Writer},
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn signatures_match_the_standard_webhooks_test_vector() {
    let (id, timestamp, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
    );
    let published = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert!(
        common::independently_verified(SECRET, id, timestamp, body, published),
        "the checker itself is right"
    );
    assert!(!common::independently_verified(
        SECRET,
        id,
        timestamp,
        br#"{"test": 2432232315}"#,
        published
    ));
    let key = iewatch::config::decode_webhook_secret(SECRET).unwrap();
    assert_eq!(payload::signature(&key, id, 1614265330, body), published);
}

/// Records the import lifecycle (32 events) for `job`, routed to `hooks`.
async fn record_lifecycle(store: &Writer, job: &str, hooks: &[Webhook]) -> Vec<Event> {
    let name = JobName::from(job);
    common::record_lifecycle(
        store,
        job,
        |events| route(hooks, &name, events),
        false,
        |_| SystemTime::now(),
    )
    .await
}

fn delivered_ids(received: &[common::Received]) -> Vec<String> {
    received
        .iter()
        .filter(|r| r.answered == Some(200))
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

#[tokio::test]
async fn an_endpoint_down_for_a_while_gets_every_event_in_order_with_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|n| {
        if n < 5 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let hooks = webhooks(
        dir.path(),
        &format!("[[webhook]]\nname = \"ops\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nretry_initial = \"20ms\"\nretry_max = \"100ms\"\n", receiver.url()),
    );
    let store = Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let notifier = start_notifier(&store, hooks.clone());
    let a = record_lifecycle(&store, "JobA", &hooks).await;
    let b = record_lifecycle(&store, "JobB", &hooks).await;
    notifier.waker.wake();
    let total = a.len() + b.len();
    assert!(
        common::wait_until(Duration::from_secs(20), || delivered_ids(
            &receiver.received()
        )
        .len()
            >= total)
        .await
    );
    notifier.stop().await;

    let received = receiver.received();
    let mut attempts_per_id: BTreeMap<String, Vec<&common::Received>> = BTreeMap::new();
    for r in &received {
        assert!(
            common::independently_verified(
                SECRET,
                r.header("webhook-id"),
                r.header("webhook-timestamp"),
                &r.body,
                r.header("webhook-signature")
            ),
            "bad signature on {}",
            r.header("webhook-id")
        );
        attempts_per_id
            .entry(r.header("webhook-id").to_owned())
            .or_default()
            .push(r);
    }
    assert_eq!(attempts_per_id.len(), total, "every event arrived");
    let retried = attempts_per_id.values().filter(|a| a.len() > 1).count();
    assert!(
        retried >= 1,
        "the first attempts failed and were retried under the same webhook-id"
    );
    for attempts in attempts_per_id.values() {
        assert!(
            attempts.iter().all(|a| a.body == attempts[0].body),
            "a retry carries the same body"
        );
    }
    // Per job, the first successful deliveries come in the order the events happened.
    for job in ["JobA", "JobB"] {
        let order: Vec<i64> = received
            .iter()
            .filter(|r| r.answered == Some(200) && r.json()["data"]["job"]["name"] == job)
            .map(|r| common::event_id_of(r.header("webhook-id")))
            .collect();
        assert_eq!(order.len(), 32);
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{job} out of order: {order:?}"
        );
    }
    let body = received
        .iter()
        .find(|r| {
            r.json()["type"] == "drive.copy_status_changed"
                && r.json()["data"]["to"] == "CompletedWithErrors"
        })
        .unwrap()
        .json();
    assert_eq!(body["data"]["severity"], "error");
    assert_eq!(body["data"]["drive_id"], "9WM3NZFS");
    assert_eq!(body["data"]["job"]["account"], "prod");
    assert_eq!(body["data"]["job"]["type"], "Import");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(
        !received
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("BitLocker")),
        "no key in any payload"
    );
    let pending = store.outbox_backlog().await.unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn filters_and_progress_step_select_exactly_the_expected_events() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = webhooks(
        dir.path(),
        r#"
[[webhook]]
name = "drive-problems"
url = "http://127.0.0.1:9/a"
events = ["drive.*"]
min_severity = "warning"

[[webhook]]
name = "progress-by-50"
url = "http://127.0.0.1:9/b"
events = ["job.progress"]
progress_step = 50

[[webhook]]
name = "other-job"
url = "http://127.0.0.1:9/c"
jobs = ["SomeOtherJob"]

[[webhook]]
name = "states"
url = "http://127.0.0.1:9/d"
events = ["job.state_changed", "job.first_seen"]
"#,
    );
    let store = Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let events = record_lifecycle(&store, "MySampleJob", &hooks).await;
    let outbox = route(&hooks, &JobName::from("MySampleJob"), &events);
    let picked = |hook: &str| -> Vec<String> {
        outbox
            .iter()
            .filter(|entry| entry.webhook == hook)
            .map(|entry| {
                let e = &events[entry.event];
                format!("{} {}", e.event_type, e.to_text().unwrap_or_default())
            })
            .collect()
    };
    assert_eq!(
        picked("drive-problems"),
        [
            "drive.state_changed CompletedMoreInfo",
            "drive.copy_status_changed CompletedWithErrors"
        ]
    );
    assert_eq!(
        picked("progress-by-50"),
        ["job.progress 0", "job.progress 70", "job.progress 100"]
    );
    assert!(picked("other-job").is_empty());
    assert_eq!(picked("states").len(), 6);
    // History keeps every step whatever the filters: all 32 events are in the database.
    assert_eq!(
        store
            .history("MySampleJob", None, iewatch::store::Details::Read)
            .await
            .unwrap()
            .len(),
        32
    );
}

#[tokio::test]
async fn slack_format_renders_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::Status(200)).await;
    let hooks = webhooks(
        dir.path(),
        &format!("[[webhook]]\nname = \"slack\"\nurl = \"{}\"\nformat = \"slack\"\nmin_severity = \"warning\"\n", receiver.url()),
    );
    let store = Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let notifier = start_notifier(&store, hooks.clone());
    record_lifecycle(&store, "MySampleJob", &hooks).await;
    notifier.waker.wake();
    assert!(common::wait_until(Duration::from_secs(10), || receiver.received().len() >= 2).await);
    notifier.stop().await;
    let texts: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            ":warning: *warning* prod/MySampleJob drive 9WM3NZFS: state Transferring → CompletedMoreInfo",
            ":red_circle: *ERROR* prod/MySampleJob drive 9WM3NZFS: copy status InProgress → CompletedWithErrors",
        ]
    );
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.headers.get("webhook-signature").is_none()));
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_given_up_deliveries_can_be_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let gone = Receiver::start(|_| Reply::Status(410)).await;
    let flaky = Receiver::start(|n| {
        if n < 3 {
            Reply::Status(500)
        } else {
            Reply::Status(204)
        }
    })
    .await;
    let hooks = webhooks(
        dir.path(),
        &format!(
            "[[webhook]]\nname = \"gone\"\nurl = \"{}\"\n\n[[webhook]]\nname = \"flaky\"\nurl = \"{}\"\nevents = [\"job.first_seen\"]\nretry_initial = \"100ms\"\ngive_up_after = \"150ms\"\n",
            gone.url(),
            flaky.url()
        ),
    );
    let db = dir.path().join("iewatch.db");
    let store = Writer::open_file(&db).await.unwrap();
    let notifier = start_notifier(&store, hooks.clone());
    record_lifecycle(&store, "MySampleJob", &hooks).await;
    notifier.waker.wake();
    let failed_count = || async { store.deliveries(true, 100).await.unwrap().len() };
    assert!(
        common::wait_for(Duration::from_secs(10), || async {
            failed_count().await == 2
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gone.received().len(),
        1,
        "after 410 the endpoint gets nothing more"
    );
    let failed = store.deliveries(true, 100).await.unwrap();
    let flaky_row = failed.iter().find(|d| d.webhook == "flaky").unwrap();
    assert!(
        flaky_row
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("gave up after"),
        "{flaky_row:?}"
    );
    assert_eq!(flaky_row.last_status, Some(500));

    // The operator's view and redelivery, through the binary.
    let listing = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["deliveries", "--failed", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing.contains("flaky")
            && listing.contains("failed")
            && listing.contains("job.first_seen"),
        "{listing}"
    );
    let redeliver = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["redeliver", &flaky_row.id.to_string(), "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(redeliver.status.success());
    let got = common::wait_until(Duration::from_secs(10), || {
        flaky.received().iter().any(|r| r.answered == Some(204))
    })
    .await;
    assert!(
        got,
        "{:?} {:?}",
        flaky
            .received()
            .iter()
            .map(|r| r.answered)
            .collect::<Vec<_>>(),
        store
            .deliveries(false, 100)
            .await
            .unwrap()
            .iter()
            .filter(|d| d.webhook == "flaky")
            .collect::<Vec<_>>()
    );
    assert!(
        common::wait_for(Duration::from_secs(10), || async {
            store
                .deliveries(false, 100)
                .await
                .unwrap()
                .iter()
                .any(|d| d.id == flaky_row.id && d.status == "delivered")
        })
        .await
    );
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_delivery_completes_it_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply::Hang(Duration::from_secs(30))
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let sim = common::start_simulator(common::scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let extra = format!("\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nretry_initial = \"100ms\"\n", receiver.url());
    let config = common::write_config(dir.path(), &sim, &["MySampleJob"], &extra);
    let spawn = || {
        common::DaemonCommand::new(&config)
            .stderr("warn", std::process::Stdio::inherit())
            .spawn()
    };
    let mut daemon = spawn();
    assert!(
        common::wait_until(Duration::from_secs(15), || receiver.received().len() == 1).await,
        "delivery in flight"
    );
    daemon.kill().await.unwrap(); // SIGKILL, mid-request
    let mut daemon = spawn();
    assert!(
        common::wait_until(Duration::from_secs(15), || receiver
            .received()
            .iter()
            .any(|r| r.answered == Some(200)))
        .await
    );
    // The daemon records the outcome right after the answer; wait for that, not for a
    // race between the kill and its commit.
    let db = dir.path().join("iewatch.db");
    assert!(
        common::wait_for(Duration::from_secs(15), || async {
            let store = Store::open_existing(&db).await.unwrap();
            let delivered = store
                .deliveries(false, 10)
                .await
                .unwrap()
                .iter()
                .any(|d| d.status == "delivered");
            store.close().await;
            delivered
        })
        .await,
        "the delivery recorded as delivered"
    );
    daemon.kill().await.unwrap();
    let received = receiver.received();
    let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids.len(),
        1,
        "the same event, told apart by its webhook-id: {ids:?}"
    );
    assert_eq!(received[0].json()["type"], "job.first_seen");
    let store = Store::open_existing(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let rows = store.deliveries(false, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "delivered");
}
