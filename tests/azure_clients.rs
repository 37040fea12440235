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
