//! `[daemon]` and `[http]`: the database, intervals, timeouts and bounds of the process.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use toml::Spanned;

use super::{
    check::Checker,
    default_database_path,
    raw::{RawDaemon, RawHttp},
    ClockSettings, DaemonSettings, HttpSettings, LogFormat, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_POLLS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_STOP_AFTER,
};
use super::{is_postgres_url, Database};

/// The leader's lease on PostgreSQL by default: a standby takes over within about this
/// long (plus a second) of a leader's death.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shortest lease: renewals every fifth of it must fit a slow database round trip.
const MIN_LEASE: Duration = Duration::from_secs(3);
/// Longest lease.
const MAX_LEASE: Duration = Duration::from_secs(300);

impl Checker<'_> {
    pub(super) fn resolve_daemon(&mut self, raw: &RawDaemon) -> DaemonSettings {
        let database = self.database(raw);
        let lease = self.duration(&raw.lease, "daemon.lease", DEFAULT_LEASE);
        if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
            let at = raw.lease.as_ref().map_or(0, |l| l.span().start);
            self.problem(
                at,
                "daemon.lease",
                "give 3s to 5m (a standby takes over after about this long)",
            );
        }
        let poll_interval = self.poll_interval(
            &raw.poll_interval,
            "daemon.poll_interval",
            DEFAULT_POLL_INTERVAL,
        );
        let mut poll_interval_by_state = BTreeMap::new();
        for (state, value) in &raw.poll_interval_by_state {
            let key = format!("daemon.poll_interval_by_state.{state}");
            self.warn_unknown_state(value.span().start, &key, state);
            let interval = self.poll_interval(&Some(value.clone()), &key, poll_interval);
            poll_interval_by_state.insert(state.clone(), interval);
        }
        let log_format = self
            .choice(
                &raw.log_format,
                "daemon.log_format",
                &[("text", LogFormat::Text), ("json", LogFormat::Json)],
                LogFormat::Text,
            )
            .unwrap_or_default();
        DaemonSettings {
            database,
            lease,
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
            max_retry_after: self.duration(
                &raw.max_retry_after,
                "daemon.max_retry_after",
                DEFAULT_MAX_RETRY_AFTER,
            ),
            shutdown_timeout: self.duration(
                &raw.shutdown_timeout,
                "daemon.shutdown_timeout",
                DEFAULT_SHUTDOWN_TIMEOUT,
            ),
            log_format,
            clocks: self.resolve_clocks(raw),
            retention: self.retention(&raw.retention),
        }
    }

    /// `database` and `database_password_file`: a SQLite file (relative to the config),
    /// or a `postgres://` URL that must parse and should not carry its password.
    fn database(&mut self, raw: &RawDaemon) -> Database {
        let password_file = raw.database_password_file.as_ref().map(|file| {
            let path = self.relative_path(file.get_ref());
            let key = "daemon.database_password_file".to_owned();
            self.warn_if_exposed(file.span().start, key, &path, "password file");
            path
        });
        let text = raw.database.as_ref();
        if !text.is_some_and(|t| is_postgres_url(t.get_ref())) {
            if let Some(file) = &raw.database_password_file {
                // Where the mistake shows: at `database` if given, else at this key.
                let at = text.map_or(file.span().start, |t| t.span().start);
                let key = "daemon.database_password_file";
                self.problem(at, key, "is for a postgres:// database only");
            }
        }
        let Some(text) = text else {
            return Database::File(default_database_path());
        };
        let at = text.span().start;
        if !is_postgres_url(text.get_ref()) {
            return Database::File(self.relative_path(Path::new(text.get_ref())));
        }
        match url::Url::parse(text.get_ref()) {
            Err(e) => self.problem(
                at,
                "daemon.database",
                format!("not a valid URL ({e}): write postgres://USER@HOST:PORT/DATABASE"),
            ),
            Ok(url)
                if url.password().is_some() || url.query_pairs().any(|(k, _)| k == "password") =>
            {
                self.warn(at, "daemon.database".into(), "the URL carries a password: put it in database_password_file (or a systemd credential) instead".into());
            }
            Ok(_) => {}
        }
        Database::parse(text.get_ref(), password_file)
    }

    /// `retention`: a day to a century (longer than the year other durations allow).
    fn retention(&mut self, value: &Option<Spanned<String>>) -> Option<Duration> {
        const DAY: Duration = Duration::from_secs(86_400);
        let value = value.as_ref()?;
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if (DAY..=DAY * 36_525).contains(&d) => Some(d),
            Ok(_) => {
                self.problem(
                    value.span().start,
                    "daemon.retention",
                    format!(
                        "{:?}: give a day to a hundred years, e.g. 400d",
                        value.get_ref()
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(
                    value.span().start,
                    "daemon.retention",
                    format!(
                        "{:?} is not a duration ({e}); write e.g. 400d",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// `deadline_warnings`, `stall_after`, `drive_stall_after`, `remind_every`,
    /// `remind_max`: durations, or `"off"` for the ones that can be switched off.
    fn resolve_clocks(&mut self, raw: &RawDaemon) -> ClockSettings {
        let defaults = ClockSettings::default();
        let deadline_warnings = match &raw.deadline_warnings {
            None => defaults.deadline_warnings,
            Some(list) => list
                .get_ref()
                .iter()
                .map(|lead| {
                    let value = Some(Spanned::new(list.span(), lead.clone()));
                    self.duration(&value, "daemon.deadline_warnings", Duration::ZERO)
                })
                .filter(|d| !d.is_zero())
                .collect(),
        };
        let mut stall_after = defaults.stall_after;
        for (state, value) in &raw.stall_after {
            let key = format!("daemon.stall_after.{state}");
            self.warn_unknown_state(value.span().start, &key, state);
            match self.switchable(&Some(value.clone()), &key, None) {
                Some(threshold) => stall_after.insert(state.clone(), threshold),
                None => stall_after.remove(state),
            };
        }
        ClockSettings {
            deadline_warnings,
            stall_after,
            drive_stall_after: self.switchable(
                &raw.drive_stall_after,
                "daemon.drive_stall_after",
                defaults.drive_stall_after,
            ),
            remind_every: self.switchable(
                &raw.remind_every,
                "daemon.remind_every",
                defaults.remind_every,
            ),
            remind_max: self
                .positive(
                    &raw.remind_max,
                    "daemon.remind_max",
                    i64::from(defaults.remind_max),
                )
                .min(1000) as u32,
        }
    }

    /// A duration, or `"off"` (None).
    fn switchable(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Option<Duration>,
    ) -> Option<Duration> {
        match value {
            None => default,
            Some(v) if v.get_ref() == "off" => None,
            Some(_) => {
                Some(self.duration(value, key, default.unwrap_or(Duration::from_secs(86_400))))
            }
        }
    }

    /// `[http]`: the address, and the bounds that keep the listener from being starved.
    pub(super) fn resolve_http(&mut self, raw: &RawHttp) -> Option<HttpSettings> {
        let header_read_timeout = self.duration(
            &raw.header_read_timeout,
            "http.header_read_timeout",
            DEFAULT_HEADER_READ_TIMEOUT,
        );
        let idle_timeout =
            self.duration(&raw.idle_timeout, "http.idle_timeout", DEFAULT_IDLE_TIMEOUT);
        let max_connections = self.positive(
            &raw.max_connections,
            "http.max_connections",
            DEFAULT_MAX_CONNECTIONS,
        );
        let Ok(listen) = raw.listen.get_ref().parse::<SocketAddr>() else {
            let message = format!(
                "{:?} is not an address like 127.0.0.1:9797",
                raw.listen.get_ref()
            );
            self.problem(raw.listen.span().start, "http.listen", message);
            return None;
        };
        let token = self
            .secret(
                (&None, "http.token".into()),
                (&raw.token_file, "http.token_file".into()),
            )
            .and_then(|(token, at, key)| self.bearer_token(token, at, &key));
        if token.is_none() && raw.token_file.is_none() && !listen.ip().is_loopback() {
            self.warn(
                raw.listen.span().start,
                "http.listen".into(),
                format!("{listen} is beyond loopback and there is no token_file: the status page, its API and /metrics are open to anyone who reaches it"),
            );
        }
        Some(HttpSettings {
            listen,
            header_read_timeout,
            idle_timeout,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            token,
        })
    }
}

/// Shorter bearer tokens are warned about.
const MIN_TOKEN_CHARS: usize = 16;

impl Checker<'_> {
    /// A bearer token a client can send: one line of visible ASCII (a second line or a
    /// non-ASCII byte could never match what an HTTP header carries). Short ones warned.
    fn bearer_token(&mut self, token: String, at: usize, key: &str) -> Option<String> {
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                at,
                key,
                "must be one line of visible ASCII (no spaces, no second line): a client \
                 could never send anything else in its Authorization header",
            );
            return None;
        }
        if token.len() < MIN_TOKEN_CHARS {
            self.warn(
                at,
                key.to_owned(),
                format!(
                    "the token has {} characters; {MIN_TOKEN_CHARS} or more random ones \
                     (e.g. `openssl rand -hex 32`) keep guessing out",
                    token.len()
                ),
            );
        }
        Some(token)
    }

    /// A warning for a state name no kind of job has (`Transfering`, `datacopy`): its
    /// setting would never apply. Said with the name it may have meant.
    fn warn_unknown_state(&mut self, offset: usize, key: &str, state: &str) {
        if crate::model::JobState::KNOWN.contains(&state) {
            return;
        }
        let folded = |s: &str| s.to_ascii_lowercase().replace('_', "");
        let meant = crate::model::JobState::KNOWN
            .iter()
            .find(|known| folded(known) == folded(state))
            .or_else(|| {
                crate::model::JobState::KNOWN
                    .iter()
                    .find(|known| edit_distance(&folded(known), &folded(state)) <= 2)
            });
        let hint = meant.map_or_else(String::new, |m| format!(" (did you mean {m:?}?)"));
        self.warn(
            offset,
            key.to_owned(),
            format!("no kind of job has a state {state:?}: this setting never applies{hint}; states are case-sensitive"),
        );
    }
}

/// Levenshtein distance of two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
