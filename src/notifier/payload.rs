//! What a webhook receives: the Standard Webhooks JSON body and signature, or a Slack
//! `{"text": ...}` line. Built from the outbox row alone; never carries a BitLocker key
//! (none is ever in an event).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::{
    events::PayloadShape,
    model::Severity,
    store::{parse_timestamp, EventRecord},
};

/// The stable `webhook-id` of an event: the same for every retry of it.
pub fn webhook_id(event: &EventRecord) -> String {
    format!("iewatch-evt-{}", event.id)
}

/// The Standard Webhooks body of DESIGN.md.
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
        "timestamp": rfc3339(&event.observed_at),
        "data": data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn rfc3339(sqlite_time: &str) -> String {
    parse_timestamp(sqlite_time)
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_else(|| sqlite_time.to_owned())
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
    let text = format!("{marker} {subject}: {}", event.describe());
    serde_json::to_vec(&json!({ "text": text })).unwrap_or_default()
}

/// Parses a JSON body back (tests, the demo's sink).
pub fn parse(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}
