//! The scheduler: polls every configured job on its interval and turns each answer into
//! a store write. `max_concurrent_polls` workers take due jobs from one deadline heap (a
//! slow or broken job holds one worker for at most the request timeout, never the
//! others). Intervals follow the job's state; failures back off exponentially with
//! jitter, Retry-After is honoured, and the failure events of DESIGN.md are raised.
//! Unchanged polls cost no transaction: their times are batched by [`PollTimes`].

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use rand::Rng as _;
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Config, PollPolicy, Webhook},
    detect::detect_changes,
    events::{Event, EventType},
    model::{JobName, JobSnapshot, Severity},
    notifier::{self, payload::describe_change, Waker},
    source::{JobTarget, PollOutcome, Source, SourceError},
    store::{Failed, JobId, Observed, Store, StoredJob},
    telemetry::Telemetry,
};

/// First retry delay after a failed poll; doubles per failure up to the job's interval.
const FAILURE_BACKOFF_INITIAL: Duration = Duration::from_secs(2);
/// The first poll of each job is spread over this much time (or its interval if shorter)
/// so that a thousand jobs do not fire in the same second.
const FIRST_POLL_SPREAD: Duration = Duration::from_secs(10);
/// Every interval is stretched or shrunk by up to this fraction.
const INTERVAL_JITTER: f64 = 0.1;
/// How often batched poll times are written.
pub const POLL_TIME_FLUSH: Duration = Duration::from_secs(5);
/// Wait after a failed database write before polling the job again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Last-polled times of unchanged polls, written in one transaction every
/// [`POLL_TIME_FLUSH`] instead of one per poll.
#[derive(Clone, Debug, Default)]
pub struct PollTimes(Arc<Mutex<HashMap<JobId, SystemTime>>>);

impl PollTimes {
    fn note(&self, job: JobId, at: SystemTime) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job, at);
    }

    /// Writes the pending times; on failure they are kept for the next flush.
    ///
    /// # Errors
    /// Database errors.
    pub async fn flush(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        let batch: Vec<(JobId, SystemTime)> =
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if let Err(e) = store.record_polls(&batch).await {
            let mut pending = self.0.lock().unwrap_or_else(|p| p.into_inner());
            for (job, at) in batch {
                pending.entry(job).or_insert(at);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// What every job task shares.
#[derive(Clone)]
pub struct Shared {
    /// The database.
    pub store: Store,
    /// Metrics and liveness.
    pub telemetry: Telemetry,
    /// Wakes the notifier after commits with outbox rows.
    pub waker: Waker,
    /// Batched poll times.
    pub poll_times: PollTimes,
    /// The webhooks new events are routed to (replaced on reload).
    pub webhooks: Arc<RwLock<Arc<Vec<Webhook>>>>,
}

/// Settings of one generation of job tasks (one config).
struct Settings {
    failure_threshold: u32,
    stop_after: Duration,
    failing: std::sync::atomic::AtomicI64,
}

/// Why the job tasks could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A source could not be built.
    #[error(transparent)]
    Source(#[from] crate::source::SourceSetupError),
    /// The stored state of a job could not be read.
    #[error("cannot load job {job}: {source}")]
    Store {
        /// The job.
        job: String,
        /// The error.
        source: crate::store::StoreError,
    },
}

/// Starts one task per configured job on `tracker`; they stop when `shutdown` is
/// cancelled (never in the middle of a poll or a write).
///
/// # Errors
/// A source cannot be built or a job's stored state cannot be read; nothing is started.
pub async fn spawn_jobs(
    config: &Config,
    shared: &Shared,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<usize, SchedulerError> {
    let mut sources = HashMap::new();
    for account in &config.accounts {
        sources.insert(
            account.name.clone(),
            Arc::new(Source::for_account(account, &config.daemon)?),
        );
    }
    let settings = Arc::new(Settings {
        failure_threshold: config.daemon.failure_threshold,
        stop_after: config.daemon.stop_after,
        failing: std::sync::atomic::AtomicI64::new(0),
    });
    let queue = Arc::new(DueQueue {
        state: Mutex::new(QueueState {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
        }),
        changed: Notify::new(),
    });
    let mut count = 0;
    for job in &config.jobs {
        let (Some(source), Some(account)) =
            (sources.get(&job.account), config.account(&job.account))
        else {
            continue;
        };
        let watched = WatchedJob::load(
            shared,
            job,
            source,
            config.poll_policy(job),
            account.store_bitlocker_keys,
        )
        .await?;
        if watched.stored.consecutive_failures > 0 {
            settings
                .failing
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        queue.add(watched);
        count += 1;
    }
    shared.telemetry.set_jobs(
        count as i64,
        settings.failing.load(std::sync::atomic::Ordering::Relaxed),
    );
    let mut workers = config.daemon.max_concurrent_polls.min(count);
    for account in config.discovering_accounts() {
        let Some(source) = sources.get(&account.name) else {
            continue;
        };
        workers = config.daemon.max_concurrent_polls;
        let known = config
            .jobs
            .iter()
            .filter(|j| j.account == account.name)
            .map(|j| j.name.clone())
            .collect();
        let discovery = Discovery {
            account: account.name.clone(),
            store_bitlocker_keys: account.store_bitlocker_keys,
            source: source.clone(),
            known,
            interval: config.daemon.poll_interval,
            policy: config.default_poll_policy(),
        };
        tracker.spawn(discovery.run(queue.clone(), shared.clone(), shutdown.clone()));
    }
    for _ in 0..workers {
        tracker.spawn(worker(
            queue.clone(),
            shared.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
    }
    Ok(count)
}

/// `jobs = "all"`: lists the account's jobs every poll interval and starts watching the
/// ones it has not seen, so jobs created later are picked up without a reload.
struct Discovery {
    account: String,
    store_bitlocker_keys: bool,
    source: Arc<Source>,
    known: std::collections::HashSet<JobName>,
    interval: Duration,
    policy: PollPolicy,
}

impl Discovery {
    async fn run(mut self, queue: Arc<DueQueue>, shared: Shared, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let names = match self.source.list_jobs().await {
                Some(Ok(names)) => names,
                Some(Err(e)) => {
                    tracing::warn!(account = %self.account, "cannot list jobs: {e}");
                    continue;
                }
                None => return,
            };
            for name in names {
                if self.known.contains(&name) {
                    continue;
                }
                let job = crate::config::JobConfig {
                    account: self.account.clone(),
                    name: name.clone(),
                    poll_interval: None,
                };
                match WatchedJob::load(
                    &shared,
                    &job,
                    &self.source,
                    self.policy.clone(),
                    self.store_bitlocker_keys,
                )
                .await
                {
                    Ok(watched) => {
                        tracing::info!(account = %self.account, job = %name, "discovered; now watching it");
                        queue.add(watched);
                        self.known.insert(name);
                        let (watched_count, failing, _) = shared.telemetry.counts();
                        shared.telemetry.set_jobs(watched_count + 1, failing);
                    }
                    Err(e) => {
                        tracing::warn!(account = %self.account, job = %name, "cannot start watching: {e}")
                    }
                }
            }
        }
    }
}

/// Jobs waiting for their next poll, earliest first. Workers take a due job out of its
/// slot, poll it, and put it back with its next due time: `max_concurrent_polls` tasks
/// and one heap instead of a task and a timer per job, so a busy daemon pays no
/// scheduling cost per poll beyond a heap operation (tests/benches/poll_unchanged.rs).
struct DueQueue {
    state: Mutex<QueueState>,
    /// Signalled when a job is put back due earlier than any other, for idle workers.
    changed: Notify,
}

impl DueQueue {
    /// Adds a job, first polled within [`FIRST_POLL_SPREAD`] (or its interval).
    fn add(&self, job: WatchedJob) {
        let spread = job.policy.base.min(FIRST_POLL_SPREAD);
        let due =
            tokio::time::Instant::now() + spread.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let index = state.slots.len();
            state.slots.push(Some(Box::new(job)));
            state.heap.push(Reverse((due, index)));
        }
        self.changed.notify_waiters();
    }
}

struct QueueState {
    heap: BinaryHeap<Reverse<(tokio::time::Instant, usize)>>,
    slots: Vec<Option<Box<WatchedJob>>>,
}

enum Next {
    Poll(usize, Box<WatchedJob>),
    WaitUntil(tokio::time::Instant),
    Idle,
}

async fn worker(
    queue: Arc<DueQueue>,
    shared: Shared,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    loop {
        let notified = queue.changed.notified();
        tokio::pin!(notified);
        let next = {
            let mut state = queue.state.lock().unwrap_or_else(|p| p.into_inner());
            // Registered before the lock is released, so a job put back meanwhile is
            // not missed.
            notified.as_mut().enable();
            match state.heap.peek().copied() {
                None => Next::Idle,
                Some(Reverse((due, _))) if due > tokio::time::Instant::now() => {
                    Next::WaitUntil(due)
                }
                Some(Reverse((_, index))) => {
                    state.heap.pop();
                    match state.slots[index].take() {
                        Some(job) => Next::Poll(index, job),
                        None => continue,
                    }
                }
            }
        };
        match next {
            Next::Poll(index, mut job) => {
                if shutdown.is_cancelled() {
                    return;
                }
                if job.retired(&settings) {
                    continue;
                }
                let delay = job.poll_once(&shared, &settings).await;
                let due = tokio::time::Instant::now() + delay;
                let earliest = {
                    let mut state = queue.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.slots[index] = Some(job);
                    let earliest = state
                        .heap
                        .peek()
                        .is_none_or(|Reverse((first, _))| due < *first);
                    state.heap.push(Reverse((due, index)));
                    earliest
                };
                if earliest {
                    queue.changed.notify_waiters();
                }
            }
            Next::WaitUntil(due) => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut notified => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            Next::Idle => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut notified => {}
                }
            }
        }
    }
}

struct WatchedJob {
    account: String,
    name: JobName,
    target: JobTarget,
    /// Shared by every job of the account (one connection pool).
    source: Arc<Source>,
    policy: PollPolicy,
    store_bitlocker_keys: bool,
    stored: StoredJob,
    auth_error_logged: bool,
}

impl WatchedJob {
    /// A job to watch, resumed from what the database remembers of it.
    async fn load(
        shared: &Shared,
        job: &crate::config::JobConfig,
        source: &Arc<Source>,
        policy: PollPolicy,
        store_bitlocker_keys: bool,
    ) -> Result<WatchedJob, SchedulerError> {
        let mut stored = shared
            .store
            .load_job(&job.account, job.name.as_str())
            .await
            .map_err(|source| SchedulerError::Store {
                job: format!("{}/{}", job.account, job.name),
                source,
            })?;
        if let Some(snapshot) = stored.snapshot.as_mut() {
            snapshot.document = watched_document_marker(&snapshot.document);
        }
        Ok(WatchedJob {
            account: job.account.clone(),
            name: job.name.clone(),
            target: source.target(&job.name),
            source: source.clone(),
            policy,
            store_bitlocker_keys,
            stored,
            auth_error_logged: false,
        })
    }
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::thread_rng().gen_range(1.0 - INTERVAL_JITTER..=1.0 + INTERVAL_JITTER))
}

impl WatchedJob {
    /// Polls once, records what came back, and says how long to wait before the next poll.
    async fn poll_once(&mut self, shared: &Shared, settings: &Settings) -> Duration {
        let started = Instant::now();
        let result = self
            .source
            .get_job(&self.target, self.stored.etag.as_ref())
            .await;
        let outcome = match &result {
            Ok(PollOutcome::Modified(_)) => "modified",
            Ok(PollOutcome::NotModified) => "not_modified",
            Err(e) => e.kind(),
        };
        shared.telemetry.poll(outcome, started.elapsed());
        shared.telemetry.scheduler_tick();
        let was_failing = self.stored.consecutive_failures > 0;
        let delay = match result {
            Ok(PollOutcome::Modified(observation)) => self.on_document(*observation, shared).await,
            Ok(PollOutcome::NotModified) => self.on_not_modified(shared).await,
            Err(error) => self.on_failure(error, shared, settings).await,
        };
        let is_failing = self.stored.consecutive_failures > 0;
        if was_failing != is_failing {
            let delta = if is_failing { 1 } else { -1 };
            let failing = settings
                .failing
                .fetch_add(delta, std::sync::atomic::Ordering::Relaxed)
                + delta;
            let (watched, _, _) = shared.telemetry.counts();
            shared.telemetry.set_jobs(watched, failing);
        }
        delay
    }

    /// A job terminal for longer than `stop_after` is no longer polled.
    fn retired(&self, settings: &Settings) -> bool {
        let Some(since) = self.stored.terminal_since else {
            return false;
        };
        let terminal_for = SystemTime::now().duration_since(since).unwrap_or_default();
        if terminal_for < settings.stop_after {
            return false;
        }
        let state = self
            .stored
            .snapshot
            .as_ref()
            .map_or("terminal", |s| s.state.as_str());
        tracing::info!(
            account = %self.account, job = %self.name,
            "job has been {state} for {}; no longer polled (daemon.stop_after)",
            humantime::format_duration(Duration::from_secs(terminal_for.as_secs()))
        );
        true
    }

    fn interval(&self) -> Duration {
        jittered(
            self.policy
                .interval(self.stored.snapshot.as_ref().map(|s| &s.state)),
        )
    }

    fn routes(&self, shared: &Shared, events: &[Event]) -> Vec<(usize, String)> {
        let webhooks = shared
            .webhooks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        notifier::route(&webhooks, &self.name, events)
    }

    /// Recovery events owed after a failure streak.
    fn recovery_events(&self) -> Vec<Event> {
        if self.stored.failing_alerted {
            vec![Event::change(
                EventType::JobPollRecovered,
                None,
                None,
                None,
                Severity::Info,
            )]
        } else {
            Vec::new()
        }
    }

    fn reset_failures(&mut self) {
        self.stored.consecutive_failures = 0;
        self.stored.failing_alerted = false;
        self.stored.not_found_alerted = false;
        self.auth_error_logged = false;
    }

    fn committed(&self, shared: &Shared, events: &[Event], outbox_rows: usize) {
        shared.telemetry.set_store_error(None);
        for event in events {
            shared.telemetry.event(event.event_type.as_str());
            let change = describe_change(
                event.event_type.as_str(),
                event.from.as_deref(),
                event.to.as_deref(),
            );
            match &event.drive_id {
                Some(drive) => {
                    tracing::info!(account = %self.account, job = %self.name, drive = %drive, severity = %event.severity, "{change}")
                }
                None => {
                    tracing::info!(account = %self.account, job = %self.name, severity = %event.severity, "{change}")
                }
            }
        }
        if outbox_rows > 0 {
            shared.waker.wake();
        }
    }

    fn write_failed(&self, shared: &Shared, error: &crate::store::StoreError) -> Duration {
        tracing::error!(account = %self.account, job = %self.name, "cannot record poll, will poll again: {error}");
        shared.telemetry.set_store_error(Some(error.to_string()));
        STORE_RETRY
    }

    async fn on_document(
        &mut self,
        observation: crate::source::Observation,
        shared: &Shared,
    ) -> Duration {
        let snapshot = &observation.snapshot;
        let mut events = detect_changes(self.stored.snapshot.as_ref(), snapshot);
        events.extend(self.recovery_events());
        let etag_changed = observation.etag != self.stored.etag;
        let marker = watched_document_marker(&snapshot.document);
        // Without an ETag (Resource Manager), "unchanged" means the watched fields are
        // equal (DESIGN.md): other fields (bytes copied, ...) move on every poll and must
        // not cost a transaction each time.
        let document_changed = observation.etag.is_some()
            && self
                .stored
                .snapshot
                .as_ref()
                .is_none_or(|s| s.document != marker);
        let now = SystemTime::now();
        shared.telemetry.job_seen(
            &self.account,
            self.name.as_str(),
            self.stored.snapshot.as_ref().map(|s| s.state.as_str()),
            snapshot.state.as_str(),
            snapshot.percent_complete,
        );
        if events.is_empty()
            && !etag_changed
            && !document_changed
            && self.stored.consecutive_failures == 0
        {
            tracing::debug!(account = %self.account, job = %self.name, "unchanged document");
            shared.poll_times.note(self.stored.id, now);
            return self.interval();
        }
        let outbox = self.routes(shared, &events);
        let written = shared
            .store
            .record_observation(Observed {
                job: self.stored.id,
                snapshot,
                etag: observation.etag.as_ref(),
                last_modified: observation.last_modified.as_deref(),
                events: &events,
                outbox: &outbox,
                store_bitlocker_keys: self.store_bitlocker_keys,
                at: now,
            })
            .await;
        if let Err(e) = written {
            return self.write_failed(shared, &e);
        }
        self.committed(shared, &events, outbox.len());
        self.reset_failures();
        if snapshot.state.is_terminal() {
            self.stored.terminal_since.get_or_insert(now);
        } else {
            self.stored.terminal_since = None;
        }
        self.stored.etag = observation.etag;
        // Keep only what the next comparison needs: the document's JSON tree is the
        // largest part of a snapshot and lives in the database already.
        self.stored.snapshot = Some(JobSnapshot {
            document: marker,
            bitlocker_keys: Vec::new(),
            ..observation.snapshot
        });
        self.interval()
    }

    async fn on_not_modified(&mut self, shared: &Shared) -> Duration {
        let now = SystemTime::now();
        tracing::debug!(account = %self.account, job = %self.name, "not modified");
        if self.stored.consecutive_failures == 0 {
            shared.poll_times.note(self.stored.id, now);
            return self.interval();
        }
        let events = self.recovery_events();
        let outbox = self.routes(shared, &events);
        match shared
            .store
            .record_recovery(self.stored.id, &events, &outbox, now)
            .await
        {
            Ok(_) => {
                self.committed(shared, &events, outbox.len());
                self.reset_failures();
                self.interval()
            }
            Err(e) => self.write_failed(shared, &e),
        }
    }

    async fn on_failure(
        &mut self,
        error: SourceError,
        shared: &Shared,
        settings: &Settings,
    ) -> Duration {
        let failures = self.stored.consecutive_failures.saturating_add(1);
        let message = error.to_string();
        let mut events = Vec::new();
        let mut not_found_alerted = self.stored.not_found_alerted;
        let mut failing_alerted = self.stored.failing_alerted;
        if error.is_not_found() {
            if !not_found_alerted {
                let purged = self
                    .stored
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| s.state.is_terminal());
                let (severity, text) = if purged {
                    (
                        Severity::Info,
                        format!("purged by the service after it ended ({message})"),
                    )
                } else {
                    (Severity::Error, message.clone())
                };
                events.push(Event::change(
                    EventType::JobNotFound,
                    None,
                    None,
                    Some(text),
                    severity,
                ));
                not_found_alerted = true;
            }
        } else if failures >= settings.failure_threshold && !failing_alerted {
            events.push(Event::change(
                EventType::JobPollFailing,
                None,
                None,
                Some(message.clone()),
                Severity::Error,
            ));
            failing_alerted = true;
        }
        if error.is_auth_refused() && !self.auth_error_logged {
            tracing::error!(
                account = %self.account, job = %self.name,
                "the service does not accept the credentials: check that the management certificate is uploaded to subscription and valid ({message})"
            );
            self.auth_error_logged = true;
        } else {
            tracing::warn!(account = %self.account, job = %self.name, failures, "poll failed: {message}");
        }
        let outbox = self.routes(shared, &events);
        let written = shared
            .store
            .record_failure(Failed {
                job: self.stored.id,
                error: &message,
                consecutive_failures: failures,
                failing_alerted,
                not_found_alerted,
                events: &events,
                outbox: &outbox,
                at: SystemTime::now(),
            })
            .await;
        if let Err(e) = written {
            return self.write_failed(shared, &e);
        }
        self.committed(shared, &events, outbox.len());
        self.stored.consecutive_failures = failures;
        self.stored.failing_alerted = failing_alerted;
        self.stored.not_found_alerted = not_found_alerted;
        if let Some(retry_after) = error.retry_after() {
            // Always honoured, even past the interval: the service asked for it.
            return retry_after;
        }
        if error.is_not_found() {
            // Still polled, slowly: a job may reappear (wrong name fixed, eventual
            // consistency), and a purged one costs one request an hour or so.
            return jittered(self.policy.base * 12);
        }
        let exponential = FAILURE_BACKOFF_INITIAL.saturating_mul(1u32 << (failures - 1).min(16));
        exponential
            .min(self.policy.base)
            .mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }
}

/// A stand-in for the document kept in memory: its hash, so that "did the document
/// change" stays answerable without keeping the whole tree.
fn watched_document_marker(document: &serde_json::Value) -> serde_json::Value {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    document.to_string().hash(&mut hasher);
    serde_json::Value::from(hasher.finish())
}
