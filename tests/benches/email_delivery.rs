//! email_delivery: messages per second to a real SMTP server on 127.0.0.1 (Python's
//! aiosmtpd, STARTTLS required, AUTH), one message after the other as one lane sends
//! them: first opening a connection per message (TCP, EHLO, STARTTLS, EHLO, AUTH each
//! time, as before issue 32), then on the webhook's kept connection.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use iewatch::{
    config::{Channel, Config},
    events::{EventRecord, EventType},
    model::Severity,
    moment::Moment,
    notifier::email::{self, Parked},
    simulator::certs::CertificateAuthority,
};

const MEASURE: Duration = Duration::from_secs(4);

fn main() {
    let present = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        support::prerequisites::not_run(
            "IEWATCH_REQUIRE_SMTP",
            "email_delivery: python3 cannot import aiosmtpd; install it with \
             `python3 -m pip install aiosmtpd`",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sink = start_sink(dir.path(), port);
    let settings = settings(dir.path(), port);
    let (fresh, kept) = support::block_on(async {
        let fresh = rate(&settings, None).await;
        let kept = rate(&settings, Some(&Parked::default())).await;
        (fresh, kept)
    });
    let _ = sink.kill();
    let _ = sink.wait();
    support::report(
        "email_delivery",
        &[
            ("email_delivery_new_connection_each", fresh, "messages/s"),
            ("email_delivery_kept_connection", kept, "messages/s"),
            ("email_delivery_speedup", kept / fresh, "x"),
        ],
    );
}

/// Messages per second for [`MEASURE`]: on `kept` when given, else each on a connection
/// of its own.
async fn rate(settings: &iewatch::config::EmailSettings, kept: Option<&Parked>) -> f64 {
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < MEASURE {
        let own = Parked::default();
        let parked = kept.unwrap_or(&own);
        let code = email::send(settings, parked, &[event(sent)]).await.unwrap();
        assert_eq!(code, 250);
        sent += 1;
    }
    sent as f64 / started.elapsed().as_secs_f64()
}

fn event(n: u64) -> EventRecord {
    EventRecord {
        id: i64::try_from(n).unwrap_or(i64::MAX) + 1,
        account: "prod".into(),
        job: "bench-job".into(),
        event_type: EventType::JobStateChanged,
        drive_id: None,
        from: Some("Shipping".into()),
        to: Some("Received".into()),
        observed_at: Moment::now(),
        severity: Severity::Info,
        details: None,
    }
}

fn settings(dir: &Path, port: u16) -> iewatch::config::EmailSettings {
    std::fs::write(dir.join("smtp-password"), "s3cret\n").unwrap();
    let text = format!(
        "[[webhook]]\nname = \"mail\"\nformat = \"email\"\nurl = \"smtp://127.0.0.1:{port}\"\nfrom = \"iewatch <iewatch@example.com>\"\nto = [\"ops@example.com\"]\nusername = \"alerts\"\npassword_file = \"{}\"\nca_certificate = \"{}\"\ntimeout = \"5s\"\n",
        dir.join("smtp-password").display(),
        dir.join("ca.pem").display()
    );
    let config = Config::parse(&dir.join("w.toml"), &text).unwrap();
    match &config.webhooks[0].channel {
        Channel::Email(settings) => settings.clone(),
        _ => panic!("an e-mail webhook"),
    }
}

/// aiosmtpd with STARTTLS required and AUTH, as tests/email.rs starts it.
fn start_sink(dir: &Path, port: u16) -> std::process::Child {
    let ca = CertificateAuthority::generate("iewatch bench SMTP CA").unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    let (cert, key) = ca.issue_server(&["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let outdir = dir.join("mail");
    std::fs::create_dir_all(&outdir).unwrap();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/smtp_sink.py"
        ))
        .args(["starttls", &port.to_string()])
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .args(["alerts", "s3cret"])
        .arg(&outdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server started");
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
