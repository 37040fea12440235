//! The Get Job client of Azure Resource Manager with Entra ID client credentials, for
//! both providers iewatch reads: `Microsoft.ImportExport/jobs` (api-version 2021-01-01)
//! and `Microsoft.DataBox/jobs` (2025-07-01, with `$expand=details`). Tokens are fetched
//! with the OAuth2 client-credentials grant, cached, refreshed before they expire, and
//! refreshed once more when the API answers 401. Neither API sends an ETag: "unchanged"
//! is decided by comparing the watched fields.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::{
    answer::JobNames,
    arm_wire::{ArmErrorBody, ArmJob},
    databox_wire::DataBoxJob,
    encode_path_segment, header_string, json_body, require_json, ChangeRule, Observation,
    PollOutcome, ServiceError, SourceError, MAX_JOB_BODY_BYTES,
};
use crate::{
    config::{ArmAccount, ArmProvider},
    http_client::{self, HttpsClient, USER_AGENT},
    identity::{TokenCache, TokenCaches},
    model::JobName,
    tls,
};

/// The `Microsoft.ImportExport` API version this client speaks.
pub const API_VERSION: &str = "2021-01-01";
/// The `Microsoft.DataBox` API version this client speaks (the latest stable).
pub const DATABOX_API_VERSION: &str = "2025-07-01";

impl ArmProvider {
    /// The provider's path segment.
    fn namespace(self) -> &'static str {
        match self {
            ArmProvider::ImportExport => "Microsoft.ImportExport",
            ArmProvider::DataBox => "Microsoft.DataBox",
        }
    }

    /// The api-version sent.
    pub fn api_version(self) -> &'static str {
        match self {
            ArmProvider::ImportExport => API_VERSION,
            ArmProvider::DataBox => DATABOX_API_VERSION,
        }
    }

    /// What Get Job adds to the query: Data Box sends stages, progress and shipping
    /// only with `$expand=details`.
    fn get_query(self) -> &'static str {
        match self {
            ArmProvider::ImportExport => "",
            ArmProvider::DataBox => "&$expand=details",
        }
    }
}
/// What a job listing read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The jobs' names, in the service's order.
    pub names: Vec<JobName>,
    /// Why the listing stopped before its end, if it did.
    pub cut_short: Option<String>,
}

/// Most jobs a listing reads (and so the pages it follows: the service gives at least
/// one a page): far past what a subscription's resource group holds, yet a bound for a
/// peer that links pages forever.
const MAX_LISTED_JOBS: usize = 100_000;
/// `scheme://host:port` of a URI, for messages (never its path or query).
fn origin_of(uri: &http::Uri) -> String {
    format!(
        "{}://{}:{}",
        uri.scheme_str().unwrap_or("?"),
        uri.host().unwrap_or("?"),
        effective_port(uri).map_or("?".into(), |p| p.to_string())
    )
}

fn effective_port(uri: &http::Uri) -> Option<u16> {
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

/// True when both URIs have the same scheme, host and port (RFC 6454 origin).
fn same_origin(a: &http::Uri, b: &http::Uri) -> bool {
    a.scheme_str() == b.scheme_str()
        && a.host()
            .zip(b.host())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
        && effective_port(a).is_some()
        && effective_port(a) == effective_port(b)
}

/// A client for one Resource Manager account; clones share the pool and the token.
#[derive(Clone)]
pub struct ArmClient {
    http: HttpsClient,
    tokens: std::sync::Arc<TokenCache>,
    jobs_url: String,
    provider: ArmProvider,
    timeout: Duration,
    /// Named in the role advice of a 403.
    scope_words: String,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("jobs_url", &self.jobs_url)
            .finish_non_exhaustive()
    }
}

impl ArmClient {
    /// A client for `account`, its tokens from `caches` (shared with every account of
    /// the same credential).
    ///
    /// # Errors
    /// The TLS configuration cannot be built.
    pub fn new(
        subscription_id: &str,
        account: &ArmAccount,
        caches: &TokenCaches,
        (timeout, connect_timeout): (Duration, Duration),
    ) -> Result<Self, tls::TlsError> {
        let config = tls::client_config(tls::root_store(&account.extra_roots, true), None)?;
        let scope = format!("{}/.default", account.endpoint);
        Ok(ArmClient {
            http: http_client::build_client(config, connect_timeout, true),
            tokens: caches.for_account(account, &scope, timeout, connect_timeout)?,
            jobs_url: format!(
                "{}/subscriptions/{}/resourceGroups/{}/providers/{}/jobs",
                account.endpoint,
                encode_path_segment(subscription_id),
                encode_path_segment(&account.resource_group),
                account.provider.namespace(),
            ),
            provider: account.provider,
            timeout,
            scope_words: format!(
                "resource group {} of subscription {subscription_id}",
                account.resource_group
            ),
        })
    }

    /// The Get Job URL of `job`.
    pub fn job_uri(&self, job: &JobName) -> http::Uri {
        let url = format!(
            "{}/{}?api-version={}{}",
            self.jobs_url,
            encode_path_segment(job.as_str()),
            self.provider.api_version(),
            self.provider.get_query(),
        );
        url.parse()
            .unwrap_or_else(|_| http::Uri::from_static("https://invalid.invalid/"))
    }

    /// The names of every job in the resource group, following `nextLink` pages. A
    /// listing cut short after its first page (a page that fails, a link elsewhere, past
    /// [`MAX_LISTED_JOBS`]) keeps what it read and says why: those jobs are watched now,
    /// the rest at the next listing.
    ///
    /// # Errors
    /// The first page could not be read. See [`SourceError`].
    pub async fn list_jobs(&self) -> Result<Listing, SourceError> {
        let mut listing = Listing::default();
        let mut url = format!(
            "{}?api-version={}",
            self.jobs_url,
            self.provider.api_version()
        );
        let origin: http::Uri = url
            .parse()
            .map_err(|_| SourceError::Decode("the account's endpoint is not a URL".into()))?;
        for page in 0..MAX_LISTED_JOBS {
            let next = match self.list_page(&origin, &url).await {
                Ok((names, next)) => {
                    listing.names.extend(names);
                    next
                }
                Err(e) if page == 0 => return Err(e),
                Err(e) => {
                    listing.cut_short = Some(format!("page {} failed: {e}", page + 1));
                    return Ok(listing);
                }
            };
            match next {
                Some(next) if listing.names.len() < MAX_LISTED_JOBS => url = next,
                Some(_) => {
                    listing.cut_short = Some(format!("longer than {MAX_LISTED_JOBS} jobs"));
                    return Ok(listing);
                }
                None => return Ok(listing),
            }
        }
        listing.cut_short = Some(format!("more than {MAX_LISTED_JOBS} pages"));
        Ok(listing)
    }

    /// One page of a job list at `url` (which must be on `origin`: the bearer token goes
    /// nowhere else): its names and the next page's link.
    async fn list_page(
        &self,
        origin: &http::Uri,
        url: &str,
    ) -> Result<(Vec<JobName>, Option<String>), SourceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            value: Vec<Named>,
            #[serde(default)]
            next_link: Option<String>,
        }
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|_| SourceError::Decode("a nextLink that is not a URL".into()))?;
        if !same_origin(origin, &uri) {
            return Err(SourceError::Decode(format!(
                "refused a nextLink to another origin ({}); the token stays with {}",
                origin_of(&uri),
                origin_of(origin)
            )));
        }
        let response = self.send_authorized(&uri).await?;
        if !response.status().is_success() {
            return Err(self.with_role_advice(status_error(&response)));
        }
        let page: Page = serde_json::from_slice(response.body())
            .map_err(|e| SourceError::Decode(format!("job list: {e}")))?;
        let names = page
            .value
            .into_iter()
            .map(|j| JobName::new(j.name))
            .collect();
        Ok((names, page.next_link.filter(|n| !n.is_empty())))
    }

    /// Sends an authorized GET, renewing the token once on 401.
    async fn send_authorized(&self, uri: &http::Uri) -> Result<http::Response<Bytes>, SourceError> {
        let first = self.send_once(uri).await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        self.tokens.invalidate().await;
        self.send_once(uri).await
    }

    async fn send_once(&self, uri: &http::Uri) -> Result<http::Response<Bytes>, SourceError> {
        let token = self.tokens.get().await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(uri.clone())
            .header(header::AUTHORIZATION, token)
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
            .body(Full::new(Bytes::new()))
            .map_err(|e| SourceError::Decode(format!("cannot build request for {uri}: {e}")))?;
        Ok(http_client::send(&self.http, request, self.timeout, MAX_JOB_BODY_BYTES).await?)
    }

    /// Get Job; a 401 refreshes the token once and tries again.
    ///
    /// # Errors
    /// See [`SourceError`]; a refused credential is a 401 [`SourceError::Status`].
    pub async fn get_job(&self, uri: &http::Uri) -> Result<PollOutcome, SourceError> {
        let response = self.send_authorized(uri).await?;
        let outcome = match self.provider {
            ArmProvider::ImportExport => interpret(response),
            ArmProvider::DataBox => interpret_databox(response),
        };
        outcome.map_err(|e| self.with_role_advice(e))
    }

    /// The credential the tokens come from (for the default chain, the one it settled
    /// on).
    pub fn credential(&self) -> String {
        self.tokens.describe()
    }

    /// A 403 says which identity lacks which role where: the step that fixes it.
    fn with_role_advice(&self, error: SourceError) -> SourceError {
        let SourceError::Status {
            status: 403,
            error: Some(mut service),
            retry_after,
            request_id,
        } = error
        else {
            return error;
        };
        let role = match self.provider {
            ArmProvider::ImportExport => "Reader",
            ArmProvider::DataBox => "Reader (or a role with Microsoft.DataBox/jobs/read)",
        };
        service.message = format!(
            "{} (iewatch: grant {role} on {} to {})",
            service.message,
            self.scope_words,
            self.tokens.describe()
        );
        SourceError::Status {
            status: 403,
            error: Some(service),
            retry_after,
            request_id,
        }
    }
}

/// A non-success ARM response as an error (its `{"error": ...}` body parsed if it is
/// one).
fn status_error(response: &http::Response<Bytes>) -> SourceError {
    let error = serde_json::from_slice::<ArmErrorBody>(response.body())
        .ok()
        .map(|b| {
            let detail = b.error.details.first();
            ServiceError::new(
                &b.error.code,
                &b.error.message,
                detail.map(|d| d.code.as_str()),
                detail.map(|d| d.message.as_str()),
            )
        });
    SourceError::Status {
        status: response.status().as_u16(),
        error,
        retry_after: http_client::retry_after(response.headers()),
        request_id: header_string(response.headers(), "x-ms-request-id"),
    }
}

/// Turns a complete `Microsoft.ImportExport` response into an outcome.
///
/// # Errors
/// Non-success statuses and undecodable bodies.
pub fn interpret(response: http::Response<Bytes>) -> Result<PollOutcome, SourceError> {
    if !response.status().is_success() {
        return Err(status_error(&response));
    }
    let job: ArmJob = json_body(&response)?;
    let names = JobNames {
        name: job.name.clone(),
        id: job
            .other
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
    };
    let created_at = super::service_time(
        job.other
            .get("systemData")
            .and_then(|s| s.get("createdAt"))
            .and_then(serde_json::Value::as_str),
    );
    let (snapshot, document) = job.into_parts();
    Ok(observed((snapshot, document, names, created_at), &response))
}

/// Turns a complete `Microsoft.DataBox` response into an outcome.
///
/// # Errors
/// Non-success statuses and undecodable bodies.
pub fn interpret_databox(response: http::Response<Bytes>) -> Result<PollOutcome, SourceError> {
    if !response.status().is_success() {
        return Err(status_error(&response));
    }
    require_json(&response)?;
    let job = DataBoxJob::parse(response.body())
        .map_err(|e| SourceError::Decode(format!("Data Box job: {e}")))?;
    let names = JobNames {
        name: job.name.clone(),
        id: job.id.clone(),
    };
    let created = job
        .system_data
        .as_ref()
        .and_then(|s| s.created_at.as_deref());
    let created_at = super::service_time(created.or(job.properties.start_time.as_deref()));
    let (snapshot, document) = job.into_parts();
    Ok(observed((snapshot, document, names, created_at), &response))
}

type Parts = (
    crate::model::JobSnapshot,
    super::Document,
    JobNames,
    Option<crate::moment::Moment>,
);

fn observed(
    (snapshot, document, names, created_at): Parts,
    response: &http::Response<Bytes>,
) -> PollOutcome {
    let request_id = header_string(response.headers(), "x-ms-request-id");
    PollOutcome::Modified(Box::new(Observation {
        snapshot,
        document,
        change_rule: ChangeRule::WatchedFields,
        names,
        last_modified: None,
        request_id,
        created_at,
    }))
}

#[cfg(test)]
mod tests;
