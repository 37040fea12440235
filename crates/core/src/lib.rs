//! The daemon library of iewatch (`iewatch-core`): everything `iewatch run` and the
//! commands that read its database are made of. The command line is the `iewatch`
//! crate's; the service simulator and the demo are `iewatch-sim`'s, which this library
//! does not depend on.
//!
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
//!   PagerDuty, templates, e-mail), retried, in order per job; what each body says is
//!   [`payload`]'s (pure, also used by `check` to rehearse templates).
//!
//! Around them: [`daemon`] wires the boxes into `iewatch run` (reload, drain) under
//! [`supervise`] (a task that dies takes the process down for a restart), with
//! [`heartbeat`] petting the watchdog; [`telemetry`] and [`http_server`] expose metrics,
//! health and the [`status_page`], [`systemd`] speaks the notify protocol, [`report`]
//! prints `status`, `history` and `deliveries`.

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
pub mod detect;
pub mod errorlog;
pub mod events;
pub mod heartbeat;
pub mod http_client;
pub mod http_server;
mod id_hash;
pub mod identity;
pub mod leadership;
pub mod model;
pub mod moment;
pub mod notifier;
pub mod payload;
pub mod report;
pub mod scheduler;
pub mod source;
pub mod status_page;
pub mod store;
pub mod supervise;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod wall_clock;
