//! The classic Get Job client against real HTTPS on 127.0.0.1 with certificates made at
//! test time: what it sends, and how it reads every kind of answer.

mod common;

use std::time::Duration;

use common::{respond, ScriptedServer, TestPki, SAMPLE_JOB};
use iewatch::{
    config::ClassicAccount,
    model::{ETag, JobName},
    source::{
        classic::{ClassicClient, ACCEPT},
        classic_wire::Job,
        IfNoneMatch, PollOutcome, SourceError,
    },
};

const SUBSCRIPTION: &str = common::SAMPLE_SUBSCRIPTION;
const SAMPLE_ETAG: &str = "W/\"datetime'2014-04-30T00%3A25%3A42.3131245Z'\"";

fn client(pki: &TestPki, endpoint: String, timeout: Duration) -> ClassicClient {
    pki.classic_client(endpoint, timeout)
}

fn sample_ok() -> http::Response<http_body_util::Full<bytes::Bytes>> {
    respond(
        200,
        &[
            (
                "content-type",
                "application/json;odata=minimalmetadata;streaming=true;charset=utf-8",
            ),
            ("etag", SAMPLE_ETAG),
            ("last-modified", "Wed, 30 Apr 2014 00:25:42 GMT"),
            ("x-ms-request-id", "7f1ce9a13cba9f58b6deaa73690e8055"),
        ],
        SAMPLE_JOB,
    )
}

#[test]
fn spec_sample_parses_to_the_values_it_shows() {
    let job: Job = serde_json::from_str(SAMPLE_JOB).unwrap();
    assert_eq!(job.name, "MySampleJob");
    assert_eq!(job.properties.state, "Creating");
    assert_eq!(job.properties.job_type.as_deref(), Some("Import"));
    assert_eq!(job.properties.cancel_requested, Some(false));
    assert_eq!(
        job.properties.import_export_states_path.as_deref(),
        Some("waimportexport")
    );
    let package = job.properties.delivery_package.as_ref().unwrap();
    assert_eq!(package.ship_date.as_deref(), Some("4/30/2014 12:25:40 AM"));
    assert_eq!(package.drive_count, Some(2));
    let drives = job.drive_list.as_ref().unwrap();
    assert_eq!(drives.len(), 2);
    assert_eq!(drives[0].drive_id, "1W0F9LV1");
    assert_eq!(
        drives[0].manifest_hash.as_deref(),
        Some("B306C4B34DAA0E99957A4B9C779D2FA2")
    );
    assert_eq!(
        drives[0].manifest_file.as_deref(),
        Some("\\DriveManifest.xml")
    );
    assert_eq!(drives[1].drive_id, "9WM3NZFS");
    assert_eq!(
        drives[1].manifest_hash.as_deref(),
        Some("DDBEDA902DABD438D2C40B2744C64B1D")
    );
    assert!(drives
        .iter()
        .all(|d| d.state.as_deref() == Some("Specified")));
    assert_eq!(
        drives[0].bit_locker_key.as_ref().unwrap().expose(),
        "259358-100188-581471-154165-090552-296406-410091-426844"
    );

    let (snapshot, document) = job.into_parts();
    let stored = document.render(false);
    assert!(
        !stored.contains("259358"),
        "BitLocker key leaked into the document: {stored}"
    );
    assert!(stored.contains("B306C4B34DAA0E99957A4B9C779D2FA2"));
    assert_eq!(document.secret_count(), 2);
    assert!(!format!("{snapshot:?}").contains("259358"));
    assert!(!format!("{document:?}").contains("259358"));
}

#[test]
fn optional_and_unknown_elements_and_both_export_placements_are_accepted() {
    let minimal = r#"{"Name":"J","Properties":{"State":"SomethingNew","Brand":"new field"}}"#;
    let job: Job = serde_json::from_str(minimal).unwrap();
    assert_eq!(job.properties.state, "SomethingNew");
    assert!(job.drive_list.is_none());
    assert!(job.into_snapshot().drives.is_empty());

    let beside = r#"{"Name":"E","Properties":{"State":"Creating","Type":"Export"},
        "Export":{"BlobList":{"BlobPath":["/c/a"],"BlobPathPrefix":["/c/"]}}}"#;
    let inside = r#"{"Name":"E","Properties":{"State":"Creating","Type":"Export",
        "Export":{"BlobListBlobPath":"/c/list.xml"},"ImportExportStatesContainer":"logs",
        "IncompleteBlobListUri":"https://x/waies/e_incomplete-blobs.xml",
        "ReturnShipping":{"CarrierName":"FedEx","CarrierAccountNumber":"123"},
        "ReturnPackage":{"CarrierName":"FedEx","TrackingNumber":"1","DriveCount":1,"ShipDate":"5/1/2014 1:00:00 PM"}}}"#;
    let beside: Job = serde_json::from_str(beside).unwrap();
    let inside: Job = serde_json::from_str(inside).unwrap();
    assert_eq!(
        beside
            .export_selection()
            .unwrap()
            .blob_list
            .as_ref()
            .unwrap()
            .blob_path,
        vec!["/c/a"]
    );
    assert_eq!(
        inside
            .export_selection()
            .unwrap()
            .blob_list_blob_path
            .as_deref(),
        Some("/c/list.xml")
    );
    assert_eq!(
        inside.properties.import_export_states_path.as_deref(),
        Some("logs")
    );
    assert_eq!(
        inside
            .properties
            .return_shipping
            .as_ref()
            .unwrap()
            .carrier_account_number
            .as_deref(),
        Some("123")
    );
    assert!(inside.properties.incomplete_blob_list_uri.is_some());

    let missing_state = r#"{"Name":"J","Properties":{}}"#;
    assert!(serde_json::from_str::<Job>(missing_state).is_err());
}

#[tokio::test]
async fn sends_the_spec_headers_presents_the_certificate_and_returns_the_job() {
    let pki = TestPki::new("client test CA");
    let server = ScriptedServer::start(&pki, |_| sample_ok()).await;
    let client = client(&pki, server.endpoint(), Duration::from_secs(5));

    let outcome = client
        .get_job(&client.job_uri(&JobName::from("MySampleJob")), None)
        .await
        .unwrap();
    let PollOutcome::Modified(observation) = outcome else {
        panic!("expected a document")
    };
    assert_eq!(observation.snapshot.state.as_str(), "Creating");
    assert_eq!(observation.snapshot.drives.len(), 2);
    assert_eq!(
        observation.change_rule.etag().map(ETag::as_str),
        Some(SAMPLE_ETAG)
    );
    assert_eq!(
        observation.last_modified.as_deref(),
        Some("Wed, 30 Apr 2014 00:25:42 GMT")
    );
    assert_eq!(
        observation.request_id.as_deref(),
        Some("7f1ce9a13cba9f58b6deaa73690e8055")
    );

    let seen = server.requests();
    let request = &seen[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.uri,
        format!("/{SUBSCRIPTION}/services/importexport/storageaccounts/xttest/jobs/MySampleJob")
    );
    assert_eq!(request.headers["x-ms-version"], "2014-11-01");
    assert_eq!(request.headers["accept"], ACCEPT);
    assert!(request.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("iewatch/"));
    assert!(request.headers.get("if-none-match").is_none());
    let presented = request
        .client_certificate
        .as_ref()
        .expect("client certificate presented");
    assert_eq!(presented, &pki.client.chain[0].to_vec());
}

#[tokio::test]
async fn if_none_match_is_sent_byte_for_byte_and_412_and_304_mean_not_modified() {
    let pki = TestPki::new("conditional CA");
    let server = ScriptedServer::start(&pki, |seen| {
        match seen
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_owned())
        {
            Some(tag) if tag == SAMPLE_ETAG => respond(412, &[], ""),
            Some(tag) if tag == "W/\"other\"" => respond(304, &[], ""),
            _ => sample_ok(),
        }
    })
    .await;
    let client = client(&pki, server.endpoint(), Duration::from_secs(5));
    let job = JobName::from("MySampleJob");
    let tag = |etag: &str| IfNoneMatch::for_etag(&ETag::new(etag)).expect("a header");
    assert!(matches!(
        client
            .get_job(&client.job_uri(&job), Some(&tag(SAMPLE_ETAG)))
            .await
            .unwrap(),
        PollOutcome::NotModified
    ));
    assert!(matches!(
        client
            .get_job(&client.job_uri(&job), Some(&tag("W/\"other\"")))
            .await
            .unwrap(),
        PollOutcome::NotModified
    ));
    assert!(matches!(
        client
            .get_job(&client.job_uri(&job), Some(&tag("W/\"stale\"")))
            .await
            .unwrap(),
        PollOutcome::Modified(_)
    ));
    let seen = server.requests();
    assert_eq!(
        seen[0].headers["if-none-match"].as_bytes(),
        SAMPLE_ETAG.as_bytes()
    );
    // One keep-alive connection served all three polls.
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn odata_errors_are_parsed_with_codes_and_retry_after() {
    let pki = TestPki::new("errors CA");
    let body = |status: u16, ext: &str| {
        format!(
            r#"{{"odata.error":{{"code":"{status}","message":{{"lang":"en-US","value":"msg {status}"}},"azure.values":[{{"ExtendedCode":"{ext}"}},{{"ExtendedInformation":"info {status}"}}]}}}}"#
        )
    };
    let server = ScriptedServer::start(&pki, move |seen| {
        let job = seen.uri.rsplit('/').next().unwrap().to_owned();
        match job.as_str() {
            "missing" => respond(
                404,
                &[("content-type", "application/json")],
                body(404, "JobNotFound"),
            ),
            "forbidden" => respond(403, &[], body(403, "ForbiddenError")),
            "busy" => respond(
                503,
                &[("retry-after", "7"), ("x-ms-request-id", "r-503")],
                body(503, "ServerBusy"),
            ),
            _ => respond(502, &[], "<html>bad gateway</html>"),
        }
    })
    .await;
    let client = client(&pki, server.endpoint(), Duration::from_secs(5));

    let err = client
        .get_job(&client.job_uri(&JobName::from("missing")), None)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let SourceError::Status {
        status,
        error: Some(e),
        retry_after,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*status, e.code.as_str(), e.message.as_str()),
        (404, "404", "msg 404")
    );
    assert_eq!(e.extended_code.as_deref(), Some("JobNotFound"));
    assert_eq!(e.extended_information.as_deref(), Some("info 404"));
    assert_eq!(*retry_after, None);

    let err = client
        .get_job(&client.job_uri(&JobName::from("forbidden")), None)
        .await
        .unwrap_err();
    assert!(err.is_auth_refused(), "{err}");
    assert!(err.to_string().contains("ForbiddenError"), "{err}");

    let err = client
        .get_job(&client.job_uri(&JobName::from("busy")), None)
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let SourceError::Status { request_id, .. } = &err else {
        panic!()
    };
    assert_eq!(request_id.as_deref(), Some("r-503"));

    let err = client
        .get_job(&client.job_uri(&JobName::from("gateway")), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Status {
                status: 502,
                error: None,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_an_error_whether_declared_or_streamed() {
    let pki = TestPki::new("oversized CA");
    let huge = format!("{{\"Name\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let server = ScriptedServer::start(&pki, move |_| {
        respond(200, &[("content-type", "application/json")], huge.clone())
    })
    .await;
    let client = client(&pki, server.endpoint(), Duration::from_secs(5));
    let err = client
        .get_job(&client.job_uri(&JobName::from("big")), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::BodyTooLarge { limit: 1048576 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn wrong_content_type_and_malformed_json_are_decode_errors() {
    let pki = TestPki::new("decode CA");
    let server = ScriptedServer::start(&pki, |seen| {
        if seen.uri.ends_with("html") {
            respond(200, &[("content-type", "text/html")], "<html></html>")
        } else {
            respond(
                200,
                &[("content-type", "application/json")],
                "{\"Name\": \"x\", \"Properties\": {",
            )
        }
    })
    .await;
    let client = client(&pki, server.endpoint(), Duration::from_secs(5));
    let err = client
        .get_job(&client.job_uri(&JobName::from("html")), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SourceError::Decode(m) if m.contains("text/html")),
        "{err:?}"
    );
    let err = client
        .get_job(&client.job_uri(&JobName::from("broken")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn a_stalled_server_gives_a_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and never answers, not even the TLS handshake.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let pki = TestPki::new("stall CA");
    let client = client(&pki, format!("https://{addr}"), Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = client
        .get_job(&client.job_uri(&JobName::from("slow")), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_a_tls_error() {
    let server_pki = TestPki::new("server's CA");
    let client_pki = TestPki::new("some other CA");
    let server = ScriptedServer::start(&server_pki, |_| sample_ok()).await;
    let client = client(&client_pki, server.endpoint(), Duration::from_secs(5));
    let err = client
        .get_job(&client.job_uri(&JobName::from("MySampleJob")), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SourceError::Tls(m) if m.contains("UnknownIssuer")),
        "{err:?}"
    );
    assert!(err.is_auth_refused() || err.kind() == "tls");
}

#[tokio::test]
async fn a_refused_client_certificate_is_a_tls_error() {
    let server_pki = TestPki::new("server's CA");
    let stranger = TestPki::new("stranger CA");
    let server = ScriptedServer::start(&server_pki, |_| sample_ok()).await;
    // Trusts the server, but presents a certificate the server does not accept.
    let account = ClassicAccount {
        storage_account: "xttest".into(),
        endpoint: server.endpoint(),
        identity: stranger.client.clone(),
        extra_roots: server_pki.ca_der(),
        x_ms_version: "2014-11-01",
    };
    let client = ClassicClient::new(
        SUBSCRIPTION,
        &account,
        Duration::from_secs(5),
        Duration::from_secs(2),
    )
    .unwrap();
    let err = client
        .get_job(&client.job_uri(&JobName::from("MySampleJob")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Tls(_)), "{err:?}");
    assert!(err.is_auth_refused());
    assert!(server.requests().is_empty(), "no request may get through");
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pki = TestPki::new("refused CA");
    let client = client(&pki, format!("https://{addr}"), Duration::from_secs(5));
    let err = client
        .get_job(&client.job_uri(&JobName::from("x")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Transport(_)), "{err:?}");
}
