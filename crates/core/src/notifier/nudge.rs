//! How a command in another process (`iewatch redeliver`) tells the running daemon's
//! notifier that the outbox changed: on SQLite a byte written into a FIFO beside the
//! database, `DATABASE.wake`; on PostgreSQL a `NOTIFY iewatch_wake`, which reaches the
//! leader wherever it runs. The notifier sleeps on it instead of re-reading the outbox
//! every few seconds, so an idle daemon wakes for nothing. Nobody listening, the nudge is
//! lost harmlessly (the next daemon reads the outbox when it starts); a FIFO that cannot
//! be made leaves the notifier's slow re-read as the only way, which it says.

use std::{
    io,
    path::{Path, PathBuf},
};

use tokio::net::unix::pipe;

use crate::store::{Database, Store};

/// The PostgreSQL channel of nudges.
const CHANNEL: &str = "iewatch_wake";

/// Where nudges arrive.
pub(crate) enum Listener {
    /// The FIFO beside a SQLite file.
    Fifo(pipe::Receiver),
    /// `LISTEN iewatch_wake` on a connection of its own.
    Postgres(Box<sqlx::postgres::PgListener>),
}

/// Starts listening for nudges to the daemon of `database`.
///
/// # Errors
/// The FIFO cannot be made, or the listening connection cannot be opened.
pub(crate) async fn listen_to(database: &Database) -> Result<Listener, String> {
    match database {
        Database::File(path) => listen(path).map(Listener::Fifo).map_err(|e| e.to_string()),
        Database::Postgres(pg) => {
            let url = crate::store::postgres_url(pg)?;
            let mut listener = sqlx::postgres::PgListener::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            listener.listen(CHANNEL).await.map_err(|e| e.to_string())?;
            Ok(Listener::Postgres(Box::new(listener)))
        }
    }
}

/// Waits for the next nudge.
///
/// # Errors
/// The FIFO or the connection failed.
pub(crate) async fn next_nudge(listener: &mut Listener) -> Result<(), String> {
    match listener {
        Listener::Fifo(fifo) => next(fifo).await.map_err(|e| e.to_string()),
        Listener::Postgres(pg) => pg.recv().await.map(drop).map_err(|e| e.to_string()),
    }
}

/// Tells the daemon of `store`'s database, if one runs, that its outbox changed. Never
/// fails: without a listener there is nothing to tell.
pub async fn nudge_daemon(store: &Store) {
    match store.database() {
        Database::File(path) => nudge(path),
        Database::Postgres(_) => {
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(store.pool())
                .await;
            if let Err(e) = sent {
                tracing::debug!("no nudge sent: {e}");
            }
        }
    }
}

/// The FIFO of `database`.
fn fifo_path(database: &Path) -> PathBuf {
    crate::store::beside(database, ".wake")
}

/// The listening end, made (mode 0600) if it is not there yet.
///
/// # Errors
/// The FIFO cannot be made or opened, or the path holds something else.
pub(crate) fn listen(database: &Path) -> io::Result<pipe::Receiver> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = fifo_path(database);
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: mkfifo(3) reads a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::AlreadyExists {
            return Err(error);
        }
    }
    // Read and write: the FIFO never reports end-of-file when a writer closes it.
    pipe::OpenOptions::new()
        .read_write(true)
        .unchecked(false)
        .open_receiver(&path)
}

/// Waits for the next nudge (several queued count as one).
pub(crate) async fn next(receiver: &pipe::Receiver) -> io::Result<()> {
    let mut buffer = [0u8; 64];
    loop {
        receiver.readable().await?;
        match receiver.try_read(&mut buffer) {
            Ok(_) => {
                // Drain what else is queued without waiting.
                while matches!(receiver.try_read(&mut buffer), Ok(n) if n > 0) {}
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Tells a daemon watching `database`, if there is one, that its outbox changed.
/// Never blocks, never fails: without a listener there is nothing to tell.
pub fn nudge(database: &Path) {
    use std::io::Write as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let path = fifo_path(database);
    // Only a FIFO: never create or write a regular file of that name.
    if !std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo()) {
        return;
    }
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path);
    if let Ok(mut fifo) = opened {
        let _ = fifo.write(&[1]);
    }
}
