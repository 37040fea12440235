//! The config file (the README's "Configuration"): a raw serde layer that rejects unknown keys
//! and keeps the position of every value ([`raw`]), resolved by a checker ([`check`], with
//! [`accounts`] and [`webhooks`]) into the checked [`Config`] ([`types`]) in which
//! durations are parsed, references hold, files are loaded and secrets are wrapped.
//! Every problem found is reported at once, each with its file, line and key.

mod accounts;
mod check;
mod credential;
mod daemon;
mod database;
mod email;
mod error_logs;
mod raw;
mod template;
mod types;
mod webhooks;

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;

pub use database::{is_postgres_url, Database, Postgres};
pub use error_logs::DEFAULT_BLOB_ENDPOINT;
pub use types::*;

/// Where the daemon looks when neither `-c` nor `$IEWATCH_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/iewatch/iewatch.toml";
/// The classic Service Management endpoint.
pub const DEFAULT_CLASSIC_ENDPOINT: &str = "https://management.core.windows.net";
/// The Resource Manager endpoint of the public cloud.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// The Entra ID authority of the public cloud.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_MAX_CONCURRENT_POLLS: usize = 8;
pub(crate) const DEFAULT_STOP_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
pub(crate) const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_MAX_CONNECTIONS: i64 = 64;
pub(crate) const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// No configured duration may be longer: beyond it a value is a typo, and time
/// arithmetic on it could overflow.
pub(crate) const DURATION_CEILING: Duration = Duration::from_secs(366 * 86_400);
/// Poll intervals shorter than this draw a warning.
pub(crate) const POLL_INTERVAL_FLOOR: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
pub(crate) const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(3600);
pub(crate) const SUPPORTED_VERSIONS: [&str; 2] = ["2014-11-01", "2014-05-01"];

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
        let mut checker = check::Checker {
            path,
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let raw: raw::RawConfig = match toml::from_str(text) {
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
            self.daemon.database
        )
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

/// The database a config file names, read leniently (only `[daemon] database` and
/// `database_password_file`), so that `status` and `history` work even when other parts
/// of the config are broken or the certificates are not readable by the user running
/// them.
pub fn database_of(config_path: &Path) -> Database {
    let daemon = std::fs::read_to_string(config_path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| table.get("daemon")?.as_table().cloned())
        .unwrap_or_default();
    let relative = |path: &Path| match path.is_absolute() {
        true => path.to_owned(),
        false => config_path.parent().unwrap_or(Path::new(".")).join(path),
    };
    let password_file = daemon
        .get("database_password_file")
        .and_then(|v| v.as_str())
        .map(|file| relative(Path::new(file)));
    match daemon.get("database").and_then(|v| v.as_str()) {
        Some(text) => match Database::parse(text, password_file) {
            Database::File(path) => Database::File(relative(&path)),
            postgres => postgres,
        },
        None => Database::File(default_database_path()),
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
