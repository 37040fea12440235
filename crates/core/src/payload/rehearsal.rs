//! A template's rehearsal: before a template is trusted with alerts, `check` (and every
//! start and reload, which read the config the same way) renders it once against a sample
//! event of every type its webhook takes. A variable no event has, a filter misused or a
//! body past the cap then shows up as a config problem with its file and line, not as
//! every alert failing at 3 a.m.

use serde_json::{json, Value};

use crate::{
    events::EventRecord,
    events::{filters_match, EventType},
    model::Severity,
};

/// What the template sees (see [`super::render`]).
pub const VARIABLES: [&str; 11] = [
    "id",
    "type",
    "severity",
    "account",
    "job",
    "drive_id",
    "from",
    "to",
    "text",
    "timestamp",
    "data",
];

/// A render that failed on some sample events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The template's line, when the error has one.
    pub line: Option<usize>,
    /// What went wrong.
    pub message: String,
    /// The event types it failed for.
    pub types: Vec<EventType>,
}

/// What rehearsing a template found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rehearsal {
    /// How many event types were rehearsed.
    pub rehearsed: usize,
    /// The failures, grouped by line and message, first line first.
    pub failures: Vec<Failure>,
    /// Names the template reads that are no variable of any event (a typo, usually),
    /// whether or not a sample reached them, with the first line that has them.
    pub unknown: Vec<(String, Option<usize>)>,
}

impl Rehearsal {
    /// True when every rehearsed event failed: no alert would ever be delivered.
    pub fn fails_always(&self) -> bool {
        self.rehearsed > 0
            && self.failures.iter().map(|f| f.types.len()).sum::<usize>() >= self.rehearsed
    }
}

/// Renders the template of `environment` (named `body`) with `max_body` for every event
/// type `filters` select.
pub fn rehearse(
    environment: &minijinja::Environment<'static>,
    max_body: usize,
    filters: &[String],
) -> Rehearsal {
    let mut rehearsal = Rehearsal::default();
    for event_type in <EventType as strum::IntoEnumIterator>::iter() {
        if !filters_match(filters, event_type) {
            continue;
        }
        rehearsal.rehearsed += 1;
        let Err(e) = super::render(environment, max_body, &sample(event_type)) else {
            continue;
        };
        let (line, message) = (e.line, e.message);
        match rehearsal
            .failures
            .iter_mut()
            .find(|f| f.line == line && f.message == message)
        {
            Some(failure) => failure.types.push(event_type),
            None => rehearsal.failures.push(Failure {
                line,
                message,
                types: vec![event_type],
            }),
        }
    }
    rehearsal.failures.sort_by_key(|f| f.line);
    if let Ok(template) = environment.get_template("body") {
        let globals: Vec<&str> = environment.globals().map(|(name, _)| name).collect();
        let mut unknown: Vec<(String, Option<usize>)> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !VARIABLES.contains(&name.as_str()) && !globals.contains(&name.as_str()))
            .map(|name| {
                let line = first_line_naming(template.source(), &name);
                (name, line)
            })
            .collect();
        unknown.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        rehearsal.unknown = unknown;
    }
    rehearsal
}

/// The first line (from 1) of `source` where `name` stands as a word of its own.
fn first_line_naming(source: &str, name: &str) -> Option<usize> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    source
        .lines()
        .position(|line| {
            line.match_indices(name).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + name.len()..].chars().next();
                !before.is_some_and(|c| is_word(c) || c == '.') && !after.is_some_and(is_word)
            })
        })
        .map(|index| index + 1)
}

/// An event of `event_type` as the daemon records it: every field its payload has, with
/// plausible values (a drive for drive events, the extras of notices and clocks).
// Long: one arm per event type, so that a new type without a sample fails to compile.
pub fn sample(event_type: EventType) -> EventRecord {
    let drive = event_type.as_str().starts_with("drive.");
    let (from, to, extra): (Option<&str>, Option<&str>, Value) = match event_type {
        EventType::JobFirstSeen => (None, Some("Transferring"), json!({})),
        EventType::JobStateChanged => (Some("Transferring"), Some("Completed"), json!({})),
        EventType::JobProgress | EventType::DriveProgress => (
            Some("40"),
            Some("50"),
            json!({"eta": "2026-12-24T08:00:00Z"}),
        ),
        EventType::JobCancelRequested => (Some("false"), Some("true"), json!({})),
        EventType::DriveAdded => (None, Some("Received"), json!({})),
        EventType::DriveRemoved => (Some("Received"), None, json!({})),
        EventType::DriveStateChanged => (Some("Received"), Some("Transferring"), json!({})),
        EventType::DriveCopyStatusChanged => {
            (Some("InProgress"), Some("CompletedWithErrors"), json!({}))
        }
        EventType::JobPollFailing | EventType::JobNotFound => (None, Some("HTTP 503"), json!({})),
        EventType::JobPollRecovered => (None, None, json!({})),
        EventType::JobShippingUpdated => (
            None,
            Some("return UPS 1Z999"),
            json!({"package": "return", "carrier": "UPS", "tracking": "1Z999",
                   "url": "https://www.ups.com/track?tracknum=1Z999"}),
        ),
        EventType::JobActionRequired => (
            None,
            Some("DataCopy Failed: DeviceUnlockFailed"),
            json!({"stage": "DataCopy", "status": "Failed", "code": "DeviceUnlockFailed",
                   "message": "The device could not be unlocked.", "actions": ["Resume"],
                   "since": "2026-12-01T08:00:00Z", "auto_complete_at": null}),
        ),
        EventType::JobDelayed | EventType::JobDelayResolved => (
            None,
            Some("Delivered ShipmentDelayed"),
            json!({"stage": "Delivered", "code": "ShipmentDelayed",
                   "description": "Held at customs", "started_at": "2026-12-01T08:00:00Z"}),
        ),
        EventType::JobDeadline => (
            None,
            Some("deletion within 3d"),
            json!({"deadline": "deletion", "at": "2026-12-24T08:00:00Z",
                   "consequence": "the job and its drive list are deleted",
                   "counted_from": "2026-10-01T08:00:00Z"}),
        ),
        EventType::JobStalled
        | EventType::JobResumed
        | EventType::DriveStalled
        | EventType::DriveResumed => (
            None,
            Some("Transferring for 3d"),
            json!({"state": "Transferring", "now": "Transferring", "percent": 40,
                   "since": "2026-12-01T08:00:00Z", "threshold": "2d"}),
        ),
        EventType::JobReminder => (
            None,
            Some("stalled since 2026-12-01T08:00:00Z (reminder 1)"),
            json!({"condition": "stalled", "since": "2026-12-01T08:00:00Z", "count": 1}),
        ),
        EventType::JobAcknowledged => (
            None,
            Some("on it"),
            json!({"note": "on it", "condition": "stalled"}),
        ),
        EventType::DriveErrors => (
            None,
            Some("3 files failed: 2 FileNameInvalid, 1 Corrupted; first: \\photos\\a?.jpg (FileNameInvalid)"),
            json!({"summary": "3 files failed: 2 FileNameInvalid, 1 Corrupted; first: \\photos\\a?.jpg (FileNameInvalid)",
                   "log": "https://acct.blob.core.windows.net/waimportexport/waies/SampleJob_D1_error.xml",
                   "format": "DriveLog 2014-11-01", "status": "CompletedWithErrors", "failed": 3,
                   "totals": [{"code": "FileNameInvalid", "count": 2, "meaning": "the file name is not valid"},
                              {"code": "Corrupted", "count": 1, "meaning": "the content does not match its hash"}],
                   "first": [{"path": "photos/a?.jpg", "file_path": "\\photos\\a?.jpg",
                              "code": "FileNameInvalid", "meaning": "the file name is not valid"}]}),
        ),
        EventType::JobMemoryReset => (
            None,
            Some("jobs.clocks"),
            json!({"damaged": ["jobs.clocks \"{not json\" cannot be read"],
                   "consequence": "stalls, deadlines and reminders count again from now"}),
        ),
    };
    let mut details = json!({"job": {"type": "Import", "state": "Transferring",
                                     "percent_complete": 40, "sku": "Standard"}});
    if extra.as_object().is_some_and(|o| !o.is_empty()) {
        details["details"] = extra;
    }
    EventRecord {
        id: 1,
        account: "sample-account".into(),
        job: "SampleJob".into(),
        event_type,
        drive_id: drive.then(|| "D1".into()),
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        observed_at: crate::moment::Moment::from_unix_secs(1_796_371_200),
        severity: Severity::Warning,
        details: Some(details),
    }
}
