//! The notifier: delivers the `deliveries` outbox to webhooks. One worker per webhook
//! ([`worker`]) sends each job's deliveries in order on a lane of its own, concurrently
//! across jobs, and sleeps until the next retry is due or the scheduler commits new
//! rows. Because the outbox is written in the same transaction as the events, a crash or
//! an endpoint that is down for hours loses nothing.

pub mod payload;
pub mod routing;
mod worker;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use rand::Rng as _;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub use routing::route;

use crate::{
    config::{Webhook, WebhookFormat},
    http_client::{self, HttpsClient, USER_AGENT},
    store::{Attempt, OutboxItem, Store},
    telemetry::Telemetry,
    tls,
};

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
    store: Store,
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
    for webhook in webhooks {
        workers.spawn(worker::run(
            store.clone(),
            webhook,
            client.clone(),
            wake.clone(),
            telemetry.clone(),
            shutdown.clone(),
        ));
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

/// The outcome of one attempt at `item`, with the retry time and give-up rule applied;
/// true when the endpoint said 410 Gone.
async fn attempt(client: &HttpsClient, webhook: &Webhook, item: &OutboxItem) -> (Attempt, bool) {
    let outcome = match send(client, webhook, item).await {
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
        Sent::Retry {
            status,
            error,
            retry_after,
        } => {
            let now = SystemTime::now();
            // A receiver's Retry-After is honoured up to `retry_max`, like our own backoff.
            let delay = retry_after
                .unwrap_or_else(|| backoff(webhook, item.attempts))
                .min(webhook.retry_max);
            let next_at = now.checked_add(delay).unwrap_or(now);
            let deadline = item
                .first_attempt_at
                .unwrap_or(now)
                .checked_add(webhook.give_up_after);
            if deadline.is_some_and(|deadline| next_at > deadline) {
                tracing::warn!(webhook = %webhook.name, event = item.event.id, "giving up delivery: {error}");
                Attempt::Failed {
                    status,
                    error: format!(
                        "gave up after {} attempts: {error}",
                        item.attempts.saturating_add(1)
                    ),
                }
            } else {
                tracing::debug!(webhook = %webhook.name, event = item.event.id, "delivery failed, will retry: {error}");
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

enum Sent {
    Ok(u16),
    Gone,
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

async fn send(client: &HttpsClient, webhook: &Webhook, item: &OutboxItem) -> Sent {
    let body = match webhook.format {
        WebhookFormat::Json => payload::json_body(&item.event),
        WebhookFormat::Slack => payload::slack_body(&item.event),
    };
    let mut request = Request::post(webhook.url.uri().clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, USER_AGENT);
    if webhook.format == WebhookFormat::Json {
        let id = payload::webhook_id(&item.event);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        request = request
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp);
        if let Some(secret) = &webhook.secret {
            request = request.header(
                "webhook-signature",
                payload::signature(secret.expose(), &id, timestamp, &body),
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
