//! The `[http]` listener, read-only: `GET /healthz` (200 only when every part makes
//! progress and the database takes writes), `GET /metrics` (Prometheus text or
//! OpenMetrics), the status page (`/`, `/jobs/{account}/{name}`, see [`status_page`]) and
//! its JSON (`/api/v1/jobs`, `/api/v1/jobs/{account}/{name}/events`: what `status --json`
//! and `history --json` print). With `token_file`, every request but /healthz needs
//! `Authorization: Bearer TOKEN` (set one whenever the listener is beyond loopback). It cannot be starved: a connection
//! must send its headers within `header_read_timeout`, serves one request, is closed
//! after `idle_timeout` at the latest, and connections beyond `max_connections` are
//! closed as they come.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    config::HttpSettings,
    status_page,
    store::{Store, Writer},
    supervise::Supervisor,
    telemetry::Telemetry,
};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

/// Why the daemon is not healthy, if it is not.
async fn unhealthy_reason(store: &Writer, telemetry: &Telemetry) -> Option<String> {
    if let Some(stuck) = telemetry.liveness_problem() {
        return Some(stuck);
    }
    if let Err(e) = store.check_identity() {
        return Some(e.to_string());
    }
    store.takes_writes().await.err()
}

/// The listener's two ways into the database: the daemon's own store, whose writer
/// `/healthz` asks for a proof commit, and a store of its own for the pages and the
/// metrics' reads, so that however many readers come they wait on their own
/// connections, never on the writer's or the notifier's. Pages are made one at a time.
#[derive(Clone, Debug)]
pub struct Stores {
    daemon: Writer,
    pages: Store,
    /// A page over 10,000 jobs or of a 20,000-event job is tens of milliseconds of a
    /// core: made one at a time, 50 readers cost the writer one core at most, not all
    /// of them (benchmark `status_page`). A reader waits its turn, bounded by its
    /// connection's timeouts.
    making: Arc<Semaphore>,
}

impl Stores {
    /// `daemon`: the daemon's store; `pages`: one opened for reading (as `iewatch
    /// status` opens it: no migration, no lock).
    pub fn new(daemon: Writer, pages: Store) -> Stores {
        Stores {
            daemon,
            pages,
            making: Arc::new(Semaphore::new(1)),
        }
    }
}

/// Binds `addr` and serves, under `supervisor`, until it stops. Returns the bound
/// address.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    settings: &HttpSettings,
    stores: Stores,
    telemetry: Telemetry,
    supervisor: &Supervisor,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(settings.listen).await?;
    let bound = listener.local_addr()?;
    let shutdown = supervisor.stopping().clone();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (header_read_timeout, idle_timeout) = (settings.header_read_timeout, settings.idle_timeout);
    let token: Option<Arc<str>> = settings.token.as_deref().map(Arc::from);
    supervisor.spawn("http listener", async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("http: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Full: this connection is closed at once rather than held.
                drop(stream);
                continue;
            };
            let (stores, telemetry) = (stores.clone(), telemetry.clone());
            let shutdown = shutdown.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (stores, telemetry, token) =
                            (stores.clone(), telemetry.clone(), token.clone());
                        async move {
                            Ok::<_, Infallible>(
                                answer(&request, &stores, &telemetry, token.as_deref()).await,
                            )
                        }
                    });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = tokio::time::timeout(idle_timeout, connection) => {}
                    () = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(bound)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    // Every answer: nothing runs, loads or frames it but its own inline styles and icon;
    // it is never cached (live data, maybe behind a token) and names no referrer.
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// The pages need their inline styles and the inline icon, nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Whether `request` carries `Authorization: Bearer TOKEN` (compared in constant time).
fn bearer_matches(request: &Request<hyper::body::Incoming>, token: &str) -> bool {
    // RFC 7235: the scheme is case-insensitive (`bearer`, `BEARER`).
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
    else {
        return false;
    };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

async fn answer(
    request: &Request<hyper::body::Incoming>,
    stores: &Stores,
    telemetry: &Telemetry,
    token: Option<&str>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let path = request.uri().path();
    if path != "/healthz" && token.is_some_and(|t| !bearer_matches(request, t)) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "a bearer token is required (Authorization: Bearer ...)\n".into(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"iewatch\""),
        );
        return response;
    }
    match path {
        "/healthz" => match unhealthy_reason(&stores.daemon, telemetry).await {
            None => {
                let mut body = match telemetry.role() {
                    None => "ok\n".to_owned(),
                    Some(role) => format!("ok: {role}\n"),
                };
                // Healthy, but an operator should know: a job's memory was reset.
                for reset in telemetry.memory_resets() {
                    body.push_str(&format!(
                        "memory reset: {}\n",
                        crate::telemetry::printable(&reset)
                    ));
                }
                text(StatusCode::OK, "text/plain", body)
            }
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{reason}\n"),
            ),
        },
        "/metrics" => {
            if let Ok(backlog) = stores.pages.outbox_backlog().await {
                telemetry.set_backlog(backlog);
            }
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (body, content_type) = crate::telemetry::negotiate_metrics(telemetry, accept);
            text(StatusCode::OK, content_type, body)
        }
        _ => {
            let asked = status_page::PageQuery::parse(request.uri().query());
            let _turn = stores.making.acquire().await.ok();
            pages(path, &stores.pages, telemetry.role(), asked).await
        }
    }
}

/// The status page and its JSON; `role`: leader or standby, on PostgreSQL.
/// `asked`: what the query string asks for (reload, older events).
// Long: one match over the page routes, each arm a read and a render.
async fn pages(
    path: &str,
    store: &Store,
    role: Option<String>,
    asked: status_page::PageQuery,
) -> Response<Full<Bytes>> {
    let refresh = asked.refresh;
    const HTML: &str = "text/html; charset=utf-8";
    let now = crate::wall_clock::now();
    let failed = |e: crate::store::StoreError| {
        tracing::warn!("http: cannot read the database: {e}");
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "cannot read the database; see the log\n".into(),
        )
    };
    let not_found = || {
        text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /api/v1/jobs, /healthz or /metrics\n".into(),
        )
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => match store.status().await {
            Ok(jobs) => text(
                StatusCode::OK,
                HTML,
                status_page::index(&jobs, now, role.as_deref(), refresh),
            ),
            Err(e) => failed(e),
        },
        ["api", "v1", "jobs"] => match store.status().await {
            Ok(jobs) => json(&jobs),
            Err(e) => failed(e),
        },
        ["jobs", account, name] | ["api", "v1", "jobs", account, name, "events"] => {
            let (Some(account), Some(name)) = (
                status_page::decode_segment(account),
                status_page::decode_segment(name),
            ) else {
                return not_found();
            };
            // This job alone: a name may hold `/`, and a page must not read every job.
            let job = match store.status_of(&account, &name).await {
                Ok(Some(job)) => job,
                Ok(None) => return not_found(),
                Err(e) => return failed(e),
            };
            if segments[0] == "api" {
                return match store.history_of(&account, &name, None).await {
                    Ok(events) => json(&events),
                    Err(e) => failed(e),
                };
            }
            let limit = status_page::PAGE_EVENTS;
            let read = tokio::try_join!(
                store.timeline_page(&account, &name, asked.before, limit),
                store.chart_events(&account, &name),
                store.job_deliveries(&account, &name, 200),
            );
            match read {
                Ok((timeline, chart, deliveries)) => {
                    let shown = status_page::JobPage {
                        timeline: &timeline,
                        chart: &chart,
                        deliveries: &deliveries,
                    };
                    text(
                        StatusCode::OK,
                        HTML,
                        status_page::job(&job, &shown, now, refresh),
                    )
                }
                Err(e) => failed(e),
            }
        }
        _ => not_found(),
    }
}

/// Pretty JSON, as `status --json` and `history --json` print it.
fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(body) => text(StatusCode::OK, "application/json", body + "\n"),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}
