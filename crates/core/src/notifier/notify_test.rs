//! `iewatch notify-test`: one test alert to one webhook through the real path (format,
//! signature, TLS, the deadline of every attempt), bypassing its filters and the outbox,
//! and what came of it in the daemon's terms.

use std::time::Duration;

use super::{bounded, deliver, incidents, post_body, Sent, JSON};
use crate::{
    config::{Channel, Webhook},
    http_client,
    store::EventRecord,
    tls,
};

/// One request of `iewatch notify-test`.
#[derive(Clone, Debug)]
pub struct TestDelivery {
    /// What was sent (`job.state_changed Transferring → Faulted`, `resolve`).
    pub what: String,
    /// `HTTP` or `SMTP`: what the status is a code of.
    pub protocol: &'static str,
    /// The receiver's code, if one came back.
    pub status: Option<u16>,
    /// What the daemon would do with this outcome: delivered, transient or permanent.
    pub class: &'static str,
    /// How long the attempt took.
    pub latency: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Sends a test event to one webhook through the real path (format, signature, TLS,
/// timeout), bypassing its filters and the outbox: a job `iewatch-test` of account
/// `notify-test` going Transferring → Faulted (an error); PagerDuty also gets the
/// resolve of that incident, so that no test incident stays open.
// Long: the sample event, then each attempt and its one line of outcome; PagerDuty's
// trigger-then-resolve is the only branch.
pub async fn notify_test(webhook: &Webhook) -> Vec<TestDelivery> {
    let client = match tls::client_config(tls::root_store(&[], true), None) {
        Ok(config) => http_client::build_client(config, Duration::from_secs(10), false),
        Err(e) => {
            return vec![TestDelivery {
                what: "TLS set-up".into(),
                protocol: "HTTP",
                status: None,
                class: "permanent: the daemon cannot send either",
                latency: Duration::ZERO,
                error: Some(e.to_string()),
            }]
        }
    };
    let now = crate::wall_clock::now();
    let event = |id: i64, to: &str, severity| EventRecord {
        id,
        account: "notify-test".into(),
        job: "iewatch-test".into(),
        event_type: crate::events::EventType::JobStateChanged,
        drive_id: None,
        from: Some("Transferring".into()),
        to: Some(to.into()),
        observed_at: now,
        severity,
        details: Some(
            serde_json::json!({"job": {"type": "Import", "state": to, "percent_complete": 40}}),
        ),
    };
    let faulted = event(0, "Faulted", crate::model::Severity::Error);
    let mut tries = vec![(faulted, None)];
    let routing_key = match &webhook.channel {
        Channel::PagerDuty { routing_key } => Some(routing_key.expose()),
        _ => None,
    };
    if routing_key.is_some() {
        use incidents::PagerDutyAction::{Resolve, Trigger};
        tries = vec![
            (tries[0].0.clone(), Some(Trigger)),
            (
                event(0, "Completed", crate::model::Severity::Info),
                Some(Resolve),
            ),
        ];
    }
    let mut outcomes = Vec::new();
    let smtp = super::email::Parked::default();
    for (event, action) in tries {
        let started = std::time::Instant::now();
        let sent = match action.zip(routing_key) {
            None => deliver(&client, &smtp, webhook, std::slice::from_ref(&event)).await,
            Some((action, routing_key)) => {
                let body = incidents::pagerduty_body(&event, routing_key, action, "errors");
                bounded(
                    webhook,
                    post_body(&client, webhook, &event, body, JSON.into()),
                )
                .await
            }
        };
        let what = format!(
            "{} → {}{}",
            event.event_type,
            event.to.as_deref().unwrap_or("-"),
            action.map_or(String::new(), |a| format!(
                " ({})",
                format!("{a:?}").to_lowercase()
            ))
        );
        let (status, error, class) = match sent {
            Sent::Ok(status) => (Some(status), None, "delivered"),
            Sent::Gone => (
                Some(410),
                Some("410 Gone: the endpoint is disabled".into()),
                "permanent: the daemon disables this webhook",
            ),
            Sent::Refused { status, error } => (
                status,
                Some(error),
                "permanent: the daemon gives it up at once",
            ),
            Sent::Retry { status, error, .. } => {
                (status, Some(error), "transient: the daemon retries it")
            }
        };
        outcomes.push(TestDelivery {
            what,
            protocol: if matches!(webhook.channel, Channel::Email(_)) {
                "SMTP"
            } else {
                "HTTP"
            },
            status,
            class,
            latency: started.elapsed(),
            error,
        });
    }
    outcomes
}
