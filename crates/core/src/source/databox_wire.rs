//! The Data Box shape of a job (`Microsoft.DataBox/jobs`, api-version 2025-07-01, read
//! with `$expand=details`; databox.md). One type serves all four SKUs. Only the fields
//! listed here are read, and the stored document is exactly these fields serialised
//! back: a whitelist, so contact details, addresses, SAS keys, passwords and disk keys
//! never reach the database, a log line or a payload. Any string that still carries a
//! SAS signature (`sig=`) is replaced before anything else sees it.

use std::{collections::BTreeMap, time::Duration};

use serde::{de::IgnoredAny, Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::Document;
use crate::model::{
    self, ActionRequired, Delay, DriveSnapshot, ErrorLogRef, JobSnapshot, Notices, Package,
    PackageKind,
};
use crate::moment::Moment;

/// How long a copy that waits for the customer waits before the service completes the
/// order by itself (databox.md §3.5, "completes automatically after 14 days").
pub const ACTION_AUTO_COMPLETE: Duration = Duration::from_secs(14 * 86_400);

/// A Data Box job resource, whitelisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataBoxJob {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The order's name.
    pub name: String,
    /// `Microsoft.DataBox/jobs`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Azure region, as the service spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    /// When the order was created and last written (never who: that is an address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_data: Option<SystemData>,
    /// The order's properties.
    pub properties: Properties,
}

/// `sku`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    /// `DataBox`, `DataBoxDisk`, `DataBoxHeavy`, `DataBoxCustomerDisk`, or newer.
    pub name: String,
    /// The device model, in newer responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `systemData`, times only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemData {
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Last write through Resource Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_at: Option<String>,
}

/// `properties`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Properties {
    /// `ImportToAzure` or `ExportFromAzure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_type: Option<String>,
    /// The stage in progress: the job's state.
    pub status: String,
    /// A stage where a delay may be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed_stage: Option<String>,
    /// Whether the order can still be cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_cancellable: Option<bool>,
    /// Whether it can be deleted (true once it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_deletable: Option<bool>,
    /// When the order started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Why the order was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<String>,
    /// The job's top-level error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Stages, progress and shipping (only with `$expand=details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

/// `error` of a job or of a unit's copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Machine-readable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The service's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What it is about (`CopyIntervention`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `properties.details`, the fields a watcher reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    /// The SKU again (the discriminator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_details_type: Option<String>,
    /// Every stage, reached or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_stages: Vec<Stage>,
    /// Progress per disk or per destination account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_progress: Vec<CopyProgress>,
    /// Device to the customer (Data Box), or the package the customer sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_package: Option<Shipment>,
    /// Device back to Azure, or disks back to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_package: Option<Shipment>,
    /// CustomerDisk: the customer's shipment to the datacenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_to_dc_package_details: Option<Shipment>,
    /// What the customer may do now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// The datacenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_center_code: Option<String>,
    /// CustomerDisk imports: disk serial → manifest and key. Read for the serials only.
    #[serde(default, skip_serializing)]
    pub import_disk_details_collection: BTreeMap<String, IgnoredAny>,
    /// CustomerDisk exports: disk serial → manifest.
    #[serde(default, skip_serializing)]
    pub export_disk_details_collection: BTreeMap<String, IgnoredAny>,
    /// Data Box Disk: serial → size, once the disks are shipped.
    #[serde(default, skip_serializing)]
    pub disks_and_size_details: BTreeMap<String, IgnoredAny>,
    /// The disks the collections above name (stored instead of the collections).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_serials: Vec<String>,
    /// Where each destination account's (or disk's) copy log is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_log_details: Vec<CopyLogDetails>,
}

/// One `copyLogDetails` entry (any of its four discriminated shapes): a link relative to
/// the destination account's blob endpoint (`databoxcopylog/...xml`), or a list of them
/// (Data Box Heavy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyLogDetails {
    /// `DataBox`, `DataBoxDisk`, `DataBoxHeavy` or `DataBoxCustomerDisk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_log_details_type: Option<String>,
    /// The destination account (DataBox, Heavy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// The copy log (DataBox: a string; Heavy: an array of strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_log_link: Option<Value>,
    /// Data Box Disk: the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_serial_number: Option<String>,
    /// CustomerDisk: the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Disk and CustomerDisk: the error log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_log_link: Option<String>,
}

impl CopyLogDetails {
    /// The unit (account or disk) and each of its log links.
    fn links(&self) -> Option<(&str, Vec<&str>)> {
        let owner = self
            .account_name
            .as_deref()
            .or(self.disk_serial_number.as_deref())
            .or(self.serial_number.as_deref())?;
        let mut links: Vec<&str> = match &self.copy_log_link {
            Some(Value::String(link)) => vec![link.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        links.extend(self.error_log_link.as_deref());
        links.retain(|l| !l.trim().is_empty());
        Some((owner, links))
    }
}

/// One entry of `jobStages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// StageName.
    pub stage_name: String,
    /// The portal's words; absent at times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// StageStatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_status: Option<String>,
    /// When the stage was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_time: Option<String>,
    /// Delay notices of the stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delay_information: Vec<DelayInformation>,
}

/// One `delayInformation` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayInformation {
    /// `Active` or `Resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `HighDemandDelay`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The service's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution_time: Option<String>,
}

/// `deliveryPackage`, `returnPackage`, `deliverToDcPackageDetails`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shipment {
    /// Carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_name: Option<String>,
    /// Tracking id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<String>,
    /// The carrier's tracking page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_url: Option<String>,
}

/// One `copyProgress` entry: a disk (Disk, CustomerDisk) or a destination account
/// (DataBox, Heavy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyProgress {
    /// Disk serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Destination storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_name: Option<String>,
    /// Destination account or managed-disk resource group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// `StorageAccount` or `ManagedDisk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_account_type: Option<String>,
    /// CustomerDisk and Disk-granular copy status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_status: Option<String>,
    /// Data Box Disk copy status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Data Box Disk: the service's percentage.
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub percent_complete: Option<i64>,
    /// Bytes processed.
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytes_processed: Option<i64>,
    /// Bytes sent (api-versions before 2020).
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytes_sent_to_cloud: Option<i64>,
    /// Data Box Disk: bytes copied.
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytes_copied: Option<i64>,
    /// Bytes to process, once enumeration is over.
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_bytes_to_process: Option<i64>,
    /// While true, the total is not known yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_enumeration_in_progress: Option<bool>,
    /// Files processed.
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub files_processed: Option<i64>,
    /// Files to process.
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_files_to_process: Option<i64>,
    /// Files that failed.
    #[serde(
        default,
        deserialize_with = "count",
        skip_serializing_if = "Option::is_none"
    )]
    pub files_errored_out: Option<i64>,
    /// The unit's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// What the customer may do about it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

/// A non-negative count; anything else (negative, fractional, a string) is unknown
/// rather than a failed document: one odd counter must not hide the job's state.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.and_then(|v| v.as_i64()).filter(|n| *n >= 0))
}

impl CopyProgress {
    /// The unit's key: the disk's serial number, else the account's name, else its id.
    fn unit_id(&self) -> Option<&str> {
        [
            &self.serial_number,
            &self.storage_account_name,
            &self.account_id,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .find(|id| !id.is_empty())
    }

    /// (processed, total) when the total is known.
    fn bytes(&self) -> Option<(i64, i64)> {
        let total = self.total_bytes_to_process.filter(|t| *t > 0)?;
        if self.is_enumeration_in_progress == Some(true) {
            return None;
        }
        let done = self
            .bytes_processed
            .or(self.bytes_sent_to_cloud)
            .or(self.bytes_copied)?;
        Some((done, total))
    }

    /// The service's percentage where it gives one, else from the bytes.
    fn percent(&self) -> Option<i64> {
        self.percent_complete
            .or_else(|| self.bytes().map(|(done, total)| percent_of(done, total)))
    }
}

/// `floor(100 × done / total)` within 0..=100, without overflow.
fn percent_of(done: i64, total: i64) -> i64 {
    if total <= 0 {
        return 0;
    }
    let percent = i128::from(done.max(0)) * 100 / i128::from(total);
    i64::try_from(percent.clamp(0, 100)).unwrap_or(100)
}

/// Replaces every string that carries a SAS signature by `[redacted]`.
fn scrub_signatures(value: &mut Value) {
    match value {
        Value::String(text) if text.to_ascii_lowercase().contains("sig=") => {
            *text = "[redacted]".into();
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_signatures),
        Value::Object(fields) => fields.values_mut().for_each(scrub_signatures),
        _ => {}
    }
}

impl DataBoxJob {
    /// Parses a Jobs_Get body: the whitelist, then the signatures scrubbed.
    ///
    /// # Errors
    /// The body is not a Data Box job.
    pub fn parse(body: &[u8]) -> Result<DataBoxJob, serde_json::Error> {
        let mut job: DataBoxJob = serde_json::from_slice(body)?;
        if let Some(details) = &mut job.properties.details {
            // Each serial once, whichever collections name it.
            let serials: std::collections::BTreeSet<&String> = details
                .import_disk_details_collection
                .keys()
                .chain(details.export_disk_details_collection.keys())
                .chain(details.disks_and_size_details.keys())
                .collect();
            details.disk_serials = serials.into_iter().cloned().collect();
        }
        let mut projection = serde_json::to_value(&job)?;
        scrub_signatures(&mut projection);
        serde_json::from_value(projection)
    }

    /// Maps the order onto the watched fields and the stored document (the whitelisted
    /// projection; it holds no secret to set apart).
    pub fn into_parts(self) -> (JobSnapshot, Document) {
        // Serialising a derived struct with string keys cannot fail.
        let document = Document::new(serde_json::to_value(&self).unwrap_or_default());
        let p = self.properties;
        let details = p.details.unwrap_or_default();
        let mut job = JobSnapshot::assemble(p.transfer_type, p.status, None, None);
        job.sku = self.sku.map(|s| s.name);
        for unit in &details.copy_progress {
            let Some(id) = unit.unit_id() else { continue };
            let status = unit.copy_status.clone().or_else(|| unit.status.clone());
            job.drives.push(DriveSnapshot::new(
                id.to_owned(),
                None,
                status,
                unit.percent(),
            ));
        }
        for serial in &details.disk_serials {
            if !job.drives.iter().any(|d| d.drive_id.as_str() == serial) {
                job.drives
                    .push(DriveSnapshot::new(serial.clone(), None, None, None));
            }
        }
        job.percent_complete = job_percent(&details.copy_progress);
        job.notices = Notices {
            packages: packages(&details),
            action: action_required(&details, p.error.as_ref()),
            delays: delays(&details.job_stages),
            error_logs: error_logs(job.state.as_str(), &details),
        };
        (job, document)
    }
}

/// The copy logs of the units that ended with errors: every unit once the order's
/// status says errors or warnings, otherwise the units whose progress counts failed
/// files or whose copy status says so. A link that is a URL is kept as one; a relative
/// one is tied to its account.
fn error_logs(status: &str, details: &Details) -> Vec<ErrorLogRef> {
    let order_says = model::ended_with_errors(None, Some(status));
    let unit_says = |owner: &str| {
        details.copy_progress.iter().any(|unit| {
            unit.unit_id() == Some(owner)
                && (unit.files_errored_out.is_some_and(|n| n > 0)
                    || model::ended_with_errors(
                        None,
                        unit.copy_status.as_deref().or(unit.status.as_deref()),
                    ))
        })
    };
    let mut logs = Vec::new();
    for entry in &details.copy_log_details {
        let Some((owner, links)) = entry.links() else {
            continue;
        };
        if !(order_says || unit_says(owner)) {
            continue;
        }
        // Disk entries name no account: the unit's progress does.
        let account = entry.account_name.as_deref().or_else(|| {
            details
                .copy_progress
                .iter()
                .find(|unit| unit.unit_id() == Some(owner))
                .and_then(|unit| unit.storage_account_name.as_deref())
        });
        logs.extend(
            links
                .into_iter()
                .map(|link| ErrorLogRef::new(owner, link, account)),
        );
    }
    logs
}

/// Byte-weighted over the units whose totals are known; where the service gives only
/// percentages (Data Box Disk), their mean.
fn job_percent(units: &[CopyProgress]) -> Option<i64> {
    let with_bytes: Vec<(i64, i64)> = units.iter().filter_map(CopyProgress::bytes).collect();
    if !with_bytes.is_empty() {
        let (done, total) = with_bytes
            .iter()
            .fold((0i128, 0i128), |(d, t), (done, total)| {
                (d + i128::from(*done), t + i128::from(*total))
            });
        let percent = (done * 100 / total.max(1)).clamp(0, 100);
        return i64::try_from(percent).ok();
    }
    let percents: Vec<i64> = units.iter().filter_map(|u| u.percent_complete).collect();
    let count = i64::try_from(percents.len()).ok().filter(|n| *n > 0)?;
    let sum = percents
        .iter()
        .fold(0i64, |s, p| s.saturating_add((*p).min(100)));
    Some(sum / count)
}

fn packages(details: &Details) -> Vec<Package> {
    let delivery = details
        .deliver_to_dc_package_details
        .as_ref()
        .filter(|s| s.tracking_id.as_deref().is_some_and(|t| !t.is_empty()))
        .or(details.delivery_package.as_ref());
    [
        (PackageKind::Delivery, delivery),
        (PackageKind::Return, details.return_package.as_ref()),
    ]
    .into_iter()
    .filter_map(|(kind, shipment)| {
        let s = shipment?.clone();
        Package::new(kind, s.carrier_name, s.tracking_id, s.tracking_url)
    })
    .collect()
}

fn action_required(details: &Details, error: Option<&ErrorInfo>) -> Option<ActionRequired> {
    let stage = details.job_stages.iter().find(|s| {
        s.stage_status
            .as_deref()
            .is_some_and(|status| status.starts_with("WaitingForCustomerAction"))
    })?;
    let status = stage.stage_status.clone().unwrap_or_default();
    let since = stage.stage_time.as_deref().and_then(Moment::from_service);
    let auto_complete_at = (stage.stage_name == "DataCopy" && status == "WaitingForCustomerAction")
        .then(|| since.map(|since| since.saturating_add(ACTION_AUTO_COMPLETE)))
        .flatten();
    Some(ActionRequired {
        stage: stage.stage_name.clone(),
        status,
        code: error.and_then(|e| e.code.clone()),
        message: error.and_then(|e| e.message.clone()),
        actions: details.actions.clone(),
        since,
        auto_complete_at,
    })
}

fn delays(stages: &[Stage]) -> Vec<Delay> {
    stages
        .iter()
        .flat_map(|stage| {
            stage.delay_information.iter().map(|d| Delay {
                stage: stage.stage_name.clone(),
                code: d.error_code.clone().unwrap_or_default(),
                description: d.description.clone(),
                status: d.status.clone().unwrap_or_else(|| "Active".into()),
                started_at: d.start_time.as_deref().and_then(Moment::from_service),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
