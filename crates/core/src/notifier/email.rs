//! `format = "email"`: alerts as e-mail over SMTP (lettre: a well-kept SMTP client, so
//! no protocol code of ours), STARTTLS (`smtp://`) or implicit TLS (`smtps://`), never
//! in clear; one message per event, or a digest of a job's pending alerts every
//! `digest_every`. The outbox, order per job, retries and `redeliver` are the other
//! channels'.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lettre::{
    message::{Mailbox, SinglePart},
    transport::smtp::{
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::{AsyncSmtpConnection, Certificate, TlsParameters},
        extension::ClientId,
    },
    Message,
};

use crate::{config::EmailSettings, store::EventRecord};

/// Why a message was not sent: the server's reply code where one came, whether that
/// refusal is for good (a 5xx reply, or a message that cannot be built), and one line
/// of text without any secret.
#[derive(Debug)]
pub struct MailError {
    /// The SMTP reply code (`550`, `452`), if the server answered.
    pub code: Option<u16>,
    /// True when sending it again cannot help.
    pub permanent: bool,
    /// What went wrong, with the server's words.
    pub text: String,
}

impl MailError {
    /// A failure of ours that the same message would meet again.
    fn permanent(text: String) -> MailError {
        MailError {
            code: None,
            permanent: true,
            text,
        }
    }

    fn smtp(settings: &EmailSettings, e: &lettre::transport::smtp::Error) -> MailError {
        MailError {
            code: e.status().map(u16::from),
            permanent: e.is_permanent(),
            text: format!("SMTP {}:{}: {e}", settings.host, settings.port),
        }
    }
}

/// A connection parked this long is not reused: closed and opened anew. Well under the
/// 5 minutes a server waits for a command (RFC 5321 §4.5.3.2.7).
pub const PARK_IDLE: Duration = Duration::from_secs(60);
/// Connections one webhook keeps parked at most: lanes that mail at once each take one.
pub const PARK_MAX: usize = 4;

/// One webhook's SMTP connections kept between messages while mail flows, so that TCP,
/// TLS, STARTTLS and AUTH are paid once, not per message. A connection is taken for an
/// attempt and parked again only after a complete exchange: an attempt cut off by its
/// deadline drops its connection with it, so a connection in the middle of a reply is
/// never reused. A parked one answers a NOOP before it is trusted, and one idle past
/// [`PARK_IDLE`] is closed instead.
#[derive(Clone, Default)]
pub struct Parked(Arc<Mutex<Vec<(AsyncSmtpConnection, Instant)>>>);

impl Parked {
    /// A parked connection fresh enough to try, if any; stale ones are dropped.
    fn take(&self) -> Option<AsyncSmtpConnection> {
        let mut parked = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        parked.retain(|(_, since)| since.elapsed() < PARK_IDLE);
        parked.pop().map(|(connection, _)| connection)
    }

    /// Keeps `connection` for the next message, unless it broke or enough are kept.
    fn park(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        let mut parked = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if parked.len() < PARK_MAX {
            parked.push((connection, Instant::now()));
        }
    }

    /// Connections parked now (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |parked| parked.len())
    }

    /// True when none is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends `events` (one, or a job's digest) as one message, on a parked connection of
/// `parked` when one still answers, else on a new one. The caller bounds the whole
/// exchange in time (`notifier::deliver`): lettre's own timeout covers the TCP connect
/// and each read only.
///
/// # Errors
/// The message cannot be built, the server cannot be reached, TLS fails, or the server
/// refuses it.
pub async fn send(
    settings: &EmailSettings,
    parked: &Parked,
    events: &[EventRecord],
) -> Result<u16, MailError> {
    if events.is_empty() {
        return Err(MailError::permanent("nothing to send".into()));
    }
    let message = message(settings, events)
        .map_err(|e| MailError::permanent(format!("cannot build the message: {e}")))?;
    let mut connection = match parked.take() {
        Some(mut connection) => match connection.test_connected().await {
            true => connection,
            false => connect(settings).await?,
        },
        None => connect(settings).await?,
    };
    let response = connection
        .send(message.envelope(), &message.formatted())
        .await
        .map_err(|e| MailError::smtp(settings, &e))?;
    parked.park(connection);
    Ok(u16::from(response.code()))
}

/// A new connection: TCP, TLS (implicit, or STARTTLS, required: never in clear), EHLO
/// and AUTH when the webhook has credentials.
async fn connect(settings: &EmailSettings) -> Result<AsyncSmtpConnection, MailError> {
    let mut tls = TlsParameters::builder(settings.host.clone());
    for root in &settings.extra_roots {
        tls = tls.add_root_certificate(
            Certificate::from_der(root.to_vec())
                .map_err(|e| MailError::permanent(format!("ca_certificate: {e}")))?,
        );
    }
    let tls = tls
        .build_rustls()
        .map_err(|e| MailError::permanent(format!("TLS: {e}")))?;
    let hello = ClientId::default();
    let mut connection = AsyncSmtpConnection::connect_tokio1(
        (settings.host.as_str(), settings.port),
        Some(settings.timeout),
        &hello,
        settings.implicit_tls.then(|| tls.clone()),
        None,
    )
    .await
    .map_err(|e| MailError::smtp(settings, &e))?;
    if !settings.implicit_tls {
        connection
            .starttls(tls, &hello)
            .await
            .map_err(|e| MailError::smtp(settings, &e))?;
    }
    if let Some((user, password)) = &settings.credentials {
        let credentials = Credentials::new(
            user.clone(),
            String::from_utf8_lossy(password.expose()).into_owned(),
        );
        connection
            .auth(DEFAULT_MECHANISMS, &credentials)
            .await
            .map_err(|e| MailError::smtp(settings, &e))?;
    }
    Ok(connection)
}

/// A service string as one line of a plain-text message: control characters (CR, LF:
/// a forged line or header) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Longest subject, in characters: SMTP refuses lines over 998 bytes (RFC 5321
/// §4.5.3.1.6) and a header is not folded inside a word; the body has the whole text.
const MAX_SUBJECT_CHARS: usize = 200;

/// A subject: one line, cut at [`MAX_SUBJECT_CHARS`] with an ellipsis.
fn subject_line(text: &str) -> String {
    let line = one_line(text);
    if line.chars().count() <= MAX_SUBJECT_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_SUBJECT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A `Message-ID` unique to this message, in the `from` address's domain (RFC 5322
/// §3.6.4): large providers refuse mail without one.
fn message_id(from: &Mailbox, first: &EventRecord) -> String {
    let nonce: u64 = rand::random();
    format!(
        "<iewatch.{}.{nonce:016x}@{}>",
        first.id,
        from.email.domain()
    )
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
        [one] => subject_line(&format!(
            "[iewatch {}] {}/{}: {}",
            one.severity,
            one.account,
            one.job,
            one.describe()
        )),
        many => subject_line(&format!(
            "[iewatch {worst}] {}/{}: {} changes",
            first.account,
            first.job,
            many.len()
        )),
    };
    let mut text = String::new();
    for event in events {
        let subject = match &event.drive_id {
            Some(drive) => format!("drive {drive}"),
            None => "job".to_owned(),
        };
        let line = format!(
            "{} UTC  {}/{}  {subject}  {}  [{}]  ({})",
            event.observed_at,
            event.account,
            event.job,
            event.describe(),
            event.severity,
            crate::payload::webhook_id(event),
        );
        text.push_str(&one_line(&line));
        text.push('\n');
        for (title, value) in crate::payload::error_facts(event) {
            text.push_str(&one_line(&format!("    {title}: {value}")));
            text.push('\n');
        }
    }
    text.push_str("\n-- \niewatch: `iewatch history JOB` shows the whole timeline.\n");
    let from: Mailbox = settings.from.parse().map_err(|e| format!("from: {e}"))?;
    let mut builder = Message::builder()
        .message_id(Some(message_id(&from, first)))
        .from(from)
        .subject(subject);
    for to in &settings.to {
        builder = builder.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    // A MIME part: lettre writes `MIME-Version: 1.0` (RFC 2045's MUST) and the charset
    // only for one; `Date` it adds itself.
    builder
        .singlepart(SinglePart::plain(text))
        .map_err(|e| e.to_string())
}
