//! A template webhook's template: read (inline or from a file), compiled with the
//! escaping filters and fuel of [`crate::payload`], and rehearsed against a sample event of
//! every type it takes, so that a mistake is a config problem with its file and line.

use super::{check::Checker, raw::RawWebhook, WebhookTemplate};
use crate::payload::{
    rehearsal::{rehearse, Rehearsal, VARIABLES},
    DEFAULT_MAX_BODY,
};

/// Largest body template read.
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The bounds of `max_body_bytes`: a body of a few words, up to what a chat or paging
/// service could take.
const MIN_MAX_BODY: usize = 1024;
const MAX_MAX_BODY: usize = 16 * 1024 * 1024;

impl Checker<'_> {
    /// `template` or `template_file`, compiled now so that a syntax error is a config
    /// problem with its file and line, not a failed delivery.
    // Long: read, compile, content type, size cap and rehearsal, each a problem with its
    // own key and line; they are checked in order because each needs the one before.
    pub(super) fn webhook_template(
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
}
