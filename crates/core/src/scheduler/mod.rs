//! The scheduler: polls every configured job on its interval and turns each answer into
//! a store write. `max_concurrent_polls` workers take due jobs from one deadline heap (a
//! slow or broken job holds one worker for at most the request timeout, never the
//! others). Intervals follow the job's state; failures back off exponentially with
//! jitter, Retry-After is honoured, and the failure events (`job.poll_failing`, `job.not_found`) are raised (the
//! rules are [`crate::decide`]'s; [`job`] does the I/O around them). Unchanged polls cost
//! no transaction: the store batches their times.

mod discovery;
mod error_logs;
mod job;
mod next_poll;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, Webhook},
    id_hash::IdMap,
    notifier::Waker,
    source::Source,
    store::Writer,
    supervise::Supervisor,
    telemetry::{Telemetry, LIVENESS_SLACK},
};
use discovery::Discovery;
use error_logs::ErrorLogReader;
use job::WatchedJob;

/// The first poll of each job is spread over at least this much time (or its interval if
/// shorter) so that a thousand jobs do not fire in the same second.
const FIRST_POLL_SPREAD: Duration = Duration::from_secs(10);

/// First polls are writes of whole documents: at most this many a second on average, so
/// that 100,000 jobs start as an even load over their interval instead of a burst that
/// then comes back every interval.
const FIRST_POLLS_PER_SECOND: u32 = 200;

/// Over how long the first polls of `jobs` jobs added together are spread (each job's own
/// interval caps it, see [`DueQueue::add_all`]).
fn first_poll_spread(jobs: usize) -> Duration {
    let jobs = u32::try_from(jobs).unwrap_or(u32::MAX);
    (Duration::from_secs(1) * jobs / FIRST_POLLS_PER_SECOND).max(FIRST_POLL_SPREAD)
}

/// What every generation of job tasks shares for the life of the process.
#[derive(Clone)]
pub struct Shared {
    /// The database.
    pub store: Writer,
    /// Metrics and liveness.
    pub telemetry: Telemetry,
    /// Wakes the notifier after commits with outbox rows.
    pub waker: Waker,
}

/// Settings of one generation of job tasks (one config), replaced as a whole on reload.
struct Settings {
    failure_threshold: u32,
    stop_after: Duration,
    max_retry_after: Duration,
    /// Deadlines, stalls, reminders.
    clocks: crate::decide::clocks::ClockSettings,
    /// The webhooks new events are routed to.
    webhooks: Arc<Vec<Webhook>>,
    /// Reads the error logs of drives that ended with errors.
    error_logs: Arc<ErrorLogReader>,
}

/// The deliveries for `events` of `job` (row id, account, name): one per webhook that
/// routes each, none while the job is muted (`iewatch mute`; the events are still
/// recorded). The mute is read only when a channel wants one. Polls and the error-log
/// reader both route through here.
async fn deliveries_for(
    shared: &Shared,
    (id, account, name): (crate::store::JobId, &str, &crate::model::JobName),
    webhooks: &[Webhook],
    events: &[crate::events::Event],
    now: crate::moment::Moment,
) -> Vec<crate::events::OutboxEntry> {
    let outbox = crate::notifier::route(webhooks, name, events);
    if outbox.is_empty() {
        return outbox;
    }
    if let Ok(attention) = shared.store.attention(id).await {
        if attention.is_muted(now) {
            tracing::info!(account = %account, job = %name, "muted: {} event(s) recorded, not sent", events.len());
            return Vec::new();
        }
    }
    outbox
}

/// Why the job tasks could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A source could not be built.
    #[error(transparent)]
    Source(#[from] crate::source::SourceSetupError),
}

/// Every account's source (its client and connection pool), by account name. Built
/// before a generation starts, and before a reload stops the running one, so a config
/// whose sources cannot be built is refused while the old generation still runs.
pub struct Sources(HashMap<String, Arc<Source>>, Arc<ErrorLogReader>);

impl Sources {
    /// Builds the source of every account of `config`.
    ///
    /// # Errors
    /// The first account whose source cannot be built.
    pub fn for_config(config: &Config) -> Result<Sources, SchedulerError> {
        let mut sources = HashMap::new();
        let caches = crate::identity::TokenCaches::new(crate::identity::Env::process());
        for account in &config.accounts {
            let source = Source::for_account(account, &config.daemon, &caches)?;
            sources.insert(account.name.clone(), Arc::new(source));
        }
        let reader = ErrorLogReader::for_config(config, &caches);
        Ok(Sources(sources, Arc::new(reader)))
    }
}

/// Starts the poll workers (and discovery) of one generation under `supervisor`; they
/// stop when its stop signal is cancelled, never in the middle of a poll or a write.
/// Nothing here touches the database: each job loads what the database remembers of it
/// at its first poll, so a reload can never fail because the database is busy, and never
/// loads a job's state before the generation it replaces has stopped writing. Returns
/// how many configured jobs are watched.
pub fn spawn_jobs(
    config: &Config,
    sources: &Sources,
    shared: &Shared,
    supervisor: &Supervisor,
) -> usize {
    let (sources, error_logs) = (&sources.0, sources.1.clone());
    let settings = Arc::new(Settings {
        failure_threshold: config.daemon.failure_threshold,
        stop_after: config.daemon.stop_after,
        max_retry_after: config.daemon.max_retry_after,
        clocks: config.daemon.clocks.clone(),
        webhooks: Arc::new(config.webhooks.clone()),
        error_logs,
    });
    let queue = Arc::new(DueQueue::new());
    let jobs: Vec<WatchedJob> = config
        .jobs
        .iter()
        .filter_map(|job| {
            let source = sources.get(&job.account)?;
            let account = config.account(&job.account)?;
            Some(WatchedJob::new(
                &job.account,
                &job.name,
                source,
                job.policy.clone(),
                account.store_bitlocker_keys,
            ))
        })
        .collect();
    let count = jobs.len();
    queue.add_all(jobs);
    // Failing jobs are counted as they load; discovery adds the jobs it finds.
    shared.telemetry.set_jobs(count, 0);
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
            policy: config.daemon.default_poll_policy(),
        };
        let run = discovery.run(queue.clone(), shared.clone(), supervisor.stopping().clone());
        supervisor.spawn(format!("discovery of account {}", account.name), run);
    }
    for i in 0..workers {
        let work = worker(
            queue.clone(),
            shared.clone(),
            settings.clone(),
            supervisor.stopping().clone(),
        );
        supervisor.spawn(format!("poll worker {i}"), work);
    }
    let (probe_queue, timeout) = (queue.clone(), config.daemon.request_timeout);
    shared
        .telemetry
        .set_probe("scheduler", Arc::new(move || probe_queue.stuck(timeout)));
    count
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
    fn new() -> DueQueue {
        DueQueue {
            state: Mutex::new(QueueState {
                heap: BinaryHeap::new(),
                slots: Vec::new(),
                in_flight: IdMap::default(),
                last_done: tokio::time::Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    /// Adds jobs that start being watched together (the config's, or those one listing
    /// found), their first polls spread by their number ([`first_poll_spread`]), each
    /// within its own interval.
    fn add_all(&self, jobs: Vec<WatchedJob>) {
        let spread = first_poll_spread(jobs.len());
        let now = tokio::time::Instant::now();
        let mut rng = rand::thread_rng();
        {
            let mut state = self.lock();
            for job in jobs {
                let spread = job.base_interval().min(spread);
                let due = now + spread.mul_f64(rng.gen_range(0.0..1.0));
                let index = state.slots.len();
                state.slots.push(Some(Box::new(job)));
                state.heap.push(Reverse((due, index)));
            }
        }
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watchdog's view of the pollers: stuck when a poll has run far past the request
    /// timeout, or when a job is overdue and no poll has finished for that long either
    /// (a slow service makes jobs late, but the pollers still finish polls).
    fn stuck(&self, request_timeout: Duration) -> Option<String> {
        let allowance = request_timeout + LIVENESS_SLACK;
        let now = tokio::time::Instant::now();
        let state = self.lock();
        if let Some(started) = state.in_flight.values().min() {
            let running = now.saturating_duration_since(*started);
            if running > allowance {
                return Some(format!("a poll has run for {}s", running.as_secs()));
            }
        }
        let Reverse((due, _)) = state.heap.peek()?;
        let late = now.saturating_duration_since(*due);
        let idle = now.saturating_duration_since(state.last_done);
        (late > LIVENESS_SLACK && idle > allowance).then(|| {
            format!(
                "jobs are {}s overdue and no poll finished for {}s",
                late.as_secs(),
                idle.as_secs()
            )
        })
    }
}

struct QueueState {
    heap: BinaryHeap<Reverse<(tokio::time::Instant, usize)>>,
    slots: Vec<Option<Box<WatchedJob>>>,
    /// Slots being polled, and since when.
    in_flight: IdMap<usize, tokio::time::Instant>,
    /// When the last poll finished.
    last_done: tokio::time::Instant,
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
        // Made before the heap is read: it completes on any `notify_waiters` from then
        // on, so a job put back meanwhile is not missed (enabling it, which takes the
        // Notify's own lock, would add nothing; a worker that finds a due job never
        // waits on it).
        let notified = queue.changed.notified();
        tokio::pin!(notified);
        let next = {
            let mut state = queue.lock();
            match state.heap.peek().copied() {
                None => Next::Idle,
                Some(Reverse((due, _))) if due > tokio::time::Instant::now() => {
                    Next::WaitUntil(due)
                }
                Some(Reverse((_, index))) => {
                    state.heap.pop();
                    match state.slots[index].take() {
                        Some(job) => {
                            state.in_flight.insert(index, tokio::time::Instant::now());
                            Next::Poll(index, job)
                        }
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
                let polled = job.poll_once(&shared, &settings).await;
                let now = tokio::time::Instant::now();
                let mut state = queue.lock();
                state.in_flight.remove(&index);
                state.last_done = now;
                // A retired job leaves the queue.
                let Some(delay) = polled else { continue };
                // Delays are bounded by `next_poll::MAX_DELAY`, far from the end of time.
                let due = now.checked_add(delay).unwrap_or(now);
                let earliest = {
                    state.slots[index] = Some(job);
                    let earliest = state
                        .heap
                        .peek()
                        .is_none_or(|Reverse((first, _))| due < *first);
                    state.heap.push(Reverse((due, index)));
                    earliest
                };
                drop(state);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_polls_spread_at_least_ten_seconds_and_more_for_many_jobs() {
        assert_eq!(first_poll_spread(0), FIRST_POLL_SPREAD);
        assert_eq!(first_poll_spread(1_000), FIRST_POLL_SPREAD);
        assert_eq!(first_poll_spread(10_000), Duration::from_secs(50));
        assert_eq!(first_poll_spread(100_000), Duration::from_secs(500));
        assert!(first_poll_spread(usize::MAX) > Duration::from_secs(86_400));
    }
}
