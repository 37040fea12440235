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
    /// Run a faithful Import/Export service simulator (HTTPS, management certificates).
    Simulate {
        /// Scenario file (default: the shipped import lifecycle).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Where the CA, server and management certificates are written (and reused).
        #[arg(long, default_value = "./iewatch-sim-certs")]
        certs: PathBuf,
        /// Override the scenario's speed (simulated seconds per real second).
        #[arg(long)]
        speed: Option<f64>,
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
        Command::Simulate { scenario, listen, certs, speed } => {
            simulate(scenario, listen, certs, speed).await
        }
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

async fn simulate(
    scenario: Option<PathBuf>,
    listen: std::net::SocketAddr,
    certs_dir: PathBuf,
    speed: Option<f64>,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    use iewatch::simulator::{self, Scenario, SimulatorOptions};
    let mut scenario = match &scenario {
        Some(path) => Scenario::load(path).with_context(|| format!("cannot load scenario {}", path.display()))?,
        None => Scenario::parse(iewatch::simulator::IMPORT_LIFECYCLE).context("built-in scenario")?,
    };
    if let Some(speed) = speed {
        scenario.speed = speed;
    }
    let sim = simulator::start(SimulatorOptions { scenario, listen, certs_dir })
        .await
        .context("cannot start the simulator")?;
    println!("simulator listening on {}", sim.endpoint());
    println!("paste this into your config:\n\n{}", sim.account_block("sim"));
    shutdown_signal().await;
    sim.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
