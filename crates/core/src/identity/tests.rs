//! Unit tests of `identity`.

use std::time::{Duration, Instant};

use super::cache::{backoff_after, renew_at, TOKEN_LIFETIME_CEILING};
use super::entra::parse_token;
use super::*;

#[test]
fn any_token_lifetime_gives_a_renewal_time_within_bounds() {
    let now = Instant::now();
    for seconds in [0, 1, 3600, u64::MAX] {
        let at = renew_at(now, Duration::from_secs(seconds));
        assert!(at > now, "{seconds}: renewed after it was fetched");
        assert!(
            at <= now + TOKEN_LIFETIME_CEILING,
            "{seconds}: renewed within a day"
        );
    }
    assert_eq!(
        renew_at(now, Duration::from_secs(3600)),
        now + Duration::from_secs(3300)
    );
}

#[test]
fn the_imds_schedule_is_microsofts_and_410_is_waited_out_for_70_s() {
    let waits = |status| {
        (1..=IMDS_RETRIES)
            .map(|n| imds_retry_wait(status, n).as_secs())
            .collect::<Vec<_>>()
    };
    assert_eq!(waits(Some(500)), [0, 2, 6, 14, 30]);
    assert_eq!(waits(None), [0, 2, 6, 14, 30]);
    assert_eq!(waits(Some(410)), [0, 5, 10, 20, 40]);
    assert!(waits(Some(410)).iter().sum::<u64>() >= 70);
    assert!(imds_retry_wait(Some(429), u32::MAX) <= Duration::from_secs(60));
}

#[test]
fn refusals_back_off_longer_than_failures_and_double_while_they_repeat() {
    let first = backoff_after(Failure::Refused, None);
    assert_eq!(first, Duration::from_secs(30));
    let second = backoff_after(Failure::Refused, Some((Failure::Refused, first)));
    assert_eq!(second, Duration::from_secs(60));
    let mut wait = second;
    for _ in 0..40 {
        wait = backoff_after(Failure::Unavailable, Some((Failure::Refused, wait)));
    }
    assert_eq!(wait, Duration::from_secs(900));
    assert_eq!(
        backoff_after(Failure::Transient, Some((Failure::Refused, wait))),
        Duration::from_secs(5),
        "a new kind of failure starts its own ladder"
    );
}

#[test]
fn token_answers_of_every_azure_shape_are_read_and_odd_ones_refused() {
    let imds = br#"{"access_token":"a","expires_in":"3599","expires_on":"1506484173","resource":"https://management.azure.com/","token_type":"Bearer"}"#;
    assert_eq!(parse_token(imds).unwrap().lifetime, Some(3599));
    let entra = br#"{"token_type":"Bearer","expires_in":3599,"access_token":"a"}"#;
    assert_eq!(parse_token(entra).unwrap().lifetime, Some(3599));
    let far = crate::wall_clock::now().unix_secs().unsigned_abs() + 1000;
    let app_service = format!(
        r#"{{"access_token":"a","expires_on":"{far}","resource":"r","token_type":"Bearer"}}"#
    );
    let lifetime = parse_token(app_service.as_bytes())
        .unwrap()
        .lifetime
        .unwrap();
    assert!((990..=1000).contains(&lifetime), "{lifetime}");
    for (body, why) in [
        (&br#"{"access_token":"a","expires_in":"0"}"#[..], Some(0)),
        (
            br#"{"access_token":"a","expires_in":"99999999999999999999999"}"#,
            None,
        ),
        (br#"{"access_token":"a","expires_in":-5}"#, None),
        (br#"{"access_token":"a","expires_on":"1"}"#, Some(0)),
    ] {
        assert_eq!(parse_token(body).unwrap().lifetime, why);
    }
    assert!(parse_token(br#"{"access_token":""}"#).is_err());
    assert!(parse_token(b"<html>").is_err());
}

#[test]
fn an_arc_challenge_is_answered_only_from_the_agents_directory() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("tokens");
    std::fs::create_dir(&key_dir).unwrap();
    std::fs::write(key_dir.join("abc.key"), "the-key\n").unwrap();
    std::fs::write(dir.path().join("abc.key"), "elsewhere").unwrap();
    std::fs::write(key_dir.join("big.key"), "x".repeat(5000)).unwrap();
    std::fs::write(key_dir.join("abc.txt"), "not a key").unwrap();
    let challenge = |realm: &std::path::Path| {
        http::Response::builder()
            .status(401)
            .header(
                "WWW-Authenticate",
                format!("Basic realm={}", realm.display()),
            )
            .body(bytes::Bytes::new())
            .unwrap()
    };
    assert_eq!(
        managed::arc_key(&challenge(&key_dir.join("abc.key")), &key_dir).unwrap(),
        "the-key"
    );
    for refused in [
        dir.path().join("abc.key"),
        key_dir.join("abc.txt"),
        key_dir.join("big.key"),
        key_dir.join("../abc.key"),
        key_dir.join("missing.key"),
    ] {
        let error = managed::arc_key(&challenge(&refused), &key_dir).unwrap_err();
        assert!(error.contains(&*refused.to_string_lossy()), "{error}");
    }
    let bare = http::Response::builder()
        .status(401)
        .body(bytes::Bytes::new())
        .unwrap();
    assert!(managed::arc_key(&bare, &key_dir)
        .unwrap_err()
        .contains("without a Basic realm"));
}

#[test]
fn the_managed_identity_is_found_where_the_sdks_find_it() {
    let describe = |pairs: &[(&str, &str)]| {
        managed::ManagedIdentity {
            id: crate::config::ManagedIdentityId::SystemAssigned,
            env: Env::from_pairs(pairs),
        }
        .describe()
    };
    assert!(
        describe(&[]).contains("IMDS") || std::path::Path::new("/opt/azcmagent/bin/himds").exists()
    );
    assert!(describe(&[
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
        ("IDENTITY_HEADER", "h")
    ])
    .contains("App Service"));
    assert!(describe(&[
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/t"),
        ("IMDS_ENDPOINT", "http://127.0.0.1:1")
    ])
    .contains("Azure Arc"));
    assert!(describe(&[
        ("IDENTITY_ENDPOINT", "x"),
        ("IDENTITY_HEADER", "h"),
        ("IDENTITY_SERVER_THUMBPRINT", "t")
    ])
    .contains("Service Fabric"));
}

#[test]
fn each_documented_managed_identity_error_says_what_to_check() {
    use crate::config::ManagedIdentityId::{ClientId, SystemAssigned};
    use managed::{classify, Attempt, Endpoint};
    let imds = Endpoint::Imds {
        base: "http://169.254.169.254".into(),
        overridden: false,
    };
    let app = Endpoint::AppService {
        endpoint: "http://localhost:4141/msi/token".into(),
        header: "h".into(),
    };
    let body = |code: &str| format!(r#"{{"error":"{code}","error_description":"said"}}"#);
    let cases = [
        (
            &imds,
            400,
            body("invalid_resource"),
            SystemAssigned,
            "not known to the tenant",
        ),
        (
            &imds,
            400,
            body("bad_request_102"),
            SystemAssigned,
            "Metadata header",
        ),
        (
            &imds,
            401,
            body("unknown_source"),
            SystemAssigned,
            "through a proxy",
        ),
        (
            &imds,
            400,
            body("unauthorized_client"),
            SystemAssigned,
            "this VM has no managed identity",
        ),
        (
            &imds,
            403,
            body("access_denied"),
            SystemAssigned,
            "may not get tokens",
        ),
        (
            &imds,
            400,
            body("invalid_request"),
            SystemAssigned,
            "no system-assigned identity is enabled on this VM",
        ),
        (
            &app,
            400,
            body("invalid_request"),
            ClientId("c".into()),
            "not assigned to this app",
        ),
        (
            &app,
            401,
            body("unauthorized"),
            SystemAssigned,
            "X-IDENTITY-HEADER was refused",
        ),
    ];
    for (endpoint, status, body, id, expected) in cases {
        let status = http::StatusCode::from_u16(status).unwrap();
        match classify(endpoint, status, body.as_bytes(), &id) {
            Attempt::Final(Failure::Refused, message) => {
                assert!(message.contains(expected), "{message}");
                assert!(
                    message.contains("said"),
                    "the service's words are kept: {message}"
                );
            }
            other => panic!("{status} {body}: {other:?}"),
        }
    }
    for retried in [404, 410, 429, 500, 503] {
        let status = http::StatusCode::from_u16(retried).unwrap();
        assert!(matches!(
            classify(&imds, status, b"", &SystemAssigned),
            Attempt::Retry(Some(s), _) if s == retried
        ));
    }
    let proxy = classify(
        &imds,
        http::StatusCode::FORBIDDEN,
        b"A socket operation was attempted to an unreachable network",
        &SystemAssigned,
    );
    assert!(
        matches!(proxy, Attempt::Final(Failure::Unavailable, _)),
        "{proxy:?}"
    );
}
