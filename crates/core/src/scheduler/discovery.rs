//! `jobs = "all"`: lists an account's jobs every poll interval and starts watching the
//! ones not seen yet, so jobs created later are picked up without a reload.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{job::WatchedJob, DueQueue, Shared};
use crate::{config::PollPolicy, model::JobName, source::Source};

/// One account's discovery loop.
pub(super) struct Discovery {
    pub(super) account: Arc<str>,
    pub(super) store_bitlocker_keys: bool,
    pub(super) source: Arc<Source>,
    pub(super) known: HashSet<JobName>,
    pub(super) interval: Duration,
    pub(super) policy: PollPolicy,
}

impl Discovery {
    pub(super) async fn run(
        mut self,
        queue: Arc<DueQueue>,
        shared: Shared,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let listing = match self.source.list_jobs().await {
                Some(Ok(listing)) => listing,
                Some(Err(e)) => {
                    tracing::warn!(account = %self.account, "cannot list jobs: {}", crate::telemetry::printable(&e.to_string()));
                    continue;
                }
                // A source that cannot list jobs has nothing to discover.
                None => return shutdown.cancelled().await,
            };
            if let Some(why) = &listing.cut_short {
                tracing::warn!(
                    account = %self.account,
                    "job list cut short after {} job(s): {}; watching those, the rest at the next listing",
                    listing.names.len(),
                    crate::telemetry::printable(why)
                );
            }
            // Added together, so that the first listing of an account of 100,000 jobs
            // spreads their first polls as a config of that many would.
            let found: Vec<WatchedJob> = listing
                .names
                .into_iter()
                .filter_map(|name| self.watch(name, &shared))
                .collect();
            if !found.is_empty() {
                queue.add_all(found);
            }
        }
    }

    /// The job to watch for `name`, unless it is watched already.
    fn watch(&mut self, name: JobName, shared: &Shared) -> Option<WatchedJob> {
        if self.known.contains(&name) {
            return None;
        }
        let watched = WatchedJob::new(
            &self.account,
            &name,
            &self.source,
            self.policy.clone(),
            self.store_bitlocker_keys,
        );
        tracing::info!(account = %self.account, job = %crate::telemetry::printable(name.as_str()), "discovered; now watching it");
        shared.telemetry.job_watched();
        self.known.insert(name);
        Some(watched)
    }
}
