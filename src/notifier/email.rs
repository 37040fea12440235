//! `format = "email"`: alerts as e-mail over SMTP (lettre: a well-kept SMTP client, so
//! no protocol code of ours), STARTTLS (`smtp://`) or implicit TLS (`smtps://`), never
//! in clear; one message per event, or a digest of a job's pending alerts every
//! `digest_every`. The outbox, order per job, retries and `redeliver` are the other
//! channels'.

use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};

use crate::{config::EmailSettings, store::EventRecord};

/// Sends `events` (one, or a job's digest) as one message.
///
/// # Errors
/// The message cannot be built, the server cannot be reached, TLS fails, or the server
/// refuses it: one line, no secret.
pub async fn send(settings: &EmailSettings, events: &[EventRecord]) -> Result<u16, String> {
    if events.is_empty() {
        return Err("nothing to send".into());
    }
    let message =
        message(settings, events).map_err(|e| format!("cannot build the message: {e}"))?;
    let mut tls = TlsParameters::builder(settings.host.clone());
    for root in &settings.extra_roots {
        tls = tls.add_root_certificate(
            Certificate::from_der(root.to_vec()).map_err(|e| format!("ca_certificate: {e}"))?,
        );
    }
    let tls = tls.build_rustls().map_err(|e| format!("TLS: {e}"))?;
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
            .port(settings.port)
            .timeout(Some(settings.timeout))
            .tls(if settings.implicit_tls {
                Tls::Wrapper(tls)
            } else {
                Tls::Required(tls)
            });
    if let Some((user, password)) = &settings.credentials {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            String::from_utf8_lossy(password.expose()).into_owned(),
        ));
    }
    let response = transport
        .build()
        .send(message)
        .await
        .map_err(|e| format!("SMTP {}:{}: {e}", settings.host, settings.port))?;
    Ok(u16::from(response.code()))
}

/// The subject and text of `events` of one job.
fn message(settings: &EmailSettings, events: &[EventRecord]) -> Result<Message, String> {
    let first = &events[0];
    let worst = events
        .iter()
        .map(|e| e.severity)
        .max()
        .unwrap_or(first.severity);
    let subject = match events {
        [one] => format!(
            "[iewatch {}] {}/{}: {}",
            one.severity,
            one.account,
            one.job,
            one.describe()
        ),
        many => format!(
            "[iewatch {worst}] {}/{}: {} changes",
            first.account,
            first.job,
            many.len()
        ),
    };
    let mut text = String::new();
    for event in events {
        let subject = match &event.drive_id {
            Some(drive) => format!("drive {drive}"),
            None => "job".to_owned(),
        };
        text.push_str(&format!(
            "{} UTC  {}/{}  {subject}  {}  [{}]  ({})\n",
            event.observed_at,
            event.account,
            event.job,
            event.describe(),
            event.severity,
            super::payload::webhook_id(event),
        ));
    }
    text.push_str("\n-- \niewatch: `iewatch history JOB` shows the whole timeline.\n");
    let from: Mailbox = settings.from.parse().map_err(|e| format!("from: {e}"))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &settings.to {
        builder = builder.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    builder.body(text).map_err(|e| e.to_string())
}
