//! The Get Job response body of the classic Service Management API, element by element as
//! spec/get-job.txt lists them. Optional elements are `Option`s (the service leaves them
//! out rather than sending null), unknown elements are ignored, and enum-like strings are
//! kept as they come. The simulator serialises the same types, so both ends agree.

use serde::{Deserialize, Serialize};

use super::Document;
use crate::model::{self, BitLockerKey, DriveSnapshot, JobSnapshot, PackageKind};

/// A Get Job response body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `odata.metadata`, kept so the simulator can send it.
    #[serde(rename = "odata.metadata", skip_serializing_if = "Option::is_none")]
    pub odata_metadata: Option<String>,
    /// `odata.type`.
    #[serde(rename = "odata.type", skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    /// `odata.id`.
    #[serde(rename = "odata.id", skip_serializing_if = "Option::is_none")]
    pub odata_id: Option<String>,
    /// `odata.editLink`.
    #[serde(rename = "odata.editLink", skip_serializing_if = "Option::is_none")]
    pub odata_edit_link: Option<String>,
    /// The job's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The job's properties.
    #[serde(rename = "Properties")]
    pub properties: Properties,
    /// The drives; absent when the job has none yet.
    #[serde(rename = "DriveList", default, skip_serializing_if = "Option::is_none")]
    pub drive_list: Option<Vec<Drive>>,
    /// Blob selection of an export job. The spec's layout shows it beside `Properties`;
    /// it is accepted there or inside `Properties`.
    #[serde(rename = "Export", default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
}

/// `Properties` of a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Properties {
    /// Where the job is processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `Import` or `Export`.
    #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// Human-readable name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// Human-readable description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Job metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// The job's state; see states.md.
    pub state: String,
    /// Whether cancellation was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
    /// Overall percentage of bytes copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<i64>,
    /// Where the drives go back to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_address: Option<ReturnAddress>,
    /// The customer's return carrier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_shipping: Option<ReturnShipping>,
    /// The datacenter the drives are shipped to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_information: Option<ShippingInformation>,
    /// The package the customer sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_package: Option<Package>,
    /// The package coming back; absent until drives are returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_package: Option<Package>,
    /// Container or virtual directory for logs; `ImportExportStatesContainer` in 2014-05-01.
    #[serde(
        alias = "ImportExportStatesContainer",
        skip_serializing_if = "Option::is_none"
    )]
    pub import_export_states_path: Option<String>,
    /// Whether a verbose log is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_verbose_log: Option<bool>,
    /// Whether drive manifests are backed up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_drive_manifest: Option<bool>,
    /// Blobs that did not fit on the export drives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete_blob_list_uri: Option<String>,
    /// Export selection, when the service nests it in `Properties`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
}

/// `ReturnAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReturnAddress {
    /// Recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Postal address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// E-mail address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `ReturnShipping`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReturnShipping {
    /// Carrier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier_name: Option<String>,
    /// The customer's account with the carrier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier_account_number: Option<String>,
}

/// `ShippingInformation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShippingInformation {
    /// Recipient at the datacenter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Datacenter address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// `DeliveryPackage` and `ReturnPackage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Package {
    /// Carrier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier_name: Option<String>,
    /// Tracking number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// Drives in the package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drive_count: Option<i64>,
    /// A culture string such as `4/30/2014 12:25:40 AM`, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship_date: Option<String>,
}

/// One entry of `DriveList`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Drive {
    /// Serial number.
    pub drive_id: String,
    /// Never serialised by iewatch: see [`BitLockerKey`].
    #[serde(skip_serializing)]
    pub bit_locker_key: Option<BitLockerKey>,
    /// Manifest path on the drive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_file: Option<String>,
    /// MD5 of the manifest, base16.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_hash: Option<String>,
    /// Drive state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Copy status; absent until Transferring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_status: Option<String>,
    /// Percentage copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<i64>,
    /// Verbose log blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbose_log_uri: Option<String>,
    /// Error log blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_log_uri: Option<String>,
    /// Manifest backup blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_uri: Option<String>,
    /// Elements the spec does not list: read only to find a BitLocker key under another
    /// spelling, never stored.
    #[serde(flatten, skip_serializing)]
    pub unlisted: serde_json::Map<String, serde_json::Value>,
}

/// `Export`: which blobs an export job copies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Export {
    /// An explicit list of paths and prefixes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_list: Option<BlobList>,
    /// A blob holding such a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_list_blob_path: Option<String>,
}

/// `BlobList`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlobList {
    /// Blob paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blob_path: Vec<String>,
    /// Blob path prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blob_path_prefix: Vec<String>,
}

/// The `odata.error` body of a failed request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    #[serde(rename = "odata.error")]
    pub error: ODataError,
}

/// The content of `odata.error`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ODataError {
    /// The HTTP status, as a string.
    #[serde(default)]
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: ErrorMessage,
    /// `[{"ExtendedCode": ..}, {"ExtendedInformation": ..}]`.
    #[serde(
        rename = "azure.values",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub azure_values: Vec<AzureValue>,
}

/// `odata.error.message`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Language tag.
    #[serde(default)]
    pub lang: String,
    /// The message.
    #[serde(default)]
    pub value: String,
}

/// One entry of `azure.values`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureValue {
    /// A predefined error code.
    #[serde(rename = "ExtendedCode", skip_serializing_if = "Option::is_none")]
    pub extended_code: Option<String>,
    /// Diagnostic detail.
    #[serde(
        rename = "ExtendedInformation",
        skip_serializing_if = "Option::is_none"
    )]
    pub extended_information: Option<String>,
}

impl ErrorBody {
    /// Builds the body the service sends for a failed request.
    pub fn new(status: u16, message: impl Into<String>, extended_code: Option<&str>) -> Self {
        ErrorBody {
            error: ODataError {
                code: status.to_string(),
                message: ErrorMessage {
                    lang: "en-US".into(),
                    value: message.into(),
                },
                azure_values: extended_code
                    .map(|code| {
                        vec![AzureValue {
                            extended_code: Some(code.into()),
                            extended_information: None,
                        }]
                    })
                    .unwrap_or_default(),
            },
        }
    }
}

impl Job {
    /// The blob selection, wherever the service put it.
    pub fn export_selection(&self) -> Option<&Export> {
        self.export.as_ref().or(self.properties.export.as_ref())
    }

    /// Maps the wire document onto the watched fields and the stored document, the
    /// drives' BitLocker keys set apart in the document (see [`Document::render`]).
    pub fn into_parts(mut self) -> (JobSnapshot, Document) {
        for drive in self.drive_list.iter_mut().flatten() {
            let other_spelling = super::take_bitlocker_key(&mut drive.unlisted);
            drive.bit_locker_key = drive.bit_locker_key.take().or(other_spelling);
        }
        // Serialising a derived struct with string keys cannot fail.
        let document = Document::new(serde_json::to_value(&self).unwrap_or_default());
        let p = self.properties;
        let error_logs = self
            .drive_list
            .iter()
            .flatten()
            .filter_map(|d| {
                let states = (d.state.as_deref(), d.copy_status.as_deref());
                let uri = d.error_log_uri.as_deref();
                model::drive_error_log(&p.state, &d.drive_id, states, uri)
            })
            .collect();
        let drives = self.drive_list.unwrap_or_default().into_iter().map(|d| {
            let snapshot =
                DriveSnapshot::new(d.drive_id, d.state, d.copy_status, d.percent_complete);
            (snapshot, d.bit_locker_key)
        });
        let mut job =
            JobSnapshot::assemble(p.job_type, p.state, p.percent_complete, p.cancel_requested);
        let packages = [
            (PackageKind::Delivery, p.delivery_package),
            (PackageKind::Return, p.return_package),
        ];
        job.notices.packages = packages
            .into_iter()
            .filter_map(|(kind, p)| {
                let p = p?;
                model::Package::new(kind, p.carrier_name, p.tracking_number, None)
            })
            .collect();
        job.notices.error_logs = error_logs;
        document.split(job, drives, ("/DriveList", "BitLockerKey"))
    }

    /// The watched fields alone.
    pub fn into_snapshot(self) -> JobSnapshot {
        self.into_parts().0
    }
}
