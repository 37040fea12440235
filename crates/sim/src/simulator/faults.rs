//! Fault injection: the answers a misbehaving service gives (errors with Retry-After,
//! garbage, truncated and dripping bodies, stalls, resets).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use iewatch_core::source::classic_wire::Drive;

use super::{
    scenario::{service_json, FaultKind, Version, MANY_DRIVES},
    service::{error, job_not_found, ok_document, ResponseBody},
};

/// The answer of a fault window of `kind` while `current` is the job's version.
// One arm per fault kind, kept in one match so that the catalogue reads as a table.
pub(super) fn faulty(
    kind: FaultKind,
    retry_after: Option<u64>,
    current: &Version,
) -> Response<ResponseBody> {
    match kind {
        FaultKind::Unavailable => with_retry_after(retry_after, error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is currently unavailable to receive requests. Please retry your request.",
            "ServerBusy",
        )),
        FaultKind::Throttled => with_retry_after(retry_after, error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests. Please retry later.",
            "TooManyRequests",
        )),
        FaultKind::InternalError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server encountered an internal error. Please retry the request.",
            "InternalError",
        ),
        FaultKind::NotFound => job_not_found(current.job.as_ref().map_or("?", |j| j.name.as_str())),
        FaultKind::WrongJob | FaultKind::ManyDrives => {
            let mut job = current.job.clone().unwrap_or_default();
            if kind == FaultKind::WrongJob {
                job.name = "SomeoneElse".into();
                job.odata_id = Some("SomeoneElse".into());
            } else {
                job.drive_list = Some(
                    (0..MANY_DRIVES)
                        .map(|i| Drive {
                            drive_id: format!("D{i}"),
                            ..Drive::default()
                        })
                        .collect(),
                );
            }
            ok_document(current, Bytes::from(service_json(&job, false)))
        }
        FaultKind::Malformed => ok_document(
            current,
            Bytes::from_static(b"{\"Name\": \"broken\", \"Properties\": {\"State\": "),
        ),
        FaultKind::WrongContentType => {
            let mut response = ok_document(
                current,
                Bytes::from_static(b"<html><body>Service Unavailable</body></html>"),
            );
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            response
        }
        FaultKind::Truncated => {
            let body = current.body.clone();
            let length = body.len().max(2);
            let (parts, _) = ok_document(current, Bytes::new()).into_parts();
            let mut response = Response::from_parts(
                parts,
                FaultBody::truncated(body.slice(..body.len() / 2)).boxed(),
            );
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            response
        }
        FaultKind::Drip => {
            let (parts, _) = ok_document(current, Bytes::new()).into_parts();
            let mut response =
                Response::from_parts(parts, FaultBody::drip(current.body.clone()).boxed());
            response.headers_mut().insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(current.body.len()),
            );
            response
        }
        // Handled by the caller (no response at all); a 500 if ever reached.
        FaultKind::Stall | FaultKind::Reset | FaultKind::Slow => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "fault", "InternalError")
        }
    }
}

/// Adds `Retry-After: seconds` when the fault window sets one.
pub(crate) fn with_retry_after(
    seconds: Option<u64>,
    mut response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    if let Some(seconds) = seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A body that misbehaves: stops half-way with an error (the connection is dropped), or
/// sends one byte a second.
struct FaultBody {
    remaining: Bytes,
    fail_at_end: bool,
    drip: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FaultBody {
    fn truncated(first_part: Bytes) -> Self {
        FaultBody {
            remaining: first_part,
            fail_at_end: true,
            drip: None,
        }
    }

    fn drip(body: Bytes) -> Self {
        FaultBody {
            remaining: body,
            fail_at_end: false,
            drip: Some(Box::pin(tokio::time::sleep(Duration::ZERO))),
        }
    }
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(sleep) = this.drip.as_mut() {
            if this.remaining.is_empty() {
                return Poll::Ready(None);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + Duration::from_secs(1));
            let byte = this.remaining.split_to(1);
            return Poll::Ready(Some(Ok(Frame::data(byte))));
        }
        if !this.remaining.is_empty() {
            let chunk = std::mem::take(&mut this.remaining);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.fail_at_end {
            this.fail_at_end = false;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "truncated by fault injection",
            ))));
        }
        Poll::Ready(None)
    }
}

use std::future::Future as _;
