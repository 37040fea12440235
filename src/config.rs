//! The config file (DESIGN.md "Config file"): a raw serde layer that rejects unknown keys
//! and keeps the position of every value, resolved into a checked [`Config`] in which
//! durations are parsed, references hold, files are loaded and secrets are wrapped. Every
//! problem found is reported at once, each with its file, line and key.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    model::{JobName, JobState, Severity},
    tls::{self, Identity},
};

/// Where the daemon looks when neither `-c` nor `$IEWATCH_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/iewatch/iewatch.toml";
/// The classic Service Management endpoint.
pub const DEFAULT_CLASSIC_ENDPOINT: &str = "https://management.core.windows.net";
/// The Resource Manager endpoint of the public cloud.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// The Entra ID authority of the public cloud.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_CONCURRENT_POLLS: usize = 8;
const DEFAULT_STOP_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(3600);
const SUPPORTED_VERSIONS: [&str; 2] = ["2014-11-01", "2014-05-01"];

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key, e.g. `job[2].account`.
    pub key: String,
    /// What is wrong, never containing a secret.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Why a config could not be loaded: every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

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

/// The checked config.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// `[http]`, if a listener is wanted.
    pub http: Option<HttpSettings>,
    /// `[[account]]`, in file order.
    pub accounts: Vec<Account>,
    /// `[[job]]`, in file order.
    pub jobs: Vec<JobConfig>,
    /// `[[webhook]]`, in file order.
    pub webhooks: Vec<Webhook>,
    /// Things that work but should not be so (a private key readable by others).
    pub warnings: Vec<Problem>,
}

/// `[daemon]`.
#[derive(Clone, Debug)]
pub struct DaemonSettings {
    /// The SQLite file.
    pub database: PathBuf,
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
    /// How long in-flight work may take to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// Log line format.
    pub log_format: LogFormat,
}

/// `[http]`.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Where /healthz and /metrics listen.
    pub listen: SocketAddr,
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
}

/// Which API an account is watched through.
#[derive(Clone, Debug)]
pub enum AccountKind {
    /// The classic Service Management API of the spec.
    Classic(ClassicAccount),
    /// Azure Resource Manager with Entra ID client credentials.
    Arm(ArmAccount),
}

/// An app registration's credential.
#[derive(Clone, Debug)]
pub enum ArmCredential {
    /// A client secret.
    Secret(Secret),
    /// A certificate (and its RSA key) registered with the app: signed client assertions.
    Certificate(Identity),
}

/// A Resource Manager account: an app registration allowed to read the resource group.
#[derive(Clone, Debug)]
pub struct ArmAccount {
    /// The resource group holding the jobs.
    pub resource_group: String,
    /// Entra ID tenant.
    pub tenant_id: String,
    /// The app registration's client id.
    pub client_id: String,
    /// How the app registration proves itself.
    pub credential: ArmCredential,
    /// Resource Manager base URL, `https://...`, no trailing slash.
    pub endpoint: String,
    /// Entra ID authority base URL.
    pub authority: String,
    /// Extra trust roots (a sovereign cloud's, or the simulator's).
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// `jobs = "all"`: watch every job of the resource group, new ones included.
    pub discover_all: bool,
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
    /// `x-ms-version` to send.
    pub x_ms_version: String,
}

/// `[[job]]`.
#[derive(Clone, Debug)]
pub struct JobConfig {
    /// Index into [`Config::accounts`].
    pub account: String,
    /// The job's name.
    pub name: JobName,
    /// Override of the daemon's interval.
    pub poll_interval: Option<Duration>,
}

/// Payload format of a webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// Standard Webhooks JSON, signed.
    Json,
    /// `{"text": ...}` for Slack-compatible endpoints.
    Slack,
}

/// `[[webhook]]`.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Unique name, kept in `deliveries`.
    pub name: String,
    /// Where to POST.
    pub url: http::Uri,
    /// Signing key (the bytes after `whsec_`); unsigned when absent.
    pub secret: Option<Secret>,
    /// Payload format.
    pub format: WebhookFormat,
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

impl Config {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// Every problem found, each with file, line and key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                file: path.to_owned(),
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::parse(path, &text)
    }

    /// Checks config text as if read from `path` (relative files resolve next to it).
    ///
    /// # Errors
    /// Every problem found.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut checker = Checker {
            path,
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let line = e.span().map(|s| checker.line_of(s.start));
                let message = e.message().to_owned();
                return Err(ConfigError {
                    problems: vec![Problem {
                        file: path.to_owned(),
                        line,
                        key: String::new(),
                        message,
                    }],
                });
            }
        };
        let config = checker.resolve(raw);
        if checker.problems.is_empty() {
            Ok(config)
        } else {
            checker.problems.sort_by_key(|p| p.line);
            Err(ConfigError {
                problems: checker.problems,
            })
        }
    }

    /// Accounts whose jobs are discovered (`jobs = "all"`).
    pub fn discovering_accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts
            .iter()
            .filter(|a| matches!(&a.kind, AccountKind::Arm(arm) if arm.discover_all))
    }

    /// The account a job belongs to (always present in a checked config).
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// A summary for `check`: counts, never secrets.
    pub fn summary(&self) -> String {
        format!(
            "{} account(s), {} job(s), {} webhook(s), database {}",
            self.accounts.len(),
            self.jobs.len(),
            self.webhooks.len(),
            self.daemon.database.display()
        )
    }

    /// The interval policy for a job.
    pub fn poll_policy(&self, job: &JobConfig) -> PollPolicy {
        PollPolicy {
            base: job.poll_interval.unwrap_or(self.daemon.poll_interval),
            ..self.default_poll_policy()
        }
    }

    /// The interval policy of a job with no interval of its own (discovered jobs).
    pub fn default_poll_policy(&self) -> PollPolicy {
        PollPolicy {
            base: self.daemon.poll_interval,
            by_state: self.daemon.poll_interval_by_state.clone(),
        }
    }
}

/// How often a job is polled, following its state: the configured interval while
/// something happens (Shipping, Received, Transferring, Packaging, Faulted), three times
/// that while Creating (nothing moves until the customer ships), twelve times once
/// terminal. `[daemon.poll_interval_by_state]` overrides any state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollPolicy {
    /// The job's interval.
    pub base: Duration,
    /// Explicit per-state intervals, shared by every job.
    pub by_state: std::sync::Arc<BTreeMap<String, Duration>>,
}

impl PollPolicy {
    /// The interval to wait after observing `state` (None: never observed yet).
    pub fn interval(&self, state: Option<&JobState>) -> Duration {
        let Some(state) = state else { return self.base };
        if let Some(explicit) = self.by_state.get(state.as_str()) {
            return *explicit;
        }
        match state.as_str() {
            "Creating" => self.base * 3,
            _ if state.is_terminal() => self.base * 12,
            _ => self.base,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw layer: what serde reads. Every field optional so that all problems can be reported.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    http: Option<Spanned<RawHttp>>,
    #[serde(default)]
    account: Vec<Spanned<RawAccount>>,
    #[serde(default)]
    job: Vec<Spanned<RawJob>>,
    #[serde(default)]
    webhook: Vec<Spanned<RawWebhook>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    database: Option<Spanned<PathBuf>>,
    poll_interval: Option<Spanned<String>>,
    #[serde(default)]
    poll_interval_by_state: BTreeMap<String, Spanned<String>>,
    max_concurrent_polls: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    stop_after: Option<Spanned<String>>,
    failure_threshold: Option<Spanned<i64>>,
    shutdown_timeout: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    subscription_id: Option<Spanned<String>>,
    storage_account: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    certificate: Option<Spanned<PathBuf>>,
    certificate_key: Option<Spanned<PathBuf>>,
    ca_certificate: Option<Spanned<PathBuf>>,
    x_ms_version: Option<Spanned<String>>,
    store_bitlocker_keys: Option<bool>,
    // Resource Manager keys (DESIGN.md), recognised so that the message can say why.
    resource_group: Option<Spanned<String>>,
    tenant_id: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<PathBuf>>,
    client_certificate: Option<Spanned<PathBuf>>,
    authority: Option<Spanned<String>>,
    jobs: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    account: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<PathBuf>>,
    format: Option<Spanned<String>>,
    events: Option<Spanned<Vec<String>>>,
    jobs: Option<Spanned<Vec<String>>>,
    min_severity: Option<Spanned<String>>,
    progress_step: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    give_up_after: Option<Spanned<String>>,
    retry_initial: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------
// Resolution.

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Checker<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn problem(&mut self, offset: usize, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.path.to_owned(),
            line: Some(self.line_of(offset)),
            key: key.into(),
            message: message.into(),
        });
    }

    fn relative_path(&self, value: &Path) -> PathBuf {
        if value.is_absolute() {
            return value.to_owned();
        }
        self.path.parent().unwrap_or(Path::new(".")).join(value)
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.problem(value.span().start, key, "must be longer than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    value.span().start,
                    key,
                    format!(
                        "{:?} is not a duration ({e}); write e.g. 30s, 5m, 1h",
                        value.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn positive(&mut self, value: &Option<Spanned<i64>>, key: &str, default: i64) -> i64 {
        match value {
            Some(v) if *v.get_ref() < 1 => {
                self.problem(v.span().start, key, "must be at least 1");
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    fn required<'v>(
        &mut self,
        value: &'v Option<Spanned<String>>,
        at: usize,
        key: &str,
    ) -> Option<&'v Spanned<String>> {
        match value {
            Some(v) if !v.get_ref().trim().is_empty() => Some(v),
            Some(v) => {
                self.problem(v.span().start, key, "must not be empty");
                None
            }
            None => {
                self.problem(at, key, "is required");
                None
            }
        }
    }

    fn resolve(&mut self, raw: RawConfig) -> Config {
        let daemon = self.resolve_daemon(&raw.daemon);
        let http = raw.http.as_ref().and_then(|h| {
            let listen = &h.get_ref().listen;
            match listen.get_ref().parse::<SocketAddr>() {
                Ok(addr) => Some(HttpSettings { listen: addr }),
                Err(_) => {
                    self.problem(
                        listen.span().start,
                        "http.listen",
                        format!(
                            "{:?} is not an address like 127.0.0.1:9797",
                            listen.get_ref()
                        ),
                    );
                    None
                }
            }
        });

        let mut accounts = Vec::new();
        for (i, account) in raw.account.iter().enumerate() {
            if let Some(resolved) = self.resolve_account(i, account.get_ref(), account.span().start)
            {
                accounts.push(resolved);
            }
        }
        self.unique_names(
            "account",
            raw.account.iter().map(|a| a.get_ref().name.as_ref()),
        );
        let raw_account_names: HashSet<String> = raw
            .account
            .iter()
            .filter_map(|a| a.get_ref().name.as_ref().map(|n| n.get_ref().clone()))
            .collect();

        let mut jobs = Vec::new();
        let mut job_keys = HashSet::new();
        for (i, job) in raw.job.iter().enumerate() {
            let at = job.span().start;
            let job = job.get_ref();
            let account = self
                .required(&job.account, at, &format!("job[{i}].account"))
                .cloned();
            let name = self
                .required(&job.name, at, &format!("job[{i}].name"))
                .cloned();
            let poll_interval = job.poll_interval.is_some().then(|| {
                self.duration(
                    &job.poll_interval,
                    &format!("job[{i}].poll_interval"),
                    daemon.poll_interval,
                )
            });
            let (Some(account), Some(name)) = (account, name) else {
                continue;
            };
            if !raw_account_names.contains(account.get_ref()) {
                self.problem(
                    account.span().start,
                    format!("job[{i}].account"),
                    format!("no [[account]] is named {:?}", account.get_ref()),
                );
            }
            if !job_keys.insert((account.get_ref().clone(), name.get_ref().clone())) {
                self.problem(
                    name.span().start,
                    format!("job[{i}].name"),
                    format!(
                        "job {:?} of account {:?} is listed twice",
                        name.get_ref(),
                        account.get_ref()
                    ),
                );
            }
            jobs.push(JobConfig {
                account: account.into_inner(),
                name: JobName::new(name.into_inner()),
                poll_interval,
            });
        }

        let mut webhooks = Vec::new();
        for (i, webhook) in raw.webhook.iter().enumerate() {
            if let Some(resolved) = self.resolve_webhook(i, webhook.get_ref(), webhook.span().start)
            {
                webhooks.push(resolved);
            }
        }
        self.unique_names(
            "webhook",
            raw.webhook.iter().map(|w| w.get_ref().name.as_ref()),
        );

        Config {
            path: self.path.to_owned(),
            daemon,
            http,
            accounts,
            jobs,
            webhooks,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    /// A private key that others can read is not an error, but the operator must hear
    /// of it; the caller reports it once logging is set up.
    fn warn_if_readable_by_others(&mut self, offset: usize, key: String, path: &Path) {
        if readable_by_others(path) {
            self.warnings.push(Problem {
                file: self.path.to_owned(),
                line: Some(self.line_of(offset)),
                key,
                message: format!(
                    "private key file {} is readable by group or others; chmod 600 it",
                    path.display()
                ),
            });
        }
    }

    /// Reports every name of a table array that an earlier entry already used.
    fn unique_names<'n>(
        &mut self,
        table: &str,
        names: impl Iterator<Item = Option<&'n Spanned<String>>>,
    ) {
        let mut seen = HashSet::new();
        for (i, name) in names.enumerate() {
            if let Some(name) = name {
                if !seen.insert(name.get_ref().clone()) {
                    self.problem(
                        name.span().start,
                        format!("{table}[{i}].name"),
                        format!("{:?} is defined twice", name.get_ref()),
                    );
                }
            }
        }
    }

    fn resolve_daemon(&mut self, raw: &RawDaemon) -> DaemonSettings {
        let database = match &raw.database {
            Some(path) => self.relative_path(path.get_ref()),
            None => default_database_path(),
        };
        let poll_interval = self.duration(
            &raw.poll_interval,
            "daemon.poll_interval",
            DEFAULT_POLL_INTERVAL,
        );
        let mut poll_interval_by_state = BTreeMap::new();
        for (state, value) in &raw.poll_interval_by_state {
            let key = format!("daemon.poll_interval_by_state.{state}");
            let interval = self.duration(&Some(value.clone()), &key, poll_interval);
            poll_interval_by_state.insert(state.clone(), interval);
        }
        let log_format = match raw
            .log_format
            .as_ref()
            .map(|f| (f.get_ref().as_str(), f.span().start))
        {
            None | Some(("text", _)) => LogFormat::Text,
            Some(("json", _)) => LogFormat::Json,
            Some((other, at)) => {
                self.problem(
                    at,
                    "daemon.log_format",
                    format!("{other:?} is not \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        DaemonSettings {
            database,
            poll_interval,
            poll_interval_by_state: std::sync::Arc::new(poll_interval_by_state),
            max_concurrent_polls: self.positive(
                &raw.max_concurrent_polls,
                "daemon.max_concurrent_polls",
                DEFAULT_MAX_CONCURRENT_POLLS as i64,
            ) as usize,
            request_timeout: self.duration(
                &raw.request_timeout,
                "daemon.request_timeout",
                DEFAULT_REQUEST_TIMEOUT,
            ),
            connect_timeout: self.duration(
                &raw.connect_timeout,
                "daemon.connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
            ),
            stop_after: self.duration(&raw.stop_after, "daemon.stop_after", DEFAULT_STOP_AFTER),
            failure_threshold: self
                .positive(
                    &raw.failure_threshold,
                    "daemon.failure_threshold",
                    i64::from(DEFAULT_FAILURE_THRESHOLD),
                )
                .min(i64::from(u32::MAX)) as u32,
            shutdown_timeout: self.duration(
                &raw.shutdown_timeout,
                "daemon.shutdown_timeout",
                DEFAULT_SHUTDOWN_TIMEOUT,
            ),
            log_format,
        }
    }

    fn resolve_account(&mut self, i: usize, raw: &RawAccount, at: usize) -> Option<Account> {
        let key = |field: &str| format!("account[{i}].{field}");
        let name = self
            .required(&raw.name, at, &key("name"))
            .map(|n| n.get_ref().clone());
        let subscription_id = self
            .required(&raw.subscription_id, at, &key("subscription_id"))
            .map(|s| s.get_ref().clone());
        match raw
            .kind
            .as_ref()
            .map(|k| (k.get_ref().as_str(), k.span().start))
        {
            None | Some(("classic", _)) => {}
            Some(("arm", _)) => return self.resolve_arm_account(i, raw, at, name, subscription_id),
            Some((other, at)) => {
                self.problem(
                    at,
                    key("kind"),
                    format!("{other:?} is not \"classic\" or \"arm\""),
                );
                return None;
            }
        }
        let arm_only = [
            (
                "resource_group",
                raw.resource_group.as_ref().map(|v| v.span().start),
            ),
            ("tenant_id", raw.tenant_id.as_ref().map(|v| v.span().start)),
            ("client_id", raw.client_id.as_ref().map(|v| v.span().start)),
            (
                "client_secret",
                raw.client_secret.as_ref().map(|v| v.span().start),
            ),
            (
                "client_secret_file",
                raw.client_secret_file.as_ref().map(|v| v.span().start),
            ),
            (
                "client_certificate",
                raw.client_certificate.as_ref().map(|v| v.span().start),
            ),
            ("authority", raw.authority.as_ref().map(|v| v.span().start)),
            ("jobs", raw.jobs.as_ref().map(|v| v.span().start)),
        ];
        for (field, offset) in arm_only {
            if let Some(offset) = offset {
                self.problem(offset, key(field), "only for kind = \"arm\" accounts");
            }
        }
        let storage_account = self
            .required(&raw.storage_account, at, &key("storage_account"))
            .map(|s| s.get_ref().clone());
        let endpoint = self.https_base(&raw.endpoint, DEFAULT_CLASSIC_ENDPOINT, &key("endpoint"));
        let x_ms_version = match &raw.x_ms_version {
            None => Some(SUPPORTED_VERSIONS[0].to_owned()),
            Some(v) if SUPPORTED_VERSIONS.contains(&v.get_ref().as_str()) => {
                Some(v.get_ref().clone())
            }
            Some(v) => {
                self.problem(
                    v.span().start,
                    key("x_ms_version"),
                    format!("{:?} is not 2014-11-01 or 2014-05-01", v.get_ref()),
                );
                None
            }
        };
        let identity = match &raw.certificate {
            None => {
                self.problem(
                    at,
                    key("certificate"),
                    "is required (PEM management certificate with its key)",
                );
                None
            }
            Some(cert) => {
                let cert_path = self.relative_path(cert.get_ref());
                let key_path = raw
                    .certificate_key
                    .as_ref()
                    .map(|k| self.relative_path(k.get_ref()));
                match Identity::load(&cert_path, key_path.as_deref()) {
                    Ok(identity) => {
                        let key_file = key_path.as_deref().unwrap_or(&cert_path);
                        self.warn_if_readable_by_others(
                            cert.span().start,
                            key("certificate"),
                            key_file,
                        );
                        Some(identity)
                    }
                    Err(e) => {
                        self.problem(cert.span().start, key("certificate"), e.to_string());
                        None
                    }
                }
            }
        };
        let extra_roots = self.extra_roots(&raw.ca_certificate, &key("ca_certificate"));
        Some(Account {
            name: name?,
            subscription_id: subscription_id?,
            store_bitlocker_keys: raw.store_bitlocker_keys.unwrap_or(false),
            kind: AccountKind::Classic(ClassicAccount {
                storage_account: storage_account?,
                endpoint: endpoint?,
                identity: identity?,
                extra_roots: extra_roots?,
                x_ms_version: x_ms_version?,
            }),
        })
    }

    /// An `https://` base URL (no trailing slash), or the default.
    fn https_base(
        &mut self,
        value: &Option<Spanned<String>>,
        default: &str,
        key: &str,
    ) -> Option<String> {
        match value {
            None => Some(default.to_owned()),
            Some(e) => match parse_https_base(e.get_ref()) {
                Ok(base) => Some(base),
                Err(message) => {
                    self.problem(e.span().start, key, message);
                    None
                }
            },
        }
    }

    /// Extra trust roots from `ca_certificate`, if given.
    fn extra_roots(
        &mut self,
        value: &Option<Spanned<PathBuf>>,
        key: &str,
    ) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        match value {
            None => Some(Vec::new()),
            Some(ca) => match tls::load_certificates(&self.relative_path(ca.get_ref())) {
                Ok(certs) => Some(certs),
                Err(e) => {
                    self.problem(ca.span().start, key, e.to_string());
                    None
                }
            },
        }
    }

    /// `kind = "arm"`: Resource Manager with Entra ID client credentials.
    fn resolve_arm_account(
        &mut self,
        i: usize,
        raw: &RawAccount,
        at: usize,
        name: Option<String>,
        subscription_id: Option<String>,
    ) -> Option<Account> {
        let key = |field: &str| format!("account[{i}].{field}");
        let classic_only = [
            (
                "storage_account",
                raw.storage_account.as_ref().map(|v| v.span().start),
            ),
            (
                "certificate",
                raw.certificate.as_ref().map(|v| v.span().start),
            ),
            (
                "certificate_key",
                raw.certificate_key.as_ref().map(|v| v.span().start),
            ),
            (
                "x_ms_version",
                raw.x_ms_version.as_ref().map(|v| v.span().start),
            ),
        ];
        for (field, offset) in classic_only {
            if let Some(offset) = offset {
                self.problem(offset, key(field), "only for kind = \"classic\" accounts");
            }
        }

        let discover_all = match &raw.jobs {
            None => false,
            Some(jobs) if jobs.get_ref() == "all" => true,
            Some(jobs) => {
                self.problem(
                    jobs.span().start,
                    key("jobs"),
                    format!(
                        "{:?}: the only value is \"all\" (watch every job of the resource group)",
                        jobs.get_ref()
                    ),
                );
                false
            }
        };
        let resource_group = self
            .required(&raw.resource_group, at, &key("resource_group"))
            .map(|v| v.get_ref().clone());
        let tenant_id = self
            .required(&raw.tenant_id, at, &key("tenant_id"))
            .map(|v| v.get_ref().clone());
        let client_id = self
            .required(&raw.client_id, at, &key("client_id"))
            .map(|v| v.get_ref().clone());
        let credential = match (
            &raw.client_secret,
            &raw.client_secret_file,
            &raw.client_certificate,
        ) {
            (Some(secret), None, None) if !secret.get_ref().is_empty() => Some(
                ArmCredential::Secret(Secret::new(secret.get_ref().as_bytes())),
            ),
            (None, Some(file), None) => {
                match std::fs::read_to_string(self.relative_path(file.get_ref())) {
                    Ok(text) if !text.trim().is_empty() => {
                        Some(ArmCredential::Secret(Secret::new(text.trim().as_bytes())))
                    }
                    Ok(_) => {
                        self.problem(
                            file.span().start,
                            key("client_secret_file"),
                            "the file is empty",
                        );
                        None
                    }
                    Err(e) => {
                        self.problem(
                            file.span().start,
                            key("client_secret_file"),
                            format!("cannot read: {e}"),
                        );
                        None
                    }
                }
            }
            (None, None, Some(cert)) => {
                let path = self.relative_path(cert.get_ref());
                match Identity::load(&path, None) {
                    Ok(identity) => match identity.sign_rs256(b"probe") {
                        Ok(_) => {
                            self.warn_if_readable_by_others(
                                cert.span().start,
                                key("client_certificate"),
                                &path,
                            );
                            Some(ArmCredential::Certificate(identity))
                        }
                        Err(e) => {
                            self.problem(
                                cert.span().start,
                                key("client_certificate"),
                                e.to_string(),
                            );
                            None
                        }
                    },
                    Err(e) => {
                        self.problem(cert.span().start, key("client_certificate"), e.to_string());
                        None
                    }
                }
            }
            (None, None, None) | (Some(_), None, None) => {
                self.problem(
                    at,
                    key("client_secret"),
                    "is required (client_secret, client_secret_file or client_certificate)",
                );
                None
            }
            _ => {
                self.problem(
                    at,
                    key("client_secret"),
                    "give one of client_secret, client_secret_file and client_certificate",
                );
                None
            }
        };
        let endpoint = self.https_base(&raw.endpoint, DEFAULT_ARM_ENDPOINT, &key("endpoint"));
        let authority = self.https_base(&raw.authority, DEFAULT_AUTHORITY, &key("authority"));
        let extra_roots = self.extra_roots(&raw.ca_certificate, &key("ca_certificate"));
        Some(Account {
            name: name?,
            subscription_id: subscription_id?,
            store_bitlocker_keys: raw.store_bitlocker_keys.unwrap_or(false),
            kind: AccountKind::Arm(ArmAccount {
                resource_group: resource_group?,
                tenant_id: tenant_id?,
                client_id: client_id?,
                credential: credential?,
                endpoint: endpoint?,
                authority: authority?,
                extra_roots: extra_roots?,
                discover_all,
            }),
        })
    }

    fn resolve_webhook(&mut self, i: usize, raw: &RawWebhook, at: usize) -> Option<Webhook> {
        let key = |field: &str| format!("webhook[{i}].{field}");
        let name = self
            .required(&raw.name, at, &key("name"))
            .map(|n| n.get_ref().clone());
        let url = self.required(&raw.url, at, &key("url")).and_then(|u| {
            match u.get_ref().parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() =>
                {
                    Some(uri)
                }
                _ => {
                    self.problems.push(Problem {
                        file: self.path.to_owned(),
                        line: Some(self.line_of(u.span().start)),
                        key: key("url"),
                        message: format!("{:?} is not an http:// or https:// URL", u.get_ref()),
                    });
                    None
                }
            }
        });
        let secret_text = match (&raw.secret, &raw.secret_file) {
            (Some(_), Some(file)) => {
                self.problem(
                    file.span().start,
                    key("secret_file"),
                    "give secret or secret_file, not both",
                );
                None
            }
            (Some(secret), None) => {
                Some((secret.get_ref().clone(), secret.span().start, key("secret")))
            }
            (None, Some(file)) => match std::fs::read_to_string(self.relative_path(file.get_ref()))
            {
                Ok(text) => Some((
                    text.trim().to_owned(),
                    file.span().start,
                    key("secret_file"),
                )),
                Err(e) => {
                    self.problem(
                        file.span().start,
                        key("secret_file"),
                        format!("cannot read: {e}"),
                    );
                    None
                }
            },
            (None, None) => None,
        };
        // A secret that does not decode is reported without echoing it.
        let secret = secret_text.and_then(|(text, at, key)| match decode_webhook_secret(&text) {
            Some(bytes) => Some(Secret::new(bytes)),
            None => {
                self.problem(at, key, "is not a whsec_<base64> secret (value not shown)");
                None
            }
        });
        let format = match raw
            .format
            .as_ref()
            .map(|f| (f.get_ref().as_str(), f.span().start))
        {
            None | Some(("json", _)) => WebhookFormat::Json,
            Some(("slack", _)) => WebhookFormat::Slack,
            Some((other, at)) => {
                self.problem(
                    at,
                    key("format"),
                    format!("{other:?} is not \"json\" or \"slack\""),
                );
                WebhookFormat::Json
            }
        };
        let events = match &raw.events {
            None => vec!["*".to_owned()],
            Some(list) => {
                for event in list.get_ref() {
                    if !crate::events::is_known_filter(event) {
                        self.problem(
                            list.span().start,
                            key("events"),
                            format!("{event:?} is not an event type, a prefix like \"drive.*\", or \"*\""),
                        );
                    }
                }
                list.get_ref().clone()
            }
        };
        let min_severity = match &raw.min_severity {
            None => Severity::Info,
            Some(s) => Severity::parse(s.get_ref()).unwrap_or_else(|| {
                self.problem(
                    s.span().start,
                    key("min_severity"),
                    "must be \"info\", \"warning\" or \"error\"",
                );
                Severity::Info
            }),
        };
        let progress_step = match &raw.progress_step {
            None => None,
            Some(step) if (1..=100).contains(step.get_ref()) => Some(*step.get_ref() as u32),
            Some(step) => {
                self.problem(
                    step.span().start,
                    key("progress_step"),
                    "must be between 1 and 100",
                );
                None
            }
        };
        Some(Webhook {
            name: name?,
            url: url?,
            secret,
            format,
            events,
            jobs: raw
                .jobs
                .as_ref()
                .map(|j| j.get_ref().clone())
                .unwrap_or_else(|| vec!["*".into()]),
            min_severity,
            progress_step,
            timeout: self.duration(&raw.timeout, &key("timeout"), DEFAULT_WEBHOOK_TIMEOUT),
            give_up_after: self.duration(
                &raw.give_up_after,
                &key("give_up_after"),
                DEFAULT_GIVE_UP_AFTER,
            ),
            retry_initial: self.duration(
                &raw.retry_initial,
                &key("retry_initial"),
                DEFAULT_RETRY_INITIAL,
            ),
            retry_max: self.duration(&raw.retry_max, &key("retry_max"), DEFAULT_RETRY_MAX),
        })
    }
}

/// The database path when the config names none: systemd's StateDirectory, else `./`.
pub fn default_database_path() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(dirs) => {
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or(".")
                .to_owned();
            PathBuf::from(first).join("iewatch.db")
        }
        None => PathBuf::from("iewatch.db"),
    }
}

/// The database a config file names, read leniently (only `[daemon] database`), so that
/// `status` and `history` work even when other parts of the config are broken or the
/// certificates are not readable by the user running them.
pub fn database_path(config_path: &Path) -> PathBuf {
    let configured = std::fs::read_to_string(config_path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("daemon")?
                .get("database")?
                .as_str()
                .map(PathBuf::from)
        });
    match configured {
        Some(path) if path.is_absolute() => path,
        Some(path) => config_path.parent().unwrap_or(Path::new(".")).join(path),
        None => default_database_path(),
    }
}

/// `whsec_<base64>` (or bare base64) to key bytes.
pub fn decode_webhook_secret(text: &str) -> Option<Vec<u8>> {
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

fn parse_https_base(value: &str) -> Result<String, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|_| format!("{value:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "{value:?} must be https:// (the API requires HTTPS)"
        ));
    }
    if uri.host().is_none() {
        return Err(format!("{value:?} has no host"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> bool {
    false
}
