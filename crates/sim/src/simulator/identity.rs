//! The simulator's secret-less identities, answering as Azure does: IMDS (a VM's managed
//! identity), the App Service / Container Apps endpoint with its `X-IDENTITY-HEADER`, and
//! the Azure Arc agent's 401 challenge with its key file, on a plain-HTTP loopback
//! listener; workload identity's federated token is checked by the Entra token endpoint
//! (`arm/entra.rs`). Faults a test sets make them hang, answer 410 for a while, or give
//! odd lifetimes.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use super::{
    arm::json_response,
    service::{percent_decode, ResponseBody},
    SimState, STALL,
};

/// The system-assigned identity's principal (the VM's, the app's).
pub const SYSTEM_ASSIGNED: &str = "iewatch-sim-system-identity";
/// The Arc-enabled server's principal.
pub const ARC_SERVER: &str = "iewatch-sim-arc-server";
/// The one user-assigned identity's client id (also its principal in role checks).
pub const USER_ASSIGNED_CLIENT_ID: &str = "iewatch-sim-user-identity";
/// The same identity's object (principal) id.
pub const USER_ASSIGNED_OBJECT_ID: &str = "5d6e3c3a-0000-4000-8000-00000000a1a1";
const USER_ASSIGNED_NAME: &str = "iewatch-sim-user-identity";
/// The workload identity's client id (a user-assigned identity with a federated
/// credential for the cluster's service account).
pub const WORKLOAD_CLIENT_ID: &str = "iewatch-sim-workload";

/// What a test makes the identity endpoints do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityFault {
    /// No answer until the client gives up.
    Hang,
    /// 410 "IMDS is updating" until this simulated offset.
    GoneUntil(Duration),
    /// Success, with this `expires_in` (and the matching `expires_on`, when a number).
    ExpiresIn(String),
    /// 400 "Identity not found": no identity is assigned to this VM or app.
    NotAssigned,
}

/// The identity side's state.
pub(crate) struct IdentityState {
    /// App Service's `IDENTITY_HEADER`.
    pub(crate) header: String,
    /// The federated token the file holds now; only it is accepted.
    pub(crate) federated: Mutex<String>,
    pub(crate) federated_file: PathBuf,
    /// Where the Arc challenge's key files are written, and the current key.
    pub(crate) arc_key_dir: Mutex<PathBuf>,
    /// The key the last challenge named, and its file (removed once answered).
    arc_key: Mutex<Option<(String, PathBuf)>>,
    pub(crate) fault: Mutex<Option<IdentityFault>>,
    /// Principals without a role on the resource group: their calls get 403.
    pub(crate) without_role: Mutex<HashSet<String>>,
    /// Requests the identity endpoints answered (a token cache is seen working here).
    requests: AtomicU64,
}

/// `bytes` random bytes in hex: each `RandomState` is freshly keyed by the OS.
fn random_hex(bytes: usize) -> String {
    use std::hash::BuildHasher;
    (0..bytes.div_ceil(8))
        .map(|i| {
            format!(
                "{:016x}",
                std::collections::hash_map::RandomState::new().hash_one(i)
            )
        })
        .collect::<String>()[..bytes * 2]
        .to_owned()
}

impl IdentityState {
    /// A fresh state writing its files under `dir`.
    pub(crate) fn new(dir: &Path) -> IdentityState {
        let federated_file = dir.join("federated-token");
        let state = IdentityState {
            header: random_hex(16),
            federated: Mutex::new(String::new()),
            federated_file,
            arc_key_dir: Mutex::new(dir.join("arc-tokens")),
            arc_key: Mutex::new(None),
            fault: Mutex::new(None),
            without_role: Mutex::new(HashSet::new()),
            requests: AtomicU64::new(0),
        };
        state.rotate_federated_token();
        state
    }

    /// Writes a new federated token to the file; the old one is refused from now on.
    pub(crate) fn rotate_federated_token(&self) {
        let b64 = |v: &Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let token = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "RS256", "typ": "JWT"})),
            b64(&json!({
                "iss": "https://oidc.iewatch-sim.invalid/",
                "sub": "system:serviceaccount:iewatch:iewatch",
                "aud": ["api://AzureADTokenExchange"],
                "jti": random_hex(8),
            })),
            random_hex(32)
        );
        let _ = std::fs::write(&self.federated_file, &token);
        *lock(&self.federated) = token;
    }
}

/// A token shaped as Entra ID's are (an unsigned JWT with a v1 issuer, the resource as
/// its audience, and its lifetime), so that Storage emulators that read tokens (Azurite's
/// `--oauth basic`) take it. `tag` ends it, to find a leaked token in a log.
pub(crate) fn mint_token(tenant: &str, resource: &str, lifetime: u64, tag: &str) -> String {
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let encode = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = encode(&serde_json::json!({"typ": "JWT", "alg": "none"}));
    let audience = resource.trim_end_matches("/.default");
    let payload = encode(&serde_json::json!({
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "aud": audience,
        "iat": now.saturating_sub(60),
        "nbf": now.saturating_sub(60),
        "exp": now.saturating_add(lifetime),
    }));
    format!("{header}.{payload}.{tag}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves the identity endpoints on `listener` (plain HTTP, as Azure's are).
pub(crate) async fn serve(listener: TcpListener, state: Arc<SimState>, tracker: TaskTracker) {
    loop {
        let stream = tokio::select! {
            () = state.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tracker.spawn(async move {
            let shutdown = state.shutdown.clone();
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<ResponseBody> {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// The query's parameters, percent-decoded (clients send `resource` raw or encoded).
fn query(request: &Request<hyper::body::Incoming>) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

async fn handle(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    state.identity.requests.fetch_add(1, Ordering::Relaxed);
    let fault = lock(&state.identity.fault).clone();
    match fault {
        Some(IdentityFault::Hang) => {
            tokio::select! {
                () = tokio::time::sleep(STALL) => {}
                () = state.shutdown.cancelled() => {}
            }
        }
        Some(IdentityFault::GoneUntil(until)) if state.clock.now() < until => {
            return oauth_error(
                StatusCode::GONE,
                "unknown",
                "IMDS is being updated; try again.",
            );
        }
        Some(IdentityFault::NotAssigned) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found",
            );
        }
        _ => {}
    }
    if request.method() != Method::GET {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "GET only",
        );
    }
    let params = query(request);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let metadata = request
        .headers()
        .get("metadata")
        .is_some_and(|v| v == "true");
    let Some(resource) = param("resource") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let ids = [
        param("client_id"),
        param("object_id").or(param("principal_id")),
        param("msi_res_id").or(param("mi_res_id")),
    ];
    match request.uri().path() {
        "/metadata/identity/oauth2/token" => {
            if !metadata {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request_102",
                    "Required metadata header not specified",
                );
            }
            if !param("api-version").is_some_and(|v| v >= "2018-02-01" && v.len() == 10) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "api-version 2018-02-01 or later is required",
                );
            }
            managed_token(state, resource, ids, true)
        }
        "/msi/token" => {
            let header = request
                .headers()
                .get("x-identity-header")
                .and_then(|v| v.to_str().ok());
            if header != Some(state.identity.header.as_str()) {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "The X-IDENTITY-HEADER is missing or wrong.",
                );
            }
            if param("api-version") != Some("2019-08-01") {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "api-version 2019-08-01 is required",
                );
            }
            managed_token(state, resource, ids, false)
        }
        "/arc/metadata/identity/oauth2/token" => arc(state, request, resource, metadata),
        _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "no such path"),
    }
}

/// IMDS or App Service: the system-assigned identity, or the user-assigned one named.
fn managed_token(
    state: &SimState,
    resource: &str,
    ids: [Option<&str>; 3],
    imds: bool,
) -> Response<ResponseBody> {
    let user_resource_id = format!(
        "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{USER_ASSIGNED_NAME}",
        state.subscription, state.resource_group
    );
    let principal = match ids {
        [None, None, None] => SYSTEM_ASSIGNED,
        [Some(USER_ASSIGNED_CLIENT_ID), None, None]
        | [None, Some(USER_ASSIGNED_OBJECT_ID), None] => USER_ASSIGNED_CLIENT_ID,
        [None, None, Some(id)] if id.eq_ignore_ascii_case(&user_resource_id) => {
            USER_ASSIGNED_CLIENT_ID
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found",
            );
        }
    };
    issue(state, resource, principal, imds)
}

/// Azure Arc: a 401 naming a fresh key file, then the token for its contents.
fn arc(
    state: &SimState,
    request: &Request<hyper::body::Incoming>,
    resource: &str,
    metadata: bool,
) -> Response<ResponseBody> {
    if !metadata {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Metadata header required",
        );
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let current = lock(&state.identity.arc_key).clone();
    if let Some((key, file)) = current.filter(|(key, _)| Some(key.as_str()) == presented) {
        let _ = (key, std::fs::remove_file(file));
        *lock(&state.identity.arc_key) = None;
        return issue(state, resource, ARC_SERVER, true);
    }
    let dir = lock(&state.identity.arc_key_dir).clone();
    let key = random_hex(32);
    let path = dir.join(format!("{}.key", random_hex(8)));
    if std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, &key))
        .is_err()
    {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown",
            "cannot write the key file",
        );
    }
    if let Some((_, stale)) = lock(&state.identity.arc_key).replace((key, path.clone())) {
        let _ = std::fs::remove_file(stale);
    }
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Basic authentication required",
    );
    if let Ok(value) = HeaderValue::from_str(&format!("Basic realm={}", path.display())) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// A token for `principal`, in IMDS's shape (every number a string) or App Service's (no
/// `expires_in`).
fn issue(state: &SimState, resource: &str, principal: &str, imds: bool) -> Response<ResponseBody> {
    let lifetime_said = match lock(&state.identity.fault).clone() {
        Some(IdentityFault::ExpiresIn(said)) => said,
        _ => state.arm_credentials.token_lifetime.to_string(),
    };
    let lifetime = lifetime_said
        .parse::<u64>()
        .unwrap_or(0)
        .min(10 * 365 * 86_400);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let token = mint_token(
        &state.arm_credentials.tenant_id,
        resource,
        lifetime,
        &format!("sim-mi-token-{n:08}"),
    );
    lock(&state.tokens).insert(
        token.clone(),
        (
            Instant::now() + Duration::from_secs(lifetime.min(86_400 * 365)),
            principal.to_owned(),
        ),
    );
    let mut body = json!({
        "access_token": token,
        "refresh_token": "",
        "expires_on": (now + lifetime).to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    if imds {
        body["expires_in"] = Value::String(lifetime_said);
    } else {
        body["client_id"] = Value::String(principal.to_owned());
    }
    json_response(StatusCode::OK, &body)
}

impl super::RunningSimulator {
    /// The variables that point an Azure SDK (or iewatch) at each of the simulator's
    /// identities, one group per kind of host, with what the group stands for.
    pub fn identity_environments(&self) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
        let plain = format!("http://{}", self.identity_addr);
        let tenant = self.state.arm_credentials.tenant_id.clone();
        vec![
            (
                "a VM or scale set's managed identity (IMDS)",
                vec![("AZURE_POD_IDENTITY_AUTHORITY_HOST", plain.clone())],
            ),
            (
                "App Service, Functions or Container Apps",
                vec![
                    ("IDENTITY_ENDPOINT", format!("{plain}/msi/token")),
                    ("IDENTITY_HEADER", self.state.identity.header.clone()),
                ],
            ),
            (
                "AKS workload identity (credential = \"workload_identity\")",
                vec![
                    ("AZURE_AUTHORITY_HOST", self.arm_endpoint()),
                    ("AZURE_TENANT_ID", tenant),
                    ("AZURE_CLIENT_ID", WORKLOAD_CLIENT_ID.to_owned()),
                    (
                        "AZURE_FEDERATED_TOKEN_FILE",
                        self.state.identity.federated_file.display().to_string(),
                    ),
                ],
            ),
            (
                "an Arc-enabled server (iewatch reads its key only from /var/opt/azcmagent/tokens)",
                vec![
                    (
                        "IDENTITY_ENDPOINT",
                        format!("{plain}/arc/metadata/identity/oauth2/token"),
                    ),
                    ("IMDS_ENDPOINT", plain),
                ],
            ),
        ]
    }

    /// A `kind = "arm"` account block whose tokens come from `credential`
    /// (`managed_identity`, `workload_identity`, `azure_cli`, `default`).
    pub fn identity_account_block(&self, name: &str, credential: &str) -> String {
        format!(
            "[[account]]\nname = \"{name}\"\nkind = \"arm\"\nsubscription_id = \"{}\"\nresource_group = \"{}\"\ncredential = \"{credential}\"\nendpoint = \"{}\"\nca_certificate = \"{}\"\nblob_endpoint = \"{}\"\n",
            self.state.subscription,
            self.state.resource_group,
            self.arm_endpoint(),
            self.certs.ca.display(),
            self.blob_endpoint(),
        )
    }

    /// A token for `principal`, valid for `lifetime` seconds, as a tool that signed in
    /// (the Azure CLI) would hold.
    pub fn issue_token(&self, principal: &str, lifetime: u64) -> String {
        let n = self.state.counter.fetch_add(1, Ordering::Relaxed);
        let token = mint_token(
            &self.state.arm_credentials.tenant_id,
            "https://management.azure.com",
            lifetime,
            &format!("sim-user-token-{n:08}"),
        );
        lock(&self.state.tokens).insert(
            token.clone(),
            (
                Instant::now() + Duration::from_secs(lifetime),
                principal.to_owned(),
            ),
        );
        token
    }

    /// How many requests the identity endpoints (IMDS, App Service, Arc) have had.
    pub fn identity_requests(&self) -> u64 {
        self.state.identity.requests.load(Ordering::Relaxed)
    }

    /// Makes the identity endpoints hang, answer 410, or give odd lifetimes (None: as
    /// Azure does).
    pub fn set_identity_fault(&self, fault: Option<IdentityFault>) {
        *lock(&self.state.identity.fault) = fault;
    }

    /// Rotates the workload identity's federated token, as the kubelet does.
    pub fn rotate_federated_token(&self) {
        self.state.identity.rotate_federated_token();
    }

    /// Takes the role on the resource group from `principal` (or gives it back).
    pub fn set_role(&self, principal: &str, granted: bool) {
        let mut without = lock(&self.state.identity.without_role);
        if granted {
            without.remove(principal);
        } else {
            without.insert(principal.to_owned());
        }
    }

    /// Where the Arc challenge's key files are written (the agent's directory in tests
    /// run as root).
    pub fn set_arc_key_dir(&self, dir: &Path) {
        *lock(&self.state.identity.arc_key_dir) = dir.to_owned();
    }
}
