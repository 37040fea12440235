//! The simulator's blob endpoint: the error logs its lifecycles point at, served the way
//! Azure Storage serves them (path-style, `/{account}/{container}/{blob}`), readable with
//! a token the simulator issued, its SAS, or its account key (SharedKey, checked the way
//! the service checks it). Faults make a test's hostile storage: a hang, a refusal, a
//! 1 GiB log, an XML bomb, broken XML, an HTML page.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt as _;

use super::{
    service::{full, ResponseBody},
    SimState,
};

/// The account key of the simulated storage account (base64, as the portal shows it).
pub const ACCOUNT_KEY: &str =
    "c2ltdWxhdGVkLXN0b3JhZ2UtYWNjb3VudC1rZXktZm9yLWlld2F0Y2gtdGVzdHMhIQ==";
/// The SAS the simulator accepts (read, on every container).
pub const SAS: &str =
    "sv=2021-08-06&sr=c&sp=rl&se=2030-01-01T00%3A00%3A00Z&sig=c2ltdWxhdGVkLXNhcw%3D%3D";

/// How the blob endpoint misbehaves, for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobFault {
    /// Headers never come.
    Hang,
    /// Every read refused with this status and `x-ms-error-code`.
    Refuse(u16, String),
    /// The log is 1 GiB of failed entries, generated as it is sent.
    Huge,
    /// A billion-laughs document.
    Bomb,
    /// XML that breaks off in the middle of an element.
    Malformed,
    /// An HTML page with status 200 (a proxy's sign-in page).
    Html,
    /// 503 ServerBusy for the next N reads, then served.
    BusyFor(u32),
}

impl BlobFault {
    /// One of each fault, for suites that must cover every one: a new variant without an
    /// example here fails to compile.
    pub fn examples() -> Vec<BlobFault> {
        let every = [
            BlobFault::Hang,
            BlobFault::Refuse(403, "AuthorizationPermissionMismatch".into()),
            BlobFault::Huge,
            BlobFault::Bomb,
            BlobFault::Malformed,
            BlobFault::Html,
            BlobFault::BusyFor(2),
        ];
        for fault in &every {
            match fault {
                BlobFault::Hang
                | BlobFault::Refuse(..)
                | BlobFault::Huge
                | BlobFault::Bomb
                | BlobFault::Malformed
                | BlobFault::Html
                | BlobFault::BusyFor(_) => {}
            }
        }
        every.to_vec()
    }
}

/// The blob endpoint's state.
#[derive(Default)]
pub(crate) struct BlobState {
    fault: Mutex<Option<BlobFault>>,
    reads: Mutex<Vec<String>>,
}

/// A drive log of the 2018-10-01 format: two bad names and a corrupted blob.
pub fn drive_log(drive: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<DriveLog Version="2018-10-01">
  <DriveId>{drive}</DriveId>
  <Blob Status="FileNameInvalid"><BlobPath>photos/a?.jpg</BlobPath><FilePath>\photos\a?.jpg</FilePath><Length>1024</Length></Blob>
  <Blob Status="FileNameInvalid"><BlobPath>photos/b*.jpg</BlobPath><FilePath>\photos\b*.jpg</FilePath><Length>2048</Length></Blob>
  <Blob Status="Corrupted"><BlobPath>video/c.mp4</BlobPath><FilePath>\video\c.mp4</FilePath><Length>4096</Length><PageRangeList><PageRange Offset="0" Length="512" Status="Corrupted"/></PageRangeList></Blob>
  <Status>CompletedWithErrors</Status>
</DriveLog>
"#
    )
}

/// A Data Box copy log (the 2021-08-01 fragment): a bad name and two files too large.
pub fn copy_log() -> String {
    r#"<ErroredEntity Path="photos/a?.jpg"><Category>UploadErrorCloudHttp</Category><ErrorCode>400</ErrorCode><ErrorMessage>The specified blob name is invalid.</ErrorMessage><Type>File</Type><Level>Error</Level></ErroredEntity>
<ErroredEntity Path="video/big1.mkv"><Category>UploadErrorCloudHttp</Category><ErrorCode>413</ErrorCode><ErrorMessage>The blob is larger than the maximum size.</ErrorMessage><Type>File</Type><Level>Error</Level></ErroredEntity>
<ErroredEntity Path="video/big2.mkv"><Category>UploadErrorCloudHttp</Category><ErrorCode>413</ErrorCode><ErrorMessage>The blob is larger than the maximum size.</ErrorMessage><Type>File</Type><Level>Error</Level></ErroredEntity>
<CopyLog Summary="Summary"><Status>Failed</Status><TotalFiles_Blobs>5521</TotalFiles_Blobs><FilesErrored>3</FilesErrored></CopyLog>
"#
    .to_owned()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn answer(status: StatusCode, code: &str, body: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    if !code.is_empty() {
        if let Ok(value) = code.parse() {
            response.headers_mut().insert("x-ms-error-code", value);
        }
    }
    response
}

/// True when the request carries a credential the simulated account takes.
fn authorised(state: &SimState, request: &Request<hyper::body::Incoming>) -> bool {
    let headers = request.headers();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return lock(&state.tokens)
            .get(token)
            .is_some_and(|(expiry, _)| Instant::now() < *expiry);
    }
    if let Some(signed) = auth.strip_prefix("SharedKey ") {
        let Some((account, signature)) = signed.split_once(':') else {
            return false;
        };
        let date = headers
            .get("x-ms-date")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Ok(key) = base64::engine::general_purpose::STANDARD.decode(ACCOUNT_KEY) else {
            return false;
        };
        let expected =
            iewatch_core::errorlog::shared_key_signature(&key, account, request.uri(), date);
        return !expected.is_empty() && expected == signature;
    }
    request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| SAS.split('&').any(|s| s == p && s.starts_with("sig=")))
    })
}

/// Serves one blob request.
pub(crate) async fn handle(
    state: &Arc<SimState>,
    request: Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    let path = request.uri().path().to_owned();
    lock(&state.blobs.reads).push(path.clone());
    let fault = {
        let mut fault = lock(&state.blobs.fault);
        let now = fault.clone();
        if let Some(BlobFault::BusyFor(n)) = now {
            *fault = n.checked_sub(1).filter(|n| *n > 0).map(BlobFault::BusyFor);
        }
        now
    };
    match &fault {
        Some(BlobFault::Hang) => {
            state.shutdown.cancelled().await;
            return answer(StatusCode::SERVICE_UNAVAILABLE, "", "");
        }
        Some(BlobFault::Refuse(status, code)) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN);
            return answer(
                status,
                code,
                "<?xml version=\"1.0\"?><Error><Code>refused</Code></Error>",
            );
        }
        Some(BlobFault::BusyFor(_)) => {
            return answer(StatusCode::SERVICE_UNAVAILABLE, "ServerBusy", "");
        }
        _ => {}
    }
    if request.method() != http::Method::GET {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "UnsupportedHttpVerb", "");
    }
    if !authorised(state, &request) {
        return answer(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code></Error>",
        );
    }
    // /{account}/{container}/{blob...}
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    let [_account, container, blob] = segments[..] else {
        return answer(StatusCode::NOT_FOUND, "ContainerNotFound", "");
    };
    let body = match (container, blob) {
        ("waimportexport", blob) if blob.ends_with("_error.xml") => {
            let drive = blob
                .trim_end_matches("_error.xml")
                .rsplit('_')
                .next()
                .unwrap_or_default();
            drive_log(drive)
        }
        ("databoxcopylog", blob) if blob.ends_with(".xml") => copy_log(),
        _ => return answer(StatusCode::NOT_FOUND, "BlobNotFound", ""),
    };
    let body = match fault {
        Some(BlobFault::Huge) => return huge(),
        Some(BlobFault::Bomb) => r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><DriveLog><DriveId>&lol2;</DriveId></DriveLog>"#.to_owned(),
        Some(BlobFault::Malformed) => body[..body.len() / 2].to_owned(),
        Some(BlobFault::Html) => {
            let mut response = answer(StatusCode::OK, "", "<html><body>Sign in</body></html>");
            response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/html"));
            return response;
        }
        _ => body,
    };
    let mut response = answer(StatusCode::OK, "", &body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

/// 1 GiB of failed entries, made as they are sent.
fn huge() -> Response<ResponseBody> {
    const CHUNK: usize = 64 * 1024;
    let entry = b"<ErroredEntity Path=\"a\\b.txt\"><Category>UploadErrorWin32</Category><ErrorCode>5</ErrorCode></ErroredEntity>\n";
    // Whole entries per chunk, so the log stays well-formed across chunks.
    let chunk: Vec<u8> = entry
        .iter()
        .copied()
        .cycle()
        .take(CHUNK / entry.len() * entry.len())
        .collect();
    let body = Generated {
        chunk: Bytes::from(chunk),
        remaining: (1usize << 30) / CHUNK,
    };
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

/// A body of `remaining` copies of `chunk`.
struct Generated {
    chunk: Bytes,
    remaining: usize,
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        self.remaining -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

impl super::RunningSimulator {
    /// `https://ADDR/{account}`: the `blob_endpoint` of accounts watching the simulator.
    pub fn blob_endpoint(&self) -> String {
        format!("https://{}/{{account}}", self.blob_addr)
    }

    /// Makes the blob endpoint misbehave (None: serve the logs).
    pub fn set_blob_fault(&self, fault: Option<BlobFault>) {
        *lock(&self.state.blobs.fault) = fault;
    }

    /// The paths of every blob request so far.
    pub fn blob_reads(&self) -> Vec<String> {
        lock(&self.state.blobs.reads).clone()
    }
}
