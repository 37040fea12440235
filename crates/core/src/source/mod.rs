//! Sources of job snapshots. The scheduler asks a [`Source`] for a job with the ETag it
//! holds and gets back a [`PollOutcome`] or a typed [`SourceError`]; what API and wire
//! format sit behind it is the source's business. Today: the classic Service Management
//! API of the spec.

pub mod answer;
pub mod arm;
pub mod arm_wire;
pub mod classic;
pub mod classic_wire;
pub mod databox_wire;
mod document;
mod scrub;

pub(crate) use document::take_bitlocker_key;
pub use document::Document;

use std::time::Duration;

use crate::{
    config::{Account, AccountKind, DaemonSettings},
    http_client::HttpError,
    model::{ETag, JobName, JobSnapshot},
};

/// Largest Get Job body accepted. A job has at most ten drives; the spec's sample is
/// 1.5 KB, so 1 MiB is generous and still bounds memory per poll.
pub const MAX_JOB_BODY_BYTES: usize = 1024 * 1024;

/// What one poll found.
#[derive(Debug)]
pub enum PollOutcome {
    /// The document changed (or is seen for the first time).
    Modified(Box<Observation>),
    /// 304 or 412: the ETag still matches.
    NotModified,
}

/// One poll's answer, as every source hands it on: the watched fields, the source's own
/// stored document, and how to tell whether anything changed.
#[derive(Debug)]
pub struct Observation {
    /// The watched fields.
    pub snapshot: JobSnapshot,
    /// The document `jobs.snapshot` keeps, secrets set apart.
    pub document: Document,
    /// How this source tells "unchanged".
    pub change_rule: ChangeRule,
    /// How the document names its job (checked against the job asked).
    pub names: answer::JobNames,
    /// `Last-Modified`, as sent.
    pub last_modified: Option<String>,
    /// `x-ms-request-id`, for support requests.
    pub request_id: Option<String>,
    /// When the service says the job was created (Resource Manager's `systemData`,
    /// Data Box's `startTime`); the classic API gives none.
    pub created_at: Option<crate::moment::Moment>,
}

/// An ETag ready to go into `If-None-Match`, byte for byte: checked and copied once
/// when the job's tag changes, so an unchanged poll only shares it.
#[derive(Clone, Debug)]
pub struct IfNoneMatch(http::HeaderValue);

impl IfNoneMatch {
    /// The header for `etag`; None for a tag no header can carry (a control character
    /// in a hand-edited row): the job is then asked for its whole document, whose tag
    /// replaces it.
    pub fn for_etag(etag: &ETag) -> Option<IfNoneMatch> {
        http::HeaderValue::from_str(etag.as_str())
            .ok()
            .map(IfNoneMatch)
    }

    /// The header value.
    pub fn value(&self) -> &http::HeaderValue {
        &self.0
    }
}

/// How a source tells whether a 200 brought anything new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeRule {
    /// The service's entity tag: sent back in `If-None-Match`; a new one means a new
    /// document.
    ETag(ETag),
    /// No ETag (Resource Manager): unchanged means the watched fields are equal, since
    /// other fields (bytes copied, ...) move on every poll.
    WatchedFields,
}

impl ChangeRule {
    /// The ETag to keep, if the rule has one.
    pub fn etag(&self) -> Option<&ETag> {
        match self {
            ChangeRule::ETag(etag) => Some(etag),
            ChangeRule::WatchedFields => None,
        }
    }
}

/// The `odata.error` (or ARM `error`) of a failed request, flattened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceError {
    /// `code`.
    pub code: String,
    /// `message.value`.
    pub message: String,
    /// `ExtendedCode`, if any.
    pub extended_code: Option<String>,
    /// `ExtendedInformation`, if any.
    pub extended_information: Option<String>,
}

impl ServiceError {
    /// The error of a failed request, every field scrubbed of SAS signatures and e-mail
    /// addresses (see [`scrub`]): the one way a service's error words come in.
    pub fn new(
        code: &str,
        message: &str,
        extended_code: Option<&str>,
        extended_information: Option<&str>,
    ) -> Box<ServiceError> {
        Box::new(ServiceError {
            code: scrub::scrubbed(code),
            message: scrub::scrubbed(message),
            extended_code: extended_code.map(scrub::scrubbed),
            extended_information: extended_information.map(scrub::scrubbed),
        })
    }
}

/// Why a poll produced no outcome. Callers branch on the kind: backoff, Retry-After,
/// not-found handling, certificate warnings.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No answer within the request timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TLS failed: certificate refused, unknown CA.
    #[error("TLS: {0}")]
    Tls(String),
    /// Connection refused, reset, DNS, or a body cut short.
    #[error("transport: {0}")]
    Transport(String),
    /// The body exceeded the cap.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The cap.
        limit: usize,
    },
    /// A non-success status.
    #[error("HTTP {status}{}", describe(.error))]
    Status {
        /// The status code.
        status: u16,
        /// The parsed error body, if it was one.
        error: Option<Box<ServiceError>>,
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
        /// `x-ms-request-id`, if sent.
        request_id: Option<String>,
    },
    /// A 200 whose body is not a job document.
    #[error("cannot decode response: {0}")]
    Decode(String),
    /// No token: the identity was refused, is not there, or its endpoint failed.
    #[error("no token from {0}")]
    Credential(#[from] crate::identity::TokenError),
}

fn describe(error: &Option<Box<ServiceError>>) -> String {
    match error {
        None => String::new(),
        Some(e) => {
            let mut text = format!(" {}: {}", e.code, e.message);
            if let Some(code) = &e.extended_code {
                text.push_str(&format!(" ({code})"));
            }
            text
        }
    }
}

impl SourceError {
    /// The delay the service asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The service says the job does not exist (or no longer does).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SourceError::Status { status: 404, .. })
    }

    /// The credentials were refused: 401/403, or a TLS failure (a refused client
    /// certificate shows up as a handshake alert).
    pub fn is_auth_refused(&self) -> bool {
        matches!(
            self,
            SourceError::Status {
                status: 401 | 403,
                ..
            } | SourceError::Tls(_)
        ) || matches!(self, SourceError::Credential(e) if e.failure != crate::identity::Failure::Transient)
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Timeout(_) => "timeout",
            SourceError::Tls(_) => "tls",
            SourceError::Transport(_) => "transport",
            SourceError::BodyTooLarge { .. } => "body_too_large",
            SourceError::Status { status: 404, .. } => "not_found",
            SourceError::Status {
                status: 401 | 403, ..
            } => "auth",
            SourceError::Status { status: 429, .. } => "throttled",
            SourceError::Status {
                status: 500..=599, ..
            } => "server_error",
            SourceError::Status { .. } => "http_status",
            SourceError::Decode(_) => "decode",
            SourceError::Credential(_) => "credential",
        }
    }
}

impl From<HttpError> for SourceError {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Timeout(d) => SourceError::Timeout(d),
            HttpError::Tls(e) => SourceError::Tls(e),
            HttpError::Transport(e) | HttpError::Body(e) => SourceError::Transport(e),
            HttpError::BodyTooLarge { limit } => SourceError::BodyTooLarge { limit },
        }
    }
}

/// Where a job's snapshots come from; one per account, shared by all its jobs.
#[derive(Clone, Debug)]
pub enum Source {
    /// The classic Service Management API.
    Classic(classic::ClassicClient),
    /// Azure Resource Manager with Entra ID credentials.
    Arm(arm::ArmClient),
}

/// Why a source could not be built from its account.
#[derive(Debug, thiserror::Error)]
#[error("account {account}: {reason}")]
pub struct SourceSetupError {
    /// The account.
    pub account: String,
    /// What failed.
    pub reason: String,
}

impl Source {
    /// Builds the source for an account (its own connection pool).
    ///
    /// # Errors
    /// The TLS configuration cannot be built from the account's certificates.
    pub fn for_account(
        account: &Account,
        daemon: &DaemonSettings,
        caches: &crate::identity::TokenCaches,
    ) -> Result<Source, SourceSetupError> {
        let (subscription, timeout, connect) = (
            &account.subscription_id,
            daemon.request_timeout,
            daemon.connect_timeout,
        );
        let built = match &account.kind {
            AccountKind::Classic(classic) => {
                classic::ClassicClient::new(subscription, classic, timeout, connect)
                    .map(Source::Classic)
            }
            AccountKind::Arm(arm) => {
                arm::ArmClient::new(subscription, arm, caches, (timeout, connect)).map(Source::Arm)
            }
        };
        built.map_err(|e| SourceSetupError {
            account: account.name.clone(),
            reason: e.to_string(),
        })
    }

    /// What to check when the service refuses this source's credentials.
    pub fn credential_advice(&self) -> String {
        match self {
            Source::Classic(_) => {
                "check that the management certificate is uploaded to the subscription and valid"
                    .into()
            }
            Source::Arm(client) => format!(
                "check {} and that it may read the jobs of the resource group (Reader; for \
                 Data Box a custom role with only Microsoft.DataBox/jobs/read)",
                client.credential()
            ),
        }
    }

    /// Where `job` is fetched from; built once per job.
    pub fn target(&self, job: &JobName) -> JobTarget {
        match self {
            Source::Classic(client) => JobTarget {
                uri: client.job_uri(job),
                job: job.clone(),
            },
            Source::Arm(client) => JobTarget {
                uri: client.job_uri(job),
                job: job.clone(),
            },
        }
    }

    /// Every job of the account, for sources that can list them (Resource Manager).
    ///
    /// # Errors
    /// See [`SourceError`].
    pub async fn list_jobs(&self) -> Option<Result<arm::Listing, SourceError>> {
        match self {
            Source::Classic(_) => None,
            Source::Arm(client) => Some(client.list_jobs().await),
        }
    }

    /// Polls one job, with `If-None-Match` when a tag is known. A document is
    /// accepted only when it is the job's own and within bounds ([`answer::check`]).
    ///
    /// # Errors
    /// See [`SourceError`].
    pub async fn get_job(
        &self,
        target: &JobTarget,
        if_none_match: Option<&IfNoneMatch>,
    ) -> Result<PollOutcome, SourceError> {
        let mut outcome = match self {
            Source::Classic(client) => client.get_job(&target.uri, if_none_match).await?,
            // Resource Manager has no ETag: the scheduler compares the watched fields.
            Source::Arm(client) => client.get_job(&target.uri).await?,
        };
        if let PollOutcome::Modified(observation) = &mut outcome {
            answer::check(observation, &target.job)?;
        }
        Ok(outcome)
    }
}

/// A job's address at its source, prepared once so that a poll builds no URL.
#[derive(Clone, Debug)]
pub struct JobTarget {
    uri: http::Uri,
    job: JobName,
}

impl JobTarget {
    /// The job's name.
    pub fn job(&self) -> &JobName {
        &self.job
    }
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters pass).
pub(crate) fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes a successful response's JSON body, refusing other content types (an HTML
/// error page from a proxy is a decode error, not a job).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    response: &http::Response<bytes::Bytes>,
) -> Result<T, SourceError> {
    require_json(response)?;
    serde_json::from_slice(response.body()).map_err(|e| SourceError::Decode(e.to_string()))
}

/// Refuses a response whose Content-Type is not JSON.
pub(crate) fn require_json(response: &http::Response<bytes::Bytes>) -> Result<(), SourceError> {
    if let Some(content_type) =
        header_string(response.headers(), http::header::CONTENT_TYPE.as_str())
    {
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(SourceError::Decode(format!(
                "unexpected Content-Type {content_type:?}"
            )));
        }
    }
    Ok(())
}

/// A service timestamp with any offset as a time (None for sentinels and nonsense).
pub(crate) fn service_time(text: Option<&str>) -> Option<crate::moment::Moment> {
    crate::moment::Moment::from_service(text?)
}

pub(crate) fn header_string(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
