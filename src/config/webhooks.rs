//! `[[webhook]]`: where alerts go, in which format, signed with which key, and which
//! events and jobs each wants.

use toml::Spanned;

use super::{
    check::Checker, decode_webhook_secret, raw::RawWebhook, Channel, EmailSettings, Secret,
    Webhook, WebhookFormat, WebhookTemplate, WebhookUrl, DEFAULT_GIVE_UP_AFTER,
    DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, DEFAULT_WEBHOOK_TIMEOUT,
};
use crate::{
    model::Severity,
    payload::{
        rehearsal::{rehearse, Rehearsal, VARIABLES},
        DEFAULT_MAX_BODY,
    },
};

/// Where PagerDuty's Events API v2 takes events.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Largest body template read.
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The bounds of `max_body_bytes`: a body of a few words, up to what a chat or paging
/// service could take.
const MIN_MAX_BODY: usize = 1024;
const MAX_MAX_BODY: usize = 16 * 1024 * 1024;

impl Checker<'_> {
    pub(super) fn resolve_webhook(
        &mut self,
        i: usize,
        raw: &RawWebhook,
        at: usize,
    ) -> Option<Webhook> {
        let key = |field: &str| format!("webhook[{i}].{field}");
        let name = self
            .name(&raw.name, at, &key("name"))
            .map(|n| n.get_ref().clone());
        let formats: Vec<(&str, WebhookFormat)> = {
            use strum::IntoEnumIterator as _;
            WebhookFormat::iter().map(|f| (f.as_str(), f)).collect()
        };
        let format = self
            .choice(&raw.format, &key("format"), &formats, WebhookFormat::Json)
            .unwrap_or(WebhookFormat::Json);
        // PagerDuty has one address; the others are the receiver's.
        let timeout = self.duration(&raw.timeout, &key("timeout"), DEFAULT_WEBHOOK_TIMEOUT);
        let (url, email) = match (&raw.url, format) {
            (None, WebhookFormat::PagerDuty) => (
                Some(WebhookUrl::new(http::Uri::from_static(
                    PAGERDUTY_EVENTS_URL,
                ))),
                None,
            ),
            (_, WebhookFormat::Email) => match self.email_settings(raw, i, at, timeout) {
                Some((url, email)) => (Some(url), Some(email)),
                None => (None, None),
            },
            _ => (self.webhook_url(&raw.url, at, &key("url")), None),
        };
        if format != WebhookFormat::Email {
            let start = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.span().start);
            let file = |v: &Option<Spanned<std::path::PathBuf>>| v.as_ref().map(|v| v.span().start);
            let email_only = [
                ("from", start(&raw.from)),
                ("to", raw.to.as_ref().map(|v| v.span().start)),
                ("username", start(&raw.username)),
                ("password", start(&raw.password)),
                ("password_file", file(&raw.password_file)),
                ("ca_certificate", file(&raw.ca_certificate)),
                ("digest_every", start(&raw.digest_every)),
            ];
            self.only_for(
                &email_only,
                &format!("webhook[{i}]"),
                "format = \"email\" webhooks",
            );
        }
        let secret = self.webhook_secret(raw, i);
        if format != WebhookFormat::Json {
            // A secret signs Standard Webhooks only; older configs may carry one on
            // another channel, where it never did anything: said, not refused.
            let given = raw
                .secret
                .as_ref()
                .map(|v| v.span().start)
                .or(raw.secret_file.as_ref().map(|v| v.span().start));
            if let Some(offset) = given {
                self.warn(
                    offset,
                    key("secret"),
                    "signs only format = \"json\" webhooks; ignored here".to_owned(),
                );
            }
        }
        let events = self.event_filters(&raw.events, &key("events"));
        let (template, routing_key) = self.channel_keys(raw, i, at, format, &events);
        let min_severity = self
            .choice(
                &raw.min_severity,
                &key("min_severity"),
                &<Severity as strum::IntoEnumIterator>::iter()
                    .map(|s| (s.as_str(), s))
                    .collect::<Vec<_>>(),
                Severity::Info,
            )
            .unwrap_or(Severity::Info);
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
        if secret.is_some() {
            self.warn_if_plain_http(url.as_ref(), raw, &key("url"));
        }
        // A missing template, routing key or server was a problem already said.
        let channel = match format {
            WebhookFormat::Json => Some(Channel::Json { secret }),
            WebhookFormat::Slack => Some(Channel::Slack),
            WebhookFormat::Teams => Some(Channel::Teams),
            WebhookFormat::PagerDuty => {
                routing_key.map(|routing_key| Channel::PagerDuty { routing_key })
            }
            WebhookFormat::Template => template.map(Channel::Template),
            WebhookFormat::Email => email.map(Channel::Email),
        };
        Some(Webhook {
            name: name?,
            url: url?,
            channel: channel?,
            events,
            jobs: raw
                .jobs
                .as_ref()
                .map(|j| j.get_ref().clone())
                .unwrap_or_else(|| vec!["*".into()]),
            min_severity,
            progress_step,
            timeout,
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

    /// The keys of one format: a template and its content type, or PagerDuty's routing
    /// key; refused on the formats they do not belong to.
    fn channel_keys(
        &mut self,
        raw: &RawWebhook,
        i: usize,
        at: usize,
        format: WebhookFormat,
        events: &[String],
    ) -> (Option<WebhookTemplate>, Option<Secret>) {
        let key = |field: &str| format!("webhook[{i}].{field}");
        let start = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.span().start);
        let file_start =
            |v: &Option<Spanned<std::path::PathBuf>>| v.as_ref().map(|v| v.span().start);
        let prefix = format!("webhook[{i}]");
        if format != WebhookFormat::Template {
            let template_only = [
                ("template", start(&raw.template)),
                ("template_file", file_start(&raw.template_file)),
                ("content_type", start(&raw.content_type)),
                (
                    "max_body_bytes",
                    raw.max_body_bytes.as_ref().map(|v| v.span().start),
                ),
            ];
            self.only_for(&template_only, &prefix, "format = \"template\" webhooks");
        }
        if format != WebhookFormat::PagerDuty {
            let pagerduty_only = [
                ("routing_key", start(&raw.routing_key)),
                ("routing_key_file", file_start(&raw.routing_key_file)),
            ];
            self.only_for(&pagerduty_only, &prefix, "format = \"pagerduty\" webhooks");
        }
        match format {
            WebhookFormat::Template => (self.webhook_template(raw, i, at, events), None),
            WebhookFormat::PagerDuty => {
                if raw.routing_key.is_none() && raw.routing_key_file.is_none() {
                    self.problem(
                        at,
                        key("routing_key_file"),
                        "is required for format = \"pagerduty\" (or routing_key): the integration key of the PagerDuty service",
                    );
                    return (None, None);
                }
                let routing_key = self
                    .secret(
                        (&raw.routing_key, key("routing_key")),
                        (&raw.routing_key_file, key("routing_key_file")),
                    )
                    .map(|(text, _, _)| Secret::new(text.into_bytes()));
                (None, routing_key)
            }
            _ => (None, None),
        }
    }

    /// `template` or `template_file`, compiled now so that a syntax error is a config
    /// problem with its file and line, not a failed delivery.
    fn webhook_template(
        &mut self,
        raw: &RawWebhook,
        i: usize,
        at: usize,
        events: &[String],
    ) -> Option<WebhookTemplate> {
        let key = |field: &str| format!("webhook[{i}].{field}");
        let (source, origin) = match (&raw.template, &raw.template_file) {
            (Some(_), Some(file)) => {
                self.problem(
                    file.span().start,
                    key("template_file"),
                    "give template or template_file, not both",
                );
                return None;
            }
            (None, None) => {
                self.problem(
                    at,
                    key("template_file"),
                    "is required for format = \"template\" (or template)",
                );
                return None;
            }
            (Some(inline), None) => (
                inline.get_ref().clone(),
                (inline.span().start, key("template"), None),
            ),
            (None, Some(file)) => {
                let path = self.relative_path(file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(text) if text.len() <= MAX_TEMPLATE_BYTES => {
                        (text, (file.span().start, key("template_file"), Some(path)))
                    }
                    Ok(_) => {
                        self.problem(
                            file.span().start,
                            key("template_file"),
                            format!("{}: larger than {MAX_TEMPLATE_BYTES} bytes", path.display()),
                        );
                        return None;
                    }
                    Err(e) => {
                        self.problem(
                            file.span().start,
                            key("template_file"),
                            format!("{}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
        };
        let (offset, field, path) = origin;
        let mut environment = minijinja::Environment::new();
        environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        environment.set_fuel(Some(crate::payload::TEMPLATE_FUEL));
        // The escaping the built-in formats use, for templates that target the same
        // markups (Discord's Markdown, Google Chat's and Mattermost's `<url|text>`).
        // Missing values (a `to` of job.poll_recovered, a `drive_id` of a job event) are
        // empty text, not a failed alert.
        let text = |value: &minijinja::Value| {
            if value.is_none() || value.is_undefined() {
                String::new()
            } else {
                value.to_string()
            }
        };
        environment.add_filter("markdown", move |value: minijinja::Value| {
            crate::payload::markdown_escaped(&text(&value))
        });
        environment.add_filter("slack", move |value: minijinja::Value| {
            crate::payload::slack_escaped(&text(&value))
        });
        if let Err(e) = environment.add_template_owned("body", source) {
            let place = match (&path, e.line()) {
                (Some(path), Some(line)) => format!("{}:{line}", path.display()),
                (Some(path), None) => path.display().to_string(),
                (None, Some(line)) => format!("line {line} of the template"),
                (None, None) => "the template".to_owned(),
            };
            let detail = e.detail().unwrap_or("syntax error");
            self.problem(offset, field, format!("{place}: {} ({detail})", e.kind()));
            return None;
        }
        let content_type = raw
            .content_type
            .as_ref()
            .map_or_else(|| "application/json".to_owned(), |c| c.get_ref().clone());
        if http::HeaderValue::from_str(&content_type).is_err() {
            let at = raw.content_type.as_ref().map_or(offset, |c| c.span().start);
            self.problem(at, key("content_type"), "is not a valid header value");
            return None;
        }
        let max_body = match &raw.max_body_bytes {
            None => DEFAULT_MAX_BODY,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if (MIN_MAX_BODY..=MAX_MAX_BODY).contains(&n) => n,
                _ => {
                    self.problem(
                        v.span().start,
                        key("max_body_bytes"),
                        format!("must be between {MIN_MAX_BODY} and {MAX_MAX_BODY}"),
                    );
                    return None;
                }
            },
        };
        let rehearsal = rehearse(&environment, max_body, events);
        self.report_rehearsal(&rehearsal, (offset, &field), path.as_deref());
        Some(WebhookTemplate {
            environment: std::sync::Arc::new(environment),
            content_type,
            max_body,
            origin: path,
        })
    }

    /// A rehearsal's failures as problems (every event fails: nothing would ever be
    /// delivered) or warnings (some types fail; a name no event has), with file and line.
    fn report_rehearsal(
        &mut self,
        rehearsal: &Rehearsal,
        (offset, field): (usize, &str),
        path: Option<&std::path::Path>,
    ) {
        let place = |line: Option<usize>| match (path, line) {
            (Some(path), Some(line)) => format!("{}:{line}", path.display()),
            (Some(path), None) => path.display().to_string(),
            (None, Some(line)) => format!("line {line} of the template"),
            (None, None) => "the template".to_owned(),
        };
        let always = rehearsal.fails_always();
        for failure in &rehearsal.failures {
            let types: Vec<&str> = failure.types.iter().map(|t| t.as_str()).collect();
            let what = if always {
                "no alert of this webhook would be delivered".to_owned()
            } else {
                format!("alerts of type {} would not be delivered", types.join(", "))
            };
            let message = format!(
                "{}: {} rendering a sample {} event: {what}",
                place(failure.line),
                failure.message,
                types.first().copied().unwrap_or("-"),
            );
            if always {
                self.problem(offset, field, message);
            } else {
                self.warn(offset, field.to_owned(), message);
            }
        }
        for (name, line) in &rehearsal.unknown {
            self.problem(
                offset,
                field,
                format!(
                    "{}: `{name}` is no variable of any event (a typo? the variables: {})",
                    place(*line),
                    VARIABLES.join(", ")
                ),
            );
        }
    }

    /// `format = "email"`: `url = "smtp://host[:587]"` (STARTTLS, required) or
    /// `"smtps://host[:465]"` (implicit TLS), `from`, `to`, optional `username` with
    /// `password`/`password_file`, `ca_certificate`, `digest_every`.
    fn email_settings(
        &mut self,
        raw: &RawWebhook,
        i: usize,
        at: usize,
        timeout: std::time::Duration,
    ) -> Option<(WebhookUrl, EmailSettings)> {
        let key = |field: &str| format!("webhook[{i}].{field}");
        let value = self.required(&raw.url, at, &key("url"))?;
        let parsed = value.get_ref().parse::<http::Uri>().ok();
        let (implicit_tls, default_port) = match parsed.as_ref().and_then(|u| u.scheme_str()) {
            Some("smtp") => (false, 587),
            Some("smtps") => (true, 465),
            _ => {
                self.problem(
                    value.span().start,
                    key("url"),
                    "is not smtp://HOST[:PORT] (STARTTLS) or smtps://HOST[:PORT] (implicit TLS); \
                     mail is never sent in clear",
                );
                return None;
            }
        };
        let uri = parsed?;
        let host = uri.host().filter(|h| !h.is_empty())?.to_owned();
        let port = uri.port_u16().unwrap_or(default_port);
        let from = self
            .required(&raw.from, at, &key("from"))
            .map(|f| f.get_ref().clone());
        let addressed = |text: &str| text.parse::<lettre::message::Mailbox>().is_ok();
        if let Some(from) = raw.from.as_ref().filter(|f| !addressed(f.get_ref())) {
            self.problem(
                from.span().start,
                key("from"),
                format!("{:?} is not an e-mail address", from.get_ref()),
            );
        }
        let to = match &raw.to {
            Some(list) if !list.get_ref().is_empty() => {
                for address in list.get_ref().iter().filter(|a| !addressed(a)) {
                    self.problem(
                        list.span().start,
                        key("to"),
                        format!("{address:?} is not an e-mail address"),
                    );
                }
                Some(list.get_ref().clone())
            }
            _ => {
                self.problem(
                    at,
                    key("to"),
                    "is required: a list of one or more addresses",
                );
                None
            }
        };
        let credentials = match (
            &raw.username,
            raw.password.is_some() || raw.password_file.is_some(),
        ) {
            (None, false) => Some(None),
            (Some(user), true) => self
                .secret(
                    (&raw.password, key("password")),
                    (&raw.password_file, key("password_file")),
                )
                .map(|(text, _, _)| Some((user.get_ref().clone(), Secret::new(text.into_bytes())))),
            (Some(user), false) => {
                self.problem(
                    user.span().start,
                    key("password_file"),
                    "is required with username (or password)",
                );
                None
            }
            (None, true) => {
                self.problem(at, key("username"), "is required with a password");
                None
            }
        };
        let extra_roots = self.extra_roots(&raw.ca_certificate, &key("ca_certificate"));
        let digest_every = raw.digest_every.as_ref().map(|_| {
            self.duration(
                &raw.digest_every,
                &key("digest_every"),
                std::time::Duration::from_secs(3600),
            )
        });
        let settings = EmailSettings {
            host,
            port,
            implicit_tls,
            from: from?,
            to: to?,
            credentials: credentials?,
            extra_roots: extra_roots?,
            digest_every,
            timeout,
        };
        Some((WebhookUrl::new(uri), settings))
    }

    /// An `http://` or `https://` URL with a host and a valid port, and no credentials
    /// in it. A URL is never echoed whole: its path can be its credential (Slack's and
    /// Teams' are), so messages show scheme, host and port only.
    fn webhook_url(
        &mut self,
        value: &Option<Spanned<String>>,
        at: usize,
        key: &str,
    ) -> Option<WebhookUrl> {
        let value = self.required(value, at, key)?;
        let at = value.span().start;
        let Ok(uri) = value.get_ref().parse::<http::Uri>() else {
            self.problem(
                at,
                key,
                "is not a URL (not shown: a URL's path can be its credential)",
            );
            return None;
        };
        let shown = WebhookUrl::redact(&uri);
        let authority = uri.authority().map_or("", |a| a.as_str());
        let message = if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none()
        {
            format!("{shown:?} is not an http:// or https:// URL")
        } else if authority.contains('@') {
            "has user:password@ in it; iewatch sends no URL credentials (authenticate the \
             receiver by the signature of `secret`)"
                .to_owned()
        } else if !port_is_valid(authority) {
            format!("{shown:?}: the port must be a number from 1 to 65535")
        } else {
            return Some(WebhookUrl::new(uri));
        };
        self.problem(at, key, message);
        None
    }

    /// A signed webhook over plain http:// works, but its alerts can be read on the way.
    fn warn_if_plain_http(&mut self, url: Option<&WebhookUrl>, raw: &RawWebhook, key: &str) {
        let (Some(url), Some(raw_url)) = (url, &raw.url) else {
            return;
        };
        if url.uri().scheme_str() == Some("http") {
            self.warn(
                raw_url.span().start,
                key.to_owned(),
                "plain http:// with a signing secret: the alerts travel unencrypted; use \
                 https:// beyond a trusted network"
                    .to_owned(),
            );
        }
    }

    /// The signing key, inline or from a file; one that does not decode is reported
    /// without echoing it.
    fn webhook_secret(&mut self, raw: &RawWebhook, i: usize) -> Option<Secret> {
        let key = |field: &str| format!("webhook[{i}].{field}");
        let (text, at, key) = self.secret(
            (&raw.secret, key("secret")),
            (&raw.secret_file, key("secret_file")),
        )?;
        match decode_webhook_secret(&text) {
            Some(bytes) => Some(Secret::new(bytes)),
            None => {
                self.problem(at, key, "is not a whsec_<base64> secret (value not shown)");
                None
            }
        }
    }

    /// Event types, prefixes like `drive.*`, or `*` (the default).
    fn event_filters(&mut self, value: &Option<Spanned<Vec<String>>>, key: &str) -> Vec<String> {
        let Some(list) = value else {
            return vec!["*".to_owned()];
        };
        for event in list.get_ref() {
            if !crate::events::is_known_filter(event) {
                self.problem(
                    list.span().start,
                    key,
                    format!("{event:?} is not an event type, a prefix like \"drive.*\", or \"*\""),
                );
            }
        }
        list.get_ref().clone()
    }
}

/// True when the authority names no port, or one from 1 to 65535 (`http::Uri` accepts
/// `:99999` and then reports no port, which would send to port 80).
fn port_is_valid(authority: &str) -> bool {
    let host_end = authority.rfind(']').unwrap_or(0);
    match authority[host_end..].rfind(':') {
        None => true,
        Some(colon) => authority[host_end + colon + 1..]
            .parse::<u16>()
            .is_ok_and(|port| port > 0),
    }
}
