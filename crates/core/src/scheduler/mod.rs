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

/// Every account's source (its client and connection pool), by account name (the name
/// shared by the account's jobs). Built before a generation starts, and before a reload
/// stops the running one, so a config whose sources cannot be built is refused while the
/// old generation still runs.
pub struct Sources(HashMap<Arc<str>, Arc<Source>>, Arc<ErrorLogReader>);

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
            sources.insert(Arc::from(account.name.as_str()), Arc::new(source));
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
    let jobs: Vec<WatchedJob> = config
        .jobs
        .iter()
        .filter_map(|job| {
            let (name, source) = sources.get_key_value(job.account.as_str())?;
            let account = config.account(&job.account)?;
            Some(WatchedJob::new(
                name,
                &job.name,
                source,
                job.policy.clone(),
                account.store_bitlocker_keys,
            ))
        })
        .collect();
    let count = jobs.len();
    let discovering: Vec<_> = config
        .discovering_accounts()
        .filter_map(|account| {
            let (name, source) = sources.get_key_value(account.name.as_str())?;
            Some((account, name, source))
        })
        .collect();
    // Discovery may add jobs to a config that names none.
    let workers = if discovering.is_empty() {
        config.daemon.max_concurrent_polls.min(count)
    } else {
        config.daemon.max_concurrent_polls
    };
    let queue = Arc::new(DueQueue::new(workers));
    queue.add_all(jobs);
    // Failing jobs are counted as they load; discovery adds the jobs it finds.
    shared.telemetry.set_jobs(count, 0);
    for (account, name, source) in discovering {
        spawn_discovery(config, (account, name, source), &queue, shared, supervisor);
    }
    for i in 0..workers {
        let work = worker(
            i,
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

/// Starts the discovery of `account` (`jobs = "all"`), adding the jobs it finds to
/// `queue`.
fn spawn_discovery(
    config: &Config,
    (account, name, source): (&crate::config::Account, &Arc<str>, &Arc<Source>),
    queue: &Arc<DueQueue>,
    shared: &Shared,
    supervisor: &Supervisor,
) {
    let known = config
        .jobs
        .iter()
        .filter(|j| j.account == account.name)
        .map(|j| j.name.clone())
        .collect();
    let discovery = Discovery {
        account: name.clone(),
        store_bitlocker_keys: account.store_bitlocker_keys,
        source: source.clone(),
        known,
        interval: config.daemon.poll_interval,
        policy: config.daemon.default_poll_policy(),
    };
    let run = discovery.run(queue.clone(), shared.clone(), supervisor.stopping().clone());
    supervisor.spawn(format!("discovery of account {}", account.name), run);
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
    fn new(workers: usize) -> DueQueue {
        DueQueue {
            state: Mutex::new(QueueState::new(workers, tokio::time::Instant::now())),
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
                let due = state.key(now + spread.mul_f64(rng.gen_range(0.0..1.0)));
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
        self.lock().stuck(allowance, tokio::time::Instant::now())
    }
}

struct QueueState {
    /// Due times (nanoseconds from `epoch`) and slots: 16 bytes an entry, compared as
    /// two integers; every poll pops and pushes one.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// What the heap's due times count from.
    epoch: tokio::time::Instant,
    slots: Vec<Option<Box<WatchedJob>>>,
    /// Since when each worker has been polling, if it is.
    in_flight: Vec<Option<tokio::time::Instant>>,
    /// When the last poll finished.
    last_done: tokio::time::Instant,
}

enum Next {
    Poll(usize, Box<WatchedJob>),
    WaitUntil(tokio::time::Instant),
    Idle,
}

impl QueueState {
    fn new(workers: usize, epoch: tokio::time::Instant) -> QueueState {
        QueueState {
            heap: BinaryHeap::new(),
            epoch,
            slots: Vec::new(),
            in_flight: vec![None; workers],
            last_done: epoch,
        }
    }

    /// `due` as the heap keeps it (584 years of nanoseconds from `epoch`).
    fn key(&self, due: tokio::time::Instant) -> u64 {
        let since = due.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    /// The instant of a heap key.
    fn instant(&self, key: u64) -> tokio::time::Instant {
        self.epoch + Duration::from_nanos(key)
    }

    /// See [`DueQueue::stuck`]: at `now`, a poll may run for `allowance`.
    fn stuck(&self, allowance: Duration, now: tokio::time::Instant) -> Option<String> {
        if let Some(started) = self.in_flight.iter().flatten().min() {
            let running = now.saturating_duration_since(*started);
            if running > allowance {
                return Some(format!("a poll has run for {}s", running.as_secs()));
            }
        }
        let Reverse((due, _)) = self.heap.peek()?;
        let late = now.saturating_duration_since(self.instant(*due));
        let idle = now.saturating_duration_since(self.last_done);
        (late > LIVENESS_SLACK && idle > allowance).then(|| {
            format!(
                "jobs are {}s overdue and no poll finished for {}s",
                late.as_secs(),
                idle.as_secs()
            )
        })
    }

    /// Takes the earliest job out of its slot if it is due at `now`, `worker` polling it
    /// from then.
    fn take_due(&mut self, worker: usize, now: tokio::time::Instant) -> Next {
        let key = self.key(now);
        loop {
            match self.heap.peek().copied() {
                None => return Next::Idle,
                Some(Reverse((due, _))) if due > key => {
                    return Next::WaitUntil(self.instant(due));
                }
                Some(Reverse((_, index))) => {
                    self.heap.pop();
                    if let Some(job) = self.slots[index].take() {
                        if let Some(started) = self.in_flight.get_mut(worker) {
                            *started = Some(now);
                        }
                        self.warm_next();
                        return Next::Poll(index, job);
                    }
                }
            }
        }
    }

    /// Has the CPU fetch the next due job's first lines: when polls run back to back
    /// a worker takes it within microseconds, and its first read was an unchanged
    /// poll's costliest instruction (thousands of jobs do not stay in cache between
    /// two polls of one). When it is not due soon, the hint cost nothing.
    fn warm_next(&self) {
        if let Some(Reverse((_, next))) = self.heap.peek() {
            if let Some(Some(job)) = self.slots.get(*next) {
                job.prefetch();
            }
        }
    }

    /// `worker` is done with the job of slot `index` at `now`: it goes back due after
    /// `delay`, or leaves the queue (None: retired). True when it is now the earliest.
    fn put_back(
        &mut self,
        worker: usize,
        (index, job): (usize, Box<WatchedJob>),
        delay: Option<Duration>,
        now: tokio::time::Instant,
    ) -> bool {
        if let Some(started) = self.in_flight.get_mut(worker) {
            *started = None;
        }
        self.last_done = now;
        let Some(delay) = delay else { return false };
        // Delays are bounded by `next_poll::MAX_DELAY`, far from the end of time.
        let due = self.key(now.checked_add(delay).unwrap_or(now));
        self.slots[index] = Some(job);
        let earliest = self
            .heap
            .peek()
            .is_none_or(|Reverse((first, _))| due < *first);
        self.heap.push(Reverse((due, index)));
        earliest
    }
}

/// One poll worker (number `worker`): takes due jobs and polls them one at a time. A job
/// is put back and the next due one taken under one lock, so a busy worker takes the
/// queue's lock once a poll; only when none is due does it wait ([`next_due`]).
async fn worker(
    worker: usize,
    queue: Arc<DueQueue>,
    shared: Shared,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    let mut ready = None;
    // Handed over before the worker waits, and when it stops (dropped).
    let mut notes = shared.store.poll_notes();
    loop {
        let taken = match ready.take() {
            Some(taken) => Some(taken),
            None => {
                notes.hand_over();
                next_due(&queue, worker, &shutdown).await
            }
        };
        let Some((index, mut job)) = taken else {
            return;
        };
        if shutdown.is_cancelled() {
            return;
        }
        let polled = job.poll_once(&shared, &settings, &mut notes).await;
        let now = tokio::time::Instant::now();
        let (earliest, next) = {
            let mut state = queue.lock();
            let earliest = state.put_back(worker, (index, job), polled, now);
            (earliest, state.take_due(worker, now))
        };
        if earliest {
            queue.changed.notify_waiters();
        }
        // Not due: the worker waits in `next_due`, its wakeup armed before it looks.
        if let Next::Poll(index, job) = next {
            ready = Some((index, job));
        }
    }
}

/// Waits for a due job and takes it for `worker`; None once `shutdown` is cancelled.
async fn next_due(
    queue: &DueQueue,
    worker: usize,
    shutdown: &CancellationToken,
) -> Option<(usize, Box<WatchedJob>)> {
    loop {
        // Made before the heap is read: it completes on any `notify_waiters` from then
        // on, so a job put back meanwhile is not missed (enabling it, which takes the
        // Notify's own lock, would add nothing; a worker that finds a due job never
        // waits on it).
        let notified = queue.changed.notified();
        tokio::pin!(notified);
        let next = queue.lock().take_due(worker, tokio::time::Instant::now());
        let due = match next {
            Next::Poll(index, job) => return Some((index, job)),
            Next::WaitUntil(due) => Some(due),
            Next::Idle => None,
        };
        let sleep = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = &mut notified => {}
            () = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_polling_past_its_allowance_or_jobs_overdue_with_none_finished_is_stuck() {
        let start = tokio::time::Instant::now();
        let second = Duration::from_secs(1);
        let allowance = 40 * second;
        let mut state = QueueState::new(2, start);
        assert_eq!(
            state.stuck(allowance, start + 100 * second),
            None,
            "nothing to do"
        );
        state.in_flight[1] = Some(start + 10 * second);
        assert_eq!(state.stuck(allowance, start + 50 * second), None);
        assert_eq!(
            state.stuck(allowance, start + 51 * second).as_deref(),
            Some("a poll has run for 41s")
        );
        state.in_flight[1] = None;
        state.heap.push(Reverse((state.key(start + 5 * second), 0)));
        assert_eq!(
            state.stuck(allowance, start + 35 * second),
            None,
            "late, not stuck"
        );
        assert_eq!(
            state.stuck(allowance, start + 41 * second).as_deref(),
            Some("jobs are 36s overdue and no poll finished for 41s")
        );
        state.last_done = start + 40 * second;
        assert_eq!(
            state.stuck(allowance, start + 41 * second),
            None,
            "polls finish"
        );
    }

    #[test]
    fn first_polls_spread_at_least_ten_seconds_and_more_for_many_jobs() {
        assert_eq!(first_poll_spread(0), FIRST_POLL_SPREAD);
        assert_eq!(first_poll_spread(1_000), FIRST_POLL_SPREAD);
        assert_eq!(first_poll_spread(10_000), Duration::from_secs(50));
        assert_eq!(first_poll_spread(100_000), Duration::from_secs(500));
        assert!(first_poll_spread(usize::MAX) > Duration::from_secs(86_400));
    }
}
