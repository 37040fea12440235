//! What some tests need from outside the clone: installed programs (PostgreSQL, Chromium,
//! promtool, aiosmtpd, Azure's Python clients) and the recorded Azure traffic that lives
//! in `../shared/fixtures` beside this project's CI checkout, never in the repository.
//!
//! On a newcomer's machine a missing one is said once per test binary, loudly, and the
//! tests that need it pass without running; `.ci/run` sets the `IEWATCH_REQUIRE_*`
//! variable of each, which turns a missing one into a failure there.

use std::{
    collections::HashSet,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// Something missing that `test` needs. Under CI (`require_var` set) this panics;
/// elsewhere it writes `what` (what did not run, why, how to get it) once per binary
/// and per `require_var`, straight to the stderr file descriptor: the test harness hides
/// `eprintln!` of a passing test, and this must be seen.
pub fn not_run(require_var: &str, what: &str) {
    assert!(
        std::env::var_os(require_var).is_none(),
        "{require_var} is set, so this is a failure: {what}"
    );
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said
        .get_or_insert_with(HashSet::new)
        .insert(require_var.to_owned())
    {
        let _ = writeln!(std::io::stderr(), "\n*** NOT RUN: {what} ***\n");
    }
}

/// The variable that makes missing recordings a failure (`.ci/run` sets it).
pub const REQUIRE_FIXTURES: &str = "IEWATCH_REQUIRE_FIXTURES";

/// The recorded Azure traffic: `$IEWATCH_FIXTURES_DIR` if set (CI points it at a
/// directory that does not exist to prove the clone-alone case), else
/// `../shared/fixtures` beside the checkout.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IEWATCH_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

/// The recorded fixtures, when they are there.
pub struct Recordings(PathBuf);

impl Recordings {
    /// The recordings, or None after saying (once) that the tests reading them do not
    /// run here; each such test also names itself on stderr, so the list is complete.
    pub fn available() -> Option<Recordings> {
        let dir = fixtures_dir();
        if dir.is_dir() {
            return Some(Recordings(dir));
        }
        not_run(
            REQUIRE_FIXTURES,
            &format!(
                "the tests that replay recorded Azure traffic: {} is not there. It is \
                 laid beside the project's CI checkout (the recordings are not \
                 redistributed in the repository); the simulator's own lifecycles still \
                 cover Data Box parsing end to end",
                dir.display()
            ),
        );
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        let _ = writeln!(std::io::stderr(), "not run (no recordings): {test}");
        None
    }

    /// A recorded file by its path below the fixtures directory. A file missing from
    /// recordings that are there is a failure, not a skip.
    pub fn read(&self, path: &str) -> Vec<u8> {
        let full = self.0.join(path);
        std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }
}
