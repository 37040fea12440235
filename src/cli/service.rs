//! The commands that work from the config: `run` (the daemon, with its signals), `check`,
//! `notify-test`, and the simulator's `simulate` and `demo`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::logging;
use crate::{
    config::Config,
    source::{PollOutcome, Source},
    store::Store,
};

/// The config at `path`, or the number of its problems, each printed on a line (to stdout
/// where they are the command's answer, as for `check`; else to stderr).
pub(super) fn load_config(path: &Path, to_stdout: bool) -> Result<Config, usize> {
    Config::load(path).map_err(|e| {
        for problem in &e.problems {
            if to_stdout {
                outln!("{problem}");
            } else {
                errln!("{problem}");
            }
        }
        e.problems.len()
    })
}

/// `iewatch run`: the daemon until SIGTERM; SIGHUP reloads the config.
pub(super) async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path, false).map_err(|problems| {
        anyhow::anyhow!("the config has {problems} problem(s); `iewatch check` lists them too")
    })?;
    logging::init(config.daemon.log_format, "info");
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let signals = forward_signals(shutdown.clone(), reload_tx)?;
    // On a worker thread, not the main one: the timer that wakes the run loop wakes a
    // worker, which runs it there and then (on the main thread it would take a second
    // wakeup, measured by the `idle` benchmark).
    let daemon = tokio::spawn(crate::daemon::run(
        config_path.to_owned(),
        config,
        shutdown,
        reload_rx,
        None,
    ));
    let result = daemon.await;
    signals.abort();
    result
        .context("iewatch run panicked")?
        .context("iewatch run")?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT cancel `shutdown`; SIGHUP asks for a reload; SIGXFSZ is logged.
/// The handlers are installed before this returns, so a daemon that runs always stops on
/// SIGTERM.
///
/// # Errors
/// A handler cannot be installed.
fn forward_signals(
    shutdown: CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    // A write past a file size limit (LimitFSIZE=, a quota) fails, and the store says so
    // (/healthz 503, retries); by default the signal would kill the process instead.
    let mut xfsz = signal(SignalKind::from_raw(libc::SIGXFSZ)).context("cannot handle SIGXFSZ")?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = xfsz.recv() => tracing::warn!("SIGXFSZ: a write went past the file size limit"),
                _ = term.recv() => { tracing::info!("SIGTERM"); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT"); shutdown.cancel(); }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = reload.try_send(());
                }
            }
        }
    }))
}

/// `iewatch check [--online]`: problems and warnings, the database opened, and with
/// `--online` one Get Job per job.
pub(super) async fn check(path: &Path, online: bool) -> anyhow::Result<ExitCode> {
    let config = match load_config(path, true) {
        Ok(config) => config,
        Err(problems) => {
            outln!("{problems} problem(s) found");
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &config.warnings {
        outln!("warning: {warning}");
    }
    if let Err(e) = Store::prepare(&config.daemon.database).await {
        outln!("{}: daemon.database: {e}", path.display());
        outln!("1 problem(s) found");
        return Ok(ExitCode::FAILURE);
    }
    outln!("ok: {}", config.summary());
    if online {
        return Ok(check_online(&config).await);
    }
    Ok(ExitCode::SUCCESS)
}

/// `iewatch check --online`: one Get Job per configured job, a line each. Failure if any
/// job could not be fetched.
async fn check_online(config: &Config) -> ExitCode {
    let mut all_ok = true;
    // One source (one connection pool, one read of the trust store) per account.
    let mut sources = std::collections::BTreeMap::new();
    let caches = crate::identity::TokenCaches::new(crate::identity::Env::process());
    for job in &config.jobs {
        let Some(account) = config.account(&job.account) else {
            continue;
        };
        let source = sources
            .entry(account.name.as_str())
            .or_insert_with(|| Source::for_account(account, &config.daemon, &caches));
        let line = match source {
            Err(e) => {
                all_ok = false;
                format!("error: {e}")
            }
            Ok(source) => match source.get_job(&source.target(&job.name), None).await {
                Ok(PollOutcome::Modified(obs)) => {
                    let s = &obs.snapshot;
                    format!(
                        "{} ({}), {}%, {} drive(s)",
                        s.state,
                        s.job_type.as_deref().unwrap_or("?"),
                        s.percent_complete.map_or("-".into(), |p| p.to_string()),
                        s.drives.len()
                    )
                }
                Ok(PollOutcome::NotModified) => "not modified".to_owned(),
                Err(e) => {
                    all_ok = false;
                    format!("error: {e}")
                }
            },
        };
        outln!("{}/{}: {line}", job.account, job.name);
    }
    // Which identity each Resource Manager account's tokens came from (the default
    // chain's choice is known once it has answered).
    for (account, source) in &sources {
        if let Ok(Source::Arm(client)) = source {
            outln!("{account}: credential: {}", client.credential());
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `iewatch notify-test NAME`: one line per request, and the exit code says whether
/// every one succeeded.
pub(super) async fn notify_test(path: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let Ok(config) = load_config(path, false) else {
        return Ok(ExitCode::FAILURE);
    };
    let Some(webhook) = config.webhooks.iter().find(|w| w.name == name) else {
        let names: Vec<&str> = config.webhooks.iter().map(|w| w.name.as_str()).collect();
        errln!(
            "no webhook {name:?} in {} (there are: {})",
            path.display(),
            names.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    };
    let mut failed = false;
    for delivery in crate::notifier::notify_test(webhook).await {
        let millis = delivery.latency.as_millis();
        let status = delivery
            .status
            .map_or("no answer".into(), |s| format!("{} {s}", delivery.protocol));
        match &delivery.error {
            None => outln!("{name}: sent {}: {status} in {millis} ms", delivery.what),
            Some(error) => {
                failed = true;
                outln!(
                    "{name}: FAILED {}: {error} ({status}, {}, {millis} ms)",
                    delivery.what,
                    delivery.class
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `iewatch simulate`: the simulator until SIGTERM, with the config blocks to paste.
pub(super) async fn simulate(
    scenario: Option<PathBuf>,
    (listen, arm_listen): (std::net::SocketAddr, Option<std::net::SocketAddr>),
    certs_dir: PathBuf,
    speed: Option<f64>,
) -> anyhow::Result<ExitCode> {
    use crate::simulator::{self, Scenario, SimulatorOptions};
    let mut scenario = match &scenario {
        Some(path) => Scenario::load(path)
            .with_context(|| format!("cannot load scenario {}", path.display()))?,
        None => Scenario::parse(simulator::IMPORT_LIFECYCLE).context("built-in scenario")?,
    };
    if let Some(speed) = speed {
        scenario.speed = speed;
    }
    let sim = simulator::start(SimulatorOptions {
        scenario,
        listen,
        certs_dir,
        arm_listen,
    })
    .await
    .context("cannot start the simulator")?;
    outln!(
        "simulator listening on {} (classic) and {} (Resource Manager and its token endpoint)",
        sim.endpoint(),
        sim.arm_endpoint()
    );
    outln!(
        "paste these into your config:\n\n{}\n{}\n{}",
        sim.account_block("sim"),
        sim.arm_account_block("sim-arm"),
        sim.databox_account_block("sim-databox")
    );
    outln!("\n# Secret-less identities: export one group, then use the sim-identity block.");
    for (what, variables) in sim.identity_environments() {
        outln!("# {what}:");
        for (name, value) in variables {
            outln!("export {name}={}", shell_quoted(&value));
        }
    }
    outln!(
        "\n{}",
        sim.identity_account_block("sim-identity", "default")
    );
    let shutdown = CancellationToken::new();
    let (reload_tx, _reload_rx) = tokio::sync::mpsc::channel(1);
    let signals = forward_signals(shutdown.clone(), reload_tx)?;
    shutdown.cancelled().await;
    signals.abort();
    sim.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `value` as one shell word: as it is when it holds nothing a shell reads, else in
/// single quotes.
fn shell_quoted(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// `iewatch demo [--databox]`: simulator, daemon and webhook sink, one lifecycle.
pub(super) async fn demo(databox: bool) -> anyhow::Result<ExitCode> {
    let demo = if databox {
        crate::demo::Demo::DataBox
    } else {
        crate::demo::Demo::Classic
    };
    crate::demo::run(demo).await?;
    Ok(ExitCode::SUCCESS)
}
