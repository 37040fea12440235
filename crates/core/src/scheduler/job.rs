//! One watched job: polls its source, runs the change detector and [`decide`] on the
//! answer, hands the store what to write, and says when to poll again. The rules are
//! `decide`'s; this file is the I/O around them.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use super::next_poll::{with_jitter, Quiet};
use super::{Settings, Shared};
use crate::{
    config::PollPolicy,
    decide::{clocks, decide, retired_for, Context, Decision, Memory, NextPoll, Outcome},
    events::{Event, EventType, OutboxEntry},
    model::{ETag, JobName, JobSnapshot, Severity},
    moment::Moment,
    source::{ChangeRule, Document, JobTarget, Observation, PollOutcome, Source, SourceError},
    store::{Attention, Failed, JobId, Observed, StoreError},
    telemetry::printable,
};

/// Wait after a failed database write before polling the job again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// A job being watched, with what it remembers between polls.
pub(super) struct WatchedJob {
    account: String,
    name: JobName,
    target: JobTarget,
    /// Shared by every job of the account (one connection pool).
    source: Arc<Source>,
    policy: PollPolicy,
    store_bitlocker_keys: bool,
    /// The job's row, once loaded.
    id: Option<JobId>,
    /// The ETag to send next.
    etag: Option<ETag>,
    /// The watched fields last recorded.
    snapshot: Option<JobSnapshot>,
    /// Bookkeeping for `decide`.
    memory: Memory,
    /// A hash of the document text last written, for sources whose change rule is the
    /// ETag; None until this process has written one.
    document_hash: Option<u64>,
    /// A refused credential is logged once per failure streak.
    auth_error_logged: bool,
    /// `memory` had stored times ahead of now brought back, not written yet.
    repaired: bool,
    /// What of the stored row could not be read and was taken as empty, until the reset
    /// is recorded (`job.memory_reset`).
    damaged: Vec<String>,
    /// Its last-success gauge, once an unchanged poll needed it.
    last_success: Option<crate::telemetry::LastSuccess>,
    /// The Unix second in which `memory` was last checked for times ahead of now (0:
    /// never); past it none can be (a decision stores no time later than its now).
    checked_in: u32,
    /// While it holds, an unchanged poll decides as the last one did, which changed
    /// nothing. Cleared by any other outcome.
    quiet: Option<Quiet>,
}

impl WatchedJob {
    /// A job to watch; what the database remembers of it is loaded at its first poll.
    pub(super) fn new(
        account: &str,
        name: &JobName,
        source: &Arc<Source>,
        policy: PollPolicy,
        store_bitlocker_keys: bool,
    ) -> WatchedJob {
        WatchedJob {
            account: account.to_owned(),
            name: name.clone(),
            target: source.target(name),
            source: source.clone(),
            policy,
            store_bitlocker_keys,
            id: None,
            etag: None,
            snapshot: None,
            memory: Memory::default(),
            checked_in: 0,
            quiet: None,
            document_hash: None,
            auth_error_logged: false,
            repaired: false,
            damaged: Vec::new(),
            last_success: None,
        }
    }

    /// Resumes from what the database remembers of the job (its row is created on first
    /// sight); returns its row id.
    async fn load(&mut self, shared: &Shared) -> Result<JobId, StoreError> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let stored = shared
            .store
            .load_job(&self.account, self.name.as_str())
            .await?;
        for damage in &stored.damaged {
            tracing::warn!(
                account = %self.account, job = %self.name,
                "{}; taken as empty, the job is watched on",
                crate::telemetry::printable(damage)
            );
        }
        self.damaged = stored.damaged;
        self.etag = stored.etag;
        self.keep_snapshot(stored.snapshot);
        self.memory = stored.memory;
        self.checked_in = 0;
        self.quiet = None;
        if self.memory.is_failing() {
            shared.telemetry.failing_changed(true);
        }
        self.id = Some(stored.id);
        Ok(stored.id)
    }

    /// Keeps `snapshot` as the job's last, without spare room: it stays for as long as
    /// the job is watched.
    fn keep_snapshot(&mut self, snapshot: Option<JobSnapshot>) {
        self.snapshot = snapshot.map(|mut s| {
            s.shrink_to_fit();
            s
        });
    }

    /// True while a failure streak is going on.
    pub(super) fn is_failing(&self) -> bool {
        self.memory.is_failing()
    }

    /// The job's configured interval.
    pub(super) fn base_interval(&self) -> Duration {
        self.policy.base
    }

    /// A job terminal for longer than `stop_after` is no longer polled.
    fn retired(&self, settings: &Settings) -> bool {
        if self.memory.terminal_since.is_none() {
            return false;
        }
        let Some(terminal_for) =
            retired_for(&self.memory, crate::wall_clock::now(), settings.stop_after)
        else {
            return false;
        };
        let state = self
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

    /// Polls once, records what came back, and says how long to wait before the next
    /// poll; None when the job is retired (terminal for longer than `stop_after`).
    pub(super) async fn poll_once(
        &mut self,
        shared: &Shared,
        settings: &Settings,
    ) -> Option<Duration> {
        let id = match self.load(shared).await {
            Ok(id) => id,
            Err(e) => return Some(self.write_failed(&e)),
        };
        if !self.damaged.is_empty() {
            self.record_memory_reset(id, shared, settings).await;
        }
        if self.retired(settings) {
            return None;
        }
        Some(self.poll(id, shared, settings).await)
    }

    /// Records (and sends) `job.memory_reset` with the safe memory the damaged row was
    /// taken as, so the reset is in the job's history, its row repaired, and `/healthz`
    /// names it. A failed write is tried again at the next poll.
    async fn record_memory_reset(&mut self, id: JobId, shared: &Shared, settings: &Settings) {
        let now = self.now();
        let columns: Vec<&str> = self
            .damaged
            .iter()
            .map(|d| d.split(' ').next().unwrap_or_default())
            .collect();
        let event = Event::notice(
            EventType::JobMemoryReset,
            None,
            columns.join(", "),
            Severity::Warning,
            json!({
                "damaged": self.damaged,
                "consequence": "what iewatch remembered there is reset: stalls, deadlines \
                                and reminders count again from now",
            }),
        );
        let events = [event];
        let outbox = self.route(id, shared, settings, &events, now).await;
        let written = shared
            .store
            .record_bookkeeping(id, &self.memory, &events, &outbox, now)
            .await;
        if self.settle(written, shared, &events, outbox.len()).is_ok() {
            shared.telemetry.memory_reset(
                &self.account,
                self.name.as_str(),
                &self.damaged.join("; "),
            );
            self.damaged.clear();
        }
    }

    async fn poll(&mut self, id: JobId, shared: &Shared, settings: &Settings) -> Duration {
        let started = Instant::now();
        let result = self.source.get_job(&self.target, self.etag.as_ref()).await;
        // Only an unchanged poll keeps (or sets) the quiet.
        let quiet = self.quiet.take();
        let outcome = match &result {
            Ok(PollOutcome::Modified(_)) => "modified",
            Ok(PollOutcome::NotModified) => "not_modified",
            Err(e) => e.kind(),
        };
        shared.telemetry.poll(outcome, started.elapsed());
        let was_failing = self.is_failing();
        let delay = match result {
            Ok(PollOutcome::Modified(observation)) => {
                self.on_document(id, *observation, shared, settings).await
            }
            Ok(PollOutcome::NotModified) => self.on_unchanged(id, quiet, shared, settings).await,
            Err(error) => self.on_failure(id, error, shared, settings).await,
        };
        if was_failing != self.is_failing() {
            shared.telemetry.failing_changed(self.is_failing());
        }
        if let Some(snapshot) = &self.snapshot {
            if !snapshot.notices.error_logs.is_empty() {
                settings.error_logs.offer(
                    shared,
                    (id, &self.account, &self.name),
                    &snapshot.notices.error_logs,
                    &settings.webhooks,
                );
            }
        }
        delay
    }

    fn context<'a>(
        &'a self,
        settings: &'a Settings,
        now: Moment,
        attention: Attention,
    ) -> Context<'a> {
        Context {
            now,
            recorded: self.snapshot.as_ref(),
            policy: &self.policy,
            failure_threshold: settings.failure_threshold,
            max_retry_after: settings.max_retry_after,
            clocks: &settings.clocks,
            acked_at: attention.acked_at,
            muted: attention.is_muted(now),
            repaired: self.repaired,
        }
    }

    /// The job's last `iewatch ack` and mute, read only when a reminder may be due.
    async fn attention(
        &self,
        id: JobId,
        shared: &Shared,
        settings: &Settings,
        now: Moment,
    ) -> Attention {
        if !clocks::reminder_due(&self.memory.clocks, now, &settings.clocks) {
            return Attention::default();
        }
        shared.store.attention(id).await.unwrap_or_default()
    }

    /// The deliveries for `events` (see [`super::deliveries_for`]).
    async fn route(
        &self,
        id: JobId,
        shared: &Shared,
        settings: &Settings,
        events: &[Event],
        now: Moment,
    ) -> Vec<OutboxEntry> {
        let job = (id, self.account.as_str(), &self.name);
        super::deliveries_for(shared, job, &settings.webhooks, events, now).await
    }

    async fn on_document(
        &mut self,
        id: JobId,
        observation: Observation,
        shared: &Shared,
        settings: &Settings,
    ) -> Duration {
        let now = self.now();
        let Observation {
            snapshot,
            document,
            change_rule,
            last_modified,
            created_at,
            ..
        } = observation;
        let (text, document_hash, news) = self.news_of(&change_rule, &document);
        let attention = self.attention(id, shared, settings, now).await;
        let decision = decide(
            &self.memory,
            Outcome::Changed {
                job: &snapshot,
                created_at,
                news,
            },
            &self.context(settings, now, attention),
        );
        shared.telemetry.job_seen(
            &self.account,
            self.name.as_str(),
            self.snapshot.as_ref().map(|s| s.state.as_str()),
            snapshot.state.as_str(),
            snapshot.percent_complete,
        );
        if !decision.write {
            tracing::debug!(account = %self.account, job = %self.name, "unchanged document");
            shared.store.note_poll(id, now);
            return self.remember(decision);
        }
        let text = text.unwrap_or_else(|| document.render(self.store_bitlocker_keys));
        let outbox = self
            .route(id, shared, settings, &decision.events, now)
            .await;
        let written = shared
            .store
            .record_observation(Observed {
                job: id,
                snapshot: &snapshot,
                document: &text,
                etag: change_rule.etag(),
                last_modified: last_modified.as_deref(),
                memory: decision.memory_after(&self.memory),
                events: &decision.events,
                outbox: &outbox,
                at: now,
            })
            .await;
        if let Err(retry) = self.settle(written, shared, &decision.events, outbox.len()) {
            return retry;
        }
        shared.telemetry.job_eta(
            &self.account,
            self.name.as_str(),
            decision.memory_after(&self.memory).clocks.eta,
        );
        self.etag = change_rule.etag().cloned();
        self.keep_snapshot(Some(snapshot));
        self.document_hash = document_hash;
        self.remember(decision)
    }

    /// The document's text and hash when the API has ETags, and whether it is news. With
    /// an ETag, a new tag or a new document text is news even when the watched fields
    /// are equal. Without one (Resource Manager), only the watched fields count: other
    /// fields (bytes copied, ...) move on every poll and must not cost a transaction
    /// each time, nor a serialisation.
    fn news_of(
        &self,
        change_rule: &ChangeRule,
        document: &Document,
    ) -> (Option<String>, Option<u64>, bool) {
        let (text, document_hash) = match change_rule {
            ChangeRule::ETag(_) => {
                let text = document.render(self.store_bitlocker_keys);
                let hash = text_hash(&text);
                (Some(text), Some(hash))
            }
            ChangeRule::WatchedFields => (None, None),
        };
        let news = change_rule.etag() != self.etag.as_ref()
            || document_hash.is_some_and(|h| Some(h) != self.document_hash);
        (text, document_hash, news)
    }

    async fn on_unchanged(
        &mut self,
        id: JobId,
        quiet: Option<Quiet>,
        shared: &Shared,
        settings: &Settings,
    ) -> Duration {
        let now = self.now();
        tracing::debug!(account = %self.account, job = %self.name, "not modified");
        self.last_success
            .get_or_insert_with(|| {
                shared
                    .telemetry
                    .last_success(&self.account, self.name.as_str())
            })
            .at(now);
        if let Some(quiet) = quiet.filter(|q| q.holds_at(now) && !self.repaired) {
            self.quiet = Some(quiet);
            shared.store.note_poll(id, now);
            return with_jitter(NextPoll::Interval(quiet.interval));
        }
        let attention = self.attention(id, shared, settings, now).await;
        let decision = decide(
            &self.memory,
            Outcome::Unchanged,
            &self.context(settings, now, attention),
        );
        if !decision.write {
            shared.store.note_poll(id, now);
            self.quiet = Quiet::after(&decision);
            return self.remember(decision);
        }
        let outbox = self
            .route(id, shared, settings, &decision.events, now)
            .await;
        let written = shared
            .store
            .record_bookkeeping(
                id,
                decision.memory_after(&self.memory),
                &decision.events,
                &outbox,
                now,
            )
            .await;
        match self.settle(written, shared, &decision.events, outbox.len()) {
            Ok(()) => self.remember(decision),
            Err(retry) => retry,
        }
    }

    async fn on_failure(
        &mut self,
        id: JobId,
        error: SourceError,
        shared: &Shared,
        settings: &Settings,
    ) -> Duration {
        let now = self.now();
        let message = error.to_string();
        let attention = self.attention(id, shared, settings, now).await;
        let decision = decide(
            &self.memory,
            Outcome::Failed {
                error: &message,
                not_found: error.is_not_found(),
                retry_after: error.retry_after(),
            },
            &self.context(settings, now, attention),
        );
        let failures = decision.memory_after(&self.memory).consecutive_failures;
        self.log_failure(&error, &message, failures);
        let outbox = self
            .route(id, shared, settings, &decision.events, now)
            .await;
        let written = shared
            .store
            .record_failure(Failed {
                job: id,
                error: &message,
                memory: decision.memory_after(&self.memory),
                events: &decision.events,
                outbox: &outbox,
                at: now,
            })
            .await;
        match self.settle(written, shared, &decision.events, outbox.len()) {
            Ok(()) => self.remember(decision),
            Err(retry) => retry,
        }
    }

    /// iewatch's time now. Stored times of the job's memory later than that are brought
    /// back to it, said, and written at this poll (see `Memory::clamp_future`).
    fn now(&mut self) -> Moment {
        let now = crate::wall_clock::now();
        // Times up to 2106 fit; past that every poll checks, as before.
        let second = u32::try_from(now.unix_secs()).unwrap_or(0);
        if second > self.checked_in && self.checked_in != 0 {
            return now;
        }
        self.checked_in = second;
        let moved = self.memory.clamp_future(now);
        if !moved.is_empty() {
            tracing::warn!(
                account = %self.account, job = %self.name,
                "stored time(s) ahead of now brought back to now: {} (recorded while the \
                 system clock ran ahead, or edited by hand)",
                moved.join(", ")
            );
            self.repaired = true;
        }
        now
    }

    /// Keeps the decided memory and turns its next poll into a delay.
    fn remember(&mut self, decision: Decision) -> Duration {
        if let Some(memory) = decision.memory {
            self.memory = memory;
        }
        if !self.memory.is_failing() {
            self.auth_error_logged = false;
        }
        with_jitter(decision.next)
    }

    /// A refused credential is said once per failure streak, with what to check for
    /// the account's kind; other failures are a warning each.
    fn log_failure(&mut self, error: &SourceError, message: &str, failures: u32) {
        let message = printable(message);
        if !error.is_auth_refused() {
            tracing::warn!(account = %self.account, job = %self.name, failures, "poll failed: {message}");
        } else if !self.auth_error_logged {
            let advice = self.source.credential_advice();
            tracing::error!(
                account = %self.account, job = %self.name,
                "the service does not accept the credentials: {advice} ({message})"
            );
            self.auth_error_logged = true;
        } else {
            tracing::debug!(account = %self.account, job = %self.name, failures, "credentials still refused: {message}");
        }
    }

    /// The outcome of a write: committed, its events are counted and logged; refused,
    /// the error is said and the poll retried after the delay returned.
    fn settle(
        &mut self,
        written: Result<Vec<i64>, StoreError>,
        shared: &Shared,
        events: &[Event],
        outbox_rows: usize,
    ) -> Result<(), Duration> {
        match written {
            Ok(_) => {
                self.committed(shared, events, outbox_rows);
                Ok(())
            }
            Err(e) => Err(self.write_failed(&e)),
        }
    }

    fn committed(&mut self, shared: &Shared, events: &[Event], outbox_rows: usize) {
        self.repaired = false;
        for event in events {
            shared.telemetry.event(event.event_type);
            let change = event.describe();
            let change = printable(&change);
            match &event.drive_id {
                Some(drive) => {
                    let drive = printable(drive.as_str());
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

    /// A write (or the job's load) failed: the job is polled again soon. The writer
    /// records the failure for `/healthz` itself.
    fn write_failed(&self, error: &StoreError) -> Duration {
        if matches!(error, StoreError::Fenced) {
            // A reload replaced this generation; the new one polls the job.
            return STORE_RETRY;
        }
        tracing::error!(account = %self.account, job = %self.name, "cannot record poll, will poll again: {error}");
        STORE_RETRY
    }
}

/// A hash of a document's text: enough to tell "same text" without keeping it.
fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
