//! The Get Job client of the classic Service Management API (spec/get-job.txt): a
//! management certificate on a pooled keep-alive TLS connection, the spec's headers, the
//! stored ETag in `If-None-Match`, and 304/412 read as "not modified".

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;

use super::{
    answer::JobNames,
    classic_wire::{ErrorBody, Job},
    encode_path_segment, header_string, json_body, ChangeRule, IfNoneMatch, Observation,
    PollOutcome, ServiceError, SourceError, MAX_JOB_BODY_BYTES,
};
use crate::{
    config::ClassicAccount,
    http_client::{self, HttpsClient, USER_AGENT},
    model::{ETag, JobName},
    tls,
};

/// `Accept` as the spec's JSON Light default.
pub const ACCEPT: &str = "application/json;odata=minimalmetadata";

/// A client for one classic account; clones share the connection pool.
#[derive(Clone)]
pub struct ClassicClient {
    http: HttpsClient,
    jobs_url: String,
    x_ms_version: HeaderValue,
    timeout: Duration,
}

impl std::fmt::Debug for ClassicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassicClient")
            .field("jobs_url", &self.jobs_url)
            .finish_non_exhaustive()
    }
}

impl ClassicClient {
    /// A client for `account`, trusting the system roots plus the account's extra CA.
    ///
    /// # Errors
    /// rustls refuses the management certificate's key.
    pub fn new(
        subscription_id: &str,
        account: &ClassicAccount,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, tls::TlsError> {
        let roots = tls::root_store(&account.extra_roots, true);
        let config = tls::client_config(roots, Some(&account.identity))?;
        Ok(ClassicClient {
            http: http_client::build_client(config, connect_timeout, true),
            jobs_url: format!(
                "{}/{}/services/importexport/storageaccounts/{}/jobs",
                account.endpoint,
                encode_path_segment(subscription_id),
                encode_path_segment(&account.storage_account),
            ),
            // Static: every poll clones it, and a shared one's count was a cache line
            // the two cores passed back and forth at each. Checked, not assumed: the
            // account is a public type, and `from_static` would panic on a bad value.
            x_ms_version: HeaderValue::from_maybe_shared(Bytes::from_static(
                account.x_ms_version.as_bytes(),
            ))
            .unwrap_or_else(|_| HeaderValue::from_static(crate::config::SUPPORTED_VERSIONS[0])),
            timeout,
        })
    }

    /// The Get Job URL of `job`, built once per job rather than once per poll.
    pub fn job_uri(&self, job: &JobName) -> http::Uri {
        let url = format!("{}/{}", self.jobs_url, encode_path_segment(job.as_str()));
        // The base was checked as a URL by the config and the name is percent-encoded,
        // so this parses; should it not, the request fails with a clear error instead.
        url.parse()
            .unwrap_or_else(|_| http::Uri::from_static("https://invalid.invalid/"))
    }

    /// Get Job at `uri` (see [`ClassicClient::job_uri`]) with `If-None-Match` when a tag
    /// is known.
    ///
    /// # Errors
    /// See [`SourceError`].
    pub async fn get_job(
        &self,
        uri: &http::Uri,
        if_none_match: Option<&IfNoneMatch>,
    ) -> Result<PollOutcome, SourceError> {
        // Built in place, the names typed: a poll parses no header name and grows no map.
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.reserve(4);
        headers.insert(X_MS_VERSION, self.x_ms_version.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, tag.value().clone());
        }
        let response =
            http_client::send(&self.http, request, self.timeout, MAX_JOB_BODY_BYTES).await?;
        interpret(response)
    }
}

/// The API version header, named once.
const X_MS_VERSION: http::HeaderName = http::HeaderName::from_static("x-ms-version");

/// Turns a complete response into an outcome (separate from I/O so it is testable).
///
/// # Errors
/// Non-success statuses and undecodable bodies.
pub fn interpret(response: http::Response<Bytes>) -> Result<PollOutcome, SourceError> {
    let status = response.status();
    let headers = response.headers();
    if status == StatusCode::NOT_MODIFIED || status == StatusCode::PRECONDITION_FAILED {
        return Ok(PollOutcome::NotModified);
    }
    let request_id = header_string(headers, "x-ms-request-id");
    if !status.is_success() {
        let body = response.body();
        let error = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| flatten(b.error));
        return Err(SourceError::Status {
            status: status.as_u16(),
            error,
            retry_after: http_client::retry_after(headers),
            request_id,
        });
    }
    let job: Job = json_body(&response)?;
    let names = JobNames {
        name: job.name.clone(),
        id: job.odata_id.clone(),
    };
    let (snapshot, document) = job.into_parts();
    let change_rule = header_string(headers, header::ETAG.as_str())
        .map_or(ChangeRule::WatchedFields, |etag| {
            ChangeRule::ETag(ETag::new(etag))
        });
    Ok(PollOutcome::Modified(Box::new(Observation {
        snapshot,
        document,
        change_rule,
        names,
        last_modified: header_string(headers, header::LAST_MODIFIED.as_str()),
        request_id,
        created_at: None,
    })))
}

fn flatten(error: super::classic_wire::ODataError) -> Box<ServiceError> {
    let values = &error.azure_values;
    ServiceError::new(
        &error.code,
        &error.message.value,
        values.iter().find_map(|v| v.extended_code.as_deref()),
        values
            .iter()
            .find_map(|v| v.extended_information.as_deref()),
    )
}
