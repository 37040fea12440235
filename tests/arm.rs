//! Resource Manager accounts: the public 2021-01-01 GetJob example, and the daemon end to
//! end against the simulator's ARM side (token endpoint, bearer tokens, no ETag).

mod common;

use std::{path::Path, time::Duration};

use common::{arm::play_by_events, event_list, scenario, start_simulator, wait_for, RunningDaemon};
use iewatch::source::arm_wire::ArmJob;

#[test]
fn the_public_getjob_example_parses_to_the_values_it_shows() {
    let text = include_str!("fixtures/arm-get-job-2021-01-01.json");
    let job: ArmJob = serde_json::from_str(text).unwrap();
    assert_eq!(job.name, "myJob");
    assert_eq!(job.other["type"], "Microsoft.ImportExport/jobs");
    assert_eq!(job.other["location"], "West US");
    assert_eq!(job.properties.job_type.as_deref(), Some("Import"));
    assert_eq!(job.properties.state, "Creating");
    assert_eq!(
        job.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(job.properties.cancel_requested, Some(false));
    assert_eq!(job.properties.other["diagnosticsPath"], "waimportexport");
    let drives = job.properties.drive_list.as_ref().unwrap();
    assert_eq!(drives[0].drive_id, "9CA995BB");
    assert_eq!(drives[0].state.as_deref(), Some("Specified"));
    assert_eq!(
        drives[0].other["manifestHash"],
        "109B21108597EF36D5785F08303F3638"
    );
    let (snapshot, document) = job.into_parts();
    assert_eq!(snapshot.state.as_str(), "Creating");
    assert_eq!(snapshot.drives[0].drive_id.as_str(), "9CA995BB");
    assert_eq!(
        document.redacted()["properties"]["returnShipping"]["carrierName"],
        "FedEx"
    );
}

#[test]
fn a_bitlocker_key_in_an_arm_document_is_kept_out_of_the_stored_document() {
    let text = include_str!("fixtures/arm-get-job-2021-01-01.json").replace(
        "\"driveId\": \"9CA995BB\",",
        "\"driveId\": \"9CA995BB\", \"bitLockerKey\": \"111111-222222-333333\",",
    );
    let (snapshot, document) = serde_json::from_str::<ArmJob>(&text).unwrap().into_parts();
    assert_eq!(document.secret_count(), 1);
    assert!(!document.render(false).contains("111111-222222"));
    assert!(!format!("{snapshot:?}").contains("111111-222222"));
    assert!(!format!("{document:?}").contains("111111-222222"));
}

fn arm_config(
    dir: &Path,
    sim: &iewatch::simulator::RunningSimulator,
    extra: &str,
    secret: Option<&str>,
) -> std::path::PathBuf {
    let mut account = sim.arm_account_block("arm");
    if let Some(secret) = secret {
        account = account.replace(
            "client_secret = \"iewatch-sim-secret\"",
            &format!("client_secret = \"{secret}\""),
        );
    }
    let text = format!(
        "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\nrequest_timeout = \"5s\"\npoll_interval_by_state = {{ Creating = \"100ms\", Completed = \"100ms\" }}\n{extra}\n\n{account}\n[[job]]\naccount = \"arm\"\nname = \"MySampleJob\"\n",
        dir.join("iewatch.db").display()
    );
    let path = dir.join("iewatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_lifecycle_over_arm_gives_the_same_events_and_survives_token_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let config = arm_config(dir.path(), &sim, "", None);
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    play_by_events(&sim, &db, 0..10, |i| {
        if i == 5 {
            sim.expire_tokens();
        }
    })
    .await;
    // Unchanged answers (no ETag) make no event.
    let polls = sim.requests().len();
    assert!(common::wait_until(Duration::from_secs(10), || sim.requests().len() > polls + 5).await);
    daemon.stop().await;
    common::assert_import_lifecycle(&db, "MySampleJob").await;

    let requests = sim.requests();
    let expired = requests
        .iter()
        .position(|r| r.status == 401)
        .expect("the expired token was refused once");
    assert_eq!(
        requests[expired + 1].method,
        "POST",
        "a new token was fetched"
    );
    assert_eq!(
        requests[expired + 2].status,
        200,
        "and the poll went through"
    );
    let store = iewatch::store::Store::open_existing(&db).await.unwrap();
    let failures: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE type = 'job.poll_failing'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(failures, 0, "no poll was lost to the expired token");
    let tokens = requests.iter().filter(|r| r.method == "POST").count();
    // And one for Storage, when the drive's error log is read.
    assert_eq!(
        tokens, 3,
        "tokens are cached: one at start, one after expiry, one for Storage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_bitlocker_keys_keeps_the_keys_of_an_arm_account_and_only_then() {
    let timeline = scenario("import-lifecycle.toml")
        .compile()
        .unwrap()
        .remove(0);
    let key = timeline.versions[0]
        .job
        .as_ref()
        .unwrap()
        .drive_list
        .as_ref()
        .unwrap()[0]
        .bit_locker_key
        .as_ref()
        .expect("the scenario's import drives carry keys")
        .expose()
        .to_owned();
    for opted_in in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
        sim.set_time(Some(Duration::ZERO));
        let config = arm_config(dir.path(), &sim, "", None);
        if opted_in {
            let text = std::fs::read_to_string(&config)
                .unwrap()
                .replace("\n[[job]]", "store_bitlocker_keys = true\n\n[[job]]");
            std::fs::write(&config, text).unwrap();
        }
        let db = dir.path().join("iewatch.db");
        let daemon = RunningDaemon::start(&config).await;
        let seen = wait_for(Duration::from_secs(20), || async {
            !event_list(&db, "MySampleJob").await.is_empty()
        })
        .await;
        assert!(seen, "the job was recorded");
        daemon.stop().await;
        let store = iewatch::store::Store::open_existing(&db).await.unwrap();
        let snapshot: String = sqlx::query_scalar("SELECT snapshot FROM jobs")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(snapshot.contains(&key), opted_in, "opted_in = {opted_in}");
        assert!(snapshot.contains("driveList"), "{snapshot}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_gives_a_clear_error_and_failure_events_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    let config = arm_config(
        dir.path(),
        &sim,
        "failure_threshold = 2",
        Some("not-the-secret"),
    );
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    let failing = wait_for(Duration::from_secs(20), || async {
        event_list(&db, "MySampleJob")
            .await
            .iter()
            .any(|e| e.0 == "job.poll_failing")
    })
    .await;
    assert!(failing);
    assert!(!daemon.task.is_finished());
    daemon.stop().await;
    let events = event_list(&db, "MySampleJob").await;
    let error = events
        .iter()
        .find(|e| e.0 == "job.poll_failing")
        .unwrap()
        .3
        .clone()
        .unwrap();
    assert!(
        error.contains("HTTP 401") && error.contains("invalid_client"),
        "{error}"
    );
    assert!(
        !error.contains("not-the-secret"),
        "the secret is not echoed"
    );
    assert!(
        sim.requests().iter().all(|r| r.job.is_none()),
        "no job request without a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_all_discovers_every_job_across_pages_and_jobs_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = iewatch::simulator::Scenario::parse(
        r#"
[[job]]
name = "Alpha"
[[job]]
name = "Bravo"
[[job]]
name = "Delta"
[[job]]
name = "Charlie"
appears = "1d"
"#,
    )
    .unwrap();
    let sim = start_simulator(scenario, dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let account = sim
        .arm_account_block("arm")
        .replace("[[account]]\n", "[[account]]\njobs = \"all\"\n");
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\n\n{account}",
            dir.path().join("iewatch.db").display()
        ),
    )
    .unwrap();
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    let seen = |job: &'static str| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move {
                event_list(&db, job)
                    .await
                    .iter()
                    .any(|e| e.0 == "job.first_seen")
            }
        }
    };
    // Three jobs over two pages of two: the second page is reached through nextLink.
    for job in ["Alpha", "Bravo", "Delta"] {
        assert!(
            wait_for(Duration::from_secs(15), seen(job)).await,
            "{job} discovered"
        );
    }
    assert!(
        !wait_for(Duration::from_millis(300), seen("Charlie")).await,
        "Charlie does not exist yet"
    );
    sim.set_time(Some(Duration::from_secs(86_400)));
    assert!(
        wait_for(Duration::from_secs(15), seen("Charlie")).await,
        "a job created later is picked up"
    );
    daemon.stop().await;
    let listed_pages = sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.job.is_none())
        .count();
    assert!(listed_pages >= 2, "the list was paged");
}

/// An RSA key (ring cannot generate one) and a self-signed certificate for it, as one PEM
/// file: what an operator uploads to the app registration and gives iewatch.
fn rsa_certificate(dir: &Path, name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let key_path = dir.join(format!("{name}-key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .output()
        .expect("openssl is installed");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key_pem = std::fs::read_to_string(&key_path).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("iewatch {name}"));
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, format!("{}{key_pem}", cert.pem())).unwrap();
    (path, cert.der().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_credential_signs_client_assertions_and_an_unregistered_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let (registered, der) = rsa_certificate(dir.path(), "registered");
    sim.register_client_certificate(&der);
    let (stranger, _) = rsa_certificate(dir.path(), "stranger");

    let with_certificate = |cert: &Path| {
        let config = arm_config(dir.path(), &sim, "failure_threshold = 2", None);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "client_secret = \"iewatch-sim-secret\"",
            &format!("client_certificate = \"{}\"", cert.display()),
        );
        std::fs::write(&config, text).unwrap();
        config
    };
    let config = with_certificate(&registered);
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    play_by_events(&sim, &db, 0..3, |_| {}).await;
    daemon.stop().await;
    let tokens = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert_eq!(
        tokens,
        [200],
        "one token, obtained with the signed assertion"
    );

    std::fs::remove_file(&db).unwrap();
    let config = with_certificate(&stranger);
    let daemon = RunningDaemon::start(&config).await;
    let failing = wait_for(Duration::from_secs(20), || async {
        event_list(&db, "MySampleJob")
            .await
            .iter()
            .any(|e| e.0 == "job.poll_failing")
    })
    .await;
    assert!(failing);
    daemon.stop().await;
    let error = event_list(&db, "MySampleJob")
        .await
        .into_iter()
        .find(|e| e.0 == "job.poll_failing")
        .unwrap()
        .3
        .unwrap();
    assert!(error.contains("invalid_client"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_of_many_pages_is_read_whole_and_one_cut_short_keeps_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    // 300 jobs in pages of two: 150 pages, past the 100 pages the listing once stopped at.
    let scenario =
        iewatch::simulator::Scenario::parse("[[job]]\nname = \"order\"\ncount = 300\n").unwrap();
    let sim = start_simulator(scenario, dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let config = iewatch::config::Config::parse(
        &dir.path().join("iewatch.toml"),
        &format!(
            "[daemon]\ndatabase = \"iewatch.db\"\n\n{}",
            sim.arm_account_block("arm")
                .replace("[[account]]\n", "[[account]]\njobs = \"all\"\n")
        ),
    )
    .unwrap();
    let source = iewatch::source::Source::for_account(
        &config.accounts[0],
        &config.daemon,
        &iewatch::identity::TokenCaches::new(iewatch::identity::Env::from_pairs(&[])),
    )
    .unwrap();
    let listing = source.list_jobs().await.unwrap().unwrap();
    assert_eq!(listing.cut_short, None);
    assert_eq!(listing.names.len(), 300);
    // A second page linked elsewhere: the first page's jobs are kept, and why it stopped.
    sim.set_next_link_origin(Some("https://127.0.0.2:9".into()));
    let listing = source.list_jobs().await.unwrap().unwrap();
    assert_eq!(listing.names.len(), 2, "{listing:?}");
    let why = listing.cut_short.unwrap_or_default();
    assert!(
        why.contains("page 2") && why.contains("another origin"),
        "{why}"
    );
}
