//! The simulator's Resource Manager side: an Entra ID token endpoint
//! (`POST /{tenant}/oauth2/v2.0/token`, client credentials) and
//! `GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ImportExport/jobs/{job}`
//! with bearer tokens, serving the same scenario timelines in ARM's JSON shape.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{json, Value};

use super::{
    faults::with_retry_after,
    scenario::FaultKind,
    service::{full, percent_decode, ResetConnection, ResponseBody},
    RequestRecord, SimState,
};
use crate::source::{arm_wire::ArmErrorBody, classic_wire::Job};

const TOKEN_FORM_LIMIT: usize = 16 * 1024;

fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(serde_json::to_vec(body).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    json_response(
        status,
        &serde_json::to_value(ArmErrorBody::new(code, message)).unwrap_or_default(),
    )
}

/// Answers one request on the Resource Manager listener.
pub(crate) async fn handle(
    state: &SimState,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<ResponseBody>, ResetConnection> {
    let arrived = Instant::now();
    let sim_offset = state.clock.now();
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut record = RequestRecord {
        at: arrived,
        sim_offset,
        method: request.method().to_string(),
        job: None,
        status: 0,
        if_none_match: None,
        fault: None,
    };
    let response = match (request.method().clone(), segments.as_slice()) {
        (Method::POST, [tenant, "oauth2", "v2.0", "token"]) => {
            let tenant = (*tenant).to_owned();
            token(state, &tenant, request).await
        }
        (Method::GET, [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
            openid_configuration(&request, tenant)
        }
        (
            Method::GET,
            ["subscriptions", sub, "resourceGroups", rg, "providers", "Microsoft.ImportExport", "jobs", job],
        ) => {
            record.job = Some((*job).to_owned());
            let (response, fault) = get_job(state, &request, sub, rg, job, sim_offset);
            return state.finish(record, response, fault).await;
        }
        (
            Method::GET,
            ["subscriptions", sub, "resourceGroups", rg, "providers", "Microsoft.ImportExport", "jobs"],
        ) => list_jobs(state, &request, sub, rg, sim_offset),
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested path does not exist.",
        ),
    };
    state.finish(record, response, None).await
}

/// The OpenID Connect discovery document of a tenant, which MSAL-based clients
/// (azure-identity) read before they ask for a token.
fn openid_configuration(
    request: &Request<hyper::body::Incoming>,
    tenant: &str,
) -> Response<ResponseBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("https://{host}/{tenant}");
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": format!("{base}/v2.0"),
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "jwks_uri": format!("https://{host}/{tenant}/discovery/v2.0/keys"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }),
    )
}

/// The client-credentials grant: checks the form against the scenario's credentials.
async fn token(
    state: &SimState,
    tenant: &str,
    request: Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    // client_secret_basic: the app's id and secret in an Authorization header.
    let basic = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            Some((percent_decode(id, true)?, percent_decode(secret, true)?))
        });
    let body = match Limited::new(request.into_body(), TOKEN_FORM_LIMIT)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request", "error_description": "unreadable body"}),
            )
        }
    };
    let form: Vec<(String, String)> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let credentials = &state.arm_credentials;
    if tenant != credentials.tenant_id {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": format!("AADSTS90002: Tenant '{tenant}' not found.")}),
        );
    }
    // MSAL may send reserved scopes beside the resource's /.default.
    if field("grant_type") != Some("client_credentials")
        || !field("scope").is_some_and(|s| s.split(' ').any(|s| s.ends_with("/.default")))
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": "AADSTS900144: grant_type client_credentials and a /.default scope are required."}),
        );
    }
    let client_id = field("client_id").or(basic.as_ref().map(|(id, _)| id.as_str()));
    let client_known = client_id == Some(credentials.client_id.as_str());
    let secret = field("client_secret").or(basic.as_ref().map(|(_, s)| s.as_str()));
    let proven = match field("client_assertion") {
        Some(assertion) => assertion_valid(state, assertion, tenant),
        None => secret == Some(credentials.client_secret.as_str()),
    };
    if !(client_known && proven) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."}),
        );
    }
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let token = format!("sim-token-{n:08}");
    let lifetime = Duration::from_secs(credentials.token_lifetime);
    state
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), Instant::now() + lifetime);
    json_response(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": credentials.token_lifetime, "ext_expires_in": credentials.token_lifetime, "access_token": token}),
    )
}

/// Checks a client assertion as Entra ID does: an RS256 JWT whose `x5t` names a
/// registered certificate, signed by that certificate's key, for this client and this
/// token endpoint, not expired.
fn assertion_valid(state: &SimState, assertion: &str, tenant: &str) -> bool {
    use base64::Engine as _;
    use sha1::Digest as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return false;
    };
    let decode_json = |part: &str| {
        b64.decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    };
    let (Some(header), Some(claims), Ok(signature)) = (
        decode_json(header),
        decode_json(claims),
        b64.decode(signature),
    ) else {
        return false;
    };
    if header["alg"] != "RS256" {
        return false;
    }
    let Some(thumbprint) = header["x5t"].as_str().and_then(|t| b64.decode(t).ok()) else {
        return false;
    };
    let registered = state
        .client_certificates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(der) = registered
        .iter()
        .find(|der| sha1::Sha1::digest(der.as_slice()).as_slice() == thumbprint.as_slice())
    else {
        return false;
    };
    let der = rustls_pki_types::CertificateDer::from(der.as_slice());
    let Ok(certificate) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    if certificate
        .verify_signature(
            webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &signature,
        )
        .is_err()
    {
        return false;
    }
    let client_id = state.arm_credentials.client_id.as_str();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    claims["iss"] == client_id
        && claims["sub"] == client_id
        && claims["aud"]
            .as_str()
            .is_some_and(|aud| aud.ends_with(&format!("/{tenant}/oauth2/v2.0/token")))
        && claims["exp"].as_u64().is_some_and(|exp| exp > now)
}

fn get_job(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    subscription: &str,
    resource_group: &str,
    job: &str,
    now: Duration,
) -> (Response<ResponseBody>, Option<FaultKind>) {
    let plain = |response| (response, None);
    if let Some(refused) = check_request(state, request, subscription, resource_group) {
        return plain(refused);
    }
    let Some(entry) = state.jobs.values().find(|e| e.timeline.name == job) else {
        return plain(not_found(job));
    };
    let fault = state.fault_for(entry, now);
    if let Some(fault) = fault {
        let response = match fault.kind {
            FaultKind::Unavailable => with_retry_after(
                fault.retry_after,
                arm_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is unavailable.",
                ),
            ),
            FaultKind::Throttled => with_retry_after(
                fault.retry_after,
                arm_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests.",
                ),
            ),
            FaultKind::InternalError => arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Internal error.",
            ),
            FaultKind::NotFound => not_found(job),
            FaultKind::Malformed => json_response_raw(b"{\"name\": \"broken\", \"properties\": {"),
            _ => arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Fault.",
            ),
        };
        return (response, Some(fault.kind));
    }
    let current = entry.timeline.at(now);
    match &current.job {
        None => plain(not_found(job)),
        Some(document) => {
            let mut body = arm_document(state, document);
            add_system_data(&mut body, request, &entry.timeline, current);
            plain(json_response(StatusCode::OK, &body))
        }
    }
}

/// Jobs listed per page, small so that clients must follow `nextLink`.
const LIST_PAGE_SIZE: usize = 2;

fn list_jobs(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    subscription: &str,
    resource_group: &str,
    now: Duration,
) -> Response<ResponseBody> {
    if let Some(refused) = check_request(state, request, subscription, resource_group) {
        return refused;
    }
    let skip: usize = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("$skiptoken=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut jobs: Vec<(&Job, &super::scenario::Timeline, &super::scenario::Version)> = state
        .jobs
        .values()
        .filter_map(|e| {
            let current = e.timeline.at(now);
            Some((current.job.as_ref()?, &e.timeline, current))
        })
        .collect();
    jobs.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let page: Vec<Value> = jobs
        .iter()
        .skip(skip)
        .take(LIST_PAGE_SIZE)
        .map(|(job, timeline, current)| {
            let mut body = arm_document(state, job);
            add_system_data(&mut body, request, timeline, current);
            body
        })
        .collect();
    let mut body = json!({ "value": page });
    if skip + LIST_PAGE_SIZE < jobs.len() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let origin = state
            .next_link_origin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| format!("https://{host}"));
        body["nextLink"] = format!(
            "{origin}{}?api-version={}&$skiptoken={}",
            request.uri().path(),
            api_version(request).unwrap_or(API_VERSIONS[2]),
            skip + LIST_PAGE_SIZE
        )
        .into();
    }
    json_response(StatusCode::OK, &body)
}

/// The published api-versions of `Microsoft.ImportExport` the simulator answers.
const API_VERSIONS: [&str; 3] = ["2016-11-01", "2020-08-01", "2021-01-01"];

/// The request's api-version, when it is one the simulator answers.
fn api_version(request: &Request<hyper::body::Incoming>) -> Option<&'static str> {
    let query = request.uri().query()?;
    let asked = query
        .split('&')
        .find_map(|p| p.strip_prefix("api-version="))?;
    API_VERSIONS.into_iter().find(|v| *v == asked)
}

/// api-version, bearer token, subscription and resource group, in that order.
fn check_request(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    subscription: &str,
    resource_group: &str,
) -> Option<Response<ResponseBody>> {
    if api_version(request).is_none() {
        return Some(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "The api-version is missing or not supported; the supported api-versions are \
             2016-11-01, 2020-08-01, 2021-01-01.",
        ));
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let expiry = token.and_then(|t| {
        state
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .copied()
    });
    match expiry {
        None => {
            return Some(arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            ))
        }
        Some(expiry) if Instant::now() >= expiry => {
            return Some(arm_error(
                StatusCode::UNAUTHORIZED,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            ))
        }
        Some(_) => {}
    }
    if subscription != state.subscription {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{subscription}' could not be found."),
        ));
    }
    if !resource_group.eq_ignore_ascii_case(&state.resource_group) {
        return Some(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{resource_group}' could not be found."),
        ));
    }
    None
}

fn json_response_raw(body: &'static [u8]) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from_static(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn not_found(job: &str) -> Response<ResponseBody> {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.ImportExport/jobs/{job}' under resource group was not found."
        ),
    )
}

/// `systemData` (who created the job and when it last changed), which the published
/// shapes of 2016-11-01 and 2021-01-01 carry and that of 2020-08-01 does not.
fn add_system_data(
    body: &mut Value,
    request: &Request<hyper::body::Incoming>,
    timeline: &super::scenario::Timeline,
    current: &super::scenario::Version,
) {
    if api_version(request) == Some("2020-08-01") {
        return;
    }
    let at = |t: std::time::SystemTime| humantime::format_rfc3339_micros(t).to_string();
    let created = timeline
        .versions
        .first()
        .map_or(current.modified_at, |v| v.modified_at);
    body["systemData"] = json!({
        "createdBy": "iewatch-simulator",
        "createdByType": "Application",
        "createdAt": at(created),
        "lastModifiedBy": "iewatch-simulator",
        "lastModifiedByType": "Application",
        "lastModifiedAt": at(current.modified_at),
    });
}

/// The classic document in Resource Manager's shape.
fn arm_document(state: &SimState, job: &Job) -> Value {
    let p = &job.properties;
    let drives: Vec<Value> = job
        .drive_list
        .iter()
        .flatten()
        .map(|d| {
            let mut drive = json!({
                "driveId": d.drive_id,
                "manifestFile": d.manifest_file,
                "manifestHash": d.manifest_hash,
                "driveHeaderHash": "",
                "state": d.state,
            });
            if let Some(object) = drive.as_object_mut() {
                // The 2021-01-01 DriveStatus carries the key, as the classic API does.
                if let Some(key) = &d.bit_locker_key {
                    object.insert("bitLockerKey".into(), key.expose().into());
                }
                if let Some(status) = &d.copy_status {
                    object.insert("copyStatus".into(), status.clone().into());
                }
                if let Some(percent) = d.percent_complete {
                    object.insert("percentComplete".into(), percent.into());
                    object.insert("bytesSucceeded".into(), (percent * 40_000_000_000).into());
                }
            }
            drive
        })
        .collect();
    let mut properties = json!({
        "jobType": p.job_type,
        "state": p.state,
        "cancelRequested": p.cancel_requested.unwrap_or(false),
        "diagnosticsPath": p.import_export_states_path,
        "backupDriveManifest": p.backup_drive_manifest.unwrap_or(false),
        "provisioningState": "Succeeded",
        "encryptionKey": {"kekType": "MicrosoftManaged"},
    });
    if let Some(object) = properties.as_object_mut() {
        if let Some(percent) = p.percent_complete {
            object.insert("percentComplete".into(), percent.into());
        }
        if !drives.is_empty() {
            object.insert("driveList".into(), drives.into());
        }
    }
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ImportExport/jobs/{}", state.subscription, state.resource_group, job.name),
        "name": job.name,
        "type": "Microsoft.ImportExport/jobs",
        "location": p.location,
        "identity": {"type": "None"},
        "properties": properties,
    })
}
