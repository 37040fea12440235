//! What failed, from the service's error logs (issue 34), against the simulator's blob
//! endpoint: a classic drive (account key), a Resource Manager drive (a Storage token
//! from the account's own credential) and a Data Box disk (a link relative to the
//! destination account) each end with errors, and each log becomes one `drive.errors`
//! event with what failed, sent and stored once across restarts. Every fault the blob
//! endpoint can play is read through the one reader, each with the answer a person can
//! act on.

mod common;

use std::time::{Duration, Instant};

use common::{event_list, start_simulator, wait_for, Receiver, Reply, RunningDaemon};
use iewatch::{
    errorlog::{FetchError, Limits},
    model::ErrorLogRef,
};
use iewatch_sim::simulator::{blobs::BlobFault, RunningSimulator};

/// Simulated time when every scenario below has a drive that ended with errors.
const AFTER_ERRORS: Duration = Duration::from_secs(5 * 86_400 + 3_600);

const CLASSIC_HEADLINE: &str =
    "3 files failed: 2 FileNameInvalid, 1 Corrupted; first: \\photos\\a?.jpg (FileNameInvalid)";

fn config(
    dir: &std::path::Path,
    account_block: &str,
    job: &str,
    hook: &Receiver,
) -> std::path::PathBuf {
    let text = format!(
        "[daemon]\ndatabase = \"{}\"\npoll_interval = \"1s\"\nrequest_timeout = \"3s\"\n\
         \n{account_block}\n\
         [[job]]\naccount = \"sim\"\nname = \"{job}\"\n\n\
         [[webhook]]\nname = \"hook\"\nurl = \"http://{}/\"\nsecret = \"whsec_dGVzdHNlY3JldA==\"\nevents = [\"drive.errors\"]\n",
        dir.join("iewatch.db").display(),
        hook.addr
    );
    let path = dir.join("iewatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn errors_event(db: &std::path::Path, job: &str) -> Vec<common::EventRow> {
    event_list(db, job)
        .await
        .into_iter()
        .filter(|e| e.0 == "drive.errors")
        .collect()
}

/// Watches `job` until its drive.errors event is recorded and delivered; returns it.
async fn watch_until_reported(
    dir: &std::path::Path,
    config: &std::path::Path,
    job: &str,
    hook: &Receiver,
) -> common::EventRow {
    let db = dir.join("iewatch.db");
    let daemon = RunningDaemon::start(config).await;
    let reported = wait_for(Duration::from_secs(30), || async {
        errors_event(&db, job).await.len() == 1 && !hook.seen.lock().unwrap().is_empty()
    })
    .await;
    daemon.stop().await;
    assert!(reported, "a drive.errors event, recorded and delivered");
    errors_event(&db, job).await.remove(0)
}

/// A simulator past the moment a drive of `scenario` ended with errors, a webhook
/// receiver for `drive.errors`, and a config watching `job` through the account block
/// `block` gives.
struct Watch {
    dir: tempfile::TempDir,
    sim: RunningSimulator,
    hook: Receiver,
    config: std::path::PathBuf,
}

impl Watch {
    async fn start(scenario: &str, block: fn(&RunningSimulator) -> String, job: &str) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_simulator(common::scenario(scenario), dir.path()).await;
        sim.set_time(Some(AFTER_ERRORS));
        let hook = Receiver::start(|_| Reply::Status(204)).await;
        let config = config(dir.path(), &block(&sim), job, &hook);
        Watch {
            dir,
            sim,
            hook,
            config,
        }
    }

    /// Runs the daemon until `job`'s report is recorded and delivered.
    async fn report(&self, job: &str) -> common::EventRow {
        watch_until_reported(self.dir.path(), &self.config, job, &self.hook).await
    }

    fn payload(&self) -> serde_json::Value {
        self.hook.seen.lock().unwrap()[0].json()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_drive_that_ends_with_errors_says_what_failed_once() {
    let watch = Watch::start(
        "import-lifecycle.toml",
        |sim| sim.account_block("sim"),
        "MySampleJob",
    )
    .await;
    let (dir, sim, config) = (&watch.dir, &watch.sim, &watch.config);
    let (kind, drive, _, to) = watch.report("MySampleJob").await;
    assert_eq!(
        (kind.as_str(), drive.as_deref()),
        ("drive.errors", Some("9WM3NZFS"))
    );
    assert_eq!(to.as_deref(), Some(CLASSIC_HEADLINE));
    // Read with the account key (the simulator checks the SharedKey signature).
    assert_eq!(sim.blob_reads().len(), 1, "{:?}", sim.blob_reads());

    // The payload carries the report: counts with meanings, the first files, the log.
    let payload = watch.payload();
    let data = &payload["data"];
    assert_eq!(data["failed"], 3);
    assert_eq!(data["totals"][0]["code"], "FileNameInvalid");
    assert_eq!(data["totals"][0]["meaning"], "the file name is not valid");
    assert_eq!(data["first"][0]["file_path"], "\\photos\\a?.jpg");
    assert_eq!(data["summary"], CLASSIC_HEADLINE);
    let log = data["log"].as_str().unwrap();
    assert!(
        log.ends_with("/waimportexport/waies/MySampleJob_9WM3NZFS_error.xml"),
        "{log}"
    );
    assert!(
        !log.contains('?'),
        "no query (never a SAS) in a stored URL: {log}"
    );

    // A restart reads nothing again and reports nothing again.
    let polls_before = sim.requests().len();
    let daemon = RunningDaemon::start(config).await;
    let db = dir.path().join("iewatch.db");
    assert!(
        common::wait_until(Duration::from_secs(10), || sim.requests().len()
            >= polls_before + 2)
        .await,
        "the restarted daemon polls"
    );
    daemon.stop().await;
    assert_eq!(errors_event(&db, "MySampleJob").await.len(), 1);
    assert_eq!(sim.blob_reads().len(), 1, "each log is read once");

    // `iewatch errors JOB` and `status` say it from the database.
    let shown = common::iewatch_cli(&["errors", "MySampleJob"], &db);
    assert!(
        shown.contains("2 × FileNameInvalid — the file name is not valid"),
        "{shown}"
    );
    assert!(
        shown.contains("\\video\\c.mp4 → video/c.mp4: Corrupted"),
        "{shown}"
    );
    let status = common::iewatch_cli(&["status"], &db);
    assert!(
        status.contains(&format!(
            "errors: sim/MySampleJob drive 9WM3NZFS: {CLASSIC_HEADLINE}"
        )),
        "{status}"
    );
    watch.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_manager_drive_is_read_with_a_storage_token_of_the_account_identity() {
    let watch = Watch::start(
        "import-lifecycle.toml",
        |sim| sim.arm_account_block("sim"),
        "MySampleJob",
    )
    .await;
    let (_, drive, _, to) = watch.report("MySampleJob").await;
    assert_eq!(drive.as_deref(), Some("9WM3NZFS"));
    assert_eq!(to.as_deref(), Some(CLASSIC_HEADLINE));
    watch.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_box_disk_log_is_found_on_its_destination_account() {
    let watch = Watch::start(
        "databox-customer-disk.toml",
        |sim| sim.databox_account_block("sim"),
        "portal-import-01",
    )
    .await;
    let (_, drive, _, to) = watch.report("portal-import-01").await;
    let (sim, hook) = (&watch.sim, &watch.hook);
    assert_eq!(drive.as_deref(), Some("ZDH7Q2LP"));
    let to = to.unwrap();
    assert!(
        to.starts_with("3 files failed: 3 UploadErrorCloudHttp"),
        "{to}"
    );
    let reads = sim.blob_reads();
    assert!(
        reads.len() == 1
            && reads[0].starts_with("/simdest/databoxcopylog/portal-import-01_ZDH7Q2LP_"),
        "the relative link on the destination account: {reads:?}"
    );
    let payload = hook.seen.lock().unwrap()[0].json();
    assert_eq!(
        payload["data"]["first"][1]["detail"],
        "413: The blob is larger than the maximum size."
    );
    watch.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_read_is_reported_with_the_fix() {
    let watch = Watch::start(
        "import-lifecycle.toml",
        |sim| sim.arm_account_block("sim"),
        "MySampleJob",
    )
    .await;
    let refusal = BlobFault::Refuse(403, "AuthorizationPermissionMismatch".into());
    watch.sim.set_blob_fault(Some(refusal));
    let (_, _, _, to) = watch.report("MySampleJob").await;
    let to = to.unwrap();
    assert!(
        to.starts_with("log not read: 403 AuthorizationPermissionMismatch: grant Storage Blob Data Reader on storage account xttest to "),
        "{to}"
    );
    let error = watch.payload()["data"]["error"].clone();
    assert!(
        error.as_str().unwrap().contains("Storage Blob Data Reader"),
        "{error}"
    );
    watch.sim.stop().await;
}

fn small_limits() -> Limits {
    Limits {
        max_bytes: 8 * 1024 * 1024,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_blob_fault_gets_an_answer_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(common::scenario("import-lifecycle.toml"), dir.path()).await;
    let logs = common::account_logs(dir.path(), &sim.arm_account_block("sim"));
    let log = ErrorLogRef::new(
        "D1",
        &format!(
            "https://{}/xttest/waimportexport/waies/J_D1_error.xml",
            sim.blob_addr
        ),
        None,
    );
    let url = logs.resolve(&log).unwrap();
    let deadline = Duration::from_secs(3);
    for fault in BlobFault::examples() {
        sim.set_blob_fault(Some(fault.clone()));
        let started = Instant::now();
        let read = logs.read(&url, small_limits(), deadline).await;
        assert!(
            started.elapsed() < deadline + Duration::from_secs(2),
            "{fault:?} bounded in time"
        );
        match (&fault, read) {
            (BlobFault::Hang, Err(e @ FetchError::Transient(_))) => assert!(e.is_transient()),
            (
                BlobFault::Refuse(..),
                Err(FetchError::Refused {
                    status: 403,
                    advice,
                    ..
                }),
            ) => {
                assert!(
                    advice.starts_with(
                        "grant Storage Blob Data Reader on storage account xttest to app registration iewatch-sim-client (client secret)"
                    ),
                    "{advice}"
                )
            }
            (BlobFault::Huge, Ok(summary)) => {
                assert!(summary.cut_short, "a 1 GiB log is read up to the cap");
                assert!(
                    summary.totals["UploadErrorWin32"] > 50_000,
                    "{:?}",
                    summary.totals
                );
                assert_eq!(summary.entries.len(), 50, "entries kept are bounded");
            }
            (BlobFault::Bomb, Err(FetchError::Unreadable(e))) => {
                assert!(e.to_string().contains("DOCTYPE"), "{e}")
            }
            (BlobFault::Malformed, Err(FetchError::Unreadable(e))) => {
                assert!(e.to_string().starts_with("malformed XML at byte"), "{e}")
            }
            (BlobFault::Html, Err(FetchError::NotXml(kind))) => assert_eq!(kind, "text/html"),
            (BlobFault::BusyFor(n), Err(e @ FetchError::Transient(_))) => {
                // Busy for n reads: transient each time, then served.
                for _ in 1..*n {
                    let again = logs.read(&url, small_limits(), deadline).await;
                    assert!(again.is_err_and(|e| e.is_transient()));
                }
                assert!(e.to_string().contains("503 ServerBusy"), "{e}");
                let served = logs.read(&url, small_limits(), deadline).await.unwrap();
                assert_eq!(served.entries_total(), 3);
            }
            (fault, read) => panic!("{fault:?}: unexpected {read:?}"),
        }
    }
    sim.set_blob_fault(None);
    // A log that is not there, and a link off the account's blob endpoint.
    let missing = url.replace("J_D1_error.xml", "J_D1_verbose.xml");
    match logs.read(&missing, small_limits(), deadline).await {
        Err(FetchError::Refused {
            status: 404,
            code,
            advice,
        }) => {
            assert_eq!(code, "BlobNotFound");
            assert!(advice.contains("not there"), "{advice}");
        }
        other => panic!("missing blob: {other:?}"),
    }
    let elsewhere = ErrorLogRef::new("D1", "https://attacker.example/xttest/log.xml", None);
    let refused = logs.resolve(&elsewhere).unwrap_err();
    assert!(
        refused.contains("no credential is sent elsewhere"),
        "{refused}"
    );
    assert!(!sim.blob_reads().iter().any(|p| p.contains("log.xml")));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_or_sas_is_refused_with_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(common::scenario("import-lifecycle.toml"), dir.path()).await;
    let url = format!(
        "https://{}/xttest/waimportexport/waies/J_D1_error.xml",
        sim.blob_addr
    );
    // The simulator's own SAS reads; a SAS with another signature does not.
    for (sas, readable) in [
        (iewatch_sim::simulator::blobs::SAS.to_owned(), true),
        ("sv=2021-08-06&sr=c&sp=rl&sig=d3Jvbmc%3D".to_owned(), false),
    ] {
        std::fs::write(dir.path().join("sas"), &sas).unwrap();
        let block = sim.account_block("sim").replace(
            &format!("storage_key_file = \"{}\"", sim.certs.storage_key.display()),
            &format!(
                "error_log_sas_file = \"{}\"",
                dir.path().join("sas").display()
            ),
        );
        let logs = common::account_logs(dir.path(), &block);
        let read = logs
            .read(&url, small_limits(), Duration::from_secs(3))
            .await;
        match (readable, read) {
            (true, Ok(summary)) => assert_eq!(summary.entries_total(), 3),
            (
                false,
                Err(FetchError::Refused {
                    status: 403,
                    advice,
                    ..
                }),
            ) => {
                assert!(
                    advice.contains("error_log_sas_file was refused"),
                    "{advice}"
                )
            }
            (_, other) => panic!("SAS {sas}: {other:?}"),
        }
    }
    std::fs::write(dir.path().join("key"), "d3Jvbmcga2V5").unwrap();
    let block = sim.account_block("sim").replace(
        &sim.certs.storage_key.display().to_string(),
        &dir.path().join("key").display().to_string(),
    );
    match common::account_logs(dir.path(), &block)
        .read(&url, small_limits(), Duration::from_secs(3))
        .await
    {
        Err(FetchError::Refused {
            status: 403,
            advice,
            ..
        }) => {
            assert!(advice.contains("storage_key_file was refused"), "{advice}")
        }
        other => panic!("wrong key: {other:?}"),
    }
    sim.stop().await;
}
