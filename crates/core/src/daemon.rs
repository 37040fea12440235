//! `iewatch run`: wires config, store, scheduler, notifier and the HTTP listener into one
//! process, and owns its life: readiness, reload on request (SIGHUP in the binary), a
//! bounded drain on shutdown. Shutdown and reload triggers are passed in, so tests drive
//! the real loop with a token and a channel.
//!
//! Crash-only: every task runs under a [`Supervisor`]; a task that dies, a database
//! writer that stops, or a database file deleted or replaced under the daemon make it
//! say so (log, `/healthz` 503, systemd `STATUS=`) and return an error, so the process
//! exits non-zero and systemd starts it again from the durable state.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    heartbeat::{self, Beat},
    leadership,
    notifier::{self, Waker},
    scheduler::{self, Shared},
    store::{Store, Writer},
    supervise::{Deaths, Supervisor},
    systemd::Systemd,
    telemetry::{Telemetry, LIVENESS_SLACK},
};

/// How often the heartbeat beats when systemd does not ask for a faster watchdog (the
/// unit's WatchdogSec=60s asks for this); see [`heartbeat`].
const STATUS_REFRESH: Duration = Duration::from_secs(30);
/// After a part died, how long the rest may take to stop before the process exits.
const FAILURE_DRAIN: Duration = Duration::from_secs(3);
/// Probes of one generation are named with this prefix, so the next one replaces them.
const GENERATION_PROBES: &str = "webhook ";

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
    /// A part of the daemon stopped while the process ran: it exits for a restart.
    #[error("{0}; exiting so that the service manager restarts iewatch")]
    Died(String),
}

/// What the daemon exposes once started (tests use the bound HTTP address).
#[derive(Debug, Clone)]
pub struct Started {
    /// The bound `[http] listen` address, if any.
    pub http: Option<std::net::SocketAddr>,
}

/// One set of job tasks and notifier workers, replaced as a whole on reload.
struct Generation {
    /// Counts up from 1; the store refuses writes of older generations.
    number: u64,
    supervisor: Supervisor,
}

/// The running daemon: its config, the process-wide parts, and the current generation
/// of job tasks and notifier workers. Each step of the run loop is a method.
struct Daemon {
    config_path: PathBuf,
    config: Config,
    shared: Shared,
    wake: tokio::sync::watch::Receiver<u64>,
    supervisor: Supervisor,
    generation: Generation,
    systemd: Systemd,
    /// On PostgreSQL: the epoch of the lease this daemon holds, and the lease's length.
    lease: Option<(i64, Duration)>,
}

/// Runs the daemon until `shutdown` is cancelled. Each message on `reload` re-reads
/// `config_path`; an invalid new config is reported and the running one kept.
/// `started` receives the listener address once the daemon is ready.
///
/// # Errors
/// The database cannot be opened (or another daemon holds it), jobs cannot be started,
/// the listener cannot bind, or a part of the daemon died ([`DaemonError::Died`]).
// Long: the wiring of every part in the order they must start (store, telemetry,
// listener, lease, jobs), which reads best as one sequence.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<()>,
    mut started: Option<tokio::sync::oneshot::Sender<Started>>,
) -> Result<(), DaemonError> {
    let systemd = Systemd::from_env();
    let store = Writer::open(&config.daemon.database).await?;
    let telemetry = Telemetry::new();
    let (supervisor, mut deaths) = Supervisor::new();
    let (waker, wake) = Waker::new();
    let shared = Shared {
        store: store.clone(),
        telemetry: telemetry.clone(),
        waker,
    };
    let writer = store.clone();
    telemetry.set_probe(
        "writer",
        Arc::new(move || {
            let busy = writer.writer_busy_for()?;
            (busy > LIVENESS_SLACK * 2)
                .then(|| format!("a database commit has taken {}s", busy.as_secs()))
        }),
    );
    let http = match &config.http {
        None => None,
        Some(settings) => Some(
            crate::http_server::serve(
                settings,
                crate::http_server::Stores::new(
                    store.clone(),
                    Store::open_existing_database(&config.daemon.database).await?,
                ),
                telemetry,
                &supervisor,
            )
            .await
            .map_err(|source| DaemonError::Listen {
                addr: settings.listen,
                source,
            })?,
        ),
    };
    let sources = scheduler::Sources::for_config(&config)?;
    let mut lease = None;
    if config.daemon.database.dialect() == crate::store::Dialect::Postgres {
        // Standing by is this service's job until the lease comes: it is up and ready.
        systemd.ready();
        if let Some(started) = started.take() {
            let _ = started.send(Started { http });
        }
        let stood_by = leadership::stand_by(
            &store,
            config.daemon.lease,
            &shared.telemetry,
            &systemd,
            &shutdown,
        );
        match stood_by.await {
            Some(epoch) => {
                store.lead(epoch);
                lease = Some((epoch, config.daemon.lease));
            }
            None => {
                systemd.stopping();
                supervisor.stop(config.daemon.shutdown_timeout).await;
                store.close().await;
                return Ok(());
            }
        }
    }
    let generation = start_generation(&config, &sources, &shared, wake.clone(), &supervisor, 1);
    let mut daemon = Daemon {
        config_path,
        config,
        shared,
        wake,
        supervisor,
        generation,
        systemd,
        lease,
    };
    daemon.systemd.ready();
    tracing::info!(jobs = daemon.config.jobs.len(), webhooks = daemon.config.webhooks.len(), database = %daemon.config.daemon.database, "iewatch is watching");
    if let Some(started) = started {
        let _ = started.send(Started { http });
    }
    let outcome = daemon.watch(shutdown, &mut reload, &mut deaths).await;
    daemon.stop(outcome).await
}

impl Daemon {
    /// The run loop: until shutdown, or until a part of the daemon dies.
    async fn watch(
        &mut self,
        shutdown: CancellationToken,
        reload: &mut mpsc::Receiver<()>,
        deaths: &mut Deaths,
    ) -> Result<(), String> {
        let refresh = self
            .systemd
            .watchdog_interval()
            .map_or(STATUS_REFRESH, |w| (w / 2).min(STATUS_REFRESH));
        let (beat_tx, mut beats) = mpsc::channel(1);
        let _heartbeat = heartbeat::start(
            refresh,
            self.shared.store.clone(),
            self.shared.telemetry.clone(),
            self.systemd.clone(),
            beat_tx,
        )
        .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
        let store = self.shared.store.clone();
        let writer_stopped = store.writer_stopped();
        tokio::pin!(writer_stopped);
        let (lease, holder) = (self.lease, store.clone());
        let lease_lost = async move {
            match lease {
                Some((epoch, length)) => leadership::hold(holder, epoch, length).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lease_lost);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some(()) = reload.recv() => self.reload().await,
                Some(death) = deaths.recv() => return Err(death.to_string()),
                reason = &mut writer_stopped => return Err(reason),
                reason = &mut lease_lost => return Err(reason),
                beat = beats.recv() => match beat {
                    // Bounded: a database that stopped answering must not hold the loop
                    // that notices a lost lease or a dead part.
                    Some(Beat::Refresh { poll_times, backlog }) => {
                        if tokio::time::timeout(refresh, self.refresh(poll_times, backlog)).await.is_err() {
                            tracing::warn!("the database did not answer the heartbeat's writes within {refresh:?}");
                        }
                    }
                    Some(Beat::Lost(reason)) => return Err(reason),
                    None => return Err("the heartbeat thread died".into()),
                },
            }
        }
    }

    /// Re-reads the config; a valid one replaces the running generation, one that is
    /// invalid, or whose sources cannot be built, is reported and the running one kept.
    async fn reload(&mut self) {
        let new_config = match Config::load(&self.config_path) {
            Ok(config) => config,
            Err(e) => {
                for problem in &e.problems {
                    tracing::error!("reload refused, keeping the running config: {problem}");
                }
                return;
            }
        };
        let sources = match scheduler::Sources::for_config(&new_config) {
            Ok(sources) => sources,
            Err(e) => {
                tracing::error!("reload refused, keeping the running config: {e}");
                return;
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
        if !self
            .generation
            .supervisor
            .stop(self.config.daemon.shutdown_timeout)
            .await
        {
            tracing::warn!("some polls were still running at reload; their writes will be refused and the new generation polls those jobs again");
        }
        let number = self.generation.number.saturating_add(1);
        self.generation = start_generation(
            &new_config,
            &sources,
            &self.shared,
            self.wake.clone(),
            &self.supervisor,
            number,
        );
        tracing::info!(
            jobs = new_config.jobs.len(),
            webhooks = new_config.webhooks.len(),
            "config reloaded"
        );
        self.config = new_config;
        self.systemd.ready();
    }

    /// The heartbeat's async part: writes the pending poll times, reads the outbox
    /// backlog, and reports with them.
    async fn refresh(&self, poll_times: bool, backlog: bool) {
        let (store, telemetry) = (&self.shared.store, &self.shared.telemetry);
        if poll_times {
            if let Err(e) = store.flush_poll_times().await {
                tracing::warn!("cannot write poll times (kept for the next try): {e}");
            }
        }
        if backlog {
            if let Ok(backlog) = store.outbox_backlog().await {
                telemetry.set_backlog(backlog);
            }
        }
        heartbeat::report(telemetry, &self.systemd);
    }

    /// Stops every task (within the shutdown deadline, or a short one after a failure)
    /// and closes the store. A failure is said everywhere an operator looks first.
    async fn stop(self, outcome: Result<(), String>) -> Result<(), DaemonError> {
        let deadline = match &outcome {
            Ok(()) => {
                self.systemd.stopping();
                tracing::info!("shutting down: letting polls and writes in flight finish");
                self.config.daemon.shutdown_timeout
            }
            Err(reason) => {
                self.shared.telemetry.set_fatal(reason);
                self.systemd.status(&format!("failed: {reason}"));
                tracing::error!("{reason}: exiting so that the service manager restarts iewatch");
                FAILURE_DRAIN
            }
        };
        // One deadline for the whole stop, a hung receiver's lane included: the tasks get
        // four fifths of it, closing the store (its last writes) the rest.
        let until = tokio::time::Instant::now() + deadline;
        let tasks_until = until - deadline / 5;
        let left = |until: tokio::time::Instant| {
            until.saturating_duration_since(tokio::time::Instant::now())
        };
        if !self.generation.supervisor.stop(left(tasks_until)).await {
            tracing::warn!("deadline passed; unfinished polls and deliveries were abandoned (nothing half-written: each write is one transaction; an alert cut off is sent again at the next start)");
        }
        self.supervisor.stop(left(tasks_until)).await;
        if tokio::time::timeout(left(until), self.shared.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the database did not answer while closing; exiting regardless");
        }
        tracing::info!("stopped");
        outcome.map_err(DaemonError::Died)
    }
}

/// Starts generation `number` of job tasks and notifier workers: from now on only its
/// writes are accepted.
fn start_generation(
    config: &Config,
    sources: &scheduler::Sources,
    shared: &Shared,
    wake: tokio::sync::watch::Receiver<u64>,
    parent: &Supervisor,
    number: u64,
) -> Generation {
    let supervisor = parent.child();
    let shared = Shared {
        store: shared.store.fence_for(number),
        ..shared.clone()
    };
    shared.telemetry.remove_probes(GENERATION_PROBES);
    scheduler::spawn_jobs(config, sources, &shared, &supervisor);
    supervisor.spawn(
        "retention",
        prune_forever(
            shared.store.store().clone(),
            config.daemon.retention,
            supervisor.stopping().clone(),
        ),
    );
    supervisor.spawn(
        "notifier",
        notifier::run(
            shared.store.clone(),
            config.webhooks.clone(),
            wake,
            shared.telemetry.clone(),
            supervisor.stopping().clone(),
        ),
    );
    Generation { number, supervisor }
}

/// How often `retention` runs (and how long after a start it first does).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Prunes what `retention` lets go, hourly, until `stopping`; a failure is logged and
/// tried again at the next hour (history kept longer is no harm).
async fn prune_forever(
    store: Store,
    retention: Option<std::time::Duration>,
    stopping: tokio_util::sync::CancellationToken,
) {
    let Some(retention) = retention else {
        return stopping.cancelled().await;
    };
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        let now = crate::wall_clock::now();
        let cutoff = now.saturating_sub(retention);
        match store.prune(cutoff, false).await {
            Ok(pruned) if pruned.is_empty() => {}
            Ok(pruned) => {
                let events: i64 = pruned.iter().map(|p| p.events).sum();
                tracing::info!(
                    jobs = pruned.len(),
                    events,
                    "pruned the history of jobs that ended before the retention"
                );
            }
            Err(e) => tracing::warn!("cannot prune old history, will try again in an hour: {e}"),
        }
    }
}
