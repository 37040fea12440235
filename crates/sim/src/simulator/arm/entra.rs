//! The simulator's Entra ID: a tenant's OpenID discovery document and its token
//! endpoint (client credentials with a secret or a certificate assertion checked against
//! the registered certificates), as MSAL-based clients and iewatch call them.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use base64::Engine as _;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{json, Value};

use super::json_response;
use crate::simulator::{
    identity::WORKLOAD_CLIENT_ID,
    service::{percent_decode, ResponseBody},
    SimState,
};

/// Largest token request form read.
const TOKEN_FORM_LIMIT: usize = 16 * 1024;

/// The OpenID Connect discovery document of a tenant, which MSAL-based clients
/// (azure-identity) read before they ask for a token.
pub(super) fn openid_configuration(
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
// Long: the grant's checks in the order Entra ID makes them, each with its error code.
pub(super) async fn token(
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
    // Workload identity: the cluster's current service-account token, for the identity
    // that trusts it.
    let federated = client_id == Some(WORKLOAD_CLIENT_ID)
        && field("client_assertion").is_some_and(|a| {
            *state
                .identity
                .federated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                == a
        });
    let proven = match field("client_assertion") {
        _ if federated => true,
        Some(assertion) => assertion_valid(state, assertion, tenant),
        None => secret == Some(credentials.client_secret.as_str()),
    };
    if client_id == Some(WORKLOAD_CLIENT_ID) && !federated {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_client", "error_description": "AADSTS700024: Client assertion is not within its valid time range, or is not the current token of the service account."}),
        );
    }
    if !((client_known || federated) && proven) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."}),
        );
    }
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let resource = field("scope")
        .and_then(|s| s.split(' ').find(|s| s.ends_with("/.default")))
        .unwrap_or_default();
    let token = super::super::identity::mint_token(
        tenant,
        resource,
        credentials.token_lifetime,
        &format!("sim-token-{n:08}"),
    );
    let lifetime = Duration::from_secs(credentials.token_lifetime);
    state
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            token.clone(),
            (
                Instant::now() + lifetime,
                client_id.unwrap_or_default().to_owned(),
            ),
        );
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
