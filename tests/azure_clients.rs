//! `iewatch simulate` as Azure's own clients see it: azure-identity (MSAL), azure-core
//! and azure-mgmt-databox, run by Python against the real `simulate` binary. `.ci/run`
//! installs them and sets IEWATCH_REQUIRE_AZURE_CLIENTS=1, which makes a missing Python
//! package a failure; elsewhere each test says once what to install and passes.

mod common;

use std::process::{Command, Stdio};

/// True when `python3` can import the modules of `test`; otherwise says what to install
/// (or fails, under CI).
fn azure_clients_present(test: &str, modules: &str, packages: &str) -> bool {
    let present = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        common::not_run(
            "IEWATCH_REQUIRE_AZURE_CLIENTS",
            &format!(
                "{test} (tests/azure_clients.rs): python3 cannot import {modules}; install \
                 them with `python3 -m pip install {packages}`"
            ),
        );
    }
    present
}

/// Runs `tests/clients/SCRIPT` against `iewatch simulate` (playing `scenario`) with the
/// credentials of its printed account block of `kind`, for `job`; its JSON answer.
fn probe(scenario: Option<&str>, kind: &str, script: &str, job: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let arm_port = common::free_port();
    let (mut simulator, printed) = common::spawn_simulate(dir.path(), arm_port, scenario);
    let block = &printed[printed
        .find(kind)
        .unwrap_or_else(|| panic!("a {kind} block"))..];
    let value = |key: &str| common::block_value(block, key);
    let output = Command::new("python3")
        .arg(format!(
            "{}/tests/clients/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            value("endpoint"),
            value("ca_certificate"),
            value("tenant_id"),
            value("client_id"),
            value("client_secret"),
            value("subscription_id"),
            value("resource_group"),
            job.to_owned(),
        ])
        .output()
        .unwrap();
    let _ = simulator.kill();
    let _ = simulator.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn simulate_answers_azure_identity_and_azure_core() {
    if !azure_clients_present(
        "simulate_answers_azure_identity_and_azure_core",
        "azure.identity, azure.core",
        "azure-identity",
    ) {
        return;
    }
    let answer = probe(
        None,
        "kind = \"arm\"",
        "azure_identity_probe.py",
        "MySampleJob",
    );
    assert_eq!(answer["token"], true, "{answer}");
    assert_eq!(
        answer["list"],
        serde_json::json!(["MySampleJob"]),
        "{answer}"
    );
    assert_eq!(answer["get"]["name"], "MySampleJob", "{answer}");
    assert!(answer["get"]["state"].is_string(), "{answer}");
}

#[test]
fn simulate_answers_the_official_data_box_management_client() {
    if !azure_clients_present(
        "simulate_answers_the_official_data_box_management_client",
        "azure.identity, azure.mgmt.databox",
        "azure-identity azure-mgmt-databox",
    ) {
        return;
    }
    let answer = probe(
        Some("databox-listing.toml"),
        "kind = \"databox\"",
        "azure_mgmt_databox_probe.py",
        "portal-import-01",
    );
    assert_eq!(
        answer["list"],
        serde_json::json!(["disk-order-3", "portal-import-01", "portal-import-02"]),
        "every order over two pages, no Import/Export job: {answer}"
    );
    let got = &answer["get"];
    assert_eq!(got["name"], "portal-import-01", "{answer}");
    assert_eq!(got["sku"], "DataBoxCustomerDisk", "{answer}");
    assert_eq!(
        got["details_type"], "DataBoxCustomerDiskJobDetails",
        "{answer}"
    );
    assert_eq!(got["status"], "DataCopy", "{answer}");
    assert_eq!(
        got["stages"],
        serde_json::json!([
            "AwaitingShipmentDetails",
            "ShippedToAzureDC",
            "AtAzureDC",
            "DataCopy",
            "PreparingToShipFromAzureDC",
            "ShippedToCustomer",
            "Completed"
        ]),
        "{answer}"
    );
    assert_eq!(
        got["disks"],
        serde_json::json!(["WCC4M1YR0DVU", "ZDH7Q2LP"]),
        "{answer}"
    );
    assert_eq!(
        got["copy_status"],
        serde_json::json!(["InProgress", "NotStarted"]),
        "{answer}"
    );
    assert_eq!(
        answer["api_version"], "2025-07-01",
        "the client's own default: {answer}"
    );
}

/// The `export` groups `simulate` printed, by the words of their `# ...:` heading.
fn identity_groups(printed: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut groups: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let after = &printed[printed
        .find("# Secret-less identities")
        .expect("simulate prints the identity variables")..];
    for line in after.lines().skip(1) {
        if let Some(heading) = line.strip_prefix("# ") {
            groups.push((heading.to_owned(), Vec::new()));
        } else if let Some((name, value)) =
            line.strip_prefix("export ").and_then(|l| l.split_once('='))
        {
            let group = groups.last_mut().expect("a heading first");
            group
                .1
                .push((name.to_owned(), value.trim_matches('\'').to_owned()));
        }
    }
    groups
}

#[test]
fn azure_identity_gets_tokens_from_every_identity_simulate_prints() {
    if !azure_clients_present(
        "azure_identity_gets_tokens_from_every_identity_simulate_prints",
        "azure.identity",
        "azure-identity",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut simulator, printed) = common::spawn_simulate(dir.path(), common::free_port(), None);
    let block = &printed[printed.find("kind = \"arm\"").unwrap()..];
    let value = |key: &str| common::block_value(block, key);
    let groups = identity_groups(&printed);
    let group = |words: &str| {
        groups
            .iter()
            .find(|(heading, _)| heading.contains(words))
            .unwrap_or_else(|| panic!("no {words} group in {printed}"))
            .1
            .clone()
    };
    let cases = [
        ("imds", group("IMDS"), None),
        (
            "user_assigned",
            group("IMDS"),
            Some("iewatch-sim-user-identity"),
        ),
        ("app_service", group("App Service"), None),
        ("workload", group("workload identity"), None),
    ];
    let mut answers = Vec::new();
    for (mode, variables, client_id) in cases {
        let mut command = Command::new("python3");
        command
            .arg(format!(
                "{}/tests/clients/azure_identity_managed.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args([
                mode.to_owned(),
                value("endpoint"),
                value("ca_certificate"),
                value("subscription_id"),
                value("resource_group"),
                "MySampleJob".to_owned(),
            ])
            .args(client_id)
            .env("REQUESTS_CA_BUNDLE", value("ca_certificate"));
        for name in common::IDENTITY_VARIABLES {
            command.env_remove(name);
        }
        command.envs(variables);
        answers.push((mode, command.output().unwrap()));
    }
    let _ = simulator.kill();
    let _ = simulator.wait();
    for (mode, output) in answers {
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(answer["status"], 200, "{mode}: {answer}");
        let expires_in = answer["expires_in"].as_i64().unwrap();
        assert!((3000..=3600).contains(&expires_in), "{mode}: {answer}");
    }
}
