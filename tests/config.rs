//! The config checker: the example config says ok, broken configs name every problem with
//! file, line and key, and no secret ever appears in what `check` prints.

mod common;

use std::{path::Path, process::Command};

use common::TestPki;
use iewatch::config::Config;

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A directory with a management certificate and a webhook secret file.
fn credentials_dir() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("config test CA");
    let (cert, key) = &pki.client_pem;
    std::fs::write(dir.path().join("management.pem"), format!("{cert}{key}")).unwrap();
    std::fs::write(dir.path().join("ops-secret"), WEBHOOK_SECRET).unwrap();
    std::fs::write(
        dir.path().join("arm-secret"),
        "an-app-registration-secret\n",
    )
    .unwrap();
    #[cfg(unix)]
    for file in ["management.pem", "ops-secret", "arm-secret"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.path().join(file),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    (dir, pki)
}

fn check(config: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_iewatch"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = r#"
[daemon]
database = "iewatch.db"
poll_interval = "5m"

[[account]]
name = "prod"
subscription_id = "afb1a4eb-bc88-4ce1-b1af-dfec80067464"
storage_account = "xttest"
certificate = "management.pem"

[[job]]
account = "prod"
name = "MySampleJob"

[[webhook]]
name = "ops"
url = "https://hooks.example.com/iewatch"
secret_file = "ops-secret"
"#;

#[test]
fn the_example_config_parses_and_check_says_ok() {
    let (dir, _pki) = credentials_dir();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/iewatch.example.toml"
    ))
    .unwrap();
    let path = write(dir.path(), "iewatch.toml", &example);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.accounts.len(), 3);
    assert!(
        matches!(&config.accounts[1].kind, iewatch::config::AccountKind::Arm(arm) if matches!(&arm.credential, iewatch::config::ArmCredential::Secret { secret, .. } if secret.expose() == b"an-app-registration-secret"))
    );
    assert!(matches!(
        &config.accounts[2].kind,
        iewatch::config::AccountKind::Arm(arm)
            if arm.provider == iewatch::config::ArmProvider::DataBox && arm.discover_all
    ));
    assert_eq!(config.jobs[0].name.as_str(), "MySampleJob");
    assert_eq!(
        Some(config.jobs[0].policy.base),
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(config.webhooks.len(), 2);
    assert_eq!(config.webhooks[0].progress_step, Some(10));
    assert_eq!(
        config.daemon.poll_interval_by_state["Transferring"],
        std::time::Duration::from_secs(120)
    );
    let (ok, output) = check(&path);
    assert!(ok, "{output}");
    assert!(
        output.starts_with("ok: 3 account(s), 2 job(s), 2 webhook(s)"),
        "{output}"
    );
    assert!(
        dir.path().join("iewatch.db").exists(),
        "check migrates the database"
    );
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let (dir, _pki) = credentials_dir();
    let path = write(
        dir.path(),
        "bad.toml",
        &GOOD.replace(
            "poll_interval = \"5m\"",
            "poll_interval = \"5m\"\npoll_intervall = \"1m\"",
        ),
    );
    let (ok, output) = check(&path);
    assert!(!ok);
    assert!(output.contains("bad.toml:5"), "{output}");
    assert!(output.contains("poll_intervall"), "{output}");
}

#[test]
fn a_job_of_an_unknown_account_and_duplicate_names_are_named() {
    let (dir, _pki) = credentials_dir();
    let text = GOOD.replace("account = \"prod\"\nname = \"MySampleJob\"", "account = \"staging\"\nname = \"MySampleJob\"")
        + "\n[[job]]\naccount = \"prod\"\nname = \"A\"\n\n[[job]]\naccount = \"prod\"\nname = \"A\"\n";
    let path = write(dir.path(), "refs.toml", &text);
    let (ok, output) = check(&path);
    assert!(!ok);
    assert!(
        output.contains("refs.toml:13: job[0].account: no [[account]] is named \"staging\""),
        "{output}"
    );
    assert!(
        output.contains("job[2].name: job \"A\" of account \"prod\" is listed twice"),
        "{output}"
    );
    assert!(output.contains("2 problem(s) found"), "{output}");
}

#[test]
fn missing_and_unparsable_certificates_are_named() {
    let (dir, _pki) = credentials_dir();
    let missing = write(
        dir.path(),
        "missing.toml",
        &GOOD.replace("management.pem", "nowhere.pem"),
    );
    let (ok, output) = check(&missing);
    assert!(!ok);
    assert!(
        output.contains("missing.toml:10: account[0].certificate:"),
        "{output}"
    );
    assert!(output.contains("nowhere.pem"), "{output}");

    std::fs::write(
        dir.path().join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let garbage = write(
        dir.path(),
        "garbage.toml",
        &GOOD.replace("management.pem", "garbage.pem"),
    );
    let (ok, output) = check(&garbage);
    assert!(!ok);
    assert!(output.contains("account[0].certificate"), "{output}");

    // A certificate with a key that does not belong to it.
    let other = TestPki::new("other");
    let (cert, _) = &_pki.client_pem;
    let (_, wrong_key) = &other.client_pem;
    std::fs::write(
        dir.path().join("mismatch.pem"),
        format!("{cert}{wrong_key}"),
    )
    .unwrap();
    let mismatch = write(
        dir.path(),
        "mismatch.toml",
        &GOOD.replace("management.pem", "mismatch.pem"),
    );
    let (ok, output) = check(&mismatch);
    assert!(!ok);
    assert!(output.contains("account[0].certificate"), "{output}");
}

#[test]
fn absurd_durations_are_refused_and_short_poll_intervals_warned_about() {
    let (dir, _pki) = credentials_dir();
    let absurd = GOOD.replace(
        "poll_interval = \"5m\"",
        "poll_interval = \"100000000000y\"\nstop_after = \"400d\"",
    );
    let (ok, output) = check(&write(dir.path(), "absurd.toml", &absurd));
    assert!(!ok);
    assert!(
        output.contains("daemon.poll_interval: \"100000000000y\" is longer than a year"),
        "{output}"
    );
    assert!(
        output.contains("daemon.stop_after: \"400d\" is longer than a year"),
        "{output}"
    );
    let eager = GOOD.replace("poll_interval = \"5m\"", "poll_interval = \"2s\"");
    let (ok, output) = check(&write(dir.path(), "eager.toml", &eager));
    assert!(ok, "a warning, not an error: {output}");
    assert!(
        output.contains("warning:")
            && output.contains("daemon.poll_interval: \"2s\" is shorter than 10s"),
        "{output}"
    );
}

#[test]
fn bad_values_are_all_reported_at_once() {
    let (dir, _pki) = credentials_dir();
    let text = GOOD
        .replace("poll_interval = \"5m\"", "poll_interval = \"five minutes\"\nmax_concurrent_polls = 0")
        .replace("storage_account = \"xttest\"", "storage_account = \"xttest\"\nendpoint = \"http://management.core.windows.net\"\nx_ms_version = \"2012-03-01\"")
        + "\n[[webhook]]\nname = \"ops\"\nurl = \"ftp://x\"\nformat = \"xml\"\nevents = [\"drive.exploded\"]\nmin_severity = \"fatal\"\nprogress_step = 0\n";
    let path = write(dir.path(), "values.toml", &text);
    let (ok, output) = check(&path);
    assert!(!ok);
    for expected in [
        "daemon.poll_interval: \"five minutes\" is not a duration",
        "daemon.max_concurrent_polls: must be at least 1",
        "account[0].endpoint: \"http://management.core.windows.net\" must be https://",
        "account[0].x_ms_version: \"2012-03-01\" is not 2014-11-01 or 2014-05-01",
        "webhook[1].url: \"ftp://x\" is not an http:// or https:// URL",
        "webhook[1].format: \"xml\" is not \"json\", \"slack\", \"teams\", \"pagerduty\", \"template\" or \"email\"",
        "webhook[1].events: \"drive.exploded\" is not an event type",
        "webhook[1].min_severity",
        "webhook[1].progress_step: must be between 1 and 100",
        "webhook[1].name: \"ops\" is defined twice",
    ] {
        assert!(
            output.contains(expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    assert!(output.contains("10 problem(s) found"), "{output}");
}

#[test]
fn syntax_errors_name_the_line() {
    let (dir, _pki) = credentials_dir();
    let path = write(
        dir.path(),
        "syntax.toml",
        &GOOD.replace("name = \"MySampleJob\"", "name = \"MySampleJob"),
    );
    let (ok, output) = check(&path);
    assert!(!ok);
    assert!(output.contains("syntax.toml:14"), "{output}");
    let (ok, output) = check(&dir.path().join("absent.toml"));
    assert!(!ok);
    assert!(output.contains("absent.toml: cannot read"), "{output}");
}

#[test]
fn secrets_never_appear_in_check_output_or_debug() {
    let (dir, _pki) = credentials_dir();
    let bad_secret = "whsec_this is not base64 but very secret";
    let text = GOOD.replace(
        "secret_file = \"ops-secret\"",
        &format!("secret = \"{bad_secret}\""),
    );
    let path = write(dir.path(), "secret.toml", &text);
    let (ok, output) = check(&path);
    assert!(!ok);
    assert!(
        output.contains("webhook[0].secret: is not a whsec_<base64> secret (value not shown)"),
        "{output}"
    );
    assert!(!output.contains("very secret"), "{output}");

    let good = write(dir.path(), "good.toml", GOOD);
    let config = Config::load(&good).unwrap();
    let debug = format!("{config:?}");
    let key_pem = std::fs::read_to_string(dir.path().join("management.pem")).unwrap();
    let key_body = key_pem
        .split("PRIVATE KEY-----")
        .nth(1)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap();
    assert!(!debug.contains(key_body), "private key in Debug output");
    assert!(
        !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "webhook secret in Debug output"
    );
    let (ok, output) = check(&good);
    assert!(ok, "{output}");
    assert!(!output.contains("MfKQ9r8G") && !output.contains(key_body));
}

#[test]
fn arm_accounts_name_their_missing_and_misplaced_keys() {
    let (dir, _pki) = credentials_dir();
    let text = r#"
[[account]]
name = "arm"
kind = "arm"
subscription_id = "s"
storage_account = "xttest"
client_certificate = "cert.pem"
jobs = "some"
endpoint = "http://management.azure.com"
"#;
    let path = write(dir.path(), "arm.toml", text);
    let (ok, output) = check(&path);
    assert!(!ok);
    for expected in [
        "account[0].resource_group: is required",
        "account[0].tenant_id: is required",
        "account[0].client_id: is required",
        "account[0].client_certificate: ",
        "account[0].storage_account: only for kind = \"classic\" accounts",
        "account[0].jobs: \"some\": the only value is \"all\"",
        "account[0].endpoint: \"http://management.azure.com\" must be https://",
    ] {
        assert!(
            output.contains(expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    // The management-style certificate of the test PKI has an EC key: refused, RSA needed.
    let ec = write(
        dir.path(),
        "ec.toml",
        "[[account]]\nname = \"arm\"\nkind = \"arm\"\nsubscription_id = \"s\"\nresource_group = \"rg\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_certificate = \"management.pem\"\n",
    );
    let (ok, output) = check(&ec);
    assert!(!ok);
    assert!(
        output.contains("account[0].client_certificate: the key is not RSA"),
        "{output}"
    );
    let classic_with_arm_keys = write(
        dir.path(),
        "mixed.toml",
        &GOOD.replace(
            "certificate = \"management.pem\"",
            "certificate = \"management.pem\"\ntenant_id = \"t\"",
        ),
    );
    let (ok, output) = check(&classic_with_arm_keys);
    assert!(!ok);
    assert!(
        output.contains("account[0].tenant_id: only for kind = \"arm\" or \"databox\" accounts"),
        "{output}"
    );
}

#[test]
fn the_clock_keys_are_read_and_their_mistakes_named() {
    let (dir, _pki) = credentials_dir();
    let clocks = "[daemon]\ndeadline_warnings = [\"7d\", \"2d\"]\nstall_after = { Shipping = \"3d\", DataCopy = \"off\" }\ndrive_stall_after = \"6h\"\nremind_every = \"off\"\nremind_max = 5\n";
    let path = write(
        dir.path(),
        "clocks.toml",
        &GOOD.replacen("[daemon]\n", clocks, 1),
    );
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = &config.daemon.clocks;
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(c.deadline_warnings, [7 * day, 2 * day]);
    assert_eq!(c.stall_after["Shipping"], 3 * day);
    assert!(!c.stall_after.contains_key("DataCopy"), "off");
    assert_eq!(c.stall_after["Received"], 7 * day, "defaults kept");
    assert_eq!(c.drive_stall_after, Some(day / 4));
    assert_eq!(c.remind_every, None);
    assert_eq!(c.remind_max, 5);
    let bad = write(
        dir.path(),
        "clocks-bad.toml",
        &GOOD.replacen(
            "[daemon]\n",
            "[daemon]\ndeadline_warnings = [\"soon\"]\nstall_after = { Shipping = \"forever\" }\nremind_every = \"0s\"\nremind_max = 0\n",
            1,
        ),
    );
    let (ok, output) = check(&bad);
    assert!(!ok);
    for expected in [
        "daemon.deadline_warnings: \"soon\" is not a duration",
        "daemon.stall_after.Shipping: \"forever\" is not a duration",
        "daemon.remind_every: must be longer than zero",
        "daemon.remind_max",
    ] {
        assert!(output.contains(expected), "{expected:?} in {output}");
    }
}

#[test]
fn databox_accounts_take_the_arm_keys_and_name_their_mistakes() {
    let (dir, _pki) = credentials_dir();
    // The database beside the config, not in the working directory.
    let good = "[daemon]\ndatabase = \"iewatch.db\"\n\n[[account]]\nname = \"portal\"\nkind = \"databox\"\nsubscription_id = \"s\"\nresource_group = \"rg\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"a-secret\"\njobs = \"all\"\n";
    let path = write(dir.path(), "databox.toml", good);
    let config = iewatch::config::Config::load(&path).unwrap();
    assert!(matches!(
        &config.accounts[0].kind,
        iewatch::config::AccountKind::Arm(arm)
            if arm.provider == iewatch::config::ArmProvider::DataBox && arm.discover_all
    ));
    let mistakes = write(
        dir.path(),
        "databox-bad.toml",
        &good
            .replace("tenant_id = \"t\"\n", "storage_account = \"xttest\"\n")
            .replace(
                "jobs = \"all\"",
                "jobs = \"some\"\nstore_bitlocker_keys = true",
            ),
    );
    let (ok, output) = check(&mistakes);
    assert!(!ok, "{output}");
    for expected in [
        "account[0].tenant_id: is required",
        "account[0].storage_account: only for kind = \"classic\" accounts",
        "account[0].jobs: \"some\": the only value is \"all\"",
    ] {
        assert!(output.contains(expected), "{expected:?} in {output}");
    }
    let pointless = write(
        dir.path(),
        "keys.toml",
        &good.replace("jobs = \"all\"", "store_bitlocker_keys = true"),
    );
    let (ok, output) = check(&pointless);
    assert!(ok, "a warning, not an error: {output}");
    assert!(
        output.contains("account[0].store_bitlocker_keys: has no effect on a Data Box account"),
        "{output}"
    );
    let typo = write(
        dir.path(),
        "kind.toml",
        &good.replace("\"databox\"", "\"data-box\""),
    );
    let (ok, output) = check(&typo);
    assert!(!ok);
    assert!(output.contains("account[0].kind"), "{output}");
}

#[test]
fn webhook_urls_are_never_echoed_whole_and_credentials_or_bad_ports_are_refused() {
    let (dir, _pki) = credentials_dir();
    let with_url = |url: &str| {
        GOOD.replace(
            "url = \"https://hooks.example.com/iewatch\"",
            &format!("url = \"{url}\""),
        )
    };
    let cases = [
        (
            "https://hooks.slack.com:99999/services/T0/B0/PATHSECRET",
            "\"https://hooks.slack.com/…\": the port must be a number from 1 to 65535",
        ),
        (
            "https://user:PASSWORDSECRET@hooks.example.com/x",
            "has user:password@ in it",
        ),
        (
            "https://hooks example.com/PATHSECRET",
            "is not a URL (not shown",
        ),
    ];
    for (url, expected) in cases {
        let (ok, output) = check(&write(dir.path(), "url.toml", &with_url(url)));
        assert!(!ok, "{url}: {output}");
        assert!(output.contains(expected), "{url}: {output}");
        assert!(
            !output.contains("SECRET"),
            "the URL's credential is never shown: {output}"
        );
    }
    let plain = with_url("http://hooks.example.com/PATHSECRET");
    let (ok, output) = check(&write(dir.path(), "plain.toml", &plain));
    assert!(ok, "{output}");
    assert!(
        output.contains("plain http:// with a signing secret"),
        "{output}"
    );
    assert!(!output.contains("PATHSECRET"), "{output}");
}

#[cfg(unix)]
#[test]
fn secrets_readable_by_others_draw_warnings_and_a_secret_file_must_look_like_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, _pki) = credentials_dir();
    let open = |name: &str| {
        std::fs::set_permissions(
            dir.path().join(name),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap()
    };
    open("ops-secret");
    let (ok, output) = check(&write(dir.path(), "files.toml", GOOD));
    assert!(ok, "{output}");
    assert!(
        output.contains("secret file")
            && output.contains("ops-secret is readable by group or others"),
        "{output}"
    );
    let inline = GOOD.replace(
        "secret_file = \"ops-secret\"",
        &format!("secret = \"{WEBHOOK_SECRET}\""),
    );
    let config = write(dir.path(), "inline.toml", &inline);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, output) = check(&config);
    assert!(ok, "{output}");
    assert!(
        output.contains("an inline secret: the config file"),
        "{output}"
    );

    let pki = TestPki::new("not a secret");
    std::fs::write(dir.path().join("arm-secret"), &pki.client_pem.0).unwrap();
    let arm = format!(
        "{GOOD}\n[[account]]\nname = \"arm\"\nkind = \"arm\"\nsubscription_id = \"s\"\nresource_group = \"rg\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_file = \"arm-secret\"\n"
    );
    let (ok, output) = check(&write(dir.path(), "arm.toml", &arm));
    assert!(!ok, "{output}");
    assert!(
        output.contains("client_secret_file: does not look like a client secret"),
        "{output}"
    );
    assert!(!output.contains("BEGIN CERTIFICATE"), "{output}");
}

#[test]
fn names_with_control_characters_or_dots_only_are_refused() {
    let (dir, _pki) = credentials_dir();
    for (from, to, key) in [
        (
            "name = \"MySampleJob\"",
            "name = \"Job\\u001b[2J\"",
            "job[0].name",
        ),
        ("name = \"MySampleJob\"", "name = \"..\"", "job[0].name"),
        ("name = \"prod\"", "name = \"pr\\nod\"", "account[0].name"),
        ("name = \"prod\"", "name = \".\"", "account[0].name"),
    ] {
        let text = GOOD.replacen(from, to, 1);
        let (ok, output) = check(&write(dir.path(), "names.toml", &text));
        assert!(!ok, "{to}: {output}");
        assert!(output.contains(key), "{to}: {output}");
        assert!(
            !output.contains('\u{1b}'),
            "no raw escape in the message: {output:?}"
        );
    }
}

#[test]
fn a_listener_beyond_loopback_wants_a_token_file_and_the_token_file_must_be_readable() {
    let (dir, _pki) = credentials_dir();
    let open = write(
        dir.path(),
        "open.toml",
        &format!("{GOOD}\n[http]\nlisten = \"0.0.0.0:9797\"\n"),
    );
    let (ok, output) = check(&open);
    assert!(ok, "a warning, not an error: {output}");
    assert!(
        output.contains("http.listen: 0.0.0.0:9797 is beyond loopback and there is no token_file"),
        "{output}"
    );
    let missing = write(
        dir.path(),
        "missing.toml",
        &format!("{GOOD}\n[http]\nlisten = \"0.0.0.0:9797\"\ntoken_file = \"no-such-token\"\n"),
    );
    let (ok, output) = check(&missing);
    assert!(!ok, "{output}");
    assert!(output.contains("http.token_file: cannot read"), "{output}");
    let token = dir.path().join("page-token");
    std::fs::write(&token, "t0ken\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let guarded = write(
        dir.path(),
        "guarded.toml",
        &format!("{GOOD}\n[http]\nlisten = \"0.0.0.0:9797\"\ntoken_file = \"page-token\"\n"),
    );
    let (ok, output) = check(&guarded);
    assert!(ok, "{output}");
    assert!(!output.contains("beyond loopback"), "{output}");
    assert!(
        !output.contains("t0ken"),
        "the token is never printed: {output}"
    );
    assert!(
        output.contains("http.token_file: the token has 5 characters; 16 or more"),
        "a short token is warned of: {output}"
    );
    // A token no client could send: a second line, a space, a non-ASCII letter.
    for bad in [
        "first-line-token\nsecond-line\n",
        "two words token here",
        "t\u{f6}ken-0123456789abc",
    ] {
        std::fs::write(&token, bad).unwrap();
        let (ok, output) = check(&guarded);
        assert!(!ok, "{bad:?}: {output}");
        assert!(
            output.contains("http.token_file: must be one line of visible ASCII"),
            "{bad:?}: {output}"
        );
    }
}

#[test]
fn postgres_database_keys_are_checked_and_their_mistakes_named() {
    let (dir, _pki) = credentials_dir();
    let database = |keys: &str| GOOD.replace("database = \"iewatch.db\"", keys);
    // A bad URL, a lease out of bounds, a password file beside a SQLite file.
    let (ok, output) = check(&write(
        dir.path(),
        "pg-bad.toml",
        &database("database = \"postgres://[::1\"\nlease = \"1s\""),
    ));
    assert!(!ok);
    assert!(
        output.contains("daemon.database: not a valid URL"),
        "{output}"
    );
    assert!(output.contains("daemon.lease: give 3s to 5m"), "{output}");
    let (ok, output) = check(&write(
        dir.path(),
        "pg-sqlite.toml",
        &database("database = \"iewatch.db\"\ndatabase_password_file = \"pw\""),
    ));
    assert!(!ok);
    assert!(
        output.contains("daemon.database_password_file: is for a postgres:// database only"),
        "{output}"
    );
    // A password in the URL is warned about and never echoed; a readable password file
    // too. (No server here: `check` then fails on opening the database, saying so.)
    std::fs::write(dir.path().join("pw"), "hunter2-secret\n").unwrap();
    let (_, output) = check(&write(
        dir.path(),
        "pg-warn.toml",
        &database(
            "database = \"postgres://iewatch:s3cret-in-url@127.0.0.1:1/iw\"\ndatabase_password_file = \"pw\"",
        ),
    ));
    assert!(output.contains("the URL carries a password"), "{output}");
    assert!(output.contains("password file"), "{output}");
    assert!(output.contains("readable by group or others"), "{output}");
    assert!(
        output.contains("daemon.database: cannot open database postgres://"),
        "{output}"
    );
    assert!(
        !output.contains("s3cret-in-url") && !output.contains("hunter2"),
        "{output}"
    );
}

#[test]
fn a_state_name_no_kind_of_job_has_is_a_warning_naming_the_one_meant() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        "[daemon]\ndatabase = \"iewatch.db\"\n\
         stall_after = { Transfering = \"1d\", datacopy = \"2d\", DataCopy = \"3d\" }\n\
         poll_interval_by_state = { Shiping = \"1h\", Delivered = \"2h\" }\n",
    )
    .unwrap();
    let (ok, output) = check(&config);
    assert!(ok, "a warning, not a refusal: {output}");
    for (key, meant) in [
        ("daemon.stall_after.Transfering", "Transferring"),
        ("daemon.stall_after.datacopy", "DataCopy"),
        ("daemon.poll_interval_by_state.Shiping", "Shipping"),
    ] {
        let line = output
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key} in {output}"));
        assert!(
            line.starts_with("warning") && line.contains(&format!("did you mean {meant:?}")),
            "{line}"
        );
    }
    for known in ["stall_after.DataCopy", "Delivered"] {
        assert!(!output.contains(known), "{known}: {output}");
    }
}

#[test]
fn a_secret_signs_only_json_webhooks_and_elsewhere_is_said_to_do_nothing() {
    use iewatch::config::Channel;
    let (dir, _pki) = credentials_dir();
    let config = Config::load(&write(dir.path(), "json.toml", GOOD)).unwrap();
    assert!(
        matches!(
            &config.webhooks[0].channel,
            Channel::Json { secret: Some(_) }
        ),
        "{:?}",
        config.webhooks[0].channel
    );
    assert!(!config
        .warnings
        .iter()
        .any(|w| w.to_string().contains("secret")));

    let slack = GOOD.replace(
        "secret_file = \"ops-secret\"",
        "format = \"slack\"\nsecret_file = \"ops-secret\"",
    );
    let config = Config::load(&write(dir.path(), "slack.toml", &slack)).unwrap();
    assert!(matches!(config.webhooks[0].channel, Channel::Slack));
    let said: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        said.iter().any(|w| w.contains("webhook[0].secret")
            && w.contains("signs only format = \"json\" webhooks; ignored here")),
        "{said:?}"
    );
}

#[test]
fn each_credential_takes_its_own_keys_and_names_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // The database in the test's own directory: `check` opens it, and the checkout may
    // not be writable (the tests also run as nobody).
    let database = dir.path().join("iewatch.db");
    let account = |keys: &str| {
        format!(
            "[daemon]\ndatabase = \"{}\"\n\n[[account]]\nname = \"arm\"\nkind = \"arm\"\nsubscription_id = \"s\"\nresource_group = \"rg\"\n{keys}\n",
            database.display()
        )
    };
    for good in [
        "credential = \"managed_identity\"",
        "credential = \"managed_identity\"\nmanaged_identity_client_id = \"0000-id\"",
        "credential = \"managed_identity\"\nmanaged_identity_resource_id = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/iewatch\"",
        "credential = \"workload_identity\"",
        "credential = \"workload_identity\"\ntenant_id = \"t\"\nclient_id = \"c\"",
        "credential = \"azure_cli\"\ntenant_id = \"t\"",
        "credential = \"default\"\nmanaged_identity_object_id = \"o\"",
        "credential = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cret-value\"",
    ] {
        let path = write(dir.path(), "good.toml", &account(good));
        let (ok, output) = check(&path);
        assert!(ok, "{good}:\n{output}");
    }
    for (bad, expected) in [
        ("", "account[0].credential: is required: client_secret"),
        (
            "credential = \"managed\"",
            "account[0].credential: \"managed\" is not \"client_secret\", \"client_certificate\", \"managed_identity\", \"workload_identity\", \"azure_cli\" or \"default\"",
        ),
        (
            "credential = \"managed_identity\"\ntenant_id = \"t\"\nclient_secret = \"x\"",
            "account[0].tenant_id: is not used by credential = \"managed_identity\"",
        ),
        (
            "credential = \"managed_identity\"\nclient_secret = \"x\"",
            "account[0].client_secret: is not used by credential = \"managed_identity\"",
        ),
        (
            "credential = \"azure_cli\"\nclient_id = \"c\"",
            "account[0].client_id: is not used by credential = \"azure_cli\"",
        ),
        (
            "credential = \"workload_identity\"\nmanaged_identity_client_id = \"c\"",
            "account[0].managed_identity_client_id: is not used by credential = \"workload_identity\"",
        ),
        (
            "credential = \"managed_identity\"\nmanaged_identity_client_id = \"a\"\nmanaged_identity_object_id = \"b\"",
            "give one of managed_identity_client_id, managed_identity_object_id and managed_identity_resource_id",
        ),
        (
            "credential = \"managed_identity\"\nmanaged_identity_client_id = \"two words\"",
            "is not an identity's id",
        ),
        (
            "credential = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"",
            "account[0].client_secret: is required (client_secret or client_secret_file)",
        ),
    ] {
        let path = write(dir.path(), "bad.toml", &account(bad));
        let (ok, output) = check(&path);
        assert!(!ok, "{bad}:\n{output}");
        assert!(output.contains(expected), "{bad}: missing {expected:?} in:\n{output}");
    }
}
