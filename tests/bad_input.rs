//! Bad input from the service: whatever bytes come back, the client gives a typed error
//! (or a document) within its timeout and never panics. Property tests over bytes stand
//! in for cargo fuzz, which CI cannot run; the wire cases use real TLS.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{respond, ScriptedServer, TestPki, SAMPLE_JOB};
use iewatch::{
    config::ClassicAccount,
    model::JobName,
    source::{classic::interpret, classic::ClassicClient, PollOutcome, SourceError},
};
use proptest::prelude::*;

fn response(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Bytes::from(body))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_with_any_status_give_an_outcome_or_a_typed_error(
        status in prop::sample::select(vec![200u16, 201, 304, 400, 403, 404, 409, 412, 429, 500, 503]),
        body in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        match interpret(response(status, "application/json", body)) {
            Ok(PollOutcome::Modified(_)) => prop_assert!((200..300).contains(&status)),
            Ok(PollOutcome::NotModified) => prop_assert!(status == 304 || status == 412),
            Err(SourceError::Decode(_)) => prop_assert!((200..300).contains(&status)),
            Err(SourceError::Status { status: s, .. }) => prop_assert_eq!(s, status),
            Err(other) => prop_assert!(false, "unexpected error kind {:?}", other),
        }
    }

    #[test]
    fn mangled_sample_documents_never_panic(cut in 0usize..1554, flips in prop::collection::vec((0usize..1554, any::<u8>()), 0..8)) {
        let mut body = SAMPLE_JOB.as_bytes().to_vec();
        for (at, byte) in flips {
            if at < body.len() {
                body[at] = byte;
            }
        }
        body.truncate(cut.min(body.len()));
        let outcome = interpret(response(200, "application/json", body));
        prop_assert!(matches!(outcome, Ok(PollOutcome::Modified(_)) | Err(SourceError::Decode(_))));
    }

    #[test]
    fn error_bodies_of_any_shape_keep_their_status(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let err = interpret(response(503, "application/json", body)).unwrap_err();
        let kept = matches!(err, SourceError::Status { status: 503, .. });
        prop_assert!(kept, "{:?}", err);
    }
}

#[test]
fn deep_nesting_invalid_utf8_and_wrong_types_are_decode_errors() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        interpret(response(200, "application/json", deep.into_bytes())),
        Err(SourceError::Decode(_))
    ));
    let deep_object = format!(
        "{{\"Name\":\"x\",\"Properties\":{}}}",
        "{\"a\":".repeat(50_000)
    );
    assert!(matches!(
        interpret(response(200, "application/json", deep_object.into_bytes())),
        Err(SourceError::Decode(_))
    ));
    let mut invalid = SAMPLE_JOB.as_bytes().to_vec();
    let at = SAMPLE_JOB.find("Creating").unwrap();
    invalid[at] = 0xff;
    assert!(matches!(
        interpret(response(200, "application/json", invalid)),
        Err(SourceError::Decode(_))
    ));
    let wrong_type =
        SAMPLE_JOB.replace("\"CancelRequested\":false", "\"CancelRequested\":\"nope\"");
    assert!(matches!(
        interpret(response(200, "application/json", wrong_type.into_bytes())),
        Err(SourceError::Decode(_))
    ));
    let percent_as_text = SAMPLE_JOB.replace(
        "\"State\":\"Creating\"",
        "\"State\":\"Creating\",\"PercentComplete\":\"12\"",
    );
    assert!(matches!(
        interpret(response(
            200,
            "application/json",
            percent_as_text.into_bytes()
        )),
        Err(SourceError::Decode(_))
    ));
    assert!(matches!(
        interpret(response(200, "text/html", b"<html/>".to_vec())),
        Err(SourceError::Decode(_))
    ));
}

#[tokio::test]
async fn over_the_wire_truncated_drip_and_nested_bodies_fail_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut storm = common::scenario("fault-storm.toml");
    storm.faults = iewatch::simulator::Scenario::parse(
        "[[fault]]\nfrom = \"1h\"\nuntil = \"2h\"\nkind = \"truncated\"\n\n[[fault]]\nfrom = \"2h\"\nuntil = \"3h\"\nkind = \"drip\"\n",
    )
    .unwrap()
    .faults;
    let sim = common::start_simulator(storm, dir.path()).await;
    let account = ClassicAccount {
        storage_account: "xttest".into(),
        endpoint: sim.endpoint(),
        identity: common::management_identity(&sim),
        extra_roots: iewatch::tls::load_certificates(&sim.certs.ca).unwrap(),
        x_ms_version: "2014-11-01",
    };
    let client = ClassicClient::new(
        sim.subscription_id(),
        &account,
        Duration::from_millis(800),
        Duration::from_secs(2),
    )
    .unwrap();
    let job = client.job_uri(&JobName::from("StormJob"));

    sim.set_time(Some(Duration::from_secs(5400)));
    let err = client.get_job(&job, None).await.unwrap_err();
    assert!(
        matches!(err, SourceError::Transport(_)),
        "truncated: {err:?}"
    );

    sim.set_time(Some(Duration::from_secs(9000)));
    let started = Instant::now();
    let err = client.get_job(&job, None).await.unwrap_err();
    assert!(matches!(err, SourceError::Timeout(_)), "slow drip: {err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout bounds a slow drip: {:?}",
        started.elapsed()
    );

    // A deeply nested body from a scripted server: a decode error, no stack overflow.
    let pki = TestPki::new("nested CA");
    let nested = Bytes::from(format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)));
    let server = ScriptedServer::start(&pki, move |_| {
        respond(200, &[("content-type", "application/json")], nested.clone())
    })
    .await;
    let client = pki.classic_client(server.endpoint(), Duration::from_secs(5));
    let err = client
        .get_job(&client.job_uri(&JobName::from("x")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Decode(_)), "{err:?}");
}

#[test]
fn error_answers_are_scrubbed_of_signatures_and_addresses_like_200_bodies() {
    let classic = r#"{"odata.error":{"code":"AuthorizationFailure","message":{"lang":"en-US","value":"https://acct.blob.core.windows.net/logs?sv=2019&sig=AbCdEf%3D&se=2026 denied for ops.lead@contoso.com"}}}"#;
    let arm = r#"{"error":{"code":"Forbidden","message":"sig=AbCdEf%3D refused for ops.lead@contoso.com","details":[{"code":"X","message":"ask admin@contoso.com"}]}}"#;
    let said = [
        interpret(response(403, "application/json", classic.into()))
            .unwrap_err()
            .to_string(),
        iewatch::source::arm::interpret(response(403, "application/json", arm.into()))
            .unwrap_err()
            .to_string(),
    ];
    for text in said {
        assert!(
            text.contains("[redacted]") && text.contains("[e-mail]"),
            "{text}"
        );
        assert!(
            !text.contains("AbCdEf") && !text.contains("contoso.com"),
            "{text}"
        );
    }
}
