//! One credential's tokens for one scope: cached, renewed before they expire, and a
//! failure remembered with a backoff so that a hundred jobs do not each ask again.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use http::HeaderValue;
use tokio::sync::Mutex;

use super::{Failure, Provider, TokenError};
use crate::http_client::HttpsClient;

/// A token is renewed this long before it expires, so no request carries a stale one.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Token lifetimes are read within these bounds: a peer's `expires_in` can neither
/// overflow the clock nor make iewatch fetch a token per request.
pub(crate) const TOKEN_LIFETIME_FLOOR: Duration = Duration::from_secs(360);
pub(crate) const TOKEN_LIFETIME_CEILING: Duration = Duration::from_secs(86_400);
/// The lifetime taken when an endpoint does not say one.
const TOKEN_LIFETIME_UNSAID: Duration = Duration::from_secs(3600);

/// First wait after a refusal (or a missing identity); doubles up to the maximum.
const REFUSAL_BACKOFF_INITIAL: Duration = Duration::from_secs(30);
const REFUSAL_BACKOFF_MAX: Duration = Duration::from_secs(900);
/// First wait after an endpoint failed; doubles up to the maximum.
const TRANSIENT_BACKOFF_INITIAL: Duration = Duration::from_secs(5);
const TRANSIENT_BACKOFF_MAX: Duration = Duration::from_secs(120);

/// A cached bearer token.
struct Token {
    value: HeaderValue,
    renew_at: Instant,
}

/// A failure remembered until `until`.
struct Failed {
    error: TokenError,
    until: Instant,
    /// The wait that led to `until`; doubles per failure of the same kind.
    backoff: Duration,
}

enum Cached {
    Token(Token),
    Failed(Failed),
}

/// The tokens of one credential for one scope.
pub struct TokenCache {
    provider: std::sync::Arc<Provider>,
    scope: String,
    http: HttpsClient,
    timeout: Duration,
    cached: Mutex<Option<Cached>>,
    /// An odd lifetime is said once, not at every renewal.
    odd_lifetime_said: AtomicBool,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("credential", &self.provider.describe())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub(super) fn new(
        provider: std::sync::Arc<Provider>,
        scope: String,
        http: HttpsClient,
        timeout: Duration,
    ) -> TokenCache {
        TokenCache {
            provider,
            scope,
            http,
            timeout,
            cached: Mutex::new(None),
            odd_lifetime_said: AtomicBool::new(false),
        }
    }

    /// Which credential gives the tokens (for the default chain: the one it settled
    /// on), for messages and `check --online`.
    pub fn describe(&self) -> String {
        self.provider.describe()
    }

    /// A valid `Bearer` header value, fetched if none is cached or the cached one is
    /// about to expire. While a failure is remembered it is returned without asking
    /// again.
    ///
    /// # Errors
    /// See [`TokenError`].
    pub async fn get(&self) -> Result<HeaderValue, TokenError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        let mut last_backoff = None;
        match cached.as_ref() {
            Some(Cached::Token(token)) if now < token.renew_at => return Ok(token.value.clone()),
            Some(Cached::Failed(failed)) if now < failed.until => return Err(failed.error.clone()),
            Some(Cached::Failed(failed)) => {
                last_backoff = Some((failed.error.failure, failed.backoff))
            }
            _ => {}
        }
        // Boxed: once an hour, and every poll's future would otherwise carry room for
        // a whole token request.
        match Box::pin(self.fetch()).await {
            Ok(token) => {
                let value = token.value.clone();
                *cached = Some(Cached::Token(token));
                Ok(value)
            }
            Err(error) => {
                let backoff = next_backoff(error.failure, last_backoff);
                *cached = Some(Cached::Failed(Failed {
                    error: error.clone(),
                    until: now.checked_add(backoff).unwrap_or(now),
                    backoff,
                }));
                Err(error)
            }
        }
    }

    /// Forgets the cached token (the API refused it); a remembered failure stays.
    pub async fn invalidate(&self) {
        let mut cached = self.cached.lock().await;
        if matches!(*cached, Some(Cached::Token(_))) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Token, TokenError> {
        let fetched = self
            .provider
            .fetch(&self.http, &self.scope, self.timeout)
            .await?;
        let said = fetched.lifetime.map(Duration::from_secs);
        let lifetime = said
            .unwrap_or(TOKEN_LIFETIME_UNSAID)
            .clamp(TOKEN_LIFETIME_FLOOR, TOKEN_LIFETIME_CEILING);
        if said.is_some_and(|s| s != lifetime)
            && !self.odd_lifetime_said.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                credential = %self.provider.describe(),
                "a token said it is valid for {} s; taken as {} s (renewed {} s before)",
                fetched.lifetime.unwrap_or_default(),
                lifetime.as_secs(),
                TOKEN_REFRESH_MARGIN.as_secs()
            );
        }
        let value =
            HeaderValue::from_str(&format!("Bearer {}", fetched.access_token)).map_err(|_| {
                TokenError::new(
                    &self.provider.describe(),
                    Failure::Transient,
                    "the token is not a valid header value",
                )
            })?;
        Ok(Token {
            value,
            renew_at: renew_at(Instant::now(), lifetime),
        })
    }
}

/// The wait after a failure of kind `failure`, given the kind and wait of the previous
/// one: doubled when the kind repeats, else the kind's first wait.
fn next_backoff(failure: Failure, last: Option<(Failure, Duration)>) -> Duration {
    let (initial, max) = match failure {
        Failure::Refused | Failure::Unavailable => (REFUSAL_BACKOFF_INITIAL, REFUSAL_BACKOFF_MAX),
        Failure::Transient => (TRANSIENT_BACKOFF_INITIAL, TRANSIENT_BACKOFF_MAX),
    };
    match last {
        Some((kind, backoff))
            if (kind == Failure::Transient) == (failure == Failure::Transient) =>
        {
            backoff.saturating_mul(2).clamp(initial, max)
        }
        _ => initial,
    }
}

/// When a token of `lifetime` fetched at `now` is renewed: [`TOKEN_REFRESH_MARGIN`]
/// before it expires.
pub(crate) fn renew_at(now: Instant, lifetime: Duration) -> Instant {
    let lifetime = lifetime.clamp(TOKEN_LIFETIME_FLOOR, TOKEN_LIFETIME_CEILING);
    now.checked_add(lifetime.saturating_sub(TOKEN_REFRESH_MARGIN))
        .unwrap_or(now)
}

#[cfg(test)]
pub(super) fn backoff_after(failure: Failure, last: Option<(Failure, Duration)>) -> Duration {
    next_backoff(failure, last)
}
