//! `format = "email"` against a real SMTP server on 127.0.0.1 (Python's aiosmtpd, which
//! `.ci/run` installs; it sets IEWATCH_REQUIRE_SMTP so that a missing one fails there,
//! while a newcomer's `cargo test` says once what did not run): STARTTLS and implicit
//! TLS, AUTH, one message per event in order through an outage, and a digest.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{start_notifier, webhooks};
use iewatch::{model::JobName, notifier::route, store::Store};

/// A running aiosmtpd, killed on drop.
struct SmtpSink {
    child: Child,
    outdir: PathBuf,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message as its reader sees it: headers unfolded with their RFC 2047 encoded words
/// (`=?utf-8?b?...?=`) decoded, the quoted-printable body decoded.
fn readable(message: &str) -> String {
    let (head, body) = message
        .split_once("\r\n\r\n")
        .or_else(|| message.split_once("\n\n"))
        .unwrap_or((message, ""));
    format!(
        "{}\r\n\r\n{}",
        decode_words(&head.replace("\r\n ", " ")),
        quoted_printable(body)
    )
}

/// Decodes base64 encoded words; the space between two of them goes, as RFC 2047 says.
fn decode_words(head: &str) -> String {
    use base64::Engine as _;
    let (open, close) = ("=?utf-8?b?", "?=");
    let mut out = String::new();
    let mut rest = head;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(start) = rest.find(open) {
        let between = &rest[..start];
        if !between.trim().is_empty() || pending.is_empty() {
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut pending)));
            out.push_str(between);
        }
        let word = &rest[start + open.len()..];
        let end = word.find(close).unwrap_or(word.len());
        pending.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&word[..end])
                .unwrap_or_default(),
        );
        rest = &word[(end + close.len()).min(word.len())..];
    }
    out.push_str(&String::from_utf8_lossy(&pending));
    out.push_str(rest);
    out
}

fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SmtpSink {
    fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.outdir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| readable(&std::fs::read_to_string(p).unwrap_or_default()))
            .collect()
    }
}

/// True when python3 has aiosmtpd; otherwise says what to install (or fails, under CI).
fn smtp_server_present(test: &str) -> bool {
    let present = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        common::not_run(
            "IEWATCH_REQUIRE_SMTP",
            &format!(
                "{test} (tests/email.rs): python3 cannot import aiosmtpd, the real SMTP \
                 server; install it with `python3 -m pip install aiosmtpd`"
            ),
        );
    }
    present
}

/// The CA that signs the sink's certificate, written to `dir/ca.pem`.
fn pki(dir: &Path) -> (PathBuf, PathBuf) {
    let pki = common::TestPki::new("iewatch test SMTP CA");
    std::fs::write(dir.join("ca.pem"), pki.ca.cert_pem()).unwrap();
    let (cert, key) = pki
        .ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .unwrap();
    let (cert_path, key_path) = (dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

fn start_sink(dir: &Path, mode: &str, port: u16, password: &str) -> SmtpSink {
    use std::io::BufRead as _;
    let (cert, key) = (dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
    let outdir = dir.join(format!("mail-{port}"));
    std::fs::create_dir_all(&outdir).unwrap();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/smtp_sink.py"
        ))
        .args([mode, &port.to_string()])
        .args([&cert, &key])
        .args(["alerts", password])
        .arg(&outdir)
        .stdout(Stdio::piped())
        // aiosmtpd narrates every session (and refused handshake) on stderr.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server started");
    SmtpSink { child, outdir }
}

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
) -> (Store, Vec<iewatch::events::Event>) {
    let store = Store::open(&dir.join("iewatch.db")).await.unwrap();
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
