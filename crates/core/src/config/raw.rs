//! The raw layer: what serde reads, every field optional and with its position, so that
//! all problems can be reported at once.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    pub(super) http: Option<Spanned<RawHttp>>,
    #[serde(default)]
    pub(super) account: Vec<Spanned<RawAccount>>,
    #[serde(default)]
    pub(super) job: Vec<Spanned<RawJob>>,
    #[serde(default)]
    pub(super) webhook: Vec<Spanned<RawWebhook>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) database: Option<Spanned<String>>,
    pub(super) database_password_file: Option<Spanned<PathBuf>>,
    pub(super) lease: Option<Spanned<String>>,
    pub(super) poll_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) poll_interval_by_state: BTreeMap<String, Spanned<String>>,
    pub(super) max_concurrent_polls: Option<Spanned<i64>>,
    pub(super) request_timeout: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) stop_after: Option<Spanned<String>>,
    pub(super) failure_threshold: Option<Spanned<i64>>,
    pub(super) max_retry_after: Option<Spanned<String>>,
    pub(super) shutdown_timeout: Option<Spanned<String>>,
    pub(super) log_format: Option<Spanned<String>>,
    pub(super) deadline_warnings: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) stall_after: BTreeMap<String, Spanned<String>>,
    pub(super) drive_stall_after: Option<Spanned<String>>,
    pub(super) remind_every: Option<Spanned<String>>,
    pub(super) remind_max: Option<Spanned<i64>>,
    pub(super) retention: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Spanned<String>,
    pub(super) header_read_timeout: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) token_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) name: Option<Spanned<String>>,
    pub(super) kind: Option<Spanned<String>>,
    pub(super) subscription_id: Option<Spanned<String>>,
    pub(super) storage_account: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) certificate: Option<Spanned<PathBuf>>,
    pub(super) certificate_key: Option<Spanned<PathBuf>>,
    pub(super) ca_certificate: Option<Spanned<PathBuf>>,
    pub(super) x_ms_version: Option<Spanned<String>>,
    pub(super) store_bitlocker_keys: Option<bool>,
    // Resource Manager keys (the README's "Resource Manager accounts"), recognised so that the message can say why.
    pub(super) resource_group: Option<Spanned<String>>,
    pub(super) tenant_id: Option<Spanned<String>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) client_secret: Option<Spanned<String>>,
    pub(super) client_secret_file: Option<Spanned<PathBuf>>,
    pub(super) client_certificate: Option<Spanned<PathBuf>>,
    pub(super) authority: Option<Spanned<String>>,
    pub(super) jobs: Option<Spanned<String>>,
    pub(super) credential: Option<Spanned<String>>,
    pub(super) managed_identity_client_id: Option<Spanned<String>>,
    pub(super) managed_identity_object_id: Option<Spanned<String>>,
    pub(super) managed_identity_resource_id: Option<Spanned<String>>,
    // Reading the error logs (any kind of account).
    pub(super) error_log_sas_file: Option<Spanned<PathBuf>>,
    pub(super) storage_key_file: Option<Spanned<PathBuf>>,
    pub(super) blob_endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) account: Option<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) poll_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) name: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) secret: Option<Spanned<String>>,
    pub(super) secret_file: Option<Spanned<PathBuf>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) events: Option<Spanned<Vec<String>>>,
    pub(super) jobs: Option<Spanned<Vec<String>>>,
    pub(super) min_severity: Option<Spanned<String>>,
    pub(super) progress_step: Option<Spanned<i64>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) give_up_after: Option<Spanned<String>>,
    pub(super) retry_initial: Option<Spanned<String>>,
    pub(super) retry_max: Option<Spanned<String>>,
    pub(super) template: Option<Spanned<String>>,
    pub(super) template_file: Option<Spanned<PathBuf>>,
    pub(super) content_type: Option<Spanned<String>>,
    pub(super) max_body_bytes: Option<Spanned<i64>>,
    pub(super) routing_key: Option<Spanned<String>>,
    pub(super) routing_key_file: Option<Spanned<PathBuf>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) to: Option<Spanned<Vec<String>>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<PathBuf>>,
    pub(super) ca_certificate: Option<Spanned<PathBuf>>,
    pub(super) digest_every: Option<Spanned<String>>,
}
