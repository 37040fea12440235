//! One watched job: polls its source, runs the change detector and [`decide`] on the
//! answer, hands the store what to write, and says when to poll again. The rules are
//! `decide`'s; this file is the I/O around them.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

mod record;

use super::next_poll::{with_jitter, Quiet};
use super::{Settings, Shared};
use crate::{
    config::PollPolicy,
    decide::{clocks, decide, retired_for, Context, Decision, Memory, NextPoll, Outcome},
    events::{Event, OutboxEntry},
    model::{ETag, JobName, JobSnapshot},
    moment::Moment,
    source::{
        ChangeRule, Document, IfNoneMatch, JobTarget, Observation, PollOutcome, Source, SourceError,
    },
    store::{Attention, Failed, JobId, Observed, PollNotes, StoreError},
};

/// Wait after a failed database write before polling the job again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// A cache line on the machines iewatch runs on (x86_64, aarch64).
const CACHE_LINE: usize = 64;

/// The lines of a [`WatchedJob`] every poll reads (see its layout).
const HOT_LINES: usize = 3;

/// A job being watched, with what it remembers between polls.
///
/// Laid out in declaration order from a cache line's start, what every poll reads first:
/// with thousands of jobs none stays in cache between two of its polls, and each line an
/// unchanged poll touches is a miss that costs more than the rest of its own work
/// (tests/benches/poll_unchanged.rs). The fields before `memory` and its first ones
/// (failures, terminal) fill three lines.
#[repr(C, align(64))]
pub(super) struct WatchedJob {
    /// The job's row, once loaded.
    id: Option<JobId>,
    /// Shared by every job of the account (one connection pool).
    source: Arc<Source>,
    /// The Unix second in which `memory` was last checked for times ahead of now (0:
    /// never); past it none can be (a decision stores no time later than its now).
    checked_in: u32,
    /// `memory` had stored times ahead of now brought back, not written yet.
    repaired: bool,
    /// The last snapshot names error logs to read (kept with it by `keep_snapshot`).
    names_error_logs: bool,
    /// A refused credential is logged once per failure streak.
    auth_error_logged: bool,
    /// The account keeps BitLocker keys in the stored document.
    store_bitlocker_keys: bool,
    /// While it holds, an unchanged poll decides as the last one did, which changed
    /// nothing. Cleared by any other outcome.
    quiet: Option<Quiet>,
    /// Its last-success gauge, once an unchanged poll needed it.
    last_success: Option<crate::telemetry::LastSuccess>,
    /// What of the stored row could not be read and was taken as empty, until the reset
    /// is recorded (`job.memory_reset`).
    damaged: Box<[String]>,
    /// The ETag last recorded, ready to send (see `keep_etag`).
    if_none_match: Option<IfNoneMatch>,
    /// Bookkeeping for `decide`.
    memory: Memory,
    /// Its address at the source, and its name.
    target: JobTarget,
    /// Shared by every job of the account.
    account: Arc<str>,
    /// Its intervals.
    policy: PollPolicy,
    /// The watched fields last recorded.
    snapshot: Option<JobSnapshot>,
    /// A hash of the document text last written, for sources whose change rule is the
    /// ETag; None until this process has written one.
    document_hash: Option<u64>,
}

impl WatchedJob {
    /// A job to watch; what the database remembers of it is loaded at its first poll.
    pub(super) fn new(
        account: &Arc<str>,
        name: &JobName,
        source: &Arc<Source>,
        policy: PollPolicy,
        store_bitlocker_keys: bool,
    ) -> WatchedJob {
        WatchedJob {
            id: None,
            source: source.clone(),
            checked_in: 0,
            repaired: false,
            names_error_logs: false,
            quiet: None,
            last_success: None,
            damaged: Box::default(),
            if_none_match: None,
            memory: Memory::default(),
            target: source.target(name),
            account: account.clone(),
            policy,
            store_bitlocker_keys,
            auth_error_logged: false,
            snapshot: None,
            document_hash: None,
        }
    }

    /// Resumes from what the database remembers of the job (its row is created on first
    /// sight); returns its row id. Called until it succeeds once (`poll_once`).
    async fn load(&mut self, shared: &Shared) -> Result<JobId, StoreError> {
        let stored = shared
            .store
            .load_job(&self.account, self.name().as_str())
            .await?;
        for damage in &stored.damaged {
            tracing::warn!(
                account = %self.account, job = %self.name(),
                "{}; taken as empty, the job is watched on",
                crate::telemetry::printable(damage)
            );
        }
        self.damaged = stored.damaged.into_boxed_slice();
        self.keep_etag(stored.etag.as_ref());
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
        self.names_error_logs = self
            .snapshot
            .as_ref()
            .is_some_and(|s| !s.notices.error_logs.is_empty());
    }

    /// Keeps `etag` as the tag to send next: the one seam every tag crosses (the stored
    /// one at load, the service's after a write). One no header can carry is said and
    /// not kept: the next answer is the whole document, whose tag replaces it.
    fn keep_etag(&mut self, etag: Option<&ETag>) {
        self.if_none_match = etag.and_then(IfNoneMatch::for_etag);
        if etag.is_some() && self.if_none_match.is_none() {
            tracing::warn!(
                account = %self.account, job = %self.name(),
                "the ETag cannot be sent in a header; asking for the whole document"
            );
        }
    }

    /// Asks the CPU to bring in the cache lines a poll reads first (those the layout
    /// puts first, and `target`, the job's URI): a hint, which nothing waits for.
    pub(super) fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let start: *const i8 = std::ptr::from_ref(self).cast();
            let target = std::mem::offset_of!(WatchedJob, target);
            let target_end = target + std::mem::size_of::<JobTarget>();
            let hot = (0..HOT_LINES * CACHE_LINE).step_by(CACHE_LINE);
            let target_lines = (target / CACHE_LINE * CACHE_LINE..target_end).step_by(CACHE_LINE);
            for offset in hot.chain(target_lines) {
                // SAFETY: a prefetch reads nothing into the program and cannot fault,
                // whatever the address; these are within `self`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
            }
        }
    }

    /// The job's name.
    fn name(&self) -> &JobName {
        self.target.job()
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
            account = %self.account, job = %self.name(),
            "job has been {state} for {}; no longer polled (daemon.stop_after)",
            humantime::format_duration(Duration::from_secs(terminal_for.as_secs()))
        );
        true
    }

    /// Polls once, records what came back, and says how long to wait before the next
    /// poll; None when the job is retired (terminal for longer than `stop_after`).
    /// Times of unchanged polls go to `notes`.
    pub(super) async fn poll_once(
        &mut self,
        shared: &Shared,
        settings: &Settings,
        notes: &mut PollNotes,
    ) -> Option<Duration> {
        // Once a job is loaded a poll awaits only the source: the rarer branches are
        // boxed, so that the future every poll runs stays a few cache lines (3 KiB
        // with them inline, the most of it never touched by an unchanged poll).
        let id = match self.id {
            Some(id) => id,
            None => match Box::pin(self.load(shared)).await {
                Ok(id) => id,
                Err(e) => return Some(self.write_failed(&e)),
            },
        };
        if !self.damaged.is_empty() {
            Box::pin(self.record_memory_reset(id, shared, settings)).await;
        }
        if self.retired(settings) {
            return None;
        }
        Some(self.poll(id, (shared, settings), notes).await)
    }

    async fn poll(
        &mut self,
        id: JobId,
        (shared, settings): (&Shared, &Settings),
        notes: &mut PollNotes,
    ) -> Duration {
        let started = Instant::now();
        let result = (self.source)
            .get_job(&self.target, self.if_none_match.as_ref())
            .await;
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
                Box::pin(self.on_document(id, *observation, (shared, settings), notes)).await
            }
            Ok(PollOutcome::NotModified) => {
                self.on_unchanged(id, quiet, (shared, settings), notes)
                    .await
            }
            Err(error) => Box::pin(self.on_failure(id, error, shared, settings)).await,
        };
        if was_failing != self.is_failing() {
            shared.telemetry.failing_changed(self.is_failing());
        }
        // The flag first: it is on the poll's first cache line, the snapshot is not.
        if self.names_error_logs {
            if let Some(snapshot) = &self.snapshot {
                settings.error_logs.offer(
                    shared,
                    (id, &self.account, self.name()),
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
        let job = (id, &*self.account, self.name());
        super::deliveries_for(shared, job, &settings.webhooks, events, now).await
    }

    async fn on_document(
        &mut self,
        id: JobId,
        observation: Observation,
        (shared, settings): (&Shared, &Settings),
        notes: &mut PollNotes,
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
            self.name().as_str(),
            self.snapshot.as_ref().map(|s| s.state.as_str()),
            snapshot.state.as_str(),
            snapshot.percent_complete,
        );
        if !decision.write {
            tracing::debug!(account = %self.account, job = %self.name(), "unchanged document");
            notes.note(id, now);
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
            self.name().as_str(),
            decision.memory_after(&self.memory).clocks.eta,
        );
        self.keep_etag(change_rule.etag());
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
        let kept = self
            .if_none_match
            .as_ref()
            .map(|tag| tag.value().as_bytes());
        let news = change_rule.etag().map(|tag| tag.as_str().as_bytes()) != kept
            || document_hash.is_some_and(|h| Some(h) != self.document_hash);
        (text, document_hash, news)
    }

    async fn on_unchanged(
        &mut self,
        id: JobId,
        quiet: Option<Quiet>,
        (shared, settings): (&Shared, &Settings),
        notes: &mut PollNotes,
    ) -> Duration {
        let now = self.now();
        tracing::debug!(account = %self.account, job = %self.name(), "not modified");
        self.last_success
            .get_or_insert_with(|| {
                shared
                    .telemetry
                    .last_success(&self.account, self.target.job().as_str())
            })
            .at(now);
        if let Some(quiet) = quiet.filter(|q| q.holds_at(now) && !self.repaired) {
            self.quiet = Some(quiet);
            notes.note(id, now);
            return with_jitter(NextPoll::Interval(quiet.interval));
        }
        Box::pin(self.decide_unchanged(id, (shared, settings), notes, now)).await
    }

    /// An unchanged poll outside a quiet: the rules run, and what they decide is
    /// written.
    async fn decide_unchanged(
        &mut self,
        id: JobId,
        (shared, settings): (&Shared, &Settings),
        notes: &mut PollNotes,
        now: Moment,
    ) -> Duration {
        let attention = self.attention(id, shared, settings, now).await;
        let decision = decide(
            &self.memory,
            Outcome::Unchanged,
            &self.context(settings, now, attention),
        );
        if !decision.write {
            notes.note(id, now);
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
                account = %self.account, job = %self.name(),
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
}

/// A hash of a document's text: enough to tell "same text" without keeping it.
fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
