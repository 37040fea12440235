//! Reading a log blob from the customer's storage account: one GET on the hyper client
//! every source uses, authorised by a bearer token for Storage (the account's Entra
//! credential), a SAS, or the account key (SharedKey); the body streamed into the
//! parser on a blocking thread, so a 1 GB log costs a few frames of memory and stops at
//! [`Limits::max_bytes`]. A refusal says what to fix, in the words of the fix.

use std::{io::Read, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};

use super::{summarise, ErrorLogError, Limits, Summary};
use crate::{
    http_client::{self, HttpsClient},
    identity::{TokenCache, TokenError},
};

/// The Blob service version iewatch speaks (≥ 2017-11-09, which bearer tokens need).
pub const STORAGE_VERSION: &str = "2021-08-06";

/// The scope of a token for Azure Storage.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How a log blob is authorised.
#[derive(Clone)]
pub enum Access {
    /// A token for Storage from the account's credential (role Storage Blob Data
    /// Reader on the storage account or container).
    Bearer(Arc<TokenCache>),
    /// A SAS with read permission (`error_log_sas_file`), appended to the URL.
    Sas(String),
    /// The storage account's key (`storage_key_file`).
    SharedKey {
        /// The key, decoded.
        key: Vec<u8>,
    },
    /// Nothing that can read it: why, for the event.
    Missing(String),
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the SAS or the key.
        f.write_str(match self {
            Access::Bearer(_) => "Bearer",
            Access::Sas(_) => "Sas",
            Access::SharedKey { .. } => "SharedKey",
            Access::Missing(_) => "Missing",
        })
    }
}

impl Access {
    /// In words, for messages: which identity or secret was used.
    pub fn describe(&self) -> String {
        match self {
            Access::Bearer(cache) => cache.describe(),
            Access::Sas(_) => "the SAS in error_log_sas_file".into(),
            Access::SharedKey { .. } => "the account key in storage_key_file".into(),
            Access::Missing(why) => why.clone(),
        }
    }
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The storage service answered with a refusal that retrying will not change.
    #[error("{status} {code}: {advice}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// `x-ms-error-code` (or the status's name).
        code: String,
        /// What to do about it.
        advice: String,
    },
    /// No answer, a timeout, a 5xx or a 429: worth another try later.
    #[error("{0}")]
    Transient(String),
    /// The blob is not a log iewatch can read.
    #[error(transparent)]
    Unreadable(#[from] ErrorLogError),
    /// What was served is not an XML log (an HTML sign-in page, JSON).
    #[error("not a log: served as {0}")]
    NotXml(String),
    /// No token could be had.
    #[error(transparent)]
    Credential(#[from] TokenError),
    /// No credential is configured for it.
    #[error("{0}")]
    NoAccess(String),
}

impl FetchError {
    /// True when another try later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Transient(_) => true,
            FetchError::Credential(e) => e.failure == crate::identity::Failure::Transient,
            _ => false,
        }
    }
}

/// Reads and summarises the log at `url` within `deadline`.
///
/// # Errors
/// See [`FetchError`].
pub async fn read_log(
    client: &HttpsClient,
    url: &str,
    access: &Access,
    limits: Limits,
    deadline: Duration,
) -> Result<Summary, FetchError> {
    tokio::time::timeout(deadline, read(client, url, access, limits))
        .await
        .map_err(|_| FetchError::Transient(format!("no complete answer in {deadline:?}")))?
}

async fn read(
    client: &HttpsClient,
    url: &str,
    access: &Access,
    limits: Limits,
) -> Result<Summary, FetchError> {
    let request = authorised(url, access).await?;
    let response = client.request(request).await.map_err(|e| {
        FetchError::Transient(format!("connection: {}", http_client::error_chain(&e)))
    })?;
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        if let Access::Bearer(cache) = access {
            if parts.status == StatusCode::UNAUTHORIZED {
                cache.invalidate().await;
            }
        }
        return Err(refusal(parts.status, &parts.headers, url, access));
    }
    if let Some(kind) = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let kind = kind.to_ascii_lowercase();
        if kind.starts_with("text/html") || kind.contains("json") {
            return Err(FetchError::NotXml(kind));
        }
    }
    // Frames go to the parser through a short queue: the parser's pace bounds memory,
    // and once it stops (the cap, an error) the queue closes and the download ends.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    let parser = tokio::task::spawn_blocking(move || {
        let reader = FrameReader {
            frames: receiver,
            current: Bytes::new(),
        };
        summarise(std::io::BufReader::with_capacity(64 * 1024, reader), limits)
    });
    let mut body = body;
    let mut broken = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                // A closed queue means the parser has read all it wants.
                if sender.send(data).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                broken = Some(http_client::error_chain(&e));
                break;
            }
        }
    }
    drop(sender);
    let summary = parser
        .await
        .map_err(|e| FetchError::Transient(format!("parser: {e}")))??;
    match broken {
        Some(reason) if !summary.cut_short => Err(FetchError::Transient(format!(
            "the download broke off: {reason}"
        ))),
        _ => Ok(summary),
    }
}

/// The GET, with the headers its access needs.
async fn authorised(url: &str, access: &Access) -> Result<Request<Full<Bytes>>, FetchError> {
    let target = match access {
        Access::Sas(sas) => format!("{url}?{}", sas.trim().trim_start_matches('?')),
        _ => url.to_owned(),
    };
    let uri: http::Uri = target
        .parse()
        .map_err(|_| FetchError::NoAccess(format!("{url} is no URL")))?;
    let date = httpdate::fmt_http_date(crate::wall_clock::now().to_system());
    let mut request = Request::get(uri.clone())
        .header(header::USER_AGENT, http_client::USER_AGENT)
        .header("x-ms-date", &date)
        .header("x-ms-version", STORAGE_VERSION);
    match access {
        Access::Bearer(cache) => {
            request = request.header(header::AUTHORIZATION, cache.get().await?);
        }
        Access::SharedKey { key } => {
            let account = account_of(&uri)
                .ok_or_else(|| FetchError::NoAccess(format!("no storage account name in {url}")))?;
            let signature = shared_key_signature(key, &account, &uri, &date);
            request = request.header(
                header::AUTHORIZATION,
                format!("SharedKey {account}:{signature}"),
            );
        }
        Access::Missing(why) => return Err(FetchError::NoAccess(why.clone())),
        Access::Sas(_) => {}
    }
    request
        .body(Full::new(Bytes::new()))
        .map_err(|e| FetchError::NoAccess(format!("{url}: {e}")))
}

/// The storage account a blob URL names: the host's first label
/// (`acct.blob.core.windows.net`), or the path's first segment where the host is an
/// address (Azurite's path-style URLs).
pub fn account_of(uri: &http::Uri) -> Option<String> {
    let host = uri.host()?;
    let is_address = host.parse::<std::net::IpAddr>().is_ok()
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok()
        || host == "localhost";
    let name = if is_address {
        uri.path().trim_start_matches('/').split('/').next()?
    } else {
        host.split('.').next()?
    };
    (!name.is_empty()).then(|| name.to_owned())
}

/// The SharedKey signature of a GET with no body: the string to sign of the Blob
/// service (eleven empty standard headers, the `x-ms-` headers, the resource).
pub fn shared_key_signature(key: &[u8], account: &str, uri: &http::Uri, date: &str) -> String {
    let mut resource = format!("/{account}{}", uri.path());
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    query.sort();
    for (name, value) in query {
        resource.push_str(&format!("\n{name}:{value}"));
    }
    let to_sign = format!(
        "GET\n{}x-ms-date:{date}\nx-ms-version:{STORAGE_VERSION}\n{resource}",
        "\n".repeat(11)
    );
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A refusal in the words of its fix.
fn refusal(
    status: StatusCode,
    headers: &http::HeaderMap,
    url: &str,
    access: &Access,
) -> FetchError {
    let code = headers
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(|c| {
            crate::telemetry::printable(c)
                .chars()
                .take(80)
                .collect::<String>()
        })
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("refused")
                .replace(' ', "")
        });
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return FetchError::Transient(format!("{} {code}", status.as_u16()));
    }
    let account = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| account_of(&u))
        .unwrap_or_else(|| "the storage account".into());
    // 400 InvalidAuthenticationInfo is how Storage (and Azurite) answer a signature made
    // with a key of the wrong shape: the same fix as a 403.
    let refused = matches!(status.as_u16(), 401 | 403)
        || (status == StatusCode::BAD_REQUEST && code == "InvalidAuthenticationInfo");
    let advice = match (status.as_u16(), code.as_str(), access) {
        (403, "AuthorizationPermissionMismatch", _)
        | (403, "AuthorizationFailure", Access::Bearer(_)) => format!(
            "grant Storage Blob Data Reader on storage account {account} to {}",
            access.describe()
        ),
        (404, _, _) => "the log is not there: deleted (logs go with the job after 90 days), \
                        or the account moved"
            .into(),
        (_, _, Access::Sas(_)) if refused => "the SAS in error_log_sas_file was refused: it \
            needs read (r) permission on the log's container and an unexpired se="
            .into(),
        (_, _, Access::SharedKey { .. }) if refused => format!(
            "the key in storage_key_file was refused: is it a current key of storage account \
             {account}?"
        ),
        _ if refused => format!(
            "{} was refused by storage account {account}",
            access.describe()
        ),
        _ => format!("storage account {account} refused the read"),
    };
    FetchError::Refused {
        status: status.as_u16(),
        code,
        advice,
    }
}

/// The frames of a download as a `Read`.
struct FrameReader {
    frames: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for FrameReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.frames.blocking_recv() {
                Some(frame) => self.current = frame,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}
