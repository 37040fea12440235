//! What a job's poll does once its write is decided: the write's outcome counted and
//! logged, a refused credential said once per streak, a damaged row's reset recorded.

use std::time::Duration;

use serde_json::json;

use super::{WatchedJob, STORE_RETRY};
use crate::{
    events::{Event, EventType},
    model::Severity,
    scheduler::{Settings, Shared},
    source::SourceError,
    store::{JobId, StoreError},
    telemetry::printable,
};

impl WatchedJob {
    /// Records (and sends) `job.memory_reset` with the safe memory the damaged row was
    /// taken as, so the reset is in the job's history, its row repaired, and `/healthz`
    /// names it. A failed write is tried again at the next poll.
    pub(super) async fn record_memory_reset(
        &mut self,
        id: JobId,
        shared: &Shared,
        settings: &Settings,
    ) {
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
                self.name().as_str(),
                &self.damaged.join("; "),
            );
            self.damaged = Box::default();
        }
    }

    /// A refused credential is said once per failure streak, with what to check for
    /// the account's kind; other failures are a warning each.
    pub(super) fn log_failure(&mut self, error: &SourceError, message: &str, failures: u32) {
        let message = printable(message);
        if !error.is_auth_refused() {
            tracing::warn!(account = %self.account, job = %self.name(), failures, "poll failed: {message}");
        } else if !self.auth_error_logged {
            let advice = self.source.credential_advice();
            tracing::error!(
                account = %self.account, job = %self.name(),
                "the service does not accept the credentials: {advice} ({message})"
            );
            self.auth_error_logged = true;
        } else {
            tracing::debug!(account = %self.account, job = %self.name(), failures, "credentials still refused: {message}");
        }
    }

    /// The outcome of a write: committed, its events are counted and logged; refused,
    /// the error is said and the poll retried after the delay returned.
    pub(super) fn settle(
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
                    tracing::info!(account = %self.account, job = %self.name(), drive = %drive, severity = %event.severity, "{change}")
                }
                None => {
                    tracing::info!(account = %self.account, job = %self.name(), severity = %event.severity, "{change}")
                }
            }
        }
        if outbox_rows > 0 {
            shared.waker.wake();
        }
    }

    /// A write (or the job's load) failed: the job is polled again soon. The writer
    /// records the failure for `/healthz` itself.
    pub(super) fn write_failed(&self, error: &StoreError) -> Duration {
        if matches!(error, StoreError::Fenced) {
            // A reload replaced this generation; the new one polls the job.
            return STORE_RETRY;
        }
        tracing::error!(account = %self.account, job = %self.name(), "cannot record poll, will poll again: {error}");
        STORE_RETRY
    }
}
