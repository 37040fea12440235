//! The channel conformance suite: one set of hostile cases, run against every channel the
//! code defines (`WebhookFormat::iter()`), through the real notifier, a real store and real
//! receivers on 127.0.0.1 (hyper for HTTP; aiosmtpd for e-mail; raw sockets for peers that
//! accept and never answer, or answer half and stall). A new channel must say how it is
//! reached ([`transport`], an exhaustive match) and what each case expects of it, or this
//! file does not compile.

mod common;
#[path = "conformance/daemon.rs"]
mod daemon;

use std::{path::Path, time::Duration};

use common::{smtp, start_notifier, webhooks, Receiver, Reply};
use iewatch::{
    config::{Webhook, WebhookFormat},
    decide::Memory,
    events::{ChangeValue, Event, EventType, MAX_VALUE_BYTES},
    model::{JobName, Severity},
    notifier::route,
    store::{DeliveryRow, Store, Writer},
};
use strum::IntoEnumIterator as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

/// Markup of every target format, line breaks and a template's syntax, as a service
/// could send them in a State.
const HOSTILE: &str = "<!channel> <!here> <https://evil.example|click here> \
    [Re-authenticate](https://evil.example/login) *bold* _it_ `code` # ${HOME} {{ 7 * 7 }} \
    & \r\nERROR forged log line\u{2028}next";

/// How a channel reaches its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Http,
    Smtp,
}

/// Every channel, by how it is reached: no wildcard, so a new one must be placed here.
fn transport(format: WebhookFormat) -> Transport {
    match format {
        WebhookFormat::Json
        | WebhookFormat::Slack
        | WebhookFormat::Teams
        | WebhookFormat::PagerDuty
        | WebhookFormat::Template => Transport::Http,
        WebhookFormat::Email => Transport::Smtp,
    }
}

/// The `[[webhook]]` of `format`, parsed (see [`hook_toml`]).
fn hook(dir: &Path, format: WebhookFormat, target: &str, timeout: &str) -> Vec<Webhook> {
    webhooks(dir, &hook_toml(dir, format, target, timeout))
}

/// The `[[webhook]]` of `format` as config text, sending to `url` (HTTP) or `port` (SMTP,
/// with the test CA of `dir`), with quick retries.
fn hook_toml(dir: &Path, format: WebhookFormat, target: &str, timeout: &str) -> String {
    let common = format!(
        "[[webhook]]\nname = \"hook\"\ntimeout = \"{timeout}\"\nretry_initial = \"50ms\"\n\
         retry_max = \"100ms\"\nformat = \"{}\"\n",
        format.as_str()
    );
    let specific = match format {
        WebhookFormat::Json => {
            format!("url = \"{target}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n")
        }
        WebhookFormat::Slack | WebhookFormat::Teams => format!("url = \"{target}\"\n"),
        WebhookFormat::PagerDuty => format!("url = \"{target}\"\nrouting_key = \"R0UTINGKEY\"\n"),
        WebhookFormat::Template => format!(
            "url = \"{target}\"\ntemplate = '{{\"text\": {{{{ text|tojson }}}}, \"to\": {{{{ to|tojson }}}}, \"md\": {{{{ to|markdown|tojson }}}}, \"sl\": {{{{ to|slack|tojson }}}}}}'\n"
        ),
        WebhookFormat::Email => {
            std::fs::write(dir.join("smtp-password"), "s3cret\n").unwrap();
            format!(
                "url = \"smtp://127.0.0.1:{target}\"\nfrom = \"iewatch <iewatch@example.com>\"\n\
                 to = [\"ops@example.com\"]\nusername = \"alerts\"\npassword_file = \"{}\"\n\
                 ca_certificate = \"{}\"\n",
                dir.join("smtp-password").display(),
                dir.join("ca.pem").display()
            )
        }
    };
    format!("{common}{specific}")
}

/// Two error alerts of `job` (PagerDuty triggers both), the first carrying `first_to`.
fn alerts(first_to: &str) -> Vec<Event> {
    let change = |kind, drive: Option<&str>, to: &str| {
        Event::change(
            kind,
            drive.map(iewatch::model::DriveId::from).as_ref(),
            None,
            Some(ChangeValue::text(to)),
            Severity::Error,
        )
    };
    vec![
        change(EventType::JobStateChanged, None, first_to),
        change(
            EventType::DriveCopyStatusChanged,
            Some("D1"),
            "CompletedWithErrors",
        ),
    ]
}

/// Records `events` of `job` for `hooks` and starts a notifier on them.
async fn queue(
    dir: &Path,
    job: &str,
    hooks: &[Webhook],
    events: &[Event],
) -> (Writer, common::Running) {
    let store = record(dir, job, hooks, events).await;
    let notifier = start_notifier(&store, hooks.to_vec());
    notifier.waker.wake();
    (store, notifier)
}

/// Records `events` of `job` in `dir/iewatch.db`, routed to `hooks`.
async fn record(dir: &Path, job: &str, hooks: &[Webhook], events: &[Event]) -> Writer {
    let store = Writer::open_file(&dir.join("iewatch.db")).await.unwrap();
    let stored = store.load_job("prod", job).await.unwrap();
    let outbox = route(hooks, &JobName::from(job), events);
    assert_eq!(outbox.len(), events.len(), "every alert is routed");
    store
        .record_bookkeeping(
            stored.id,
            &Memory::default(),
            events,
            &outbox,
            std::time::SystemTime::now().into(),
        )
        .await
        .unwrap();
    store
}

/// The deliveries, oldest first, once `done` holds for them (bounded: 15 s).
async fn deliveries_once(store: &Store, done: impl Fn(&[DeliveryRow]) -> bool) -> Vec<DeliveryRow> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut rows = store.deliveries(false, 100).await.unwrap();
        rows.reverse();
        if done(&rows) || tokio::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A peer that accepts connections and then says `first` (maybe nothing) and never more;
/// for HTTP it reads the request before it answers. Returns its port.
async fn stalling_peer(
    first: &'static [u8],
    read_request: bool,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            if read_request {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buffer[..n]),
                    }
                }
            }
            let _ = stream.write_all(first).await;
            held.push(stream);
        }
    });
    (port, task)
}

/// The address of a stalling peer as the channel's config names it.
fn target_of(format: WebhookFormat, port: u16) -> String {
    match transport(format) {
        Transport::Http => format!("http://127.0.0.1:{port}/hook"),
        Transport::Smtp => port.to_string(),
    }
}

/// An attempt at a peer that never finishes is cut at the webhook's timeout, recorded as
/// a transient failure with why, and the notifier still stops at once.
async fn assert_cut_at_the_timeout(format: WebhookFormat, first: &'static [u8], http_reads: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (port, peer) =
        stalling_peer(first, http_reads && transport(format) == Transport::Http).await;
    if transport(format) == Transport::Smtp {
        smtp::pki(dir.path());
    }
    let hooks = hook(dir.path(), format, &target_of(format, port), "1s");
    let (store, notifier) = queue(dir.path(), "JobA", &hooks, &alerts("Faulted")).await;
    let rows = deliveries_once(&store, |rows| rows.first().is_some_and(|r| r.attempts >= 2)).await;
    let head = &rows[0];
    assert!(
        head.attempts >= 2,
        "{format:?}: the lane moved on to retries: {head:?}"
    );
    assert_eq!(
        head.status, "pending",
        "{format:?}: retried, not given up: {head:?}"
    );
    let error = head.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("no complete answer within 1s") || error.contains("timed out"),
        "{format:?}: {error}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(3), notifier.stop()).await;
    assert!(
        stopped.is_ok(),
        "{format:?}: stopping waited on a hung receiver"
    );
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_accepts_and_never_answers_costs_one_timeout_per_attempt() {
    for format in WebhookFormat::iter() {
        assert_cut_at_the_timeout(format, b"", false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_half_then_stalls_costs_one_timeout_per_attempt() {
    for format in WebhookFormat::iter() {
        let half: &'static [u8] = match transport(format) {
            // Headers promising a body that never comes.
            Transport::Http => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000\r\n\r\nxx"
            }
            // The greeting, then nothing.
            Transport::Smtp => b"220 127.0.0.1 ESMTP ready\r\n",
        };
        assert_cut_at_the_timeout(format, half, true).await;
    }
}

/// A receiver of `format` that answers the first delivery with `first` and later ones
/// with success; None when this machine has no SMTP server (said once).
struct Peer {
    http: Option<Receiver>,
    smtp: Option<smtp::SmtpSink>,
    target: String,
}

/// What the first answer is, in each transport's terms.
#[derive(Clone, Copy)]
enum First {
    Accept,
    Refuse,
    Defer,
    /// Takes the first delivery and never answers it.
    Hang,
}

async fn peer(dir: &Path, format: WebhookFormat, first: First, test: &str) -> Option<Peer> {
    match transport(format) {
        Transport::Http => {
            let ok = if format == WebhookFormat::PagerDuty {
                202
            } else {
                200
            };
            let refuse = if format == WebhookFormat::PagerDuty {
                400
            } else {
                410
            };
            let receiver = Receiver::start(move |i| match (first, i) {
                (First::Refuse, 0) => Reply::Status(refuse),
                (First::Defer, 0) => Reply::Status(503),
                (First::Hang, 0) => Reply::Hang(Duration::from_secs(120)),
                _ => Reply::Status(ok),
            })
            .await;
            let target = receiver.url();
            Some(Peer {
                http: Some(receiver),
                smtp: None,
                target,
            })
        }
        Transport::Smtp => {
            if !smtp::smtp_server_present(test) {
                return None;
            }
            smtp::pki(dir);
            let port = common::free_port();
            let behaviour = match first {
                First::Accept => "accept",
                First::Refuse => "refuse-first",
                First::Defer => "defer-first",
                First::Hang => "silent-first",
            };
            let sink = smtp::start_sink_behaving(dir, "starttls", port, "s3cret", behaviour);
            Some(Peer {
                http: None,
                smtp: Some(sink),
                target: port.to_string(),
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_is_given_up_at_once_with_the_receivers_code() {
    for format in WebhookFormat::iter() {
        let dir = tempfile::tempdir().unwrap();
        let test = "a_permanent_refusal_is_given_up_at_once_with_the_receivers_code";
        let Some(peer) = peer(dir.path(), format, First::Refuse, test).await else {
            continue;
        };
        let hooks = hook(dir.path(), format, &peer.target, "5s");
        let (store, notifier) = queue(dir.path(), "JobA", &hooks, &alerts("Faulted")).await;
        // What is permanent, per channel: 410 Gone disables an HTTP endpoint; PagerDuty's
        // 400 (an event it will never take) and an SMTP 5xx give that alert up and the
        // lane goes on.
        let (code, lane_goes_on) = match format {
            WebhookFormat::Json
            | WebhookFormat::Slack
            | WebhookFormat::Teams
            | WebhookFormat::Template => (410, false),
            WebhookFormat::PagerDuty => (400, true),
            WebhookFormat::Email => (550, true),
        };
        let rows = deliveries_once(&store, |rows| {
            rows.len() == 2
                && rows[0].status == "failed"
                && (!lane_goes_on || rows[1].status == "delivered")
        })
        .await;
        assert_eq!(rows[0].status, "failed", "{format:?}: {rows:?}");
        assert_eq!(rows[0].attempts, 1, "{format:?}: not retried: {rows:?}");
        assert_eq!(rows[0].last_status, Some(code), "{format:?}: {rows:?}");
        assert!(
            rows[0].last_error.is_some(),
            "{format:?}: the receiver's words are kept"
        );
        if lane_goes_on {
            assert_eq!(
                rows[1].status, "delivered",
                "{format:?}: the lane went on: {rows:?}"
            );
        }
        notifier.stop().await;
        drop(peer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_refusal_is_retried_until_it_is_delivered_in_order() {
    for format in WebhookFormat::iter() {
        let dir = tempfile::tempdir().unwrap();
        let test = "a_transient_refusal_is_retried_until_it_is_delivered_in_order";
        let Some(peer) = peer(dir.path(), format, First::Defer, test).await else {
            continue;
        };
        let hooks = hook(dir.path(), format, &peer.target, "5s");
        let (store, notifier) = queue(dir.path(), "JobA", &hooks, &alerts("Faulted")).await;
        let rows = deliveries_once(&store, |rows| {
            rows.len() == 2 && rows.iter().all(|r| r.status == "delivered")
        })
        .await;
        assert!(
            rows.iter().all(|r| r.status == "delivered"),
            "{format:?}: {rows:?}"
        );
        assert_eq!(
            rows[0].attempts, 2,
            "{format:?}: once refused, then taken: {rows:?}"
        );
        let ok = match transport(format) {
            Transport::Http if format == WebhookFormat::PagerDuty => 202,
            Transport::Http => 200,
            Transport::Smtp => 250,
        };
        assert_eq!(rows[0].last_status, Some(ok), "{format:?}: {rows:?}");
        assert!(
            rows[0].finished_at <= rows[1].finished_at,
            "{format:?}: in order"
        );
        notifier.stop().await;
        drop(peer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_answer_or_a_huge_alert_is_bounded_and_delivered() {
    for format in WebhookFormat::iter() {
        let dir = tempfile::tempdir().unwrap();
        let test = "a_huge_answer_or_a_huge_alert_is_bounded_and_delivered";
        // HTTP receivers answer 20 MiB (read up to a bound, never whole); every channel
        // is handed a 150,000-character State, of which the store keeps the first
        // MAX_VALUE_BYTES (a template whose body passes its cap is refused in
        // tests/channels.rs).
        let huge_answer = Receiver::start(|_| Reply::Body(200, 20 << 20)).await;
        let peer = match transport(format) {
            Transport::Http if format != WebhookFormat::PagerDuty => None,
            _ => match peer(dir.path(), format, First::Accept, test).await {
                Some(peer) => Some(peer),
                None => continue,
            },
        };
        let target = peer
            .as_ref()
            .map_or_else(|| huge_answer.url(), |p| p.target.clone());
        let hooks = hook(dir.path(), format, &target, "5s");
        let state = "W".repeat(150_000);
        let (store, notifier) = queue(dir.path(), "JobA", &hooks, &alerts(&state)).await;
        let rows = deliveries_once(&store, |rows| {
            rows.len() == 2 && rows.iter().all(|r| r.status != "pending")
        })
        .await;
        assert!(
            rows.iter().all(|r| r.status == "delivered"),
            "{format:?}: {rows:?}"
        );
        // What went out carries the kept part, not the whole (each template renders it
        // four times; every body was over 150,000 bytes before the store clipped it).
        let bodies: Vec<String> = huge_answer
            .received()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert!(
            bodies.iter().all(|b| b.len() < 8 * MAX_VALUE_BYTES),
            "{format:?}: {:?} bytes",
            bodies.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(
            peer.is_some()
                || bodies
                    .iter()
                    .any(|b| b.contains('…') || b.contains("\\u2026")),
            "{format:?}: no body carries the clipped State"
        );
        if let Some(Peer {
            http: Some(receiver),
            ..
        }) = &peer
        {
            let summary = receiver.received()[0].json()["payload"]["summary"].clone();
            assert!(
                summary.as_str().unwrap().chars().count() <= 1024,
                "PagerDuty's cap"
            );
        }
        notifier.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_service_strings_are_escaped_for_each_target_format() {
    for format in WebhookFormat::iter() {
        let dir = tempfile::tempdir().unwrap();
        let test = "hostile_service_strings_are_escaped_for_each_target_format";
        let Some(peer) = peer(dir.path(), format, First::Accept, test).await else {
            continue;
        };
        let hooks = hook(dir.path(), format, &peer.target, "5s");
        // A job name long enough to push PagerDuty's dedup_key past 255.
        let job = format!("Job{}", "x".repeat(300));
        let (store, notifier) = queue(dir.path(), &job, &hooks, &alerts(HOSTILE)).await;
        let rows = deliveries_once(&store, |rows| {
            rows.len() == 2 && rows.iter().all(|r| r.status == "delivered")
        })
        .await;
        assert!(
            rows.iter().all(|r| r.status == "delivered"),
            "{format:?}: {rows:?}"
        );
        notifier.stop().await;
        match (format, &peer) {
            (
                WebhookFormat::Email,
                Peer {
                    smtp: Some(sink), ..
                },
            ) => assert_mail_is_safe(&sink.messages()),
            (
                _,
                Peer {
                    http: Some(receiver),
                    ..
                },
            ) => {
                assert_body_is_safe(format, &receiver.received()[0].json());
            }
            _ => unreachable!("a peer has a receiver or a sink"),
        }
    }
}

/// Neither line breaks nor another format's markup survive where they would act.
fn assert_body_is_safe(format: WebhookFormat, body: &serde_json::Value) {
    let one_line = |text: &str| !text.contains(['\r', '\n', '\u{2028}']);
    match format {
        // JSON escapes everything itself: the string arrives exactly as the service sent it.
        WebhookFormat::Json => assert_eq!(body["data"]["to"], HOSTILE),
        WebhookFormat::Slack => {
            let text = body["text"].as_str().unwrap();
            assert!(
                !text.contains("<!channel>") && !text.contains("<!here>"),
                "{text}"
            );
            assert!(!text.contains("<https://"), "{text}");
            assert!(
                text.contains("&lt;!channel&gt;") && text.contains("&amp;"),
                "{text}"
            );
            assert!(one_line(text), "{text:?}");
        }
        WebhookFormat::Teams => {
            let card = &body["attachments"][0]["content"];
            let mut texts: Vec<&str> = vec![card["body"][0]["text"].as_str().unwrap()];
            for fact in card["body"][2]["facts"].as_array().unwrap() {
                texts.push(fact["value"].as_str().unwrap());
            }
            for text in texts {
                assert!(!text.contains("[Re-authenticate](https"), "a link: {text}");
                assert!(!text.contains(" *bold*"), "emphasis: {text}");
                assert!(one_line(text), "{text:?}");
            }
            assert!(card["body"][0]["text"]
                .as_str()
                .unwrap()
                .contains("\\[Re-authenticate\\]\\(https://evil"));
        }
        WebhookFormat::PagerDuty => {
            let key = body["dedup_key"].as_str().unwrap();
            assert!(key.len() <= 255, "{} characters", key.len());
            assert!(key.starts_with("iewatch/prod/Jobxxx"), "{key}");
            let summary = body["payload"]["summary"].as_str().unwrap();
            assert!(summary.chars().count() <= 1024);
        }
        // The template chose tojson: the value arrives whole and JSON-escaped; the
        // markdown and slack filters escape as the built-in formats do.
        WebhookFormat::Template => {
            assert_eq!(body["to"], HOSTILE);
            let markdown = body["md"].as_str().unwrap();
            assert!(
                markdown.contains("\\[Re-authenticate\\]\\(https"),
                "{markdown}"
            );
            let slack = body["sl"].as_str().unwrap();
            assert!(
                slack.contains("&lt;!channel&gt;") && !slack.contains("<!"),
                "{slack}"
            );
        }
        WebhookFormat::Email => unreachable!("e-mail is read from the SMTP sink"),
    }
}

/// The headers every provider wants, and one line per alert.
fn assert_mail_is_safe(messages: &[String]) {
    assert_eq!(messages.len(), 2, "one message per alert");
    let message = &messages[0];
    let (head, body) = message.split_once("\r\n\r\n").unwrap();
    for header in ["Message-ID: <iewatch.", "MIME-Version: 1.0", "Date: "] {
        assert!(head.contains(header), "{header} missing in {head}");
    }
    assert!(
        head.contains("@example.com>"),
        "the Message-ID is in from's domain: {head}"
    );
    assert!(
        !head.lines().any(|l| l.starts_with("ERROR"))
            && !body.lines().any(|l| l.starts_with("ERROR")),
        "a forged line: {message}"
    );
    let ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.lines().find(|l| l.starts_with("Message-ID:")))
        .collect();
    assert_ne!(ids[0], ids[1], "each message its own id");
}

#[test]
fn every_channel_is_covered_by_this_suite() {
    // The cases iterate WebhookFormat::iter(); this names the list so that a reader sees
    // what "every" was when the suite last ran.
    let names: Vec<&str> = WebhookFormat::iter().map(WebhookFormat::as_str).collect();
    assert_eq!(
        names,
        ["json", "slack", "teams", "pagerduty", "template", "email"]
    );
}
