//! The error-log reader: when a job's drive (or Data Box destination account) ends with
//! errors, its log is read off the poll path, summarised, and recorded once as a
//! `drive.errors` event with its deliveries. Never silent: a log that cannot be read is
//! reported too, with why and what to fix; a transient failure is tried again at later
//! polls, [`MAX_TRIES`] times at most, then reported as unreadable.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::Semaphore;

use super::Shared;
use crate::{
    config::{Config, Webhook},
    errorlog::{self, AccountLogs, FetchError, Limits, Report},
    events::{Event, EventType},
    identity::TokenCaches,
    model::{DriveId, ErrorLogRef, JobName, Severity},
    store::JobId,
};

/// Tries of a log that keeps failing transiently before it is reported unreadable.
pub const MAX_TRIES: u32 = 5;
/// Logs read at once (a hung storage account holds one of these, never a poll worker).
const CONCURRENT_READS: usize = 4;
/// The first wait after a transient failure; doubles per failure.
const FIRST_RETRY: Duration = Duration::from_secs(30);

/// A log's progress in this process.
#[derive(Default)]
struct LogState {
    in_flight: bool,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

#[derive(Default)]
struct State {
    /// Jobs whose recorded logs have been loaded into `done`.
    loaded: HashSet<JobId>,
    done: HashSet<(JobId, String)>,
    logs: HashMap<(JobId, String), LogState>,
}

/// Reads the logs the jobs of one configuration find.
pub(super) struct ErrorLogReader {
    accounts: HashMap<String, Arc<AccountLogs>>,
    state: Arc<Mutex<State>>,
    permits: Arc<Semaphore>,
    limits: Limits,
    deadline: Duration,
}

/// What is needed to record one log's report.
struct Recording {
    job: JobId,
    name: JobName,
    owner: String,
    webhooks: Arc<Vec<Webhook>>,
}

impl ErrorLogReader {
    /// The reader of `config`'s accounts, sharing `caches` with the sources so a Storage
    /// token comes from the identity the account already uses.
    pub(super) fn for_config(config: &Config, caches: &TokenCaches) -> ErrorLogReader {
        let accounts = config
            .accounts
            .iter()
            .map(|account| {
                let timeouts = (config.daemon.request_timeout, config.daemon.connect_timeout);
                let logs = AccountLogs::for_account(account, timeouts, caches);
                (account.name.clone(), Arc::new(logs))
            })
            .collect();
        ErrorLogReader {
            accounts,
            state: Arc::new(Mutex::new(State::default())),
            permits: Arc::new(Semaphore::new(CONCURRENT_READS)),
            limits: Limits::default(),
            // Generous: a log of hundreds of MiB over a slow link; a hang still ends.
            deadline: config.daemon.request_timeout.saturating_mul(10),
        }
    }

    /// Starts reading each of `logs` not read, being read, or waiting for a retry.
    /// Cheap when there is nothing to do: called after every poll of a job with logs.
    pub(super) fn offer(
        &self,
        shared: &Shared,
        (job, account, name): (JobId, &str, &JobName),
        logs: &[ErrorLogRef],
        webhooks: &Arc<Vec<Webhook>>,
    ) {
        let Some(access) = self.accounts.get(account) else {
            return;
        };
        for log in logs {
            let url = access.resolve(log);
            let key = (job, url.clone().unwrap_or_else(|_| log.link.clone()));
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.done.contains(&key) {
                    continue;
                }
                let entry = state.logs.entry(key.clone()).or_default();
                if entry.in_flight || entry.retry_at.is_some_and(|at| Instant::now() < at) {
                    continue;
                }
                entry.in_flight = true;
            }
            let recording = Recording {
                job,
                name: name.clone(),
                owner: log.owner.clone(),
                webhooks: webhooks.clone(),
            };
            let task = ReadTask {
                shared: shared.clone(),
                access: access.clone(),
                state: self.state.clone(),
                permits: self.permits.clone(),
                limits: self.limits,
                deadline: self.deadline,
                key,
                url,
                account: account.to_owned(),
            };
            tokio::spawn(task.run(recording));
        }
    }
}

/// One log's read, on its own task.
struct ReadTask {
    shared: Shared,
    access: Arc<AccountLogs>,
    state: Arc<Mutex<State>>,
    permits: Arc<Semaphore>,
    limits: Limits,
    deadline: Duration,
    key: (JobId, String),
    url: Result<String, String>,
    account: String,
}

/// Clears a log's in-flight mark however its task ends, so a panic cannot keep the log
/// from ever being read.
struct InFlight(Arc<Mutex<State>>, (JobId, String));

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = state.logs.get_mut(&self.1) {
            log.in_flight = false;
        }
    }
}

impl ReadTask {
    async fn run(self, recording: Recording) {
        let _in_flight = InFlight(self.state.clone(), self.key.clone());
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let job = self.key.0;
        if !self.already_recorded(job).await {
            let report = self.read().await;
            if let Some(report) = report {
                self.record(&recording, report).await;
            }
        }
    }

    /// True when the log was recorded before (by this process or an earlier one).
    async fn already_recorded(&self, job: JobId) -> bool {
        let loaded = self.lock().loaded.contains(&job);
        if !loaded {
            let Ok(recorded) = self.shared.store.error_logs_recorded(job).await else {
                return true; // The database is unwell: try again at a later poll.
            };
            let mut state = self.lock();
            state.loaded.insert(job);
            state
                .done
                .extend(recorded.into_iter().map(|log| (job, log)));
        }
        self.lock().done.contains(&self.key)
    }

    /// The report to record, or none while a transient failure waits for its retry.
    async fn read(&self) -> Option<Report> {
        let url = match &self.url {
            Ok(url) => url,
            Err(why) => return Some(Report::unreadable(&self.key.1, why)),
        };
        let started = Instant::now();
        let read = self.access.read(url, self.limits, self.deadline).await;
        match read {
            Ok(summary) => {
                tracing::info!(account = %self.account, log = %url, "error log read in {} ms: {} entries", started.elapsed().as_millis(), summary.entries_total());
                Some(Report::read(url, &summary, self.limits.max_entries))
            }
            Err(error) if error.is_transient() => self.transient(url, &error),
            Err(error) => Some(Report::unreadable(url, &describe(&error))),
        }
    }

    /// Remembers a transient failure; after [`MAX_TRIES`], the report of an unreadable log.
    fn transient(&self, url: &str, error: &FetchError) -> Option<Report> {
        let mut state = self.lock();
        let log = state.logs.entry(self.key.clone()).or_default();
        log.failures += 1;
        log.last_error = describe(error);
        if log.failures >= MAX_TRIES {
            return Some(Report::unreadable(
                url,
                &format!("{} (after {} tries)", log.last_error, log.failures),
            ));
        }
        let wait = FIRST_RETRY.saturating_mul(1 << (log.failures - 1).min(10));
        log.retry_at = Instant::now().checked_add(wait);
        tracing::warn!(account = %self.account, log = %url, "error log not read, trying again in {}s: {}", wait.as_secs(), log.last_error);
        None
    }

    async fn record(&self, recording: &Recording, report: Report) {
        let now = crate::wall_clock::now();
        let shared = &self.shared;
        let mut fields = json!(report.clone().with_first(errorlog::FIRST_IN_EVENT));
        fields["summary"] = json!(report.headline());
        let event = Event::notice(
            EventType::DriveErrors,
            Some(&DriveId::new(recording.owner.clone())),
            report.headline(),
            Severity::Warning,
            fields,
        );
        let events = [event];
        let job = (recording.job, self.account.as_str(), &recording.name);
        let outbox = super::deliveries_for(shared, job, &recording.webhooks, &events, now).await;
        let written = shared
            .store
            .record_error_log(
                recording.job,
                &report,
                &recording.owner,
                &events[0],
                &outbox,
                now,
            )
            .await;
        match written {
            Ok(ids) => {
                self.lock().done.insert(self.key.clone());
                if !ids.is_empty() {
                    shared.telemetry.event(EventType::DriveErrors);
                    tracing::info!(account = %self.account, job = %recording.name, drive = %crate::telemetry::printable(&recording.owner), "{}", crate::telemetry::printable(&events[0].describe()));
                    if !outbox.is_empty() {
                        shared.waker.wake();
                    }
                }
            }
            Err(e) => {
                tracing::error!(account = %self.account, job = %recording.name, "cannot record the error log's report, will read it again: {e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A failure in the words the report keeps.
fn describe(error: &FetchError) -> String {
    let text = error.to_string();
    crate::telemetry::printable(&text)
        .chars()
        .take(500)
        .collect()
}
