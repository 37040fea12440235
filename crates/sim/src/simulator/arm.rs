//! The simulator's Resource Manager side: an Entra ID token endpoint
//! (`POST /{tenant}/oauth2/v2.0/token`, client credentials) and
//! `GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ImportExport/jobs/{job}`
//! with bearer tokens, serving the same scenario timelines in ARM's JSON shape.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{
    faults::with_retry_after,
    scenario::FaultKind,
    service::{full, ResetConnection, ResponseBody},
    RequestRecord, SimState,
};
use iewatch_core::source::{arm_wire::ArmErrorBody, classic_wire::Job};

mod entra;

use entra::{openid_configuration, token};

/// A JSON answer, as every Azure endpoint of the simulator gives one.
pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
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
            ["subscriptions", sub, "resourceGroups", rg, "providers", namespace, "jobs", job],
        ) => {
            let Some(provider) = Provider::from_namespace(namespace) else {
                return state.finish(record, no_such_path(), None).await;
            };
            record.job = Some((*job).to_owned());
            let at = Where {
                subscription: sub,
                resource_group: rg,
                provider,
                now: sim_offset,
            };
            let (response, fault) = get_job(state, &request, &at, job);
            return state.finish(record, response, fault).await;
        }
        (
            Method::GET,
            ["subscriptions", sub, "resourceGroups", rg, "providers", namespace, "jobs"],
        ) => match Provider::from_namespace(namespace) {
            Some(provider) => {
                let at = Where {
                    subscription: sub,
                    resource_group: rg,
                    provider,
                    now: sim_offset,
                };
                list_jobs(state, &request, &at)
            }
            None => no_such_path(),
        },
        _ => no_such_path(),
    };
    state.finish(record, response, None).await
}

fn no_such_path() -> Response<ResponseBody> {
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested path does not exist.",
    )
}

/// The resource providers the simulator serves jobs of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    /// `Microsoft.ImportExport`: the scenario's jobs without a SKU.
    ImportExport,
    /// `Microsoft.DataBox`: the scenario's jobs with a SKU.
    DataBox,
}

impl Provider {
    fn from_namespace(namespace: &str) -> Option<Provider> {
        if namespace.eq_ignore_ascii_case("Microsoft.ImportExport") {
            Some(Provider::ImportExport)
        } else if namespace.eq_ignore_ascii_case("Microsoft.DataBox") {
            Some(Provider::DataBox)
        } else {
            None
        }
    }

    /// The published api-versions the simulator answers (databox.md §1.1 for Data Box).
    fn api_versions(self) -> &'static [&'static str] {
        match self {
            Provider::ImportExport => &["2016-11-01", "2020-08-01", "2021-01-01"],
            Provider::DataBox => &[
                "2018-01-01",
                "2019-09-01",
                "2020-04-01",
                "2020-11-01",
                "2021-03-01",
                "2021-05-01",
                "2021-12-01",
                "2022-02-01",
                "2022-09-01",
                "2022-10-01",
                "2022-12-01",
                "2023-03-01",
                "2023-12-01",
                "2025-02-01",
                "2025-07-01",
            ],
        }
    }

    fn serves(self, timeline: &super::scenario::Timeline) -> bool {
        timeline.sku.is_some() == (self == Provider::DataBox)
    }
}

/// What a Resource Manager request addresses.
struct Where<'a> {
    subscription: &'a str,
    resource_group: &'a str,
    provider: Provider,
    now: Duration,
}

fn get_job(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    at: &Where<'_>,
    job: &str,
) -> (Response<ResponseBody>, Option<FaultKind>) {
    let (now, provider) = (at.now, at.provider);
    let plain = |response| (response, None);
    if let Some(refused) = check_request(state, request, at) {
        return plain(refused);
    }
    let entry = state.jobs_named(job).find(|e| provider.serves(&e.timeline));
    let Some(entry) = entry else {
        return plain(not_found(provider, job, false));
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
            FaultKind::NotFound => not_found(provider, job, true),
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
        None => plain(not_found(provider, job, true)),
        Some(_) => {
            let expand = query_param(request, "$expand") == Some("details");
            plain(resource(state, request, &entry.timeline, current, expand).into_response())
        }
    }
}

/// A job's resource: ImportExport's compact JSON, or Data Box's service-formatted text.
enum Resource {
    Json(Value),
    /// Written as the Data Box service writes it (pretty, CRLF) when it is a response.
    Service(Value),
}

impl Resource {
    fn into_response(self) -> Response<ResponseBody> {
        match self {
            Resource::Json(body) => json_response(StatusCode::OK, &body),
            Resource::Service(body) => {
                let mut response = json_response(StatusCode::OK, &Value::Null);
                *response.body_mut() = full(super::databox::service_body(&body));
                response
            }
        }
    }

    /// As a JSON value (list pages are built from values).
    fn into_value(self) -> Value {
        match self {
            Resource::Json(body) | Resource::Service(body) => body,
        }
    }
}

/// The resource of `timeline` at `current` in its provider's shape.
fn resource(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    timeline: &super::scenario::Timeline,
    current: &super::scenario::Version,
    expand: bool,
) -> Resource {
    let Some(job) = &current.job else {
        return Resource::Json(Value::Null);
    };
    match (&timeline.sku, &current.databox) {
        (Some(sku), Some(order)) => {
            let placement = super::databox::Placement {
                subscription: &state.subscription,
                resource_group: &state.resource_group,
            };
            let body = super::databox::resource(job, sku, order, &placement, expand);
            Resource::Service(body)
        }
        _ => {
            let mut body = arm_document(state, job);
            add_system_data(&mut body, request, timeline, current);
            Resource::Json(body)
        }
    }
}

/// Jobs listed per page, small so that clients must follow `nextLink`.
const LIST_PAGE_SIZE: usize = 2;

fn list_jobs(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    at: &Where<'_>,
) -> Response<ResponseBody> {
    let now = at.now;
    if let Some(refused) = check_request(state, request, at) {
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
        .filter(|e| at.provider.serves(&e.timeline))
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
        .map(|(_, timeline, current)| {
            resource(state, request, timeline, current, false).into_value()
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
            query_param(request, "api-version").unwrap_or_default(),
            skip + LIST_PAGE_SIZE
        )
        .into();
    }
    json_response(StatusCode::OK, &body)
}

/// A query parameter's raw value.
fn query_param<'r>(request: &'r Request<hyper::body::Incoming>, name: &str) -> Option<&'r str> {
    request.uri().query()?.split('&').find_map(|p| {
        let (key, value) = p.split_once('=')?;
        // `$expand` arrives as `%24expand` from clients that encode it.
        (key == name || key.replace("%24", "$") == name).then_some(value)
    })
}

/// api-version, bearer token, subscription and resource group, in that order.
fn check_request(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    at: &Where<'_>,
) -> Option<Response<ResponseBody>> {
    let (subscription, resource_group) = (at.subscription, at.resource_group);
    let versions = at.provider.api_versions();
    let asked = query_param(request, "api-version");
    if !asked.is_some_and(|v| versions.contains(&v)) {
        return Some(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version is missing or not supported; the supported api-versions are {}.",
                versions.join(", ")
            ),
        ));
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let issued = token.and_then(|t| {
        state
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .cloned()
    });
    let expiry = issued.as_ref().map(|(expiry, _)| *expiry);
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
    let principal = issued.map(|(_, principal)| principal).unwrap_or_default();
    if state
        .identity
        .without_role
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&principal)
    {
        return Some(arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            &format!(
                "The client '{principal}' with object id '{principal}' does not have authorization to perform action 'Microsoft.ImportExport/jobs/read' over scope '/subscriptions/{subscription}/resourceGroups/{resource_group}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        ));
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

/// The 404 of a job that does not exist. Data Box answers as the real service does
/// (databox.md §1.5): a job it once had with its own body, `details: [null]` and a CRLF
/// in the message; a name it never knew from the gateway, with `x-ms-failure-cause`.
fn not_found(provider: Provider, job: &str, existed: bool) -> Response<ResponseBody> {
    match (provider, existed) {
        (Provider::DataBox, true) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {
                "code": "SsemUserErrorEntityNotFound",
                "message": format!("Could not find the entity {job}.\r\nProvide a valid entity name and retry the operation."),
                "details": [null],
            }}),
        ),
        (Provider::DataBox, false) => {
            let mut response = arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The Resource 'Microsoft.DataBox/jobs/{job}' under resource group was not found."),
            );
            response
                .headers_mut()
                .insert("x-ms-failure-cause", HeaderValue::from_static("gateway"));
            response
        }
        (Provider::ImportExport, _) => arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.ImportExport/jobs/{job}' under resource group was not found."
            ),
        ),
    }
}

/// `systemData` (who created the job and when it last changed), which the published
/// shapes of 2016-11-01 and 2021-01-01 carry and that of 2020-08-01 does not.
fn add_system_data(
    body: &mut Value,
    request: &Request<hyper::body::Incoming>,
    timeline: &super::scenario::Timeline,
    current: &super::scenario::Version,
) {
    if query_param(request, "api-version") == Some("2020-08-01") {
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
                if let Some(log) = &d.error_log_uri {
                    object.insert("errorLogUri".into(), log.clone().into());
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
        for (key, package) in [
            ("deliveryPackage", &p.delivery_package),
            ("returnPackage", &p.return_package),
        ] {
            if let Some(package) = package {
                object.insert(
                    key.into(),
                    json!({
                        "carrierName": package.carrier_name,
                        "trackingNumber": package.tracking_number,
                        "driveCount": package.drive_count,
                        "shipDate": package.ship_date,
                    }),
                );
            }
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
