//! The status page: rendered by a real headless Chromium (Debian's chromium, which
//! `.ci/run` installs and requires with IEWATCH_REQUIRE_CHROMIUM; elsewhere said once and
//! skipped), its JSON equal to `status --json` and `history --json`, hostile service
//! strings escaped on every page, the bearer token of `token_file`, and the Grafana
//! dashboard naming only metrics that a scrape has.

mod common;

use std::{path::Path, time::Duration};

use common::{http_config, scenario, start_simulator, RunningDaemon};

/// GET `path` from `addr`: status, headers as text, body.
async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

use common::browser::{chromium, headless};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_render_in_chromium_with_every_job_timeline_row_and_a_curve_per_drive() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario("import-lifecycle.toml");
    let sim = start_simulator(scenario.clone(), dir.path()).await;
    let (config, addr) = http_config(dir.path(), &sim, &["MySampleJob"], "");
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    common::play_versions(
        &sim,
        &scenario,
        &db,
        "MySampleJob",
        Duration::ZERO..=Duration::MAX,
    )
    .await;

    // The JSON is what the commands print.
    let (status, head, api) = get(&addr, "/api/v1/jobs", &[]).await;
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    let (ok, cli) =
        common::iewatch_output(&["status", "--json", "--database", &db.display().to_string()]);
    assert!(ok, "{cli}");
    let as_value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let (api_jobs, cli_jobs) = (as_value(&api), as_value(&cli));
    assert_eq!(api_jobs, cli_jobs);
    let (status, _, events) = get(&addr, "/api/v1/jobs/sim/MySampleJob/events", &[]).await;
    assert_eq!(status, 200);
    let (ok, history) = common::iewatch_output(&[
        "history",
        "MySampleJob",
        "--json",
        "--database",
        &db.display().to_string(),
    ]);
    assert!(ok, "{history}");
    assert_eq!(as_value(&events), as_value(&history));
    let recorded = as_value(&events).as_array().unwrap().len();
    assert!(recorded >= 30, "{recorded} events");
    assert_eq!(
        get(&addr, "/api/v1/jobs/sim/NoSuchJob/events", &[]).await.0,
        404
    );
    assert_eq!(get(&addr, "/jobs/sim/NoSuchJob", &[]).await.0, 404);

    // Served HTML is small and self-contained.
    let (status, _, index) = get(&addr, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(index.len() < 16 * 1024, "{} bytes", index.len());
    for external in ["<script", "src=\"http", "href=\"http", "@import"] {
        assert!(!index.contains(external), "{external} in the page");
    }
    // No reload unless asked for, and then within bounds; "as of" says how old it is.
    assert!(!index.contains("http-equiv=\"refresh\""), "{index}");
    assert!(
        index.contains("As of ") && index.contains("<main>"),
        "{index}"
    );
    let (_, head, asked) = get(&addr, "/?refresh=5", &[]).await;
    assert!(asked.contains("content=\"10\""), "at least 10 s: {asked}");
    for header in [
        "content-security-policy: default-src 'none'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "cache-control: no-store",
        "x-frame-options: DENY",
    ] {
        assert!(
            head.to_ascii_lowercase()
                .contains(&header.to_ascii_lowercase()),
            "{header}: {head}"
        );
    }
    assert!(index.contains("name=\"viewport\""));

    let Some(browser) = chromium() else {
        daemon.stop().await;
        return;
    };
    let profile = dir.path().join("chromium");
    let dom = headless(
        browser,
        &profile,
        &format!("http://{addr}/"),
        &["--dump-dom"],
    );
    assert!(dom.contains("href=\"/jobs/sim/MySampleJob\""), "{dom}");
    assert!(dom.contains("Completed"), "{dom}");
    assert_eq!(dom.matches("<tr class=\"job").count(), 1, "{dom}");
    // CompletedWithErrors: the job needs someone, and says so.
    assert!(dom.contains("completed with errors"), "{dom}");

    let job_url = format!("http://{addr}/jobs/sim/MySampleJob");
    let dom = headless(browser, &profile, &job_url, &["--dump-dom"]);
    assert_eq!(
        dom.matches("<tr class=\"event").count(),
        recorded,
        "one row per event"
    );
    assert!(
        dom.contains("<tr class=\"event error\""),
        "severity-coloured rows"
    );
    let paths: Vec<&str> = dom
        .match_indices("<path class=\"drive\"")
        .map(|(i, _)| &dom[i..])
        .collect();
    assert_eq!(paths.len(), 2, "one curve per drive");
    for drive in ["1W0F9LV1", "9WM3NZFS"] {
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with(&format!("<path class=\"drive\" data-drive=\"{drive}\""))),
            "{drive}"
        );
    }
    for state in ["Creating", "Shipping", "Transferring", "Completed"] {
        assert!(
            dom.contains(&format!("<td>{state}</td>")),
            "time in {state}"
        );
    }

    let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("status-page");
    let shot = shots.join("job.png");
    if std::fs::create_dir_all(&shots).is_ok() {
        headless(
            browser,
            &profile,
            &job_url,
            &[
                "--window-size=1100,1800",
                &format!("--screenshot={}", shot.display()),
            ],
        );
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} bytes",
            png.len()
        );
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_state_is_escaped_on_every_page_and_in_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = "<script>alert(\"x\")</script>&<img src=x onerror=alert(1)>";
    let scenario = iewatch::simulator::Scenario::parse(&format!(
        "[[job]]\nname = \"Hostile\"\ntype = \"Import\"\nstate = {}\ndrive = [{{ id = \"1W0F9LV1\" }}]\n",
        toml::Value::String(hostile.into())
    ))
    .unwrap();
    let sim = start_simulator(scenario, dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let (config, addr) = http_config(dir.path(), &sim, &["Hostile"], "");
    let daemon = RunningDaemon::start(&config).await;
    assert!(
        common::wait_for(Duration::from_secs(20), || async {
            get(&addr, "/api/v1/jobs", &[]).await.2.contains("onerror")
        })
        .await,
        "the hostile state recorded"
    );
    for path in ["/", "/jobs/sim/Hostile"] {
        let (status, _, page) = get(&addr, path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert!(!page.contains("<script"), "{path}: {page}");
        assert!(!page.contains("<img"), "{path}: {page}");
        assert!(
            page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;img"),
            "{path}: {page}"
        );
    }
    // The JSON carries the text as it came, as JSON: a string, not markup.
    let (_, head, api) = get(&addr, "/api/v1/jobs", &[]).await;
    assert!(head.contains("application/json"));
    let jobs: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(jobs[0]["state"], hostile);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_every_request_but_healthz_needs_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let token = "s3cr3t-t0ken-for-the-page";
    let token_file = dir.path().join("page-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (config, addr) = http_config(
        dir.path(),
        &sim,
        &["MySampleJob"],
        &format!("token_file = \"{}\"\n", token_file.display()),
    );
    let daemon = RunningDaemon::start(&config).await;
    for path in ["/", "/jobs/sim/MySampleJob", "/api/v1/jobs", "/metrics"] {
        let (status, head, body) = get(&addr, path, &[]).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
        assert!(!body.contains("MySampleJob"), "{path}: {body}");
        let wrong = get(
            &addr,
            path,
            &[("Authorization", "Bearer s3cr3t-t0ken-for-the-pagX")],
        )
        .await;
        assert_eq!(wrong.0, 401, "{path}");
        let short = get(&addr, path, &[("Authorization", "Bearer s3cr3t")]).await;
        assert_eq!(short.0, 401, "{path}");
        let right = get(
            &addr,
            path,
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert!(
            right.0 == 200 || (path.starts_with("/jobs") && right.0 == 404),
            "{path}: {}",
            right.0
        );
        // RFC 7235: the scheme is case-insensitive.
        let lower = get(
            &addr,
            path,
            &[("Authorization", &format!("bearer {token}"))],
        )
        .await;
        assert_eq!(lower.0, right.0, "{path}: `bearer`");
    }
    assert_eq!(
        get(&addr, "/healthz", &[]).await.0,
        200,
        "probes need no token"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_parses_and_names_only_metrics_a_scrape_has() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let (config, addr) = http_config(dir.path(), &sim, &["MySampleJob"], "");
    let db = dir.path().join("iewatch.db");
    let daemon = RunningDaemon::start(&config).await;
    assert!(
        common::wait_for(Duration::from_secs(20), || async {
            common::stored_etag(&db, "MySampleJob").await.is_some()
        })
        .await
    );
    let scrape = get(&addr, "/metrics", &[]).await.2;
    daemon.stop().await;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/iewatch.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dashboard["title"], "iewatch");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut named = std::collections::BTreeSet::new();
    for panel in panels {
        assert!(
            panel["title"].is_string() && panel["gridPos"]["w"].is_number(),
            "{panel}"
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("iewatch_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                named.insert(name);
            }
        }
    }
    assert!(named.len() >= 10, "{named:?}");
    for name in &named {
        // A series, or (the ETA, known only after ten minutes of copying) the family's
        // declaration. Histograms are scraped as _bucket, _sum and _count series.
        assert!(
            scrape.lines().any(|l| {
                l.starts_with(&format!("{name}{{"))
                    || l.starts_with(&format!("{name} "))
                    || l == format!("# TYPE {name} gauge")
            }),
            "{name} is not in a scrape:\n{scrape}"
        );
    }
}

/// Records one `job.reminder` per text for the job `name` of `account`, in order.
async fn reminders(store: &iewatch::store::Writer, account: &str, name: &str, texts: &[String]) {
    let job = store.load_job(account, name).await.unwrap();
    let events: Vec<iewatch::events::Event> = texts
        .iter()
        .map(|text| {
            iewatch::events::Event::notice(
                iewatch::events::EventType::JobReminder,
                None,
                text.clone(),
                iewatch::model::Severity::Info,
                serde_json::json!({}),
            )
        })
        .collect();
    let now: iewatch::moment::Moment = std::time::SystemTime::now().into();
    store
        .record_bookkeeping(job.id, &job.memory, &events, &[], now)
        .await
        .unwrap();
}

/// A job named `acct/Twin` (in account `prod`) and a job `Twin` in account `acct`: each
/// page, API answer and `history` names its own job, never the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_holds_a_slash_addresses_its_own_job_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let (config, addr) = http_config(dir.path(), &sim, &["MySampleJob"], "");
    let db = dir.path().join("iewatch.db");
    let store = iewatch::store::Writer::open_file(&db).await.unwrap();
    let none = |_: &[iewatch::events::Event]| Vec::new();
    let slashed = common::record_lifecycle(&store, "acct/Twin", none, false, |_| {
        std::time::SystemTime::now()
    })
    .await
    .len();
    // The other one: one event only, in account `acct`.
    reminders(&store, "acct", "Twin", &["only the twin".to_owned()]).await;
    store.close().await;
    let daemon = RunningDaemon::start(&config).await;
    let (status, _, events) = get(&addr, "/api/v1/jobs/prod/acct%2FTwin/events", &[]).await;
    let (page_status, _, page) = get(&addr, "/jobs/prod/acct%2FTwin", &[]).await;
    let (twin_status, _, twin_events) = get(&addr, "/api/v1/jobs/acct/Twin/events", &[]).await;
    daemon.stop().await;
    assert_eq!(status, 200);
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), slashed);
    assert!(events
        .iter()
        .all(|e| e["job"] == "acct/Twin" && e["account"] == "prod"));
    assert_eq!(page_status, 200);
    assert!(
        page.contains("acct/Twin") && !page.contains("only the twin"),
        "{page}"
    );
    assert_eq!(twin_status, 200);
    assert!(twin_events.contains("only the twin"), "{twin_events}");
    let db = db.display().to_string();
    let (ok, own) = common::iewatch_output(&["history", "prod/acct/Twin", "--database", &db]);
    assert!(
        ok && !own.contains("only the twin") && own.lines().count() == slashed,
        "{own}"
    );
}

/// A job with 450 events: its page shows the newest 200, a link to the 200 before them,
/// and from there to the last 50; no event twice, none left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_timeline_is_shown_a_page_at_a_time_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let (config, addr) = http_config(dir.path(), &sim, &["MySampleJob"], "");
    let db = dir.path().join("iewatch.db");
    let store = iewatch::store::Writer::open_file(&db).await.unwrap();
    let texts: Vec<String> = (0..450)
        .map(|i| format!("reminder number {i:03}"))
        .collect();
    reminders(&store, "prod", "Long", &texts).await;
    store.close().await;
    let daemon = RunningDaemon::start(&config).await;
    let mut seen = Vec::new();
    let mut path = "/jobs/prod/Long".to_owned();
    let mut pages = 0;
    for _ in 0..5 {
        pages += 1;
        let (status, _, page) = get(&addr, &path, &[]).await;
        assert_eq!(status, 200, "{path}");
        let rows: Vec<usize> = page
            .match_indices("reminder number ")
            .filter_map(|(i, _)| page[i + 16..i + 19].parse().ok())
            .collect();
        assert!(
            rows.windows(2).all(|w| w[0] > w[1]),
            "newest first: {rows:?}"
        );
        seen.extend(rows);
        let Some(at) = page.find("href=\"?before=") else {
            break;
        };
        let end = page[at + 6..].find('"').unwrap() + at + 6;
        path = format!("/jobs/prod/Long{}", &page[at + 6..end]);
    }
    daemon.stop().await;
    let expected: Vec<usize> = (0..450).rev().collect();
    assert_eq!(seen, expected, "every event once");
    assert_eq!(pages, 3);
}
