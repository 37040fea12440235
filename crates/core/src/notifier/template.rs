//! A template channel's body: the webhook's own template rendered for one event, off the
//! async runtime and within its fuel and size cap (see [`crate::payload::render`]).

use crate::{config::WebhookTemplate, events::EventRecord, payload::render};

/// [`template_body`] off the async runtime's workers (a blocking thread), so that a
/// slow template holds up no poll, page or other lane; its fuel bounds the work and
/// the caller's deadline the wait.
///
/// # Errors
/// As [`template_body`]; also a render that panicked.
pub(super) async fn render_template(
    template: &WebhookTemplate,
    event: &EventRecord,
) -> Result<Vec<u8>, String> {
    let (template, event) = (template.clone(), event.clone());
    tokio::task::spawn_blocking(move || template_body(&template, &event))
        .await
        .map_err(|e| format!("template: the render failed: {e}"))?
}

/// A body from the webhook's own template. The template sees the event's fields
/// (`type`, `severity`, `account`, `job`, `drive_id`, `from`, `to`, `text`, `timestamp`,
/// `id`) and `data`, the Standard Webhooks payload's `data`; `tojson` escapes a value for
/// JSON bodies.
///
/// # Errors
/// The template failed at render time (a strict-undefined variable, a filter error, out
/// of fuel) or rendered more than its cap; the error names the file and line.
pub(super) fn template_body(
    template: &WebhookTemplate,
    event: &EventRecord,
) -> Result<Vec<u8>, String> {
    render(&template.environment, template.max_body, event).map_err(|e| {
        let place = match (&template.origin, e.line) {
            (Some(path), Some(line)) => format!(" {}:{line}", path.display()),
            (Some(path), None) => format!(" {}", path.display()),
            (None, Some(line)) => format!(" line {line}"),
            (None, None) => String::new(),
        };
        format!("template{place}: {}", e.message)
    })
}
