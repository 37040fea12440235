//! The checked config: what each section means once parsed, with durations, URLs,
//! loaded certificates and wrapped secrets.

use std::{collections::BTreeMap, fmt, net::SocketAddr, time::Duration};

use super::Database;
use crate::{
    model::{JobName, Severity},
    tls::Identity,
};

/// Bytes that must never be printed: webhook keys, client secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret, for the one place that uses it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the daemon logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (journald-friendly under systemd).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[daemon]`.
#[derive(Clone, Debug)]
pub struct DaemonSettings {
    /// The SQLite file, or the PostgreSQL database.
    pub database: Database,
    /// On PostgreSQL: how long the leader's lease lasts without a renewal, so how long a
    /// standby waits before taking over from a leader that died or hung.
    pub lease: Duration,
    /// How often a job is polled unless it or its state says otherwise.
    pub poll_interval: Duration,
    /// Explicit intervals per job state, overriding the defaults of [`PollPolicy`].
    pub poll_interval_by_state: std::sync::Arc<BTreeMap<String, Duration>>,
    /// At most this many Get Job requests in flight.
    pub max_concurrent_polls: usize,
    /// Deadline for one whole request.
    pub request_timeout: Duration,
    /// Deadline for opening a connection.
    pub connect_timeout: Duration,
    /// A job Completed or Closed this long is no longer polled.
    pub stop_after: Duration,
    /// Failures in a row before `job.poll_failing`.
    pub failure_threshold: u32,
    /// The longest `Retry-After` honoured; the job's normal schedule resumes after it.
    pub max_retry_after: Duration,
    /// How long in-flight work may take to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// Deadlines, stalls and reminders.
    pub clocks: ClockSettings,
    /// Events and deliveries of jobs that ended longer ago than this are pruned.
    pub retention: Option<Duration>,
}

/// `[http]`.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Where /healthz and /metrics listen.
    pub listen: SocketAddr,
    /// A connection must have sent its request headers within this long.
    pub header_read_timeout: Duration,
    /// No connection stays open longer (one request each; no keep-alive).
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed as they come.
    pub max_connections: usize,
    /// The bearer token every request but /healthz must carry, if set.
    pub token: Option<String>,
}

/// `[[account]]`.
#[derive(Clone, Debug)]
pub struct Account {
    /// The name jobs refer to.
    pub name: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Whether BitLocker keys may be written to the database.
    pub store_bitlocker_keys: bool,
    /// The API and its credentials.
    pub kind: AccountKind,
    /// How the error logs of its jobs are read.
    pub error_logs: ErrorLogSettings,
}

/// How the error logs of an account's jobs are read.
#[derive(Clone, Debug)]
pub struct ErrorLogSettings {
    /// What authorises the reads.
    pub credential: ErrorLogCredential,
    /// A Data Box destination account's blob endpoint, `{account}` standing for its name.
    pub blob_endpoint: String,
}

/// What authorises reading an error log.
#[derive(Clone, Debug)]
pub enum ErrorLogCredential {
    /// The account's own Entra ID credential, for Storage (Resource Manager accounts).
    AccountToken,
    /// A SAS with read permission (`error_log_sas_file`), without its leading `?`.
    Sas(Secret),
    /// The storage account's key (`storage_key_file`), decoded.
    AccountKey(Secret),
    /// Nothing can read them (a classic account with neither file): each log is
    /// reported as unreadable, saying what to set.
    Nothing,
}

/// Which API an account is watched through.
#[derive(Clone, Debug)]
pub enum AccountKind {
    /// The classic Service Management API of the spec.
    Classic(ClassicAccount),
    /// Azure Resource Manager with Entra ID client credentials.
    Arm(ArmAccount),
}

/// How a Resource Manager account gets its Entra ID tokens: an app registration's secret
/// or certificate, or an identity Azure gives without any secret.
#[derive(Clone, Debug)]
pub enum ArmCredential {
    /// An app registration's client secret.
    Secret {
        /// The app registration.
        app: AppRegistration,
        /// The secret.
        secret: Secret,
    },
    /// A certificate (and its RSA key) registered with the app: signed client assertions.
    Certificate {
        /// The app registration.
        app: AppRegistration,
        /// The certificate and key.
        identity: Identity,
    },
    /// The managed identity of the VM, app or Arc server iewatch runs on.
    ManagedIdentity(ManagedIdentityId),
    /// A federated workload identity (AKS): `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`; the config may name the
    /// tenant and client instead.
    WorkloadIdentity {
        /// Overrides `AZURE_TENANT_ID`.
        tenant_id: Option<String>,
        /// Overrides `AZURE_CLIENT_ID`.
        client_id: Option<String>,
    },
    /// The signed-in Azure CLI (`az account get-access-token`): for trying iewatch on a
    /// laptop.
    AzureCli {
        /// `--tenant`, if given.
        tenant_id: Option<String>,
    },
    /// The first of environment, workload identity, managed identity and Azure CLI that
    /// answers.
    Default {
        /// The managed identity to ask for when the chain reaches it.
        managed_identity: ManagedIdentityId,
        /// The tenant for the Azure CLI and workload identity, if given.
        tenant_id: Option<String>,
    },
}

/// An Entra ID app registration: its tenant and client (application) id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppRegistration {
    /// Entra ID tenant.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
}

/// Which managed identity to ask for: the system-assigned one, or a user-assigned one
/// named one of three ways.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum ManagedIdentityId {
    /// The machine's or app's own identity.
    #[default]
    SystemAssigned,
    /// A user-assigned identity by its client id.
    ClientId(String),
    /// A user-assigned identity by its object (principal) id.
    ObjectId(String),
    /// A user-assigned identity by its Resource Manager id.
    ResourceId(String),
}

/// A Resource Manager account: an identity allowed to read the resource group.
#[derive(Clone, Debug)]
pub struct ArmAccount {
    /// The resource group holding the jobs.
    pub resource_group: String,
    /// Where its tokens come from.
    pub credential: ArmCredential,
    /// Resource Manager base URL, `https://...`, no trailing slash.
    pub endpoint: String,
    /// Entra ID authority base URL.
    pub authority: String,
    /// Extra trust roots (a sovereign cloud's, or the simulator's).
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// `jobs = "all"`: watch every job of the resource group, new ones included.
    pub discover_all: bool,
    /// Which resource provider's jobs the account watches.
    pub provider: ArmProvider,
}

/// The Resource Manager providers whose jobs iewatch reads; `kind = "arm"` and
/// `kind = "databox"` share credentials, tokens and paging and differ only here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmProvider {
    /// `Microsoft.ImportExport/jobs` (jobs made with the CLI or PowerShell).
    ImportExport,
    /// `Microsoft.DataBox/jobs` (today's portal, and Data Box orders).
    DataBox,
}

/// A classic account: endpoint, storage account, management certificate.
#[derive(Clone, Debug)]
pub struct ClassicAccount {
    /// Storage account name.
    pub storage_account: String,
    /// Base URL, `https://...`, no trailing slash.
    pub endpoint: String,
    /// The management certificate and its key.
    pub identity: Identity,
    /// Extra trust roots for the endpoint's server certificate.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// `x-ms-version` to send: one of the versions iewatch speaks.
    pub x_ms_version: &'static str,
}

/// `[[job]]`.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// The account's name.
    pub account: String,
    /// The job's name.
    pub name: JobName,
    /// The job's intervals, resolved once from its own `poll_interval` and `[daemon]`.
    pub policy: PollPolicy,
}

/// Payload format of a webhook: the channels. Their list (`WebhookFormat::iter()`) and
/// config names (`as_str`) come from this one definition; the channel conformance
/// suite (`tests/conformance.rs`) iterates it, so a new channel without its cases fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum WebhookFormat {
    /// Standard Webhooks JSON, signed.
    Json,
    /// `{"text": ...}` for Slack-compatible endpoints.
    Slack,
    /// A Microsoft Teams Workflows message carrying an Adaptive Card.
    Teams,
    /// PagerDuty Events API v2: trigger and resolve.
    PagerDuty,
    /// A body rendered from the webhook's own template.
    Template,
    /// E-mail over SMTP with TLS.
    Email,
}

impl WebhookFormat {
    /// Its name in the config (`format = "slack"`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A webhook's channel with the settings only it has, as the checker built it: a
/// PagerDuty channel always has its routing key, a template channel its template, an
/// e-mail channel its server; a secret exists only where it signs (Standard Webhooks).
#[derive(Clone, Debug)]
pub enum Channel {
    /// Standard Webhooks JSON, signed with the key after `whsec_` when there is one.
    Json {
        /// The signing key; unsigned when absent.
        secret: Option<Secret>,
    },
    /// `{"text": ...}` for Slack-compatible endpoints.
    Slack,
    /// A Microsoft Teams Workflows message carrying an Adaptive Card.
    Teams,
    /// PagerDuty Events API v2: triggers and resolves.
    PagerDuty {
        /// The integration's routing key.
        routing_key: Secret,
    },
    /// A body rendered from the webhook's own template.
    Template(WebhookTemplate),
    /// E-mail over SMTP with TLS.
    Email(EmailSettings),
}

/// `format = "email"`: the SMTP server, the addresses, and how often to send a digest.
#[derive(Clone, Debug)]
pub struct EmailSettings {
    /// SMTP server host name (also the name its certificate must carry).
    pub host: String,
    /// Its port (`smtp://`: 587, `smtps://`: 465 unless given).
    pub port: u16,
    /// `smtps://`: TLS from the first byte; else STARTTLS, required.
    pub implicit_tls: bool,
    /// `From:`.
    pub from: String,
    /// `To:`, one or more.
    pub to: Vec<String>,
    /// SMTP AUTH user and password, if the server wants them.
    pub credentials: Option<(String, Secret)>,
    /// Extra trust roots (a private relay's CA).
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Send a job's pending alerts together once the oldest is this old (None: one
    /// message per event).
    pub digest_every: Option<Duration>,
    /// Deadline of one SMTP conversation.
    pub timeout: Duration,
}

/// A webhook's body template (`format = "template"`), compiled when the config is read.
#[derive(Clone)]
pub struct WebhookTemplate {
    /// The compiled template, named `body`.
    pub environment: std::sync::Arc<minijinja::Environment<'static>>,
    /// The Content-Type the body is sent with.
    pub content_type: String,
    /// Most bytes a body may have (`max_body_bytes`).
    pub max_body: usize,
    /// The template's file (None: inline), for errors that name file and line.
    pub origin: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for WebhookTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTemplate")
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// A webhook's URL. Its path and query can be its credential (Slack's and Teams' are),
/// so Debug and Display show scheme, host and port only.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(http::Uri);

impl WebhookUrl {
    /// Wraps a checked URL.
    pub fn new(uri: http::Uri) -> Self {
        Self(uri)
    }

    /// The whole URL, for the one place that sends to it.
    pub fn uri(&self) -> &http::Uri {
        &self.0
    }

    /// `scheme://host:port`, with `/…` when a path or query is left out.
    pub fn redact(uri: &http::Uri) -> String {
        let mut shown = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?")
        );
        if let Some(port) = uri.port_u16() {
            shown.push_str(&format!(":{port}"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            shown.push_str("/…");
        }
        shown
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::redact(&self.0))
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::redact(&self.0))
    }
}

/// `[[webhook]]`.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Unique name, kept in `deliveries`.
    pub name: String,
    /// Where to POST.
    pub url: WebhookUrl,
    /// What it sends, with what only that channel needs.
    pub channel: Channel,
    /// Event types or prefixes (`drive.*`); `*` matches everything.
    pub events: Vec<String>,
    /// Job names; `*` matches every job.
    pub jobs: Vec<String>,
    /// Events below this severity are not sent.
    pub min_severity: Severity,
    /// Progress alerts only when a multiple of this is crossed (and at 100).
    pub progress_step: Option<u32>,
    /// Deadline for one delivery attempt.
    pub timeout: Duration,
    /// After this long, a delivery is marked failed.
    pub give_up_after: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl DaemonSettings {
    /// The interval policy of a job with no interval of its own.
    pub fn default_poll_policy(&self) -> PollPolicy {
        PollPolicy {
            base: self.poll_interval,
            by_state: self.poll_interval_by_state.clone(),
        }
    }
}

/// How often a job is polled: its interval and the explicit per-state ones
/// (`[daemon.poll_interval_by_state]`); the rule that reads them is
/// [`crate::decide::poll_interval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollPolicy {
    /// The job's interval.
    pub base: Duration,
    /// Explicit per-state intervals, shared by every job.
    pub by_state: std::sync::Arc<BTreeMap<String, Duration>>,
}

/// A day, the unit of the clocks' defaults.
const DAY: Duration = Duration::from_secs(86_400);

/// The settings of the time-driven rules (`[daemon]` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockSettings {
    /// Warn this long before a service clock runs out (`deadline_warnings`).
    pub deadline_warnings: Vec<Duration>,
    /// A job in a state longer than this is stalled (`stall_after`, per state).
    pub stall_after: BTreeMap<String, Duration>,
    /// A copying drive whose percent does not move this long is stalled.
    pub drive_stall_after: Option<Duration>,
    /// Remind this often while an error condition holds (None: never).
    pub remind_every: Option<Duration>,
    /// At most this many reminders per condition.
    pub remind_max: u32,
}

impl Default for ClockSettings {
    fn default() -> Self {
        ClockSettings {
            deadline_warnings: vec![4 * DAY, DAY],
            stall_after: default_stall_after(),
            drive_stall_after: Some(DAY),
            remind_every: Some(DAY),
            remind_max: 3,
        }
    }
}

/// How long each state usually lasts at most, from the services' documented timelines
/// (Import/Export: drives arrive within days and are processed within 7-10 business
/// days; Data Box: shipping legs of days, a copy of days). States where the customer has
/// the next move (Creating, AwaitingShipmentDetails, Delivered) and terminal ones have
/// none: the service clocks cover the first, nothing moves in the last.
pub fn default_stall_after() -> BTreeMap<String, Duration> {
    [
        ("Shipping", 10),
        ("Received", 7),
        ("Transferring", 10),
        ("Packaging", 7),
        ("DeviceOrdered", 10),
        ("DevicePrepared", 5),
        ("Dispatched", 7),
        ("PickedUp", 7),
        ("ShippedToAzureDC", 10),
        ("AtAzureDC", 5),
        ("DataCopy", 10),
        ("PreparingToShipFromAzureDC", 5),
        ("ShippedToCustomer", 10),
    ]
    .into_iter()
    .map(|(state, days)| (state.to_owned(), DAY * days))
    .collect()
}
