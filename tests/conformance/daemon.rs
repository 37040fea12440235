//! The conformance cases that need the real daemon process, for every channel: SIGKILL
//! in the middle of a delivery (afterwards each alert is accepted exactly once), and
//! SIGTERM while a receiver hangs (the daemon is gone within `shutdown_timeout`, the
//! alert still pending for the next start).

use std::{path::PathBuf, time::Instant};

use super::*;

/// The test's name, as `not_run` says it.
const SIGKILL_CASE: &str = "a_daemon_sigkilled_mid_delivery_has_each_alert_accepted_once";
const SIGTERM_CASE: &str = "sigterm_never_waits_on_a_hung_receiver_past_shutdown_timeout";

impl Peer {
    /// True once the receiver holds the first delivery unanswered.
    fn holds_one(&self) -> bool {
        match (&self.http, &self.smtp) {
            (Some(receiver), _) => !receiver.received().is_empty(),
            (None, Some(sink)) => sink.held(),
            (None, None) => false,
        }
    }

    /// What the receiver accepted, in order: HTTP bodies answered 2xx, or e-mails.
    fn accepted(&self) -> Vec<String> {
        match (&self.http, &self.smtp) {
            (Some(receiver), _) => receiver
                .received()
                .iter()
                .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect(),
            (None, Some(sink)) => sink.messages(),
            (None, None) => Vec::new(),
        }
    }
}

/// A daemon config with only `[daemon]` (plus `daemon_keys`) and the webhook of `format`,
/// and the two alerts of `alerts("Faulted")` queued for it in its database.
async fn daemon_with_alerts(
    dir: &Path,
    format: WebhookFormat,
    target: &str,
    daemon_keys: &str,
) -> PathBuf {
    let hook = hook_toml(dir, format, target, "60s");
    let hooks = webhooks(dir, &hook);
    record(dir, "JobA", &hooks, &alerts("Faulted"))
        .await
        .close()
        .await;
    let config = dir.join("iewatch.toml");
    std::fs::write(
        &config,
        format!("[daemon]\ndatabase = \"iewatch.db\"\n{daemon_keys}\n{hook}"),
    )
    .unwrap();
    config
}

/// Starts the daemon of `config`, its log at info level in `dir/daemon.log`, and waits
/// (bounded: 30 s) until `peer` holds its first delivery; says why when it does not.
async fn start_until_in_flight(
    dir: &Path,
    config: &Path,
    peer: &Peer,
    format: WebhookFormat,
) -> tokio::process::Child {
    let log = dir.join("daemon.log");
    let mut daemon = common::DaemonCommand::new(config)
        .log_to("info", &log)
        .spawn();
    let in_flight = common::wait_until(Duration::from_secs(30), || peer.holds_one()).await;
    assert!(
        in_flight,
        "{format:?}: the first delivery in flight (daemon running: {}); its log:\n{}",
        daemon.try_wait().is_ok_and(|exit| exit.is_none()),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    daemon
}

/// The deliveries of `dir/iewatch.db`, oldest first, once `done` holds (bounded: 20 s).
async fn rows_once(dir: &Path, done: impl Fn(&[DeliveryRow]) -> bool) -> Vec<DeliveryRow> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let store = Store::open_existing(&dir.join("iewatch.db")).await.unwrap();
        let mut rows = store.deliveries(false, 100).await.unwrap();
        store.close().await;
        rows.reverse();
        if done(&rows) || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_sigkilled_mid_delivery_has_each_alert_accepted_once() {
    for format in WebhookFormat::iter() {
        let dir = tempfile::tempdir().unwrap();
        let Some(peer) = peer(dir.path(), format, First::Hang, SIGKILL_CASE).await else {
            continue;
        };
        let config = daemon_with_alerts(dir.path(), format, &peer.target, "").await;
        let mut daemon = start_until_in_flight(dir.path(), &config, &peer, format).await;
        daemon.kill().await.unwrap(); // SIGKILL: mid-delivery, nothing recorded
        let mut daemon = common::DaemonCommand::new(&config).spawn();
        let rows = rows_once(dir.path(), |rows| {
            rows.len() == 2 && rows.iter().all(|r| r.status == "delivered")
        })
        .await;
        daemon.kill().await.unwrap();
        assert!(
            rows.iter().all(|r| r.status == "delivered"),
            "{format:?}: {rows:?}"
        );
        let accepted = peer.accepted();
        assert_eq!(
            accepted.len(),
            2,
            "{format:?}: each alert accepted once: {accepted:#?}"
        );
        assert_ne!(
            accepted[0], accepted[1],
            "{format:?}: two alerts, not one twice"
        );
        if let Some(receiver) = &peer.http {
            // The one cut off is the first alert, sent again unchanged (same webhook-id).
            let received = receiver.received();
            assert_eq!(received[0].answered, None, "{format:?}");
            assert_eq!(
                String::from_utf8_lossy(&received[0].body),
                accepted[0],
                "{format:?}"
            );
            assert_eq!(
                received[0].header("webhook-id"),
                received[1].header("webhook-id"),
                "{format:?}"
            );
        } else {
            assert!(
                accepted[0].contains("Faulted"),
                "{format:?}: {}",
                accepted[0]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_never_waits_on_a_hung_receiver_past_shutdown_timeout() {
    for format in WebhookFormat::iter() {
        let dir = tempfile::tempdir().unwrap();
        let Some(peer) = peer(dir.path(), format, First::Hang, SIGTERM_CASE).await else {
            continue;
        };
        // The attempt may take a minute; the daemon may take one second to stop.
        let config = daemon_with_alerts(
            dir.path(),
            format,
            &peer.target,
            "shutdown_timeout = \"1s\"",
        )
        .await;
        let daemon =
            common::DaemonProcess(start_until_in_flight(dir.path(), &config, &peer, format).await);
        let asked = Instant::now();
        daemon.stop().await;
        let took = asked.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{format:?}: stopped in {took:?}, with shutdown_timeout = 1s"
        );
        let rows = rows_once(dir.path(), |_| true).await;
        assert_eq!(rows.len(), 2, "{format:?}");
        assert!(
            rows.iter().all(|r| r.status == "pending"),
            "{format:?}: nothing lost, nothing given up: {rows:?}"
        );
    }
}
