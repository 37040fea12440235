//! `[[webhook]]`: where alerts go, in which format, signed with which key, and which
//! events and jobs each wants.

use toml::Spanned;

use super::{
    check::Checker, decode_webhook_secret, raw::RawWebhook, Secret, Webhook, WebhookFormat,
    DEFAULT_GIVE_UP_AFTER, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, DEFAULT_WEBHOOK_TIMEOUT,
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
        let name = self.required_text(&raw.name, at, &key("name"));
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

    /// An `http://` or `https://` URL with a host.
    fn webhook_url(
        &mut self,
        value: &Option<Spanned<String>>,
        at: usize,
        key: &str,
    ) -> Option<http::Uri> {
        let value = self.required(value, at, key)?;
        match value.get_ref().parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() =>
            {
                Some(uri)
            }
            _ => {
                let message = format!("{:?} is not an http:// or https:// URL", value.get_ref());
                self.problem(value.span().start, key, message);
                None
            }
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
