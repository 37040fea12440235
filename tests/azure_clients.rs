//! `iewatch simulate` as Azure's own clients see it: azure-identity (MSAL) and
//! azure-core, run by Python against the real `simulate` binary. `.ci/run` installs
//! azure-identity and sets IEWATCH_REQUIRE_AZURE_CLIENTS=1, which makes a missing Python
//! package a failure; elsewhere the test says once what to install and passes.

mod common;

use std::process::{Command, Stdio};

/// True when `python3` can import azure-identity; otherwise says what to install (or
/// fails, under CI).
fn azure_clients_present() -> bool {
    let present = Command::new("python3")
        .args(["-c", "import azure.identity, azure.core"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let required = std::env::var_os("IEWATCH_REQUIRE_AZURE_CLIENTS").is_some();
        assert!(
            !required,
            "IEWATCH_REQUIRE_AZURE_CLIENTS is set but python3 cannot import azure.identity"
        );
        // Straight to the file descriptor: the test harness hides eprintln! of a
        // passing test, and this must be seen.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** NOT RUN: simulate_answers_azure_identity_and_azure_core (tests/azure_clients.rs): \
             python3 with azure-identity is missing; install it with \
             `python3 -m pip install azure-identity` ***\n"
        );
    }
    present
}

#[test]
fn simulate_answers_azure_identity_and_azure_core() {
    if !azure_clients_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let arm_port = common::free_port();
    let (mut simulator, printed) = common::spawn_simulate(dir.path(), arm_port);
    let arm = &printed[printed.find("kind = \"arm\"").expect("an ARM block")..];
    let value = |key: &str| common::block_value(arm, key);
    let probe = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/azure_identity_probe.py"
    );
    let output = Command::new("python3")
        .arg(probe)
        .args([
            value("endpoint"),
            value("ca_certificate"),
            value("tenant_id"),
            value("client_id"),
            value("client_secret"),
            value("subscription_id"),
            value("resource_group"),
            "MySampleJob".to_owned(),
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
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["token"], true, "{answer}");
    assert_eq!(
        answer["list"],
        serde_json::json!(["MySampleJob"]),
        "{answer}"
    );
    assert_eq!(answer["get"]["name"], "MySampleJob", "{answer}");
    assert!(answer["get"]["state"].is_string(), "{answer}");
}
