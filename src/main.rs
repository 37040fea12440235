//! The `iewatch` binary: parses the command line, sets up logging and hands over to the
//! library. Errors end here, printed with their causes, with a non-zero exit code so that
//! systemd's `Restart=on-failure` works.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use iewatch::config::{Config, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(name = "iewatch", version, about = "Watches Azure Import/Export jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config; with --online, do one Get Job per job.
    Check {
        /// Config file.
        #[arg(short, long, env = "IEWATCH_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Also poll every job once and print its state or error.
        #[arg(long)]
        online: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config, online } => check(&config, online).await,
    }
}

async fn check(path: &std::path::Path, online: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            for problem in &e.problems {
                println!("{problem}");
            }
            println!("{} problem(s) found", e.problems.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("ok: {}", config.summary());
    if online {
        return Ok(iewatch::check_online(&config).await);
    }
    Ok(ExitCode::SUCCESS)
}
