//! The `iewatch` binary: parses the command line, sets up logging and hands over to the
//! library. Errors end here, printed with their causes, with a non-zero exit code so that
//! systemd's `Restart=on-failure` works.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use iewatch::{
    config::{self, Config, LogFormat, DEFAULT_CONFIG_PATH},
    errln, out, outln, report,
    store::{is_postgres_url, Database, Store},
};
use tokio_util::sync::CancellationToken;

/// Standard error for log lines, dropping write errors. tracing-subscriber reports a
/// failed write with `eprintln!`, which panics when stderr is a closed pipe: the task
/// that logged would die. A log line must never stop the daemon.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[derive(Parser)]
#[command(
    name = "iewatch",
    version,
    about = "Watches Azure Import/Export jobs: history in SQLite, alerts by webhook"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file.
    #[arg(short, long, env = "IEWATCH_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(clap::Args)]
struct DatabaseArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Database file or postgres:// URL (default: the config's daemon.database). A URL's
    /// password comes from $PGPASSWORD or ~/.pgpass, or the config's
    /// database_password_file when the config names the same URL.
    #[arg(long)]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
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
    /// Silence a job's alerts for a while: they are not sent, then or later (its events
    /// are still recorded, and its reminders pause until the mute ends).
    Mute {
        /// The job (`name` or `account/name`).
        job: String,
        /// How long: 2d, 12h (at most a year).
        #[arg(long = "for", value_parser = humantime::parse_duration, conflicts_with = "off")]
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
    match runtime.block_on(dispatch(cli)) {
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

/// Logs to stderr: plain text for terminals, no colours and no timestamp under journald
/// (it adds its own), or JSON lines. `IEWATCH_LOG` takes an EnvFilter directive.
fn init_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("IEWATCH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},sqlx=warn,hyper=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_target(false);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text if under_journald => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    if let Err(e) = result {
        errln!("warning: logging not set up: {e}");
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(arg) => run(&arg.config).await,
        Command::Check { config, online } => {
            init_logging(LogFormat::Text, "warn");
            check(&config.config, online).await
        }
        Command::Status { db, json } => {
            let store = open_database(&db).await?;
            let jobs = store.status().await?;
            print_report(json, &jobs, |jobs| {
                report::status_text(jobs, iewatch::wall_clock::now())
            })
        }
        Command::History {
            job,
            since,
            db,
            json,
        } => history(&job, since, &db, json).await,
        Command::Deliveries {
            failed,
            limit,
            db,
            json,
        } => {
            let store = open_database(&db).await?;
            let rows = store.deliveries(failed, limit).await?;
            print_report(json, &rows, |rows| report::deliveries_text(rows))
        }
        Command::Redeliver { id, db } => {
            let store = open_database(&db).await?;
            if store.redeliver(id, iewatch::wall_clock::now()).await? {
                iewatch::notifier::nudge::nudge_daemon(&store).await;
                outln!("delivery {id} queued again");
                Ok(ExitCode::SUCCESS)
            } else {
                errln!("no delivery {id}");
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Prune {
            dry_run,
            retention,
            db,
        } => prune(dry_run, retention, &db).await,
        Command::Completions { shell } => {
            let mut command = Cli::command();
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "iewatch", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let written = man_pages(Cli::command(), &dir)?;
            outln!("{written} man page(s) written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::NotifyTest { name, config } => {
            init_logging(LogFormat::Text, "warn");
            notify_test(&config.config, &name).await
        }
        Command::Ack { job, note, db } => {
            let store = open_database(&db).await?;
            let matched = store
                .acknowledge(&job, note.as_deref(), iewatch::wall_clock::now())
                .await?;
            // An open PagerDuty incident is resolved now, not at the next safety re-read.
            iewatch::notifier::nudge::nudge_daemon(&store).await;
            job_answer(&job, matched, "acknowledged; its current reminders stop")
        }
        Command::Mute {
            job,
            duration,
            off,
            db,
        } => {
            let until = match (duration, off) {
                (_, true) => None,
                (Some(d), false) if d <= std::time::Duration::from_secs(366 * 86_400) => {
                    Some(iewatch::wall_clock::now() + d)
                }
                (Some(_), false) => {
                    errln!("--for: at most a year (366d)");
                    return Ok(ExitCode::FAILURE);
                }
                (None, false) => {
                    errln!("say how long (--for 2d) or end a mute (--off)");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let store = open_database(&db).await?;
            let matched = store.mute(&job, until).await?;
            let what = match until {
                Some(until) => format!(
                    "silenced until {}: its alerts until then are not sent, then or later (events are still recorded)",
                    iewatch::moment::rfc3339_seconds(until)
                ),
                None => "no longer muted".to_owned(),
            };
            job_answer(&job, matched, &what)
        }
        Command::Simulate {
            scenario,
            listen,
            arm_listen,
            certs,
            speed,
        } => {
            init_logging(LogFormat::Text, "info");
            simulate(scenario, (listen, arm_listen), certs, speed).await
        }
        Command::Demo { databox } => {
            init_logging(LogFormat::Text, "error");
            let demo = if databox {
                iewatch::demo::Demo::DataBox
            } else {
                iewatch::demo::Demo::Classic
            };
            iewatch::demo::run(demo).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `iewatch history`: one job's events, oldest first.
async fn history(
    job: &str,
    since: Option<std::time::Duration>,
    db: &DatabaseArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_database(db).await?;
    if !store.has_job(job).await? {
        errln!("no job named {job:?} in {}", store.database());
        return Ok(ExitCode::FAILURE);
    }
    // Any --since reaches back at most to 1970: no time arithmetic can overflow on it.
    let since = since.map(|d| {
        iewatch::wall_clock::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    let entries = store.history(job, since).await?;
    print_report(json, &entries, |entries| report::history_text(entries))
}

/// Prints a report as pretty JSON (for scripts) or as its aligned text.
fn print_report<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(value)?);
    } else {
        out!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            for problem in &e.problems {
                errln!("{problem}");
            }
            anyhow::bail!(
                "the config has {} problem(s); `iewatch check` lists them too",
                e.problems.len()
            );
        }
    };
    init_logging(config.daemon.log_format, "info");
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let signals = forward_signals(shutdown.clone(), reload_tx)?;
    // On a worker thread, not the main one: the timer that wakes the run loop wakes a
    // worker, which runs it there and then (on the main thread it would take a second
    // wakeup, measured by the `idle` benchmark).
    let daemon = tokio::spawn(iewatch::daemon::run(
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
/// The handlers are
/// installed before this returns, so a daemon that runs always stops on SIGTERM.
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

/// `iewatch notify-test NAME`: one line per request, and the exit code says whether
/// every one succeeded.
async fn notify_test(path: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            for problem in &e.problems {
                errln!("{problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
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
    for delivery in iewatch::notifier::notify_test(webhook).await {
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

async fn check(path: &Path, online: bool) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            for problem in &e.problems {
                outln!("{problem}");
            }
            outln!("{} problem(s) found", e.problems.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &config.warnings {
        outln!("warning: {warning}");
    }
    if let Err(e) = Store::open_database(&config.daemon.database).await {
        outln!("{}: daemon.database: {e}", path.display());
        outln!("1 problem(s) found");
        return Ok(ExitCode::FAILURE);
    }
    outln!("ok: {}", config.summary());
    if online {
        return Ok(iewatch::check_online(&config).await);
    }
    Ok(ExitCode::SUCCESS)
}

/// `iewatch prune [--dry-run]`: a line per job and a total.
async fn prune(
    dry_run: bool,
    retention: Option<std::time::Duration>,
    db: &DatabaseArgs,
) -> anyhow::Result<ExitCode> {
    let retention = match retention {
        Some(retention) => retention,
        None => match Config::load(&db.config.config).map(|c| c.daemon.retention) {
            Ok(Some(retention)) => retention,
            Ok(None) => {
                errln!("no retention: set daemon.retention in the config or give --retention 400d");
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => {
                for problem in &e.problems {
                    errln!("{problem}");
                }
                errln!("give --retention, or fix the config");
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let cutoff = iewatch::wall_clock::now()
        .checked_sub(retention)
        .unwrap_or(std::time::UNIX_EPOCH);
    let store = open_database(db).await?;
    let pruned = store.prune(cutoff, dry_run).await?;
    store.close().await;
    for job in &pruned {
        let kept = match job.kept {
            0 => String::new(),
            n => format!("; {n} alert(s) not delivered yet are kept"),
        };
        outln!(
            "{}/{}  ended {}  {} event(s), {} deliveries{kept}",
            job.account,
            job.name,
            job.ended_at,
            job.events,
            job.deliveries
        );
    }
    let events: i64 = pruned.iter().map(|p| p.events).sum();
    let verb = if dry_run { "would remove" } else { "removed" };
    outln!(
        "{verb} {events} event(s) of {} job(s) that ended before {}",
        pruned.len(),
        iewatch::moment::rfc3339_seconds(cutoff)
    );
    Ok(ExitCode::SUCCESS)
}

/// The shells `iewatch completions` writes for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `iewatch.1` and one page per subcommand (`iewatch-run.1`, ...), generated from the
/// CLI definition so that they never disagree with `--help`.
fn man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let command = command.disable_help_subcommand(true);
    let mut pages = vec![(String::from("iewatch"), command.clone())];
    for sub in command.get_subcommands() {
        let name = format!("iewatch-{}", sub.get_name());
        let invoked = format!("iewatch {}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name).bin_name(invoked)));
    }
    for (name, page) in &pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page.clone())
            .render(&mut roff)
            .with_context(|| format!("cannot render {name}.1"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(pages.len())
}

/// `JOB: what` for the jobs a command changed, or an error when none matched.
fn job_answer(job: &str, matched: usize, what: &str) -> anyhow::Result<ExitCode> {
    if matched == 0 {
        errln!("no job {job} in the database");
        return Ok(ExitCode::FAILURE);
    }
    outln!("{job}: {what}");
    Ok(ExitCode::SUCCESS)
}

async fn open_database(args: &DatabaseArgs) -> anyhow::Result<Store> {
    let configured = config::database_of(&args.config.config);
    let database = match &args.database {
        None => configured,
        Some(url) if is_postgres_url(url) => {
            let password_file = match &configured {
                Database::Postgres(pg) if &pg.url == url => pg.password_file.clone(),
                _ => None,
            };
            Database::parse(url, password_file)
        }
        Some(path) => Database::File(PathBuf::from(path)),
    };
    Ok(Store::open_existing_database(&database).await?)
}

async fn simulate(
    scenario: Option<PathBuf>,
    (listen, arm_listen): (std::net::SocketAddr, Option<std::net::SocketAddr>),
    certs_dir: PathBuf,
    speed: Option<f64>,
) -> anyhow::Result<ExitCode> {
    use iewatch::simulator::{self, Scenario, SimulatorOptions};
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
    let shutdown = CancellationToken::new();
    let (reload_tx, _reload_rx) = tokio::sync::mpsc::channel(1);
    let signals = forward_signals(shutdown.clone(), reload_tx)?;
    shutdown.cancelled().await;
    signals.abort();
    sim.stop().await;
    Ok(ExitCode::SUCCESS)
}
