//! SMTP connections: opened with `TCP_NODELAY` (lettre writes a message and its final
//! `.` in two TLS records; with Nagle's algorithm the second waits for the server's
//! delayed ACK, 40 ms a message), TLS from the first byte or STARTTLS (required: never in
//! clear), then AUTH; and kept per webhook between messages ([`Parked`]).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use lettre::transport::smtp::{
    authentication::{Credentials, DEFAULT_MECHANISMS},
    client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters},
    extension::ClientId,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::MailError;
use crate::{config::EmailSettings, tls};

/// A connection parked this long is not reused: closed and opened anew. Well under the
/// 5 minutes a server waits for a command (RFC 5321 §4.5.3.2.7).
const PARK_IDLE: Duration = Duration::from_secs(60);
/// Connections one webhook keeps parked at most: lanes that mail at once each take one.
const PARK_MAX: usize = 4;

/// One webhook's SMTP connections kept between messages while mail flows, so that TCP,
/// TLS, STARTTLS and AUTH are paid once, not per message. A connection is taken for an
/// attempt and parked again only after a complete exchange: an attempt cut off by its
/// deadline drops its connection with it, so a connection in the middle of a reply is
/// never reused. A parked one answers a NOOP before it is trusted, and one idle past
/// [`PARK_IDLE`] is closed instead. (lettre's own pool parks a connection whose send was
/// cancelled.)
#[derive(Clone, Default)]
pub struct Parked(Arc<Mutex<Vec<(AsyncSmtpConnection, Instant)>>>);

impl Parked {
    /// A parked connection fresh enough to try, if any; stale ones are dropped.
    pub(super) fn take(&self) -> Option<AsyncSmtpConnection> {
        let mut parked = self.0.lock().unwrap_or_else(|p| p.into_inner());
        parked.retain(|(_, since)| since.elapsed() < PARK_IDLE);
        parked.pop().map(|(connection, _)| connection)
    }

    /// Keeps `connection` for the next message, unless it broke or enough are kept.
    pub(super) fn park(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        let mut parked = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if parked.len() < PARK_MAX {
            parked.push((connection, Instant::now()));
        }
    }
}

/// A new connection: TCP (no Nagle), TLS (implicit, or STARTTLS), EHLO, and AUTH when the
/// webhook has credentials. The caller bounds it in time; the TCP connect has the
/// webhook's timeout of its own.
pub(super) async fn open(settings: &EmailSettings) -> Result<AsyncSmtpConnection, MailError> {
    let failed = |e: lettre::transport::smtp::Error| MailError::smtp(settings, &e);
    let tcp = tokio::time::timeout(
        settings.timeout,
        TcpStream::connect((settings.host.as_str(), settings.port)),
    )
    .await
    .map_err(|_| MailError::transient(settings, "connect: timed out".into()))?
    .map_err(|e| MailError::transient(settings, format!("connect: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| MailError::transient(settings, format!("TCP_NODELAY: {e}")))?;
    let hello = ClientId::default();
    let mut connection = if settings.implicit_tls {
        let stream = Encrypted::connect(settings, tcp).await?;
        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
            .await
            .map_err(failed)?
    } else {
        let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
            .await
            .map_err(failed)?;
        connection
            .starttls(starttls_parameters(settings)?, &hello)
            .await
            .map_err(failed)?;
        connection
    };
    if let Some((user, password)) = &settings.credentials {
        let credentials = Credentials::new(
            user.clone(),
            String::from_utf8_lossy(password.expose()).into_owned(),
        );
        connection
            .auth(DEFAULT_MECHANISMS, &credentials)
            .await
            .map_err(failed)?;
    }
    Ok(connection)
}

/// lettre's TLS settings for STARTTLS: the system roots and the webhook's own.
fn starttls_parameters(settings: &EmailSettings) -> Result<TlsParameters, MailError> {
    let mut parameters = TlsParameters::builder(settings.host.clone());
    for root in &settings.extra_roots {
        parameters = parameters.add_root_certificate(
            Certificate::from_der(root.to_vec())
                .map_err(|e| MailError::permanent(format!("ca_certificate: {e}")))?,
        );
    }
    parameters
        .build_rustls()
        .map_err(|e| MailError::permanent(format!("TLS: {e}")))
}

/// TLS from the first byte (`smtps://`) on our own socket, so that it has `TCP_NODELAY`:
/// lettre opens such a connection only on a socket of its own. The same roots as
/// STARTTLS: the system's and the webhook's `ca_certificate`.
#[derive(Debug)]
struct Encrypted(tokio_rustls::client::TlsStream<TcpStream>);

impl Encrypted {
    async fn connect(settings: &EmailSettings, tcp: TcpStream) -> Result<Encrypted, MailError> {
        let config = tls::client_config(tls::root_store(&settings.extra_roots, true), None)
            .map_err(|e| MailError::permanent(format!("TLS: {e}")))?;
        let name = rustls_pki_types::ServerName::try_from(settings.host.clone())
            .map_err(|e| MailError::permanent(format!("TLS: server name: {e}")))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map(Encrypted)
            .map_err(|e| MailError::transient(settings, format!("TLS: {e}")))
    }
}

impl AsyncTokioStream for Encrypted {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Encrypted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Encrypted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
