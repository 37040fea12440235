//! Supervision, crash-only: every long-lived task iewatch starts runs under a
//! [`Supervisor`]. A task that ends while it should still run, or panics, is reported
//! as a [`Death`] on one channel; the daemon then says so (log, `/healthz` 503, systemd
//! `STATUS=`) and exits non-zero, and systemd starts it again from the durable state.
//! No part may stop while the process lives on.

use std::{any::Any, future::Future};

use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A task that stopped when it should not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    /// The task's name.
    pub task: String,
    /// Why: "ended", or the panic's message.
    pub reason: String,
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.task, self.reason)
    }
}

/// Where deaths are reported; the daemon's run loop listens.
pub type Deaths = mpsc::UnboundedReceiver<Death>;

/// Spawns tasks that must run until `stopping` is cancelled, and reports any that do not.
#[derive(Clone, Debug)]
pub struct Supervisor {
    deaths: mpsc::UnboundedSender<Death>,
    tracker: TaskTracker,
    stopping: CancellationToken,
}

impl Supervisor {
    /// A supervisor and the channel its deaths arrive on.
    pub fn new() -> (Supervisor, Deaths) {
        let (deaths, receiver) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            deaths,
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
        };
        (supervisor, receiver)
    }

    /// A supervisor of its own tracker and stop signal (one generation of job tasks)
    /// that reports to the same channel.
    pub fn child(&self) -> Supervisor {
        Supervisor {
            deaths: self.deaths.clone(),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
        }
    }

    /// The signal on which the supervised tasks stop.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Runs `task`, which must not end before [`Supervisor::stopping`] is cancelled.
    pub fn spawn<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let inner = tokio::spawn(task);
        let (deaths, stopping) = (self.deaths.clone(), self.stopping.clone());
        self.tracker.spawn(async move {
            let reason = match inner.await {
                Ok(()) if stopping.is_cancelled() => return,
                Ok(()) => "ended".to_owned(),
                Err(e) if e.is_cancelled() => "was cancelled".to_owned(),
                Err(e) => format!("panicked: {}", panic_message(e.into_panic())),
            };
            tracing::error!(task = %name, "a task that must run {reason}");
            let _ = deaths.send(Death { task: name, reason });
        });
    }

    /// Stops every task and waits up to `deadline` for them; false if some did not end.
    pub async fn stop(&self, deadline: std::time::Duration) -> bool {
        self.stopping.cancel();
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// The text of a panic's payload, when it has one.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_ends_early_is_reported_and_one_stopped_is_not() {
        let (supervisor, mut deaths) = Supervisor::new();
        supervisor.spawn("panics", async { panic!("overflow") });
        supervisor.spawn("ends", async {});
        let stopping = supervisor.stopping().clone();
        supervisor.spawn("runs", async move { stopping.cancelled().await });
        let mut seen = [deaths.recv().await.unwrap(), deaths.recv().await.unwrap()];
        seen.sort_by(|a, b| a.task.cmp(&b.task));
        assert_eq!(seen[0].task, "ends");
        assert_eq!(seen[0].reason, "ended");
        assert_eq!(seen[1].task, "panics");
        assert_eq!(seen[1].reason, "panicked: overflow");
        assert!(supervisor.stop(Duration::from_secs(5)).await);
        assert!(
            deaths.try_recv().is_err(),
            "a task stopped on request is no death"
        );
    }
}
