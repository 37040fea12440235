//! `[[webhook]]`: where alerts go, in which format, signed with which key, and which
//! events and jobs each wants.

use toml::Spanned;

use super::{
    check::Checker, decode_webhook_secret, raw::RawWebhook, Secret, Webhook, WebhookFormat,
    WebhookUrl, DEFAULT_GIVE_UP_AFTER, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    DEFAULT_WEBHOOK_TIMEOUT,
};
use crate::model::Severity;

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
        let url = self.webhook_url(&raw.url, at, &key("url"));
        let secret = self.webhook_secret(raw, i);
        let format = self
            .choice(
                &raw.format,
                &key("format"),
                &[
                    ("json", WebhookFormat::Json),
                    ("slack", WebhookFormat::Slack),
                ],
                WebhookFormat::Json,
            )
            .unwrap_or(WebhookFormat::Json);
        let events = self.event_filters(&raw.events, &key("events"));
        let min_severity = self
            .choice(
                &raw.min_severity,
                &key("min_severity"),
                &Severity::ALL.map(|s| (s.as_str(), s)),
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
