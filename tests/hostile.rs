//! Hostile input: a service, a receiver, a scraper or a careless operator trying to make
//! iewatch leak a secret, starve, forge its metrics or record another job's answer.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{event_list, start_simulator, RunningDaemon};

/// Counts TCP connections to a listener on another loopback address (another origin).
async fn foreign_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let origin = format!("https://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (origin, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_to_another_origin_is_refused_and_the_token_stays_home() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = iewatch::simulator::Scenario::parse(
        "[[job]]\nname = \"Alpha\"\n[[job]]\nname = \"Bravo\"\n[[job]]\nname = \"Delta\"\n",
    )
    .unwrap();
    let sim = start_simulator(scenario, dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let (origin, connections) = foreign_listener().await;
    sim.set_next_link_origin(Some(origin));
    let account = sim
        .arm_account_block("arm")
        .replace("[[account]]\n", "[[account]]\njobs = \"all\"\n");
    let db = dir.path().join("iewatch.db");
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"100ms\"\n\n{account}",
            db.display()
        ),
    )
    .unwrap();
    let daemon = RunningDaemon::start(&config).await;
    let lists = |sim: &iewatch::simulator::RunningSimulator| {
        sim.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.job.is_none())
            .count()
    };
    assert!(
        common::wait_until(Duration::from_secs(15), || lists(&sim) >= 3).await,
        "discovery lists the jobs again and again"
    );
    daemon.stop().await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing, and so no bearer token, went to the other origin"
    );
    if db.exists() {
        assert!(
            event_list(&db, "Delta").await.is_empty(),
            "the page behind the foreign link was not read"
        );
    }
}
