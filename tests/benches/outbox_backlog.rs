//! outbox_backlog: 100,000 alerts of one job queued while the endpoint is down. Figures:
//! the notifier's CPU for one retry wave and between waves while the endpoint stays down
//! (target: near idle between waves), the same for 100,000 alerts over 1,000 jobs, and
//! the drain rate in order once the endpoint is back (target ≥ 1,000/s).

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use iewatch::{
    config::Config,
    notifier::{self, Waker},
    store::Writer,
    telemetry::Telemetry,
};

const BACKLOG: i64 = 100_000;
/// CPU is measured this long after a retry wave, before the next (retries 4-6 s apart).
const BETWEEN_WAVES: Duration = Duration::from_secs(3);

/// A receiver on `addr` counting requests, answering 200.
async fn receiver(addr: SocketAddr) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_: http::Request<hyper::body::Incoming>| {
                        seen.fetch_add(1, Ordering::Relaxed);
                        async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new()))) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    count
}

/// A database with `BACKLOG` pending alerts spread over `jobs` jobs, as the daemon
/// leaves it: events, deliveries and their lanes.
async fn backlog(dir: &std::path::Path, jobs: i64) -> Writer {
    let store = Writer::open_file(&dir.join(format!("backlog-{jobs}.db")))
        .await
        .unwrap();
    support::queue_backlog(&store, jobs, BACKLOG).await;
    store
}

/// While the endpoint refuses connections: the notifier's CPU time for the first retry
/// wave (every lane tried once), and its share of a core in the quiet after it.
async fn cpu_while_down(store: &Writer, webhooks: &[iewatch::config::Webhook]) -> (f64, f64) {
    let lanes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_lanes")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let (_waker, wake) = Waker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let cpu_before = support::cpu_time("self");
    let task = tokio::spawn(notifier::run(
        store.clone(),
        webhooks.to_vec(),
        wake,
        Telemetry::new(),
        stop.clone(),
    ));
    let started = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox_lanes WHERE next_attempt_at > strftime('%Y-%m-%d %H:%M:%f', 'now')",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting == lanes {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first wave ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wave = support::cpu_time("self").saturating_sub(cpu_before);
    let (quiet_before, quiet_started) = (support::cpu_time("self"), Instant::now());
    tokio::time::sleep(BETWEEN_WAVES).await;
    let quiet = support::cpu_time("self").saturating_sub(quiet_before);
    let share = quiet.as_secs_f64() / quiet_started.elapsed().as_secs_f64() * 100.0;
    stop.cancel();
    task.await.unwrap();
    (wave.as_secs_f64() * 1000.0, share)
}

fn main() {
    support::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let webhooks = Config::parse(
            &dir.path().join("w.toml"),
            &format!("[[webhook]]\nname = \"ops\"\nurl = \"http://{addr}/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_initial = \"5s\"\nretry_max = \"5s\"\n"),
        )
        .unwrap()
        .webhooks;

        let spread = backlog(dir.path(), 1_000).await;
        let (spread_wave, spread_quiet) = cpu_while_down(&spread, &webhooks).await;
        spread.close().await;

        let store = backlog(dir.path(), 1).await;
        let (one_wave, one_quiet) = cpu_while_down(&store, &webhooks).await;

        // The endpoint comes back: the one job's backlog drains, in order.
        let received = receiver(addr).await;
        let (waker, wake) = Waker::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(notifier::run(
            store.clone(),
            webhooks.clone(),
            wake,
            Telemetry::new(),
            stop.clone(),
        ));
        waker.wake();
        while store.outbox_backlog().await.unwrap() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "backlog not drained"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drain = started.elapsed().as_secs_f64();
        stop.cancel();
        task.await.unwrap();
        assert!(received.load(Ordering::Relaxed) as i64 >= BACKLOG);
        let out_of_order: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT delivered_at,
                    LAG(delivered_at) OVER (PARTITION BY job_id ORDER BY event_id) AS before
                 FROM deliveries) WHERE before > delivered_at",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(out_of_order, 0, "one job's alerts arrive in order");
        support::report(
            "outbox_backlog",
            &[
                ("outbox_backlog_down_one_job_wave_cpu", one_wave, "ms"),
                (
                    "outbox_backlog_down_one_job_between_waves_cpu",
                    one_quiet,
                    "% of a core",
                ),
                ("outbox_backlog_down_1000_jobs_wave_cpu", spread_wave, "ms"),
                (
                    "outbox_backlog_down_1000_jobs_between_waves_cpu",
                    spread_quiet,
                    "% of a core",
                ),
                (
                    "outbox_backlog_drain_rate",
                    BACKLOG as f64 / drain,
                    "deliveries/s",
                ),
                ("outbox_backlog_drain_time", drain, "s"),
            ],
        );
    });
}
