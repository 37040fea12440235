//! PagerDuty's incident lifecycle: which events open an incident and which close one,
//! decided against the incidents iewatch knows to be open (`pagerduty_incidents`). An
//! event says what it does ([`Incident`]); [`steps`] turns that and the open incidents into
//! the triggers and resolves to send. So a resolve is sent only for an incident that was
//! triggered, a job that moves on or ends closes what it left open, and a job that
//! completed with errors keeps its `errors` incident until someone runs `iewatch ack`.

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{events::EventType, model::Severity, store::EventRecord};

/// What a PagerDuty event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagerDutyAction {
    /// Opens (or adds to) the incident of its dedup key.
    Trigger,
    /// Closes it.
    Resolve,
}

/// Conditions (the incident's name within a job, the end of its dedup key).
const POLLS_FAILING: &str = "polls_failing";
const ACTION_REQUIRED: &str = "action_required";
const STALLED: &str = "stalled";
const ERRORS: &str = "errors";

/// What an event does to its job's incidents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incident {
    /// Opens (or adds to) the incident of this condition.
    Open(String),
    /// Closes the incident of this condition, if one is open.
    Close(String),
    /// The job moved to another stage: the wait for the customer is over.
    MovedOn,
    /// The job ended (in error, when `errors`): every incident of the job closes, but a
    /// failing poll's (a recovered poll closes it) and `errors` while someone is needed.
    Ended {
        /// It ended in an error state: `errors` opens.
        errors: bool,
    },
    /// `iewatch ack`: someone has the job's errors in hand.
    Acknowledged,
}

impl Incident {
    /// True when the event only closes: no severity filter may hold it back (an incident
    /// opened must be closable).
    pub fn only_closes(&self) -> bool {
        !matches!(self, Incident::Open(_) | Incident::Ended { errors: true })
    }
}

/// What `event_type` (of `severity`, on `drive`, to `to`) does to PagerDuty incidents;
/// None when PagerDuty does not take it.
pub fn incident_of(
    event_type: EventType,
    severity: Severity,
    drive: Option<&str>,
    to: Option<&str>,
) -> Option<Incident> {
    use Incident::{Close, Open};
    let drive_stall = || format!("drive_stalled:{}", drive.unwrap_or_default());
    let error = severity >= Severity::Error;
    Some(match event_type {
        EventType::JobPollFailing => Open(POLLS_FAILING.into()),
        EventType::JobPollRecovered => Close(POLLS_FAILING.into()),
        EventType::JobActionRequired => Open(ACTION_REQUIRED.into()),
        EventType::JobStalled => Open(STALLED.into()),
        EventType::JobResumed => Close(STALLED.into()),
        EventType::DriveStalled => Open(drive_stall()),
        EventType::DriveResumed => Close(drive_stall()),
        EventType::JobAcknowledged => Incident::Acknowledged,
        EventType::JobStateChanged
            if to.is_some_and(|s| crate::model::JobState::new(s).is_terminal()) =>
        {
            Incident::Ended { errors: error }
        }
        EventType::JobStateChanged if !error => Incident::MovedOn,
        _ if error => Open(ERRORS.into()),
        _ => return None,
    })
}

/// The triggers and resolves `incident` sends, given the conditions with an incident
/// open and whether the job needs someone (it completed with errors, unacknowledged).
pub fn steps(
    incident: &Incident,
    open: &[String],
    needs_someone: bool,
) -> Vec<(PagerDutyAction, String)> {
    let is_open = |condition: &str| open.iter().any(|c| c == condition);
    let resolve = |condition: &str| (PagerDutyAction::Resolve, condition.to_owned());
    match incident {
        Incident::Open(condition) => vec![(PagerDutyAction::Trigger, condition.clone())],
        Incident::Close(condition) => is_open(condition)
            .then(|| resolve(condition))
            .into_iter()
            .collect(),
        Incident::MovedOn => is_open(ACTION_REQUIRED)
            .then(|| resolve(ACTION_REQUIRED))
            .into_iter()
            .collect(),
        Incident::Acknowledged => is_open(ERRORS)
            .then(|| resolve(ERRORS))
            .into_iter()
            .collect(),
        Incident::Ended { errors } => {
            let keep_errors = *errors || needs_someone;
            let mut steps: Vec<_> = open
                .iter()
                .filter(|c| *c != POLLS_FAILING && !(keep_errors && *c == ERRORS))
                .map(|c| resolve(c))
                .collect();
            if *errors {
                steps.push((PagerDutyAction::Trigger, ERRORS.to_owned()));
            }
            steps
        }
    }
}

/// Longest `dedup_key` PagerDuty takes.
const MAX_DEDUP_KEY: usize = 255;

/// The incident key of a job's condition: `iewatch/ACCOUNT/JOB/CONDITION`, or, past
/// PagerDuty's 255 characters, its first 238 and a stable hash of the whole (the same
/// key for every event of that incident, so a resolve still finds its trigger).
pub fn dedup_key(account: &str, job: &str, condition: &str) -> String {
    let key = format!("iewatch/{account}/{job}/{condition}");
    if key.len() <= MAX_DEDUP_KEY {
        return key;
    }
    let digest = Sha256::digest(key.as_bytes());
    let tail: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = MAX_DEDUP_KEY - tail.len() - 1;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}#{tail}", &key[..cut])
}

/// The Events API v2 body that does `action` to the incident of `condition`, for
/// `event`.
pub fn pagerduty_body(
    event: &EventRecord,
    routing_key: &[u8],
    action: PagerDutyAction,
    condition: &str,
) -> Vec<u8> {
    let routing_key = String::from_utf8_lossy(routing_key);
    let dedup_key = dedup_key(&event.account, &event.job, condition);
    let body = match action {
        PagerDutyAction::Resolve => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }),
        PagerDutyAction::Trigger => {
            let severity = match event.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            // PagerDuty takes at most 1024 characters of summary.
            let summary: String = format!("{}/{}: {}", event.account, event.job, event.describe())
                .chars()
                .take(1024)
                .collect();
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": summary,
                    "source": format!("iewatch/{}", event.account),
                    "severity": severity,
                    "timestamp": event.observed_at.rfc3339_millis(),
                    "component": event.job,
                    "group": event.account,
                    "class": event.event_type.as_str(),
                    "custom_details": {
                        "event_id": event.id,
                        "drive_id": event.drive_id,
                        "from": event.from,
                        "to": event.to,
                        "job": event.details.as_ref().and_then(|d| d.get("job")),
                        "details": event.details.as_ref().and_then(|d| d.get("details")),
                    },
                },
            })
        }
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(conditions: &[&str]) -> Vec<String> {
        conditions.iter().map(|c| (*c).to_owned()).collect()
    }

    fn names(steps: &[(PagerDutyAction, String)]) -> Vec<String> {
        steps
            .iter()
            .map(|(action, c)| format!("{action:?} {c}"))
            .collect()
    }

    #[test]
    fn an_ending_closes_what_the_job_left_open_but_a_failing_poll_and_needed_errors() {
        let all = open(&[
            "action_required",
            "drive_stalled:D1",
            "errors",
            "polls_failing",
        ]);
        let ended = Incident::Ended { errors: false };
        assert_eq!(
            names(&steps(&ended, &all, false)),
            [
                "Resolve action_required",
                "Resolve drive_stalled:D1",
                "Resolve errors"
            ]
        );
        assert_eq!(
            names(&steps(&ended, &all, true)),
            ["Resolve action_required", "Resolve drive_stalled:D1"]
        );
        assert_eq!(
            names(&steps(&Incident::Ended { errors: true }, &all, false)),
            [
                "Resolve action_required",
                "Resolve drive_stalled:D1",
                "Trigger errors"
            ]
        );
    }

    #[test]
    fn nothing_is_resolved_that_is_not_open() {
        for incident in [
            Incident::Close("stalled".into()),
            Incident::MovedOn,
            Incident::Acknowledged,
            Incident::Ended { errors: false },
        ] {
            assert!(steps(&incident, &[], false).is_empty(), "{incident:?}");
        }
        assert_eq!(
            names(&steps(
                &Incident::MovedOn,
                &open(&["action_required", "stalled"]),
                false
            )),
            ["Resolve action_required"]
        );
        assert_eq!(
            names(&steps(&Incident::Acknowledged, &open(&["errors"]), true)),
            ["Resolve errors"]
        );
    }

    #[test]
    fn a_stage_move_and_an_ending_are_told_apart() {
        let moved = incident_of(
            EventType::JobStateChanged,
            Severity::Info,
            None,
            Some("DataCopy"),
        );
        assert_eq!(moved, Some(Incident::MovedOn));
        let ended = incident_of(
            EventType::JobStateChanged,
            Severity::Error,
            None,
            Some("CompletedWithErrors"),
        );
        assert_eq!(ended, Some(Incident::Ended { errors: true }));
        assert_eq!(
            incident_of(EventType::JobProgress, Severity::Info, None, Some("5")),
            None
        );
    }
}
