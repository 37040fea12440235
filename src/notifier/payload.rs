//! What a webhook receives: the Standard Webhooks JSON body and signature, or a Slack
//! `{"text": ...}` line. Built from the outbox row alone; never carries a BitLocker key
//! (none is ever in an event).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::store::{parse_timestamp, EventRecord};

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
        data.insert("drive_id".into(), drive.clone().into());
    }
    match event.event_type.as_str() {
        "job.poll_failing" | "job.not_found" => {
            data.insert("error".into(), event.to.clone().into());
        }
        "job.poll_recovered" | "job.cancel_requested" => {}
        _ => {
            data.insert("from".into(), event.from.clone().into());
            data.insert("to".into(), event.to.clone().into());
        }
    }
    if let Some(extra) = event.details.as_ref().and_then(|d| d.get("details")) {
        let key = if event.event_type == "job.first_seen" {
            "summary"
        } else {
            "drive"
        };
        data.insert(key.into(), extra.clone());
    }
    data.insert("severity".into(), event.severity.clone().into());
    let body = json!({
        "type": event.event_type,
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
    let marker = match event.severity.as_str() {
        "error" => ":red_circle: *ERROR*",
        "warning" => ":warning: *warning*",
        _ => ":large_blue_circle:",
    };
    let subject = match &event.drive_id {
        Some(drive) => format!("{}/{} drive {drive}", event.account, event.job),
        None => format!("{}/{}", event.account, event.job),
    };
    let text = format!("{marker} {subject}: {}", describe(event));
    serde_json::to_vec(&json!({ "text": text })).unwrap_or_default()
}

/// The change in words: `copy status InProgress → CompletedWithErrors`.
pub fn describe(event: &EventRecord) -> String {
    describe_change(
        &event.event_type,
        event.from.as_deref(),
        event.to.as_deref(),
    )
}

/// The change in words, from its parts (shared with `history`).
pub fn describe_change(event_type: &str, from: Option<&str>, to: Option<&str>) -> String {
    let percent = |v: Option<&str>| v.map_or("-".to_owned(), |p| format!("{p}%"));
    let (from_percent, to_percent) = (percent(from), percent(to));
    let from = from.unwrap_or("-");
    let to = to.unwrap_or("-");
    match event_type {
        "job.first_seen" => format!("first seen, state {to}"),
        "job.state_changed" => format!("state {from} → {to}"),
        "job.progress" => format!("progress {from_percent} → {to_percent}"),
        "job.cancel_requested" => "cancellation requested".into(),
        "drive.added" => format!("drive added, state {to}"),
        "drive.removed" => format!("drive removed (was {from})"),
        "drive.state_changed" => format!("state {from} → {to}"),
        "drive.copy_status_changed" => format!("copy status {from} → {to}"),
        "drive.progress" => format!("progress {from_percent} → {to_percent}"),
        "job.poll_failing" => format!("polls failing: {to}"),
        "job.poll_recovered" => "polls recovered".into(),
        "job.not_found" => format!("not found: {to}"),
        other => format!("{other} {from} → {to}"),
    }
}

/// Parses a JSON body back (tests, the demo's sink).
pub fn parse(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok()
}
