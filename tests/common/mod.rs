//! Test support shared by the integration tests: simulators on 127.0.0.1:0 with
//! certificates made at test time, clients that trust them, and a scripted HTTPS server
//! for the cases a faithful simulator never produces (304, oversized bodies).

#![allow(dead_code)]

pub mod arm;
pub mod browser;
pub mod postgres;
pub mod prerequisites;
pub mod smtp;

#[allow(unused_imports)] // Each test binary uses what it needs of these.
pub use prerequisites::{not_run, Recordings};

// Defined beside the PostgreSQL harness, which the benchmarks include on its own.
pub use postgres::{free_port, is_root};

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use iewatch::{
    http_client::{self, HttpsClient},
    simulator::{self, certs::CertificateAuthority, RunningSimulator, Scenario, SimulatorOptions},
    tls::{self, Identity},
};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;

/// The subscription of the spec's sample.
pub const SAMPLE_SUBSCRIPTION: &str = "afb1a4eb-bc88-4ce1-b1af-dfec80067464";

/// Every variable an Azure SDK reads to find an identity: removed from the daemon's
/// environment, so that the machine running the tests cannot lend it one.
pub const IDENTITY_VARIABLES: [&str; 13] = [
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
];

/// The spec's sample Get Job response body.
pub const SAMPLE_JOB: &str = include_str!("../fixtures/get-job-sample.json");

/// A shipped scenario by file name.
pub fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/scenarios")
        .join(name);
    Scenario::load(&path).expect("shipped scenario parses")
}

/// The job as the first version of shipped scenario `name` shows it.
pub fn first_snapshot(name: &str) -> iewatch::model::JobSnapshot {
    scenario(name).compile().unwrap()[0].versions[0]
        .job
        .clone()
        .unwrap()
        .into_parts()
        .0
}

/// A shipped scenario with fault windows added (`faults`: TOML inline tables).
pub fn scenario_with_faults(name: &str, faults: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/scenarios")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replacen(
        "speed = 20000",
        &format!("speed = 20000\nfault = [{faults}]"),
        1,
    );
    Scenario::parse(&text).expect("scenario with faults parses")
}

/// Starts a simulator on 127.0.0.1:0 with certificates in `dir`.
pub async fn start_simulator(scenario: Scenario, dir: &Path) -> RunningSimulator {
    simulator::start(SimulatorOptions {
        scenario,
        listen: "127.0.0.1:0".parse().unwrap(),
        certs_dir: dir.join("certs"),
        arm_listen: None,
    })
    .await
    .expect("simulator starts")
}

/// A client trusting the simulator's CA and presenting `identity`.
pub fn client_for(sim: &RunningSimulator, identity: Option<&Identity>) -> HttpsClient {
    let ca = tls::load_certificates(&sim.certs.ca).unwrap();
    let config = tls::client_config(tls::root_store(&ca, false), identity).unwrap();
    http_client::build_client(config, Duration::from_secs(5), true)
}

/// The simulator's management certificate.
pub fn management_identity(sim: &RunningSimulator) -> Identity {
    Identity::load(&sim.certs.client, None).unwrap()
}

/// A config file for `sim` with the given jobs and extra text, written into `dir`.
pub fn write_config(dir: &Path, sim: &RunningSimulator, jobs: &[&str], extra: &str) -> PathBuf {
    let mut text = format!(
        "[daemon]\ndatabase = \"{}\"\npoll_interval = \"1s\"\nrequest_timeout = \"5s\"\n{extra}\n",
        dir.join("iewatch.db").display()
    );
    text.push_str(&sim.account_block("sim"));
    for job in jobs {
        text.push_str(&format!("\n[[job]]\naccount = \"sim\"\nname = \"{job}\"\n"));
    }
    let path = dir.join("iewatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Test PKI: a CA, a server certificate for 127.0.0.1 and a client certificate.
pub struct TestPki {
    pub ca: CertificateAuthority,
    pub server: Identity,
    pub client: Identity,
    pub client_pem: (String, String),
}

impl TestPki {
    pub fn new(name: &str) -> TestPki {
        let ca = CertificateAuthority::generate(name).unwrap();
        let (cert, key) = ca
            .issue_server(&["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let server = Identity::from_pem(&cert, &key).unwrap();
        let (cert, key) = ca.issue_client("test management certificate").unwrap();
        let client = Identity::from_pem(&cert, &key).unwrap();
        TestPki {
            ca,
            server,
            client,
            client_pem: (cert, key),
        }
    }

    /// A classic client presenting this PKI's client certificate and trusting its CA.
    pub fn classic_client(
        &self,
        endpoint: String,
        timeout: Duration,
    ) -> iewatch::source::classic::ClassicClient {
        let account = iewatch::config::ClassicAccount {
            storage_account: "xttest".into(),
            endpoint,
            identity: self.client.clone(),
            extra_roots: self.ca_der(),
            x_ms_version: "2014-11-01",
        };
        iewatch::source::classic::ClassicClient::new(
            SAMPLE_SUBSCRIPTION,
            &account,
            timeout,
            Duration::from_secs(2),
        )
        .unwrap()
    }

    pub fn ca_der(&self) -> Vec<CertificateDer<'static>> {
        Identity::from_pem(&self.ca.cert_pem(), &self.ca.key_pem())
            .unwrap()
            .chain
    }
}

/// What the scripted server saw of one request.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub client_certificate: Option<Vec<u8>>,
}

type Script = dyn Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync;

/// An HTTPS server on 127.0.0.1 that requires a client certificate from `pki`'s CA,
/// answers with `script`, and records every request.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    pub async fn start(
        pki: &TestPki,
        script: impl Fn(&SeenRequest) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> ScriptedServer {
        let config = tls::server_config_requiring_client_cert(
            &pki.server,
            tls::root_store(&pki.ca_der(), false),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let script = script.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec());
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let seen = SeenRequest {
                                method: request.method().to_string(),
                                uri: request.uri().to_string(),
                                headers: request.headers().clone(),
                                client_certificate: cert.clone(),
                            };
                            let response = script(&seen);
                            recorded.lock().unwrap().push(seen);
                            async move { Ok::<_, std::convert::Infallible>(response) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        ScriptedServer { addr, seen, task }
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// A response with a status, headers and body.
pub fn respond(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

/// `iewatch simulate` as a process with its Resource Manager listener on `arm_port`
/// (playing `scenario`, or the built-in one), and what it printed: the account blocks,
/// the identity variables and, last, the `sim-identity` block.
pub fn spawn_simulate(
    certs: &Path,
    arm_port: u16,
    scenario: Option<&str>,
) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"));
    if let Some(name) = scenario {
        command.arg("simulate").arg("--scenario").arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/scenarios")
                .join(name),
        );
    } else {
        command.arg("simulate");
    }
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--arm-listen"])
        .arg(format!("127.0.0.1:{arm_port}"))
        .arg("--certs")
        .arg(certs)
        .env("IEWATCH_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    for line in stdout.lines().take(120) {
        let line = line.unwrap();
        let done =
            line.starts_with("ca_certificate") && printed.contains("name = \"sim-identity\"");
        printed.push_str(&line);
        printed.push('\n');
        if done {
            break;
        }
    }
    (child, printed)
}

/// The value of `key = "..."` in an account block.
pub fn block_value(block: &str, key: &str) -> String {
    block
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{key} in {block}"))
        .to_owned()
}

/// `GET path` on `addr` over one plain connection: the status, or None when nothing
/// answers within 5 s.
pub async fn http_status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).await.map(|(status, _)| status)
}

/// `GET path` on `addr` over one plain connection: status and body, or None when
/// nothing answers within 5 s.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
pub async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A daemon running in-process on a real config file and database.
pub struct RunningDaemon {
    pub shutdown: tokio_util::sync::CancellationToken,
    pub reload: tokio::sync::mpsc::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), iewatch::daemon::DaemonError>>,
    pub started: iewatch::daemon::Started,
}

impl RunningDaemon {
    pub async fn start(config_path: &Path) -> RunningDaemon {
        let config = iewatch::config::Config::load(config_path).unwrap_or_else(|e| panic!("{e}"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (reload, reload_rx) = tokio::sync::mpsc::channel(1);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(iewatch::daemon::run(
            config_path.to_owned(),
            config,
            shutdown.clone(),
            reload_rx,
            Some(started_tx),
        ));
        let started = tokio::time::timeout(Duration::from_secs(10), started_rx)
            .await
            .expect("daemon ready in time")
            .expect("daemon started");
        RunningDaemon {
            shutdown,
            reload,
            task,
            started,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("daemon stops in time")
            .unwrap()
            .unwrap();
    }
}

/// Async version of [`wait_until`] for conditions that need to await.
pub async fn wait_for<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A database the helpers below read: a SQLite file or a PostgreSQL database.
pub trait DbRef {
    fn database(&self) -> iewatch::store::Database;
}

impl DbRef for Path {
    fn database(&self) -> iewatch::store::Database {
        iewatch::store::Database::File(self.to_owned())
    }
}

impl DbRef for PathBuf {
    fn database(&self) -> iewatch::store::Database {
        iewatch::store::Database::File(self.clone())
    }
}

impl DbRef for iewatch::store::Database {
    fn database(&self) -> iewatch::store::Database {
        self.clone()
    }
}

/// The ETag stored for a job, read with a connection of our own.
pub async fn stored_etag(db: &(impl DbRef + ?Sized), job: &str) -> Option<String> {
    let store = iewatch::store::Store::open_existing_database(&db.database())
        .await
        .ok()?;
    let etag: Option<Option<String>> = sqlx::query_scalar("SELECT etag FROM jobs WHERE name = $1")
        .bind(job)
        .fetch_optional(store.pool())
        .await
        .ok()?;
    store.close().await;
    etag.flatten()
}

/// Waits until the daemon has stored `etag` for `job` (a version it polled is recorded).
pub async fn wait_for_etag(
    db: &(impl DbRef + ?Sized),
    job: &str,
    etag: &str,
    deadline: Duration,
) -> bool {
    wait_for(deadline, || async {
        stored_etag(db, job).await.as_deref() == Some(etag)
    })
    .await
}

/// (type, drive, from, to) of one event.
pub type EventRow = (String, Option<String>, Option<String>, Option<String>);

/// What the import lifecycle's drive 9WM3NZFS reports once it ends with errors, from
/// the simulator's error log.
pub const IMPORT_REPORT: &str =
    "3 files failed: 2 FileNameInvalid, 1 Corrupted; first: \\photos\\a?.jpg (FileNameInvalid)";

/// The events of `job` with its `drive.errors` reports set apart. The error-log reader
/// records a report off the poll path, right after its drive ends with errors, so where
/// it falls among the changes that follow depends on timing; whether it is there, and
/// once, does not.
pub async fn changes_and_reports(
    db: &(impl DbRef + ?Sized),
    job: &str,
) -> (Vec<EventRow>, Vec<EventRow>) {
    event_list(db, job)
        .await
        .into_iter()
        .partition(|e| e.0 != "drive.errors")
}

/// The import lifecycle was recorded whole: every change once and in order, and one
/// report of what failed on drive 9WM3NZFS.
pub async fn assert_import_lifecycle(db: &(impl DbRef + ?Sized), job: &str) {
    let (changes, reports) = changes_and_reports(db, job).await;
    assert_eq!(
        changes,
        expected(IMPORT_EVENTS),
        "every change exactly once"
    );
    assert_eq!(
        reports,
        [(
            "drive.errors".to_owned(),
            Some("9WM3NZFS".to_owned()),
            None,
            Some(IMPORT_REPORT.to_owned())
        )],
        "one report of the drive's error log"
    );
}

/// (type, drive, from, to) of every event of a job, in order.
pub async fn event_list(db: &(impl DbRef + ?Sized), job: &str) -> Vec<EventRow> {
    event_columns(db, job, "e.type, e.drive_id, e.from_value, e.to_value").await
}

/// `columns` (of `events e`) of every event of a job, in order, read with a connection
/// of our own.
pub async fn event_columns<T>(db: &(impl DbRef + ?Sized), job: &str, columns: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let store = iewatch::store::Store::open_existing_database(&db.database())
        .await
        .unwrap();
    let rows = sqlx::query_as(&format!(
        "SELECT {columns} FROM events e JOIN jobs j ON j.id = e.job_id WHERE j.name = $1 ORDER BY e.id"
    ))
    .bind(job)
    .fetch_all(store.pool())
    .await
    .unwrap();
    store.close().await;
    rows
}

/// Steps the simulator through every version of `job`'s timeline and waits until the
/// daemon has stored each version's ETag.
pub async fn play_versions(
    sim: &RunningSimulator,
    scenario: &Scenario,
    db: &(impl DbRef + ?Sized),
    job: &str,
    range: std::ops::RangeInclusive<Duration>,
) {
    let timeline = scenario
        .compile()
        .unwrap()
        .into_iter()
        .find(|t| t.name == job)
        .expect("job in scenario");
    for version in timeline
        .versions
        .iter()
        .filter(|v| range.contains(&v.since))
    {
        sim.set_time(Some(version.since));
        let reached = wait_for_etag(db, job, &version.etag, Duration::from_secs(20)).await;
        assert!(
            reached,
            "daemon did not record {job} at {:?}",
            version.since
        );
    }
}

/// How the test webhook receiver answers the n-th request (0-based).
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with headers.
    WithHeaders(u16, &'static [(&'static str, &'static str)]),
    /// A status with a body of this many bytes.
    Body(u16, usize),
    /// Answers nothing for this long (bounded, so no test hangs forever).
    Hang(Duration),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub answered: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How a receiver answers its n-th request.
type ReplyFn = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// A plain HTTP webhook receiver on 127.0.0.1 answering per `reply(n)`.
pub struct Receiver {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), reply).await
    }

    /// A receiver on a given address (to bring back an endpoint that was down).
    pub async fn start_on(
        addr: SocketAddr,
        reply: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        Self::start_inspecting(addr, move |n, _| reply(n)).await
    }

    /// A receiver whose answer depends on the request it got.
    pub async fn start_inspecting(
        addr: SocketAddr,
        reply: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
        let reply: Arc<ReplyFn> = Arc::new(reply);
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (reply, recorded) = (reply.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let (reply, recorded) = (reply.clone(), recorded.clone());
                            async move {
                                use http_body_util::BodyExt as _;
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let received = Received {
                                    headers: parts.headers,
                                    body,
                                    answered: None,
                                };
                                let n = {
                                    let mut seen = recorded.lock().unwrap();
                                    seen.push(received.clone());
                                    seen.len() - 1
                                };
                                let (status, headers, body) = match reply(n, &received) {
                                    Reply::Hang(how_long) => {
                                        tokio::time::sleep(how_long).await;
                                        (503, &[][..], 0)
                                    }
                                    Reply::Status(status) => (status, &[][..], 0),
                                    Reply::WithHeaders(status, headers) => (status, headers, 0),
                                    Reply::Body(status, size) => (status, &[][..], size),
                                };
                                recorded.lock().unwrap()[n].answered = Some(status);
                                Ok::<_, std::convert::Infallible>(respond(
                                    status,
                                    headers,
                                    vec![b'x'; body],
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// Records `snapshot` as the first sight of `job` (its events, with deliveries from
/// `outbox`), the document left empty.
pub async fn record_first_sight(
    store: &iewatch::store::Writer,
    job: iewatch::store::JobId,
    snapshot: &iewatch::model::JobSnapshot,
    outbox: impl Fn(&[iewatch::events::Event]) -> Vec<iewatch::events::OutboxEntry>,
) -> Result<Vec<i64>, iewatch::store::StoreError> {
    let events = iewatch::detect::detect_changes(None, snapshot);
    store
        .record_observation(iewatch::store::Observed {
            job,
            snapshot,
            document: "{}",
            etag: None,
            last_modified: None,
            memory: &Default::default(),
            events: &events,
            outbox: &outbox(&events),
            at: std::time::SystemTime::now().into(),
        })
        .await
}

/// Records every version of the shipped import lifecycle for `job` as the daemon would,
/// one observation per version: `outbox` routes each observation's events, `at(i)` is
/// the time of the i-th observation. Returns all events in order.
pub async fn record_lifecycle(
    store: &iewatch::store::Writer,
    job: &str,
    outbox: impl Fn(&[iewatch::events::Event]) -> Vec<iewatch::events::OutboxEntry>,
    store_bitlocker_keys: bool,
    at: impl Fn(usize) -> std::time::SystemTime,
) -> Vec<iewatch::events::Event> {
    let timelines = scenario("import-lifecycle.toml").compile().unwrap();
    let stored = store.load_job("prod", job).await.unwrap();
    let mut previous = stored.snapshot;
    let mut all = Vec::new();
    for (i, version) in timelines[0].versions.iter().enumerate() {
        let (snapshot, document) = version.job.clone().unwrap().into_parts();
        let events = iewatch::detect::detect_changes(previous.as_ref(), &snapshot);
        let etag = iewatch::model::ETag::new(&version.etag);
        store
            .record_observation(iewatch::store::Observed {
                job: stored.id,
                snapshot: &snapshot,
                document: &document.render(store_bitlocker_keys),
                etag: Some(&etag),
                last_modified: Some(&version.last_modified),
                memory: &Default::default(),
                events: &events,
                outbox: &outbox(&events),
                at: at(i).into(),
            })
            .await
            .unwrap();
        all.extend(events);
        previous = Some(snapshot);
    }
    all
}

pub type Row = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// Every event the import lifecycle must produce, in order.
pub const IMPORT_EVENTS: &[Row] = &[
    ("job.first_seen", None, None, Some("Creating")),
    (
        "job.state_changed",
        None,
        Some("Creating"),
        Some("Shipping"),
    ),
    (
        "job.shipping_updated",
        None,
        None,
        Some("delivery FedEx 999999999999"),
    ),
    (
        "job.state_changed",
        None,
        Some("Shipping"),
        Some("Received"),
    ),
    (
        "drive.state_changed",
        Some("1W0F9LV1"),
        Some("Specified"),
        Some("Received"),
    ),
    (
        "drive.state_changed",
        Some("9WM3NZFS"),
        Some("Specified"),
        Some("Received"),
    ),
    (
        "job.state_changed",
        None,
        Some("Received"),
        Some("Transferring"),
    ),
    ("job.progress", None, None, Some("0")),
    (
        "drive.state_changed",
        Some("1W0F9LV1"),
        Some("Received"),
        Some("Transferring"),
    ),
    (
        "drive.copy_status_changed",
        Some("1W0F9LV1"),
        None,
        Some("InProgress"),
    ),
    ("drive.progress", Some("1W0F9LV1"), None, Some("0")),
    ("job.progress", None, Some("0"), Some("15")),
    ("drive.progress", Some("1W0F9LV1"), Some("0"), Some("30")),
    ("job.progress", None, Some("15"), Some("40")),
    ("drive.progress", Some("1W0F9LV1"), Some("30"), Some("75")),
    (
        "drive.state_changed",
        Some("9WM3NZFS"),
        Some("Received"),
        Some("Transferring"),
    ),
    (
        "drive.copy_status_changed",
        Some("9WM3NZFS"),
        None,
        Some("InProgress"),
    ),
    ("drive.progress", Some("9WM3NZFS"), None, Some("5")),
    ("job.progress", None, Some("40"), Some("70")),
    (
        "drive.state_changed",
        Some("1W0F9LV1"),
        Some("Transferring"),
        Some("Completed"),
    ),
    (
        "drive.copy_status_changed",
        Some("1W0F9LV1"),
        Some("InProgress"),
        Some("Completed"),
    ),
    ("drive.progress", Some("1W0F9LV1"), Some("75"), Some("100")),
    ("drive.progress", Some("9WM3NZFS"), Some("5"), Some("40")),
    ("job.progress", None, Some("70"), Some("100")),
    (
        "drive.state_changed",
        Some("9WM3NZFS"),
        Some("Transferring"),
        Some("CompletedMoreInfo"),
    ),
    (
        "drive.copy_status_changed",
        Some("9WM3NZFS"),
        Some("InProgress"),
        Some("CompletedWithErrors"),
    ),
    ("drive.progress", Some("9WM3NZFS"), Some("40"), Some("100")),
    (
        "job.state_changed",
        None,
        Some("Transferring"),
        Some("Packaging"),
    ),
    (
        "job.state_changed",
        None,
        Some("Packaging"),
        Some("Completed"),
    ),
    (
        "drive.state_changed",
        Some("1W0F9LV1"),
        Some("Completed"),
        Some("ShippedBack"),
    ),
    (
        "drive.state_changed",
        Some("9WM3NZFS"),
        Some("CompletedMoreInfo"),
        Some("ShippedBack"),
    ),
    (
        "job.shipping_updated",
        None,
        None,
        Some("return FedEx 888888888888"),
    ),
    (
        "job.deadline",
        None,
        None,
        Some("purge 90d after completion"),
    ),
];

pub fn expected(rows: &[Row]) -> Vec<EventRow> {
    let own = |v: Option<&str>| v.map(str::to_owned);
    rows.iter()
        .map(|(t, d, f, to)| (t.to_string(), own(*d), own(*f), own(*to)))
        .collect()
}

/// Verifies a Standard Webhooks signature with ring's HMAC, not the crates iewatch signs with.
pub fn independently_verified(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> bool {
    use base64::Engine as _;
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| {
            base64::engine::general_purpose::STANDARD
                .decode(sig)
                .is_ok_and(|tag| ring::hmac::verify(&key, &signed, &tag).is_ok())
        })
}

/// Runs `iewatch ARGS --database DB`, asserting success; its stdout.
pub fn iewatch_cli(args: &[&str], db: &Path) -> String {
    iewatch_cli_on(args, "--database", db)
}

/// Runs `iewatch ARGS FLAG PATH` (`--database DB` or `-c CONFIG`), asserting success;
/// its stdout.
pub fn iewatch_cli_on(args: &[&str], flag: &str, path: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(args)
        .arg(flag)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every one of `events` events reached the receiver under one `webhook-id` each;
/// duplicates (a delivery cut off by a kill or a takeover, sent again) carry the same id
/// and body.
pub fn assert_each_event_delivered_under_one_id(receiver: &Receiver, events: usize) {
    let received = receiver.received();
    let ids: std::collections::BTreeSet<&str> =
        received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids.len(),
        events,
        "every event delivered, each under one id"
    );
    for id in &ids {
        let copies: Vec<_> = received
            .iter()
            .filter(|r| r.header("webhook-id") == *id)
            .collect();
        assert!(copies.iter().all(|c| c.body == copies[0].body), "{id}");
    }
}

/// The webhooks of a config text (only `[[webhook]]` tables needed).
pub fn webhooks(dir: &Path, text: &str) -> Vec<iewatch::config::Webhook> {
    iewatch::config::Config::parse(&dir.join("webhooks.toml"), text)
        .unwrap_or_else(|e| panic!("{e}"))
        .webhooks
}

/// A notifier running on its own (no daemon).
pub struct Running {
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub waker: iewatch::notifier::Waker,
}

/// Starts the notifier for `hooks` on `store`.
pub fn start_notifier(
    store: &iewatch::store::Writer,
    hooks: Vec<iewatch::config::Webhook>,
) -> Running {
    let (waker, wake) = iewatch::notifier::Waker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(iewatch::notifier::run(
        store.clone(),
        hooks,
        wake,
        iewatch::telemetry::Telemetry::new(),
        stop.clone(),
    ));
    Running { stop, task, waker }
}

impl Running {
    /// Stops it, waiting for in-flight attempts.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// One outbox row per event, to a webhook named "ops".
pub fn to_ops(events: &[iewatch::events::Event]) -> Vec<iewatch::events::OutboxEntry> {
    (0..events.len())
        .map(|event| iewatch::events::OutboxEntry {
            event,
            webhook: "ops".to_owned(),
        })
        .collect()
}

/// The event id in a `webhook-id` (`iewatch-evt-<id>-<recorded>`).
pub fn event_id_of(webhook_id: &str) -> i64 {
    let rest = webhook_id
        .strip_prefix("iewatch-evt-")
        .unwrap_or(webhook_id);
    let id = rest.split_once('-').map_or(rest, |(id, _)| id);
    id.parse()
        .unwrap_or_else(|_| panic!("not a webhook-id: {webhook_id}"))
}

/// Runs `iewatch ARGS`: whether it succeeded, and what it printed (stdout, then stderr).
/// A command that has not ended after a minute is killed and counts as failed, with
/// that said, so a hang is a failure with a message instead of a test that never ends.
pub fn iewatch_output<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    iewatch_output_with(args, &[])
}

/// [`iewatch_output`] with `variables` added to its environment.
pub fn iewatch_output_with<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    variables: &[(&str, String)],
) -> (bool, String) {
    use std::io::Read as _;
    const LIMIT: Duration = Duration::from_secs(60);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(args)
        .envs(variables.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let said = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    match status {
        Some(status) => (status.success(), said),
        None => (
            false,
            format!("{said}\n[killed: still running after {LIMIT:?}]"),
        ),
    }
}

/// A config for `jobs` of the simulator with `[http]` on a free loopback port (and
/// `http_extra` keys in that table): the config's path and the listener's address.
pub fn http_config(
    dir: &Path,
    sim: &RunningSimulator,
    jobs: &[&str],
    http_extra: &str,
) -> (PathBuf, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        dir,
        sim,
        jobs,
        &format!("[http]\nlisten = \"{addr}\"\n{http_extra}"),
    );
    (config, addr)
}

/// A database that stops taking writes until this is dropped. As root, the real fault:
/// its files made immutable (`chattr +i`: not even root writes through an open file). As
/// anyone else, with no privilege at all: the daemon process's file size limit set to 0
/// (prlimit(2) on a process of one's own), so that each of its writes to a file fails
/// with EFBIG, as under an exhausted quota, until the limit is put back.
pub enum WriteStop {
    Immutable(Vec<PathBuf>),
    SizeLimit { pid: i32, saved: libc::rlimit },
}

impl WriteStop {
    /// Makes `files` unwritable for the daemon process `daemon`.
    pub fn read_only(files: &[&Path], daemon: u32) -> WriteStop {
        if !is_root() {
            return WriteStop::size_limit(daemon);
        }
        for file in files {
            chattr(file, "+i");
        }
        WriteStop::Immutable(files.iter().map(|f| f.to_path_buf()).collect())
    }

    /// Makes every write of the daemon process `daemon` to a file fail.
    pub fn size_limit(daemon: u32) -> WriteStop {
        let pid = i32::try_from(daemon).unwrap();
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit(2) reads `zero` and writes `saved`, both alive for the call.
        let read = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut saved) };
        assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: saved.rlim_max,
        };
        // SAFETY: as above.
        let set = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &zero, std::ptr::null_mut()) };
        assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
        WriteStop::SizeLimit { pid, saved }
    }
}

impl Drop for WriteStop {
    fn drop(&mut self) {
        match self {
            WriteStop::Immutable(files) => {
                for file in files {
                    chattr(file, "-i");
                }
            }
            WriteStop::SizeLimit { pid, saved } => {
                // SAFETY: prlimit(2) reads `saved`, alive for the call. The process may
                // have exited meanwhile (ESRCH): nothing to put back then.
                unsafe { libc::prlimit(*pid, libc::RLIMIT_FSIZE, saved, std::ptr::null_mut()) };
            }
        }
    }
}

fn chattr(path: &Path, flag: &str) {
    let done = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status();
    assert!(
        done.is_ok_and(|s| s.success()),
        "chattr {flag} {} (root, on a file system with attributes)",
        path.display()
    );
}

/// How a test starts `iewatch run -c CONFIG`: killed when dropped, no stdout, its log
/// at error level to nowhere unless [`DaemonCommand::log_to`] or
/// [`DaemonCommand::stderr`] says otherwise. The one way the tests start a daemon.
pub struct DaemonCommand(tokio::process::Command);

impl DaemonCommand {
    /// `iewatch run -c config`.
    pub fn new(config: &Path) -> DaemonCommand {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_iewatch"));
        command
            .args(["run", "-c"])
            .arg(config)
            .env("IEWATCH_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        DaemonCommand(command)
    }

    /// Its log at `level`, appended to `path` (a restarted daemon adds to it).
    pub fn log_to(self, level: &str, path: &Path) -> DaemonCommand {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        self.stderr(level, file.into())
    }

    /// Its log at `level` to `stderr`.
    pub fn stderr(mut self, level: &str, stderr: std::process::Stdio) -> DaemonCommand {
        self.0.env("IEWATCH_LOG", level).stderr(stderr);
        self
    }

    /// One more variable in its environment.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> DaemonCommand {
        self.0.env(key, value);
        self
    }

    /// Starts it.
    pub fn spawn(mut self) -> tokio::process::Child {
        self.0.spawn().unwrap()
    }
}

/// `iewatch run` as a child process, for the tests that need its pid.
pub struct DaemonProcess(pub tokio::process::Child);

impl DaemonProcess {
    /// Starts `iewatch run -c config`, its log at error level to nowhere.
    pub fn start(config: &Path) -> DaemonProcess {
        DaemonProcess(DaemonCommand::new(config).spawn())
    }

    pub fn pid(&self) -> u32 {
        self.0.id().expect("the daemon is running")
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then its exit, which must be a success within 15 s.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(
            unsafe { libc::kill(i32::try_from(self.pid()).unwrap(), libc::SIGTERM) },
            0
        );
        let status = tokio::time::timeout(Duration::from_secs(15), self.0.wait())
            .await
            .expect("the daemon stops within 15 s")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// A notify socket read all the time, as systemd reads it (a daemon's datagrams must
/// never wait for room): what the daemon sent, one string per datagram.
pub struct Notifications {
    messages: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Notifications {
    /// Binds `path` (for `NOTIFY_SOCKET`) and reads it until dropped.
    pub fn bind(path: &Path) -> Notifications {
        let socket = tokio::net::UnixDatagram::bind(path).unwrap();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = messages.clone();
        let reader = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buffer).await {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                seen.lock().unwrap().push(text);
            }
        });
        Notifications { messages, reader }
    }

    /// The datagrams so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// How many lines so far start with `wanted`.
    pub fn count(&self, wanted: &str) -> usize {
        self.messages()
            .iter()
            .flat_map(|m| m.lines())
            .filter(|l| l.starts_with(wanted))
            .count()
    }

    /// Waits until `wanted` has been seen `times` times (15 s at most; then it fails,
    /// saying what came).
    pub async fn wait_for(&self, wanted: &str, times: usize) {
        let seen = wait_until(Duration::from_secs(15), || self.count(wanted) >= times).await;
        assert!(seen, "no {wanted} (x{times}) in {:?}", self.messages());
    }
}

/// The error-log reader of the one account `block` (an `[[account]]` block) configures,
/// as the daemon builds it; its config file is written into `dir`.
pub fn account_logs(dir: &Path, block: &str) -> iewatch::errorlog::AccountLogs {
    let path = dir.join("reader.toml");
    let text = format!(
        "[daemon]\ndatabase = \"{}\"\n\n{block}",
        dir.join("x.db").display()
    );
    std::fs::write(&path, text).unwrap();
    let config = iewatch::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let caches = iewatch::identity::TokenCaches::new(iewatch::identity::Env::from_pairs(&[]));
    let timeouts = (Duration::from_secs(10), Duration::from_secs(5));
    iewatch::errorlog::AccountLogs::for_account(&config.accounts[0], timeouts, &caches)
}
