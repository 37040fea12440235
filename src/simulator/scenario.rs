//! Simulator scenarios: TOML files of jobs with timelines of steps and fault windows, and
//! their compilation into per-job version lists. Everything is computed from simulated
//! time offsets, so the same scenario at the same offsets always yields the same
//! documents, ETags and Last-Modified values.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use serde_json::Value;

use crate::source::classic_wire::{
    Drive, Job, Package, Properties, ReturnAddress, ShippingInformation,
};

/// Default subscription of a scenario: the spec's sample.
pub const DEFAULT_SUBSCRIPTION: &str = "afb1a4eb-bc88-4ce1-b1af-dfec80067464";
/// Default storage account of a scenario job: the spec's sample.
pub const DEFAULT_STORAGE_ACCOUNT: &str = "xttest";
/// Simulated time zero when the scenario names none (fixed, for deterministic ETags).
const DEFAULT_EPOCH: &str = "2026-01-05T09:00:00Z";

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or a reference does not hold.
    #[error("{0}")]
    Invalid(String),
}

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Simulated seconds per real second (86400: a day a second).
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// The one subscription the simulator serves.
    #[serde(default = "default_subscription")]
    pub subscription_id: String,
    /// Simulated time zero, RFC 3339.
    #[serde(default)]
    pub epoch: Option<String>,
    /// Resource Manager side: the resource group the jobs are in.
    #[serde(default = "default_resource_group")]
    pub resource_group: String,
    /// Resource Manager side: the Entra ID credentials the token endpoint accepts.
    #[serde(default)]
    pub arm: ArmCredentials,
    /// The jobs.
    #[serde(default, rename = "job")]
    pub jobs: Vec<ScenarioJob>,
    /// Fault windows.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

fn default_resource_group() -> String {
    "import-rg".to_owned()
}

/// The app registration the simulator's token endpoint accepts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArmCredentials {
    /// Tenant id (path segment of the token URL).
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Lifetime of issued tokens, seconds.
    pub token_lifetime: u64,
}

impl Default for ArmCredentials {
    fn default() -> Self {
        ArmCredentials {
            tenant_id: "iewatch-sim-tenant".into(),
            client_id: "iewatch-sim-client".into(),
            client_secret: "iewatch-sim-secret".into(),
            token_lifetime: 3600,
        }
    }
}

fn default_speed() -> f64 {
    1.0
}

fn default_subscription() -> String {
    DEFAULT_SUBSCRIPTION.to_owned()
}

/// One job (or `count` identical jobs named `name-0001`...).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioJob {
    /// Storage account.
    #[serde(default = "default_account")]
    pub account: String,
    /// Job name.
    pub name: String,
    /// Import or Export.
    #[serde(default = "default_type", rename = "type")]
    pub job_type: String,
    /// Initial state.
    #[serde(default = "default_state")]
    pub state: String,
    /// Generate this many copies (benchmarks).
    #[serde(default)]
    pub count: Option<u32>,
    /// The job exists only from this offset on (created later; 404 and unlisted before).
    #[serde(default)]
    pub appears: Option<String>,
    /// Initial drives.
    #[serde(default, rename = "drive")]
    pub drives: Vec<ScenarioDrive>,
    /// The timeline.
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

fn default_account() -> String {
    DEFAULT_STORAGE_ACCOUNT.to_owned()
}
fn default_type() -> String {
    "Import".to_owned()
}
fn default_state() -> String {
    "Creating".to_owned()
}

/// A drive's initial content.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioDrive {
    /// Serial number.
    pub id: String,
    /// Initial state (Specified for imports, Received for exports).
    #[serde(default)]
    pub state: Option<String>,
}

/// At simulated offset `at`, set fields of the job, or of drive `drive` when given
/// (adding it if new, removing it with `remove`), or delete the job (404 from then on).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Simulated offset, humantime (`36h`, `2d 4h`).
    pub at: String,
    /// The drive this step changes.
    #[serde(default)]
    pub drive: Option<String>,
    /// New State.
    #[serde(default)]
    pub state: Option<String>,
    /// New CopyStatus (drives only).
    #[serde(default)]
    pub copy_status: Option<String>,
    /// New PercentComplete.
    #[serde(default)]
    pub percent_complete: Option<i64>,
    /// New CancelRequested (job only).
    #[serde(default)]
    pub cancel_requested: Option<bool>,
    /// Remove the drive.
    #[serde(default)]
    pub remove: bool,
    /// Delete the job.
    #[serde(default)]
    pub delete: bool,
}

/// What a fault does to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 503 with an odata.error body (and Retry-After if set).
    Unavailable,
    /// 500.
    InternalError,
    /// 429 (and Retry-After if set).
    Throttled,
    /// 404 although the job exists.
    NotFound,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 whose body stops half-way and the connection closes.
    Truncated,
    /// No response until the client gives up.
    Stall,
    /// The connection is closed without a response.
    Reset,
    /// 200 whose body arrives one byte a second.
    Drip,
    /// 200 with `text/html`.
    WrongContentType,
}

/// A fault window in simulated time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Only this job (all jobs when absent).
    #[serde(default)]
    pub job: Option<String>,
    /// Window start, humantime offset.
    pub from: String,
    /// Window end (exclusive).
    pub until: String,
    /// What happens.
    pub kind: FaultKind,
    /// Retry-After in seconds, for 503 and 429.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Hit only every n-th request of the job within the window (1: all).
    #[serde(default)]
    pub every: Option<u64>,
}

/// A fault resolved to offsets.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    /// The job, or all.
    pub job: Option<String>,
    /// Start offset.
    pub from: Duration,
    /// End offset.
    pub until: Duration,
    /// What happens.
    pub kind: FaultKind,
    /// Retry-After seconds.
    pub retry_after: Option<u64>,
    /// Every n-th request.
    pub every: u64,
}

/// One version of a job document, valid from `since` until the next version.
#[derive(Clone, Debug)]
pub struct Version {
    /// Simulated offset at which this version appeared.
    pub since: Duration,
    /// The document; None once the job is deleted.
    pub job: Option<Job>,
    /// The body as the service sends it (BitLocker keys included), 2014-11-01 names.
    pub body: bytes::Bytes,
    /// `W/"datetime'...'"`.
    pub etag: String,
    /// RFC 1123.
    pub last_modified: String,
    /// Last-Modified as a time, for If-(Un)Modified-Since.
    pub modified_at: SystemTime,
}

/// A job's whole life, compiled.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Storage account.
    pub account: String,
    /// Job name.
    pub name: String,
    /// Versions, `since` ascending, the first at offset zero.
    pub versions: Vec<Version>,
}

impl Timeline {
    /// The version in force at simulated offset `at`.
    pub fn at(&self, at: Duration) -> &Version {
        let index = self.versions.partition_point(|v| v.since <= at);
        &self.versions[index.saturating_sub(1)]
    }
}

impl Scenario {
    /// Reads a scenario file.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses scenario text.
    ///
    /// # Errors
    /// Malformed TOML or unknown keys.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Ok(toml::from_str(text)?)
    }

    /// Simulated time zero.
    ///
    /// # Errors
    /// `epoch` is not RFC 3339.
    pub fn epoch(&self) -> Result<SystemTime, ScenarioError> {
        let text = self.epoch.as_deref().unwrap_or(DEFAULT_EPOCH);
        humantime::parse_rfc3339_weak(text)
            .map_err(|e| ScenarioError::Invalid(format!("epoch {text:?}: {e}")))
    }

    /// Compiles every job (expanding `count`) into its timeline.
    ///
    /// # Errors
    /// A bad offset, a step for an unknown field combination, a bad speed.
    pub fn compile(&self) -> Result<Vec<Timeline>, ScenarioError> {
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(ScenarioError::Invalid(format!(
                "speed {} must be positive",
                self.speed
            )));
        }
        let epoch = self.epoch()?;
        let mut timelines = Vec::new();
        for job in &self.jobs {
            match job.count {
                None => timelines.push(compile_job(job, &job.name, &self.subscription_id, epoch)?),
                Some(count) => {
                    for i in 1..=count {
                        let name = format!("{}-{i:05}", job.name);
                        timelines.push(compile_job(job, &name, &self.subscription_id, epoch)?);
                    }
                }
            }
        }
        Ok(timelines)
    }

    /// The fault windows, resolved.
    ///
    /// # Errors
    /// A bad offset.
    pub fn fault_windows(&self) -> Result<Vec<FaultWindow>, ScenarioError> {
        self.faults
            .iter()
            .map(|f| {
                Ok(FaultWindow {
                    job: f.job.clone(),
                    from: offset(&f.from)?,
                    until: offset(&f.until)?,
                    kind: f.kind,
                    retry_after: f.retry_after,
                    every: f.every.unwrap_or(1).max(1),
                })
            })
            .collect()
    }
}

/// Parses a humantime offset; `0` and `0s` are zero.
pub fn offset(text: &str) -> Result<Duration, ScenarioError> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| ScenarioError::Invalid(format!("offset {text:?}: {e}")))
}

fn compile_job(
    spec: &ScenarioJob,
    name: &str,
    subscription: &str,
    epoch: SystemTime,
) -> Result<Timeline, ScenarioError> {
    let mut steps = spec
        .steps
        .iter()
        .map(|s| Ok((offset(&s.at)?, s)))
        .collect::<Result<Vec<_>, ScenarioError>>()?;
    steps.sort_by_key(|(at, _)| *at);

    let appears = spec
        .appears
        .as_deref()
        .map(offset)
        .transpose()?
        .unwrap_or(Duration::ZERO);
    let created = || initial_document(spec, name, subscription);
    let mut job = appears.is_zero().then(created);
    let mut versions = vec![version(Duration::ZERO, job.as_ref(), epoch)];
    let mut times: Vec<Duration> = steps
        .iter()
        .map(|(at, _)| *at)
        .chain(std::iter::once(appears))
        .collect();
    times.sort();
    times.dedup();
    let mut exists = appears.is_zero();
    for at in times {
        if !exists && at >= appears {
            job = Some(created());
            exists = true;
        }
        if exists {
            for (_, step) in steps.iter().filter(|(t, _)| *t == at) {
                job = apply_step(job, step, &spec.job_type)?;
            }
        }
        let changed = versions.last().map(|v| v.job.as_ref()) != Some(job.as_ref());
        if changed {
            versions.push(version(at, job.as_ref(), epoch));
        }
    }
    Ok(Timeline {
        account: spec.account.clone(),
        name: name.to_owned(),
        versions,
    })
}

fn initial_document(spec: &ScenarioJob, name: &str, subscription: &str) -> Job {
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
        export: (spec.job_type == "Export").then(|| crate::source::classic_wire::Export {
            blob_list: Some(crate::source::classic_wire::BlobList {
                blob_path: vec![],
                blob_path_prefix: vec!["/backups/".into()],
            }),
            blob_list_blob_path: None,
        }),
    }
}

fn new_drive(id: &str, state: Option<String>, job_type: &str) -> Drive {
    let default_state = if job_type == "Export" {
        "Received"
    } else {
        "Specified"
    };
    Drive {
        drive_id: id.to_owned(),
        // Import drives carry their key from Put Job; export keys appear when shipped back.
        bit_locker_key: (job_type != "Export")
            .then(|| crate::model::BitLockerKey::new(fake_key(id))),
        manifest_file: Some("\\DriveManifest.xml".into()),
        manifest_hash: Some(format!("{:032X}", fnv(id) as u128 * 0x9E37_79B9)),
        state: Some(state.unwrap_or_else(|| default_state.to_owned())),
        ..Drive::default()
    }
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn fake_key(id: &str) -> String {
    let mut h = fnv(id);
    (0..8)
        .map(|_| {
            h = h.rotate_left(13).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!("{:06}", h % 1_000_000)
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn apply_step(job: Option<Job>, step: &Step, job_type: &str) -> Result<Option<Job>, ScenarioError> {
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
                        drive.bit_locker_key = Some(crate::model::BitLockerKey::new(fake_key(id)));
                    }
                }
                if let Some(status) = &step.copy_status {
                    drive.copy_status = Some(status.clone());
                    drive.error_log_uri = Some(format!(
                        "https://{}.blob.core.windows.net/waimportexport/waies/{}_{}_error.xml",
                        DEFAULT_STORAGE_ACCOUNT, job.name, id
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

fn version(since: Duration, job: Option<&Job>, epoch: SystemTime) -> Version {
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
