//! The wire-independent job snapshot that every source produces and that the change
//! detector, the store and the notifier work on. Nothing here knows HTTP or a wire format,
//! so a second source (Resource Manager) plugs in beside the classic one unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::moment::Moment;

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

/// Where a job stands in its life, whatever its API calls the state: what the poll
/// interval, the service clocks and the status page read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The customer has the next move (create and ship the job, send the device back).
    CustomerMove,
    /// The service or a carrier is moving it; also every state not documented.
    InProgress,
    /// Completed, with or without errors or warnings (the service purges it 90 days on).
    Completed,
    /// Ended otherwise: closed, cancelled, aborted, failed.
    Ended,
}

/// Every documented job state, its phase and how entering it is flagged: the one table
/// of job states. Import/Export's job states (states.md) and Data Box's stage names
/// (databox.md §3.1, §3.5); the two vocabularies share only `Completed`.
const STATES: [(&str, Phase, Severity); 29] = {
    use Phase::{Completed, CustomerMove, Ended, InProgress};
    use Severity::{Error, Info, Warning};
    [
        ("Creating", CustomerMove, Info),
        ("Shipping", InProgress, Info),
        ("Received", InProgress, Info),
        ("Transferring", InProgress, Info),
        ("Packaging", InProgress, Info),
        ("Completed", Completed, Info),
        ("Closed", Ended, Warning),
        ("Faulted", InProgress, Error),
        ("Canceled", Ended, Info),
        ("DeviceOrdered", InProgress, Info),
        ("DevicePrepared", InProgress, Info),
        ("Dispatched", InProgress, Info),
        ("Delivered", CustomerMove, Info),
        ("PickedUp", InProgress, Info),
        ("AtAzureDC", InProgress, Info),
        ("DataCopy", InProgress, Info),
        ("CompletedWithErrors", Completed, Error),
        ("Cancelled", Ended, Info),
        ("Failed_IssueReportedAtCustomer", Ended, Error),
        ("Failed_IssueDetectedAtAzureDC", Ended, Error),
        ("Aborted", Ended, Error),
        ("CompletedWithWarnings", Completed, Warning),
        ("ReadyToDispatchFromAzureDC", InProgress, Info),
        ("ReadyToReceiveAtAzureDC", InProgress, Info),
        ("Created", InProgress, Info),
        ("ShippedToAzureDC", InProgress, Info),
        ("AwaitingShipmentDetails", CustomerMove, Info),
        ("PreparingToShipFromAzureDC", InProgress, Info),
        ("ShippedToCustomer", InProgress, Info),
    ]
};

impl JobState {
    /// Every state a job of some kind is documented to have. The vocabulary stays open
    /// (a new one is watched like any other); this list is what `check` compares a
    /// configured state name with, to catch a typo or a wrong case.
    pub const KNOWN: [&'static str; STATES.len()] = {
        let mut names = [""; STATES.len()];
        let mut i = 0;
        while i < STATES.len() {
            names[i] = STATES[i].0;
            i += 1;
        }
        names
    };

    /// Its row of the table, if it is a documented state.
    fn known(&self) -> Option<(Phase, Severity)> {
        STATES
            .iter()
            .find(|(name, _, _)| *name == self.as_str())
            .map(|(_, phase, severity)| (*phase, *severity))
    }

    /// Where the job stands; an undocumented state is taken as in progress.
    pub fn phase(&self) -> Phase {
        self.known().map_or(Phase::InProgress, |(phase, _)| phase)
    }

    /// Final states: the next thing that happens is deletion.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase(), Phase::Completed | Phase::Ended)
    }

    /// How a transition into this state should be flagged.
    pub fn severity(&self) -> Severity {
        self.known()
            .map_or(Severity::Info, |(_, severity)| severity)
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
    /// The README's severity rules: None, InProgress, Completed are info (and Data Box's NotStarted, its
    /// None); CompletedWithWarnings is a warning; every other value, known or not, is an
    /// error.
    pub fn severity(&self) -> Severity {
        match self.as_str() {
            "None" | "NotStarted" | "InProgress" | "Completed" => Severity::Info,
            "CompletedWithWarnings" => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// How urgent an event is; ordered so that filters can say "at least warning".
// Spelled once, lowercase, by strum; serde and SQL go through `as_str`/`parse`
// (`events::spelled_as_text!`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[strum(serialize_all = "lowercase")]
pub enum Severity {
    /// Normal progress.
    Info,
    /// Finished, but with something a person should read.
    Warning,
    /// Something failed or needs action.
    Error,
}

impl Severity {
    /// The lowercase name used in the database, payloads and config.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses the lowercase name.
    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
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
    /// `DriveList`, in the service's order; empty when absent. For Data Box, the units
    /// whose copy the service reports: disks, or destination accounts.
    pub drives: Vec<DriveSnapshot>,
    /// Data Box: the order's SKU (`DataBoxCustomerDisk`, ...); none for Import/Export.
    pub sku: Option<String>,
    /// Shipments, actions the service waits for, delays.
    pub notices: Notices,
}

/// What the service says beyond state and progress that a person acts on: where the
/// packages are, what it waits for, what is late. Watched like the state: a change is an
/// event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notices {
    /// Packages with a carrier or tracking number, delivery first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<Package>,
    /// A stage waiting for the customer (Data Box).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRequired>,
    /// The service's delay notices (Data Box `delayInformation`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delays: Vec<Delay>,
    /// Error logs of drives or destination accounts that ended with errors, for the
    /// error-log reader (see [`crate::errorlog`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_logs: Vec<ErrorLogRef>,
}

/// Where the service put the error log of one drive (or Data Box destination account)
/// that ended with errors. Only ever made for a unit that ended with errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLogRef {
    /// The drive's serial number, or the Data Box destination account's name.
    pub owner: String,
    /// The log as the service gave it, any SAS removed: an absolute blob URL, or a
    /// Data Box link relative to `account`'s blob endpoint.
    pub link: String,
    /// The storage account a relative link is in (Data Box `accountName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl ErrorLogRef {
    /// A reference whose link is kept without its query (a SAS is never stored).
    pub fn new(owner: &str, link: &str, account: Option<&str>) -> ErrorLogRef {
        let link = link.split(['?', '#']).next().unwrap_or_default().trim();
        ErrorLogRef {
            owner: owner.to_owned(),
            link: link.to_owned(),
            account: account.map(str::to_owned),
        }
    }
}

/// The error log of a drive of an Import/Export job in `job_state`, when the drive (or
/// the job: `Closed`) ended with errors and the service gave the log's URI.
pub fn drive_error_log(
    job_state: &str,
    drive_id: &str,
    (state, copy_status): (Option<&str>, Option<&str>),
    uri: Option<&str>,
) -> Option<ErrorLogRef> {
    let ended = job_state.eq_ignore_ascii_case("Closed") || ended_with_errors(state, copy_status);
    let uri = uri.filter(|u| !u.trim().is_empty())?;
    ended.then(|| ErrorLogRef::new(drive_id, uri, None))
}

/// True for a drive that ended with errors: `CompletedMoreInfo`, or a copy status that
/// says errors or warnings (`CompletedWithErrors`, `CompletedWithWarnings`, `Failed`).
pub fn ended_with_errors(state: Option<&str>, copy_status: Option<&str>) -> bool {
    let state_says = state.is_some_and(|s| s.eq_ignore_ascii_case("CompletedMoreInfo"));
    let copy_says = copy_status.is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        c.contains("error") || c.contains("warning") || c == "failed"
    });
    state_says || copy_says
}

impl Notices {
    /// True when there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
            && self.action.is_none()
            && self.delays.is_empty()
            && self.error_logs.is_empty()
    }
}

/// Which way a package travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// To the datacenter (Import/Export `DeliveryPackage`; for a Data Box device, the
    /// shipment to the customer).
    Delivery,
    /// Back to the customer (or the device back to Azure).
    Return,
}

impl PackageKind {
    /// `delivery` or `return`.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Delivery => "delivery",
            PackageKind::Return => "return",
        }
    }
}

/// A package the carrier tracks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Which way it goes.
    pub package: PackageKind,
    /// Carrier name as sent.
    pub carrier: Option<String>,
    /// Tracking number (`TrackingNumber`, `trackingId`).
    pub tracking: Option<String>,
    /// The carrier's tracking page, when the service gives one.
    pub url: Option<String>,
}

impl Package {
    /// A package from a source's strings; none when it names neither carrier nor
    /// tracking number (the service sends empty strings before anything shipped).
    pub fn new(
        package: PackageKind,
        carrier: Option<String>,
        tracking: Option<String>,
        url: Option<String>,
    ) -> Option<Package> {
        let present = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        let (carrier, tracking, url) = (present(carrier), present(tracking), present(url));
        (carrier.is_some() || tracking.is_some()).then_some(Package {
            package,
            carrier,
            tracking,
            url,
        })
    }
}

/// A stage that waits for the customer (`WaitingForCustomerAction*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRequired {
    /// The stage, e.g. `DataCopy`.
    pub stage: String,
    /// Its status, e.g. `WaitingForCustomerAction`.
    pub status: String,
    /// The job's error code, e.g. `SsemUserCopyErrorWaitingForAction`.
    pub code: Option<String>,
    /// The job's error message.
    pub message: Option<String>,
    /// What the customer may do (`MoveToCleanUpDevice`, `Resume`, ...).
    pub actions: Vec<String>,
    /// When the stage began waiting (RFC 3339 in JSON).
    #[serde(default, with = "crate::moment::rfc3339_opt")]
    pub since: Option<Moment>,
    /// When the service goes on by itself, where it has such a clock.
    #[serde(default, with = "crate::moment::rfc3339_opt")]
    pub auto_complete_at: Option<Moment>,
}

/// One delay notice of a stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    /// The stage it delays.
    pub stage: String,
    /// `HighDemandDelay`, `InternalIssueDelay`, ...
    pub code: String,
    /// The service's words.
    pub description: Option<String>,
    /// `Active` or `Resolved` as sent.
    pub status: String,
    /// When it began (RFC 3339 in JSON), as the key of the notice.
    #[serde(default, with = "crate::moment::rfc3339_opt")]
    pub started_at: Option<Moment>,
}

impl Delay {
    /// Active (not resolved) delays are the ones to announce.
    pub fn is_active(&self) -> bool {
        self.status.eq_ignore_ascii_case("Active")
    }

    /// Two notices are the same delay when stage, code and start agree.
    pub fn same_notice(&self, other: &Delay) -> bool {
        self.stage == other.stage && self.code == other.code && self.started_at == other.started_at
    }
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
    /// Gives back the spare capacity of its lists: a watched job keeps its snapshot for
    /// as long as it is watched, and a list grown by pushes holds room for four.
    pub fn shrink_to_fit(&mut self) {
        self.drives.shrink_to_fit();
        self.notices.packages.shrink_to_fit();
        self.notices.delays.shrink_to_fit();
        self.notices.error_logs.shrink_to_fit();
    }

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
            sku: None,
            notices: Notices::default(),
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
    fn a_kept_snapshot_holds_no_spare_room() {
        let mut job = JobSnapshot::assemble(None, "Transferring".into(), None, None);
        job.drives
            .push(DriveSnapshot::new("D1".into(), None, None, Some(5)));
        assert!(
            job.drives.capacity() > 1,
            "a pushed list holds room for more"
        );
        job.shrink_to_fit();
        assert_eq!(job.drives.capacity(), 1);
        assert_eq!(job.drives[0].percent_complete, Some(5));
    }

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
