//! The channels beside Standard Webhooks and Slack: Teams (an Adaptive Card), PagerDuty
//! (trigger/resolve with stable dedup keys), templates, and `iewatch notify-test`.
//! Each is delivered by the real notifier to a real receiver on 127.0.0.1, through an
//! endpoint that fails first: nothing lost, order per job kept.

mod common;

use std::{path::Path, time::Duration};

use common::{start_notifier, webhooks, Receiver, Reply};
use iewatch::{
    decide::Memory,
    events::{ChangeValue, Event, EventType},
    model::{DriveId, JobName, Severity},
    notifier::route,
    store::Writer,
};

/// Fails the first `n` requests with 503, then answers 200 (PagerDuty: 202).
async fn flaky(n: usize, ok: u16) -> Receiver {
    Receiver::start(move |i| {
        if i < n {
            Reply::Status(503)
        } else {
            Reply::Status(ok)
        }
    })
    .await
}

fn answered(receiver: &Receiver) -> Vec<serde_json::Value> {
    receiver
        .received()
        .iter()
        .filter(|r| matches!(r.answered, Some(200 | 202)))
        .map(|r| r.json())
        .collect()
}

async fn deliver_lifecycle(
    dir: &Path,
    hook: &str,
    receiver: &Receiver,
    expected: usize,
) -> Vec<Event> {
    let hooks = webhooks(dir, hook);
    let store = Writer::open_file(&dir.join("iewatch.db")).await.unwrap();
    let notifier = start_notifier(&store, hooks.clone());
    let name = JobName::from("MySampleJob");
    let events = common::record_lifecycle(
        &store,
        "MySampleJob",
        |events| route(&hooks, &name, events),
        false,
        |_| std::time::SystemTime::now(),
    )
    .await;
    notifier.waker.wake();
    let all = common::wait_until(Duration::from_secs(20), || {
        receiver
            .received()
            .iter()
            .filter(|r| matches!(r.answered, Some(200 | 202)))
            .count()
            >= expected
    })
    .await;
    assert!(all, "{} of {expected} delivered", answered(receiver).len());
    notifier.stop().await;
    events
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_per_event_in_order_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = flaky(3, 200).await;
    let hook = format!(
        "[[webhook]]\nname = \"teams\"\nurl = \"{}\"\nformat = \"teams\"\nretry_initial = \"20ms\"\nretry_max = \"50ms\"\n",
        receiver.url()
    );
    let events = deliver_lifecycle(dir.path(), &hook, &receiver, 32).await;
    let cards = answered(&receiver);
    assert_eq!(cards.len(), events.len(), "nothing lost");
    for (message, event) in cards.iter().zip(&events) {
        // The Workflows envelope and the Adaptive Card 1.4 schema's required fields.
        assert_eq!(message["type"], "message");
        let attachment = &message["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        let body = card["body"].as_array().unwrap();
        assert!(!body.is_empty());
        for element in body {
            match element["type"].as_str().unwrap() {
                "TextBlock" => assert!(element["text"].is_string(), "{element}"),
                "FactSet" => {
                    for fact in element["facts"].as_array().unwrap() {
                        assert!(
                            fact["title"].is_string() && fact["value"].is_string(),
                            "{fact}"
                        );
                    }
                }
                other => panic!("unexpected element {other}"),
            }
        }
        for action in card["actions"].as_array().into_iter().flatten() {
            assert_eq!(action["type"], "Action.OpenUrl");
            assert!(action["url"].as_str().unwrap().starts_with("https://"));
        }
        // In order: each card's title is its event.
        let title = body[0]["text"].as_str().unwrap();
        let described = iewatch::payload::markdown_escaped(&event.describe());
        assert!(title.ends_with(&described), "{title} vs {described}");
        let colour = body[0]["color"].as_str().unwrap();
        let expected = match event.severity {
            Severity::Error => "Attention",
            Severity::Warning => "Warning",
            Severity::Info => "Default",
        };
        assert_eq!(colour, expected, "{title}");
    }
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.header("webhook-signature").is_empty()),
        "Teams bodies are not Standard Webhooks"
    );
}

fn event(kind: EventType, drive: Option<&str>, to: Option<&str>, severity: Severity) -> Event {
    Event::change(
        kind,
        drive.map(DriveId::from).as_ref(),
        None,
        to.map(ChangeValue::text),
        severity,
    )
}

#[tokio::test]
async fn pagerduty_triggers_and_resolves_with_stable_dedup_keys_and_resolves_pass_min_severity() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = flaky(2, 202).await;
    std::fs::write(
        dir.path().join("pd-key"),
        "R0UTINGKEY0123456789abcdef012345\n",
    )
    .unwrap();
    let hooks = webhooks(
        dir.path(),
        &format!(
            "[[webhook]]\nname = \"pd\"\nurl = \"{}\"\nformat = \"pagerduty\"\nrouting_key_file = \"pd-key\"\nmin_severity = \"warning\"\nretry_initial = \"20ms\"\nretry_max = \"50ms\"\n",
            receiver.url()
        ),
    );
    let store = Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let job = store.load_job("prod", "JobA").await.unwrap();
    let sequence = [
        event(
            EventType::JobPollFailing,
            None,
            Some("HTTP 500"),
            Severity::Error,
        ),
        event(EventType::JobPollRecovered, None, None, Severity::Info),
        event(
            EventType::JobStalled,
            None,
            Some("Shipping for 10d"),
            Severity::Warning,
        ),
        event(
            EventType::DriveStalled,
            Some("D1"),
            Some("40% for 1d"),
            Severity::Warning,
        ),
        event(
            EventType::DriveResumed,
            Some("D1"),
            Some("55% after 1d"),
            Severity::Info,
        ),
        event(
            EventType::JobResumed,
            None,
            Some("Shipping → Received"),
            Severity::Info,
        ),
        event(
            EventType::DriveCopyStatusChanged,
            Some("D1"),
            Some("CompletedWithErrors"),
            Severity::Error,
        ),
        event(EventType::JobProgress, None, Some("50"), Severity::Info),
        event(
            EventType::JobStateChanged,
            None,
            Some("Completed"),
            Severity::Info,
        ),
    ];
    let outbox = route(&hooks, &JobName::from("JobA"), &sequence);
    assert_eq!(outbox.len(), 8, "all but the progress event: {outbox:?}");
    let notifier = start_notifier(&store, hooks);
    store
        .record_bookkeeping(
            job.id,
            &Memory::default(),
            &sequence,
            &outbox,
            std::time::SystemTime::now().into(),
        )
        .await
        .unwrap();
    notifier.waker.wake();
    assert!(common::wait_until(Duration::from_secs(20), || answered(&receiver).len() >= 8).await);
    notifier.stop().await;
    let sent: Vec<(String, String)> = answered(&receiver)
        .iter()
        .map(|b| {
            assert_eq!(b["routing_key"], "R0UTINGKEY0123456789abcdef012345");
            (
                b["event_action"].as_str().unwrap().to_owned(),
                b["dedup_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let key = |c: &str| format!("iewatch/prod/JobA/{c}");
    let pair = |a: &str, c: &str| (a.to_owned(), key(c));
    assert_eq!(
        sent,
        [
            pair("trigger", "polls_failing"),
            pair("resolve", "polls_failing"),
            pair("trigger", "stalled"),
            pair("trigger", "drive_stalled:D1"),
            pair("resolve", "drive_stalled:D1"),
            pair("resolve", "stalled"),
            pair("trigger", "errors"),
            pair("resolve", "errors"),
        ]
    );
    let trigger = &answered(&receiver)[0]["payload"];
    assert_eq!(trigger["severity"], "error");
    assert_eq!(trigger["component"], "JobA");
    assert!(trigger["summary"]
        .as_str()
        .unwrap()
        .contains("polls failing: HTTP 500"));
}

/// Records `events` of `job` with `memory`, routed to `hooks`.
async fn record(
    store: &Writer,
    job: iewatch::store::JobId,
    hooks: &[iewatch::config::Webhook],
    memory: &Memory,
    events: &[Event],
) {
    let outbox = route(hooks, &JobName::from("Order1"), events);
    store
        .record_bookkeeping(
            job,
            memory,
            events,
            &outbox,
            std::time::SystemTime::now().into(),
        )
        .await
        .unwrap();
}

/// What PagerDuty was sent and took, as `action condition`.
fn incident_requests(receiver: &Receiver) -> Vec<String> {
    answered(receiver)
        .iter()
        .map(|b| {
            let key = b["dedup_key"].as_str().unwrap();
            let condition = key.strip_prefix("iewatch/prod/Order1/").unwrap();
            format!("{} {condition}", b["event_action"].as_str().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn pagerduty_incidents_are_state_closed_when_the_job_moves_on_or_ends_kept_until_ack() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = flaky(1, 202).await;
    let hooks = webhooks(
        dir.path(),
        &format!(
            "[[webhook]]\nname = \"pd\"\nurl = \"{}\"\nformat = \"pagerduty\"\nrouting_key = \"R0UTINGKEY\"\nretry_initial = \"20ms\"\nretry_max = \"50ms\"\n",
            receiver.url()
        ),
    );
    let store = Writer::open_file(&dir.path().join("iewatch.db"))
        .await
        .unwrap();
    let job = store.load_job("prod", "Order1").await.unwrap().id;
    let all_sent = |n: usize| {
        let receiver = &receiver;
        async move {
            common::wait_until(Duration::from_secs(20), || answered(receiver).len() >= n).await
        }
    };

    // A Data Box order waits for the customer, stalls and has a drive with errors.
    let notifier = start_notifier(&store, hooks.clone());
    let opening = [
        event(
            EventType::JobActionRequired,
            None,
            Some("DataCopy: unlock"),
            Severity::Warning,
        ),
        event(
            EventType::JobStalled,
            None,
            Some("DataCopy for 3d"),
            Severity::Warning,
        ),
        event(
            EventType::DriveCopyStatusChanged,
            Some("D1"),
            Some("CompletedWithErrors"),
            Severity::Error,
        ),
    ];
    record(&store, job, &hooks, &Memory::default(), &opening).await;
    notifier.waker.wake();
    assert!(all_sent(3).await, "{:?}", incident_requests(&receiver));
    notifier.stop().await;
    assert_eq!(
        store.open_incidents("pd", job).await.unwrap(),
        ["action_required", "errors", "stalled"]
    );

    // After a restart: it resumes, a poll recovers that never failed, and it completes
    // while its errors still need someone (the reminders' condition).
    let mut memory = Memory::default();
    memory.clocks.reminder = Some(iewatch::decide::clocks::Reminder {
        condition: "completed_with_errors".into(),
        since: iewatch::moment::Moment::from_unix_secs(1),
        count: 0,
        last: iewatch::moment::Moment::from_unix_secs(1),
    });
    let closing = [
        event(
            EventType::JobResumed,
            None,
            Some("moving again"),
            Severity::Info,
        ),
        event(EventType::JobPollRecovered, None, None, Severity::Info),
        event(
            EventType::JobStateChanged,
            None,
            Some("Completed"),
            Severity::Info,
        ),
    ];
    record(&store, job, &hooks, &memory, &closing).await;
    let notifier = start_notifier(&store, hooks.clone());
    notifier.waker.wake();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.outbox_backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closing events were not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.open_incidents("pd", job).await.unwrap(),
        ["errors"],
        "errors stay open while someone is needed"
    );

    // `iewatch ack` resolves it.
    assert_eq!(
        store
            .acknowledge("Order1", Some("on it"), std::time::SystemTime::now().into())
            .await
            .unwrap(),
        1
    );
    notifier.waker.wake();
    assert!(all_sent(6).await, "{:?}", incident_requests(&receiver));
    notifier.stop().await;
    assert_eq!(
        incident_requests(&receiver),
        [
            "trigger action_required",
            "trigger stalled",
            "trigger errors",
            "resolve stalled",
            "resolve action_required",
            "resolve errors",
        ],
        "no resolve of a key never triggered (polls_failing), none left open"
    );
    assert!(store.open_incidents("pd", job).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_template_renders_each_event_with_its_content_type() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = flaky(2, 200).await;
    std::fs::write(
        dir.path().join("discord.j2"),
        "{\"username\": \"iewatch\",\n \"content\": {{ (severity|upper ~ \" \" ~ account ~ \"/\" ~ job ~ \": \" ~ text)|tojson }}}\n",
    )
    .unwrap();
    let hook = format!(
        "[[webhook]]\nname = \"discord\"\nurl = \"{}\"\nformat = \"template\"\ntemplate_file = \"{}\"\ncontent_type = \"application/json; charset=utf-8\"\nretry_initial = \"20ms\"\nretry_max = \"50ms\"\n",
        receiver.url(),
        dir.path().join("discord.j2").display()
    );
    let events = deliver_lifecycle(dir.path(), &hook, &receiver, 32).await;
    let bodies = answered(&receiver);
    assert_eq!(bodies.len(), events.len());
    for (body, event) in bodies.iter().zip(&events) {
        let expected = format!(
            "{} prod/MySampleJob: {}",
            event.severity.as_str().to_uppercase(),
            event.describe()
        );
        assert_eq!(body["content"], expected.as_str());
    }
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.header("content-type") == "application/json; charset=utf-8"));
}

fn check(config: &Path) -> (bool, String) {
    common::iewatch_output(&[Path::new("check"), Path::new("-c"), config])
}

#[test]
fn check_refuses_a_template_with_a_syntax_error_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.j2"),
        "{\"text\": {{ text|tojson }},\n \"who\": \"iewatch\",\n \"x\": {{ job }\n}\n",
    )
    .unwrap();
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        "[daemon]\ndatabase = \"iewatch.db\"\n\n[[webhook]]\nname = \"chat\"\nurl = \"https://chat.example.com/hook\"\nformat = \"template\"\ntemplate_file = \"broken.j2\"\n\n[[webhook]]\nname = \"pd\"\nformat = \"pagerduty\"\n\n[[webhook]]\nname = \"teams\"\nurl = \"https://teams.example.com/hook\"\nformat = \"teams\"\nrouting_key = \"x\"\nto = [\"a@example.com\"]\n\n[[webhook]]\nname = \"mail\"\nformat = \"email\"\nurl = \"http://smtp.example.com\"\nfrom = \"not an address\"\n\n[[webhook]]\nname = \"mail2\"\nformat = \"email\"\nurl = \"smtps://smtp.example.com\"\nfrom = \"iewatch@example.com\"\nto = [\"ops@example.com\"]\nusername = \"u\"\n",
    )
    .unwrap();
    let (ok, output) = check(&config);
    assert!(!ok);
    assert!(output.contains("broken.j2:3: syntax error"), "{output}");
    assert!(
        output.contains("webhook[1].routing_key_file: is required for format = \"pagerduty\""),
        "{output}"
    );
    for expected in [
        "webhook[2].routing_key: only for format = \"pagerduty\" webhooks",
        "webhook[2].to: only for format = \"email\" webhooks",
        "webhook[3].url: is not smtp://HOST[:PORT] (STARTTLS) or smtps://HOST[:PORT] (implicit TLS)",
        "webhook[4].password_file: is required with username",
    ] {
        assert!(output.contains(expected), "{expected:?} in {output}");
    }
}

/// `check` on `[[webhook]]`s of templates `(file, text, extra keys)`.
fn check_templates(templates: &[(&str, &str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = "[daemon]\ndatabase = \"iewatch.db\"\n".to_owned();
    for (i, (file, text, extra)) in templates.iter().enumerate() {
        std::fs::write(dir.path().join(file), text).unwrap();
        config.push_str(&format!(
            "\n[[webhook]]\nname = \"w{i}\"\nurl = \"https://chat.example.com/hook\"\nformat = \"template\"\ntemplate_file = \"{file}\"\n{extra}"
        ));
    }
    let path = dir.path().join("iewatch.toml");
    std::fs::write(&path, &config).unwrap();
    check(&path)
}

/// The line of `output` holding `needle`.
fn line_with(output: &str, needle: &str) -> String {
    output
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in {output}"))
        .to_owned()
}

#[test]
fn check_rehearses_every_template_against_a_sample_of_every_event_it_takes() {
    let (ok, output) = check_templates(&[
        // A typo: the name is no variable of any event.
        (
            "typo.j2",
            "{\"text\": {{ text|tojson }},\n \"who\": {{ acount|tojson }}}\n",
            "",
        ),
        // Loops far past its fuel.
        (
            "loop.j2",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\n",
            "",
        ),
        // Past its own cap.
        ("big.j2", "{{ text * 200 }}\n", "max_body_bytes = 1024\n"),
    ]);
    assert!(!ok, "{output}");
    line_with(&output, "typo.j2:2: `acount` is no variable of any event");
    assert!(
        line_with(&output, "loop.j2:1").contains("out of fuel"),
        "{output}"
    );
    let big = line_with(&output, "big.j2");
    assert!(big.contains("at most 1024 are sent"), "{big}");
    assert!(
        big.contains("no alert of this webhook would be delivered"),
        "{big}"
    );

    // Only shipping events have a carrier: the other job events would fail, said as a
    // warning naming them; the escaping filters take missing values.
    let (ok, output) = check_templates(&[
        (
            "partial.j2",
            "{\"text\": {{ text|tojson }},\n \"carrier\": \"{{ data.carrier }}\"}\n",
            "events = [\"job.*\"]\n",
        ),
        (
            "good.j2",
            "{\"text\": {{ (to|markdown ~ drive_id|slack)|tojson }}}\n",
            "",
        ),
    ]);
    assert!(ok, "{output}");
    let partial = line_with(&output, "partial.j2:2: undefined value");
    assert!(partial.starts_with("warning"), "{partial}");
    assert!(
        partial.contains("alerts of type job.first_seen"),
        "{partial}"
    );
    assert!(!partial.contains("job.shipping_updated"), "{partial}");
    assert!(!output.contains("good.j2"), "{output}");
}

#[test]
fn the_readmes_ready_templates_pass_their_rehearsal() {
    let readme = include_str!("../README.md");
    let blocks: Vec<&str> = readme
        .split("```jinja\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 3, "Discord, Google Chat, ntfy");
    let files: Vec<String> = (0..blocks.len()).map(|i| format!("t{i}.j2")).collect();
    let templates: Vec<(&str, &str, &str)> = files
        .iter()
        .zip(&blocks)
        .map(|(file, text)| (file.as_str(), *text, ""))
        .collect();
    let (ok, output) = check_templates(&templates);
    assert!(ok && !output.contains("warning"), "{output}");
}

fn notify_test(config: &Path, name: &str) -> (bool, String) {
    common::iewatch_output(&[
        Path::new("notify-test"),
        Path::new(name),
        Path::new("-c"),
        config,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_through_the_real_path_and_says_how_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let up = Receiver::start(|_| Reply::Status(200)).await;
    let pd = Receiver::start(|_| Reply::Status(202)).await;
    let down = common::free_port();
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"iewatch.db\"\n\n[[webhook]]\nname = \"ops\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\n[[webhook]]\nname = \"pd\"\nurl = \"{}\"\nformat = \"pagerduty\"\nrouting_key = \"abc\"\n\n[[webhook]]\nname = \"gone\"\nurl = \"http://127.0.0.1:{down}/hook\"\ntimeout = \"2s\"\n",
            up.url(),
            pd.url()
        ),
    )
    .unwrap();
    let (ok, output) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || notify_test(&config, "ops")
    })
    .await
    .unwrap();
    assert!(ok, "{output}");
    assert!(
        output.contains("ops: sent job.state_changed → Faulted: HTTP 200 in"),
        "{output}"
    );
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].header("webhook-signature").starts_with("v1,"),
        "the real, signed path"
    );
    assert_eq!(got[0].json()["data"]["job"]["name"], "iewatch-test");

    let (ok, output) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || notify_test(&config, "pd")
    })
    .await
    .unwrap();
    assert!(ok, "{output}");
    let actions: Vec<String> = pd
        .received()
        .iter()
        .map(|r| r.json()["event_action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        ["trigger", "resolve"],
        "no test incident left open"
    );

    let (ok, output) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || notify_test(&config, "gone")
    })
    .await
    .unwrap();
    assert!(!ok, "{output}");
    assert!(
        output.contains("gone: FAILED job.state_changed → Faulted:"),
        "{output}"
    );
    let (ok, output) = tokio::task::spawn_blocking(move || notify_test(&config, "nope"))
        .await
        .unwrap();
    assert!(!ok);
    assert!(output.contains("no webhook \"nope\""), "{output}");
}
