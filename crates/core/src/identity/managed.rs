//! Managed identity: the token endpoint Azure gives a VM or scale set (IMDS), an App
//! Service, Functions or Container Apps app (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), or
//! an Arc-enabled server (a 401 challenge naming a key file only root or `himds` may
//! read). Found the way the Azure SDKs find it, retried on Microsoft's schedule for IMDS.

use std::{path::Path, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;

use super::{
    entra::oauth_code, entra::oauth_error, entra::parse_token, read_small_file, resource_of, Env,
    Failure, Fetched, TokenError,
};
use crate::{
    config::ManagedIdentityId,
    http_client::{self, HttpError, HttpsClient, USER_AGENT},
    source::encode_path_segment,
};

/// Retries after the first attempt, as Microsoft recommends for IMDS.
pub const IMDS_RETRIES: u32 = 5;
/// Where IMDS answers on every Azure VM.
const IMDS_BASE: &str = "http://169.254.169.254";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
/// The Arc agent's token endpoint, when only its binary says Arc is there.
const ARC_DEFAULT_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";
const ARC_AGENT: &str = "/opt/azcmagent/bin/himds";
/// The only directory an Arc challenge's key file is read from (the agent's).
pub(crate) const ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";
/// Largest Arc key file read.
const ARC_KEY_LIMIT: u64 = 4096;
/// Largest token response read.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;
/// How long the default chain waits for IMDS before it decides there is none.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The wait before retry `retry` (1-based) after `status` (None: no answer), on
/// Microsoft's IMDS schedule: exponential from 0 by 2 s (0, 2, 6, 14, 30 s); for 410
/// ("IMDS is updating, back within 70 s") 0, 5, 10, 20, 40 s, 75 s in all.
pub fn imds_retry_wait(status: Option<u16>, retry: u32) -> Duration {
    let n = retry.saturating_sub(1).min(IMDS_RETRIES);
    let seconds = if status == Some(410) {
        if n == 0 {
            0
        } else {
            5u64 << (n - 1)
        }
    } else {
        2 * ((1u64 << n) - 1)
    };
    Duration::from_secs(seconds.min(60))
}

/// Where this machine's managed identity answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Imds { base: String, overridden: bool },
    AppService { endpoint: String, header: String },
    Arc { endpoint: String },
    Unsupported(&'static str),
}

impl Endpoint {
    /// The SDKs' order: Service Fabric, App Service, Arc, Azure ML / Cloud Shell, IMDS.
    fn detect(env: &Env) -> Endpoint {
        let identity_endpoint = env.var("IDENTITY_ENDPOINT");
        if let Some(endpoint) = identity_endpoint.clone() {
            if env.var("IDENTITY_SERVER_THUMBPRINT").is_some() {
                return Endpoint::Unsupported("Service Fabric");
            }
            if let Some(header) = env.var("IDENTITY_HEADER") {
                return Endpoint::AppService { endpoint, header };
            }
            if env.var("IMDS_ENDPOINT").is_some() {
                return Endpoint::Arc { endpoint };
            }
        }
        if env.var("MSI_ENDPOINT").is_some() {
            return Endpoint::Unsupported("Azure ML or Cloud Shell (MSI_ENDPOINT)");
        }
        if Path::new(ARC_AGENT).exists() {
            return Endpoint::Arc {
                endpoint: ARC_DEFAULT_ENDPOINT.to_owned(),
            };
        }
        match env.var("AZURE_POD_IDENTITY_AUTHORITY_HOST") {
            Some(base) => Endpoint::Imds {
                base: base.trim_end_matches('/').to_owned(),
                overridden: true,
            },
            None => Endpoint::Imds {
                base: IMDS_BASE.to_owned(),
                overridden: false,
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Endpoint::Imds { .. } => "IMDS",
            Endpoint::AppService { .. } => "App Service",
            Endpoint::Arc { .. } => "Azure Arc",
            Endpoint::Unsupported(what) => what,
        }
    }
}

/// One attempt's failure: final, or worth another try after the schedule's wait.
#[derive(Debug)]
pub(super) enum Attempt {
    Final(Failure, String),
    Retry(Option<u16>, String),
}

/// The managed identity of the machine or app iewatch runs on.
#[derive(Debug)]
pub(crate) struct ManagedIdentity {
    pub(crate) id: ManagedIdentityId,
    pub(crate) env: Env,
}

impl ManagedIdentity {
    /// "managed identity (IMDS, system-assigned)".
    pub(crate) fn describe(&self) -> String {
        let which = match &self.id {
            ManagedIdentityId::SystemAssigned => "system-assigned".to_owned(),
            ManagedIdentityId::ClientId(id) => format!("user-assigned, client id {id}"),
            ManagedIdentityId::ObjectId(id) => format!("user-assigned, object id {id}"),
            ManagedIdentityId::ResourceId(id) => format!("user-assigned {id}"),
        };
        format!(
            "managed identity ({}, {which})",
            Endpoint::detect(&self.env).name()
        )
    }

    fn error(&self, failure: Failure, message: impl Into<String>) -> TokenError {
        TokenError::new(&self.describe(), failure, message)
    }

    /// For the default chain: whether a managed identity is there at all. Only plain
    /// IMDS is asked (once, briefly, never retried); the other endpoints are announced by
    /// their variables.
    pub(crate) async fn probe(&self, http: &HttpsClient) -> Result<(), TokenError> {
        let Endpoint::Imds {
            base,
            overridden: false,
        } = Endpoint::detect(&self.env)
        else {
            return Ok(());
        };
        let request = Request::get(format!("{base}{IMDS_PATH}"))
            .header("Metadata", "true")
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.error(Failure::Unavailable, e.to_string()))?;
        match http_client::send(http, request, PROBE_TIMEOUT, TOKEN_BODY_LIMIT).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(
                Failure::Unavailable,
                format!("no IMDS at {base} ({e}): not an Azure VM"),
            )),
        }
    }

    /// A token for `scope`, retried on Microsoft's schedule (404, 410, 429, 5xx, no
    /// answer); each failed attempt is logged with the wait before the next.
    pub(crate) async fn fetch(
        &self,
        http: &HttpsClient,
        scope: &str,
        timeout: Duration,
    ) -> Result<Fetched, TokenError> {
        let endpoint = Endpoint::detect(&self.env);
        for attempt in 0..=IMDS_RETRIES {
            let (status, what) = match self.attempt(&endpoint, http, scope, timeout).await {
                Ok(fetched) => return Ok(fetched),
                Err(Attempt::Final(failure, message)) => return Err(self.error(failure, message)),
                Err(Attempt::Retry(status, what)) => (status, what),
            };
            if attempt == IMDS_RETRIES {
                return Err(self.error(
                    Failure::Transient,
                    format!(
                        "{what} ({} attempts on Microsoft's retry schedule)",
                        IMDS_RETRIES + 1
                    ),
                ));
            }
            let wait = imds_retry_wait(status, attempt + 1);
            tracing::warn!(
                credential = %self.describe(),
                "token attempt {} of {}: {what}; next in {} s",
                attempt + 1,
                IMDS_RETRIES + 1,
                wait.as_secs()
            );
            tokio::time::sleep(wait).await;
        }
        Err(self.error(Failure::Transient, "no attempt made"))
    }

    async fn attempt(
        &self,
        endpoint: &Endpoint,
        http: &HttpsClient,
        scope: &str,
        timeout: Duration,
    ) -> Result<Fetched, Attempt> {
        let resource = encode_path_segment(resource_of(scope));
        let (url, extra) = match endpoint {
            Endpoint::Unsupported(what) => {
                return Err(Attempt::Final(
                    Failure::Unavailable,
                    format!("{what} managed identity is not supported; use workload_identity or an app registration"),
                ))
            }
            Endpoint::Imds { base, .. } => (
                format!("{base}{IMDS_PATH}?api-version=2018-02-01&resource={resource}{}", self.id_query(["client_id", "object_id", "msi_res_id"])),
                None,
            ),
            Endpoint::AppService { endpoint, header } => (
                format!("{endpoint}{}api-version=2019-08-01&resource={resource}{}", query_joint(endpoint), self.id_query(["client_id", "principal_id", "mi_res_id"])),
                Some(("x-identity-header", header.clone())),
            ),
            Endpoint::Arc { endpoint } => {
                if self.id != ManagedIdentityId::SystemAssigned {
                    return Err(Attempt::Final(Failure::Refused, "Azure Arc gives only the system-assigned identity: remove managed_identity_client_id/object_id/resource_id".into()));
                }
                (format!("{endpoint}{}api-version=2020-06-01&resource={resource}", query_joint(endpoint)), None)
            }
        };
        let response = get(http, &url, extra.clone(), timeout).await?;
        let response = if matches!(endpoint, Endpoint::Arc { .. })
            && response.status() == StatusCode::UNAUTHORIZED
        {
            let key = arc_key(&response, Path::new(ARC_KEY_DIR))
                .map_err(|m| Attempt::Final(Failure::Refused, m))?;
            get(
                http,
                &url,
                Some(("authorization", format!("Basic {key}"))),
                timeout,
            )
            .await?
        } else {
            response
        };
        let status = response.status();
        if status.is_success() {
            return parse_token(response.body()).map_err(|m| Attempt::Final(Failure::Transient, m));
        }
        Err(classify(endpoint, status, response.body(), &self.id))
    }

    /// `&client_id=...` (or the endpoint's names for object and resource ids), or nothing
    /// for the system-assigned identity.
    fn id_query(&self, names: [&str; 3]) -> String {
        let (name, value) = match &self.id {
            ManagedIdentityId::SystemAssigned => return String::new(),
            ManagedIdentityId::ClientId(v) => (names[0], v),
            ManagedIdentityId::ObjectId(v) => (names[1], v),
            ManagedIdentityId::ResourceId(v) => (names[2], v),
        };
        format!("&{name}={}", encode_path_segment(value))
    }
}

fn query_joint(endpoint: &str) -> &'static str {
    if endpoint.contains('?') {
        "&"
    } else {
        "?"
    }
}

/// One GET with `Metadata: true` (and the endpoint's header); no answer is worth a retry.
async fn get(
    http: &HttpsClient,
    url: &str,
    extra: Option<(&'static str, String)>,
    timeout: Duration,
) -> Result<http::Response<Bytes>, Attempt> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header("Metadata", "true")
        .header(header::USER_AGENT, USER_AGENT);
    if let Some((name, value)) = extra {
        let value = HeaderValue::from_str(&value).map_err(|_| {
            Attempt::Final(Failure::Refused, format!("{name} is not a header value"))
        })?;
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| Attempt::Final(Failure::Refused, format!("not a URL: {e}")))?;
    http_client::send(http, request, timeout, TOKEN_BODY_LIMIT)
        .await
        .map_err(|e| match e {
            HttpError::Timeout(t) => {
                Attempt::Retry(None, format!("no answer within {} s", t.as_secs()))
            }
            other => Attempt::Retry(None, other.to_string()),
        })
}

/// What a refusal means, with what to check, by the documented error codes; 404, 410,
/// 429 and 5xx are retried.
pub(super) fn classify(
    endpoint: &Endpoint,
    status: StatusCode,
    body: &[u8],
    id: &ManagedIdentityId,
) -> Attempt {
    let said = format!("HTTP {}{}", status.as_u16(), oauth_error(body));
    let code = status.as_u16();
    match code {
        404 | 429 | 500..=599 => return Attempt::Retry(Some(code), said),
        410 => {
            return Attempt::Retry(
                Some(code),
                format!("{said} (IMDS is updating; back within 70 s)"),
            )
        }
        _ => {}
    }
    let host = if matches!(endpoint, Endpoint::Imds { .. }) {
        "VM"
    } else {
        "app"
    };
    let advice = match (code, oauth_code(body).as_deref()) {
        (_, Some("invalid_resource")) => "the resource asked for is not known to the tenant: \
            check the account's endpoint (a sovereign cloud has its own)"
            .to_owned(),
        (_, Some("bad_request_102")) => "IMDS wants its Metadata header: is a proxy rewriting \
            requests to 169.254.169.254?"
            .to_owned(),
        (_, Some("unknown_source")) => "IMDS does not know where the request came from: is it \
            going through a proxy? (IMDS must be reached directly)"
            .to_owned(),
        (_, Some("unauthorized_client")) => format!("this {host} has no managed identity enabled"),
        (_, Some("access_denied")) => {
            "the identity may not get tokens (disabled, or being deleted?)".to_owned()
        }
        (403, _) if String::from_utf8_lossy(body).contains("unreachable") => {
            return Attempt::Final(
                Failure::Unavailable,
                format!("{said}: IMDS is unreachable from here (a proxy answered)"),
            )
        }
        (400, _) if *id == ManagedIdentityId::SystemAssigned => format!(
            "no system-assigned identity is enabled on this {host} (turn it on, or name a \
             user-assigned one with managed_identity_client_id)"
        ),
        (400, _) => format!("the user-assigned identity named is not assigned to this {host}"),
        (401 | 403, _) if matches!(endpoint, Endpoint::AppService { .. }) => {
            "the X-IDENTITY-HEADER was refused (it comes from IDENTITY_HEADER, which the \
             platform sets and rotates)"
                .to_owned()
        }
        _ => return Attempt::Final(Failure::Refused, said),
    };
    Attempt::Final(Failure::Refused, format!("{said}: {advice}"))
}

/// The key an Arc challenge asks for: the file its `WWW-Authenticate: Basic realm=`
/// names, read only if it is a `.key` file of at most 4 KiB directly in `key_dir`.
pub(crate) fn arc_key(response: &http::Response<Bytes>, key_dir: &Path) -> Result<String, String> {
    let realm = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Basic realm="))
        .map(|v| v.trim().trim_matches('"'))
        .ok_or("the Arc agent answered 401 without a Basic realm naming its key file")?;
    let named = Path::new(realm);
    let in_dir = named.parent() == Some(key_dir);
    let is_key = named.extension().is_some_and(|e| e == "key");
    if !in_dir || !is_key {
        return Err(format!(
            "the Arc agent's challenge names {realm}, not a .key file in {}: refused",
            key_dir.display()
        ));
    }
    let unreadable = |e: std::io::Error| {
        format!(
            "cannot read the Arc key file {realm}: {e} (iewatch must run as root or in the \
             himds group)"
        )
    };
    read_small_file(named, ARC_KEY_LIMIT)
        .map_err(unreadable)?
        .ok_or_else(|| format!("the Arc key file {realm} is empty or larger than 4 KiB"))
}
