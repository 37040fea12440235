//! The command line as clap reads it: parsed and checked here, acted on in
//! [`super::commands`] (ripgrep's split). `--help`, the man pages and the completion
//! scripts are all made from these definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// The command line: one subcommand.
#[derive(Parser)]
#[command(
    name = "iewatch",
    version,
    about = "Watches Azure Import/Export jobs: history in SQLite, alerts by webhook"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `-c FILE`: the config file of a command that reads one.
#[derive(clap::Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(short, long, env = "IEWATCH_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// Which database a reading command opens: `--database`, else the config's.
#[derive(clap::Args)]
pub struct DatabaseArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Database file or postgres:// URL (default: the config's daemon.database). A URL's
    /// password comes from $PGPASSWORD or ~/.pgpass, or the config's
    /// database_password_file when the config names the same URL.
    #[arg(long)]
    pub database: Option<String>,
}

/// The subcommands, each with its own arguments.
#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run(ConfigArg),
    /// Validate the config; with --online, do one Get Job per job.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also poll every job once and print its state or error.
        #[arg(long)]
        online: bool,
    },
    /// One line per job: state, percent, drives, last change, last poll, last error.
    Status {
        #[command(flatten)]
        db: DatabaseArgs,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A job's timeline, oldest first (JOB is `name` or `account/name`).
    History {
        /// The job.
        job: String,
        /// Only events this recent (e.g. 7d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        #[command(flatten)]
        db: DatabaseArgs,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The webhook delivery log, newest first.
    Deliveries {
        /// Only deliveries that were given up.
        #[arg(long)]
        failed: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        db: DatabaseArgs,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Queue a delivery again (a running daemon sends it within seconds).
    Redeliver {
        /// Delivery id (see `iewatch deliveries`).
        id: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Send a test event to one webhook through the real delivery path and say how it
    /// went (exit code 1 when it failed).
    NotifyTest {
        /// The webhook's `name`.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove the events and deliveries of jobs that ended longer ago than the
    /// retention (`daemon.retention`, or --retention); jobs' current state stays.
    Prune {
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
        /// Instead of the config's daemon.retention (e.g. 400d).
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<std::time::Duration>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Print the shell completion script for bash, zsh or fish.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (iewatch.1, iewatch-run.1, ...) into a directory.
    Man {
        /// Where to write them (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Stop the reminders of what is wrong with a job now and resolve its PagerDuty
    /// `errors` incident; recorded in its history.
    Ack {
        /// The job (`name` or `account/name`).
        job: String,
        /// Why, for the history (who is on it, what was done).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// What failed in a job's drives, from the error logs iewatch read when they ended
    /// with errors (or from a log downloaded by hand): totals by code with their meaning,
    /// and the failed files.
    Errors {
        /// The job (`name` or `account/name`) whose recorded error logs to show.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        job: Option<String>,
        /// A log downloaded by hand (XML: a DriveLog, or a copy log).
        #[arg(long, value_name = "LOG")]
        file: Option<std::path::PathBuf>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Every failed entry, not only the first 50 (a job's logs are read again from
        /// the storage account, with the config's credentials).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Silence a job's alerts for a while: they are not sent, then or later (its events
    /// are still recorded, and its reminders pause until the mute ends).
    Mute {
        /// The job (`name` or `account/name`).
        job: String,
        /// How long: 2d, 12h (at most a year).
        #[arg(
            long = "for",
            value_parser = mute_duration,
            conflicts_with = "off",
            required_unless_present = "off"
        )]
        duration: Option<std::time::Duration>,
        /// End a mute now.
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Run a faithful Import/Export service simulator (HTTPS, management certificates).
    Simulate {
        /// Scenario file (default: the shipped import lifecycle).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Listen address of the classic (Service Management) API.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Listen address of the Resource Manager API and its token endpoint
        /// (default: the same address as --listen, any free port).
        #[arg(long)]
        arm_listen: Option<std::net::SocketAddr>,
        /// Where the CA, server and management certificates are written (and reused).
        #[arg(long, default_value = "./iewatch-sim-certs")]
        certs: PathBuf,
        /// Override the scenario's speed (simulated seconds per real second).
        #[arg(long)]
        speed: Option<f64>,
    },
    /// Simulator + daemon + webhook sink: a job's whole lifecycle in under a minute.
    Demo {
        /// Watch an Import/Export job made in today's Azure portal instead: a Data Box
        /// order (SKU DataBoxCustomerDisk) through Resource Manager.
        #[arg(long)]
        databox: bool,
    },
}

/// The shells `iewatch completions` writes for.
// The variants carry no doc comments: clap would print them beside each value.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The longest `mute --for`: a mute outliving everyone's memory of it is a lost job.
pub const MUTE_AT_MOST: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// `--for`: a humantime duration of at most [`MUTE_AT_MOST`].
fn mute_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration > MUTE_AT_MOST {
        return Err("at most a year (366d)".to_owned());
    }
    Ok(duration)
}
