//! Entra ID's client-credentials grant: proven by a client secret, by an assertion signed
//! with a registered certificate, or by a federated token read from a file (workload
//! identity, which Kubernetes rotates, so it is read afresh for every request).

use std::{path::PathBuf, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::{first_line, read_small_file, Failure, Fetched, TokenError};
use crate::{
    config::Secret,
    http_client::{self, HttpsClient, USER_AGENT},
    source::encode_path_segment,
    tls::Identity,
};

/// Largest token response read.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;
/// Largest federated token file read (a projected service-account token is ~1 KB).
const FEDERATED_TOKEN_LIMIT: u64 = 64 * 1024;
/// How long a signed client assertion is valid.
const ASSERTION_LIFETIME_SECS: u64 = 600;
const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

/// What proves the client.
#[derive(Clone, Debug)]
pub(crate) enum Proof {
    /// A client secret.
    Secret(Secret),
    /// A registered certificate's key signs a fresh assertion per request.
    Certificate(Identity),
    /// A federated token in this file is the assertion.
    FederatedFile(PathBuf),
}

/// One app registration (or user-assigned identity, for workload identity) at one
/// authority.
#[derive(Debug)]
pub(crate) struct ClientCredentials {
    pub(crate) token_url: String,
    pub(crate) client_id: String,
    pub(crate) proof: Proof,
    /// For messages: "app registration X (client secret)" and the like.
    pub(crate) described: String,
}

impl ClientCredentials {
    /// The grant at `authority` for `tenant`.
    pub(crate) fn new(
        authority: &str,
        tenant: &str,
        client_id: &str,
        proof: Proof,
        described: String,
    ) -> ClientCredentials {
        ClientCredentials {
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                authority.trim_end_matches('/'),
                encode_path_segment(tenant)
            ),
            client_id: client_id.to_owned(),
            proof,
            described,
        }
    }

    fn error(&self, failure: Failure, message: impl Into<String>) -> TokenError {
        TokenError::new(&self.described, failure, message)
    }

    /// The form: grant, client, scope and proof.
    fn form(&self, scope: &str) -> Result<Secret, TokenError> {
        let mut form = format!(
            "grant_type=client_credentials&client_id={}&scope={}",
            encode_path_segment(&self.client_id),
            encode_path_segment(scope)
        );
        match &self.proof {
            Proof::Secret(secret) => {
                form.push_str("&client_secret=");
                form.push_str(&encode_path_segment(&String::from_utf8_lossy(
                    secret.expose(),
                )));
            }
            Proof::Certificate(identity) => {
                form.push_str("&client_assertion_type=");
                form.push_str(JWT_BEARER);
                form.push_str("&client_assertion=");
                form.push_str(&self.client_assertion(identity)?);
            }
            Proof::FederatedFile(path) => {
                form.push_str("&client_assertion_type=");
                form.push_str(JWT_BEARER);
                form.push_str("&client_assertion=");
                form.push_str(&encode_path_segment(&self.federated_token(path)?));
            }
        }
        Ok(Secret::new(form.into_bytes()))
    }

    /// The federated token, read now: the kubelet rewrites the file as it rotates.
    fn federated_token(&self, path: &std::path::Path) -> Result<String, TokenError> {
        let unreadable = |e: std::io::Error| {
            self.error(
                Failure::Transient,
                format!(
                    "cannot read the federated token file {} (AZURE_FEDERATED_TOKEN_FILE): {e}; \
                     is the pod's service account annotated for workload identity?",
                    path.display()
                ),
            )
        };
        let Some(token) = read_small_file(path, FEDERATED_TOKEN_LIMIT).map_err(unreadable)? else {
            return Err(self.error(
                Failure::Transient,
                format!(
                    "the federated token file {} is empty or larger than 64 KiB",
                    path.display()
                ),
            ));
        };
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.error(
                Failure::Transient,
                format!(
                    "the federated token file {} does not hold a token",
                    path.display()
                ),
            ));
        }
        Ok(token)
    }

    /// A JWT signed with the certificate's key (RS256), naming the certificate by its
    /// SHA-1 thumbprint (`x5t`), as Entra ID's certificate credentials expect.
    fn client_assertion(&self, identity: &Identity) -> Result<String, TokenError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = crate::wall_clock::now().unix_secs();
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": b64(&identity.sha1_thumbprint()) });
        let claims = serde_json::json!({
            "aud": self.token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": format!("{:032x}", rand::random::<u128>()),
            "nbf": now,
            "iat": now,
            "exp": now.saturating_add_unsigned(ASSERTION_LIFETIME_SECS),
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = identity.sign_rs256(signing_input.as_bytes()).map_err(|e| {
            self.error(
                Failure::Refused,
                format!("cannot sign the client assertion: {e}"),
            )
        })?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }

    /// One token request.
    pub(crate) async fn fetch(
        &self,
        http: &HttpsClient,
        scope: &str,
        timeout: Duration,
    ) -> Result<Fetched, TokenError> {
        if !self.token_url.starts_with("https://") {
            return Err(self.error(
                Failure::Refused,
                "the Entra ID authority must be an https:// URL (AZURE_AUTHORITY_HOST or the \
                 account's authority)",
            ));
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::from(self.form(scope)?.expose().to_vec())))
            .map_err(|e| {
                self.error(
                    Failure::Refused,
                    format!("cannot build the token request: {e}"),
                )
            })?;
        let response = http_client::send(http, request, timeout, TOKEN_BODY_LIMIT)
            .await
            .map_err(|e| self.error(Failure::Transient, format!("token endpoint: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            // Entra answers a refused credential with 400/401 and an OAuth2 error body.
            let refused = matches!(status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED);
            return Err(self.error(
                if refused {
                    Failure::Refused
                } else {
                    Failure::Transient
                },
                format!(
                    "Entra ID refused the token request: HTTP {}{}",
                    status.as_u16(),
                    oauth_error(response.body())
                ),
            ));
        }
        parse_token(response.body()).map_err(|e| self.error(Failure::Transient, e))
    }
}

/// ` code: first line of the description` of an OAuth2 error body, or nothing.
pub(crate) fn oauth_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    serde_json::from_slice::<OAuthError>(body).map_or(String::new(), |e| {
        format!(
            " {}: {}",
            first_line(&e.error),
            first_line(&e.error_description)
        )
    })
}

/// The `error` code of an OAuth2 error body, if it is one.
pub(crate) fn oauth_code(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
    }
    serde_json::from_slice::<OAuthError>(body)
        .ok()
        .map(|e| first_line(&e.error))
}

/// A token response of any of Azure's shapes: `expires_in` as a number or a string
/// (IMDS, Arc), or only `expires_on` in Unix seconds (App Service).
pub(crate) fn parse_token(body: &[u8]) -> Result<Fetched, String> {
    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: String,
        #[serde(default)]
        expires_in: Option<serde_json::Value>,
        #[serde(default)]
        expires_on: Option<serde_json::Value>,
    }
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    let token: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("token response: {e}"))?;
    if token.access_token.is_empty() {
        return Err("token response without an access_token".into());
    }
    let lifetime = token.expires_in.as_ref().and_then(number).or_else(|| {
        let on = token.expires_on.as_ref().and_then(number)?;
        let now = crate::wall_clock::now().unix_secs().unsigned_abs();
        Some(on.saturating_sub(now))
    });
    Ok(Fetched {
        access_token: token.access_token,
        lifetime,
    })
}
