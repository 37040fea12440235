//! webhook_delivery: deliveries per second to a local receiver (target 2,000/s) from an
//! outbox of 20,000 events over 1,000 jobs, and the change-to-webhook latency (commit to
//! arrival) p50/p99 for changes arriving one at a time.

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
    store::{Observed, Store},
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
                            .unwrap_or_default()
                            .to_owned();
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

fn main() {
    support::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (addr, arrivals) = receiver().await;
        let webhooks = Config::parse(
            &dir.path().join("w.toml"),
            &format!("[[webhook]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"),
        )
        .unwrap()
        .webhooks;
        let store = Store::open(&dir.path().join("iewatch.db")).await.unwrap();

        // Throughput: a backlog of 20,000 deliveries over 1,000 jobs, then the notifier.
        support::queue_backlog(&store, 1000, BACKLOG).await;
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
        while store.outbox_backlog().await.unwrap() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "backlog not drained"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = BACKLOG as f64 / started.elapsed().as_secs_f64();
        assert!(arrivals.lock().unwrap().len() as i64 >= BACKLOG);

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
                    at: SystemTime::now(),
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
