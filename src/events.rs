//! The events of DESIGN.md's table: their types, their content, and the filter language
//! webhooks use to pick them. Produced by the change detector and the scheduler, written
//! by the store, rendered by the notifier.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{DriveId, Severity};

/// Every event type, in DESIGN.md's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// First successful poll of a job.
    #[serde(rename = "job.first_seen")]
    JobFirstSeen,
    /// `Properties.State` changed.
    #[serde(rename = "job.state_changed")]
    JobStateChanged,
    /// `Properties.PercentComplete` changed.
    #[serde(rename = "job.progress")]
    JobProgress,
    /// `CancelRequested` became true.
    #[serde(rename = "job.cancel_requested")]
    JobCancelRequested,
    /// A DriveId appeared in `DriveList`.
    #[serde(rename = "drive.added")]
    DriveAdded,
    /// A DriveId left `DriveList`.
    #[serde(rename = "drive.removed")]
    DriveRemoved,
    /// A drive's `State` changed.
    #[serde(rename = "drive.state_changed")]
    DriveStateChanged,
    /// A drive's `CopyStatus` changed.
    #[serde(rename = "drive.copy_status_changed")]
    DriveCopyStatusChanged,
    /// A drive's `PercentComplete` changed.
    #[serde(rename = "drive.progress")]
    DriveProgress,
    /// Polls have failed `failure_threshold` times in a row.
    #[serde(rename = "job.poll_failing")]
    JobPollFailing,
    /// A poll succeeded after `job.poll_failing`.
    #[serde(rename = "job.poll_recovered")]
    JobPollRecovered,
    /// The service answered 404.
    #[serde(rename = "job.not_found")]
    JobNotFound,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 12] = [
        EventType::JobFirstSeen,
        EventType::JobStateChanged,
        EventType::JobProgress,
        EventType::JobCancelRequested,
        EventType::DriveAdded,
        EventType::DriveRemoved,
        EventType::DriveStateChanged,
        EventType::DriveCopyStatusChanged,
        EventType::DriveProgress,
        EventType::JobPollFailing,
        EventType::JobPollRecovered,
        EventType::JobNotFound,
    ];

    /// The dotted name used in the database, payloads and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobFirstSeen => "job.first_seen",
            EventType::JobStateChanged => "job.state_changed",
            EventType::JobProgress => "job.progress",
            EventType::JobCancelRequested => "job.cancel_requested",
            EventType::DriveAdded => "drive.added",
            EventType::DriveRemoved => "drive.removed",
            EventType::DriveStateChanged => "drive.state_changed",
            EventType::DriveCopyStatusChanged => "drive.copy_status_changed",
            EventType::DriveProgress => "drive.progress",
            EventType::JobPollFailing => "job.poll_failing",
            EventType::JobPollRecovered => "job.poll_recovered",
            EventType::JobNotFound => "job.not_found",
        }
    }

    /// Parses the dotted name.
    pub fn parse(name: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Progress events are the ones `progress_step` thins out.
    pub fn is_progress(self) -> bool {
        matches!(self, EventType::JobProgress | EventType::DriveProgress)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One observed change, before it is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event_type: EventType,
    /// The drive, for drive events.
    pub drive_id: Option<DriveId>,
    /// Old value as text (state name or percent), if any.
    pub from: Option<String>,
    /// New value as text, or the error for failure events.
    pub to: Option<String>,
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
        from: Option<String>,
        to: Option<String>,
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
}

/// True when `filter` is `*`, an event type, or a prefix like `drive.*`.
pub fn is_known_filter(filter: &str) -> bool {
    filter == "*"
        || EventType::parse(filter).is_some()
        || filter.strip_suffix('*').is_some_and(|prefix| {
            EventType::ALL
                .iter()
                .any(|t| t.as_str().starts_with(prefix))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for t in EventType::ALL {
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
}
