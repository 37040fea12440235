//! `format = "email"`: alerts as e-mail over SMTP (lettre: a well-kept SMTP client, so
//! no protocol code of ours), STARTTLS (`smtp://`) or implicit TLS (`smtps://`), never
//! in clear; one message per event, or a digest of a job's pending alerts every
//! `digest_every`. The outbox, order per job, retries and `redeliver` are the other
//! channels'.

mod connection;

use lettre::{
    message::{Mailbox, SinglePart},
    Message,
};

pub use connection::Parked;

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
    pub(super) fn permanent(text: String) -> MailError {
        MailError {
            code: None,
            permanent: true,
            text,
        }
    }

    /// A failure that another attempt may not meet (no connection, TLS refused on the
    /// way), said in the words of [`MailError::smtp`].
    pub(super) fn transient(settings: &EmailSettings, what: String) -> MailError {
        MailError {
            code: None,
            permanent: false,
            text: format!("SMTP {}:{}: {what}", settings.host, settings.port),
        }
    }

    /// A failure lettre reported, with the server's code and words.
    pub(super) fn smtp(settings: &EmailSettings, e: &lettre::transport::smtp::Error) -> MailError {
        MailError {
            code: e.status().map(u16::from),
            permanent: e.is_permanent(),
            text: format!("SMTP {}:{}: {e}", settings.host, settings.port),
        }
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
    let kept = match parked.take() {
        Some(mut kept) => kept.test_connected().await.then_some(kept),
        None => None,
    };
    let mut smtp = match kept {
        Some(kept) => kept,
        None => connection::open(settings).await?,
    };
    let response = smtp
        .send(message.envelope(), &message.formatted())
        .await
        .map_err(|e| MailError::smtp(settings, &e))?;
    parked.park(smtp);
    Ok(u16::from(response.code()))
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
