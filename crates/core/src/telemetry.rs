//! What the daemon tells the outside about itself: Prometheus metrics for /metrics, and
//! the liveness probes of the scheduler, the notifier and the writer that /healthz and the systemd
//! watchdog read. Cheap to clone; every box gets one.

use std::{
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::events::EventType;

/// How much later than it should a part may be before it counts as stuck: beyond its
/// own deadlines (request timeout, webhook timeout), this much more.
pub const LIVENESS_SLACK: Duration = Duration::from_secs(30);

/// A string from outside (a state, an error from a receiver) as one line of text log:
/// control characters (CR, LF, U+2028, ANSI escapes, ...) are written as Rust escapes,
/// so a hostile value cannot forge a log line or repaint a terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hostile = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hostile(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Longest label value exposed; longer values from outside are cut.
const MAX_LABEL_CHARS: usize = 64;

/// A label value from outside (a state from the service, a discovered job's name) made
/// safe for the exposition format: letters, digits and `_ - . : / @` pass, anything else
/// becomes `_`, and it is cut to [`MAX_LABEL_CHARS`]. The encoder does not escape quotes
/// or newlines, so a hostile `State` could otherwise forge series or end the scrape.
fn label_value(value: &str) -> String {
    value
        .chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.:/@ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A liveness probe: says what is stuck, if anything.
pub type Probe = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    account: String,
    /// Not `job`: Prometheus sets `job` (and `instance`) on every scraped series and
    /// would rename ours `exported_job`.
    job_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStateLabels {
    account: String,
    job_name: String,
    state: String,
}

/// Every poll outcome: "modified", "not_modified" and the kinds of
/// [`crate::source::SourceError::kind`].
const POLL_OUTCOMES: [&str; 13] = [
    "modified",
    "not_modified",
    "timeout",
    "tls",
    "transport",
    "body_too_large",
    "not_found",
    "auth",
    "throttled",
    "server_error",
    "http_status",
    "decode",
    "credential",
];

struct Inner {
    registry: Registry,
    polls: Family<OutcomeLabels, Counter>,
    /// The counters of `polls` for every outcome the scheduler reports, looked up
    /// without allocating a label set or hashing on each poll (the common outcomes
    /// first).
    poll_counters: Vec<(&'static str, Counter)>,
    poll_seconds: Histogram,
    events: Family<TypeLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    job_state: Family<JobStateLabels, Gauge>,
    job_percent: Family<JobLabels, Gauge>,
    job_eta: Family<JobLabels, Gauge>,
    last_success: Family<JobLabels, Gauge>,
    outbox_backlog: Gauge,
    jobs_watched: Gauge,
    jobs_failing: Gauge,
    leader: Gauge,
    /// On PostgreSQL: "leader (epoch N)" or "standby: ..." (None on SQLite).
    role: std::sync::Mutex<Option<String>>,
    /// By name; a generation replaces its own.
    probes: std::sync::Mutex<std::collections::BTreeMap<String, Probe>>,
    /// Why the process is going down, once it is.
    fatal: std::sync::Mutex<Option<String>>,
    /// Jobs whose stored memory was reset since the process started, newest last, at
    /// most [`MEMORY_RESETS_KEPT`]: `/healthz` names them.
    memory_resets: std::sync::Mutex<std::collections::VecDeque<String>>,
    last_backlog: AtomicI64,
    /// Events recorded plus delivery attempts ended: what can change the outbox backlog.
    outbox_activity: AtomicU64,
}

/// How many memory resets `/healthz` names (the newest); the rest are in the log and
/// each job's history.
pub const MEMORY_RESETS_KEPT: usize = 16;

/// Metrics and liveness, shared by the scheduler, the notifier and the HTTP listener.
#[derive(Clone)]
pub struct Telemetry(Arc<Inner>);

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// One job's `iewatch_job_last_success_timestamp_seconds`.
#[derive(Clone, Debug)]
pub struct LastSuccess {
    gauge: Gauge,
    /// The second last written, kept with the job: the gauge's own line is touched once
    /// a second, not at every poll.
    second: i64,
}

impl LastSuccess {
    /// A poll of the job succeeded at `at`.
    pub fn at(&mut self, at: crate::moment::Moment) {
        let second = at.unix_secs();
        if self.second != second {
            self.second = second;
            self.gauge.set(second);
        }
    }
}

/// Seconds since the epoch, for the timestamp gauges.
fn unix_seconds() -> i64 {
    crate::wall_clock::now().unix_secs()
}

/// Milliseconds since the epoch (liveness bookkeeping).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(crate::wall_clock::now().unix_millis()).unwrap_or(0)
}

impl Telemetry {
    /// A fresh set of metrics.
    // Over 80 lines on purpose: every series is registered here, in one list, so that
    // what /metrics exposes can be read in one place.
    pub fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("iewatch");
        let polls = Family::<OutcomeLabels, Counter>::default();
        let poll_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 14),
        );
        let events = Family::<TypeLabels, Counter>::default();
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        let job_state = Family::<JobStateLabels, Gauge>::default();
        let job_percent = Family::<JobLabels, Gauge>::default();
        let job_eta = Family::<JobLabels, Gauge>::default();
        let last_success = Family::<JobLabels, Gauge>::default();
        let outbox_backlog = Gauge::default();
        let jobs_watched = Gauge::default();
        let jobs_failing = Gauge::default();
        let leader = Gauge::default();
        // A SQLite daemon is the one writer of its file: it leads.
        leader.set(1);
        registry.register(
            "leader",
            "1 while this daemon polls and delivers, 0 while it stands by (PostgreSQL)",
            leader.clone(),
        );
        registry.register("polls", "Get Job polls by outcome", polls.clone());
        registry.register(
            "poll_duration_seconds",
            "Get Job latency",
            poll_seconds.clone(),
        );
        registry.register("events", "Events recorded by type", events.clone());
        registry.register(
            "deliveries",
            "Webhook delivery attempts by outcome",
            deliveries.clone(),
        );
        registry.register(
            "job_state",
            "1 for the job's current state",
            job_state.clone(),
        );
        registry.register(
            "job_percent_complete",
            "Job PercentComplete",
            job_percent.clone(),
        );
        registry.register(
            "job_eta_timestamp_seconds",
            "When the job's copy should finish at its observed rate",
            job_eta.clone(),
        );
        registry.register(
            "job_last_success_timestamp_seconds",
            "Last successful poll per job",
            last_success.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Webhook deliveries not yet delivered or failed",
            outbox_backlog.clone(),
        );
        registry.register("jobs_watched", "Jobs being polled", jobs_watched.clone());
        registry.register(
            "jobs_failing",
            "Jobs whose last poll failed",
            jobs_failing.clone(),
        );
        // Every delivery outcome exists from the start, so that rate() over it works
        // before the first alert (and dashboards find the series).
        for outcome in ["delivered", "retry", "failed"] {
            let _ = deliveries.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        let poll_counters = POLL_OUTCOMES
            .iter()
            .map(|outcome| {
                (
                    *outcome,
                    polls
                        .get_or_create(&OutcomeLabels {
                            outcome: (*outcome).to_owned(),
                        })
                        .clone(),
                )
            })
            .collect();
        Telemetry(Arc::new(Inner {
            registry,
            polls,
            poll_counters,
            poll_seconds,
            events,
            deliveries,
            job_state,
            job_percent,
            job_eta,
            last_success,
            outbox_backlog,
            jobs_watched,
            jobs_failing,
            leader,
            role: std::sync::Mutex::new(None),
            probes: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            fatal: std::sync::Mutex::new(None),
            memory_resets: std::sync::Mutex::default(),
            last_backlog: AtomicI64::new(0),
            outbox_activity: AtomicU64::new(0),
        }))
    }

    /// One poll finished with `outcome` after `elapsed`.
    pub fn poll(&self, outcome: &'static str, elapsed: Duration) {
        match self
            .0
            .poll_counters
            .iter()
            .find(|(name, _)| *name == outcome)
        {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.0
                    .polls
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.to_owned(),
                    })
                    .inc();
            }
        }
        self.0.poll_seconds.observe(elapsed.as_secs_f64());
    }

    /// A successful poll of a job in `state` at `percent`; `previous` is the state before.
    pub fn job_seen(
        &self,
        account: &str,
        job: &str,
        previous: Option<&str>,
        state: &str,
        percent: Option<i64>,
    ) {
        let (account, job) = (label_value(account), label_value(job));
        let labels = JobLabels {
            account: account.clone(),
            job_name: job.clone(),
        };
        if let Some(previous) = previous.filter(|p| *p != state) {
            self.0.job_state.remove(&JobStateLabels {
                account: account.clone(),
                job_name: job.clone(),
                state: label_value(previous),
            });
        }
        self.0
            .job_state
            .get_or_create(&JobStateLabels {
                account,
                job_name: job,
                state: label_value(state),
            })
            .set(1);
        if let Some(percent) = percent {
            self.0.job_percent.get_or_create(&labels).set(percent);
        }
        self.0
            .last_success
            .get_or_create(&labels)
            .set(unix_seconds());
    }

    /// The job's last-success gauge, for its polls that find it unchanged (304/412, or
    /// equal watched fields): kept by the job, so such a poll, the most common kind,
    /// moves it without building labels.
    pub fn last_success(&self, account: &str, job: &str) -> LastSuccess {
        let labels = JobLabels {
            account: label_value(account),
            job_name: label_value(job),
        };
        LastSuccess {
            gauge: self.0.last_success.get_or_create(&labels).clone(),
            second: i64::MIN,
        }
    }

    /// The job's ETA (Unix seconds), or none any more.
    pub fn job_eta(&self, account: &str, job: &str, eta: Option<crate::moment::Moment>) {
        let labels = JobLabels {
            account: label_value(account),
            job_name: label_value(job),
        };
        match eta {
            Some(eta) => {
                self.0.job_eta.get_or_create(&labels).set(eta.unix_secs());
            }
            None => {
                self.0.job_eta.remove(&labels);
            }
        }
    }

    /// An event was recorded.
    pub fn event(&self, event_type: EventType) {
        self.0.outbox_activity.fetch_add(1, Ordering::Relaxed);
        self.0
            .events
            .get_or_create(&TypeLabels {
                r#type: event_type.as_str().to_owned(),
            })
            .inc();
    }

    /// A delivery attempt ended with `outcome` (delivered, retry, failed).
    pub fn delivery(&self, outcome: &str) {
        self.0.outbox_activity.fetch_add(1, Ordering::Relaxed);
        self.0
            .deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A count that moves whenever the outbox backlog may have: the status line reads
    /// the backlog again only then, so an idle daemon asks the database nothing.
    pub fn outbox_activity(&self) -> u64 {
        self.0.outbox_activity.load(Ordering::Relaxed)
    }

    /// Sets the outbox backlog.
    pub fn set_backlog(&self, backlog: i64) {
        self.0.outbox_backlog.set(backlog);
        self.0.last_backlog.store(backlog, Ordering::Relaxed);
    }

    /// Sets the job counts when a generation of job tasks starts.
    pub fn set_jobs(&self, watched: usize, failing: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.0.jobs_watched.set(gauge(watched));
        self.0.jobs_failing.set(gauge(failing));
    }

    /// One more job is watched (discovered).
    pub fn job_watched(&self) {
        self.0.jobs_watched.inc();
    }

    /// A job started (true) or stopped (false) failing.
    pub fn failing_changed(&self, failing: bool) {
        if failing {
            self.0.jobs_failing.inc();
        } else {
            self.0.jobs_failing.dec();
        }
    }

    /// (watched, failing, backlog) for systemd's STATUS=.
    pub fn counts(&self) -> (i64, i64, i64) {
        (
            self.0.jobs_watched.get(),
            self.0.jobs_failing.get(),
            self.0.last_backlog.load(Ordering::Relaxed),
        )
    }

    /// Registers (or replaces) the probe called `name`.
    pub fn set_probe(&self, name: impl Into<String>, probe: Probe) {
        self.probes().insert(name.into(), probe);
    }

    /// Forgets the probes whose names start with `prefix` (a generation that ended).
    pub fn remove_probes(&self, prefix: &str) {
        self.probes().retain(|name, _| !name.starts_with(prefix));
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Probe>> {
        self.0.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On PostgreSQL: whether this daemon leads and the line that says so, for
    /// `/healthz`, `/metrics` (`iewatch_leader`) and the status line.
    pub fn set_role(&self, leading: bool, line: &str) {
        self.0.leader.set(i64::from(leading));
        *self.0.role.lock().unwrap_or_else(|p| p.into_inner()) = Some(line.to_owned());
    }

    /// The role line of [`Telemetry::set_role`], if the database has roles.
    pub fn role(&self) -> Option<String> {
        self.0
            .role
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks the process as going down (a part died); `/healthz` says so from now on.
    pub fn set_fatal(&self, reason: &str) {
        *self.0.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
    }

    /// Says that `account`/`job`'s stored memory was reset (`what`), for `/healthz`.
    pub fn memory_reset(&self, account: &str, job: &str, what: &str) {
        let mut resets = self
            .0
            .memory_resets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if resets.len() == MEMORY_RESETS_KEPT {
            resets.pop_front();
        }
        resets.push_back(format!(
            "{account}/{job} at {}: {what}",
            crate::wall_clock::now().rfc3339_seconds()
        ));
    }

    /// The memory resets since the process started (see [`Telemetry::memory_reset`]).
    pub fn memory_resets(&self) -> Vec<String> {
        let resets = self
            .0
            .memory_resets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        resets.iter().cloned().collect()
    }

    /// The one definition of a live daemon, read by `/healthz` and by the systemd
    /// watchdog: nothing has died, and every probe (pollers keep due jobs on time, the
    /// writer commits, every webhook worker goes round) says nothing is stuck.
    pub fn liveness_problem(&self) -> Option<String> {
        if let Some(fatal) = self
            .0
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(fatal);
        }
        let probes: Vec<Probe> = self.probes().values().cloned().collect();
        probes.iter().find_map(|probe| probe())
    }
}

mod exposition;

pub use exposition::negotiate_metrics;

#[cfg(test)]
mod tests;
