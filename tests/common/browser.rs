//! Headless Chromium for the tests that look at the status page as a browser does
//! (Debian's chromium; `.ci/run` installs it and sets IEWATCH_REQUIRE_CHROMIUM).

use std::{path::Path, process::Command};

/// The headless Chromium to use, if there is one.
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        super::not_run(
            "IEWATCH_REQUIRE_CHROMIUM",
            "the status page in headless Chromium (tests/status_page.rs): chromium is \
             not installed; install Debian's chromium package",
        );
    }
    found
}

/// Runs headless Chromium on `url` with `args` (a fresh profile, no network beyond
/// loopback, no sandbox: it may run as root or as nobody); its stdout.
pub fn headless(browser: &str, profile: &Path, url: &str, args: &[&str]) -> String {
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{browser}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
