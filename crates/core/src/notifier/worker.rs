//! One webhook's worker. Its outbox is a set of lanes, one per job with pending
//! deliveries (`outbox_lanes`). The worker starts a task for every lane that is due, up
//! to [`MAX_LANES`] at once; a lane sends its deliveries one after the other in event
//! order, records up to [`LANE_BATCH`] outcomes in one transaction, and stops at the
//! first one that must wait for a retry. So one job's backlog drains at the endpoint's
//! pace, a slow or failing job holds only its own lane, and an endpoint that is down
//! costs a query per retry wave, nothing in between.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::attempt;
use crate::{
    config::{Channel, Webhook},
    http_client::HttpsClient,
    store::{Attempt, JobId, Writer},
    telemetry::{now_ms, Telemetry, LIVENESS_SLACK},
};

/// Most lanes of one webhook in flight at once (concurrent requests to one endpoint).
const MAX_LANES: usize = 64;
/// Deliveries a lane sends before it records their outcomes together: one fsync per
/// batch rather than per delivery. A crash in between sends them again (at-least-once,
/// under the same webhook-id).
const LANE_BATCH: u32 = 64;
/// Longest sleep with nothing due: a safety net for a change to the outbox that nothing
/// announced (the scheduler wakes the workers, `iewatch redeliver` nudges them; see
/// [`super::nudge`]).
pub(super) const IDLE_RECHECK: Duration = Duration::from_secs(300);
/// Pause after a database error before trying again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(2);

/// What every lane of one webhook shares.
#[derive(Clone)]
struct Lanes {
    store: Writer,
    webhook: Arc<Webhook>,
    client: HttpsClient,
    /// E-mail's connections kept between messages (empty for other channels).
    smtp: super::email::Parked,
    telemetry: Telemetry,
    shutdown: CancellationToken,
    /// Cancelled when the endpoint answered 410 Gone.
    gone: CancellationToken,
    /// The attempts under way, for the liveness probe.
    in_flight: InFlight,
}

/// When each lane's attempt under way started (ms since the epoch), so that a lane held
/// past its deadline is a liveness failure naming the webhook and the job, never a
/// silent one. Every attempt is bounded by the webhook's timeout (`super::deliver`);
/// this sees the ones that are not because something blocked the runtime.
#[derive(Clone, Default)]
struct InFlight(Arc<std::sync::Mutex<std::collections::HashMap<JobId, u64>>>);

impl InFlight {
    fn start(&self, job: JobId) -> u64 {
        let now = now_ms().max(1);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job, now);
        now
    }

    fn end(&self, job: JobId, started: u64) {
        let mut lanes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lanes.get(&job) == Some(&started) {
            lanes.remove(&job);
        }
    }

    /// The lane whose attempt has been under way longest, and since when.
    fn oldest(&self) -> Option<(JobId, u64)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .min_by_key(|(_, started)| **started)
            .map(|(job, started)| (*job, *started))
    }
}

/// Runs one webhook's lanes until `shutdown`; lanes in flight finish their delivery.
///
/// # Errors
/// A lane task panicked (a bug): the worker stops so that the supervisor sees it.
pub(super) async fn run(
    store: Writer,
    webhook: Webhook,
    client: HttpsClient,
    mut wake: watch::Receiver<u64>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let lanes = Lanes {
        store,
        webhook: Arc::new(webhook),
        client,
        smtp: super::email::Parked::default(),
        telemetry,
        shutdown,
        gone: CancellationToken::new(),
        in_flight: InFlight::default(),
    };
    let probe = format!("webhook {}", lanes.webhook.name);
    let round = register_probe(&lanes, &probe);
    let mut running: HashSet<JobId> = HashSet::new();
    let mut tasks: JoinSet<JobId> = JoinSet::new();
    loop {
        wake.borrow_and_update();
        round.store(now_ms().max(1), Ordering::Relaxed);
        if lanes.gone.is_cancelled() {
            tracing::error!(
                webhook = %lanes.webhook.name,
                "endpoint answered 410 Gone: webhook disabled until the next reload or restart"
            );
            lanes.telemetry.remove_probes(&probe);
            break;
        }
        let pause = lanes.start_due(&mut running, &mut tasks).await;
        // Waiting is not being stuck.
        round.store(0, Ordering::Relaxed);
        tokio::select! {
            () = lanes.shutdown.cancelled() => break,
            _ = wake.changed() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                running.remove(&done.map_err(|e| format!("a delivery lane failed: {e}"))?);
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
    // Lanes stop between deliveries at shutdown and record what they sent.
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| format!("a delivery lane failed: {e}"))?;
    }
    if !lanes.shutdown.is_cancelled() {
        // Gone: nothing more to do until the generation stops.
        lanes.shutdown.cancelled().await;
    }
    Ok(())
}

/// The worker's liveness probe: a round (reading the outbox, starting lanes) and every
/// lane's attempt must end within the webhook's timeout plus slack; waiting between
/// rounds or for a retry is not being stuck. Returns when the round under way started
/// (0: waiting), which the worker keeps.
fn register_probe(lanes: &Lanes, probe: &str) -> Arc<AtomicU64> {
    let round = Arc::new(AtomicU64::new(now_ms()));
    let allowance = lanes.webhook.timeout + LIVENESS_SLACK;
    let (started, name) = (round.clone(), lanes.webhook.name.clone());
    let in_flight = lanes.in_flight.clone();
    lanes.telemetry.set_probe(
        probe,
        Arc::new(move || {
            let started = started.load(Ordering::Relaxed);
            let since = now_ms().saturating_sub(started);
            if started != 0 && Duration::from_millis(since) > allowance {
                return Some(format!(
                    "webhook {name} has been stuck in one round for {}s",
                    since / 1000
                ));
            }
            let (job, started) = in_flight.oldest()?;
            let since = now_ms().saturating_sub(started);
            (Duration::from_millis(since) > allowance).then(|| {
                format!(
                    "webhook {name}: a delivery of job #{} has been under way for {}s \
                     (its timeout is {}s)",
                    job.0,
                    since / 1000,
                    allowance.saturating_sub(LIVENESS_SLACK).as_secs()
                )
            })
        }),
    );
    round
}

impl Lanes {
    /// Starts every due lane that is not running yet (up to [`MAX_LANES`]); returns how
    /// long to wait before the next lane is due.
    async fn start_due(
        &self,
        running: &mut HashSet<JobId>,
        tasks: &mut JoinSet<JobId>,
    ) -> Duration {
        let limit = u32::try_from(MAX_LANES + running.len()).unwrap_or(u32::MAX);
        let lanes = match self.store.lanes(&self.webhook.name, limit).await {
            Ok(lanes) => lanes,
            Err(e) => {
                tracing::error!(webhook = %self.webhook.name, "cannot read the outbox: {e}");
                return STORE_ERROR_PAUSE;
            }
        };
        let now = crate::wall_clock::now();
        for (job, due) in lanes {
            if running.contains(&job) {
                continue;
            }
            if let Some(wait) = due.checked_since(now).filter(|w| !w.is_zero()) {
                // Sorted by due time: every later lane waits at least this long.
                return wait.min(IDLE_RECHECK);
            }
            if running.len() >= MAX_LANES {
                break;
            }
            running.insert(job);
            tasks.spawn(self.clone().drain(job));
        }
        IDLE_RECHECK
    }

    /// Sends one lane's deliveries in order until it is empty, one must wait for a
    /// retry, the endpoint is gone, or the daemon stops.
    async fn drain(self, job: JobId) -> JobId {
        if let Channel::Email(digest) = &self.webhook.channel {
            if digest.digest_every.is_some() {
                return self.drain_digest(job, digest).await;
            }
        }
        let name = &self.webhook.name;
        // The head alone first: while an endpoint is down, a retry wave reads one
        // delivery per lane, not a batch.
        let mut batch = 1;
        while !self.shutdown.is_cancelled() && !self.gone.is_cancelled() {
            let items = match self.store.lane_deliveries(name, job, batch).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(webhook = %name, "cannot read the outbox: {e}");
                    self.pause().await;
                    break;
                }
            };
            if self.past_lease().await {
                break;
            }
            let mut outcomes = Vec::with_capacity(items.len());
            let mut stop = items.is_empty();
            for item in &items {
                if !self.store.within_lease() {
                    stop = true;
                    break;
                }
                let started = self.in_flight.start(job);
                let (outcome, gone) = attempt(
                    &self.client,
                    &self.smtp,
                    &self.webhook,
                    &self.store,
                    job,
                    item,
                )
                .await;
                self.in_flight.end(job, started);
                self.telemetry.delivery(match outcome {
                    Attempt::Delivered { .. } => "delivered",
                    Attempt::Retry { .. } => "retry",
                    Attempt::Failed { .. } => "failed",
                });
                if gone {
                    self.gone.cancel();
                }
                stop = matches!(outcome, Attempt::Retry { .. }) || gone;
                outcomes.push((item.id, outcome));
                if stop || self.shutdown.is_cancelled() {
                    break;
                }
            }
            if !self.record(job, &outcomes).await {
                break;
            }
            if stop {
                break;
            }
            batch = LANE_BATCH;
        }
        job
    }

    /// `digest_every`: once the lane's oldest pending alert is that old, all its pending
    /// alerts (up to a batch) go in one message; until then the lane waits.
    async fn drain_digest(&self, job: JobId, settings: &crate::config::EmailSettings) -> JobId {
        let name = &self.webhook.name;
        let every = settings.digest_every.unwrap_or_default();
        while !self.shutdown.is_cancelled() {
            let items = match self.store.lane_deliveries(name, job, LANE_BATCH).await {
                Ok(items) if !items.is_empty() => items,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(webhook = %name, "cannot read the outbox: {e}");
                    self.pause().await;
                    break;
                }
            };
            let now = crate::wall_clock::now();
            let due = items[0].event.observed_at.saturating_add(every);
            if due > now {
                if let Err(e) = self.store.postpone_lane(name, job, due).await {
                    tracing::error!(webhook = %name, "cannot postpone a digest: {e}");
                    self.pause().await;
                }
                break;
            }
            if self.past_lease().await {
                break;
            }
            let started = self.in_flight.start(job);
            let outcome =
                super::attempt_digest(&self.client, &self.smtp, &self.webhook, &items).await;
            self.in_flight.end(job, started);
            self.telemetry.delivery(match outcome {
                Attempt::Delivered { .. } => "delivered",
                Attempt::Retry { .. } => "retry",
                Attempt::Failed { .. } => "failed",
            });
            let retry = matches!(outcome, Attempt::Retry { .. });
            let outcomes: Vec<(i64, Attempt)> =
                items.iter().map(|i| (i.id, outcome.clone())).collect();
            if !self.record(job, &outcomes).await {
                break;
            }
            if retry {
                break;
            }
        }
        job
    }

    /// Records a lane's outcomes; false (after a pause) when the database refused them:
    /// those deliveries are sent again (at-least-once).
    async fn record(&self, job: JobId, outcomes: &[(i64, Attempt)]) -> bool {
        let name = &self.webhook.name;
        match self
            .store
            .record_lane(name, job, outcomes, crate::wall_clock::now())
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(webhook = %name, "cannot record delivery outcomes: {e}");
                self.pause().await;
                false
            }
        }
    }

    /// True (after a pause) when this daemon is past its lease, paused or cut off: a
    /// standby may be sending these alerts now, and the lease keeper is about to end
    /// this process (or renew).
    async fn past_lease(&self) -> bool {
        if self.store.within_lease() {
            return false;
        }
        self.pause().await;
        true
    }

    async fn pause(&self) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(STORE_ERROR_PAUSE) => {}
        }
    }
}
