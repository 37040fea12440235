//! `iewatch demo`: the simulator playing an import job's ten days in about half a minute,
//! the daemon watching it on a temporary database, and a local webhook sink that checks
//! each alert's signature and prints it as it arrives. Ends with the job's timeline.
//! `--databox` plays an order of today's portal (a Data Box customer-disk job) instead.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use iewatch_core::{
    config::Config,
    events::EventType,
    payload,
    store::{Details, Store},
};

use crate::simulator::{self, Scenario, SimulatorOptions};

const DEMO_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Longest the demo may run before it gives up (it normally takes well under a minute).
const DEMO_DEADLINE: Duration = Duration::from_secs(180);

/// Which job the demo watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demo {
    /// An Import/Export job through the classic API (the spec's).
    Classic,
    /// An Import/Export job of today's portal: a Data Box `DataBoxCustomerDisk` order
    /// through Resource Manager.
    DataBox,
}

impl Demo {
    fn scenario(self) -> &'static str {
        match self {
            Demo::Classic => simulator::IMPORT_LIFECYCLE,
            Demo::DataBox => simulator::DATABOX_CUSTOMER_DISK,
        }
    }

    fn job(self) -> &'static str {
        match self {
            Demo::Classic => "MySampleJob",
            Demo::DataBox => "portal-import-01",
        }
    }

    fn account_block(self, sim: &simulator::RunningSimulator) -> String {
        match self {
            Demo::Classic => sim.account_block("demo"),
            Demo::DataBox => sim.databox_account_block("demo"),
        }
    }

    fn headline(self) -> &'static str {
        match self {
            Demo::Classic => "a simulated import job, ten days in about 35 seconds",
            Demo::DataBox => {
                "a simulated import job of today's portal (Data Box, two customer disks), \
                 nine days in about 35 seconds"
            }
        }
    }
}

/// Runs the demo, printing to stdout.
///
/// # Errors
/// Any part failing to start, or the lifecycle not completing in time.
pub async fn run(demo: Demo) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let scenario = Scenario::parse(demo.scenario()).context("built-in scenario")?;
    let job = demo.job();
    let sim = simulator::start(SimulatorOptions {
        scenario,
        listen: "127.0.0.1:0".parse()?,
        certs_dir: dir.join("certs"),
        arm_listen: None,
    })
    .await
    .context("cannot start the simulator")?;

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink_stop = CancellationToken::new();
    let sink = start_sink(seen.clone(), sink_stop.clone()).await?;

    let config_path = dir.join("iewatch.toml");
    let config_text = format!(
        "[daemon]\ndatabase = \"iewatch.db\"\npoll_interval = \"1s\"\nrequest_timeout = \"5s\"\n\
         poll_interval_by_state = {{ Creating = \"1s\", Completed = \"1s\" }}\n\n{}\n\
         [[job]]\naccount = \"demo\"\nname = \"{job}\"\n\n\
         [[webhook]]\nname = \"sink\"\nurl = \"http://{sink}/alerts\"\nsecret = \"{DEMO_SECRET}\"\nretry_initial = \"1s\"\n",
        demo.account_block(&sim)
    );
    std::fs::write(&config_path, config_text)?;
    let config = Config::load(&config_path).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let database = config.daemon.database.clone();

    iewatch_core::outln!("iewatch demo: {}.", demo.headline());
    iewatch_core::outln!(
        "simulator {}, webhook sink http://{sink}, database {}\n",
        sim.endpoint(),
        database
    );

    let shutdown = CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let daemon = tokio::spawn(iewatch_core::daemon::run(
        config_path,
        config,
        shutdown.clone(),
        reload_rx,
        None,
    ));

    let outcome = wait_for_the_end(&sim, &daemon, &database, job).await;
    shutdown.cancel();
    daemon.await.context("daemon task")??;
    sink_stop.cancel();
    sim.stop().await;
    outcome?;

    let store = Store::open_existing_database(&database).await?;
    let history = store.history(job, None, Details::Skip).await?;
    store.close().await;
    iewatch_core::outln!(
        "\nTimeline of demo/{job} ({} events, {} alerts delivered):\n",
        history.len(),
        seen.lock().map_or(0, |s| s.len())
    );
    iewatch_core::out!("{}", iewatch_core::report::history_text(&history));
    iewatch_core::outln!("\nTry it on the kept database:  sqlite3 {} 'SELECT type, from_value, to_value FROM events'", database);
    iewatch_core::outln!(
        "What failed on the drives:    iewatch errors {job} --database {database}"
    );
    Ok(())
}

/// Waits until the scenario is over, the daemon has polled since, and every alert is
/// out; or until the daemon stops or the deadline passes.
async fn wait_for_the_end(
    sim: &simulator::RunningSimulator,
    daemon: &tokio::task::JoinHandle<Result<(), iewatch_core::daemon::DaemonError>>,
    database: &iewatch_core::store::Database,
    job: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let end = sim.end_of_scenario();
    loop {
        if started.elapsed() > DEMO_DEADLINE {
            return Err(anyhow::anyhow!(
                "the lifecycle did not complete within {DEMO_DEADLINE:?}"
            ));
        }
        if daemon.is_finished() {
            return Err(anyhow::anyhow!("the daemon stopped early"));
        }
        // Done when the scenario is over, the daemon has polled since, and every alert is out.
        if sim.now() > end + Duration::from_secs(86_400) {
            let store = Store::open_existing_database(database).await?;
            let backlog = store.outbox_backlog().await?;
            let history = store.history(job, None, Details::Skip).await?;
            let complete = history.iter().any(|e| {
                e.event_type == EventType::JobStateChanged && e.to.as_deref() == Some("Completed")
            });
            store.close().await;
            if complete && backlog == 0 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!("iewatch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    Ok(base)
}

async fn start_sink(
    seen: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let key = iewatch_core::config::decode_webhook_secret(DEMO_SECRET).context("demo secret")?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
            };
            let (seen, key) = (seen.clone(), key.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (seen, key) = (seen.clone(), key.clone());
                        async move { Ok::<_, Infallible>(receive(request, &seen, &key).await) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

// Long: the sink checks what a receiver must (signature, id, timestamp) and prints the
// alert; one request, top to bottom.
async fn receive(
    request: Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<String>>,
    key: &[u8],
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Response::builder()
                .status(400)
                .body(Full::default())
                .unwrap_or_default()
        }
    };
    let expected = payload::signature(key, &id, timestamp.parse().unwrap_or(0), &body);
    let verified = if expected == signature {
        "signed ✓"
    } else {
        "BAD SIGNATURE"
    };
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.contains(&id) {
        if let Some(alert) = payload::parse(&body) {
            let data = &alert["data"];
            let subject = data["drive_id"]
                .as_str()
                .map_or("job".to_owned(), |d| format!("drive {d}"));
            // Shipping, action and delay payloads carry fields rather than from/to.
            let fields: Vec<&str> = [
                "package",
                "carrier",
                "tracking",
                "stage",
                "status",
                "code",
                "deadline",
                "at",
                "condition",
            ]
            .iter()
            .filter_map(|k| data[*k].as_str())
            .collect();
            let fields = (!fields.is_empty()).then(|| fields.join(" "));
            // A drive.errors event says it all in its summary.
            let fields = data["summary"].as_str().map(str::to_owned).or(fields);
            let change = alert["type"]
                .as_str()
                .and_then(EventType::parse)
                .map_or_else(
                    || "?".to_owned(),
                    |t| {
                        t.describe(
                            data["from"].as_str(),
                            data["to"]
                                .as_str()
                                .or(data["error"].as_str())
                                .or(fields.as_deref()),
                        )
                    },
                );
            iewatch_core::outln!(
                "ALERT {:<7} {:<26} {subject:<15} {change}  ({verified})",
                data["severity"].as_str().unwrap_or("?"),
                alert["type"].as_str().unwrap_or("?")
            );
        }
        seen.push(id);
    }
    Response::new(Full::default())
}
