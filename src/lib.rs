//! iewatch watches Azure Import/Export jobs and Data Box orders: it polls Get Job (with
//! the stored ETag where the API has one), records every transition and every drive's
//! progress in SQLite (or PostgreSQL with a standby), tells what did not happen
//! (deadlines, stalls), and alerts by webhook, Teams, PagerDuty, templates or e-mail.
//!
//! # Layout
//!
//! The modules follow the data flow of `docs/DESIGN.md`, left to right:
//!
//! - [`config`]: the TOML file, checked into a [`config::Config`].
//! - [`scheduler`]: polls every job on its interval from one deadline heap, with backoff,
//!   Retry-After and failure events; `jobs = "all"` discovery.
//! - [`source`]: where snapshots come from ([`source::Source`]): the classic Service
//!   Management client and the Resource Manager client (`Microsoft.ImportExport` and
//!   `Microsoft.DataBox`), each with its wire model.
//!   [`http_client`] and [`tls`] are their plumbing.
//! - [`model`]: the wire-independent [`model::JobSnapshot`] every box works on.
//! - [`detect`]: previous snapshot + new snapshot → [`events::Event`]s (pure).
//! - [`decide`]: a job's bookkeeping (failure streaks, not found, recovery, terminal,
//!   next poll) and its clocks (deadlines, stalls, reminders, ETA) as one pure function
//!   of (memory, outcome, now).
//! - [`store`]: SQLite or PostgreSQL; one transaction per observation (group-committed)
//!   writes job, drives, events and the webhook outbox.
//! - [`notifier`]: delivers the outbox to each channel (Standard Webhooks, Slack, Teams,
//!   PagerDuty, templates, e-mail), retried, in order per job.
//!
//! Around them: [`daemon`] wires the boxes into `iewatch run` (reload, drain) under
//! [`supervise`] (a task that dies takes the process down for a restart), with
//! [`heartbeat`] petting the watchdog; [`telemetry`] and [`http_server`] expose metrics,
//! health and the [`status_page`], [`systemd`] speaks the notify protocol, [`report`] prints `status`, `history` and `deliveries`, [`simulator`]
//! is a faithful Import/Export service for tests, benchmarks and [`demo`].

/// `println!` that never panics: a reader that went away (`iewatch status | head -1`)
/// ends the output, not the process with a panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that never panics (see `outln!`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see `outln!`).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod config;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod detect;
pub mod events;
pub mod heartbeat;
pub mod http_client;
pub mod http_server;
pub mod leadership;
pub mod model;
pub mod moment;
pub mod notifier;
pub mod report;
pub mod scheduler;
pub mod simulator;
pub mod source;
pub mod status_page;
pub mod store;
pub mod supervise;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod wall_clock;

/// `iewatch check --online`: one Get Job per configured job, a line each. Failure if any
/// job could not be fetched.
pub async fn check_online(config: &config::Config) -> std::process::ExitCode {
    let mut all_ok = true;
    // One source (one connection pool, one read of the trust store) per account.
    let mut sources = std::collections::HashMap::new();
    for job in &config.jobs {
        let Some(account) = config.account(&job.account) else {
            continue;
        };
        let source = sources
            .entry(account.name.as_str())
            .or_insert_with(|| source::Source::for_account(account, &config.daemon));
        let line = match source {
            Err(e) => {
                all_ok = false;
                format!("error: {e}")
            }
            Ok(source) => match source.get_job(&source.target(&job.name), None).await {
                Ok(source::PollOutcome::Modified(obs)) => {
                    let s = &obs.snapshot;
                    format!(
                        "{} ({}), {}%, {} drive(s)",
                        s.state,
                        s.job_type.as_deref().unwrap_or("?"),
                        s.percent_complete.map_or("-".into(), |p| p.to_string()),
                        s.drives.len()
                    )
                }
                Ok(source::PollOutcome::NotModified) => "not modified".to_owned(),
                Err(e) => {
                    all_ok = false;
                    format!("error: {e}")
                }
            },
        };
        outln!("{}/{}: {line}", job.account, job.name);
    }
    if all_ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
