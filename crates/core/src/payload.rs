//! What a webhook receives: the Standard Webhooks JSON body and signature, or a Slack
//! `{"text": ...}` line. Built from the outbox row alone; never carries a BitLocker key
//! (none is ever in an event).

pub mod rehearsal;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::{
    events::{EventRecord, EventType, PayloadShape},
    model::Severity,
};

/// The stable `webhook-id` of an event: the same for every retry, restart and failover,
/// and never given to another event, even after a restore from an older backup rewinds
/// the event ids: the moment the event was recorded (its digits, to the millisecond)
/// follows the id, and a rewound id is recorded at another moment.
pub fn webhook_id(event: &EventRecord) -> String {
    let recorded: String = event
        .observed_at
        .sql_text()
        .chars()
        .filter(char::is_ascii_digit)
        .take(17)
        .collect();
    format!("iewatch-evt-{}-{recorded}", event.id)
}

/// The Standard Webhooks body (the README's "Events and webhooks").
pub fn json_body(event: &EventRecord) -> Vec<u8> {
    let mut job = event
        .details
        .as_ref()
        .and_then(|d| d.get("job"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(object) = job.as_object_mut() {
        object.insert("account".into(), event.account.clone().into());
        object.insert("name".into(), event.job.clone().into());
    }
    let mut data = Map::new();
    data.insert("job".into(), job);
    if let Some(drive) = &event.drive_id {
        data.insert("drive_id".into(), drive.as_str().into());
    }
    match event.event_type.payload_shape() {
        PayloadShape::Error => {
            data.insert("error".into(), event.to.clone().into());
        }
        PayloadShape::Bare => {}
        PayloadShape::Fields => {
            let fields = event.details.as_ref().and_then(|d| d.get("details"));
            for (key, value) in fields.and_then(Value::as_object).into_iter().flatten() {
                data.insert(key.clone(), value.clone());
            }
        }
        PayloadShape::Change => {
            data.insert("from".into(), event.from.clone().into());
            data.insert("to".into(), event.to.clone().into());
        }
    }
    let extra = event.details.as_ref().and_then(|d| d.get("details"));
    match (extra, event.event_type.payload_shape()) {
        (_, PayloadShape::Fields) | (None, _) => {}
        // A progress event's extra is its ETA, a field of its own.
        (Some(extra), _) if event.event_type.is_progress() => {
            if let Some(eta) = extra.get("eta") {
                data.insert("eta".into(), eta.clone());
            }
        }
        (Some(extra), _) => {
            data.insert(event.event_type.details_key().into(), extra.clone());
        }
    }
    data.insert("severity".into(), event.severity.as_str().into());
    let body = json!({
        "type": event.event_type.as_str(),
        "timestamp": event.observed_at.rfc3339_millis(),
        "data": data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A string from outside for Slack's (and Mattermost's) `text`: `&`, `<` and `>` are the
/// three characters its markup gives meaning to (`<!channel>` pages everyone,
/// `<https://x|label>` hides a link target), escaped as Slack documents; line breaks
/// and other control characters become spaces, so one event is one line.
pub fn slack_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A string from outside for an Adaptive Card TextBlock or fact, which Teams renders as
/// Markdown: the characters that make emphasis, links, code and HTML are
/// backslash-escaped everywhere (so `[x](https://evil)` stays text, not a link), and a
/// list or heading marker at the start; control characters become spaces.
pub fn markdown_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    for (i, c) in text.chars().enumerate() {
        let list_marker = (i == 0 && matches!(c, '-' | '+'))
            || (i == digits && digits > 0 && matches!(c, '.' | ')'));
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '!' | '|' | '~' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            _ if list_marker => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One readable line for Slack-compatible endpoints.
pub fn slack_body(event: &EventRecord) -> Vec<u8> {
    let marker = match event.severity {
        Severity::Error => ":red_circle: *ERROR*",
        Severity::Warning => ":warning: *warning*",
        Severity::Info => ":large_blue_circle:",
    };
    let subject = match &event.drive_id {
        Some(drive) => format!("{}/{} drive {drive}", event.account, event.job),
        None => format!("{}/{}", event.account, event.job),
    };
    let text = format!(
        "{marker} {}",
        slack_escaped(&format!("{subject}: {}", event.describe()))
    );
    serde_json::to_vec(&json!({ "text": text })).unwrap_or_default()
}

/// What a `drive.errors` event adds to a message, as (title, text) pairs: the counts by
/// code with their meaning, the first failed entries, and the log (or why it was not
/// read). Empty for other events. Every channel shows these.
pub fn error_facts(event: &EventRecord) -> Vec<(String, String)> {
    if event.event_type != EventType::DriveErrors {
        return Vec::new();
    }
    let Some(fields) = event.details.as_ref().and_then(|d| d.get("details")) else {
        return Vec::new();
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut facts = Vec::new();
    if let Some(error) = text(fields, "error") {
        facts.push(("Not read".to_owned(), error));
    }
    for total in fields
        .get("totals")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(8)
    {
        let count = total.get("count").and_then(Value::as_u64).unwrap_or(0);
        let code = text(total, "code").unwrap_or_default();
        let line = match text(total, "meaning") {
            Some(meaning) => format!("{count} × {code}: {meaning}"),
            None => format!("{count} × {code}"),
        };
        facts.push(("Failed".to_owned(), line));
    }
    for entry in fields
        .get("first")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(5)
    {
        let path = text(entry, "file_path")
            .or_else(|| text(entry, "path"))
            .unwrap_or_default();
        let code = text(entry, "code").unwrap_or_default();
        let line = match text(entry, "detail") {
            Some(detail) => format!("{path} ({code}: {detail})"),
            None => format!("{path} ({code})"),
        };
        facts.push(("File".to_owned(), line));
    }
    if let Some(log) = text(fields, "log") {
        facts.push(("Log".to_owned(), log));
    }
    facts
}

/// Parses a JSON body back (tests, the demo's sink).
pub fn parse(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// The Adaptive Card version the Teams body uses (Teams renders up to 1.5).
pub const ADAPTIVE_CARD_VERSION: &str = "1.4";

/// A Microsoft Teams Workflows message ("when a webhook request is received") carrying
/// an Adaptive Card: the change as its title in the severity's colour, the job's facts,
/// and a link when the event has one (a carrier's tracking page).
pub fn teams_body(event: &EventRecord) -> Vec<u8> {
    let color = match event.severity {
        Severity::Error => "Attention",
        Severity::Warning => "Warning",
        Severity::Info => "Default",
    };
    let job = event.details.as_ref().and_then(|d| d.get("job"));
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(markdown_escaped(s)),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let job_name = markdown_escaped(&format!("{}/{}", event.account, event.job));
    let mut facts = vec![json!({"title": "Job", "value": job_name})];
    if let Some(drive) = &event.drive_id {
        facts.push(json!({"title": "Drive", "value": markdown_escaped(drive.as_str())}));
    }
    for (title, key) in [("State", "state"), ("Type", "type"), ("SKU", "sku")] {
        if let Some(value) = text(job.and_then(|j| j.get(key))) {
            facts.push(json!({"title": title, "value": value}));
        }
    }
    if let Some(percent) = text(job.and_then(|j| j.get("percent_complete"))) {
        facts.push(json!({"title": "Progress", "value": format!("{percent}%")}));
    }
    for (title, value) in error_facts(event) {
        facts.push(json!({"title": title, "value": markdown_escaped(&value)}));
    }
    facts.push(json!({"title": "Severity", "value": event.severity.as_str()}));
    facts.push(json!({"title": "Observed", "value": event.observed_at.rfc3339_millis()}));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "body": [
            {"type": "TextBlock", "text": format!("{job_name}: {}", markdown_escaped(&event.describe())),
             "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
            {"type": "TextBlock", "text": event.event_type.as_str(), "isSubtle": true, "spacing": "None"},
            {"type": "FactSet", "facts": facts},
        ],
    });
    let link = event
        .details
        .as_ref()
        .and_then(|d| d.pointer("/details/url"))
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("https://"));
    if let Some(url) = link {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Track the package", "url": url}]);
    }
    let message = json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    });
    serde_json::to_vec(&message).unwrap_or_default()
}

/// Most a template may render unless its webhook says otherwise (`max_body_bytes`):
/// past it the delivery fails with a clear error rather than POSTing megabytes.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// Most work one render may do (minijinja's fuel: about one unit per instruction), so
/// that a template looping for long fails instead of burning a core; an ordinary alert
/// template uses a few hundred.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Why a template gave no body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderError {
    /// The template's line, when known.
    pub line: Option<usize>,
    /// What went wrong.
    pub message: String,
}

/// The body `environment`'s template `body` renders for `event`, at most `max_body`
/// bytes.
///
/// # Errors
/// The render failed, or gave more than `max_body` bytes.
pub fn render(
    environment: &minijinja::Environment<'static>,
    max_body: usize,
    event: &EventRecord,
) -> Result<Vec<u8>, RenderError> {
    let standard: Value = serde_json::from_slice(&json_body(event)).unwrap_or_default();
    let context = json!({
        "id": webhook_id(event),
        "type": event.event_type.as_str(),
        "severity": event.severity.as_str(),
        "account": event.account,
        "job": event.job,
        "drive_id": event.drive_id,
        "from": event.from,
        "to": event.to,
        "text": event.describe(),
        "timestamp": event.observed_at.rfc3339_millis(),
        "data": standard["data"],
    });
    let failed = |e: minijinja::Error| RenderError {
        line: e.line(),
        message: match e.detail() {
            Some(detail) => format!("{} ({detail})", e.kind()),
            None => e.kind().to_string(),
        },
    };
    let body = environment
        .get_template("body")
        .and_then(|t| t.render(minijinja::Value::from_serialize(&context)))
        .map_err(failed)?;
    if body.len() > max_body {
        return Err(RenderError {
            line: None,
            message: format!("the body is longer than max_body_bytes: at most {max_body} are sent"),
        });
    }
    Ok(body.into_bytes())
}
