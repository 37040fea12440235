//! `iewatch simulate`: a faithful Import/Export service. HTTPS only, a management
//! certificate required, Get Job and List Jobs with the spec's headers and conditional
//! request rules, scripted job lifecycles and fault injection. Tests, benchmarks and the
//! demo run against it in-process through [`start`].

mod arm;
pub mod blobs;
pub mod certs;
pub mod databox;
mod documents;
mod faults;
pub mod identity;
pub mod scenario;
mod service;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use certs::CertPaths;
pub use scenario::{FaultKind, Scenario};

use iewatch_core::tls::{self, Identity};
use scenario::{FaultWindow, Timeline};

/// The shipped import lifecycle, built in so that `simulate` and `demo` need no file.
pub const IMPORT_LIFECYCLE: &str =
    include_str!("../../../../config/scenarios/import-lifecycle.toml");
/// The shipped customer-disk order (today's portal), built in for `demo --databox`.
pub const DATABOX_CUSTOMER_DISK: &str =
    include_str!("../../../../config/scenarios/databox-customer-disk.toml");

/// A stalled response never comes within any sane client timeout.
const STALL: Duration = Duration::from_secs(3600);

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests kept in the log; older ones are dropped.
const REQUEST_LOG_CAPACITY: usize = 200_000;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The scenario is invalid.
    #[error("scenario: {0}")]
    Scenario(#[from] scenario::ScenarioError),
    /// Certificates could not be made or loaded.
    #[error("certificates: {0}")]
    Certs(#[from] certs::CertError),
    /// TLS could not be configured.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// What to simulate, where.
#[derive(Clone, Debug)]
pub struct SimulatorOptions {
    /// The jobs and faults.
    pub scenario: Scenario,
    /// Listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// Where the CA, server and management certificates are kept.
    pub certs_dir: PathBuf,
    /// The Resource Manager listener's address (None: `listen`'s address, any port).
    pub arm_listen: Option<SocketAddr>,
}

/// One request as the simulator saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// When it arrived (real time).
    pub at: Instant,
    /// Simulated offset at arrival.
    pub sim_offset: Duration,
    /// GET or HEAD (or what was sent).
    pub method: String,
    /// The job, for Get Job requests.
    pub job: Option<String>,
    /// Status answered; 0 when the connection was stalled or reset.
    pub status: u16,
    /// `If-None-Match` as received.
    pub if_none_match: Option<String>,
    /// The fault applied, if any.
    pub fault: Option<FaultKind>,
}

/// Simulated time: real time since start times `speed`, or pinned by a test.
#[derive(Debug)]
struct SimClock {
    start: Instant,
    speed: f64,
    pinned: Mutex<Option<Duration>>,
}

impl SimClock {
    fn now(&self) -> Duration {
        if let Some(pinned) = *self.pinned.lock().unwrap_or_else(|p| p.into_inner()) {
            return pinned;
        }
        self.start.elapsed().mul_f64(self.speed)
    }
}

struct JobEntry {
    timeline: Timeline,
    requests: AtomicU64,
}

/// Everything a request handler reads; built once from the scenario.
pub(crate) struct SimState {
    subscription: String,
    resource_group: String,
    arm_credentials: scenario::ArmCredentials,
    /// Bearer tokens issued by the token endpoints, with their expiry and principal.
    tokens: Mutex<HashMap<String, (Instant, String)>>,
    /// Managed and workload identities.
    identity: identity::IdentityState,
    /// Certificates (DER) registered as the app's certificate credentials.
    client_certificates: Mutex<Vec<Vec<u8>>>,
    jobs: HashMap<String, JobEntry>,
    /// Job keys by job name: Resource Manager names a job without its storage account.
    keys_by_name: HashMap<String, Vec<String>>,
    accounts: Vec<String>,
    faults: Vec<FaultWindow>,
    clock: SimClock,
    log: Mutex<VecDeque<RequestRecord>>,
    counter: AtomicU64,
    shutdown: CancellationToken,
    /// When set, list pages name this origin in `nextLink` (a hostile service, in tests).
    next_link_origin: Mutex<Option<String>>,
    /// The blob endpoint's faults and reads.
    blobs: blobs::BlobState,
}

fn job_key(account: &str, job: &str) -> String {
    format!("{account}/{job}")
}

impl SimState {
    fn new(
        scenario: &Scenario,
        shutdown: CancellationToken,
        dir: &std::path::Path,
    ) -> Result<SimState, SimulatorError> {
        let (mut jobs, mut keys_by_name) = (HashMap::new(), HashMap::<_, Vec<_>>::new());
        let mut accounts = Vec::new();
        for timeline in scenario.compile()? {
            let key = job_key(&timeline.account, &timeline.name);
            accounts.push(timeline.account.clone());
            keys_by_name
                .entry(timeline.name.clone())
                .or_default()
                .push(key.clone());
            let requests = AtomicU64::new(0);
            jobs.insert(key, JobEntry { timeline, requests });
        }
        accounts.sort();
        accounts.dedup();
        Ok(SimState {
            subscription: scenario.subscription_id.clone(),
            resource_group: scenario.resource_group.clone(),
            arm_credentials: scenario.arm.clone(),
            tokens: Mutex::new(HashMap::new()),
            identity: identity::IdentityState::new(dir),
            client_certificates: Mutex::new(Vec::new()),
            jobs,
            keys_by_name,
            accounts,
            faults: scenario.fault_windows()?,
            clock: SimClock {
                start: Instant::now(),
                speed: scenario.speed,
                pinned: Mutex::new(None),
            },
            log: Mutex::new(VecDeque::new()),
            counter: AtomicU64::new(0),
            shutdown,
            next_link_origin: Mutex::new(None),
            blobs: blobs::BlobState::default(),
        })
    }

    /// The jobs named `name`, in any storage account.
    fn jobs_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a JobEntry> + 'a {
        self.keys_by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|key| self.jobs.get(key))
    }

    fn record(&self, record: RequestRecord) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }

    /// The fault, if any, that hits this request of `entry` at `now`; every request of
    /// the job counts towards a window's `every`.
    fn fault_for(&self, entry: &JobEntry, now: Duration) -> Option<&FaultWindow> {
        let n = entry.requests.fetch_add(1, Ordering::Relaxed);
        let job = entry.timeline.name.as_str();
        self.faults.iter().find(|f| {
            f.job.as_deref().is_none_or(|j| j == job)
                && f.from <= now
                && now < f.until
                && n.is_multiple_of(f.every)
        })
    }

    /// Records the request and ends it: a reset or stall fault drops the connection
    /// without an answer (a stall after holding it); otherwise the response gets the
    /// headers every answer carries.
    async fn finish(
        &self,
        mut record: RequestRecord,
        mut response: http::Response<service::ResponseBody>,
        fault: Option<FaultKind>,
    ) -> Result<http::Response<service::ResponseBody>, service::ResetConnection> {
        record.fault = fault;
        match fault {
            Some(FaultKind::Reset) => {
                self.record(record);
                return Err(service::ResetConnection);
            }
            Some(FaultKind::Stall) => {
                self.record(record);
                tokio::select! {
                    () = tokio::time::sleep(STALL) => {}
                    () = self.shutdown.cancelled() => {}
                }
                return Err(service::ResetConnection);
            }
            _ => {}
        }
        record.status = response.status().as_u16();
        self.record(record);
        if fault == Some(FaultKind::Slow) {
            // Recorded first, so that a test can see the request in flight.
            tokio::select! {
                () = tokio::time::sleep(scenario::SLOW_ANSWER) => {}
                () = self.shutdown.cancelled() => return Err(service::ResetConnection),
            }
        }
        let headers = response.headers_mut();
        headers.insert(
            "x-ms-request-id",
            service::header_value(&self.next_request_id()),
        );
        headers.insert(
            http::header::DATE,
            service::header_value(&httpdate::fmt_http_date(std::time::SystemTime::now())),
        );
        Ok(response)
    }

    fn next_request_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:032x}", u128::from(n) * 0x9E37_79B9_7F4A_7C15 + 1)
    }
}

/// A simulator serving on a socket until [`RunningSimulator::stop`] or drop.
pub struct RunningSimulator {
    /// The bound address (classic Service Management API).
    pub addr: SocketAddr,
    /// The bound address of the Resource Manager side (token endpoint and ARM API).
    pub arm_addr: SocketAddr,
    /// The bound address of the managed identity endpoints (plain HTTP, as Azure's).
    pub identity_addr: SocketAddr,
    /// The bound address of the blob endpoint serving error logs.
    pub blob_addr: SocketAddr,
    /// The certificates.
    pub certs: CertPaths,
    state: Arc<SimState>,
    tracker: TaskTracker,
}

impl RunningSimulator {
    /// `https://ADDR`, for an account's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The subscription it serves.
    pub fn subscription_id(&self) -> &str {
        &self.state.subscription
    }

    /// A ready-to-paste `[[account]]` block for a config file.
    pub fn account_block(&self, name: &str) -> String {
        let account = self
            .state
            .accounts
            .first()
            .map_or(scenario::DEFAULT_STORAGE_ACCOUNT, String::as_str);
        format!(
            "[[account]]\nname = \"{name}\"\nsubscription_id = \"{}\"\nstorage_account = \"{account}\"\nendpoint = \"{}\"\ncertificate = \"{}\"\nca_certificate = \"{}\"\nstorage_key_file = \"{}\"\nblob_endpoint = \"{}\"\n",
            self.state.subscription,
            self.endpoint(),
            self.certs.client.display(),
            self.certs.ca.display(),
            self.certs.storage_key.display(),
            self.blob_endpoint(),
        )
    }

    /// `https://ADDR` of the Resource Manager side, for an `arm` account's `endpoint` and
    /// `authority`.
    pub fn arm_endpoint(&self) -> String {
        format!("https://{}", self.arm_addr)
    }

    /// A ready-to-paste `kind = "arm"` `[[account]]` block.
    pub fn arm_account_block(&self, name: &str) -> String {
        self.resource_manager_block(name, "arm")
    }

    /// A ready-to-paste `kind = "databox"` `[[account]]` block.
    pub fn databox_account_block(&self, name: &str) -> String {
        self.resource_manager_block(name, "databox")
    }

    fn resource_manager_block(&self, name: &str, kind: &str) -> String {
        let c = &self.state.arm_credentials;
        format!(
            "[[account]]\nname = \"{name}\"\nkind = \"{kind}\"\nsubscription_id = \"{}\"\nresource_group = \"{}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nendpoint = \"{}\"\nauthority = \"{}\"\nca_certificate = \"{}\"\nblob_endpoint = \"{}\"\n",
            self.state.subscription,
            self.state.resource_group,
            c.tenant_id,
            c.client_id,
            c.client_secret,
            self.arm_endpoint(),
            self.arm_endpoint(),
            self.certs.ca.display(),
            self.blob_endpoint(),
        )
    }

    /// Registers a certificate (DER) as a credential of the simulated app registration, as
    /// uploading it to the app does in Entra ID.
    pub fn register_client_certificate(&self, der: &[u8]) {
        self.state
            .client_certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(der.to_vec());
    }

    /// Makes list pages point `nextLink` at `origin` (`https://host:port`), as a hostile
    /// or compromised service could (tests that the bearer token stays home).
    pub fn set_next_link_origin(&self, origin: Option<String>) {
        *self
            .state
            .next_link_origin
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = origin;
    }

    /// Makes every issued bearer token expire now (tests of token refresh).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expiry in self
            .state
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            expiry.0 = now;
        }
    }

    /// Every request seen so far (the newest 200,000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Every request seen since the last call, emptying the log: a long run reads the log
    /// as it goes instead of losing its oldest records past the log's capacity.
    pub fn take_requests(&self) -> Vec<RequestRecord> {
        std::mem::take(&mut *self.state.log.lock().unwrap_or_else(|p| p.into_inner())).into()
    }

    /// Simulated offset now.
    pub fn now(&self) -> Duration {
        self.state.clock.now()
    }

    /// Pins simulated time (tests); `None` resumes real time × speed.
    pub fn set_time(&self, offset: Option<Duration>) {
        *self
            .state
            .clock
            .pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = offset;
    }

    /// The simulated offset at which the last version of every job has appeared: after
    /// it nothing changes any more.
    pub fn end_of_scenario(&self) -> Duration {
        self.state
            .jobs
            .values()
            .filter_map(|j| j.timeline.versions.last().map(|v| v.since))
            .max()
            .unwrap_or_default()
    }

    /// Stops accepting, closes connections, waits for handlers.
    pub async fn stop(self) {
        self.state.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Binds, writes certificates if needed, and serves in the background.
///
/// # Errors
/// See [`SimulatorError`].
pub async fn start(options: SimulatorOptions) -> Result<RunningSimulator, SimulatorError> {
    let listen_ip = options.listen.ip();
    let extra_name = (!listen_ip.is_unspecified()).then(|| listen_ip.to_string());
    let certs = certs::ensure_certificates(&options.certs_dir, extra_name.as_deref())?;
    let server_identity = Identity::load(&certs.server, None)?;
    let ca = tls::load_certificates(&certs.ca)?;
    let config =
        tls::server_config_requiring_client_cert(&server_identity, tls::root_store(&ca, false))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let arm_acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(&server_identity)?));
    let (listener, addr) = bind(options.listen).await?;
    let arm_listen = options
        .arm_listen
        .unwrap_or_else(|| SocketAddr::new(options.listen.ip(), 0));
    let (arm_listener, arm_addr) = bind(arm_listen).await?;
    let (identity_listener, identity_addr) = bind(SocketAddr::new(options.listen.ip(), 0)).await?;
    let (blob_listener, blob_addr) = bind(SocketAddr::new(options.listen.ip(), 0)).await?;
    let shutdown = CancellationToken::new();
    let mut scenario = options.scenario.clone();
    // A scenario may point its logs at another blob service (Azurite, in tests).
    if scenario.blob_host.is_none() {
        scenario.blob_host = Some(blob_addr.to_string());
    }
    let state = Arc::new(SimState::new(
        &scenario,
        shutdown.clone(),
        &options.certs_dir,
    )?);
    let tracker = TaskTracker::new();
    tracker.spawn(accept_loop(
        listener,
        acceptor,
        Api::Classic,
        state.clone(),
        tracker.clone(),
    ));
    tracker.spawn(accept_loop(
        arm_listener,
        arm_acceptor,
        Api::Arm,
        state.clone(),
        tracker.clone(),
    ));
    tracker.spawn(identity::serve(
        identity_listener,
        state.clone(),
        tracker.clone(),
    ));
    let blob_acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(&server_identity)?));
    tracker.spawn(accept_loop(
        blob_listener,
        blob_acceptor,
        Api::Blob,
        state.clone(),
        tracker.clone(),
    ));
    Ok(RunningSimulator {
        addr,
        arm_addr,
        identity_addr,
        blob_addr,
        certs,
        state,
        tracker,
    })
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SimulatorError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SimulatorError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SimulatorError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Which API a listener serves.
#[derive(Clone, Copy)]
enum Api {
    Classic,
    Arm,
    Blob,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    api: Api,
    state: Arc<SimState>,
    tracker: TaskTracker,
) {
    loop {
        let (stream, _) = tokio::select! {
            () = state.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("simulator: accept failed: {e}");
                    // Out of file descriptors and the like: give the system a moment
                    // rather than spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tracker.spawn(async move {
            let shutdown = state.shutdown.clone();
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("simulator: TLS handshake refused: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move {
                    match api {
                        Api::Classic => service::handle(&state, request).await,
                        Api::Arm => arm::handle(&state, request).await,
                        Api::Blob => Ok(blobs::handle(&state, request).await),
                    }
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}
