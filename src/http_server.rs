//! The `[http]` listener: `GET /healthz` (200 only when the database takes writes and the
//! scheduler and notifier loops go round) and `GET /metrics` (Prometheus text).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use crate::{store::Store, supervise::Supervisor, telemetry::Telemetry};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const HEALTH_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the daemon is not healthy, if it is not.
pub async fn unhealthy_reason(store: &Store, telemetry: &Telemetry) -> Option<String> {
    if let Some(stuck) = telemetry.liveness_problem() {
        return Some(stuck);
    }
    if let Err(e) = store.check_identity() {
        return Some(e.to_string());
    }
    match tokio::time::timeout(HEALTH_WRITE_TIMEOUT, store.is_writable()).await {
        Err(_) => Some("database write timed out".into()),
        Ok(Err(e)) => Some(format!("database not writable: {e}")),
        Ok(Ok(())) => telemetry
            .store_error()
            .map(|e| format!("last database write failed: {e}")),
    }
}

/// Binds `addr` and serves, under `supervisor`, until it stops. Returns the bound
/// address.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    store: Store,
    telemetry: Telemetry,
    supervisor: &Supervisor,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let shutdown = supervisor.stopping().clone();
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
            let (store, telemetry, shutdown) = (store.clone(), telemetry.clone(), shutdown.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: Request<hyper::body::Incoming>| {
                        let (store, telemetry) = (store.clone(), telemetry.clone());
                        async move { Ok::<_, Infallible>(answer(&request, &store, &telemetry).await) }
                    },
                );
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
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
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                telemetry.encode(),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
    }
}
