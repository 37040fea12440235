//! The checker: resolves the raw layer into the checked config, with the helpers every
//! section shares (durations, enum choices, secrets, kind-only keys, file paths).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use toml::Spanned;

use super::{
    raw::RawConfig, Config, DaemonSettings, JobConfig, PollPolicy, Problem, DURATION_CEILING,
    POLL_INTERVAL_FLOOR,
};
use crate::{model::JobName, tls};

/// Resolves the raw layer, collecting every problem and warning on the way.
pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    pub(super) fn problem(
        &mut self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            file: self.path.to_owned(),
            line: Some(self.line_of(offset)),
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn relative_path(&self, value: &Path) -> PathBuf {
        if value.is_absolute() {
            return value.to_owned();
        }
        self.path.parent().unwrap_or(Path::new(".")).join(value)
    }

    pub(super) fn duration(
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
            Ok(d) if d > DURATION_CEILING => {
                self.problem(
                    value.span().start,
                    key,
                    format!(
                        "{:?} is longer than a year; write at most 366d",
                        value.get_ref()
                    ),
                );
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

    /// A poll interval: a duration, with a warning when it is shorter than the service's
    /// data moves (the service updates a job a few times a day; polling faster only
    /// spends the subscription's request quota).
    pub(super) fn poll_interval(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let interval = self.duration(value, key, default);
        if let Some(value) = value.as_ref().filter(|_| interval < POLL_INTERVAL_FLOOR) {
            let message = format!(
                "{:?} is shorter than {}s: the service changes a job a few times a day, and \
                 faster polling spends request quota (fine for tests and the simulator)",
                value.get_ref(),
                POLL_INTERVAL_FLOOR.as_secs()
            );
            self.warnings.push(Problem {
                file: self.path.to_owned(),
                line: Some(self.line_of(value.span().start)),
                key: key.to_owned(),
                message,
            });
        }
        interval
    }

    pub(super) fn positive(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
    ) -> i64 {
        match value {
            Some(v) if *v.get_ref() < 1 => {
                self.problem(v.span().start, key, "must be at least 1");
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    pub(super) fn required<'v>(
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

    /// A required name (of an account, a job or a webhook): it goes into URLs, logs,
    /// file names of reports and terminals, so control characters and the names `.` and
    /// `..` are refused.
    pub(super) fn name<'v>(
        &mut self,
        value: &'v Option<Spanned<String>>,
        at: usize,
        key: &str,
    ) -> Option<&'v Spanned<String>> {
        let value = self.required(value, at, key)?;
        let text = value.get_ref();
        let message = if text.chars().any(char::is_control) {
            "must not contain control characters"
        } else if text == "." || text == ".." {
            "must not be \".\" or \"..\""
        } else {
            return Some(value);
        };
        self.problem(value.span().start, key, message);
        None
    }

    /// A required non-empty text value.
    pub(super) fn required_text(
        &mut self,
        value: &Option<Spanned<String>>,
        at: usize,
        key: &str,
    ) -> Option<String> {
        self.required(value, at, key).map(|v| v.get_ref().clone())
    }

    pub(super) fn resolve(&mut self, raw: RawConfig) -> Config {
        let daemon = self.resolve_daemon(&raw.daemon);
        let http = raw
            .http
            .as_ref()
            .and_then(|h| self.resolve_http(h.get_ref()));

        let accounts =
            self.resolve_table("account", &raw.account, |a| &a.name, Self::resolve_account);
        let jobs = self.resolve_jobs(&raw, &daemon);
        let webhooks =
            self.resolve_table("webhook", &raw.webhook, |w| &w.name, Self::resolve_webhook);
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

    /// Every entry of a table array that resolves, each name used once.
    fn resolve_table<R, T>(
        &mut self,
        table: &str,
        entries: &[Spanned<R>],
        name: impl Fn(&R) -> &Option<Spanned<String>>,
        resolve: impl Fn(&mut Self, usize, &R, usize) -> Option<T>,
    ) -> Vec<T> {
        let resolved = entries
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| resolve(self, i, entry.get_ref(), entry.span().start))
            .collect();
        self.unique_names(table, entries.iter().map(|e| name(e.get_ref()).as_ref()));
        resolved
    }

    /// `[[job]]`: each with a known account, listed once, its poll policy resolved here
    /// and nowhere else.
    fn resolve_jobs(&mut self, raw: &RawConfig, daemon: &DaemonSettings) -> Vec<JobConfig> {
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
            let name = self.name(&job.name, at, &format!("job[{i}].name")).cloned();
            let base = self.poll_interval(
                &job.poll_interval,
                &format!("job[{i}].poll_interval"),
                daemon.poll_interval,
            );
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
                policy: PollPolicy {
                    base,
                    ..daemon.default_poll_policy()
                },
            });
        }
        jobs
    }

    /// A file holding a secret (`what`: a private key, a secret) that others can read is
    /// not an error, but the operator must hear of it: a warning, reported by `check` and
    /// once logging is set up.
    pub(super) fn warn_if_exposed(&mut self, offset: usize, key: String, path: &Path, what: &str) {
        if readable_by_others(path) {
            self.warn(
                offset,
                key,
                format!(
                    "{what} {} is readable by group or others; chmod 600 it",
                    path.display()
                ),
            );
        }
    }

    /// Something that works but should not be so; reported by `check` and at start.
    pub(super) fn warn(&mut self, offset: usize, key: String, message: String) {
        self.warnings.push(Problem {
            file: self.path.to_owned(),
            line: Some(self.line_of(offset)),
            key,
            message,
        });
    }

    /// Reports every name of a table array that an earlier entry already used.
    pub(super) fn unique_names<'n>(
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

    /// One of a fixed set of spellings (an enum in the config), or the default when the
    /// key is absent. An unknown spelling is a problem naming every allowed one.
    pub(super) fn choice<T: Copy>(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> Option<T> {
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        let allowed = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.choice_with(value, key, choices, default, |v| {
            format!("{v:?} is not {allowed}")
        })
    }

    /// [`Checker::choice`] with a message of its own for an unknown spelling.
    pub(super) fn choice_with<T: Copy>(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        choices: &[(&str, T)],
        default: T,
        refusal: impl FnOnce(&str) -> String,
    ) -> Option<T> {
        let Some(value) = value else {
            return Some(default);
        };
        if let Some((_, choice)) = choices.iter().find(|(name, _)| name == value.get_ref()) {
            return Some(*choice);
        }
        self.problem(value.span().start, key, refusal(value.get_ref()));
        None
    }

    /// A secret given inline or in a file, by the one rule every secret follows: the
    /// value is trimmed, and an empty one is refused. Returns the text with the position
    /// and key to report a malformed value at (without echoing it).
    pub(super) fn secret(
        &mut self,
        inline: (&Option<Spanned<String>>, String),
        file: (&Option<Spanned<PathBuf>>, String),
    ) -> Option<(String, usize, String)> {
        let ((inline, inline_key), (file, file_key)) = (inline, file);
        match (inline, file) {
            (Some(_), Some(file)) => {
                self.problem(
                    file.span().start,
                    file_key.clone(),
                    format!("give {inline_key} or {file_key}, not both"),
                );
                None
            }
            (Some(value), None) => {
                let text = value.get_ref().trim();
                if text.is_empty() {
                    self.problem(value.span().start, inline_key, "must not be empty");
                    return None;
                }
                let config = self.path.to_owned();
                let what = "an inline secret: the config file";
                self.warn_if_exposed(value.span().start, inline_key.clone(), &config, what);
                Some((text.to_owned(), value.span().start, inline_key))
            }
            (None, Some(path)) => {
                let at = path.span().start;
                match read_secret_file(&self.relative_path(path.get_ref())) {
                    Ok(text) if text.trim().is_empty() => {
                        self.problem(at, file_key, "the file is empty");
                        None
                    }
                    Ok(text) => {
                        let file = self.relative_path(path.get_ref());
                        self.warn_if_exposed(at, file_key.clone(), &file, "secret file");
                        Some((text.trim().to_owned(), at, file_key))
                    }
                    Err(message) => {
                        self.problem(at, file_key, message);
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }

    /// Reports every key given that belongs to another kind of account or format of
    /// webhook (`what`: `kind = "arm" accounts`).
    pub(super) fn only_for(&mut self, keys: &[(&str, Option<usize>)], prefix: &str, what: &str) {
        for (field, offset) in keys {
            if let Some(offset) = offset {
                self.problem(
                    *offset,
                    format!("{prefix}.{field}"),
                    format!("only for {what}"),
                );
            }
        }
    }

    /// An `https://` base URL (no trailing slash), or the default.
    pub(super) fn https_base(
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
    pub(super) fn extra_roots(
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
}

pub(super) fn parse_https_base(value: &str) -> Result<String, String> {
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
pub(super) fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
pub(super) fn readable_by_others(_path: &Path) -> bool {
    false
}

/// Most bytes a secret file may hold: a secret, a SAS or a key is far smaller, and a file
/// that is not one (a log, a device) is refused without being read whole.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A secret file's text, read at most [`MAX_SECRET_FILE`] bytes far.
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "is larger than {MAX_SECRET_FILE} bytes: not a secret"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "cannot read: the file is not UTF-8 text".to_owned())
}
