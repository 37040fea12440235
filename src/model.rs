//! The wire-independent job snapshot that every source produces and that the change
//! detector, the store and the notifier work on. Nothing here knows HTTP or a wire format,
//! so a second source (Resource Manager) plugs in beside the classic one unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value exactly as it came, unknown values included.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value as it came.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_newtype!(
    /// A job's name as configured and as the service spells it.
    JobName
);
string_newtype!(
    /// A drive's hardware serial number, the key of a drive within its job.
    DriveId
);
string_newtype!(
    /// An opaque entity tag; sent back byte for byte in `If-None-Match`.
    ETag
);
string_newtype!(
    /// A job's `Properties.State` (states.md); open-ended, case-sensitive.
    JobState
);
string_newtype!(
    /// A drive's `State` (states.md); open-ended, case-sensitive.
    DriveState
);
string_newtype!(
    /// A drive's `CopyStatus`; open-ended, case-sensitive.
    CopyStatus
);

impl JobState {
    /// Completed, Closed and Canceled are final: the next thing that happens is deletion.
    pub fn is_terminal(&self) -> bool {
        matches!(self.as_str(), "Completed" | "Closed" | "Canceled")
    }

    /// How a transition into this state should be flagged.
    pub fn severity(&self) -> Severity {
        match self.as_str() {
            "Faulted" => Severity::Error,
            "Closed" => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

impl DriveState {
    /// How a transition into this drive state should be flagged.
    pub fn severity(&self) -> Severity {
        match self.as_str() {
            "Faulted" => Severity::Error,
            "NeverReceived" | "CompletedMoreInfo" => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

impl CopyStatus {
    /// DESIGN.md: None, InProgress, Completed are info; CompletedWithWarnings is a
    /// warning; every other value, known or not, is an error.
    pub fn severity(&self) -> Severity {
        match self.as_str() {
            "None" | "InProgress" | "Completed" => Severity::Info,
            "CompletedWithWarnings" => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// How urgent an event is; ordered so that filters can say "at least warning".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Normal progress.
    Info,
    /// Finished, but with something a person should read.
    Warning,
    /// Something failed or needs action.
    Error,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Error];

    /// The lowercase name used in the database, payloads and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A drive's BitLocker key. Debug, Display and Serialize never show it: it unlocks the
/// customer's data, so it must not reach a log line, a payload or (unless opted in) disk.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct BitLockerKey(String);

impl BitLockerKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one caller that may store it (`store_bitlocker_keys`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for BitLockerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for BitLockerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for BitLockerKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// What iewatch watches of one drive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveSnapshot {
    /// The drive's serial number.
    pub drive_id: DriveId,
    /// `State`, absent only if the service leaves it out.
    pub state: Option<DriveState>,
    /// `CopyStatus`, absent until the drive is Transferring.
    pub copy_status: Option<CopyStatus>,
    /// `PercentComplete`, kept as sent (not clamped).
    pub percent_complete: Option<i64>,
}

/// What iewatch watches of one job, whatever API it came from: the fields whose changes
/// are events. The source's whole document travels beside it ([`crate::source::Document`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSnapshot {
    /// `Import` or `Export` as the service spells it.
    pub job_type: Option<String>,
    /// `Properties.State`.
    pub state: JobState,
    /// `Properties.PercentComplete`.
    pub percent_complete: Option<i64>,
    /// `Properties.CancelRequested`.
    pub cancel_requested: bool,
    /// `DriveList`, in the service's order; empty when absent.
    pub drives: Vec<DriveSnapshot>,
}

impl DriveSnapshot {
    /// A drive from a source's strings, kept as they came.
    pub fn new(
        drive_id: String,
        state: Option<String>,
        copy_status: Option<String>,
        percent_complete: Option<i64>,
    ) -> Self {
        DriveSnapshot {
            drive_id: DriveId::new(drive_id),
            state: state.map(DriveState::new),
            copy_status: copy_status.map(CopyStatus::new),
            percent_complete,
        }
    }
}

impl JobSnapshot {
    /// A snapshot of a source's job fields, its drives still to be added.
    pub fn assemble(
        job_type: Option<String>,
        state: String,
        percent_complete: Option<i64>,
        cancel_requested: Option<bool>,
    ) -> JobSnapshot {
        JobSnapshot {
            job_type,
            state: JobState::new(state),
            percent_complete,
            cancel_requested: cancel_requested.unwrap_or(false),
            drives: Vec::new(),
        }
    }

    /// The drive with this id, if the job has it.
    pub fn drive(&self, id: &DriveId) -> Option<&DriveSnapshot> {
        self.drives.iter().find(|d| &d.drive_id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitlocker_key_never_shows_in_debug_display_or_json() {
        let key = BitLockerKey::new("259358-100188");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(key.to_string(), "[redacted]");
        let json = serde_json::to_string(&key).unwrap();
        assert!(!json.contains("259358"), "{json}");
        assert_eq!(key.expose(), "259358-100188");
    }

    #[test]
    fn copy_status_severity_follows_design() {
        for ok in ["None", "InProgress", "Completed"] {
            assert_eq!(CopyStatus::from(ok).severity(), Severity::Info, "{ok}");
        }
        assert_eq!(
            CopyStatus::from("CompletedWithWarnings").severity(),
            Severity::Warning
        );
        for bad in [
            "CompletedWithErrors",
            "BitLockerFailed",
            "SomethingNew",
            "completed",
        ] {
            assert_eq!(CopyStatus::from(bad).severity(), Severity::Error, "{bad}");
        }
    }

    #[test]
    fn severities_order_for_min_severity_filters() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
        assert_eq!(Severity::parse("warning"), Some(Severity::Warning));
        assert_eq!(Severity::parse("fatal"), None);
    }
}
