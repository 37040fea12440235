//! The scheduler: polls every configured job on its interval and turns each answer into
//! a store write. `max_concurrent_polls` workers take due jobs from one deadline heap (a
//! slow or broken job holds one worker for at most the request timeout, never the
//! others). Intervals follow the job's state; failures back off exponentially with
//! jitter, Retry-After is honoured, and the failure events of DESIGN.md are raised (the
//! rules are [`crate::decide`]'s; [`job`] does the I/O around them). Unchanged polls cost
//! no transaction: the store batches their times.

mod discovery;
mod job;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng as _;
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Config, Webhook},
    notifier::Waker,
    source::Source,
    store::Store,
    telemetry::Telemetry,
};
use discovery::Discovery;
use job::WatchedJob;

/// The first poll of each job is spread over this much time (or its interval if shorter)
/// so that a thousand jobs do not fire in the same second.
const FIRST_POLL_SPREAD: Duration = Duration::from_secs(10);

/// What every generation of job tasks shares for the life of the process.
#[derive(Clone)]
pub struct Shared {
    /// The database.
    pub store: Store,
    /// Metrics and liveness.
    pub telemetry: Telemetry,
    /// Wakes the notifier after commits with outbox rows.
    pub waker: Waker,
}

/// Settings of one generation of job tasks (one config), replaced as a whole on reload.
struct Settings {
    failure_threshold: u32,
    stop_after: Duration,
    /// The webhooks new events are routed to.
    webhooks: Vec<Webhook>,
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
        webhooks: config.webhooks.clone(),
    });
    let queue = Arc::new(DueQueue {
        state: Mutex::new(QueueState {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
        }),
        changed: Notify::new(),
    });
    let (mut count, mut failing) = (0, 0);
    for job in &config.jobs {
        let (Some(source), Some(account)) =
            (sources.get(&job.account), config.account(&job.account))
        else {
            continue;
        };
        let watched = WatchedJob::load(
            shared,
            &job.account,
            &job.name,
            source,
            job.policy.clone(),
            account.store_bitlocker_keys,
        )
        .await?;
        failing += usize::from(watched.is_failing());
        queue.add(watched);
        count += 1;
    }
    // A new generation starts from what the database says; discovery and polls then
    // move the gauges up and down.
    shared.telemetry.set_jobs(count, failing);
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

/// Jobs waiting for their next poll, earliest first. Workers take a due job out of its
/// slot, poll it, and put it back with its next due time: `max_concurrent_polls` tasks
/// and one heap instead of a task and a timer per job, so a busy daemon pays no
/// scheduling cost per poll beyond a heap operation (tests/benches/poll_unchanged.rs).
pub(super) struct DueQueue {
    state: Mutex<QueueState>,
    /// Signalled when a job is put back due earlier than any other, for idle workers.
    changed: Notify,
}

impl DueQueue {
    /// Adds a job, first polled within [`FIRST_POLL_SPREAD`] (or its interval).
    fn add(&self, job: WatchedJob) {
        let spread = job.base_interval().min(FIRST_POLL_SPREAD);
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
                let now = tokio::time::Instant::now();
                // Delays are bounded by `job::MAX_DELAY`, far from the end of time.
                let due = now.checked_add(delay).unwrap_or(now);
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
