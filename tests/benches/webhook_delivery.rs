//! webhook_delivery: deliveries per second to a local receiver (target 2,000/s) from an
//! outbox of 20,000 events over 1,000 jobs, and the change-to-webhook latency (commit to
//! arrival) p50/p99 for changes arriving one at a time. Then the same backlog with a
//! second webhook whose receiver accepts and never answers: the healthy webhook's rate
//! beside it (target: within 10 % of its rate alone).

mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use iewatch::{
    config::Config,
    detect::detect_changes,
    model::{JobName, JobSnapshot},
    notifier::{self, route, Waker},
    source::classic_wire::Job,
    store::{Observed, Writer},
    telemetry::Telemetry,
};

const SAMPLE: &str = include_str!("../fixtures/get-job-sample.json");
const BACKLOG: i64 = 20_000;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver() -> (std::net::SocketAddr, Arrivals) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let id = request
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        // `iewatch-evt-<id>-<recorded>`: keyed by the event id.
                        let id = id.rsplit_once('-').map_or(id, |(id, _)| id).to_owned();
                        seen.lock().unwrap().entry(id).or_insert_with(Instant::now);
                        async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new()))) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, arrivals)
}

/// A receiver that accepts connections, reads nothing and never answers; with the
/// count of connections it holds.
async fn silent_receiver() -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(0));
    let count = held.clone();
    tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            streams.push(stream);
            *count.lock().unwrap() += 1;
        }
    });
    (addr, held)
}

/// The `[[webhook]]`s: `ops` at `addr`, and `silent` at `silent` if given.
fn webhooks(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    silent: Option<std::net::SocketAddr>,
) -> Vec<iewatch::config::Webhook> {
    let mut text = format!("[[webhook]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n");
    if let Some(silent) = silent {
        text.push_str(&format!(
            "[[webhook]]\nname = \"silent\"\nurl = \"http://{silent}/hook\"\ntimeout = \"2s\"\n"
        ));
    }
    Config::parse(&dir.join("w.toml"), &text).unwrap().webhooks
}

/// A notifier that drained a backlog, still running.
struct Drained {
    /// `ops`' deliveries per second.
    rate: f64,
    store: Writer,
    arrivals: Arrivals,
    webhooks: Vec<iewatch::config::Webhook>,
    waker: Waker,
    stop: tokio_util::sync::CancellationToken,
    notifier: tokio::task::JoinHandle<()>,
}

/// Drains a backlog of [`BACKLOG`] alerts over 1,000 jobs to `ops` (and as many to a
/// silent receiver when `beside_silent`).
async fn drain(dir: &std::path::Path, beside_silent: bool) -> Drained {
    let (addr, arrivals) = receiver().await;
    let silent = if beside_silent {
        Some(silent_receiver().await)
    } else {
        None
    };
    let webhooks = webhooks(dir, addr, silent.as_ref().map(|(addr, _)| *addr));
    let store = Writer::open_file(&dir.join("iewatch.db")).await.unwrap();
    let names: &[&str] = if beside_silent {
        &["ops", "silent"]
    } else {
        &["ops"]
    };
    support::queue_backlog_for(&store, 1000, BACKLOG, names).await;
    let (waker, wake) = Waker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let notifier_task = tokio::spawn(notifier::run(
        store.clone(),
        webhooks.clone(),
        wake,
        Telemetry::new(),
        stop.clone(),
    ));
    // `ops` is done when every alert arrived (the silent one never is).
    while (arrivals.lock().unwrap().len() as i64) < BACKLOG {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "backlog not drained"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = BACKLOG as f64 / started.elapsed().as_secs_f64();
    if let Some((_, held)) = silent {
        // The silent webhook's lanes were under way all along (64 at once).
        assert!(
            *held.lock().unwrap() > 0,
            "the silent receiver was never tried"
        );
    }
    Drained {
        rate,
        store,
        arrivals,
        webhooks,
        waker,
        stop,
        notifier: notifier_task,
    }
}

fn main() {
    support::block_on(async {
        // Best of three each, alternating: one drain's rate varies ±15 % run to run on a
        // two-core machine, more than the cost measured. The first drain alone is kept
        // running for the latency part.
        let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
        let first = drain(dirs[0].path(), false).await;
        let (mut rate, mut rate_beside_silent) = (first.rate, 0.0_f64);
        for (round, dir) in dirs.iter().enumerate().skip(1) {
            let beside_silent = round % 2 == 1;
            let drained = drain(dir.path(), beside_silent).await;
            drained.stop.cancel();
            let best = if beside_silent {
                &mut rate_beside_silent
            } else {
                &mut rate
            };
            *best = best.max(drained.rate);
        }
        let Drained {
            store,
            arrivals,
            webhooks,
            waker,
            stop,
            notifier: notifier_task,
            ..
        } = first;

        // Latency: one change at a time, commit to arrival.
        let (base, document): (JobSnapshot, _) =
            serde_json::from_str::<Job>(SAMPLE).unwrap().into_parts();
        let name = JobName::from("latency");
        let job = store.load_job("prod", name.as_str()).await.unwrap().id;
        let mut previous: Option<JobSnapshot> = None;
        let mut committed: Vec<(String, Instant)> = Vec::new();
        for percent in 0..200 {
            let mut snapshot = base.clone();
            snapshot.percent_complete = Some(percent);
            let events = detect_changes(previous.as_ref(), &snapshot);
            let outbox = route(&webhooks, &name, &events);
            let ids = store
                .record_observation(Observed {
                    job,
                    snapshot: &snapshot,
                    // Rendered per write, as the daemon does once per change.
                    document: &document.render(false),
                    etag: None,
                    last_modified: None,
                    memory: &Default::default(),
                    events: &events,
                    outbox: &outbox,
                    at: SystemTime::now().into(),
                })
                .await
                .unwrap();
            let at = Instant::now();
            waker.wake();
            committed.extend(ids.into_iter().map(|id| (format!("iewatch-evt-{id}"), at)));
            previous = Some(snapshot);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while committed
            .iter()
            .any(|(id, _)| !arrivals.lock().unwrap().contains_key(id))
        {
            assert!(
                Instant::now() < deadline,
                "latency deliveries did not all arrive"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = arrivals.lock().unwrap().clone();
        let mut latencies: Vec<Duration> = committed
            .iter()
            .map(|(id, at)| seen[id].saturating_duration_since(*at))
            .collect();
        latencies.sort();
        stop.cancel();
        notifier_task.await.unwrap();
        support::report(
            "webhook_delivery",
            &[
                ("webhook_delivery_rate", rate, "deliveries/s"),
                (
                    "webhook_delivery_rate_beside_a_silent_receiver",
                    rate_beside_silent,
                    "deliveries/s",
                ),
                (
                    "webhook_delivery_silent_neighbour_cost",
                    (1.0 - rate_beside_silent / rate) * 100.0,
                    "%",
                ),
                (
                    "webhook_delivery_latency_p50",
                    support::percentile_ms(&latencies, 50.0),
                    "ms",
                ),
                (
                    "webhook_delivery_latency_p99",
                    support::percentile_ms(&latencies, 99.0),
                    "ms",
                ),
            ],
        );
    });
}
