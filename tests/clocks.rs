//! What did not happen, end to end: stalls announced once across a restart, reminders
//! until `iewatch ack`, `iewatch mute`, service deadlines counted from the service's own
//! creation time, and the ETA where people read it. Thresholds are configured short; the
//! waits are for polls, never for a threshold to pass by a sleep.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{
    event_list, iewatch_cli as iewatch, scenario, start_simulator, wait_for, Receiver, Reply,
    RunningDaemon,
};
use iewatch::simulator::RunningSimulator;

fn config(dir: &Path, sim: &RunningSimulator, daemon: &str, hook: &Receiver) -> std::path::PathBuf {
    let path = dir.join("iewatch.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\nrequest_timeout = \"5s\"\n{daemon}\n\n{}\n[[job]]\naccount = \"sim\"\nname = \"MySampleJob\"\n\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\n",
            dir.join("iewatch.db").display(),
            sim.account_block("sim"),
            hook.url()
        ),
    )
    .unwrap();
    path
}

fn count(events: &[common::EventRow], kind: &str) -> usize {
    events.iter().filter(|e| e.0 == kind).count()
}

/// Waits until the simulator has answered `n` more Get Job requests than now: the
/// daemon's clocks have ticked that many times.
async fn polls(sim: &RunningSimulator, n: usize) {
    let seen = sim.requests().iter().filter(|r| r.job.is_some()).count();
    let ticked = wait_for(Duration::from_secs(20), || async {
        sim.requests().iter().filter(|r| r.job.is_some()).count() >= seen + n
    })
    .await;
    assert!(ticked, "{n} more polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_is_announced_once_across_a_restart_reminded_and_stopped_by_an_ack() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::from_secs(13 * 3600))); // Shipping
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let config = config(
        dir.path(),
        &sim,
        "stall_after = { Shipping = \"1s\" }\ndrive_stall_after = \"off\"\nremind_every = \"1s\"\nremind_max = 100",
        &hook,
    );
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    let stalled = wait_for(Duration::from_secs(15), || async {
        count(&event_list(&db, "MySampleJob").await, "job.stalled") == 1
    })
    .await;
    assert!(stalled, "{:?}", event_list(&db, "MySampleJob").await);
    daemon.stop().await;

    // A restart in the middle of the stall does not announce it again.
    let daemon = RunningDaemon::start(&config).await;
    polls(&sim, 10).await;
    let reminded = wait_for(Duration::from_secs(15), || async {
        count(&event_list(&db, "MySampleJob").await, "job.reminder") >= 2
    })
    .await;
    assert!(reminded, "reminded while stalled");
    let events = event_list(&db, "MySampleJob").await;
    assert_eq!(count(&events, "job.stalled"), 1, "{events:?}");

    let status: serde_json::Value =
        serde_json::from_str(&iewatch(&["status", "--json"], &db)).unwrap();
    assert_eq!(status[0]["stalled"], true);
    assert_eq!(status[0]["condition"], "stalled");
    assert!(iewatch(&["status"], &db).contains("Shipping (stalled)"));

    let said = iewatch(
        &["ack", "MySampleJob", "--note", "carrier says Friday"],
        &db,
    );
    assert!(said.contains("acknowledged"), "{said}");
    // The daemon reads the ack when the next reminder is due: at most one more.
    polls(&sim, 15).await;
    let after_ack = count(&event_list(&db, "MySampleJob").await, "job.reminder");
    polls(&sim, 30).await;
    assert_eq!(
        count(&event_list(&db, "MySampleJob").await, "job.reminder"),
        after_ack,
        "no reminder after the ack"
    );
    let history = iewatch(&["history", "MySampleJob"], &db);
    assert!(
        history.contains("acknowledged: carrier says Friday"),
        "{history}"
    );

    // Moving on ends the stall.
    sim.set_time(Some(Duration::from_secs(2 * 86_400)));
    let resumed = wait_for(Duration::from_secs(15), || async {
        count(&event_list(&db, "MySampleJob").await, "job.resumed") == 1
    })
    .await;
    assert!(resumed);
    let out = wait_for(Duration::from_secs(15), || async {
        hook.received()
            .iter()
            .any(|r| r.json()["type"] == "job.resumed")
    })
    .await;
    assert!(out, "job.resumed delivered");
    daemon.stop().await;

    // Every announcement but the ack went out, with its fields.
    let delivered = |kind: &str| {
        hook.received()
            .into_iter()
            .map(|r| r.json())
            .filter(|b| b["type"] == kind)
            .collect::<Vec<_>>()
    };
    let stall = &delivered("job.stalled")[0]["data"];
    assert_eq!(stall["state"], "Shipping");
    assert_eq!(stall["threshold"], "1s");
    assert_eq!(stall["severity"], "warning");
    let reminder = &delivered("job.reminder")[0]["data"];
    assert_eq!(reminder["condition"], "stalled");
    assert_eq!(reminder["count"], 1);
    assert_eq!(delivered("job.resumed")[0]["data"]["state"], "Shipping");
    assert!(delivered("job.acknowledged").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_job_records_its_events_and_sends_none_until_unmuted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let config = config(dir.path(), &sim, "", &hook);
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    assert!(
        wait_for(Duration::from_secs(15), || async {
            hook.received().len() == 1
        })
        .await
    );
    let said = iewatch(&["mute", "sim/MySampleJob", "--for", "2d"], &db);
    assert!(said.contains("silenced until"), "{said}");
    assert!(said.contains("not sent, then or later"), "{said}");
    assert!(iewatch(&["status"], &db).contains("(muted)"));

    sim.set_time(Some(Duration::from_secs(13 * 3600))); // Shipping: two events
    let recorded = wait_for(Duration::from_secs(15), || async {
        event_list(&db, "MySampleJob").await.len() == 3
    })
    .await;
    assert!(recorded, "muted events are recorded");
    polls(&sim, 10).await;
    assert_eq!(hook.received().len(), 1, "and not sent");

    iewatch(&["mute", "MySampleJob", "--off"], &db);
    sim.set_time(Some(Duration::from_secs(2 * 86_400))); // Received
    let sent = wait_for(Duration::from_secs(15), || async {
        hook.received()
            .iter()
            .any(|r| r.json()["data"]["to"] == "Received")
    })
    .await;
    assert!(sent, "sent again once unmuted");
    daemon.stop().await;

    let unknown = Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["mute", "NoSuchJob", "--for", "1h", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no job NoSuchJob"));
    let forever = Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["mute", "MySampleJob", "--for", "5y", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!forever.status.success(), "a mute is bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_still_awaiting_shipment_after_13_days_is_warned_of_its_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let mut order = scenario("databox-customer-disk.toml");
    let created = std::time::SystemTime::now() - Duration::from_secs(13 * 86_400);
    order.epoch = Some(humantime::format_rfc3339_seconds(created).to_string());
    let sim = start_simulator(order, dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let db = dir.path().join("iewatch.db");
    let path = dir.path().join("iewatch.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\n\n{}\n[[job]]\naccount = \"portal\"\nname = \"portal-import-01\"\n\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\n",
            db.display(),
            sim.databox_account_block("portal"),
            hook.url()
        ),
    )
    .unwrap();
    let daemon = RunningDaemon::start(&path).await;
    let warned = wait_for(Duration::from_secs(15), || async {
        hook.received()
            .iter()
            .any(|r| r.json()["type"] == "job.deadline")
    })
    .await;
    assert!(warned);
    polls(&sim, 5).await;
    daemon.stop().await;
    let events = event_list(&db, "portal-import-01").await;
    assert_eq!(count(&events, "job.deadline"), 1, "once: {events:?}");
    let deadline = hook
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|b| b["type"] == "job.deadline")
        .unwrap();
    let data = &deadline["data"];
    assert_eq!(data["deadline"], "deletion");
    assert_eq!(
        data["at"],
        humantime::format_rfc3339_seconds(created + Duration::from_secs(14 * 86_400)).to_string()
    );
    assert_eq!(data["counted_from"], "the service's creation time");
    assert_eq!(data["severity"], "warning");
    assert!(data["consequence"].as_str().unwrap().contains("deletes"));
}

/// The ETA where people read it: a job recorded at 10 % and, an hour later, at 30 %
/// (through the real detector, rules and store), then `status`, `history --json`, the
/// webhook payload and the metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eta_of_a_copy_is_in_status_history_payloads_and_metrics() {
    use iewatch::{
        config::PollPolicy,
        decide::{clocks, decide, Context, Memory, Outcome},
        model::{DriveSnapshot, JobSnapshot},
        store::{Observed, Store, Writer},
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iewatch.db");
    let store = Writer::open_file(&db).await.unwrap();
    let stored = store.load_job("prod", "MySampleJob").await.unwrap();
    let at = |percent| {
        let mut job = JobSnapshot::assemble(
            Some("Import".into()),
            "Transferring".into(),
            Some(percent),
            None,
        );
        job.drives = vec![DriveSnapshot::new(
            "9WM3NZFS".into(),
            Some("Transferring".into()),
            Some("InProgress".into()),
            Some(percent),
        )];
        job
    };
    let start = std::time::SystemTime::now() - Duration::from_secs(3600);
    let policy = PollPolicy {
        base: Duration::from_secs(60),
        by_state: Default::default(),
    };
    let settings = clocks::ClockSettings::default();
    let (mut previous, mut memory): (Option<JobSnapshot>, Memory) = (None, Memory::default());
    let mut last_events = Vec::new();
    for (offset, percent) in [(0, 10), (3600, 30)] {
        let now: iewatch::moment::Moment = (start + Duration::from_secs(offset)).into();
        let job = at(percent);
        let decision = decide(
            &memory,
            Outcome::Changed {
                job: &job,
                created_at: None,
                news: true,
            },
            &Context {
                now,
                recorded: previous.as_ref(),
                policy: &policy,
                failure_threshold: 3,
                max_retry_after: Duration::from_secs(3600),
                clocks: &settings,
                acked_at: None,
                muted: false,
                repaired: false,
            },
        );
        let events = decision.events.clone();
        store
            .record_observation(Observed {
                job: stored.id,
                snapshot: &job,
                document: "{}",
                etag: None,
                last_modified: None,
                memory: decision.memory_after(&memory),
                events: &events,
                outbox: &[],
                at: now,
            })
            .await
            .unwrap();
        memory = decision.memory.unwrap_or(memory);
        previous = Some(job);
        last_events = events;
    }
    store.close().await;
    // 20 points in an hour: the remaining 70 take three and a half hours more.
    let eta =
        humantime::format_rfc3339_seconds(start + Duration::from_secs(3600 + 12_600)).to_string();

    let status: serde_json::Value =
        serde_json::from_str(&iewatch(&["status", "--json"], &db)).unwrap();
    assert_eq!(status[0]["eta"], eta.as_str());
    assert_eq!(status[0]["drives"][0]["eta"], eta.as_str());
    let text = iewatch(&["status"], &db);
    assert!(
        text.contains(&format!("30% (ETA {})", eta.trim_end_matches(":00Z"))),
        "{text}"
    );

    let history: serde_json::Value =
        serde_json::from_str(&iewatch(&["history", "MySampleJob", "--json"], &db)).unwrap();
    let progress: Vec<&serde_json::Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "job.progress")
        .collect();
    assert_eq!(progress.len(), 1, "10 → 30");
    assert_eq!(progress[0]["details"]["details"]["eta"], eta.as_str());
    assert!(last_events
        .iter()
        .any(|e| e.details.as_ref().is_some_and(|d| d["eta"] == eta.as_str())));

    let store = Store::open_existing(&db).await.unwrap();
    let record = store
        .history("MySampleJob", None, iewatch::store::Details::Read)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == iewatch::events::EventType::DriveProgress)
        .unwrap();
    store.close().await;
    let body: serde_json::Value =
        serde_json::from_slice(&iewatch::payload::json_body(&record)).unwrap();
    assert_eq!(body["data"]["eta"], eta.as_str());
    assert_eq!(body["data"]["to"], "30");

    let telemetry = iewatch::telemetry::Telemetry::new();
    telemetry.job_eta("prod", "MySampleJob", memory.clocks.eta);
    let scrape = telemetry.encode();
    let seconds = memory.clocks.eta.unwrap().unix_secs();
    assert!(
        scrape.contains(&format!(
            "iewatch_job_eta_timestamp_seconds{{account=\"prod\",job_name=\"MySampleJob\"}} {seconds}"
        )),
        "{scrape}"
    );
}
