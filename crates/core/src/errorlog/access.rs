//! How one account's error logs are reached: its blob endpoint, the client (its trust
//! roots), and what authorises reads — built once from the checked config, for the
//! daemon's reader and for `iewatch errors --all`.

use std::time::Duration;

use super::{read_log, Access, FetchError, Limits, Summary, STORAGE_SCOPE};
use crate::{
    config::{Account, AccountKind, ErrorLogCredential},
    http_client::{self, HttpsClient},
    identity::TokenCaches,
    model::ErrorLogRef,
    tls,
};

/// What reads one account's logs.
pub struct AccountLogs {
    /// None when no TLS configuration could be built (said in `access`).
    client: Option<HttpsClient>,
    access: Access,
    blob_endpoint: String,
}

impl AccountLogs {
    /// The reader of `account`'s logs; a Storage token comes from `caches`, shared with
    /// the account's sources.
    pub fn for_account(
        account: &Account,
        (timeout, connect): (Duration, Duration),
        caches: &TokenCaches,
    ) -> AccountLogs {
        let blob_endpoint = account.error_logs.blob_endpoint.clone();
        let roots = match &account.kind {
            AccountKind::Classic(classic) => &classic.extra_roots,
            AccountKind::Arm(arm) => &arm.extra_roots,
        };
        let client = match tls::client_config(tls::root_store(roots, true), None) {
            Ok(tls) => http_client::build_client(tls, connect, true),
            Err(e) => {
                return AccountLogs {
                    client: None,
                    access: Access::Missing(format!("no TLS configuration: {e}")),
                    blob_endpoint,
                }
            }
        };
        let access = match (&account.error_logs.credential, &account.kind) {
            (ErrorLogCredential::Sas(sas), _) => {
                Access::Sas(String::from_utf8_lossy(sas.expose()).into_owned())
            }
            (ErrorLogCredential::AccountKey(key), _) => Access::SharedKey {
                key: key.expose().to_vec(),
            },
            (ErrorLogCredential::AccountToken, AccountKind::Arm(arm)) => {
                match caches.for_account(arm, STORAGE_SCOPE, timeout, connect) {
                    Ok(cache) => Access::Bearer(cache),
                    Err(e) => Access::Missing(format!("no TLS configuration for tokens: {e}")),
                }
            }
            _ => Access::Missing(format!(
                "account {} is a classic account: its logs are read with a SAS or the storage \
                 account's key; set error_log_sas_file or storage_key_file",
                account.name
            )),
        };
        AccountLogs {
            client: Some(client),
            access,
            blob_endpoint,
        }
    }

    /// The log's URL: absolute links as given (they must be on the account's blob
    /// endpoint, so no credential is ever sent elsewhere), relative ones on the endpoint
    /// of the storage account they name.
    ///
    /// # Errors
    /// Why the link is not read, in words for the report.
    pub fn resolve(&self, log: &ErrorLogRef) -> Result<String, String> {
        let link = log.link.trim();
        let blob_endpoint = &self.blob_endpoint;
        if link.starts_with("https://") || link.starts_with("http://") {
            let uri: http::Uri = link.parse().map_err(|_| format!("{link:?} is no URL"))?;
            let account = super::account_of(&uri).unwrap_or_default();
            let endpoint = blob_endpoint.replace("{account}", &account);
            if account.is_empty() || !link.starts_with(&format!("{endpoint}/")) {
                return Err(format!(
                    "not read: {link} is not on the blob endpoint {blob_endpoint}, and no \
                     credential is sent elsewhere (set blob_endpoint on the account if the \
                     service is right)"
                ));
            }
            return Ok(link.to_owned());
        }
        let Some(account) = log.account.as_deref().filter(|a| !a.is_empty()) else {
            return Err(format!(
                "not read: {link:?} is relative and names no storage account"
            ));
        };
        if !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "not read: {account:?} is not a storage account name"
            ));
        }
        Ok(format!(
            "{}/{}",
            blob_endpoint.replace("{account}", account),
            link.trim_start_matches('/')
        ))
    }

    /// Reads and summarises the log at `url` (from [`AccountLogs::resolve`]).
    ///
    /// # Errors
    /// See [`FetchError`].
    pub async fn read(
        &self,
        url: &str,
        limits: Limits,
        deadline: Duration,
    ) -> Result<Summary, FetchError> {
        match &self.client {
            Some(client) => read_log(client, url, &self.access, limits, deadline).await,
            // No client only with `Access::Missing`: its reason is the answer.
            None => Err(FetchError::NoAccess(self.access.describe())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(blob_endpoint: &str) -> AccountLogs {
        AccountLogs {
            client: None,
            access: Access::Missing("test".into()),
            blob_endpoint: blob_endpoint.into(),
        }
    }

    #[test]
    fn links_resolve_on_the_account_endpoint_and_nowhere_else() {
        let azure = logs(crate::config::DEFAULT_BLOB_ENDPOINT);
        let relative = ErrorLogRef::new("acct", "databoxcopylog/o_s_CopyLog_1.xml", Some("acct"));
        assert_eq!(
            azure.resolve(&relative).unwrap(),
            "https://acct.blob.core.windows.net/databoxcopylog/o_s_CopyLog_1.xml"
        );
        let absolute = ErrorLogRef::new(
            "D1",
            "https://acct.blob.core.windows.net/waimportexport/waies/j_D1_error.xml?sv=1&sig=x",
            None,
        );
        assert!(!absolute.link.contains("sig="), "a SAS is never kept");
        assert!(azure.resolve(&absolute).is_ok());
        for hostile in [
            "https://acct.blob.core.windows.net.attacker.example/c/b.xml",
            "https://attacker.example/acct/c/b.xml",
            "http://acct.blob.core.windows.net/c/b.xml",
        ] {
            let refused = azure.resolve(&ErrorLogRef::new("D1", hostile, None));
            assert!(refused.is_err(), "{hostile} must not be read");
        }
        let no_account = ErrorLogRef::new("D1", "databoxcopylog/x.xml", None);
        assert!(azure
            .resolve(&no_account)
            .unwrap_err()
            .contains("names no storage account"));
        let odd = ErrorLogRef::new("D1", "c/x.xml", Some("acct.evil"));
        assert!(azure
            .resolve(&odd)
            .unwrap_err()
            .contains("not a storage account name"));
        let local = logs("https://127.0.0.1:10000/{account}");
        let path_style = ErrorLogRef::new("D1", "https://127.0.0.1:10000/acct/c/x.xml", None);
        assert!(local.resolve(&path_style).is_ok());
    }
}
