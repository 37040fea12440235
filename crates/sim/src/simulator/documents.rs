//! The documents a simulated job goes through: its first version, the drives it gains,
//! each step applied, and the body as the service sends it (BitLocker keys included).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::scenario::{ScenarioError, ScenarioJob, Step, Version, DEFAULT_STORAGE_ACCOUNT};
use iewatch_core::source::classic_wire::{
    Drive, Job, Package, Properties, ReturnAddress, ShippingInformation,
};

pub(super) fn initial_document(spec: &ScenarioJob, name: &str, subscription: &str) -> Job {
    let base = format!("https://management.core.windows.net/{subscription}/services/importexport");
    Job {
        odata_metadata: Some(format!(
            "{base}/$metadata#Microsoft.Cis.Services.ImportExport.Public.ImportExportData.Jobs/@Element"
        )),
        odata_type: None,
        odata_id: Some(name.to_owned()),
        odata_edit_link: Some(format!("{base}/jobs/{name}")),
        name: name.to_owned(),
        properties: Properties {
            location: Some("South Central US".into()),
            job_type: Some(spec.job_type.clone()),
            friendly_name: Some(format!("{name} (iewatch simulator)")),
            description: Some("A simulated job of the Windows Azure Import/Export service.".into()),
            state: spec.state.clone(),
            cancel_requested: Some(false),
            return_address: Some(ReturnAddress {
                name: Some("John Doe".into()),
                address: Some("One Microsoft Way, Redmond, WA 98052".into()),
                phone: Some("1-800-000-0000".into()),
                email: Some("johndoe@example.com".into()),
            }),
            shipping_information: Some(ShippingInformation {
                name: Some("Windows Azure Import Export Service".into()),
                address: Some("1111 First Ave;;Any City;WA;98999;USA".into()),
            }),
            import_export_states_path: Some("waimportexport".into()),
            enable_verbose_log: Some(true),
            backup_drive_manifest: Some(false),
            ..Properties::default()
        },
        drive_list: (!spec.drives.is_empty()).then(|| {
            spec.drives.iter().map(|d| new_drive(&d.id, d.state.clone(), &spec.job_type)).collect()
        }),
        export: (spec.job_type == "Export").then(|| iewatch_core::source::classic_wire::Export {
            blob_list: Some(iewatch_core::source::classic_wire::BlobList {
                blob_path: vec![],
                blob_path_prefix: vec!["/backups/".into()],
            }),
            blob_list_blob_path: None,
        }),
    }
}

pub(super) fn new_drive(id: &str, state: Option<String>, job_type: &str) -> Drive {
    let default_state = if job_type == "Export" {
        "Received"
    } else {
        "Specified"
    };
    Drive {
        drive_id: id.to_owned(),
        // Import drives carry their key from Put Job; export keys appear when shipped back.
        bit_locker_key: (job_type != "Export")
            .then(|| iewatch_core::model::BitLockerKey::new(fake_key(id))),
        manifest_file: Some("\\DriveManifest.xml".into()),
        manifest_hash: Some(format!("{:032X}", fnv(id) as u128 * 0x9E37_79B9)),
        state: Some(state.unwrap_or_else(|| default_state.to_owned())),
        ..Drive::default()
    }
}

pub(super) fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

pub(super) fn fake_key(id: &str) -> String {
    let mut h = fnv(id);
    (0..8)
        .map(|_| {
            h = h.rotate_left(13).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!("{:06}", h % 1_000_000)
        })
        .collect::<Vec<_>>()
        .join("-")
}

// One match over every kind of step; splitting it would scatter the scenario language.
pub(super) fn apply_step(
    job: Option<Job>,
    step: &Step,
    job_type: &str,
    blob_host: Option<&str>,
) -> Result<Option<Job>, ScenarioError> {
    let Some(mut job) = job else { return Ok(None) };
    if step.delete {
        return Ok(None);
    }
    match &step.drive {
        None => {
            if step.copy_status.is_some() || step.remove {
                return Err(ScenarioError::Invalid(format!(
                    "step at {}: copy_status and remove need a drive",
                    step.at
                )));
            }
            let props = &mut job.properties;
            if let Some(state) = &step.state {
                props.state = state.clone();
                if props.delivery_package.is_none() && state != "Creating" {
                    props.delivery_package = Some(Package {
                        carrier_name: Some("FedEx".into()),
                        tracking_number: Some("999999999999".into()),
                        drive_count: Some(job.drive_list.as_ref().map_or(0, |d| d.len() as i64)),
                        ship_date: Some("4/30/2014 12:25:40 AM".into()),
                    });
                }
                if matches!(state.as_str(), "Completed" | "Closed") {
                    props.return_package = Some(Package {
                        carrier_name: Some("FedEx".into()),
                        tracking_number: Some("888888888888".into()),
                        drive_count: Some(job.drive_list.as_ref().map_or(0, |d| d.len() as i64)),
                        ship_date: Some("5/20/2014 3:10:00 PM".into()),
                    });
                }
            }
            if let Some(percent) = step.percent_complete {
                props.percent_complete = Some(percent);
            }
            if let Some(cancel) = step.cancel_requested {
                props.cancel_requested = Some(cancel);
            }
        }
        Some(id) => {
            let drives = job.drive_list.get_or_insert_with(Vec::new);
            if step.remove {
                drives.retain(|d| &d.drive_id != id);
            } else {
                let index = match drives.iter().position(|d| &d.drive_id == id) {
                    Some(index) => index,
                    None => {
                        drives.push(new_drive(id, None, job_type));
                        drives.len() - 1
                    }
                };
                let drive = &mut drives[index];
                if let Some(state) = &step.state {
                    drive.state = Some(state.clone());
                    if state == "ShippedBack" && drive.bit_locker_key.is_none() {
                        drive.bit_locker_key =
                            Some(iewatch_core::model::BitLockerKey::new(fake_key(id)));
                    }
                }
                if let Some(status) = &step.copy_status {
                    drive.copy_status = Some(status.clone());
                    let account = DEFAULT_STORAGE_ACCOUNT;
                    let base = blob_host.map_or_else(
                        || format!("https://{account}.blob.core.windows.net"),
                        |host| format!("https://{host}/{account}"),
                    );
                    drive.error_log_uri = Some(format!(
                        "{base}/waimportexport/waies/{}_{}_error.xml",
                        job.name, id
                    ));
                }
                if let Some(percent) = step.percent_complete {
                    drive.percent_complete = Some(percent);
                }
            }
            if drives.is_empty() {
                job.drive_list = None;
            }
        }
    }
    Ok(Some(job))
}

pub(super) fn version(since: Duration, job: Option<&Job>, epoch: SystemTime) -> Version {
    let modified_at = epoch + since;
    let stamp = humantime::format_rfc3339_nanos(modified_at).to_string();
    // 2026-01-05T09:00:00.123456789Z -> 2026-01-05T09:00:00.1234567Z, ':' escaped as the
    // service does.
    let seven_digits = format!("{}Z", &stamp[..stamp.len() - 3]);
    let etag = format!("W/\"datetime'{}'\"", seven_digits.replace(':', "%3A"));
    Version {
        since,
        job: job.cloned(),
        body: job
            .map(|j| bytes::Bytes::from(service_json(j, false)))
            .unwrap_or_default(),
        etag,
        last_modified: httpdate::fmt_http_date(modified_at),
        modified_at,
        databox: None,
    }
}

/// The document as the service sends it: BitLocker keys included (iewatch's own
/// serialisation never writes them), and in 2014-05-01 the states path under its old name.
pub fn service_json(job: &Job, version_2014_05_01: bool) -> Vec<u8> {
    let mut value = serde_json::to_value(job).unwrap_or(Value::Null);
    if let (Some(drives), Some(list)) = (
        value.get_mut("DriveList").and_then(Value::as_array_mut),
        &job.drive_list,
    ) {
        for (json, drive) in drives.iter_mut().zip(list) {
            if let (Some(object), Some(key)) = (json.as_object_mut(), &drive.bit_locker_key) {
                object.insert(
                    "BitLockerKey".into(),
                    Value::String(key.expose().to_owned()),
                );
            }
        }
    }
    if version_2014_05_01 {
        if let Some(props) = value.get_mut("Properties").and_then(Value::as_object_mut) {
            if let Some(path) = props.remove("ImportExportStatesPath") {
                props.insert("ImportExportStatesContainer".into(), path);
            }
        }
    }
    serde_json::to_vec(&value).unwrap_or_default()
}
