//! The simulator's Data Box orders (`Microsoft.DataBox/jobs`): what a scenario's steps
//! do to an order's stages, error, delay notices and packages, and the resource as the
//! service sends it (databox.md §1.6, §2): pretty-printed with CRLF, `+00:00` offsets
//! with seven-digit fractions, the year-0001 sentinel, contact details, an address and
//! chain-of-custody SAS URLs — everything iewatch must leave out of what it keeps.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::{documents::fnv, scenario::Step};
use iewatch_core::{model::JobState, source::classic_wire::Job};

/// Bytes on one simulated disk (a multiple of 100, so percentages come out exact).
const DISK_BYTES: i64 = 4_000_000_000_000;
/// Bytes bound for one simulated destination account.
const ACCOUNT_BYTES: i64 = 2_500_000_000_000;

/// One stage reached.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StageRecord {
    name: String,
    status: String,
    at: SystemTime,
}

/// One delay notice.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DelayRecord {
    stage: String,
    code: String,
    started: SystemTime,
    resolved: Option<SystemTime>,
}

/// An order's state beyond the fields a classic document has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderState {
    created: SystemTime,
    stages: Vec<StageRecord>,
    error: Option<(String, String)>,
    actions: Vec<String>,
    delays: Vec<DelayRecord>,
    delivery_tracking: Option<String>,
    return_tracking: Option<String>,
}

impl OrderState {
    /// An order created at `created` in stage `stage`.
    pub fn new(stage: &str, created: SystemTime) -> OrderState {
        OrderState {
            created,
            stages: vec![StageRecord {
                name: stage.to_owned(),
                status: "InProgress".into(),
                at: created,
            }],
            error: None,
            actions: Vec::new(),
            delays: Vec::new(),
            delivery_tracking: None,
            return_tracking: None,
        }
    }

    /// Applies a job-level step at `at` (drive steps change the classic document only).
    pub fn apply(&mut self, step: &Step, at: SystemTime) {
        if step.drive.is_some() {
            return;
        }
        if let Some(stage) = &step.state {
            if let Some(last) = self.stages.last_mut() {
                if last.status == "InProgress" || last.status.starts_with("WaitingFor") {
                    last.status = "Succeeded".into();
                }
            }
            let terminal = JobState::new(stage.clone()).is_terminal();
            self.stages.push(StageRecord {
                name: stage.clone(),
                status: if terminal { "Succeeded" } else { "InProgress" }.into(),
                at,
            });
        }
        // The stage's time is that of its last status change (the clock a waiting stage's
        // 14 days run from).
        if let (Some(status), Some(last)) = (&step.stage_status, self.stages.last_mut()) {
            last.status = status.clone();
            last.at = at;
        }
        if let Some(code) = &step.error_code {
            self.error = (!code.is_empty())
                .then(|| (code.clone(), step.error_message.clone().unwrap_or_default()));
        }
        if let Some(actions) = &step.actions {
            self.actions = actions.clone();
        }
        if let Some(code) = &step.delay {
            let stage = self.stages.last().map_or(String::new(), |s| s.name.clone());
            self.delays.push(DelayRecord {
                stage,
                code: code.clone(),
                started: at,
                resolved: None,
            });
        }
        if let Some(code) = &step.delay_resolved {
            for delay in self.delays.iter_mut().filter(|d| &d.code == code) {
                delay.resolved.get_or_insert(at);
            }
        }
        match step.shipped.as_deref() {
            Some("delivery") => self.delivery_tracking = Some(tracking_id("delivery", at)),
            Some("return") => self.return_tracking = Some(tracking_id("return", at)),
            _ => {}
        }
    }
}

fn tracking_id(kind: &str, at: SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seed = format!("{kind}{secs}");
    format!("1Z{:016X}", fnv(&seed))
}

/// A time as the service writes it: `2026-01-05T09:00:00.1234567+00:00`.
fn service_time(at: SystemTime) -> String {
    let nanos = humantime::format_rfc3339_nanos(at).to_string();
    format!("{}+00:00", &nanos[..nanos.len().saturating_sub(3)])
}

/// The portal's words for a stage, where the service sends them.
fn display_name(stage: &str) -> Option<&'static str> {
    Some(match stage {
        "DeviceOrdered" => "Ordered",
        "DevicePrepared" => "Processed",
        "Dispatched" => "Dispatched",
        "Delivered" => "Delivered",
        "PickedUp" => "Picked up",
        "AtAzureDC" => "Received",
        "DataCopy" => "Data copy in progress",
        "Completed" => "Completed",
        "Cancelled" => "Canceled",
        "AwaitingShipmentDetails" => "Awaiting shipment details",
        "ShippedToAzureDC" => "Shipped",
        "PreparingToShipFromAzureDC" => "Preparing to ship",
        "ShippedToCustomer" => "Shipped to customer",
        _ => return None,
    })
}

/// Where a simulated order lives, for its resource id.
pub struct Placement<'a> {
    /// Subscription.
    pub subscription: &'a str,
    /// Resource group.
    pub resource_group: &'a str,
}

/// The order as `Jobs_Get` returns it; `expand` is `$expand=details`.
pub fn resource(
    job: &Job,
    sku: &str,
    order: &OrderState,
    at: &Placement<'_>,
    expand: bool,
) -> Value {
    let state = job.properties.state.as_str();
    let terminal = JobState::new(state).is_terminal();
    let import = job.properties.job_type.as_deref() != Some("Export");
    let mut properties = json!({
        "transferType": if import { "ImportToAzure" } else { "ExportFromAzure" },
        "isCancellable": !terminal && order.stages.len() < 3,
        "isDeletable": terminal,
        "isShippingAddressEditable": !terminal && order.stages.len() < 2,
        "reverseShippingDetailsUpdate": "NotSupported",
        "reverseTransportPreferenceUpdate": "NotSupported",
        "isPrepareToShipEnabled": false,
        "status": state,
        "startTime": service_time(order.created),
        "deliveryType": "NonScheduled",
        "deliveryInfo": {"scheduledDateTime": "0001-01-01T00:00:00+00:00"},
        "isCancellableWithoutFee": !terminal && order.stages.len() < 2,
    });
    if let Some((code, message)) = &order.error {
        properties["error"] = json!({
            "code": code, "message": message, "target": "CopyIntervention",
            "details": [], "additionalInfo": [],
        });
    }
    if let Some(delay) = order.delays.iter().rev().find(|d| d.resolved.is_none()) {
        properties["delayedStage"] = delay.stage.clone().into();
    }
    properties["details"] = details(job, sku, order, expand);
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DataBox/jobs/{}",
        at.subscription, at.resource_group, job.name
    );
    let last_change = order.stages.last().map_or(order.created, |s| s.at);
    json!({
        "properties": properties,
        "location": "westus",
        "tags": {},
        "sku": {"name": sku, "model": sku},
        "identity": {"type": "None"},
        "name": job.name,
        "id": id,
        "type": "Microsoft.DataBox/jobs",
        "systemData": {
            "createdBy": "johndoe@example.com",
            "createdByType": "User",
            "createdAt": service_time(order.created),
            "lastModifiedBy": "johndoe@example.com",
            "lastModifiedByType": "User",
            "lastModifiedAt": service_time(last_change),
        },
    })
}

/// `properties.details`: the contact, address and key fields always (as newer
/// api-versions send them even without `$expand`), stages, progress, packages and the
/// SAS keys only with `$expand=details`.
// Long: the document's shape, field by field, as the service sends it (databox.md).
fn details(job: &Job, sku: &str, order: &OrderState, expand: bool) -> Value {
    let mut details = Map::new();
    details.insert(
        "contactDetails".into(),
        json!({
            "contactName": "John Doe",
            "phone": "14255550100",
            "emailList": ["johndoe@example.com"],
            "notificationPreference": [{"stageName": "AtAzureDC", "sendNotification": true},
                                       {"stageName": "DataCopy", "sendNotification": true}],
        }),
    );
    details.insert(
        "shippingAddress".into(),
        json!({
            "streetAddress1": "One Microsoft Way", "city": "Redmond", "stateOrProvince": "WA",
            "country": "US", "postalCode": "98052", "companyName": "Contoso", "addressType": "Commercial",
        }),
    );
    details.insert("jobDetailsType".into(), sku.into());
    details.insert(
        "keyEncryptionKey".into(),
        json!({"kekType": "MicrosoftManaged"}),
    );
    let drives = job.drive_list.as_deref().unwrap_or_default();
    if sku == "DataBoxCustomerDisk" {
        let disks: Map<String, Value> = drives
            .iter()
            .map(|d| {
                (
                    d.drive_id.clone(),
                    json!({"manifestFile": "\\DriveManifest.xml", "manifestHash": d.manifest_hash}),
                )
            })
            .collect();
        details.insert("importDiskDetailsCollection".into(), disks.into());
        details.insert(
            "returnToCustomerPackageDetails".into(),
            json!({"carrierName": "FedEx"}),
        );
    }
    if !expand {
        return details.into();
    }
    let stages: Vec<Value> = lifecycle(sku, order, job.properties.state.as_str())
        .iter()
        .map(|stage| {
            let mut value = json!({ "stageName": stage.name, "stageStatus": stage.status });
            if stage.status != "None" {
                value["stageTime"] = service_time(stage.at).into();
            }
            if let Some(name) = display_name(&stage.name) {
                value["displayName"] = name.into();
            }
            let delays: Vec<Value> = order
                .delays
                .iter()
                .filter(|d| d.stage == stage.name)
                .map(|d| {
                    let mut delay = json!({
                        "status": if d.resolved.is_some() { "Resolved" } else { "Active" },
                        "errorCode": d.code,
                        "description": format!("{} on the {} stage.", d.code, stage.name),
                        "startTime": service_time(d.started),
                    });
                    if let Some(resolved) = d.resolved {
                        delay["resolutionTime"] = service_time(resolved).into();
                    }
                    delay
                })
                .collect();
            if !delays.is_empty() {
                value["delayInformation"] = delays.into();
            }
            value
        })
        .collect();
    details.insert("jobStages".into(), stages.into());
    details.insert("copyProgress".into(), copy_progress(job, sku).into());
    let package = |tracking: &Option<String>| match tracking {
        Some(id) => json!({
            "carrierName": "UPS", "trackingId": id,
            "trackingUrl": format!("https://www.ups.com/track?tracknum={id}"),
        }),
        None => json!({"carrierName": "", "trackingId": "", "trackingUrl": ""}),
    };
    if sku == "DataBoxCustomerDisk" {
        let inbound = order.delivery_tracking.as_ref().map_or(
            json!({"carrierName": "", "trackingId": ""}),
            |id| json!({"carrierName": "UPS", "trackingId": id}),
        );
        details.insert("deliverToDcPackageDetails".into(), inbound);
        details.insert("deliveryPackage".into(), package(&None));
    } else {
        details.insert("deliveryPackage".into(), package(&order.delivery_tracking));
    }
    details.insert("returnPackage".into(), package(&order.return_tracking));
    details.insert("actions".into(), json!(order.actions));
    details.insert("copyLogDetails".into(), copy_log_details(job, sku).into());
    let sas = |container: &str| {
        format!(
            "https://sim{:08x}.blob.core.windows.net/{container}/{}.txt?sv=2016-05-31&sr=b&sig=Tz0aFakeSignature%2BForTests%3D&st=2026-01-05T09%3A00%3A00Z&se=2026-12-31T09%3A00%3A00Z&sp=r",
            fnv(&job.name) & 0xffff_ffff,
            job.name
        )
    };
    details.insert("chainOfCustodySasKey".into(), sas("chainofcustody").into());
    details.insert(
        "reverseShipmentLabelSasKey".into(),
        sas("shipmentlabel").into(),
    );
    details.insert("dataCenterCode".into(), "SN6".into());
    details.into()
}

/// The stages as the service lists them: the SKU's whole path, stages passed before the
/// order was first seen `Succeeded`, those to come `None`; an order that ended other
/// than `Completed` lists only the stages it reached (as the recorded cancelled order
/// does).
fn lifecycle(sku: &str, order: &OrderState, current: &str) -> Vec<StageRecord> {
    let path: &[&str] = match sku {
        "DataBoxCustomerDisk" => &[
            "AwaitingShipmentDetails",
            "ShippedToAzureDC",
            "AtAzureDC",
            "DataCopy",
            "PreparingToShipFromAzureDC",
            "ShippedToCustomer",
            "Completed",
        ],
        _ => &[
            "DeviceOrdered",
            "DevicePrepared",
            "Dispatched",
            "Delivered",
            "PickedUp",
            "AtAzureDC",
            "DataCopy",
            "Completed",
        ],
    };
    if JobState::new(current).is_terminal() && current != "Completed" {
        return order.stages.clone();
    }
    let reached = path.iter().position(|s| *s == current).unwrap_or(0);
    let mut stages: Vec<StageRecord> = path
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let seen = order.stages.iter().rev().find(|s| s.name == *name);
            seen.cloned().unwrap_or_else(|| StageRecord {
                name: (*name).to_owned(),
                status: if i < reached { "Succeeded" } else { "None" }.into(),
                at: order.created,
            })
        })
        .collect();
    stages.extend(
        order
            .stages
            .iter()
            .filter(|s| !path.contains(&s.name.as_str()))
            .cloned(),
    );
    stages
}

fn with_errors(drive: &iewatch_core::source::classic_wire::Drive) -> bool {
    drive.copy_status.as_deref() == Some("CompletedWithErrors")
}

/// `copyLogDetails` in the SKU's shape, for the units whose copy ended with errors: links
/// relative to the destination account's blob endpoint, as the service gives them.
fn copy_log_details(job: &Job, sku: &str) -> Vec<Value> {
    let drives = job.drive_list.as_deref().unwrap_or_default();
    drives
        .iter()
        .filter(|d| with_errors(d))
        .map(|d| {
            let link = |kind: &str| {
                format!(
                    "databoxcopylog/{}_{}_{kind}_{:08x}.xml",
                    job.name,
                    d.drive_id,
                    fnv(&d.drive_id) & 0xffff_ffff
                )
            };
            match sku {
                "DataBox" => json!({"copyLogDetailsType": sku, "accountName": d.drive_id,
                                    "copyLogLink": link("CopyLog")}),
                "DataBoxHeavy" => json!({"copyLogDetailsType": sku, "accountName": d.drive_id,
                                         "copyLogLink": [link("CopyLog")], "copyVerboseLogLink": []}),
                "DataBoxDisk" => json!({"copyLogDetailsType": sku, "diskSerialNumber": d.drive_id,
                                        "errorLogLink": link("error"), "verboseLogLink": ""}),
                _ => json!({"copyLogDetailsType": "DataBoxCustomerDisk", "serialNumber": d.drive_id,
                            "errorLogLink": link("error"), "verboseLogLink": ""}),
            }
        })
        .collect()
}

/// `copyProgress` in the SKU's shape, for the units the copy has reached.
fn copy_progress(job: &Job, sku: &str) -> Vec<Value> {
    let drives = job.drive_list.as_deref().unwrap_or_default();
    drives
        .iter()
        .filter(|d| d.copy_status.is_some() || d.percent_complete.is_some())
        .map(|d| {
            let percent = d.percent_complete.unwrap_or(0).clamp(0, 100);
            match sku {
                "DataBoxDisk" => json!({
                    "serialNumber": d.drive_id,
                    "storageAccountName": "simdest",
                    "bytesCopied": DISK_BYTES / 100 * percent,
                    "percentComplete": percent,
                    "status": d.copy_status.as_deref().unwrap_or("InProgress"),
                }),
                "DataBox" | "DataBoxHeavy" => json!({
                    "storageAccountName": d.drive_id,
                    "transferType": "ImportToAzure",
                    "dataAccountType": "StorageAccount",
                    "accountId": format!("/subscriptions/sim/resourceGroups/sim/providers/Microsoft.Storage/storageAccounts/{}", d.drive_id),
                    "bytesProcessed": ACCOUNT_BYTES / 100 * percent,
                    "totalBytesToProcess": ACCOUNT_BYTES,
                    "filesProcessed": percent * 1000,
                    "totalFilesToProcess": 100_000,
                    "invalidFilesProcessed": 0,
                    "filesErroredOut": if with_errors(d) { 3 } else { 0 },
                    "directoriesErroredOut": 0,
                    "isEnumerationInProgress": false,
                }),
                _ => json!({
                    "serialNumber": d.drive_id,
                    "copyStatus": d.copy_status.as_deref().unwrap_or("InProgress"),
                    "storageAccountName": "simdest",
                    "transferType": "ImportToAzure",
                    "dataAccountType": "StorageAccount",
                    "bytesProcessed": DISK_BYTES / 100 * percent,
                    "totalBytesToProcess": DISK_BYTES,
                    "filesProcessed": percent * 500,
                    "totalFilesToProcess": 50_000,
                    "filesErroredOut": if with_errors(d) { 3 } else { 0 },
                    "isEnumerationInProgress": false,
                }),
            }
        })
        .collect()
}

/// The body as the service writes it: two-space indented JSON with CRLF line ends.
pub fn service_body(value: &Value) -> Vec<u8> {
    serde_json::to_string_pretty(value)
        .unwrap_or_default()
        .replace('\n', "\r\n")
        .into_bytes()
}
