//! The `[http]` listener: `GET /healthz` (200 only when every part makes progress and the
//! database takes writes) and `GET /metrics` (Prometheus text). It cannot be starved: a
//! connection must send its headers within `header_read_timeout`, serves one request, is
//! closed after `idle_timeout` at the latest, and connections beyond `max_connections`
//! are closed as they come.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use crate::{config::HttpSettings, store::Store, supervise::Supervisor, telemetry::Telemetry};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

/// Why the daemon is not healthy, if it is not.
async fn unhealthy_reason(store: &Store, telemetry: &Telemetry) -> Option<String> {
    if let Some(stuck) = telemetry.liveness_problem() {
        return Some(stuck);
    }
    if let Err(e) = store.check_identity() {
        return Some(e.to_string());
    }
    store.takes_writes().await.err()
}

/// Binds `addr` and serves, under `supervisor`, until it stops. Returns the bound
/// address.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    settings: &HttpSettings,
    store: Store,
    telemetry: Telemetry,
    supervisor: &Supervisor,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(settings.listen).await?;
    let bound = listener.local_addr()?;
    let shutdown = supervisor.stopping().clone();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (header_read_timeout, idle_timeout) = (settings.header_read_timeout, settings.idle_timeout);
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
            let (store, telemetry) = (store.clone(), telemetry.clone());
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(
                    move |request: Request<hyper::body::Incoming>| {
                        let (store, telemetry) = (store.clone(), telemetry.clone());
                        async move { Ok::<_, Infallible>(answer(&request, &store, &telemetry).await) }
                    },
                );
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
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

async fn answer(
    request: &Request<hyper::body::Incoming>,
    store: &Store,
    telemetry: &Telemetry,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/healthz" => match unhealthy_reason(store, telemetry).await {
            None => text(StatusCode::OK, "text/plain", "ok\n".into()),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{reason}\n"),
            ),
        },
        "/metrics" => {
            if let Ok(backlog) = store.outbox_backlog().await {
                telemetry.set_backlog(backlog);
            }
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (body, content_type) = crate::telemetry::negotiate_metrics(telemetry, accept);
            text(StatusCode::OK, content_type, body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
    }
}
