//! The `iewatch` binary: parses the command line and hands it to [`iewatch::cli`] on a
//! runtime. Errors end here, printed with their causes, with a non-zero exit code so
//! that systemd's `Restart=on-failure` works.

use std::process::ExitCode;

use clap::Parser as _;
use iewatch::{cli::Cli, errln};

fn main() -> ExitCode {
    let cli = Cli::parse();
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(iewatch::cli::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per core), and
/// each keeps the memory it once held: with the runtime's workers, SQLite's threads and
/// the heartbeat, that was 16 MiB of RSS at 10,000 jobs (the `scale_10k` benchmark).
/// One arena is enough for a daemon that is mostly asleep (and measured no slower at
/// 1,000 polls a second). Before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
