//! Simulator scenarios: TOML files of jobs with timelines of steps and fault windows, and
//! their compilation into per-job version lists. Everything is computed from simulated
//! time offsets, so the same scenario at the same offsets always yields the same
//! documents, ETags and Last-Modified values.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Deserialize;

pub use super::documents::service_json;
use super::documents::{apply_step, initial_document, version};
use iewatch_core::source::classic_wire::Job;

/// Default subscription of a scenario: the spec's sample.
pub const DEFAULT_SUBSCRIPTION: &str = "afb1a4eb-bc88-4ce1-b1af-dfec80067464";
/// Default storage account of a scenario job: the spec's sample.
pub const DEFAULT_STORAGE_ACCOUNT: &str = "xttest";
/// Simulated time zero when the scenario names none: the moment this process first
/// asked, to the second. Jobs are created "now", as the service's own clocks (deadlines,
/// creation times) expect, and every compile of a scenario in one process agrees on
/// documents, ETags and times.
fn process_epoch() -> SystemTime {
    static EPOCH: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        std::time::UNIX_EPOCH + Duration::from_secs(now.as_secs())
    })
}

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
    /// Simulated time zero, RFC 3339 (default: when the simulator starts).
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
    /// Where drives' error logs are (`host:port` of the simulator's blob endpoint, set
    /// when it starts); none: Azure's own host names.
    #[serde(skip)]
    pub blob_host: Option<String>,
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
    /// A Data Box order of this SKU (`DataBoxCustomerDisk`, `DataBox`, `DataBoxDisk`,
    /// `DataBoxHeavy`), served at `Microsoft.DataBox/jobs` only; `state` and each step's
    /// `state` are stage names, drives are disks or destination accounts.
    #[serde(default)]
    pub sku: Option<String>,
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
    /// Data Box: the current stage's status (`WaitingForCustomerAction`, `Failed`, ...);
    /// a new `state` starts its stage `InProgress`.
    #[serde(default)]
    pub stage_status: Option<String>,
    /// Data Box: the job's error code (with `error_message`); `""` clears it.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Data Box: the job's error message.
    #[serde(default)]
    pub error_message: Option<String>,
    /// Data Box: what the customer may do (`details.actions`).
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// Data Box: a delay notice (`HighDemandDelay`, ...) becomes active on the current
    /// stage.
    #[serde(default)]
    pub delay: Option<String>,
    /// Data Box: the active delay notice with this code is resolved.
    #[serde(default)]
    pub delay_resolved: Option<String>,
    /// Data Box: a carrier tracking number appears on the `delivery` or `return` package.
    #[serde(default)]
    pub shipped: Option<String>,
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
    /// The normal answer, [`SLOW_ANSWER`] late (a poll still in flight at a reload).
    Slow,
    /// 200 with another job's document (`Name` and `odata.id` say `SomeoneElse`).
    WrongJob,
    /// 200 with a `DriveList` of [`MANY_DRIVES`] drives (the service allows ten).
    ManyDrives,
}

/// How many drives a [`FaultKind::ManyDrives`] document lists: as many as fit under
/// iewatch's 1 MiB body cap.
pub const MANY_DRIVES: usize = 40_000;

/// How late a [`FaultKind::Slow`] answer comes.
pub const SLOW_ANSWER: Duration = Duration::from_secs(3);

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
    /// Data Box orders: stages, error, delays, packages.
    pub databox: Option<super::databox::OrderState>,
}

/// A job's whole life, compiled.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// Storage account.
    pub account: String,
    /// Job name.
    pub name: String,
    /// Data Box orders: the SKU (served at `Microsoft.DataBox/jobs` only).
    pub sku: Option<String>,
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
        let Some(text) = self.epoch.as_deref() else {
            return Ok(process_epoch());
        };
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
                None => timelines.push(compile_job(
                    job,
                    &job.name,
                    (&self.subscription_id, self.blob_host.as_deref()),
                    epoch,
                )?),
                Some(count) => {
                    for i in 1..=count {
                        let name = format!("{}-{i:05}", job.name);
                        timelines.push(compile_job(
                            job,
                            &name,
                            (&self.subscription_id, self.blob_host.as_deref()),
                            epoch,
                        )?);
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
    (subscription, blob_host): (&str, Option<&str>),
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
    let mut order = spec
        .sku
        .as_ref()
        .map(|_| super::databox::OrderState::new(&spec.state, epoch + appears));
    let stamp = |at, job: Option<&Job>, order: &Option<super::databox::OrderState>| {
        let mut v = version(at, job, epoch);
        v.databox = order.clone();
        v
    };
    let mut versions = vec![stamp(Duration::ZERO, job.as_ref(), &order)];
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
                job = apply_step(job, step, &spec.job_type, blob_host)?;
                if let Some(order) = &mut order {
                    order.apply(step, epoch + at);
                }
            }
        }
        let changed = versions
            .last()
            .is_none_or(|v| v.job.as_ref() != job.as_ref() || v.databox != order);
        if changed {
            versions.push(stamp(at, job.as_ref(), &order));
        }
    }
    Ok(Timeline {
        account: spec.account.clone(),
        name: name.to_owned(),
        sku: spec.sku.clone(),
        versions,
    })
}
