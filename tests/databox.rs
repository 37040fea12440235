//! Data Box orders (`kind = "databox"`): the real recorded traffic of
//! `../shared/fixtures/databox/`, and the daemon end to end against the simulator's
//! Data Box side for each shipped scenario.

mod common;

use common::Recordings;
use iewatch::{
    detect::detect_changes,
    events::EventType,
    model::{JobSnapshot, Severity},
    source::{arm::interpret_databox, databox_wire::DataBoxJob, PollOutcome},
};

const RECORDED: &str = "databox/recordings/extracted/";

/// A recorded Data Box body by file name.
fn recorded(recordings: &Recordings, name: &str) -> Vec<u8> {
    recordings.read(&format!("{RECORDED}{name}"))
}

fn response(status: u16, body: Vec<u8>) -> http::Response<bytes::Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(bytes::Bytes::from(body))
        .unwrap()
}

/// The snapshot a recorded 200 body gives, through the client's own decoding.
fn snapshot_of(recordings: &Recordings, name: &str) -> JobSnapshot {
    match interpret_databox(response(200, recorded(recordings, name))).unwrap() {
        PollOutcome::Modified(observation) => observation.snapshot,
        PollOutcome::NotModified => panic!("a 200 is a document"),
    }
}

#[test]
fn every_recorded_body_parses_into_the_values_it_shows() {
    let Some(recordings) = Recordings::available() else {
        return;
    };
    for name in [
        "2020-03_get_no-expand_api2018-01-01.json",
        "2020-03_get_expand-details_api2019-09-01.json",
        "2020-03_get_expand-details_after-patch_api2019-09-01.json",
    ] {
        let body = recorded(&recordings, name);
        assert!(body.windows(2).any(|w| w == b"\r\n") || name.contains("no-expand"));
        let job = snapshot_of(&recordings, name);
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

    let cancelled = snapshot_of(
        &recordings,
        "2020-03_get_expand-details_cancelled_api2019-09-01.json",
    );
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
        serde_json::from_slice(&recorded(&recordings, "2020-03_list-rg_api2019-09-01.json"))
            .unwrap();
    for item in list["value"].as_array().unwrap() {
        let job = DataBoxJob::parse(item.to_string().as_bytes()).unwrap();
        assert_eq!(job.name, "job000004");
        assert_eq!(job.properties.status, "DeviceOrdered");
    }
}

#[test]
fn both_recorded_404_bodies_are_not_found_with_their_codes() {
    let Some(recordings) = Recordings::available() else {
        return;
    };
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
        let error = interpret_databox(response(404, recorded(&recordings, name))).unwrap_err();
        assert!(error.is_not_found(), "{name}");
        assert!(error.to_string().contains(code), "{name}: {error}");
    }
}

#[test]
fn the_recorded_lifecycle_replays_into_exactly_these_events() {
    let Some(recordings) = Recordings::available() else {
        return;
    };
    let lifecycle = [
        "2020-03_get_no-expand_api2018-01-01.json",
        "2020-03_get_expand-details_api2019-09-01.json",
        "2020-03_get_expand-details_after-patch_api2019-09-01.json",
        "2020-03_get_expand-details_cancelled_api2019-09-01.json",
    ];
    let mut previous: Option<JobSnapshot> = None;
    let mut events = Vec::new();
    for name in lifecycle {
        let current = snapshot_of(&recordings, name);
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
        recorded(
            &recordings,
            "2020-03_get_404_rp_SsemUserErrorEntityNotFound.json",
        ),
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
    let mut daemon = common::DaemonCommand::new(&config)
        .log_to("info", &log_path)
        .spawn();
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
        vec!["check", "--online", "-c"],
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
    common::event_columns(db, job, "e.type, e.drive_id, e.to_value, e.severity").await
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

/// The scenario's simulated time at `offset`, as the service writes it in UTC.
fn sim_time(file: &str, offset: &str) -> String {
    let epoch = scenario(file).epoch().unwrap();
    let at = epoch + iewatch::simulator::scenario::offset(offset).unwrap();
    humantime::format_rfc3339_seconds(at).to_string()
}

type Expected = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
);

/// The events as (type, drive, to, severity), tracking numbers (generated) shown as `*`.
fn events_of(run: &Run) -> Vec<(String, Option<String>, Option<String>, String)> {
    run.events
        .iter()
        .map(|(t, d, to, s)| {
            let to = match (t.as_str(), to) {
                ("job.shipping_updated", Some(to)) => {
                    let (kept, tracking) = to.rsplit_once(' ').unwrap();
                    assert!(tracking.starts_with("1Z") && tracking.len() == 18, "{to}");
                    Some(format!("{kept} *"))
                }
                _ => to.clone(),
            };
            (t.clone(), d.clone(), to, s.clone())
        })
        .collect()
}

fn expected(rows: &[Expected]) -> Vec<(String, Option<String>, Option<String>, String)> {
    let own = |v: Option<&str>| v.map(str::to_owned);
    rows.iter()
        .map(|(t, d, to, s)| (t.to_string(), own(*d), own(*to), s.to_string()))
        .collect()
}

/// Every event reached the webhook once, in order, signed, with its severity and the
/// order's SKU; returns the payloads.
fn assert_delivered(run: &Run, sku: &str) -> Vec<serde_json::Value> {
    assert_eq!(run.received.len(), run.events.len());
    run.received
        .iter()
        .zip(&run.events)
        .map(|(received, (event_type, _, _, severity))| {
            assert!(
                common::independently_verified(
                    WEBHOOK_SECRET,
                    received.header("webhook-id"),
                    received.header("webhook-timestamp"),
                    &received.body,
                    received.header("webhook-signature"),
                ),
                "signed"
            );
            let body = received.json();
            assert_eq!(body["type"], event_type.as_str());
            assert_eq!(body["data"]["severity"], severity.as_str());
            assert_eq!(body["data"]["job"]["sku"], sku);
            body
        })
        .collect()
}

fn status_line(run: &Run) -> &str {
    run.cli.lines().nth(1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_disk_import_end_to_end() {
    let run = run_scenario("databox-customer-disk.toml", "portal-import-01").await;
    let disk = Some("WCC4M1YR0DVU");
    let other = Some("ZDH7Q2LP");
    assert_eq!(
        events_of(&run),
        expected(&[
            (
                "job.first_seen",
                None,
                Some("AwaitingShipmentDetails"),
                "info"
            ),
            ("job.state_changed", None, Some("ShippedToAzureDC"), "info"),
            ("job.shipping_updated", None, Some("delivery UPS *"), "info"),
            ("job.state_changed", None, Some("AtAzureDC"), "info"),
            (
                "job.delayed",
                None,
                Some("AtAzureDC HighDemandDelay"),
                "warning"
            ),
            (
                "job.delay_resolved",
                None,
                Some("AtAzureDC HighDemandDelay"),
                "info"
            ),
            ("job.state_changed", None, Some("DataCopy"), "info"),
            ("job.progress", None, Some("0"), "info"),
            (
                "drive.copy_status_changed",
                disk,
                Some("InProgress"),
                "info"
            ),
            ("drive.progress", disk, Some("0"), "info"),
            // Byte-weighted over both 4 TB disks: (45 + 10) / 2.
            ("job.progress", None, Some("27"), "info"),
            ("drive.progress", disk, Some("45"), "info"),
            (
                "drive.copy_status_changed",
                other,
                Some("InProgress"),
                "info"
            ),
            ("drive.progress", other, Some("10"), "info"),
            ("job.progress", None, Some("80"), "info"),
            ("drive.copy_status_changed", disk, Some("Completed"), "info"),
            ("drive.progress", disk, Some("100"), "info"),
            ("drive.progress", other, Some("60"), "info"),
            ("job.progress", None, Some("100"), "info"),
            (
                "drive.copy_status_changed",
                other,
                Some("CompletedWithErrors"),
                "error"
            ),
            ("drive.progress", other, Some("100"), "info"),
            // What failed, from the disk's copy log (read within milliseconds, while the
            // next version waits for two polls).
            (
                "drive.errors",
                other,
                Some("3 files failed: 3 UploadErrorCloudHttp; first: photos/a?.jpg (UploadErrorCloudHttp)"),
                "warning"
            ),
            (
                "job.state_changed",
                None,
                Some("PreparingToShipFromAzureDC"),
                "info"
            ),
            ("job.state_changed", None, Some("ShippedToCustomer"), "info"),
            ("job.shipping_updated", None, Some("return UPS *"), "info"),
            ("job.state_changed", None, Some("Completed"), "info"),
            (
                "job.deadline",
                None,
                Some("purge 90d after completion"),
                "info"
            ),
        ])
    );
    let payloads = assert_delivered(&run, "DataBoxCustomerDisk");
    let first = &payloads[0]["data"]["summary"];
    let disks: Vec<&str> = first["drives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["drive_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        disks,
        ["WCC4M1YR0DVU", "ZDH7Q2LP"],
        "the disks are known from creation"
    );
    let shipped = &payloads[2]["data"];
    assert_eq!(shipped["package"], "delivery");
    assert_eq!(shipped["carrier"], "UPS");
    assert!(shipped["tracking"].as_str().unwrap().starts_with("1Z"));
    assert!(shipped.get("from").is_none(), "{shipped}");
    let delayed = &payloads[4]["data"];
    assert_eq!(delayed["stage"], "AtAzureDC");
    assert_eq!(delayed["code"], "HighDemandDelay");
    assert_eq!(
        delayed["started_at"],
        sim_time("databox-customer-disk.toml", "2d 6h")
    );
    assert!(
        status_line(&run).starts_with(
            "portal/portal-import-01  ImportToAzure DataBoxCustomerDisk  Completed  100%  2 drives: 1 Completed, 1 CompletedWithErrors"
        ),
        "{}",
        run.cli
    );
    assert!(
        run.cli.contains("delayed: AtAzureDC HighDemandDelay"),
        "{}",
        run.cli
    );
    assert!(
        run.cli.lines().any(|l| l.contains("drive ZDH7Q2LP")
            && l.contains("copy status InProgress → CompletedWithErrors")
            && l.ends_with("[error]")),
        "{}",
        run.cli
    );
    assert_nothing_secret(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_box_appliance_whose_copy_waits_for_the_customer() {
    let run = run_scenario("databox-appliance.toml", "databox-order-7").await;
    let (one, two) = (Some("contosoimport1"), Some("contosoarchive"));
    assert_eq!(
        events_of(&run),
        expected(&[
            ("job.first_seen", None, Some("DeviceOrdered"), "info"),
            ("job.state_changed", None, Some("DevicePrepared"), "info"),
            ("job.state_changed", None, Some("Dispatched"), "info"),
            ("job.shipping_updated", None, Some("delivery UPS *"), "info"),
            ("job.state_changed", None, Some("Delivered"), "info"),
            ("job.state_changed", None, Some("PickedUp"), "info"),
            ("job.shipping_updated", None, Some("return UPS *"), "info"),
            ("job.state_changed", None, Some("AtAzureDC"), "info"),
            ("job.state_changed", None, Some("DataCopy"), "info"),
            ("job.progress", None, Some("0"), "info"),
            ("drive.added", one, None, "info"),
            ("drive.added", two, None, "info"),
            ("job.progress", None, Some("50"), "info"),
            ("drive.progress", one, Some("70"), "info"),
            ("drive.progress", two, Some("30"), "info"),
            ("job.progress", None, Some("95"), "info"),
            ("drive.progress", one, Some("100"), "info"),
            ("drive.progress", two, Some("90"), "info"),
            (
                "job.action_required",
                None,
                Some("DataCopy WaitingForCustomerAction: SsemUserCopyErrorWaitingForAction"),
                "error",
            ),
            ("job.progress", None, Some("100"), "info"),
            ("drive.progress", two, Some("100"), "info"),
            ("job.state_changed", None, Some("Completed"), "info"),
            (
                "job.deadline",
                None,
                Some("purge 90d after completion"),
                "info"
            ),
        ])
    );
    let payloads = assert_delivered(&run, "DataBox");
    let action = &payloads[18]["data"];
    assert_eq!(action["stage"], "DataCopy");
    assert_eq!(action["code"], "SsemUserCopyErrorWaitingForAction");
    assert!(action["message"]
        .as_str()
        .unwrap()
        .starts_with("Job has an error in copy stage"));
    assert_eq!(
        action["actions"],
        serde_json::json!(["MoveToCleanUpDevice"])
    );
    assert_eq!(action["since"], sim_time("databox-appliance.toml", "6d 6h"));
    assert_eq!(
        action["auto_complete_at"],
        sim_time("databox-appliance.toml", "20d 6h"),
        "14 days on"
    );
    assert!(
        status_line(&run).contains("ImportToAzure DataBox  Completed  100%  2 accounts: 2 copied"),
        "{}",
        run.cli
    );
    assert!(run.cli.contains("action required: DataCopy"), "{}", run.cli);
    assert_nothing_secret(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_box_disk_order_reports_each_disks_percentage() {
    let run = run_scenario("databox-disk.toml", "disk-order-3").await;
    let (a, b, c) = (
        Some("DBD1A2B3C401"),
        Some("DBD1A2B3C402"),
        Some("DBD1A2B3C403"),
    );
    assert_eq!(
        events_of(&run),
        expected(&[
            ("job.first_seen", None, Some("DeviceOrdered"), "info"),
            (
                "job.delayed",
                None,
                Some("DeviceOrdered HighDemandDelay"),
                "warning"
            ),
            (
                "job.delay_resolved",
                None,
                Some("DeviceOrdered HighDemandDelay"),
                "info"
            ),
            ("job.state_changed", None, Some("DevicePrepared"), "info"),
            ("job.state_changed", None, Some("Dispatched"), "info"),
            ("job.shipping_updated", None, Some("delivery UPS *"), "info"),
            ("job.state_changed", None, Some("Delivered"), "info"),
            ("job.state_changed", None, Some("PickedUp"), "info"),
            ("job.shipping_updated", None, Some("return UPS *"), "info"),
            ("job.state_changed", None, Some("AtAzureDC"), "info"),
            ("job.state_changed", None, Some("DataCopy"), "info"),
            ("job.progress", None, Some("0"), "info"),
            ("drive.added", a, Some("InProgress"), "info"),
            ("drive.added", b, Some("InProgress"), "info"),
            ("drive.added", c, Some("NotStarted"), "info"),
            // The service gives percentages only: their mean, (100 + 50 + 20) / 3.
            ("job.progress", None, Some("56"), "info"),
            ("drive.copy_status_changed", a, Some("Completed"), "info"),
            ("drive.progress", a, Some("100"), "info"),
            ("drive.progress", b, Some("50"), "info"),
            ("drive.copy_status_changed", c, Some("InProgress"), "info"),
            ("drive.progress", c, Some("20"), "info"),
            ("job.progress", None, Some("100"), "info"),
            ("drive.copy_status_changed", b, Some("Completed"), "info"),
            ("drive.progress", b, Some("100"), "info"),
            ("drive.copy_status_changed", c, Some("Completed"), "info"),
            ("drive.progress", c, Some("100"), "info"),
            ("job.state_changed", None, Some("Completed"), "info"),
            (
                "job.deadline",
                None,
                Some("purge 90d after completion"),
                "info"
            ),
        ])
    );
    assert_delivered(&run, "DataBoxDisk");
    assert!(
        status_line(&run)
            .contains("ImportToAzure DataBoxDisk  Completed  100%  3 drives: 3 Completed"),
        "{}",
        run.cli
    );
    assert_nothing_secret(&run);
}

#[test]
fn a_body_with_sas_urls_contacts_and_addresses_keeps_none_of_them() {
    let timeline = scenario("databox-customer-disk.toml")
        .compile()
        .unwrap()
        .remove(0);
    let version = timeline.versions.last().unwrap();
    let placement = iewatch::simulator::databox::Placement {
        subscription: "s",
        resource_group: "transfer-rg",
    };
    let mut served = iewatch::simulator::databox::resource(
        version.job.as_ref().unwrap(),
        "DataBoxCustomerDisk",
        version.databox.as_ref().unwrap(),
        &placement,
        true,
    );
    // A hostile (or careless) service puts a SAS URL where a message or a link goes.
    let sas = "https://x.blob.core.windows.net/c/f.txt?sv=2016-05-31&sr=b&sig=AbC%2Bdef%3D&se=2026-12-31&sp=r";
    served["properties"]["error"] = serde_json::json!({"code": "X", "message": sas});
    served["properties"]["details"]["returnPackage"]["trackingUrl"] = sas.into();
    served["properties"]["details"]["importDiskDetailsCollection"]["WCC4M1YR0DVU"]
        ["bitLockerKey"] = "111111-222222-333333-444444".into();
    let body = iewatch::simulator::databox::service_body(&served);
    let text = String::from_utf8_lossy(&body);
    for sent in [
        "sig=Tz0aFakeSignature",
        "johndoe@example.com",
        "One Microsoft Way",
        "111111-222222",
        "\r\n",
    ] {
        assert!(text.contains(sent), "the service body carries {sent:?}");
    }
    let (snapshot, document) = DataBoxJob::parse(&body).unwrap().into_parts();
    let stored = document.render(true);
    let watched = format!("{snapshot:?}");
    for kept_out in [
        "sig=",
        "johndoe",
        "One Microsoft Way",
        "14255550100",
        "111111-222222",
        "SasKey",
        "contactDetails",
    ] {
        assert!(!stored.contains(kept_out), "{kept_out:?} in {stored}");
        assert!(!watched.contains(kept_out), "{kept_out:?} in {watched}");
    }
    assert!(stored.contains("\"status\":\"Completed\""), "{stored}");
    assert!(
        stored.contains("\"diskSerials\":[\"WCC4M1YR0DVU\",\"ZDH7Q2LP\"]"),
        "{stored}"
    );
    assert_eq!(
        snapshot.notices.packages[1].url.as_deref(),
        Some("[redacted]"),
        "a tracking link carrying a signature is not passed on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_all_discovers_every_order_over_pages_and_no_import_export_job() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("databox-listing.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let db = dir.path().join("iewatch.db");
    let config = dir.path().join("iewatch.toml");
    let account = sim
        .databox_account_block("portal")
        .replace("kind = \"databox\"", "kind = \"databox\"\njobs = \"all\"");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"200ms\"\n\n{account}",
            db.display()
        ),
    )
    .unwrap();
    let daemon = common::RunningDaemon::start(&config).await;
    let names = || async {
        let Ok(store) = iewatch::store::Store::open_existing(&db).await else {
            return Vec::new();
        };
        let names: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT name, state FROM jobs ORDER BY name")
                .fetch_all(store.pool())
                .await
                .unwrap_or_default();
        store.close().await;
        names
    };
    let all_seen = wait_for(Duration::from_secs(20), || async {
        names().await.iter().filter(|(_, s)| s.is_some()).count() == 3
    })
    .await;
    assert!(all_seen, "{:?}", names().await);
    daemon.stop().await;
    assert_eq!(
        names().await,
        [
            ("disk-order-3".to_owned(), Some("Dispatched".to_owned())),
            ("portal-import-01".to_owned(), Some("DataCopy".to_owned())),
            (
                "portal-import-02".to_owned(),
                Some("AwaitingShipmentDetails".to_owned())
            ),
        ]
    );
    let listed: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.job.is_none() && r.method == "GET")
        .collect();
    assert!(listed.len() >= 2, "two pages at least: {}", listed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_order_waits_for_retry_after_then_is_watched_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut listing = scenario("databox-listing.toml");
    listing.faults = iewatch::simulator::Scenario::parse(
        "[[fault]]\njob = \"portal-import-02\"\nfrom = \"1h\"\nuntil = \"2h\"\nkind = \"throttled\"\nretry_after = 2\n",
    )
    .unwrap()
    .faults;
    let sim = start_simulator(listing, dir.path()).await;
    sim.set_time(Some(Duration::from_secs(5400)));
    let db = dir.path().join("iewatch.db");
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\n\n{}\n[[job]]\naccount = \"portal\"\nname = \"portal-import-02\"\n",
            db.display(),
            sim.databox_account_block("portal"),
        ),
    )
    .unwrap();
    let daemon = common::RunningDaemon::start(&config).await;
    let throttled = || {
        sim.requests()
            .into_iter()
            .filter(|r| r.status == 429)
            .collect::<Vec<_>>()
    };
    assert!(common::wait_until(Duration::from_secs(10), || throttled().len() >= 2).await);
    let hits = throttled();
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 was honoured over the 100 ms interval ({gap:?})"
    );
    sim.set_time(Some(Duration::from_secs(3 * 3600)));
    let watched = wait_for(Duration::from_secs(10), || async {
        event_rows(&db, "portal-import-02")
            .await
            .iter()
            .any(|e| e.0 == "job.first_seen")
    })
    .await;
    assert!(watched, "polled again once the throttling ended");
    daemon.stop().await;
}

/// A minimal Data Box resource with `properties` as given.
fn order(sku: &str, properties: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "name": "o1",
        "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.DataBox/jobs/o1",
        "sku": {"name": sku},
        "properties": properties,
    })
    .to_string()
    .into_bytes()
}

#[test]
fn unknown_skus_stages_and_statuses_are_kept_as_they_come() {
    let body = order(
        "DataBoxFuture9000",
        serde_json::json!({
            "status": "SomeNewStage",
            "transferType": "ImportToAzure",
            "details": {
                "jobStages": [{"stageName": "SomeNewStage", "stageStatus": "WaitingForCustomerActionForSomethingNew"}],
                "copyProgress": [
                    {"serialNumber": "D1", "copyStatus": "BrandNewStatus", "bytesProcessed": 1, "totalBytesToProcess": 4},
                    {"storageAccountName": "acct", "bytesProcessed": 10, "totalBytesToProcess": 0},
                    {"bytesProcessed": 3},
                ],
                "somethingNew": {"nested": true},
            },
        }),
    );
    let (job, _) = DataBoxJob::parse(&body).unwrap().into_parts();
    assert_eq!(job.sku.as_deref(), Some("DataBoxFuture9000"));
    assert_eq!(job.state.as_str(), "SomeNewStage");
    assert!(!job.state.is_terminal());
    let ids: Vec<&str> = job.drives.iter().map(|d| d.drive_id.as_str()).collect();
    assert_eq!(ids, ["D1", "acct"], "a unit without any name is skipped");
    assert_eq!(
        job.drives[0].copy_status.as_ref().unwrap().as_str(),
        "BrandNewStatus"
    );
    assert_eq!(
        job.drives[0].copy_status.as_ref().unwrap().severity(),
        Severity::Error,
        "an unknown copy status is an error, as DESIGN.md says"
    );
    assert_eq!(job.drives[0].percent_complete, Some(25));
    assert_eq!(
        job.percent_complete,
        Some(25),
        "a zero total does not count"
    );
    let action = job.notices.action.unwrap();
    assert_eq!(action.status, "WaitingForCustomerActionForSomethingNew");
    assert_eq!(
        action.auto_complete_at, None,
        "only the copy-error wait has a known clock"
    );
}

#[test]
fn odd_numbers_are_unknown_rather_than_a_lost_document() {
    let body = order(
        "DataBoxCustomerDisk",
        serde_json::json!({
            "status": "DataCopy",
            "details": {"copyProgress": [
                {"serialNumber": "A", "bytesProcessed": -5, "totalBytesToProcess": 10},
                {"serialNumber": "B", "bytesProcessed": "lots", "totalBytesToProcess": 1e300},
                {"serialNumber": "C", "bytesProcessed": 9_223_372_036_854_775_807_i64,
                 "totalBytesToProcess": 9_223_372_036_854_775_807_i64},
                {"serialNumber": "D", "bytesProcessed": 5, "totalBytesToProcess": 10,
                 "isEnumerationInProgress": true},
            ]},
        }),
    );
    let (job, _) = DataBoxJob::parse(&body).unwrap().into_parts();
    let percents: Vec<Option<i64>> = job.drives.iter().map(|d| d.percent_complete).collect();
    assert_eq!(percents, [None, None, Some(100), None]);
    assert_eq!(job.percent_complete, Some(100));
}

#[test]
fn bodies_that_are_not_an_order_are_refused_with_a_clear_error() {
    let cases: [(&[u8], &str); 4] = [
        (b"{\"name\": \"o1\", \"properties\": {", "EOF"),
        (b"{\"name\": \"o1\", \"properties\": {\"details\": {}}}", "missing field `status`"),
        (b"{\"properties\": {\"status\": \"DataCopy\"}}", "missing field `name`"),
        (
            b"{\"name\": \"o1\", \"properties\": {\"status\": \"DataCopy\", \"details\": {\"jobStages\": \"many\"}}}",
            "invalid type",
        ),
    ];
    for (body, expected) in cases {
        let error = interpret_databox(response(200, body.to_vec())).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("Data Box job") && text.contains(expected),
            "{text}"
        );
        assert_eq!(error.kind(), "decode");
    }
    let html = http::Response::builder()
        .status(200)
        .header("content-type", "text/html")
        .body(bytes::Bytes::from_static(b"<html>sign in</html>"))
        .unwrap();
    assert!(interpret_databox(html)
        .unwrap_err()
        .to_string()
        .contains("Content-Type"));
}

#[test]
fn a_document_without_details_gives_state_and_sku_only() {
    let body = order("DataBoxDisk", serde_json::json!({"status": "Delivered"}));
    let (job, document) = DataBoxJob::parse(&body).unwrap().into_parts();
    assert_eq!(job.state.as_str(), "Delivered");
    assert!(job.drives.is_empty() && job.notices.is_empty());
    assert_eq!(job.percent_complete, None);
    assert_eq!(document.redacted()["sku"]["name"], "DataBoxDisk");
}

/// Times no RFC 3339 text can hold once made UTC (before 1970, after 9999), and a stage
/// waiting since the year 9999: refused as unknown times, never a panic of the poll
/// worker (which took the whole daemon into a restart loop), and the clocks run on them.
#[test]
fn times_at_the_ends_of_the_calendar_are_unknown_not_a_poison_pill() {
    use iewatch::decide::clocks::{tick, ClockInput, ClockSettings, Clocks};
    for (created, stage_time) in [
        ("1970-01-01T00:30:00+01:00", "1970-01-01T00:00:00+00:01"),
        ("9999-12-31T23:30:00-01:00", "9999-12-30T00:00:00Z"),
        ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-14:00"),
    ] {
        let body = order(
            "DataBoxCustomerDisk",
            serde_json::json!({
                "status": "DataCopy",
                "startTime": created,
                "details": {
                    "jobStages": [{"stageName": "DataCopy",
                                   "stageStatus": "WaitingForCustomerAction",
                                   "stageTime": stage_time}],
                    "delayInformation": [{"stageName": "DataCopy", "status": "Active",
                                          "errorCode": "HighDemandDelay",
                                          "startTime": stage_time}],
                },
            }),
        );
        let observation = match interpret_databox(response(200, body)).unwrap() {
            PollOutcome::Modified(observation) => observation,
            PollOutcome::NotModified => panic!("a 200 is a document"),
        };
        let snapshot = &observation.snapshot;
        if let Some(at) = observation.created_at {
            assert!(at >= iewatch::moment::Moment::EPOCH, "{created}: {at:?}");
        }
        let events = detect_changes(None, snapshot);
        assert!(!events.is_empty(), "{created}: first sight is recorded");
        let settings = ClockSettings::default();
        let (_, clocks) = tick(
            &Clocks::default(),
            &ClockInput {
                now: std::time::SystemTime::now().into(),
                job: Some(snapshot),
                created_at: observation.created_at,
                terminal_since: None,
                polls_failing: false,
                acked_at: None,
                muted: false,
                settings: &settings,
            },
        );
        let clocks = clocks.expect("a first sight starts the clocks");
        // Stored and read back as the daemon does.
        let stored = serde_json::to_string(&clocks).unwrap();
        let _: Clocks = serde_json::from_str(&stored).unwrap();
    }
    // Resource Manager's systemData goes through the same reader.
    let arm = include_str!("fixtures/arm-get-job-2021-01-01.json");
    let mut value: serde_json::Value = serde_json::from_str(arm).unwrap();
    value["systemData"] = serde_json::json!({"createdAt": "1970-01-01T00:00:00+00:01"});
    let outcome = iewatch::source::arm::interpret(response(200, value.to_string().into_bytes()));
    match outcome.unwrap() {
        PollOutcome::Modified(observation) => assert_eq!(observation.created_at, None),
        PollOutcome::NotModified => panic!("a 200 is a document"),
    }
}
