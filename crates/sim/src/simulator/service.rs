//! Request handling of the simulator: the spec's URL shape, header rules and conditional
//! requests, plus fault injection. Kept apart from the socket plumbing in `mod.rs`.

use std::{
    convert::Infallible,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

use super::{
    faults::faulty,
    scenario::{service_json, FaultKind, Version},
    RequestRecord, SimState,
};
use iewatch_core::source::classic_wire::ErrorBody;

pub(crate) type ResponseBody = BoxBody<Bytes, std::io::Error>;

const SUPPORTED_VERSIONS: [&str; 2] = ["2014-05-01", "2014-11-01"];
const JSON_CONTENT_TYPE: &str =
    "application/json;odata=minimalmetadata;streaming=true;charset=utf-8";

/// The error a handler returns to make hyper drop the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by fault injection")]
pub(crate) struct ResetConnection;

pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn empty() -> ResponseBody {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

struct Reply {
    response: Response<ResponseBody>,
    fault: Option<FaultKind>,
}

impl Reply {
    fn plain(response: Response<ResponseBody>) -> Reply {
        Reply {
            response,
            fault: None,
        }
    }
}

/// Answers one request.
pub(crate) async fn handle(
    state: &SimState,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<ResponseBody>, ResetConnection> {
    let arrived = Instant::now();
    let sim_offset = state.clock.now();
    let method = request.method().clone();
    let if_none_match = header_str(&request, header::IF_NONE_MATCH).map(str::to_owned);
    let path = Path::parse(request.uri().path());
    let job = match &path {
        Some(Path::Job { job, .. }) => Some(job.clone()),
        _ => None,
    };
    let record = RequestRecord {
        at: arrived,
        sim_offset,
        method: method.to_string(),
        job,
        status: 0,
        if_none_match,
        fault: None,
    };
    let reply = route(state, &request, path, sim_offset);
    let mut response = state.finish(record, reply.response, reply.fault).await?;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if method == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, empty()));
    }
    Ok(response)
}

enum Path {
    Jobs {
        subscription: String,
        account: String,
    },
    Job {
        subscription: String,
        account: String,
        job: String,
    },
}

impl Path {
    /// `/{sub}/services/importexport/storageaccounts/{account}/jobs[/{job}]`
    fn parse(path: &str) -> Option<Path> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            [sub, "services", "importexport", "storageaccounts", account, "jobs"] => {
                Some(Path::Jobs {
                    subscription: decode(sub)?,
                    account: decode(account)?,
                })
            }
            [sub, "services", "importexport", "storageaccounts", account, "jobs", job]
                if !job.is_empty() =>
            {
                Some(Path::Job {
                    subscription: decode(sub)?,
                    account: decode(account)?,
                    job: decode(job)?,
                })
            }
            _ => None,
        }
    }
}

/// Percent-decodes a URL path segment (or, with `plus_is_space`, a form value).
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn decode(segment: &str) -> Option<String> {
    percent_decode(segment, false)
}

fn header_str<B>(request: &Request<B>, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub(super) fn error(
    status: StatusCode,
    message: &str,
    extended_code: &str,
) -> Response<ResponseBody> {
    let body = serde_json::to_vec(&ErrorBody::new(
        status.as_u16(),
        message,
        Some(extended_code),
    ))
    .unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    response
}

fn route(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    path: Option<Path>,
    now: Duration,
) -> Reply {
    let Some(path) = path else {
        return Reply::plain(error(
            StatusCode::NOT_FOUND,
            "The requested URI does not represent any resource on the server.",
            "ResourceNotFound",
        ));
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "The requested method is not supported.",
            "MethodNotAllowed",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Reply::plain(response);
    }
    let version = match header_str(request, header::HeaderName::from_static("x-ms-version")) {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => v.to_owned(),
        Some(_) | None => {
            return Reply::plain(error(
                StatusCode::BAD_REQUEST,
                "The x-ms-version header is missing or is not 2014-05-01 or 2014-11-01.",
                "MissingOrIncorrectVersionHeader",
            ))
        }
    };
    if let Some(length) = request.headers().get(header::CONTENT_LENGTH) {
        if length.to_str().ok().map(str::trim) != Some("0") {
            return Reply::plain(error(
                StatusCode::BAD_REQUEST,
                "Content-Length must be 0 for this request.",
                "InvalidContentLength",
            ));
        }
    }
    if !accepts_json(request) {
        return Reply::plain(error(
            StatusCode::NOT_ACCEPTABLE,
            "Only application/json is supported.",
            "NotAcceptable",
        ));
    }
    let mut reply = match path {
        Path::Jobs {
            subscription,
            account,
        } => {
            if let Some(refused) = check_owner(state, &subscription, &account) {
                return Reply::plain(refused);
            }
            Reply::plain(list_jobs(state, &account, now, &version))
        }
        Path::Job {
            subscription,
            account,
            job,
        } => {
            if let Some(refused) = check_owner(state, &subscription, &account) {
                return Reply::plain(refused);
            }
            get_job(state, request, &account, &job, now, &version)
        }
    };
    reply
        .response
        .headers_mut()
        .insert("x-ms-version", header_value(&version));
    reply
}

fn accepts_json(request: &Request<hyper::body::Incoming>) -> bool {
    let format = request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            pair.strip_prefix("$format=")
                .or_else(|| pair.strip_prefix("%24format="))
        })
    });
    let decoded = format.and_then(decode);
    let wanted = match decoded.as_deref() {
        Some(format) => Some(format),
        None => header_str(request, header::ACCEPT),
    };
    // An Accept list admits JSON when any of its ranges does: `application/json`,
    // `application/*` or `*/*` (curl's default). The spec's 406 is for foreign types.
    match wanted {
        None => true,
        Some(value) => value.split(',').any(|range| {
            range.split(';').next().is_some_and(|media| {
                let media = media.trim();
                ["application/json", "application/*", "*/*"]
                    .iter()
                    .any(|ok| media.eq_ignore_ascii_case(ok))
            })
        }),
    }
}

fn check_owner(
    state: &SimState,
    subscription: &str,
    account: &str,
) -> Option<Response<ResponseBody>> {
    if subscription != state.subscription {
        return Some(error(
            StatusCode::FORBIDDEN,
            "The server failed to authenticate the request. Verify that the certificate is valid and is associated with this subscription.",
            "ForbiddenError",
        ));
    }
    if !state.accounts.iter().any(|a| a == account) {
        return Some(error(
            StatusCode::NOT_FOUND,
            &format!("The storage account '{account}' was not found."),
            "StorageAccountNotFound",
        ));
    }
    None
}

fn list_jobs(
    state: &SimState,
    account: &str,
    now: Duration,
    version: &str,
) -> Response<ResponseBody> {
    let mut names: Vec<&String> = state
        .jobs
        .keys()
        .filter(|k| k.split_once('/').is_some_and(|(a, _)| a == account))
        .collect();
    names.sort();
    let jobs: Vec<serde_json::Value> = names
        .into_iter()
        .filter_map(|key| state.jobs.get(key).filter(|e| e.timeline.sku.is_none()))
        .filter_map(|entry| entry.timeline.at(now).job.as_ref())
        .filter_map(|job| serde_json::from_slice(&service_json(job, version == "2014-05-01")).ok())
        .collect();
    let body = serde_json::json!({
        "odata.metadata": format!("https://management.core.windows.net/{}/services/importexport/$metadata#Microsoft.Cis.Services.ImportExport.Public.ImportExportData.Jobs", state.subscription),
        "value": jobs,
    });
    let mut response = Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    response
}

fn get_job(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    account: &str,
    job: &str,
    now: Duration,
    version: &str,
) -> Reply {
    // Data Box orders exist only on Resource Manager.
    let entry = state.jobs.get(&super::job_key(account, job));
    let Some(entry) = entry.filter(|e| e.timeline.sku.is_none()) else {
        return Reply::plain(job_not_found(job));
    };
    let fault = state.fault_for(entry, now);
    let current = entry.timeline.at(now);
    let slow = fault.filter(|f| f.kind == FaultKind::Slow).map(|f| f.kind);
    if let Some(fault) = fault.filter(|_| slow.is_none()) {
        return Reply {
            response: faulty(fault.kind, fault.retry_after, current),
            fault: Some(fault.kind),
        };
    }
    let Some(document) = &current.job else {
        return Reply::plain(job_not_found(job));
    };
    if let Err(refusal) = conditions_met(request, current) {
        return Reply::plain(refusal.response());
    }
    let body = if version == "2014-05-01" {
        Bytes::from(service_json(document, true))
    } else {
        current.body.clone()
    };
    Reply {
        response: ok_document(current, body),
        fault: slow,
    }
}

pub(super) fn job_not_found(job: &str) -> Response<ResponseBody> {
    error(
        StatusCode::NOT_FOUND,
        &format!("The job '{job}' was not found."),
        "JobNotFound",
    )
}

pub(super) fn ok_document(version: &Version, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.insert(header::ETAG, header_value(&version.etag));
    headers.insert(header::LAST_MODIFIED, header_value(&version.last_modified));
    headers.insert("DataServiceVersion", HeaderValue::from_static("3.0;"));
    response
}

/// Why a conditional request is not answered with the document.
enum Refusal {
    /// 400: headers that may not be combined, or a date that is not a date.
    Invalid(&'static str, &'static str),
    /// 412: the condition is not met.
    Unmet,
}

impl Refusal {
    fn response(self) -> Response<ResponseBody> {
        match self {
            Refusal::Invalid(message, code) => error(StatusCode::BAD_REQUEST, message, code),
            Refusal::Unmet => error(
                StatusCode::PRECONDITION_FAILED,
                "The condition specified using HTTP conditional header(s) is not met.",
                "ConditionNotMet",
            ),
        }
    }
}

/// The spec's conditional-header rules: one header, or If-None-Match with
/// If-Modified-Since (If-None-Match decides), or If-Match with If-Unmodified-Since
/// (If-Match decides); anything else is 400; an unmet condition is 412.
fn conditions_met(
    request: &Request<hyper::body::Incoming>,
    version: &Version,
) -> Result<(), Refusal> {
    let if_match = header_str(request, header::IF_MATCH);
    let if_none_match = header_str(request, header::IF_NONE_MATCH);
    let if_modified_since = header_str(request, header::IF_MODIFIED_SINCE);
    let if_unmodified_since = header_str(request, header::IF_UNMODIFIED_SINCE);
    let met = match (if_match, if_none_match, if_modified_since, if_unmodified_since) {
        (None, None, None, None) => return Ok(()),
        (None, Some(tags), _, None) => !etag_listed(tags, &version.etag),
        (Some(tags), None, None, _) => etag_listed(tags, &version.etag),
        (None, None, Some(date), None) => modified_since(version, date)?,
        (None, None, None, Some(date)) => !modified_since(version, date)?,
        _ => {
            return Err(Refusal::Invalid(
                "Only If-None-Match with If-Modified-Since, or If-Match with If-Unmodified-Since, may be combined.",
                "MultipleConditionHeadersNotSupported",
            ))
        }
    };
    if met {
        Ok(())
    } else {
        Err(Refusal::Unmet)
    }
}

fn etag_listed(tags: &str, etag: &str) -> bool {
    tags.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag)
}

fn modified_since(version: &Version, date: &str) -> Result<bool, Refusal> {
    let since = httpdate::parse_http_date(date).map_err(|_| {
        Refusal::Invalid(
            "A conditional date header is not a valid RFC 1123 date.",
            "InvalidHeaderValue",
        )
    })?;
    // HTTP dates have one-second resolution: compare whole seconds.
    let modified = version
        .modified_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(modified > since)
}
