//! Secret-less credentials end to end: `iewatch run` as a process, its identity variables
//! pointing at the simulator's IMDS, App Service endpoint, Arc agent, workload-identity
//! token exchange and a stand-in `az`, watching the import lifecycle over Resource
//! Manager; and each hostile answer (a hang, 410 for a minute, odd lifetimes, a missing
//! token file, `az` missing or hanging, a missing role) a clear error and a retry.

mod common;

use std::{path::Path, time::Duration};

use common::{arm::play_by_events, event_list, scenario, start_simulator, wait_for, DaemonCommand};
use iewatch::simulator::{
    identity::{IdentityFault, SYSTEM_ASSIGNED, USER_ASSIGNED_CLIENT_ID},
    RunningSimulator,
};

/// A config watching `MySampleJob` through `sim`'s Resource Manager with `credential`
/// (and `extra` account keys).
fn config(dir: &Path, sim: &RunningSimulator, credential: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\nrequest_timeout = \"1s\"\nfailure_threshold = 1\npoll_interval_by_state = {{ Creating = \"100ms\", Completed = \"100ms\" }}\n\n{}{extra}\n[[job]]\naccount = \"arm\"\nname = \"MySampleJob\"\n",
        dir.join("iewatch.db").display(),
        sim.identity_account_block("arm", credential),
    );
    let path = dir.join("iewatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The simulator's variables for the host kind whose description contains `kind`.
fn environment(sim: &RunningSimulator, kind: &str) -> Vec<(&'static str, String)> {
    sim.identity_environments()
        .into_iter()
        .find(|(what, _)| what.contains(kind))
        .unwrap_or_else(|| panic!("no {kind} environment"))
        .1
}

/// Every identity variable empty (as good as unset) but `variables`.
fn only(variables: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut all: Vec<(&str, String)> = common::IDENTITY_VARIABLES
        .iter()
        .filter(|name| !variables.iter().any(|(given, _)| given == *name))
        .map(|name| (*name, String::new()))
        .collect();
    all.extend(variables.iter().cloned());
    all
}

/// `iewatch run` with only `variables` for identity (and PATH, when given: `az` is found
/// only where a test puts it), its log at info level in `dir/daemon.log`.
fn daemon(
    config: &Path,
    dir: &Path,
    variables: &[(&'static str, String)],
) -> tokio::process::Child {
    let mut command = DaemonCommand::new(config).log_to("info", &dir.join("daemon.log"));
    for (name, value) in only(variables) {
        command = command.env(name, value);
    }
    command.spawn()
}

/// Waits until the daemon has opened its database and watches.
async fn watching(dir: &Path) {
    wait_for_log(dir, "iewatch is watching", Duration::from_secs(20)).await;
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

async fn wait_for_log(dir: &Path, wanted: &str, within: Duration) {
    let seen = common::wait_until(within, || log(dir).contains(wanted)).await;
    assert!(seen, "the log never said {wanted:?}:\n{}", log(dir));
}

/// Waits until the daemon has recorded the job's first events (it got a token and polled).
async fn first_events_recorded(dir: &Path) {
    watching(dir).await;
    let db = dir.join("iewatch.db");
    let recorded = wait_for(Duration::from_secs(20), || async {
        !event_list(&db, "MySampleJob").await.is_empty()
    })
    .await;
    assert!(recorded, "{}", log(dir));
}

/// The whole lifecycle, with the events the client-secret account gives.
async fn watch_lifecycle(sim: &RunningSimulator, dir: &Path, mid_run: impl Fn(usize)) {
    watching(dir).await;
    let db = dir.join("iewatch.db");
    play_by_events(sim, &db, 0..10, mid_run).await;
    common::assert_import_lifecycle(&db, "MySampleJob").await;
}

/// The error of the first `job.poll_failing` event, once there is one.
async fn poll_failing_error(dir: &Path) -> String {
    watching(dir).await;
    let db = dir.join("iewatch.db");
    let found = wait_for(Duration::from_secs(30), || async {
        event_list(&db, "MySampleJob")
            .await
            .iter()
            .any(|e| e.0 == "job.poll_failing")
    })
    .await;
    assert!(found, "no job.poll_failing event:\n{}", log(dir));
    let events = event_list(&db, "MySampleJob").await;
    events
        .iter()
        .find(|e| e.0 == "job.poll_failing")
        .and_then(|e| e.3.clone())
        .unwrap_or_default()
}

async fn started(
    credential: &str,
    extra: &str,
) -> (tempfile::TempDir, RunningSimulator, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let config = config(dir.path(), &sim, credential, extra);
    (dir, sim, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vms_system_assigned_identity_watches_a_lifecycle() {
    let (dir, sim, config) = started("managed_identity", "").await;
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
    watch_lifecycle(&sim, dir.path(), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_assigned_identity_by_client_id_watches_a_lifecycle_and_one_not_assigned_is_named() {
    let extra = format!("managed_identity_client_id = \"{USER_ASSIGNED_CLIENT_ID}\"\n");
    let (dir, sim, config) = started("managed_identity", &extra).await;
    // Only the user-assigned identity may read: the system-assigned one would be refused.
    sim.set_role(SYSTEM_ASSIGNED, false);
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
    watch_lifecycle(&sim, dir.path(), |_| {}).await;

    let extra = "managed_identity_client_id = \"someone-else\"\n";
    let (dir, sim, config) = started("managed_identity", extra).await;
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
    let error = poll_failing_error(dir.path()).await;
    assert!(
        error.contains("user-assigned, client id someone-else")
            && error.contains("not assigned to this VM"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_export_and_a_data_box_account_of_one_identity_share_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("databox-listing.toml"), dir.path()).await;
    let databox = sim
        .identity_account_block("portal", "managed_identity")
        .replace("kind = \"arm\"", "kind = \"databox\"");
    let text = format!(
        "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\nrequest_timeout = \"1s\"\n\n{}\njobs = \"all\"\n\n{databox}jobs = \"all\"\n",
        dir.path().join("iewatch.db").display(),
        sim.identity_account_block("arm", "managed_identity"),
    );
    let config = dir.path().join("iewatch.toml");
    std::fs::write(&config, text).unwrap();
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
    watching(dir.path()).await;
    // Every job of both providers seen (three orders, one Import/Export job), and polled
    // on: many requests with tokens, one token.
    let db = dir.path().join("iewatch.db");
    let all_seen = wait_for(Duration::from_secs(20), || async {
        let Ok(store) = iewatch::store::Store::open_existing(&db).await else {
            return false;
        };
        let jobs = store.status().await.map(|s| s.len()).unwrap_or(0);
        store.close().await;
        jobs == 4
    })
    .await;
    assert!(all_seen, "{}", log(dir.path()));
    let polls = sim.requests().len();
    assert!(
        common::wait_until(Duration::from_secs(10), || sim.requests().len()
            > polls + 20)
        .await
    );
    assert_eq!(
        sim.identity_requests(),
        1,
        "one token for both accounts of the identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_service_identity_watches_a_lifecycle() {
    let (dir, sim, config) = started("managed_identity", "").await;
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "App Service"));
    watch_lifecycle(&sim, dir.path(), |_| {}).await;
    assert!(
        !log(dir.path()).contains("sim-mi-token"),
        "no token in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_identity_rereads_its_rotated_token_file() {
    let (dir, sim, config) = started("workload_identity", "").await;
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "workload"));
    // Half-way, the kubelet rotates the file and the access token expires: the next
    // exchange must present the new file's token (the old one is refused).
    watch_lifecycle(&sim, dir.path(), |i| {
        if i == 5 {
            sim.rotate_federated_token();
            sim.expire_tokens();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_cli_credential_runs_az_for_a_lifecycle() {
    let (dir, sim, config) = started("azure_cli", "").await;
    let bin = stand_in_az(&sim, dir.path());
    let _daemon = daemon(&config, dir.path(), &[("PATH", bin.display().to_string())]);
    watch_lifecycle(&sim, dir.path(), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_az_is_said_and_retried() {
    let (dir, sim, config) = started("azure_cli", "").await;
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let _daemon = daemon(
        &config,
        dir.path(),
        &[("PATH", empty.display().to_string())],
    );
    let error = poll_failing_error(dir.path()).await;
    assert!(error.contains("`az` is not on PATH"), "{error}");
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_az_that_hangs_is_stopped_after_10_s_and_said() {
    let (dir, _sim, config) = started("azure_cli", "").await;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    write_script(&bin.join("az"), "#!/bin/sh\nexec sleep 600\n");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _daemon = daemon(&config, dir.path(), &[("PATH", path)]);
    let error = poll_failing_error(dir.path()).await;
    assert!(error.contains("did not finish within 10 s"), "{error}");
}

/// A directory holding a stand-in `az` that prints a token the simulator issued to a
/// signed-in user, as `az account get-access-token` does for the simulator's resource
/// (and for Storage, whose token reads the drive's error log).
fn stand_in_az(sim: &RunningSimulator, dir: &Path) -> std::path::PathBuf {
    let token = sim.issue_token("someone@example.com", 3600);
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    write_script(
        &bin.join("az"),
        &format!(
            "#!/bin/sh\ncase \"$*\" in *'--resource {}'*|*'--resource https://storage.azure.com'*) ;; *) echo \"unexpected: $*\" >&2; exit 2;; esac\necho '{{\"accessToken\": \"{token}\", \"expires_on\": {expires_on}, \"tokenType\": \"Bearer\"}}'\n",
            sim.arm_endpoint()
        ),
    );
    bin
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_chain_settles_on_the_first_identity_that_answers_and_says_which() {
    let (dir, sim, config) = started("default", "").await;
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut variables = environment(&sim, "IMDS");
    variables.push(("PATH", empty.display().to_string()));
    let _daemon = daemon(&config, dir.path(), &variables);
    watch_lifecycle(&sim, dir.path(), |_| {}).await;
    let said = log(dir.path());
    assert_eq!(
        said.matches("the default credential chain uses managed identity (IMDS, system-assigned)")
            .count(),
        1,
        "said once:\n{said}"
    );

    // check --online says it per account.
    let args = [
        "check".to_owned(),
        "--online".into(),
        "-c".into(),
        config.display().to_string(),
    ];
    let (ok, output) =
        tokio::task::spawn_blocking(move || common::iewatch_output_with(&args, &only(&variables)))
            .await
            .unwrap();
    assert!(ok, "{output}");
    assert!(
        output.contains("arm: credential: default chain: managed identity (IMDS, system-assigned)"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_chain_passes_a_vm_without_an_identity_on_to_the_azure_cli() {
    let (dir, sim, config) = started("default", "").await;
    sim.set_identity_fault(Some(IdentityFault::NotAssigned));
    let bin = stand_in_az(&sim, dir.path());
    let mut variables = environment(&sim, "IMDS");
    variables.push(("PATH", bin.display().to_string()));
    let _daemon = daemon(&config, dir.path(), &variables);
    watch_lifecycle(&sim, dir.path(), |_| {}).await;
    assert!(
        log(dir.path()).contains("the default credential chain uses Azure CLI"),
        "{}",
        log(dir.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imds_that_hangs_is_said_at_each_attempt_and_retried() {
    let (dir, sim, config) = started("managed_identity", "").await;
    sim.set_identity_fault(Some(IdentityFault::Hang));
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
    wait_for_log(
        dir.path(),
        "token attempt 2 of 6: no answer within 1 s; next in 2 s",
        Duration::from_secs(20),
    )
    .await;
    sim.set_identity_fault(None);
    first_events_recorded(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imds_answering_410_for_a_minute_is_waited_out_without_a_failure() {
    let (dir, sim, config) = started("managed_identity", "").await;
    sim.set_identity_fault(Some(IdentityFault::GoneUntil(Duration::from_secs(60))));
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
    wait_for_log(
        dir.path(),
        "token attempt 2 of 6: HTTP 410",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        log(dir.path()).contains("next in 5 s"),
        "{}",
        log(dir.path())
    );
    // A simulated minute passes: the next attempt on the schedule gets a token.
    sim.set_time(Some(Duration::from_secs(61)));
    first_events_recorded(dir.path()).await;
    assert!(
        !event_list(&dir.path().join("iewatch.db"), "MySampleJob")
            .await
            .iter()
            .any(|e| e.0 == "job.poll_failing"),
        "a documented update is no failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifetimes_of_zero_or_ten_years_are_bounded_and_said() {
    for (said, taken) in [("0", "360"), ("315360000", "86400")] {
        let (dir, sim, config) = started("managed_identity", "").await;
        sim.set_identity_fault(Some(IdentityFault::ExpiresIn(said.into())));
        let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
        wait_for_log(
            dir.path(),
            &format!("a token said it is valid for {said} s; taken as {taken} s"),
            Duration::from_secs(20),
        )
        .await;
        first_events_recorded(dir.path()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_federated_token_file_is_said_and_retried_until_it_appears() {
    let (dir, sim, config) = started("workload_identity", "").await;
    let mut variables = environment(&sim, "workload");
    let file = dir.path().join("not-yet");
    for (name, value) in &mut variables {
        if *name == "AZURE_FEDERATED_TOKEN_FILE" {
            *value = file.display().to_string();
        }
    }
    let _daemon = daemon(&config, dir.path(), &variables);
    let error = poll_failing_error(dir.path()).await;
    assert!(
        error.contains("cannot read the federated token file") && error.contains("not-yet"),
        "{error}"
    );
    let current = environment(&sim, "workload")
        .into_iter()
        .find(|(name, _)| *name == "AZURE_FEDERATED_TOKEN_FILE")
        .unwrap()
        .1;
    std::fs::copy(current, &file).unwrap();
    let db = dir.path().join("iewatch.db");
    let recovered = wait_for(Duration::from_secs(30), || async {
        event_list(&db, "MySampleJob")
            .await
            .iter()
            .any(|e| e.0 == "job.first_seen")
    })
    .await;
    assert!(recovered, "{}", log(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_role_names_the_identity_the_role_and_the_resource_group() {
    let (dir, sim, config) = started("managed_identity", "").await;
    sim.set_role(SYSTEM_ASSIGNED, false);
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "IMDS"));
    let error = poll_failing_error(dir.path()).await;
    assert!(
        error.contains("HTTP 403")
            && error.contains("grant Reader on resource group import-rg")
            && error.contains("to managed identity (IMDS, system-assigned)"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arc_challenge_is_answered_only_from_the_agents_key_directory() {
    // Outside the agent's directory, the challenge is refused and said.
    let (dir, sim, config) = started("managed_identity", "").await;
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "Arc"));
    let error = poll_failing_error(dir.path()).await;
    assert!(
        error.contains("managed identity (Azure Arc, system-assigned)")
            && error.contains("not a .key file in /var/opt/azcmagent/tokens: refused"),
        "{error}"
    );

    // In it (only root may write there, as on a real Arc server), a lifecycle.
    if !common::is_root() {
        common::not_run(
            "IEWATCH_REQUIRE_ROOT_FOR_ARC",
            "an Arc lifecycle (tests/identity.rs): needs root to write /var/opt/azcmagent/tokens",
        );
        return;
    }
    let (dir, sim, config) = started("managed_identity", "").await;
    sim.set_arc_key_dir(Path::new("/var/opt/azcmagent/tokens"));
    let _daemon = daemon(&config, dir.path(), &environment(&sim, "Arc"));
    watch_lifecycle(&sim, dir.path(), |_| {}).await;
}
