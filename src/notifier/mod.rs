//! The notifier: delivers the `deliveries` outbox to webhooks. One worker per webhook
//! takes the oldest pending delivery of each job (so one job's events arrive in order),
//! sends them concurrently across jobs, records the outcomes in one transaction, and
//! sleeps until the next retry is due or the scheduler commits new rows. Because the
//! outbox is written in the same transaction as the events, a crash or an endpoint that
//! is down for hours loses nothing.

pub mod payload;
pub mod routing;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
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
    telemetry::{now_ms, Telemetry, LIVENESS_SLACK},
    tls,
};

/// Deliveries taken per round; also the most in flight per webhook.
const BATCH: u32 = 64;
/// Longest sleep with nothing due, so that `iewatch redeliver` from another process is
/// picked up without a signal.
const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// Response bodies are read (to keep the connection reusable) up to this size.
const RESPONSE_LIMIT: usize = 64 * 1024;
/// Pause after a database error before trying again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(2);

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
        workers.spawn(worker(
            store.clone(),
            webhook,
            client.clone(),
            wake.clone(),
            telemetry.clone(),
            shutdown.clone(),
        ));
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            // Returning early makes the supervisor report the notifier's death.
            tracing::error!("a webhook worker failed: {e}");
            return;
        }
    }
    // No webhooks (or every one disabled): nothing to do until the generation stops.
    shutdown.cancelled().await;
}

async fn worker(
    store: Store,
    webhook: Webhook,
    client: HttpsClient,
    mut wake: watch::Receiver<u64>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    let webhook = Arc::new(webhook);
    let probe = format!("webhook {}", webhook.name);
    let round = Arc::new(AtomicU64::new(now_ms()));
    let allowance = webhook.timeout + IDLE_RECHECK + LIVENESS_SLACK;
    let (last_round, name) = (round.clone(), webhook.name.clone());
    telemetry.set_probe(
        probe.clone(),
        Arc::new(move || {
            let since = now_ms().saturating_sub(last_round.load(Ordering::Relaxed));
            (Duration::from_millis(since) > allowance)
                .then(|| format!("webhook {name} has not gone round for {}s", since / 1000))
        }),
    );
    loop {
        wake.borrow_and_update();
        round.store(now_ms(), Ordering::Relaxed);
        let due = match store
            .due_deliveries(&webhook.name, SystemTime::now(), BATCH)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(webhook = %webhook.name, "cannot read the outbox: {e}");
                if sleep_or_shutdown(STORE_ERROR_PAUSE, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let full_batch = due.len() == BATCH as usize;
        if !due.is_empty() {
            let (outcomes, gone) = attempt_all(&client, &webhook, due).await;
            for (_, outcome) in &outcomes {
                telemetry.delivery(match outcome {
                    Attempt::Delivered { .. } => "delivered",
                    Attempt::Retry { .. } => "retry",
                    Attempt::Failed { .. } => "failed",
                });
            }
            if let Err(e) = store.record_attempts(&outcomes, SystemTime::now()).await {
                // Not recorded: the rows stay due and are sent again (at-least-once).
                tracing::error!(webhook = %webhook.name, "cannot record delivery outcomes: {e}");
            }
            if gone {
                tracing::error!(
                    webhook = %webhook.name,
                    "endpoint answered 410 Gone: webhook disabled until the next reload or restart"
                );
                telemetry.remove_probes(&probe);
                return;
            }
            if full_batch {
                continue;
            }
        }
        let pause = match store.next_delivery_due(&webhook.name).await {
            Ok(Some(at)) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(IDLE_RECHECK),
            Ok(None) => IDLE_RECHECK,
            Err(e) => {
                tracing::error!(webhook = %webhook.name, "cannot read the outbox: {e}");
                STORE_ERROR_PAUSE
            }
        };
        if pause.is_zero() {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = wake.changed() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Returns true when shutdown came first.
async fn sleep_or_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}

/// Sends every item concurrently (they belong to distinct jobs); returns the outcomes and
/// whether the endpoint said 410 Gone.
async fn attempt_all(
    client: &HttpsClient,
    webhook: &Arc<Webhook>,
    due: Vec<OutboxItem>,
) -> (Vec<(i64, Attempt)>, bool) {
    let mut set = JoinSet::new();
    for item in due {
        let client = client.clone();
        let webhook = webhook.clone();
        set.spawn(async move {
            let result = send(&client, &webhook, &item).await;
            (item, result)
        });
    }
    let mut outcomes = Vec::new();
    let mut gone = false;
    while let Some(joined) = set.join_next().await {
        let Ok((item, result)) = joined else { continue };
        let outcome = match result {
            Sent::Ok(status) => Attempt::Delivered { status },
            Sent::Gone => {
                gone = true;
                Attempt::Failed {
                    status: Some(410),
                    error: "410 Gone: endpoint disabled".into(),
                }
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
                        error: format!("gave up after {} attempts: {error}", item.attempts + 1),
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
        outcomes.push((item.id, outcome));
    }
    (outcomes, gone)
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
    let mut request = Request::post(webhook.url.clone())
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
    match http_client::send(client, request, webhook.timeout, RESPONSE_LIMIT).await {
        Ok(response) if response.status().is_success() => Sent::Ok(response.status().as_u16()),
        Ok(response) if response.status() == http::StatusCode::GONE => Sent::Gone,
        Ok(response) => Sent::Retry {
            status: Some(response.status().as_u16()),
            error: format!("HTTP {}", response.status()),
            retry_after: http_client::retry_after(response.headers()),
        },
        Err(e) => Sent::Retry {
            status: None,
            error: e.to_string(),
            retry_after: None,
        },
    }
}
