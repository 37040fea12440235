//! Entra ID tokens: from an app registration's secret or certificate, a managed identity
//! (IMDS, App Service / Container Apps, Azure Arc), a federated workload identity (AKS),
//! the Azure CLI, or the first of those that answers. One [`TokenCache`] per (credential,
//! scope), shared by every account that names the same credential; tokens are renewed
//! before they expire, and a refused, missing or failing identity is remembered with a
//! backoff so that polls do not ask again at once. Every request goes on the hyper client
//! iewatch already has; no token is ever logged.

mod cache;
mod cli;
mod entra;
mod managed;
mod provider;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, sync::Arc, time::Duration};

pub use cache::TokenCache;
pub use managed::{imds_retry_wait, IMDS_RETRIES};
pub use provider::Provider;

use crate::{
    config::ArmAccount,
    http_client::{self, HttpsClient},
    tls,
};

/// How a token request failed, which decides how soon it is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The identity exists and said no (a wrong secret, no identity assigned, not signed
    /// in): asked again after 30 s, then less and less often, up to 15 min.
    Refused,
    /// The identity is not there (a variable unset, `az` not installed, no IMDS): the
    /// default chain moves on; alone, it is retried like a refusal.
    Unavailable,
    /// The endpoint failed or did not answer (timeouts, 5xx): retried soon.
    Transient,
}

/// Why no token came: which credential, what kind of failure, and what to do about it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{credential}: {message}")]
pub struct TokenError {
    /// The credential, as [`Provider::describe`] says it.
    pub credential: String,
    /// The kind of failure.
    pub failure: Failure,
    /// What happened, and what to check; never a token or a secret.
    pub message: String,
}

impl TokenError {
    pub(crate) fn new(credential: &str, failure: Failure, message: impl Into<String>) -> Self {
        TokenError {
            credential: credential.to_owned(),
            failure,
            message: message.into(),
        }
    }
}

/// A token as an endpoint gave it, before the cache bounds its lifetime.
pub(crate) struct Fetched {
    /// The access token.
    pub(crate) access_token: String,
    /// Seconds it is valid for, as the endpoint said (None: it did not say).
    pub(crate) lifetime: Option<u64>,
}

/// The process environment, or a fixed one (tests): where the managed-identity and
/// workload-identity variables the Azure SDKs honour are read.
#[derive(Clone)]
pub struct Env(Arc<Lookup>);

/// How [`Env`] reads a variable.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    /// The daemon's own environment, read at each use (App Service rotates
    /// `IDENTITY_HEADER`).
    pub fn process() -> Env {
        Env(Arc::new(|name| std::env::var(name).ok()))
    }

    /// A fixed environment of `pairs`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env(Arc::new(move |name| map.get(name).cloned()))
    }

    /// The variable's value, trimmed; an empty one counts as unset.
    pub(crate) fn var(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

/// The token caches of one configuration: one per (credential, scope), so that two
/// accounts with the same identity share its tokens and its backoff.
#[derive(Debug)]
pub struct TokenCaches {
    env: Env,
    caches: std::sync::Mutex<HashMap<String, Arc<TokenCache>>>,
    /// One provider per credential, whatever the scope: the default chain settles once
    /// (and says so once) for Resource Manager's tokens and Storage's alike.
    providers: std::sync::Mutex<HashMap<String, Arc<Provider>>>,
}

impl TokenCaches {
    /// Empty caches reading identity variables from `env`.
    pub fn new(env: Env) -> TokenCaches {
        TokenCaches {
            env,
            caches: std::sync::Mutex::new(HashMap::new()),
            providers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The cache of `account`'s credential for `scope` (`https://.../.default`), made on
    /// first use. Token requests time out after `timeout`; the first account to ask
    /// lends the cache its trust roots.
    ///
    /// # Errors
    /// The TLS configuration cannot be built.
    pub fn for_account(
        &self,
        account: &ArmAccount,
        scope: &str,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Arc<TokenCache>, tls::TlsError> {
        let provider = Provider::for_account(account, &self.env);
        let provider = self
            .providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(provider.key().to_owned())
            .or_insert_with(|| Arc::new(provider))
            .clone();
        let key = format!("{}\u{0}{scope}", provider.key());
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cache) = caches.get(&key) {
            return Ok(cache.clone());
        }
        let config = tls::client_config(tls::root_store(&account.extra_roots, true), None)?;
        // Plain HTTP is allowed: IMDS, App Service and Arc answer on http:// at a local
        // address; every Entra ID authority is checked to be https:// before use.
        let http: HttpsClient = http_client::build_client(config, connect_timeout, false);
        let cache = Arc::new(TokenCache::new(provider, scope.to_owned(), http, timeout));
        caches.insert(key, cache.clone());
        Ok(cache)
    }
}

/// The resource a v2 scope names (`https://management.azure.com/.default` →
/// `https://management.azure.com`), as IMDS, App Service and the Azure CLI take it.
pub(crate) fn resource_of(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// A small file an identity is proven by (a federated token, Arc's key), read now and
/// trimmed: `None` when it is empty or longer than `limit` bytes, never more read.
pub(crate) fn read_small_file(
    path: &std::path::Path,
    limit: u64,
) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_string(&mut text)?;
    let trimmed = text.trim();
    Ok((text.len() as u64 <= limit && !trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// The first line of an endpoint's words, bounded and printable: for messages.
pub(crate) fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut out: String = line.chars().filter(|c| !c.is_control()).take(300).collect();
    if line.chars().count() > 300 {
        out.push('…');
    }
    out
}
