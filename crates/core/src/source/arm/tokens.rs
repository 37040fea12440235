//! Entra ID tokens for one app registration: the client-credentials grant (a secret or a
//! signed certificate assertion), cached, renewed before expiry, and a refused credential
//! remembered with a backoff so that polls do not ask again at once.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::source::{encode_path_segment, header_string, ServiceError, SourceError};
use crate::{
    config::{ArmCredential, Secret},
    http_client::{self, HttpsClient, USER_AGENT},
    tls::Identity,
};

/// A token is renewed this long before it expires, so no request carries a stale one.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Token lifetimes from the token endpoint are read within these bounds: a peer's
/// `expires_in` can neither overflow the clock nor make iewatch fetch a token per request.
const TOKEN_LIFETIME_FLOOR: Duration = Duration::from_secs(360);
pub(super) const TOKEN_LIFETIME_CEILING: Duration = Duration::from_secs(86_400);
/// Largest token response read.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;

/// A cached bearer token.
struct Token {
    value: HeaderValue,
    renew_at: Instant,
}

/// A credential Entra ID refused, remembered so that polls do not ask again at once.
struct Refusal {
    status: u16,
    error: Option<Box<ServiceError>>,
    /// No new token request before this.
    until: Instant,
    /// The wait that led to `until`; doubles per refusal up to [`REFUSAL_BACKOFF_MAX`].
    backoff: Duration,
}

impl Refusal {
    fn error(&self) -> SourceError {
        SourceError::Status {
            status: self.status,
            error: self.error.clone(),
            retry_after: None,
            request_id: None,
        }
    }
}

/// What the token cache holds.
enum Cached {
    Token(Token),
    Refused(Refusal),
}

/// First wait after Entra ID refused the credential; doubles per refusal.
const REFUSAL_BACKOFF_INITIAL: Duration = Duration::from_secs(30);
/// Longest wait between token requests while the credential is refused.
const REFUSAL_BACKOFF_MAX: Duration = Duration::from_secs(900);

/// Fetches and caches Entra ID tokens for one app registration.
pub(super) struct Tokens {
    token_url: String,
    client_id: String,
    scope: String,
    credential: ArmCredential,
    cached: Mutex<Option<Cached>>,
}

/// How long a signed client assertion is valid.
const ASSERTION_LIFETIME_SECS: u64 = 600;

impl Tokens {
    /// Tokens for `client_id` with `credential` from `token_url`, for `scope`.
    pub(super) fn new(
        token_url: String,
        client_id: String,
        scope: String,
        credential: ArmCredential,
    ) -> Tokens {
        Tokens {
            token_url,
            client_id,
            scope,
            credential,
            cached: Mutex::new(None),
        }
    }

    /// The client-credentials form: with the secret, or with a freshly signed assertion.
    fn form(&self) -> Result<Secret, SourceError> {
        let mut form = format!(
            "grant_type=client_credentials&client_id={}&scope={}",
            encode_path_segment(&self.client_id),
            encode_path_segment(&self.scope)
        );
        match &self.credential {
            ArmCredential::Secret(secret) => {
                form.push_str("&client_secret=");
                form.push_str(&encode_path_segment(&String::from_utf8_lossy(
                    secret.expose(),
                )));
            }
            ArmCredential::Certificate(identity) => {
                form.push_str("&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer");
                form.push_str("&client_assertion=");
                form.push_str(&self.client_assertion(identity)?);
            }
        }
        Ok(Secret::new(form.into_bytes()))
    }

    /// A JWT signed with the certificate's key (RS256), naming the certificate by its
    /// SHA-1 thumbprint (`x5t`), as Entra ID's certificate credentials expect.
    fn client_assertion(&self, identity: &Identity) -> Result<String, SourceError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = crate::wall_clock::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": b64(&identity.sha1_thumbprint()) });
        let claims = serde_json::json!({
            "aud": self.token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": format!("{:032x}", rand::random::<u128>()),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = identity
            .sign_rs256(signing_input.as_bytes())
            .map_err(|e| SourceError::Decode(format!("cannot sign the client assertion: {e}")))?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }

    /// A valid token, fetched if none is cached or the cached one is about to expire.
    /// While the credential stands refused, the refusal is returned without asking Entra
    /// ID again: its token requests back off from 30 s to 15 min.
    pub(super) async fn get(
        &self,
        http: &HttpsClient,
        timeout: Duration,
    ) -> Result<HeaderValue, SourceError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        let mut backoff = REFUSAL_BACKOFF_INITIAL;
        match cached.as_ref() {
            Some(Cached::Token(token)) if now < token.renew_at => return Ok(token.value.clone()),
            Some(Cached::Refused(refusal)) if now < refusal.until => return Err(refusal.error()),
            Some(Cached::Refused(refusal)) => {
                backoff = refusal.backoff.saturating_mul(2).min(REFUSAL_BACKOFF_MAX);
            }
            _ => {}
        }
        match self.fetch(http, timeout).await {
            Ok(token) => {
                let value = token.value.clone();
                *cached = Some(Cached::Token(token));
                Ok(value)
            }
            Err(SourceError::Status {
                status: 401, error, ..
            }) => {
                let refusal = Refusal {
                    status: 401,
                    error,
                    until: now.checked_add(backoff).unwrap_or(now),
                    backoff,
                };
                let refused = refusal.error();
                *cached = Some(Cached::Refused(refusal));
                Err(refused)
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets the cached token (the API refused it); a refused credential stays
    /// remembered.
    pub(super) async fn invalidate(&self) {
        let mut cached = self.cached.lock().await;
        if matches!(*cached, Some(Cached::Token(_))) {
            *cached = None;
        }
    }

    async fn fetch(&self, http: &HttpsClient, timeout: Duration) -> Result<Token, SourceError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct TokenError {
            error: String,
            #[serde(default)]
            error_description: String,
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::from(self.form()?.expose().to_vec())))
            .map_err(|e| SourceError::Decode(format!("cannot build token request: {e}")))?;
        let response = http_client::send(http, request, timeout, TOKEN_BODY_LIMIT).await?;
        let status = response.status();
        if !status.is_success() {
            // Entra answers a refused credential with 400/401 and an OAuth2 error body;
            // it is reported as 401 so that callers treat it as refused credentials.
            let error = serde_json::from_slice::<TokenError>(response.body())
                .ok()
                .map(|e| {
                    let first_line = e
                        .error_description
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    ServiceError::new(&e.error, &first_line, None, None)
                });
            let refused = matches!(status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED);
            return Err(SourceError::Status {
                status: if refused { 401 } else { status.as_u16() },
                error,
                retry_after: http_client::retry_after(response.headers()),
                request_id: header_string(response.headers(), "x-ms-request-id"),
            });
        }
        let token: TokenResponse = serde_json::from_slice(response.body())
            .map_err(|e| SourceError::Decode(format!("token response: {e}")))?;
        let lifetime = match token.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .map_or(Duration::from_secs(3600), Duration::from_secs)
        .clamp(TOKEN_LIFETIME_FLOOR, TOKEN_LIFETIME_CEILING);
        let value = HeaderValue::from_str(&format!("Bearer {}", token.access_token))
            .map_err(|_| SourceError::Decode("token is not a valid header value".into()))?;
        Ok(Token {
            value,
            renew_at: renew_at(Instant::now(), lifetime),
        })
    }
}

/// When a token of `lifetime` fetched at `now` is renewed: [`TOKEN_REFRESH_MARGIN`]
/// before it expires.
pub(super) fn renew_at(now: Instant, lifetime: Duration) -> Instant {
    let lifetime = lifetime.clamp(TOKEN_LIFETIME_FLOOR, TOKEN_LIFETIME_CEILING);
    now.checked_add(lifetime.saturating_sub(TOKEN_REFRESH_MARGIN))
        .unwrap_or(now)
}
