//! Data Box orders (`kind = "databox"`): the real recorded traffic of
//! `../shared/fixtures/databox/`, and the daemon end to end against the simulator's
//! Data Box side for each shipped scenario.

mod common;

use common::shared_fixture;
use iewatch::{
    detect::detect_changes,
    events::EventType,
    model::{JobSnapshot, Severity},
    source::{arm::interpret_databox, databox_wire::DataBoxJob, PollOutcome},
};

const RECORDED: &str = "databox/recordings/extracted/";

fn recorded(name: &str) -> Vec<u8> {
    shared_fixture(&format!("{RECORDED}{name}"))
}

fn response(status: u16, body: Vec<u8>) -> http::Response<bytes::Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(bytes::Bytes::from(body))
        .unwrap()
}

/// The snapshot a recorded 200 body gives, through the client's own decoding.
fn snapshot_of(name: &str) -> JobSnapshot {
    match interpret_databox(response(200, recorded(name))).unwrap() {
        PollOutcome::Modified(observation) => observation.snapshot,
        PollOutcome::NotModified => panic!("a 200 is a document"),
    }
}

#[test]
fn every_recorded_body_parses_into_the_values_it_shows() {
    for name in [
        "2020-03_get_no-expand_api2018-01-01.json",
        "2020-03_get_expand-details_api2019-09-01.json",
        "2020-03_get_expand-details_after-patch_api2019-09-01.json",
    ] {
        let body = recorded(name);
        assert!(body.windows(2).any(|w| w == b"\r\n") || name.contains("no-expand"));
        let job = snapshot_of(name);
        assert_eq!(job.state.as_str(), "DeviceOrdered", "{name}");
        assert_eq!(job.sku.as_deref(), Some("DataBox"), "{name}");
        assert!(job.drives.is_empty(), "{name}: copyProgress is empty");
        assert_eq!(job.percent_complete, None, "{name}");
        assert!(
            job.notices.is_empty(),
            "{name}: empty carrier strings are no package"
        );
        assert!(!job.state.is_terminal());
    }

    let cancelled = snapshot_of("2020-03_get_expand-details_cancelled_api2019-09-01.json");
    assert_eq!(cancelled.state.as_str(), "Cancelled");
    assert!(cancelled.state.is_terminal());
    let units: Vec<&str> = cancelled
        .drives
        .iter()
        .map(|d| d.drive_id.as_str())
        .collect();
    assert_eq!(
        units,
        [
            "clitest000002",
            "clitest000003",
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-for-managed-disk",
        ],
        "destination accounts by name, the managed-disk group by id"
    );
    assert!(
        cancelled
            .drives
            .iter()
            .all(|d| d.percent_complete.is_none()),
        "a total of 0 bytes gives no percentage"
    );

    let list: serde_json::Value =
        serde_json::from_slice(&recorded("2020-03_list-rg_api2019-09-01.json")).unwrap();
    for item in list["value"].as_array().unwrap() {
        let job = DataBoxJob::parse(item.to_string().as_bytes()).unwrap();
        assert_eq!(job.name, "job000004");
        assert_eq!(job.properties.status, "DeviceOrdered");
    }
}

#[test]
fn both_recorded_404_bodies_are_not_found_with_their_codes() {
    for (name, code) in [
        (
            "2020-03_get_404_arm-gateway_ResourceNotFound.json",
            "ResourceNotFound",
        ),
        (
            "2020-03_get_404_rp_SsemUserErrorEntityNotFound.json",
            "SsemUserErrorEntityNotFound",
        ),
    ] {
        let error = interpret_databox(response(404, recorded(name))).unwrap_err();
        assert!(error.is_not_found(), "{name}");
        assert!(error.to_string().contains(code), "{name}: {error}");
    }
}

#[test]
fn the_recorded_lifecycle_replays_into_exactly_these_events() {
    let lifecycle = [
        "2020-03_get_no-expand_api2018-01-01.json",
        "2020-03_get_expand-details_api2019-09-01.json",
        "2020-03_get_expand-details_after-patch_api2019-09-01.json",
        "2020-03_get_expand-details_cancelled_api2019-09-01.json",
    ];
    let mut previous: Option<JobSnapshot> = None;
    let mut events = Vec::new();
    for name in lifecycle {
        let current = snapshot_of(name);
        events.extend(detect_changes(previous.as_ref(), &current));
        previous = Some(current);
    }
    let seen: Vec<(EventType, Option<String>, Option<String>, Severity)> = events
        .iter()
        .map(|e| {
            (
                e.event_type,
                e.drive_id.as_ref().map(|d| d.to_string()),
                e.to_text(),
                e.severity,
            )
        })
        .collect();
    let drive = |id: &str| {
        (
            EventType::DriveAdded,
            Some(id.to_owned()),
            None,
            Severity::Info,
        )
    };
    assert_eq!(
        seen,
        vec![
            (
                EventType::JobFirstSeen,
                None,
                Some("DeviceOrdered".into()),
                Severity::Info
            ),
            (
                EventType::JobStateChanged,
                None,
                Some("Cancelled".into()),
                Severity::Info
            ),
            drive("clitest000002"),
            drive("clitest000003"),
            drive("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-for-managed-disk"),
        ]
    );
    // The order was then deleted: the real 404 ends the recording.
    let gone = interpret_databox(response(
        404,
        recorded("2020-03_get_404_rp_SsemUserErrorEntityNotFound.json"),
    ))
    .unwrap_err();
    assert!(gone.is_not_found());
}

// ---------------------------------------------------------------------------------------
// End to end: the daemon (the real binary) watching the simulator's Data Box side.

use std::{path::Path, time::Duration};

use common::{scenario, start_simulator, wait_for, Receiver, Reply};
use iewatch::simulator::RunningSimulator;

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What one scenario run left behind.
struct Run {
    /// (type, drive, to, severity) in order, from the database.
    events: Vec<(String, Option<String>, Option<String>, String)>,
    /// Webhook deliveries received.
    received: Vec<common::Received>,
    /// The daemon's log.
    log: String,
    /// `status`, `history` and `history --json` output.
    cli: String,
    /// Every byte of the database files.
    database: Vec<u8>,
}

/// Steps the simulator through `job`'s versions; after each, waits until the daemon has
/// been answered twice at that moment (its polls of one job are sequential, so the first
/// answer is recorded by then).
async fn play(sim: &RunningSimulator, file: &str, job: &str) {
    let timeline = scenario(file)
        .compile()
        .unwrap()
        .into_iter()
        .find(|t| t.name == job)
        .unwrap();
    for version in &timeline.versions {
        sim.set_time(Some(version.since));
        let answered = || {
            sim.requests()
                .iter()
                .filter(|r| {
                    r.job.as_deref() == Some(job)
                        && r.sim_offset == version.since
                        && r.status == 200
                })
                .count()
        };
        let reached = wait_for(Duration::from_secs(20), || async { answered() >= 2 }).await;
        assert!(
            reached,
            "{job}: version at {:?} polled twice",
            version.since
        );
    }
}

async fn run_scenario(file: &str, job: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario(file), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let receiver = Receiver::start(|_| Reply::Status(204)).await;
    let db = dir.path().join("iewatch.db");
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\nrequest_timeout = \"5s\"\n\n{}\n[[job]]\naccount = \"portal\"\nname = \"{job}\"\n\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
            db.display(),
            sim.databox_account_block("portal"),
            receiver.url(),
        ),
    )
    .unwrap();
    let log_path = dir.path().join("daemon.log");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    play(&sim, file, job).await;
    let events = event_rows(&db, job).await;
    let delivered = wait_for(Duration::from_secs(20), || async {
        receiver.received().len() >= events.len()
    })
    .await;
    assert!(delivered, "every event delivered");
    daemon.kill().await.unwrap();
    let cli = [
        vec!["status", "-c"],
        vec!["history", job, "-c"],
        vec!["history", job, "--json", "-c"],
    ]
    .into_iter()
    .map(|args| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
            .args(args)
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .collect::<Vec<_>>()
    .join("\n");
    let database = ["iewatch.db", "iewatch.db-wal", "iewatch.db-shm"]
        .iter()
        .flat_map(|f| std::fs::read(dir.path().join(f)).unwrap_or_default())
        .collect();
    Run {
        events,
        received: receiver.received(),
        log: std::fs::read_to_string(&log_path).unwrap(),
        cli,
        database,
    }
}

async fn event_rows(db: &Path, job: &str) -> Vec<(String, Option<String>, Option<String>, String)> {
    let store = iewatch::store::Store::open_existing(db).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT e.type, e.drive_id, e.to_value, e.severity FROM events e JOIN jobs j ON j.id = e.job_id
         WHERE j.name = ? ORDER BY e.id",
    )
    .bind(job)
    .fetch_all(store.pool())
    .await
    .unwrap();
    store.close().await;
    rows
}

/// Nothing the service sent that iewatch must not keep shows up anywhere.
fn assert_nothing_secret(run: &Run) {
    let forbidden = [
        "sig=",
        "Tz0aFakeSignature",
        "johndoe@example.com",
        "One Microsoft Way",
        "14255550100",
        "chainofcustody",
    ];
    let payloads: String = run
        .received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let database = String::from_utf8_lossy(&run.database);
    for (place, text) in [
        ("log", run.log.as_str()),
        ("payloads", payloads.as_str()),
        ("CLI output", run.cli.as_str()),
        ("database", &*database),
    ] {
        for needle in forbidden {
            assert!(!text.contains(needle), "{needle:?} found in the {place}");
        }
    }
}

fn print(run: &Run) {
    for e in &run.events {
        eprintln!("{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_disk_import_end_to_end() {
    let run = run_scenario("databox-customer-disk.toml", "portal-import-01").await;
    print(&run);
    assert_nothing_secret(&run);
}
