//! Conformance of the simulator to spec/get-job.txt, one test per rule, with a plain hyper
//! client and real certificates; plus deterministic playback and fault injection.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{client_for, management_identity, scenario, start_simulator};
use http::{Method, Request, Response};
use http_body_util::Full;
use iewatch::{
    http_client::{self, HttpError, HttpsClient},
    simulator::{certs::CertificateAuthority, RunningSimulator, Scenario},
    tls::Identity,
};

const JOB: &str = "MySampleJob";

struct Harness {
    sim: RunningSimulator,
    client: HttpsClient,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_simulator(scenario("import-lifecycle.toml"), dir.path()).await;
    sim.set_time(Some(Duration::ZERO));
    let client = client_for(&sim, Some(&management_identity(&sim)));
    Harness {
        sim,
        client,
        _dir: dir,
    }
}

impl Harness {
    fn job_path(&self, job: &str) -> String {
        format!(
            "/{}/services/importexport/storageaccounts/xttest/jobs/{job}",
            self.sim.subscription_id()
        )
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> Response<Bytes> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.sim.endpoint()));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::from_static(body))).unwrap();
        http_client::send(&self.client, request, Duration::from_secs(5), 1 << 20)
            .await
            .unwrap()
    }

    /// `method path` with only the required `x-ms-version`.
    async fn versioned(&self, method: Method, path: &str) -> Response<Bytes> {
        self.request(method, path, &[("x-ms-version", "2014-11-01")], b"")
            .await
    }

    async fn get(&self, headers: &[(&str, &str)]) -> Response<Bytes> {
        let mut all = vec![("x-ms-version", "2014-11-01")];
        all.extend_from_slice(headers);
        self.request(Method::GET, &self.job_path(JOB), &all, b"")
            .await
    }
}

fn header<'a>(response: &'a Response<Bytes>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn extended_code(response: &Response<Bytes>) -> String {
    let body: serde_json::Value =
        serde_json::from_slice(response.body()).expect("odata.error body");
    body["odata.error"]["azure.values"][0]["ExtendedCode"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn get_job_answers_with_the_spec_headers_and_document() {
    let h = harness().await;
    let response = h
        .get(&[("accept", "application/json;odata=minimalmetadata")])
        .await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("application/json"));
    assert!(header(&response, "etag").starts_with("W/\"datetime'"));
    assert!(httpdate::parse_http_date(header(&response, "last-modified")).is_ok());
    assert!(httpdate::parse_http_date(header(&response, "date")).is_ok());
    assert_eq!(header(&response, "x-ms-request-id").len(), 32);
    assert_eq!(header(&response, "x-ms-version"), "2014-11-01");
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["Name"], JOB);
    assert_eq!(body["Properties"]["State"], "Creating");
    assert_eq!(
        body["Properties"]["ImportExportStatesPath"],
        "waimportexport"
    );
    assert!(
        body["DriveList"][0]["BitLockerKey"].is_string(),
        "the service sends import keys"
    );
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let h = harness().await;
    let response = h.versioned(Method::HEAD, &h.job_path(JOB)).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "etag").starts_with("W/"));
    assert!(response.body().is_empty());
}

#[tokio::test]
async fn x_ms_version_is_required_and_checked() {
    let h = harness().await;
    let missing = h.request(Method::GET, &h.job_path(JOB), &[], b"").await;
    assert_eq!(missing.status(), 400);
    assert_eq!(extended_code(&missing), "MissingOrIncorrectVersionHeader");
    let wrong = h
        .request(
            Method::GET,
            &h.job_path(JOB),
            &[("x-ms-version", "2012-03-01")],
            b"",
        )
        .await;
    assert_eq!(wrong.status(), 400);
    let old = h
        .request(
            Method::GET,
            &h.job_path(JOB),
            &[("x-ms-version", "2014-05-01")],
            b"",
        )
        .await;
    assert_eq!(old.status(), 200);
    assert_eq!(header(&old, "x-ms-version"), "2014-05-01");
}

#[tokio::test]
async fn version_2014_05_01_names_the_states_container() {
    let h = harness().await;
    let old = h
        .request(
            Method::GET,
            &h.job_path(JOB),
            &[("x-ms-version", "2014-05-01")],
            b"",
        )
        .await;
    let body: serde_json::Value = serde_json::from_slice(old.body()).unwrap();
    assert_eq!(
        body["Properties"]["ImportExportStatesContainer"],
        "waimportexport"
    );
    assert!(body["Properties"].get("ImportExportStatesPath").is_none());
}

#[tokio::test]
async fn accept_other_than_json_is_406_and_format_overrides_it() {
    let h = harness().await;
    assert_eq!(h.get(&[("accept", "application/xml")]).await.status(), 406);
    assert_eq!(
        h.get(&[("accept", "application/json;odata=fullmetadata")])
            .await
            .status(),
        200
    );
    let path = h.job_path(JOB);
    let overridden = format!("{path}?$format=application/json;odata=minimalmetadata");
    let response = h
        .request(
            Method::GET,
            &overridden,
            &[("x-ms-version", "2014-11-01"), ("accept", "text/xml")],
            b"",
        )
        .await;
    assert_eq!(response.status(), 200);
    let refused = format!("{path}?$format=text/xml");
    let response = h
        .request(
            Method::GET,
            &refused,
            &[
                ("x-ms-version", "2014-11-01"),
                ("accept", "application/json"),
            ],
            b"",
        )
        .await;
    assert_eq!(response.status(), 406);
}

#[tokio::test]
async fn a_non_zero_content_length_is_400() {
    let h = harness().await;
    let response = h
        .request(
            Method::GET,
            &h.job_path(JOB),
            &[("x-ms-version", "2014-11-01")],
            b"hello",
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(extended_code(&response), "InvalidContentLength");
    let zero = h
        .request(
            Method::GET,
            &h.job_path(JOB),
            &[("x-ms-version", "2014-11-01"), ("content-length", "0")],
            b"",
        )
        .await;
    assert_eq!(zero.status(), 200);
}

#[tokio::test]
async fn if_none_match_unmet_is_412() {
    let h = harness().await;
    let etag = header(&h.get(&[]).await, "etag").to_owned();
    assert_eq!(h.get(&[("if-none-match", &etag)]).await.status(), 412);
    assert_eq!(h.get(&[("if-none-match", "*")]).await.status(), 412);
    assert_eq!(
        h.get(&[(
            "if-none-match",
            "W/\"datetime'2000-01-01T00%3A00%3A00.0000000Z'\""
        )])
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn if_match_unmet_is_412() {
    let h = harness().await;
    let etag = header(&h.get(&[]).await, "etag").to_owned();
    assert_eq!(h.get(&[("if-match", &etag)]).await.status(), 200);
    assert_eq!(h.get(&[("if-match", "W/\"other\"")]).await.status(), 412);
}

#[tokio::test]
async fn if_modified_since_and_if_unmodified_since_unmet_are_412() {
    let h = harness().await;
    let last_modified = header(&h.get(&[]).await, "last-modified").to_owned();
    let modified = httpdate::parse_http_date(&last_modified).unwrap();
    let before = httpdate::fmt_http_date(modified - Duration::from_secs(60));
    let after = httpdate::fmt_http_date(modified + Duration::from_secs(60));
    assert_eq!(h.get(&[("if-modified-since", &after)]).await.status(), 412);
    assert_eq!(h.get(&[("if-modified-since", &before)]).await.status(), 200);
    assert_eq!(
        h.get(&[("if-unmodified-since", &before)]).await.status(),
        412
    );
    assert_eq!(
        h.get(&[("if-unmodified-since", &after)]).await.status(),
        200
    );
    assert_eq!(
        h.get(&[("if-modified-since", "yesterday")]).await.status(),
        400
    );
}

#[tokio::test]
async fn only_the_two_documented_pairs_of_conditions_may_be_combined() {
    let h = harness().await;
    let first = h.get(&[]).await;
    let etag = header(&first, "etag").to_owned();
    let modified = httpdate::parse_http_date(header(&first, "last-modified")).unwrap();
    let long_ago = httpdate::fmt_http_date(modified - Duration::from_secs(3600));
    // If-None-Match decides over If-Modified-Since (which alone would be met).
    assert_eq!(
        h.get(&[("if-none-match", &etag), ("if-modified-since", &long_ago)])
            .await
            .status(),
        412
    );
    // If-Match decides over If-Unmodified-Since (which alone would be unmet).
    assert_eq!(
        h.get(&[("if-match", &etag), ("if-unmodified-since", &long_ago)])
            .await
            .status(),
        200
    );
    for pair in [
        [
            ("if-match", etag.as_str()),
            ("if-none-match", etag.as_str()),
        ],
        [
            ("if-modified-since", long_ago.as_str()),
            ("if-unmodified-since", long_ago.as_str()),
        ],
        [
            ("if-none-match", etag.as_str()),
            ("if-unmodified-since", long_ago.as_str()),
        ],
        [
            ("if-match", etag.as_str()),
            ("if-modified-since", long_ago.as_str()),
        ],
    ] {
        let response = h.get(&pair).await;
        assert_eq!(response.status(), 400, "{pair:?}");
        assert_eq!(
            extended_code(&response),
            "MultipleConditionHeadersNotSupported"
        );
    }
}

#[tokio::test]
async fn etag_and_last_modified_change_exactly_when_the_document_changes() {
    let h = harness().await;
    let day = Duration::from_secs(86_400);
    let at = |offset: Duration| {
        h.sim.set_time(Some(offset));
        async { h.get(&[]).await }
    };
    let start = at(Duration::ZERO).await;
    let still = at(day / 4).await; // nothing happens before 12h
    assert_eq!(header(&start, "etag"), header(&still, "etag"));
    assert_eq!(
        header(&start, "last-modified"),
        header(&still, "last-modified")
    );
    assert_eq!(start.body(), still.body());
    let shipping = at(day / 2).await;
    assert_ne!(header(&start, "etag"), header(&shipping, "etag"));
    assert_ne!(
        header(&start, "last-modified"),
        header(&shipping, "last-modified")
    );
    let body: serde_json::Value = serde_json::from_slice(shipping.body()).unwrap();
    assert_eq!(body["Properties"]["State"], "Shipping");
    let later = at(day).await;
    assert_eq!(header(&shipping, "etag"), header(&later, "etag"));
}

#[tokio::test]
async fn unknown_jobs_accounts_and_subscriptions_are_refused_with_odata_errors() {
    let h = harness().await;
    let response = h.versioned(Method::GET, &h.job_path("NoSuchJob")).await;
    assert_eq!(response.status(), 404);
    assert_eq!(extended_code(&response), "JobNotFound");
    let other_account = format!(
        "/{}/services/importexport/storageaccounts/nope/jobs/{JOB}",
        h.sim.subscription_id()
    );
    let response = h.versioned(Method::GET, &other_account).await;
    assert_eq!(response.status(), 404);
    let other_sub = "/00000000-0000-0000-0000-000000000000/services/importexport/storageaccounts/xttest/jobs/MySampleJob";
    let response = h.versioned(Method::GET, other_sub).await;
    assert_eq!(response.status(), 403);
    let response = h.versioned(Method::GET, "/nothing/here").await;
    assert_eq!(response.status(), 404);
    let response = h.versioned(Method::DELETE, &h.job_path(JOB)).await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn list_jobs_returns_every_job_of_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let mut many = scenario("bench-1000.toml");
    many.jobs[0].count = Some(3);
    let sim = start_simulator(many, dir.path()).await;
    let client = client_for(&sim, Some(&management_identity(&sim)));
    let uri = format!(
        "{}/{}/services/importexport/storageaccounts/xttest/jobs",
        sim.endpoint(),
        sim.subscription_id()
    );
    let request = Request::get(uri)
        .header("x-ms-version", "2014-11-01")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http_client::send(&client, request, Duration::from_secs(5), 1 << 20)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    let names: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bench-00001", "bench-00002", "bench-00003"]);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_or_none_is_refused_at_the_handshake() {
    let h = harness().await;
    let stranger = CertificateAuthority::generate("stranger").unwrap();
    let (cert, key) = stranger.issue_client("intruder").unwrap();
    let intruder = Identity::from_pem(&cert, &key).unwrap();
    for identity in [Some(&intruder), None] {
        let client = client_for(&h.sim, identity);
        let request = Request::get(format!("{}{}", h.sim.endpoint(), h.job_path(JOB)))
            .header("x-ms-version", "2014-11-01")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let err = http_client::send(&client, request, Duration::from_secs(5), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Tls(_)), "{err:?}");
    }
    assert!(
        h.sim.requests().is_empty(),
        "no refused request may reach the handler"
    );
}

#[test]
fn playback_is_deterministic() {
    let compile = || scenario("import-lifecycle.toml").compile().unwrap();
    let (a, b) = (compile(), compile());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.versions.len(), y.versions.len());
        for (vx, vy) in x.versions.iter().zip(&y.versions) {
            assert_eq!(
                (vx.since, &vx.etag, &vx.last_modified, &vx.body),
                (vy.since, &vy.etag, &vy.last_modified, &vy.body)
            );
        }
    }
    // Steps at the same offset make one version; the ten-day life has 10 distinct ones.
    assert_eq!(a[0].versions.len(), 10);
    assert_eq!(
        a[0].at(Duration::from_secs(10 * 86_400))
            .job
            .as_ref()
            .unwrap()
            .properties
            .state,
        "Completed"
    );
}

#[test]
fn every_shipped_scenario_compiles() {
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config/scenarios")).unwrap()
    {
        let path = entry.unwrap().path();
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        scenario
            .compile()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        scenario.fault_windows().unwrap();
    }
    assert!(
        Scenario::parse("speed = 1\nsurprise = true").is_err(),
        "unknown keys are refused"
    );
}

#[tokio::test]
async fn faults_are_injected_in_their_windows() {
    let dir = tempfile::tempdir().unwrap();
    let mut storm = scenario("fault-storm.toml");
    for fault in &mut storm.faults {
        fault.every = None; // every request in the window
    }
    let sim = start_simulator(storm, dir.path()).await;
    let client = client_for(&sim, Some(&management_identity(&sim)));
    let uri = format!(
        "{}/{}/services/importexport/storageaccounts/xttest/jobs/StormJob",
        sim.endpoint(),
        sim.subscription_id()
    );
    let get = || {
        let request = Request::get(&uri)
            .header("x-ms-version", "2014-11-01")
            .body(Full::new(Bytes::new()))
            .unwrap();
        http_client::send(&client, request, Duration::from_millis(500), 1 << 20)
    };
    let hour = |h: u64| Some(Duration::from_secs(h * 3600));

    sim.set_time(hour(12));
    let busy = get().await.unwrap();
    assert_eq!(
        (busy.status().as_u16(), header(&busy, "retry-after")),
        (503, "1")
    );
    sim.set_time(hour(36));
    assert_eq!(get().await.unwrap().status(), 500);
    sim.set_time(hour(50));
    assert_eq!(get().await.unwrap().status(), 429);
    sim.set_time(hour(62));
    let malformed = get().await.unwrap();
    assert_eq!(malformed.status(), 200);
    assert!(serde_json::from_slice::<serde_json::Value>(malformed.body()).is_err());
    sim.set_time(hour(74));
    assert!(
        matches!(
            get().await.unwrap_err(),
            HttpError::Body(_) | HttpError::Transport(_)
        ),
        "truncated"
    );
    sim.set_time(hour(86));
    assert!(
        matches!(get().await.unwrap_err(), HttpError::Transport(_)),
        "reset"
    );
    sim.set_time(hour(98));
    assert!(
        matches!(get().await.unwrap_err(), HttpError::Timeout(_)),
        "stall"
    );
    sim.set_time(hour(110));
    assert_eq!(header(&get().await.unwrap(), "content-type"), "text/html");
    sim.set_time(hour(122));
    assert_eq!(get().await.unwrap().status(), 404);
    sim.set_time(hour(200));
    assert_eq!(
        get().await.unwrap().status(),
        200,
        "no fault after the windows"
    );
    let faults = sim.requests().iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(faults, 9);
}

#[tokio::test]
async fn accept_ranges_that_admit_json_are_answered_and_foreign_ones_refused() {
    let h = harness().await;
    for admitted in [
        "*/*",
        "application/*",
        "text/html, */*;q=0.8",
        "application/json",
    ] {
        assert_eq!(
            h.get(&[("accept", admitted)]).await.status(),
            200,
            "{admitted}"
        );
    }
    for foreign in ["text/html", "application/xml, text/*"] {
        assert_eq!(
            h.get(&[("accept", foreign)]).await.status(),
            406,
            "{foreign}"
        );
    }
}

#[tokio::test]
async fn an_msal_client_finds_the_token_endpoint_and_reads_jobs_at_each_published_api_version() {
    let h = harness().await;
    let arm = h.sim.arm_endpoint();
    let tenant = "00000000-0000-0000-0000-000000000001";
    let send = |request: Request<Full<Bytes>>| {
        http_client::send(&h.client, request, Duration::from_secs(5), 1 << 20)
    };
    // 1. The discovery document, as MSAL (azure-identity) reads it first.
    let discovery = send(
        Request::get(format!(
            "{arm}/{tenant}/v2.0/.well-known/openid-configuration"
        ))
        .body(Full::new(Bytes::new()))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(discovery.status(), 200);
    let document: serde_json::Value = serde_json::from_slice(discovery.body()).unwrap();
    let token_endpoint = document["token_endpoint"].as_str().unwrap().to_owned();
    assert_eq!(token_endpoint, format!("{arm}/{tenant}/oauth2/v2.0/token"));
    // 2. A token from the endpoint it names, with the scenario's app registration.
    let block = h.sim.arm_account_block("arm");
    let value = |key: &str| common::block_value(&block, key);
    let token_url = token_endpoint.replace(tenant, &value("tenant_id"));
    // As MSAL Python sends it: client_info, reserved scopes, its telemetry headers.
    let form = format!(
        "client_id={}&grant_type=client_credentials&client_info=1&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default+offline_access+openid+profile",
        value("client_id"),
        value("client_secret")
    );
    let token = send(
        Request::post(token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("x-client-sku", "MSAL.Python")
            .header("x-client-ver", "1.31.0")
            .header("client-request-id", "3f2e6c1a-0000-4000-8000-000000000001")
            .body(Full::new(Bytes::from(form)))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(token.status(), 200, "{:?}", token.body());
    let token: serde_json::Value = serde_json::from_slice(token.body()).unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    // 3. The list at every published api-version; an unpublished one is refused.
    let jobs = format!(
        "{arm}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ImportExport/jobs",
        value("subscription_id"),
        value("resource_group")
    );
    for (version, status) in [
        ("2016-11-01", 200),
        ("2020-08-01", 200),
        ("2021-01-01", 200),
        ("2019-01-01", 400),
    ] {
        let list = send(
            Request::get(format!("{jobs}?api-version={version}"))
                .header("authorization", &bearer)
                .header("accept", "application/json")
                .header(
                    "x-ms-client-request-id",
                    "3f2e6c1a-0000-4000-8000-000000000002",
                )
                .header(
                    "user-agent",
                    "azsdk-python-mgmt-storageimportexport/0.1.0 Python/3.11",
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(list.status(), status, "{version}");
        if status != 200 {
            continue;
        }
        // Each published version's shape: 2020-08-01 has no systemData, the others do.
        let get = send(
            Request::get(format!("{jobs}/{JOB}?api-version={version}"))
                .header("authorization", &bearer)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(get.status(), 200, "{version}");
        let job: serde_json::Value = serde_json::from_slice(get.body()).unwrap();
        assert_eq!(job["name"], JOB);
        assert_eq!(
            job.get("systemData").is_some(),
            version != "2020-08-01",
            "{version}: {job}"
        );
    }
}

#[test]
fn simulate_prints_both_account_blocks_and_takes_a_fixed_resource_manager_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (mut child, printed) = common::spawn_simulate(dir.path(), port, None);
    let _ = child.kill();
    let _ = child.wait();
    assert!(printed.contains("kind = \"arm\""), "{printed}");
    assert!(
        printed.contains(&format!("endpoint = \"https://127.0.0.1:{port}\"")),
        "{printed}"
    );
    assert!(
        printed.contains("storage_account = "),
        "the classic block too: {printed}"
    );
}
