//! The command line: [`flags`] parses and checks it, the modules below act on it. This is
//! the binary's edge: errors become `anyhow` here, with their causes, for `main` to print
//! and turn into an exit code (so systemd's `Restart=on-failure` works).
//!
//! - [`flags`]: the clap definitions (`--help`, man pages and completions come from them).
//! - `service`: the commands that read the config (run, check, notify-test, simulate,
//!   demo).
//! - `database`: the commands that read or change the database (status, history,
//!   deliveries, redeliver, prune, ack, mute).
//! - `docs`: completions and man pages.

mod database;
mod docs;
mod errors;
pub mod flags;
mod logging;
mod service;

use std::process::ExitCode;

pub use flags::Cli;
use flags::Command;

use crate::config::LogFormat;

/// Carries out one parsed command line; `Ok` holds the exit code of a command that ran.
///
/// # Errors
/// What stopped the command (unreadable database, failed daemon start), with its causes.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(arg) => service::run(&arg.config).await,
        Command::Check { config, online } => {
            logging::init(LogFormat::Text, "warn");
            service::check(&config.config, online).await
        }
        Command::NotifyTest { name, config } => {
            logging::init(LogFormat::Text, "warn");
            service::notify_test(&config.config, &name).await
        }
        Command::Simulate {
            scenario,
            listen,
            arm_listen,
            certs,
            speed,
        } => {
            logging::init(LogFormat::Text, "info");
            service::simulate(scenario, (listen, arm_listen), certs, speed).await
        }
        Command::Demo { databox } => {
            logging::init(LogFormat::Text, "error");
            service::demo(databox).await
        }
        Command::Status { db, json } => database::status(&db, json).await,
        Command::History {
            job,
            since,
            db,
            json,
        } => database::history(&job, since, &db, json).await,
        Command::Deliveries {
            failed,
            limit,
            db,
            json,
        } => database::deliveries(failed, limit, &db, json).await,
        Command::Redeliver { id, db } => database::redeliver(id, &db).await,
        Command::Prune {
            dry_run,
            retention,
            db,
        } => database::prune(dry_run, retention, &db).await,
        Command::Ack { job, note, db } => database::ack(&job, note.as_deref(), &db).await,
        Command::Mute {
            job,
            duration,
            db,
            off: _,
        } => database::mute(&job, duration, &db).await,
        Command::Errors {
            job,
            file,
            json,
            all,
            db,
        } => match (job, file) {
            (_, Some(file)) => errors::errors(&file, json, all),
            (Some(job), None) => errors::job_errors(&job, &db, json, all).await,
            (None, None) => Ok(ExitCode::FAILURE),
        },
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(&dir),
    }
}
