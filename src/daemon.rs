//! `iewatch run`: wires config, store, scheduler, notifier and the HTTP listener into one
//! process, and owns its life: readiness, reload on request (SIGHUP in the binary), a
//! bounded drain on shutdown. Shutdown and reload triggers are passed in, so tests drive
//! the real loop with a token and a channel.

use std::{path::PathBuf, time::Duration};

use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    notifier::{self, Waker},
    scheduler::{self, Shared},
    store::Store,
    systemd::Systemd,
    telemetry::Telemetry,
};

/// How often the status line and the watchdog are refreshed when systemd does not ask
/// for a faster watchdog.
const STATUS_REFRESH: Duration = Duration::from_secs(10);
/// The scheduler's heartbeat: proves the runtime that runs the job tasks is not stuck.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The jobs could not be started.
    #[error(transparent)]
    Scheduler(#[from] scheduler::SchedulerError),
    /// The HTTP listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// What the daemon exposes once started (tests use the bound HTTP address).
#[derive(Debug, Clone)]
pub struct Started {
    /// The bound `[http] listen` address, if any.
    pub http: Option<std::net::SocketAddr>,
}

/// One set of job tasks and notifier workers, replaced as a whole on reload.
struct Generation {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Generation {
    /// A generation with nothing in it yet.
    fn empty() -> Generation {
        Generation {
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Stops starting new work and waits up to `deadline` for polls and writes in flight.
    async fn drain(self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// The running daemon: its config, the process-wide parts, and the current generation
/// of job tasks and notifier workers. Each step of the run loop is a method.
struct Daemon {
    config_path: PathBuf,
    config: Config,
    shared: Shared,
    wake: tokio::sync::watch::Receiver<u64>,
    generation: Generation,
    systemd: Systemd,
}

/// Runs the daemon until `shutdown` is cancelled. Each message on `reload` re-reads
/// `config_path`; an invalid new config is reported and the running one kept.
/// `started` receives the listener address once the daemon is ready.
///
/// # Errors
/// The database cannot be opened, jobs cannot be started, or the listener cannot bind.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<()>,
    started: Option<tokio::sync::oneshot::Sender<Started>>,
) -> Result<(), DaemonError> {
    let systemd = Systemd::from_env();
    let store = Store::open(&config.daemon.database).await?;
    let telemetry = Telemetry::new();
    let (waker, wake) = Waker::new();
    let shared = Shared {
        store: store.clone(),
        telemetry: telemetry.clone(),
        waker,
    };
    let background = CancellationToken::new();
    let http = match &config.http {
        None => None,
        Some(settings) => Some(
            crate::http_server::serve(settings.listen, store, telemetry, background.clone())
                .await
                .map_err(|source| DaemonError::Listen {
                    addr: settings.listen,
                    source,
                })?,
        ),
    };
    let generation = start_generation(&config, &shared, wake.clone()).await?;
    let mut daemon = Daemon {
        config_path,
        config,
        shared,
        wake,
        generation,
        systemd,
    };
    daemon.systemd.ready();
    tracing::info!(jobs = daemon.config.jobs.len(), webhooks = daemon.config.webhooks.len(), database = %daemon.config.daemon.database.display(), "iewatch is watching");
    if let Some(started) = started {
        let _ = started.send(Started { http });
    }
    let refresh = daemon
        .systemd
        .watchdog_interval()
        .map_or(STATUS_REFRESH, |w| (w / 2).min(STATUS_REFRESH));
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = reload.recv() => daemon.reload().await?,
            _ = ticker.tick() => daemon.report().await,
        }
    }
    daemon.stop().await;
    background.cancel();
    Ok(())
}

impl Daemon {
    /// Re-reads the config; a valid one replaces the running generation, an invalid one
    /// is reported and the running one kept.
    async fn reload(&mut self) -> Result<(), DaemonError> {
        let new_config = match Config::load(&self.config_path) {
            Ok(config) => config,
            Err(e) => {
                for problem in &e.problems {
                    tracing::error!("reload refused, keeping the running config: {problem}");
                }
                return Ok(());
            }
        };
        self.systemd.reloading();
        for warning in &new_config.warnings {
            tracing::warn!("{warning}");
        }
        let listen = |c: &Config| c.http.as_ref().map(|h| h.listen);
        if new_config.daemon.database != self.config.daemon.database
            || listen(&new_config) != listen(&self.config)
        {
            tracing::warn!("database and [http] changes take effect at the next restart");
        }
        let old = std::mem::replace(&mut self.generation, Generation::empty());
        if !old.drain(self.config.daemon.shutdown_timeout).await {
            tracing::warn!("some polls were still running at reload; they were abandoned");
        }
        self.generation = start_generation(&new_config, &self.shared, self.wake.clone()).await?;
        tracing::info!(
            jobs = new_config.jobs.len(),
            webhooks = new_config.webhooks.len(),
            "config reloaded"
        );
        self.config = new_config;
        self.systemd.ready();
        Ok(())
    }

    /// Refreshes the status line and pets the watchdog while the loops are live.
    async fn report(&self) {
        let telemetry = &self.shared.telemetry;
        if let Ok(backlog) = self.shared.store.outbox_backlog().await {
            telemetry.set_backlog(backlog);
        }
        let (watched, failing, backlog) = telemetry.counts();
        self.systemd.status(&format!(
            "watching {watched} jobs, {failing} failing, {backlog} alerts pending"
        ));
        match telemetry.stalled_loop() {
            None => self.systemd.watchdog(),
            Some(stalled) => {
                tracing::error!(
                    "a loop is not making progress ({stalled}): withholding the watchdog"
                )
            }
        }
    }

    /// Drains the running generation within the shutdown deadline and closes the store.
    async fn stop(self) {
        self.systemd.stopping();
        tracing::info!("shutting down: letting polls and writes in flight finish");
        if !self
            .generation
            .drain(self.config.daemon.shutdown_timeout)
            .await
        {
            tracing::warn!("shutdown deadline passed; unfinished polls were abandoned (nothing half-written: each write is one transaction)");
        }
        self.shared.store.close().await;
        tracing::info!("stopped");
    }
}

async fn start_generation(
    config: &Config,
    shared: &Shared,
    wake: tokio::sync::watch::Receiver<u64>,
) -> Result<Generation, DaemonError> {
    let generation = Generation::empty();
    scheduler::spawn_jobs(config, shared, &generation.tracker, &generation.shutdown).await?;
    let telemetry = shared.telemetry.clone();
    let heartbeat_stop = generation.shutdown.clone();
    generation.tracker.spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                () = heartbeat_stop.cancelled() => return,
                _ = beat.tick() => telemetry.scheduler_tick(),
            }
        }
    });
    generation.tracker.spawn(notifier::run(
        shared.store.clone(),
        config.webhooks.clone(),
        wake,
        shared.telemetry.clone(),
        generation.shutdown.clone(),
    ));
    Ok(generation)
}
