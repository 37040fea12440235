//! The events of the README's table ("Events and webhooks"): their types, their content, and the filter language
//! webhooks use to pick them. Produced by the change detector and by `decide`, written
//! by the store, rendered by the notifier and the reports. This is the one place where
//! an event type or a severity is spelled as text: everywhere else they are enums.

use std::fmt;

use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator as _;

use crate::model::{DriveId, Severity};

/// Every event type, in the README's order.
// The dotted names are spelled here once: strum derives `as_str`, `parse` and the list
// (`EventType::iter()`); serde and SQL go through them (`spelled_as_text!`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::EnumString,
)]
pub enum EventType {
    /// First successful poll of a job.
    #[strum(to_string = "job.first_seen")]
    JobFirstSeen,
    /// `Properties.State` changed.
    #[strum(to_string = "job.state_changed")]
    JobStateChanged,
    /// `Properties.PercentComplete` changed.
    #[strum(to_string = "job.progress")]
    JobProgress,
    /// `CancelRequested` became true.
    #[strum(to_string = "job.cancel_requested")]
    JobCancelRequested,
    /// A DriveId appeared in `DriveList`.
    #[strum(to_string = "drive.added")]
    DriveAdded,
    /// A DriveId left `DriveList`.
    #[strum(to_string = "drive.removed")]
    DriveRemoved,
    /// A drive's `State` changed.
    #[strum(to_string = "drive.state_changed")]
    DriveStateChanged,
    /// A drive's `CopyStatus` changed.
    #[strum(to_string = "drive.copy_status_changed")]
    DriveCopyStatusChanged,
    /// A drive's `PercentComplete` changed.
    #[strum(to_string = "drive.progress")]
    DriveProgress,
    /// Polls have failed `failure_threshold` times in a row.
    #[strum(to_string = "job.poll_failing")]
    JobPollFailing,
    /// A poll succeeded after `job.poll_failing`.
    #[strum(to_string = "job.poll_recovered")]
    JobPollRecovered,
    /// The service answered 404.
    #[strum(to_string = "job.not_found")]
    JobNotFound,
    /// A carrier or tracking number appeared or changed.
    #[strum(to_string = "job.shipping_updated")]
    JobShippingUpdated,
    /// Data Box: a stage waits for the customer.
    #[strum(to_string = "job.action_required")]
    JobActionRequired,
    /// Data Box: a delay notice became active.
    #[strum(to_string = "job.delayed")]
    JobDelayed,
    /// Data Box: an active delay notice was resolved.
    #[strum(to_string = "job.delay_resolved")]
    JobDelayResolved,
    /// A service clock is about to run out.
    #[strum(to_string = "job.deadline")]
    JobDeadline,
    /// The job stayed in a state longer than the state allows.
    #[strum(to_string = "job.stalled")]
    JobStalled,
    /// A stalled job moved on.
    #[strum(to_string = "job.resumed")]
    JobResumed,
    /// A copying drive's percent did not move for the threshold.
    #[strum(to_string = "drive.stalled")]
    DriveStalled,
    /// A stalled drive moved again (or stopped copying).
    #[strum(to_string = "drive.resumed")]
    DriveResumed,
    /// A drive (Data Box: a destination account) ended with errors: what its error log
    /// says failed, or why the log could not be read.
    #[strum(to_string = "drive.errors")]
    DriveErrors,
    /// An error condition still holds.
    #[strum(to_string = "job.reminder")]
    JobReminder,
    /// Someone ran `iewatch ack` on the job.
    #[strum(to_string = "job.acknowledged")]
    JobAcknowledged,
    /// What iewatch remembered of the job could not be read (a hand edit, a damaged
    /// disk) and was reset to a safe value; the job is watched on.
    #[strum(to_string = "job.memory_reset")]
    JobMemoryReset,
}

/// What a webhook payload's `data` carries beside the job, by event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadShape {
    /// `from` and `to`.
    Change,
    /// `error` (the event's `to`).
    Error,
    /// Nothing more.
    Bare,
    /// The fields of the event's details object, each under its own key.
    Fields,
}

impl EventType {
    /// The dotted name used in the database, payloads and filters.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses the dotted name.
    pub fn parse(name: &str) -> Option<EventType> {
        name.parse().ok()
    }

    /// Progress events are the ones `progress_step` thins out.
    pub fn is_progress(self) -> bool {
        matches!(self, EventType::JobProgress | EventType::DriveProgress)
    }

    /// What the payload carries beside the job.
    pub fn payload_shape(self) -> PayloadShape {
        match self {
            EventType::JobPollFailing | EventType::JobNotFound => PayloadShape::Error,
            EventType::JobPollRecovered | EventType::JobCancelRequested => PayloadShape::Bare,
            EventType::JobShippingUpdated
            | EventType::JobActionRequired
            | EventType::JobDelayed
            | EventType::JobDelayResolved
            | EventType::JobDeadline
            | EventType::JobStalled
            | EventType::JobResumed
            | EventType::DriveStalled
            | EventType::DriveResumed
            | EventType::DriveErrors
            | EventType::JobReminder
            | EventType::JobAcknowledged
            | EventType::JobMemoryReset => PayloadShape::Fields,
            EventType::JobFirstSeen
            | EventType::JobStateChanged
            | EventType::JobProgress
            | EventType::DriveAdded
            | EventType::DriveRemoved
            | EventType::DriveStateChanged
            | EventType::DriveCopyStatusChanged
            | EventType::DriveProgress => PayloadShape::Change,
        }
    }

    /// The change in words, from its stored parts: `copy status InProgress →
    /// CompletedWithErrors`. Used by `history`, Slack payloads and the log.
    pub fn describe(self, from: Option<&str>, to: Option<&str>) -> String {
        let percent = |v: Option<&str>| v.map_or("-".to_owned(), |p| format!("{p}%"));
        let (from_percent, to_percent) = (percent(from), percent(to));
        let from = from.unwrap_or("-");
        let to = to.unwrap_or("-");
        match self {
            EventType::JobFirstSeen => format!("first seen, state {to}"),
            EventType::JobStateChanged | EventType::DriveStateChanged => {
                format!("state {from} → {to}")
            }
            EventType::JobProgress | EventType::DriveProgress => {
                format!("progress {from_percent} → {to_percent}")
            }
            EventType::JobCancelRequested => "cancellation requested".into(),
            EventType::DriveAdded if to == "-" => "drive added".into(),
            EventType::DriveAdded => format!("drive added ({to})"),
            EventType::DriveRemoved => format!("drive removed (was {from})"),
            EventType::DriveCopyStatusChanged => format!("copy status {from} → {to}"),
            EventType::JobPollFailing => format!("polls failing: {to}"),
            EventType::JobPollRecovered => "polls recovered".into(),
            EventType::JobNotFound => format!("not found: {to}"),
            EventType::JobShippingUpdated => format!("shipping: {to}"),
            EventType::JobActionRequired => format!("action required: {to}"),
            EventType::JobDelayed => format!("delayed: {to}"),
            EventType::JobDelayResolved => format!("delay resolved: {to}"),
            EventType::JobDeadline => format!("deadline: {to}"),
            EventType::JobStalled | EventType::DriveStalled => format!("stalled: {to}"),
            EventType::JobResumed | EventType::DriveResumed => format!("resumed: {to}"),
            EventType::DriveErrors => format!("errors: {to}"),
            EventType::JobReminder => format!("reminder: {to}"),
            EventType::JobAcknowledged => format!("acknowledged: {to}"),
            EventType::JobMemoryReset => format!("memory reset: {to}"),
        }
    }

    /// The key under which a payload carries the event's `details` extra.
    pub fn details_key(self) -> &'static str {
        match self {
            EventType::JobFirstSeen => "summary",
            _ => "drive",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stores and serialises enums as the text they are spelled as (their `as_str`), and
/// refuses unknown text on the way back with an error rather than a panic (a hand-edited
/// database or a payload is outside input).
macro_rules! spelled_as_text {
    ($name:ty, $parse:expr, $what:literal) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
                let parse: fn(&str) -> Option<$name> = $parse;
                parse(&text)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown {} {text:?}", $what)))
            }
        }
        impl sqlx::Type<sqlx::Any> for $name {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }
            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }
        impl<'q> sqlx::Encode<'q, sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                args: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Any>>::encode(self.as_str(), args)
            }
        }
        impl<'r> sqlx::Decode<'r, sqlx::Any> for $name {
            fn decode(
                value: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
                let parse: fn(&str) -> Option<$name> = $parse;
                parse(text).ok_or_else(|| format!("unknown {} {text:?}", $what).into())
            }
        }
    };
}

spelled_as_text!(EventType, EventType::parse, "event type");
spelled_as_text!(Severity, Severity::parse, "severity");

/// An event's old or new value, typed until it is rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeValue {
    /// A state, copy status, or an error message.
    Text(String),
    /// A percentage, as the service sent it.
    Percent(i64),
    /// A flag such as `CancelRequested`.
    Flag(bool),
}

/// The most of an event's `from` or `to` the store keeps, in bytes; a longer value (a
/// service's error message can be as long as its body) keeps its first part and ends in
/// `…`. With the rest of an event's summary it fits one PostgreSQL index entry (at most
/// 2,704 bytes), which is what makes `history` read one index range: a value that did
/// not fit would make its event, and the poll that brought it, fail to record.
pub const MAX_VALUE_BYTES: usize = 700;

impl ChangeValue {
    /// The value as the store keeps it: its text, clipped to [`MAX_VALUE_BYTES`] on a
    /// character boundary.
    pub fn stored_text(&self) -> String {
        let mut text = self.to_string();
        if text.len() > MAX_VALUE_BYTES {
            let mut end = MAX_VALUE_BYTES - '…'.len_utf8();
            // At most three steps back: a UTF-8 character is at most four bytes.
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        text
    }

    /// Any displayable value as text.
    pub fn text(value: impl fmt::Display) -> ChangeValue {
        ChangeValue::Text(value.to_string())
    }

    /// The percentage, for progress events.
    pub fn percent(&self) -> Option<i64> {
        match self {
            ChangeValue::Percent(p) => Some(*p),
            ChangeValue::Text(_) | ChangeValue::Flag(_) => None,
        }
    }
}

impl fmt::Display for ChangeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeValue::Text(text) => f.write_str(text),
            ChangeValue::Percent(p) => write!(f, "{p}"),
            ChangeValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

/// One observed change, before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// What happened.
    pub event_type: EventType,
    /// The drive, for drive events.
    pub drive_id: Option<DriveId>,
    /// Old value, if any.
    pub from: Option<ChangeValue>,
    /// New value, or the error for failure events.
    pub to: Option<ChangeValue>,
    /// How urgent.
    pub severity: Severity,
    /// Extra content: the summary of `job.first_seen`, the drive of `drive.added`.
    pub details: Option<serde_json::Value>,
}

impl Event {
    /// An event with just a from → to change.
    pub fn change(
        event_type: EventType,
        drive_id: Option<&DriveId>,
        from: Option<ChangeValue>,
        to: Option<ChangeValue>,
        severity: Severity,
    ) -> Event {
        Event {
            event_type,
            drive_id: drive_id.cloned(),
            from,
            to,
            severity,
            details: None,
        }
    }

    /// An event whose payload is `fields` (PayloadShape::Fields), described in the
    /// history by `text`: shipping, action, delay, deadline, stall and reminder events.
    pub fn notice(
        event_type: EventType,
        drive_id: Option<&DriveId>,
        text: String,
        severity: Severity,
        fields: serde_json::Value,
    ) -> Event {
        Event {
            event_type,
            drive_id: drive_id.cloned(),
            from: None,
            to: Some(ChangeValue::Text(text)),
            severity,
            details: Some(fields),
        }
    }

    /// An event that carries nothing but its type and severity.
    pub fn bare(event_type: EventType, severity: Severity) -> Event {
        Event::change(event_type, None, None, None, severity)
    }

    /// `from` as stored text (at most [`MAX_VALUE_BYTES`]).
    pub fn from_text(&self) -> Option<String> {
        self.from.as_ref().map(ChangeValue::stored_text)
    }

    /// `to` as stored text (at most [`MAX_VALUE_BYTES`]).
    pub fn to_text(&self) -> Option<String> {
        self.to.as_ref().map(ChangeValue::stored_text)
    }

    /// The change in words (see [`EventType::describe`]).
    pub fn describe(&self) -> String {
        self.event_type
            .describe(self.from_text().as_deref(), self.to_text().as_deref())
    }
}

/// One delivery to queue with an observation: the index of the event among the
/// observation's events, and the webhook that wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Index into the observation's events.
    pub event: usize,
    /// The webhook's name.
    pub webhook: String,
}

/// True when `filter` is `*`, an event type, or a prefix like `drive.*`.
pub fn is_known_filter(filter: &str) -> bool {
    filter == "*"
        || EventType::parse(filter).is_some()
        || filter
            .strip_suffix('*')
            .is_some_and(|prefix| EventType::iter().any(|t| t.as_str().starts_with(prefix)))
}

/// True when `event_type` matches any of `filters` (see [`is_known_filter`]).
pub fn filters_match(filters: &[String], event_type: EventType) -> bool {
    filters.iter().any(|f| {
        f == "*"
            || f == event_type.as_str()
            || f.strip_suffix('*')
                .is_some_and(|prefix| event_type.as_str().starts_with(prefix))
    })
}

/// One recorded event with its job: a line of `history`, the content of a webhook.
#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    /// Event id (ascending = order observed).
    pub id: i64,
    /// Account.
    pub account: String,
    /// Job name.
    pub job: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Drive, for drive events.
    pub drive_id: Option<DriveId>,
    /// Old value.
    pub from: Option<String>,
    /// New value (or error).
    pub to: Option<String>,
    /// When iewatch saw it (SQLite's text in JSON, as the column).
    #[serde(with = "crate::moment::sql_text")]
    pub observed_at: crate::moment::Moment,
    /// How urgent.
    pub severity: Severity,
    /// Job context and extras.
    pub details: Option<serde_json::Value>,
}

impl EventRecord {
    /// The change in words (see [`EventType::describe`]).
    pub fn describe(&self) -> String {
        self.event_type
            .describe(self.from.as_deref(), self.to.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for t in EventType::iter() {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
    }

    #[test]
    fn filters_take_types_prefixes_and_star() {
        let f = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(filters_match(&f(&["*"]), EventType::JobNotFound));
        assert!(filters_match(&f(&["drive.*"]), EventType::DriveProgress));
        assert!(!filters_match(&f(&["drive.*"]), EventType::JobProgress));
        assert!(filters_match(&f(&["job.progress"]), EventType::JobProgress));
        assert!(!filters_match(
            &f(&["job.progress"]),
            EventType::DriveProgress
        ));
        assert!(is_known_filter("job.*") && is_known_filter("drive.progress"));
        assert!(!is_known_filter("jobs.*") && !is_known_filter("drive.exploded"));
    }

    #[test]
    fn every_type_is_described_in_words() {
        assert_eq!(
            EventType::DriveCopyStatusChanged.describe(Some("InProgress"), Some("Completed")),
            "copy status InProgress → Completed"
        );
        assert_eq!(
            EventType::JobProgress.describe(None, Some("40")),
            "progress - → 40%"
        );
        for t in EventType::iter() {
            assert!(!t.describe(Some("a"), Some("b")).is_empty());
        }
    }

    #[test]
    fn values_render_as_stored_text_and_keep_numbers() {
        assert_eq!(ChangeValue::Percent(40).to_string(), "40");
        assert_eq!(ChangeValue::Percent(40).percent(), Some(40));
        assert_eq!(ChangeValue::Flag(true).to_string(), "true");
        assert_eq!(ChangeValue::text("Faulted").percent(), None);
    }

    #[test]
    fn a_long_value_is_stored_clipped_on_a_character_boundary() {
        let short = "é".repeat(MAX_VALUE_BYTES / 2);
        assert_eq!(ChangeValue::text(&short).stored_text(), short);
        // Every offset of a four-byte character against the limit.
        for lead in 0..4 {
            let long = format!("{}{}", "x".repeat(lead), "𝄞".repeat(MAX_VALUE_BYTES));
            let stored = ChangeValue::text(&long).stored_text();
            assert!(stored.len() <= MAX_VALUE_BYTES, "{}", stored.len());
            assert!(stored.len() > MAX_VALUE_BYTES - 3 - 4, "{}", stored.len());
            assert!(stored.ends_with('…') && long.starts_with(stored.trim_end_matches('…')));
        }
    }
}
