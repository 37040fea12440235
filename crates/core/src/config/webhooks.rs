//! `[[webhook]]`: where alerts go, in which format, signed with which key, and which
//! events and jobs each wants.

use toml::Spanned;

use super::{
    check::Checker, decode_webhook_secret, raw::RawWebhook, Channel, EmailSettings, Secret,
    Webhook, WebhookFormat, WebhookTemplate, WebhookUrl, DEFAULT_GIVE_UP_AFTER,
    DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, DEFAULT_WEBHOOK_TIMEOUT,
};
use crate::model::Severity;

/// Where PagerDuty's Events API v2 takes events.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

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
        let timeout = self.duration(&raw.timeout, &key("timeout"), DEFAULT_WEBHOOK_TIMEOUT);
        let (url, email) = self.webhook_address(raw, (i, at), format, timeout);
        let secret = self.signing_secret(raw, i, format);
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
        let channel = channel_of(format, secret, (template, routing_key, email));
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

    /// Where a webhook sends: PagerDuty's one address, an SMTP server with its settings,
    /// or the receiver's URL; the e-mail keys are refused on other formats.
    fn webhook_address(
        &mut self,
        raw: &RawWebhook,
        (i, at): (usize, usize),
        format: WebhookFormat,
        timeout: std::time::Duration,
    ) -> (Option<WebhookUrl>, Option<EmailSettings>) {
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
        match (&raw.url, format) {
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
            _ => (
                self.webhook_url(&raw.url, at, &format!("webhook[{i}].url")),
                None,
            ),
        }
    }

    /// `secret` or `secret_file`: it signs Standard Webhooks only. Older configs may
    /// carry one on another channel, where it never did anything: said, not refused.
    fn signing_secret(
        &mut self,
        raw: &RawWebhook,
        i: usize,
        format: WebhookFormat,
    ) -> Option<Secret> {
        let secret = self.webhook_secret(raw, i);
        if format != WebhookFormat::Json {
            let given = raw
                .secret
                .as_ref()
                .map(|v| v.span().start)
                .or(raw.secret_file.as_ref().map(|v| v.span().start));
            if let Some(offset) = given {
                self.warn(
                    offset,
                    format!("webhook[{i}].secret"),
                    "signs only format = \"json\" webhooks; ignored here".to_owned(),
                );
            }
        }
        secret
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

/// The channel the checked keys make; None when its template, routing key or server was
/// missing or wrong (a problem already said).
fn channel_of(
    format: WebhookFormat,
    secret: Option<Secret>,
    (template, routing_key, email): (
        Option<WebhookTemplate>,
        Option<Secret>,
        Option<EmailSettings>,
    ),
) -> Option<Channel> {
    match format {
        WebhookFormat::Json => Some(Channel::Json { secret }),
        WebhookFormat::Slack => Some(Channel::Slack),
        WebhookFormat::Teams => Some(Channel::Teams),
        WebhookFormat::PagerDuty => {
            routing_key.map(|routing_key| Channel::PagerDuty { routing_key })
        }
        WebhookFormat::Template => template.map(Channel::Template),
        WebhookFormat::Email => email.map(Channel::Email),
    }
}
