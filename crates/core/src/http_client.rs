//! Outbound HTTP shared by every source and the notifier: a hyper-util pooled client over
//! rustls, one whole-request deadline, a hard cap on the response body, no redirects, and
//! a failure type that tells timeouts, TLS and connection problems apart.

use std::{error::Error as _, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

/// A pooled keep-alive client; one per account or webhook set, cloned freely.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The `User-Agent` of every request iewatch makes.
pub const USER_AGENT: &str = concat!("iewatch/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request produced no complete response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The whole request (connect, send, headers, body) took longer than allowed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed: unknown CA, refused client certificate, wrong host.
    #[error("TLS: {0}")]
    Tls(String),
    /// No connection could be made or it broke before a response arrived.
    #[error("connection: {0}")]
    Transport(String),
    /// The body was larger than the cap; it was not read past the cap.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The connection broke while the body was being read (truncated body).
    #[error("reading response body: {0}")]
    Body(String),
}

/// Builds a pooled client. `https_only` refuses plain `http://` URLs (the Service
/// Management API requires HTTPS); webhooks may be plain HTTP on a trusted network.
pub fn build_client(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    https_only: bool,
) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let connector = if https_only {
        builder.https_only().enable_http1().wrap_connector(http)
    } else {
        builder.https_or_http().enable_http1().wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

/// Sends `request` and reads the whole response within `timeout`, refusing bodies over
/// `body_limit` bytes. Redirects are returned as responses, never followed.
///
/// # Errors
/// See [`HttpError`].
pub async fn send(
    client: &HttpsClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
    body_limit: usize,
) -> Result<Response<Bytes>, HttpError> {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(classify_request_error)?;
        let (parts, body) = response.into_parts();
        if let Some(length) = content_length(&parts.headers) {
            if length > body_limit as u64 {
                return Err(HttpError::BodyTooLarge { limit: body_limit });
            }
        }
        let collected = Limited::new(body, body_limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    HttpError::BodyTooLarge { limit: body_limit }
                } else {
                    HttpError::Body(error_chain(e.as_ref()))
                }
            })?;
        Ok(Response::from_parts(parts, collected.to_bytes()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

/// Sends `request` and waits for the status within `timeout`, for callers that need no
/// body (webhook deliveries): up to `read_limit` bytes of the body are read so that the
/// connection can be reused; a longer body is dropped with the connection. A broken
/// body does not change the answer: the status has arrived.
///
/// # Errors
/// See [`HttpError`]; never [`HttpError::BodyTooLarge`].
pub async fn send_for_status(
    client: &HttpsClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
    read_limit: usize,
) -> Result<(http::StatusCode, http::HeaderMap), HttpError> {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(classify_request_error)?;
        let (parts, mut body) = response.into_parts();
        let mut read = 0usize;
        while read <= read_limit {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read = read.saturating_add(frame.data_ref().map_or(0, Bytes::len));
                }
                Some(Err(_)) | None => break,
            }
        }
        Ok((parts.status, parts.headers))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn classify_request_error(error: hyper_util::client::legacy::Error) -> HttpError {
    match error.source().and_then(find_tls_error) {
        Some(tls) => HttpError::Tls(tls),
        None => HttpError::Transport(error_chain(&error)),
    }
}

/// Finds a rustls error in a cause chain. hyper-rustls wraps it in an `io::Error` inside
/// another `io::Error`, and `io::Error::source` skips the wrapped error, so both the
/// wrapped value and the source chain are searched.
fn find_tls_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls.to_string());
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(found) = find_tls_error(inner) {
            return Some(found);
        }
    }
    error.source().and_then(find_tls_error)
}

/// An error and its causes on one line, for logs and stored `last_error`s.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// No `Retry-After` is read as longer than this, whatever a peer sends: callers clamp
/// further (`daemon.max_retry_after`, a webhook's `retry_max`), and no time arithmetic
/// on it can overflow.
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(86_400);

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), at most
/// [`RETRY_AFTER_CEILING`]. A date in the past means "now".
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let delay = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // Digits only: seconds, however many (a number too large for u64 is "very long").
        value
            .parse::<u64>()
            .map_or(RETRY_AFTER_CEILING, Duration::from_secs)
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        crate::moment::Moment::from_system(when).since(crate::wall_clock::now())
    };
    Some(delay.min(RETRY_AFTER_CEILING))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let soon = crate::wall_clock::now()
            .saturating_add(Duration::from_secs(120))
            .to_system();
        headers.insert(
            http::header::RETRY_AFTER,
            httpdate::fmt_http_date(soon).parse().unwrap(),
        );
        let delay = retry_after(&headers).unwrap();
        assert!(
            delay > Duration::from_secs(100) && delay <= Duration::from_secs(120),
            "{delay:?}"
        );
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn retry_after_is_bounded_whatever_the_peer_sends() {
        let mut headers = http::HeaderMap::new();
        for absurd in [
            "18446744073709551615",
            "99999999999999999999999",
            "1000000000000",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            headers.insert(http::header::RETRY_AFTER, absurd.parse().unwrap());
            assert_eq!(retry_after(&headers), Some(RETRY_AFTER_CEILING), "{absurd}");
        }
    }
}
