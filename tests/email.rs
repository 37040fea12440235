//! `format = "email"` against a real SMTP server on 127.0.0.1 (Python's aiosmtpd, which
//! `.ci/run` installs; it sets IEWATCH_REQUIRE_SMTP so that a missing one fails there,
//! while a newcomer's `cargo test` says once what did not run): STARTTLS and implicit
//! TLS, AUTH, one message per event in order through an outage, and a digest.

mod common;

use std::{path::Path, time::Duration};

use common::{
    smtp::{pki, smtp_server_present, start_sink},
    start_notifier, webhooks,
};
use iewatch::{model::JobName, notifier::route, store::Writer};

fn email_hook(dir: &Path, scheme: &str, port: u16, extra: &str) -> Vec<iewatch::config::Webhook> {
    std::fs::write(dir.join("smtp-password"), "s3cret\n").unwrap();
    webhooks(
        dir,
        &format!(
            "[[webhook]]\nname = \"mail\"\nformat = \"email\"\nurl = \"{scheme}://127.0.0.1:{port}\"\nfrom = \"iewatch <iewatch@example.com>\"\nto = [\"ops@example.com\", \"Drive Team <drives@example.com>\"]\nusername = \"alerts\"\npassword_file = \"{}\"\nca_certificate = \"{}\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\ntimeout = \"5s\"\n{extra}",
            dir.join("smtp-password").display(),
            dir.join("ca.pem").display()
        ),
    )
}

async fn record(
    dir: &Path,
    hooks: &[iewatch::config::Webhook],
) -> (Writer, Vec<iewatch::events::Event>) {
    let store = Writer::open_file(&dir.join("iewatch.db")).await.unwrap();
    let name = JobName::from("MySampleJob");
    let events = common::record_lifecycle(
        &store,
        "MySampleJob",
        |events| route(hooks, &name, events),
        false,
        |_| std::time::SystemTime::now(),
    )
    .await;
    (store, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_per_event_over_starttls_in_order_through_an_outage() {
    if !smtp_server_present("one_message_per_event_over_starttls_in_order_through_an_outage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let port = common::free_port();
    let hooks = email_hook(dir.path(), "smtp", port, "");
    let (store, events) = record(dir.path(), &hooks).await;
    // The server is down while the first attempts fail.
    let notifier = start_notifier(&store, hooks);
    notifier.waker.wake();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let rows = store.deliveries(false, 100).await.unwrap();
            if rows.iter().any(|r| r.attempts > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("an attempt against the closed port");
    let sink = start_sink(dir.path(), "starttls", port, "s3cret");
    let all = common::wait_until(Duration::from_secs(30), || {
        sink.messages().len() >= events.len()
    })
    .await;
    assert!(
        all,
        "{} of {} messages",
        sink.messages().len(),
        events.len()
    );
    notifier.stop().await;
    let messages = sink.messages();
    assert_eq!(messages.len(), events.len(), "each once");
    // One lane mails one message after the other: STARTTLS and AUTH once, one connection
    // kept while mail flows.
    let mut connections = sink.connections();
    assert_eq!(connections.len(), events.len());
    connections.dedup();
    assert_eq!(
        connections.len(),
        1,
        "one connection for all: {connections:?}"
    );
    for (message, event) in messages.iter().zip(&events) {
        let unfolded = message.replace("\r\n ", " ");
        let subject = unfolded
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_else(|| panic!("no subject in {message}"));
        assert!(
            subject.ends_with(&format!("prod/MySampleJob: {}", event.describe())),
            "{subject} vs {}",
            event.describe()
        );
        assert!(
            subject.starts_with(&format!("[iewatch {}]", event.severity)),
            "{subject}"
        );
        assert!(
            unfolded.contains("From: iewatch <iewatch@example.com>"),
            "{message}"
        );
        assert!(unfolded.contains("drives@example.com"), "{message}");
        assert!(
            unfolded.contains("iewatch-evt-"),
            "the event id is in the text"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_over_implicit_tls_sends_a_jobs_pending_alerts_in_one_message() {
    if !smtp_server_present("a_digest_over_implicit_tls_sends_a_jobs_pending_alerts_in_one_message")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let port = common::free_port();
    let sink = start_sink(dir.path(), "tls", port, "s3cret");
    let hooks = email_hook(dir.path(), "smtps", port, "digest_every = \"1s\"\n");
    let (store, events) = record(dir.path(), &hooks).await;
    let notifier = start_notifier(&store, hooks);
    notifier.waker.wake();
    let sent = common::wait_until(Duration::from_secs(20), || !sink.messages().is_empty()).await;
    assert!(
        sent,
        "{:?}",
        store
            .deliveries(false, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.attempts, r.last_error.clone()))
            .collect::<Vec<_>>()
    );
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if store.outbox_backlog().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(delivered.is_ok(), "every delivery recorded as delivered");
    notifier.stop().await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "one digest");
    let text = messages[0].replace("\r\n ", " ");
    assert!(
        text.contains(&format!("prod/MySampleJob: {} changes", events.len())),
        "{text}"
    );
    let mut at = 0;
    for event in &events {
        let found = text[at..].find(&event.describe()).map(|i| i + at);
        let Some(found) = found else {
            panic!("{} missing or out of order in {text}", event.describe());
        };
        at = found;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_and_nothing_is_lost() {
    if !smtp_server_present("a_server_certificate_from_another_ca_is_refused_and_nothing_is_lost") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let port = common::free_port();
    let sink = start_sink(dir.path(), "starttls", port, "s3cret");
    // iewatch trusts another CA than the one that signed the server's certificate.
    let other = common::TestPki::new("some other CA");
    std::fs::write(dir.path().join("ca.pem"), other.ca.cert_pem()).unwrap();
    let hooks = email_hook(dir.path(), "smtp", port, "");
    let (store, events) = record(dir.path(), &hooks).await;
    let notifier = start_notifier(&store, hooks);
    notifier.waker.wake();
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let rows = store.deliveries(false, 100).await.unwrap();
            if let Some(error) = rows.iter().find_map(|r| r.last_error.clone()) {
                return error;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("an attempt was refused");
    notifier.stop().await;
    assert!(refused.contains("SMTP 127.0.0.1"), "{refused}");
    assert!(!refused.contains("s3cret"), "no password in errors");
    assert!(sink.messages().is_empty(), "nothing went in clear");
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        i64::try_from(events.len()).unwrap(),
        "all still pending"
    );
}
