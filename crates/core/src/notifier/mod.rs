//! The notifier: delivers the `deliveries` outbox to every channel (a `[[webhook]]` of
//! any format: HTTP bodies from [`payload`], e-mail through [`email`]). One worker per webhook
//! ([`worker`]) sends each job's deliveries in order on a lane of its own, concurrently
//! across jobs, and sleeps until the next retry is due or the scheduler commits new
//! rows. Because the outbox is written in the same transaction as the events, a crash or
//! an endpoint that is down for hours loses nothing.

pub mod email;
pub mod incidents;
mod notify_test;
pub mod nudge;
pub mod routing;
mod template;
mod worker;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use rand::Rng as _;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub use notify_test::{notify_test, TestDelivery};
pub use routing::route;

use crate::{
    config::{Channel, Webhook},
    http_client::{self, HttpsClient, USER_AGENT},
    payload,
    store::{Attempt, EventRecord, JobId, OutboxItem, Writer},
    telemetry::Telemetry,
    tls,
};

/// The Content-Type of every built-in format's body.
const JSON: &str = "application/json";

/// Response bodies are read (so that the connection can be reused) up to this size;
/// past it the rest is dropped with the connection.
const RESPONSE_READ: usize = 64 * 1024;

/// Tells the notifier that new outbox rows were committed.
#[derive(Clone, Debug)]
pub struct Waker(Arc<watch::Sender<u64>>);

impl Waker {
    /// A waker and the receiver the notifier listens on.
    pub fn new() -> (Waker, watch::Receiver<u64>) {
        let (tx, rx) = watch::channel(0);
        (Waker(Arc::new(tx)), rx)
    }

    /// Wakes every webhook worker.
    pub fn wake(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Runs one worker per webhook until `shutdown`; in-flight attempts finish first.
pub async fn run(
    store: Writer,
    webhooks: Vec<Webhook>,
    wake: watch::Receiver<u64>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    let roots = tls::root_store(&[], true);
    let client = match tls::client_config(roots, None) {
        Ok(config) => http_client::build_client(config, Duration::from_secs(10), false),
        Err(e) => {
            tracing::error!("webhooks disabled: cannot set up TLS: {e}");
            return;
        }
    };
    let mut workers = JoinSet::new();
    if !webhooks.is_empty() {
        let (nudged, wake_rx) = watch::channel(0);
        workers.spawn(forward_wakes(
            store.database().clone(),
            wake,
            nudged,
            shutdown.clone(),
        ));
        for webhook in webhooks {
            workers.spawn(worker::run(
                store.clone(),
                webhook,
                client.clone(),
                wake_rx.clone(),
                telemetry.clone(),
                shutdown.clone(),
            ));
        }
    }
    while let Some(joined) = workers.join_next().await {
        let failure = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        // Returning early makes the supervisor report the notifier's death.
        tracing::error!("a webhook worker failed: {failure}");
        return;
    }
    // No webhooks (or every one disabled): nothing to do until the generation stops.
    shutdown.cancelled().await;
}

/// Passes on the daemon's wakes and the nudges of other processes (see [`nudge`]) to
/// the workers, until `shutdown`.
async fn forward_wakes(
    database: crate::store::Database,
    mut wake: watch::Receiver<u64>,
    workers: watch::Sender<u64>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let mut fifo = match nudge::listen_to(&database).await {
        Ok(fifo) => Some(fifo),
        Err(e) => {
            tracing::warn!(
                "`iewatch redeliver` from another process will be noticed within {}s only: cannot listen for nudges (the database's .wake FIFO, or LISTEN on PostgreSQL): {e}",
                worker::IDLE_RECHECK.as_secs()
            );
            None
        }
    };
    loop {
        let nudged = async {
            match &mut fifo {
                Some(fifo) => nudge::next_nudge(fifo).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = wake.changed() => {
                if changed.is_err() {
                    // The daemon's waker is gone: the generation is ending.
                    shutdown.cancelled().await;
                    return Ok(());
                }
            }
            read = nudged => {
                if let Err(e) = read {
                    tracing::warn!("stopped listening for nudges: {e}");
                    fifo = None;
                }
            }
        }
        workers.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// An SMTP outcome as a delivery outcome: a 5xx reply is a permanent refusal (an
/// unknown mailbox does not appear by retrying), everything else (4xx: a full mailbox,
/// greylisting; no answer; TLS) is retried within `give_up_after`.
fn mailed(sent: Result<u16, email::MailError>) -> Sent {
    match sent {
        Ok(code) => Sent::Ok(code),
        Err(e) if e.permanent => Sent::Refused {
            status: e.code,
            error: e.text,
        },
        Err(e) => Sent::Retry {
            status: e.code,
            error: e.text,
            retry_after: None,
        },
    }
}

/// Every attempt of every channel goes through here, the one place that bounds it: the
/// whole attempt (connect, TLS, SMTP greeting, request or DATA, the response) must end
/// within the webhook's `timeout`. Past it the attempt is dropped, its connection with
/// it, and counted as a transient failure; so a receiver that accepts and never answers
/// costs a lane one timeout per retry, never the lane.
async fn deliver(
    client: &HttpsClient,
    smtp: &email::Parked,
    webhook: &Webhook,
    events: &[EventRecord],
) -> Sent {
    bounded(webhook, async {
        match (&webhook.channel, events) {
            (Channel::Email(settings), _) => mailed(email::send(settings, smtp, events).await),
            (_, [event]) => post(client, webhook, event).await,
            (_, _) => Sent::Refused {
                status: None,
                error: "only e-mail sends several events in one message".into(),
            },
        }
    })
    .await
}

/// The deadline of [`deliver`], for the attempts that are not one event's one message
/// (PagerDuty's steps of an incident, `notify-test`).
async fn bounded(webhook: &Webhook, attempt: impl std::future::Future<Output = Sent>) -> Sent {
    match tokio::time::timeout(webhook.timeout, attempt).await {
        Ok(sent) => sent,
        Err(_) => Sent::Retry {
            status: None,
            error: format!(
                "no complete answer within {} (the webhook's timeout)",
                humantime::format_duration(webhook.timeout)
            ),
            retry_after: None,
        },
    }
}

/// The outcome of one attempt at `item` of `job`'s lane, with the retry time and
/// give-up rule applied; true when the endpoint said 410 Gone.
async fn attempt(
    client: &HttpsClient,
    smtp: &email::Parked,
    webhook: &Webhook,
    store: &Writer,
    job: JobId,
    item: &OutboxItem,
) -> (Attempt, bool) {
    let sent = match &webhook.channel {
        Channel::PagerDuty { routing_key } => {
            let to = (webhook, routing_key.expose());
            incident_steps(client, to, store, job, &item.event).await
        }
        _ => deliver(client, smtp, webhook, std::slice::from_ref(&item.event)).await,
    };
    outcome_of(sent, webhook, item)
}

/// PagerDuty: the triggers and resolves `event` makes of the job's open incidents, each
/// bounded like any attempt and remembered once PagerDuty took it; so a retry after a
/// failure (or a crash) sends only what is left.
async fn incident_steps(
    client: &HttpsClient,
    (webhook, routing_key): (&Webhook, &[u8]),
    store: &Writer,
    job: JobId,
    event: &EventRecord,
) -> Sent {
    use incidents::PagerDutyAction;
    let Some(incident) = incidents::incident_of(
        event.event_type,
        event.severity,
        event.drive_id.as_ref().map(|d| d.as_str()),
        event.to.as_deref(),
    ) else {
        // Queued before a format change: done with, not retried forever.
        return Sent::Ok(0);
    };
    let store_failed = |e: crate::store::StoreError| Sent::Retry {
        status: None,
        error: format!("cannot read or record the open incidents: {e}"),
        retry_after: None,
    };
    let open = match store.open_incidents(&webhook.name, job).await {
        Ok(open) => open,
        Err(e) => return store_failed(e),
    };
    let needs_someone = match incident {
        incidents::Incident::Ended { .. } => match store.needs_someone(job).await {
            Ok(needs) => needs,
            Err(e) => return store_failed(e),
        },
        _ => false,
    };
    // Nothing open to close answers 0: nothing was sent, nothing is owed.
    let mut answer = Sent::Ok(0);
    for (action, condition) in incidents::steps(&incident, &open, needs_someone) {
        let body = incidents::pagerduty_body(event, routing_key, action, &condition);
        answer = bounded(
            webhook,
            post_body(client, webhook, event, body, JSON.into()),
        )
        .await;
        if !matches!(answer, Sent::Ok(_)) {
            return answer;
        }
        let remembered = match action {
            PagerDutyAction::Trigger => {
                store
                    .incident_opened(&webhook.name, job, &condition, crate::wall_clock::now())
                    .await
            }
            PagerDutyAction::Resolve => store.incident_closed(&webhook.name, job, &condition).await,
        };
        if let Err(e) = remembered {
            return store_failed(e);
        }
    }
    answer
}

/// One e-mail for a job's pending deliveries (`digest_every`): the same outcome for all,
/// its retry and give-up times counted from the oldest.
async fn attempt_digest(
    client: &HttpsClient,
    smtp: &email::Parked,
    webhook: &Webhook,
    items: &[OutboxItem],
) -> Attempt {
    let Some(oldest) = items.first() else {
        return Attempt::Delivered { status: 0 };
    };
    let events: Vec<EventRecord> = items.iter().map(|i| i.event.clone()).collect();
    outcome_of(
        deliver(client, smtp, webhook, &events).await,
        webhook,
        oldest,
    )
    .0
}

/// A sent (or not) request as the outcome to record, with the retry time and give-up
/// rule applied; true when the endpoint said 410 Gone.
fn outcome_of(sent: Sent, webhook: &Webhook, item: &OutboxItem) -> (Attempt, bool) {
    let outcome = match sent {
        Sent::Ok(status) => Attempt::Delivered { status },
        Sent::Gone => {
            return (
                Attempt::Failed {
                    status: Some(410),
                    error: "410 Gone: endpoint disabled".into(),
                },
                true,
            )
        }
        Sent::Refused { status, error } => {
            tracing::warn!(webhook = %webhook.name, event = item.event.id, "delivery refused for good, not retried: {}", crate::telemetry::printable(&error));
            Attempt::Failed {
                status,
                error: format!("refused (not retried): {error}"),
            }
        }
        Sent::Retry {
            status,
            error,
            retry_after,
        } => {
            let now = crate::wall_clock::now();
            // A receiver's Retry-After is honoured up to `retry_max`, like our own backoff.
            let delay = retry_after
                .unwrap_or_else(|| backoff(webhook, item.attempts))
                .min(webhook.retry_max);
            let next_at = now.saturating_add(delay);
            let deadline = item
                .first_attempt_at
                .unwrap_or(now)
                .saturating_add(webhook.give_up_after);
            if next_at > deadline {
                tracing::warn!(webhook = %webhook.name, event = item.event.id, "giving up delivery: {}", crate::telemetry::printable(&error));
                Attempt::Failed {
                    status,
                    error: format!(
                        "gave up after {} attempts: {error}",
                        item.attempts.saturating_add(1)
                    ),
                }
            } else {
                tracing::debug!(webhook = %webhook.name, event = item.event.id, "delivery failed, will retry: {}", crate::telemetry::printable(&error));
                Attempt::Retry {
                    status,
                    error,
                    next_at,
                }
            }
        }
    };
    (outcome, false)
}

/// Exponential backoff with ±20% jitter, capped at `retry_max`.
fn backoff(webhook: &Webhook, attempts_before: u32) -> Duration {
    let exponential = webhook
        .retry_initial
        .saturating_mul(1u32 << attempts_before.min(20));
    exponential
        .min(webhook.retry_max)
        .mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// The receiver's word on one attempt, in every channel's terms.
enum Sent {
    /// Accepted, with the HTTP or SMTP code.
    Ok(u16),
    /// 410 Gone: the endpoint is disabled.
    Gone,
    /// Refused for good (an SMTP 5xx, PagerDuty's 400): given up at once, the lane goes on.
    Refused { status: Option<u16>, error: String },
    /// Not delivered this time (no answer, an SMTP 4xx, 429, a 5xx): retried.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// The body of `event` in the webhook's format and its Content-Type; None when the
/// channel does not take the event (PagerDuty gets triggers and resolves only).
async fn body(webhook: &Webhook, event: &EventRecord) -> Result<Option<(Vec<u8>, String)>, String> {
    let json = |body: Vec<u8>| Ok(Some((body, JSON.to_owned())));
    match &webhook.channel {
        Channel::Json { .. } => json(payload::json_body(event)),
        Channel::Slack => json(payload::slack_body(event)),
        Channel::Teams => json(payload::teams_body(event)),
        Channel::PagerDuty { .. } => {
            Err("PagerDuty events are sent by their lane, against the open incidents".into())
        }
        Channel::Email(_) => Err("e-mail goes by SMTP, not as a body".into()),
        Channel::Template(template) => {
            let body = template::render_template(template, event).await?;
            Ok(Some((body, template.content_type.clone())))
        }
    }
}

/// POSTs `event` in the webhook's HTTP format; only [`deliver`] calls it.
async fn post(client: &HttpsClient, webhook: &Webhook, event: &EventRecord) -> Sent {
    let (body, content_type) = match body(webhook, event).await {
        Ok(Some(body)) => body,
        // Routing sends a channel only what it takes; an event queued before a format
        // change is done with, not retried forever.
        Ok(None) => return Sent::Ok(0),
        // A template that fails, runs out of fuel or renders too much fails the same way
        // every time: given up at once (redeliverable once the template is mended).
        Err(error) => {
            return Sent::Refused {
                status: None,
                error,
            }
        }
    };
    post_body(client, webhook, event, body, content_type).await
}

/// POSTs `body` made of `event`; only [`post`] and PagerDuty's steps call it.
async fn post_body(
    client: &HttpsClient,
    webhook: &Webhook,
    event: &EventRecord,
    body: Vec<u8>,
    content_type: String,
) -> Sent {
    let mut request = Request::post(webhook.url.uri().clone())
        .header(header::CONTENT_TYPE, content_type)
        .header(header::USER_AGENT, USER_AGENT);
    if let Channel::Json { secret } = &webhook.channel {
        let id = payload::webhook_id(event);
        let timestamp = crate::wall_clock::now().unix_secs();
        request = request
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp);
        if let Some(secret) = secret {
            request = request.header(
                "webhook-signature",
                payload::signature(secret.expose(), &id, timestamp.unsigned_abs(), &body),
            );
        }
    }
    let request = match request.body(Full::new(Bytes::from(body))) {
        Ok(request) => request,
        Err(e) => {
            return Sent::Retry {
                status: None,
                error: format!("cannot build request: {e}"),
                retry_after: None,
            }
        }
    };
    // A 2xx is success whatever its body: at most a little of it is read.
    match http_client::send_for_status(client, request, webhook.timeout, RESPONSE_READ).await {
        Ok((status, _)) if status.is_success() => Sent::Ok(status.as_u16()),
        Ok((http::StatusCode::GONE, _)) => Sent::Gone,
        // PagerDuty's 400 is an event it will never take ("invalid event"): retrying it
        // would hold the job's later alerts behind it until give_up_after.
        Ok((http::StatusCode::BAD_REQUEST, _))
            if matches!(webhook.channel, Channel::PagerDuty { .. }) =>
        {
            Sent::Refused {
                status: Some(400),
                error: "HTTP 400 Bad Request: PagerDuty refuses this event".into(),
            }
        }
        Ok((status, headers)) => Sent::Retry {
            status: Some(status.as_u16()),
            error: format!("HTTP {status}"),
            retry_after: http_client::retry_after(&headers),
        },
        Err(e) => Sent::Retry {
            status: None,
            error: e.to_string(),
            retry_after: None,
        },
    }
}
