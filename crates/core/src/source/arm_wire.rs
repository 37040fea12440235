//! The Resource Manager shape of a job (`Microsoft.ImportExport/jobs`, api-version
//! 2021-01-01): camelCase fields under `properties`. The fields iewatch watches are typed;
//! everything else is kept as it came for the stored document. `bitLockerKey` is treated
//! as the secret it is, should the service ever include it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Document;
use crate::model::{BitLockerKey, DriveSnapshot, JobSnapshot, Package, PackageKind};

/// A job resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmJob {
    /// The job's name.
    pub name: String,
    /// The job's properties.
    pub properties: ArmJobProperties,
    /// `id`, `type`, `location`, `identity`, `systemData`, ... kept as they came.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `properties` of a job resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmJobProperties {
    /// `Import` or `Export`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// The job's state.
    pub state: String,
    /// Whether cancellation was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
    /// Overall percentage copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<i64>,
    /// Resource provisioning state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// The drives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_list: Option<Vec<ArmDrive>>,
    /// Everything else, as it came.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One entry of `driveList`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmDrive {
    /// Serial number.
    pub drive_id: String,
    /// Drive state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Copy status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_status: Option<String>,
    /// Percentage copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<i64>,
    /// Bytes copied so far (kept in the document, not watched: it moves constantly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_succeeded: Option<i64>,
    /// Never serialised by iewatch.
    #[serde(default, skip_serializing)]
    pub bit_locker_key: Option<BitLockerKey>,
    /// Everything else, as it came.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The ARM error body: `{"error": {"code", "message", "details"}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmErrorBody {
    /// The error.
    pub error: ArmError,
}

/// An ARM error and its details.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmError {
    /// Machine-readable code.
    #[serde(default)]
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Nested errors. The service sends `[null]` at times (a real 404 body does); nulls
    /// are skipped rather than failing the whole body.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "details_without_nulls"
    )]
    pub details: Vec<ArmError>,
}

fn details_without_nulls<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ArmError>, D::Error> {
    let details: Option<Vec<Option<ArmError>>> = Deserialize::deserialize(deserializer)?;
    Ok(details.into_iter().flatten().flatten().collect())
}

impl ArmErrorBody {
    /// Builds an error body (the simulator's).
    pub fn new(code: &str, message: &str) -> Self {
        ArmErrorBody {
            error: ArmError {
                code: code.into(),
                message: message.into(),
                details: Vec::new(),
            },
        }
    }
}

impl ArmJob {
    /// Maps the resource onto the watched fields and the stored document, the drives'
    /// BitLocker keys set apart in the document (see [`Document::render`]).
    pub fn into_parts(mut self) -> (JobSnapshot, Document) {
        for drive in self.properties.drive_list.iter_mut().flatten() {
            let other_spelling = super::take_bitlocker_key(&mut drive.other);
            drive.bit_locker_key = drive.bit_locker_key.take().or(other_spelling);
        }
        // Serialising a derived struct with string keys cannot fail.
        let document = Document::new(serde_json::to_value(&self).unwrap_or_default());
        let p = self.properties;
        let error_logs = p
            .drive_list
            .iter()
            .flatten()
            .filter_map(|d| {
                let uri = d.other.get("errorLogUri").and_then(Value::as_str);
                let states = (d.state.as_deref(), d.copy_status.as_deref());
                crate::model::drive_error_log(&p.state, &d.drive_id, states, uri)
            })
            .collect();
        let drives = p.drive_list.unwrap_or_default().into_iter().map(|d| {
            let snapshot =
                DriveSnapshot::new(d.drive_id, d.state, d.copy_status, d.percent_complete);
            (snapshot, d.bit_locker_key)
        });
        let mut job =
            JobSnapshot::assemble(p.job_type, p.state, p.percent_complete, p.cancel_requested);
        job.notices.packages = [
            (PackageKind::Delivery, "deliveryPackage"),
            (PackageKind::Return, "returnPackage"),
        ]
        .into_iter()
        .filter_map(|(kind, key)| {
            let package = p.other.get(key)?;
            let text = |field: &str| {
                package
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            Package::new(kind, text("carrierName"), text("trackingNumber"), None)
        })
        .collect();
        job.notices.error_logs = error_logs;
        document.split(job, drives, ("/properties/driveList", "bitLockerKey"))
    }

    /// The watched fields alone.
    pub fn into_snapshot(self) -> JobSnapshot {
        self.into_parts().0
    }
}
