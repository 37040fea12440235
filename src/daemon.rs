//! `iewatch run`: wires config, store, scheduler, notifier and the HTTP listener into one
//! process, and owns its life: readiness, reload on request (SIGHUP in the binary), a
//! bounded drain on shutdown. Shutdown and reload triggers are passed in, so tests drive
//! the real loop with a token and a channel.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    notifier::{self, Waker},
    scheduler::{self, PollTimes, Shared, POLL_TIME_FLUSH},
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
    /// Stops starting new work and waits up to `deadline` for polls and writes in flight.
    async fn drain(self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
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
    let (waker, wake_rx) = Waker::new();
    let shared = Shared {
        store: store.clone(),
        telemetry: telemetry.clone(),
        waker,
        poll_times: PollTimes::default(),
        webhooks: Arc::new(RwLock::new(Arc::new(config.webhooks.clone()))),
    };
    let background = CancellationToken::new();
    let http = match &config.http {
        None => None,
        Some(settings) => Some(
            crate::http_server::serve(
                settings.listen,
                store.clone(),
                telemetry.clone(),
                background.clone(),
            )
            .await
            .map_err(|source| DaemonError::Listen {
                addr: settings.listen,
                source,
            })?,
        ),
    };
    let flusher = tokio::spawn(flush_poll_times(shared.clone(), background.clone()));
    let mut config = config;
    let mut generation = start_generation(&config, &shared, wake_rx.clone()).await?;
    systemd.ready();
    tracing::info!(jobs = config.jobs.len(), webhooks = config.webhooks.len(), database = %config.daemon.database.display(), "iewatch is watching");
    if let Some(started) = started {
        let _ = started.send(Started { http });
    }

    let refresh = systemd
        .watchdog_interval()
        .map_or(STATUS_REFRESH, |w| (w / 2).min(STATUS_REFRESH));
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = reload.recv() => {
                match Config::load(&config_path) {
                    Err(e) => {
                        for problem in &e.problems {
                            tracing::error!("reload refused, keeping the running config: {problem}");
                        }
                    }
                    Ok(new_config) => {
                        systemd.reloading();
                        for warning in &new_config.warnings {
                            tracing::warn!("{warning}");
                        }
                        if new_config.daemon.database != config.daemon.database || new_config.http.as_ref().map(|h| h.listen) != config.http.as_ref().map(|h| h.listen) {
                            tracing::warn!("database and [http] changes take effect at the next restart");
                        }
                        if !generation.drain(config.daemon.shutdown_timeout).await {
                            tracing::warn!("some polls were still running at reload; they were abandoned");
                        }
                        *shared.webhooks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new_config.webhooks.clone());
                        generation = start_generation(&new_config, &shared, wake_rx.clone()).await?;
                        tracing::info!(jobs = new_config.jobs.len(), webhooks = new_config.webhooks.len(), "config reloaded");
                        config = new_config;
                        systemd.ready();
                    }
                }
            }
            _ = ticker.tick() => {
                if let Ok(backlog) = store.outbox_backlog().await {
                    telemetry.set_backlog(backlog);
                }
                let (watched, failing, backlog) = telemetry.counts();
                systemd.status(&format!("watching {watched} jobs, {failing} failing, {backlog} alerts pending"));
                let (scheduler_age, notifier_age) = telemetry.since_ticks();
                if scheduler_age <= crate::http_server::LIVENESS_WINDOW && notifier_age <= crate::http_server::LIVENESS_WINDOW {
                    systemd.watchdog();
                } else {
                    tracing::error!("a loop is not making progress (scheduler {}s, notifier {}s): withholding the watchdog", scheduler_age.as_secs(), notifier_age.as_secs());
                }
            }
        }
    }

    systemd.stopping();
    tracing::info!("shutting down: letting polls and writes in flight finish");
    if !generation.drain(config.daemon.shutdown_timeout).await {
        tracing::warn!("shutdown deadline passed; unfinished polls were abandoned (nothing half-written: each write is one transaction)");
    }
    background.cancel();
    let _ = flusher.await;
    if let Err(e) = shared.poll_times.flush(&store).await {
        tracing::warn!("last poll times not written: {e}");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn start_generation(
    config: &Config,
    shared: &Shared,
    wake: tokio::sync::watch::Receiver<u64>,
) -> Result<Generation, DaemonError> {
    let generation = Generation {
        tracker: TaskTracker::new(),
        shutdown: CancellationToken::new(),
    };
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

async fn flush_poll_times(shared: Shared, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(POLL_TIME_FLUSH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(e) = shared.poll_times.flush(&shared.store).await {
                    tracing::warn!("cannot write poll times (kept for the next try): {e}");
                }
            }
        }
    }
}
