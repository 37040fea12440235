//! Which database a store is: a SQLite file (the default: one daemon, one machine) or a
//! PostgreSQL database (several daemons, one leading; see [`super::lease`]), and how to
//! connect to it. Both are reached through sqlx's `Any` driver, so every query is written
//! once; the few that differ by dialect pick their text with [`Dialect::pick`].

use std::{path::Path, sync::Once, time::Duration};

use sqlx::{any::AnyPoolOptions, AnyPool, Executor as _};

use super::StoreError;
use crate::config::{Database, Postgres};

/// How long a writer waits for another connection's lock before giving up (SQLite).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections: SQLite has one writer at a time; a few readers beside it.
const SQLITE_CONNECTIONS: u32 = 4;
/// Most page cache per SQLite connection, KiB.
const CACHE_KIB: u32 = 1024;
/// Connections to PostgreSQL: the writer, the notifier, the lease and readers.
const POSTGRES_CONNECTIONS: u32 = 6;
/// How long a PostgreSQL connection may take to open.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long PostgreSQL lets one of iewatch's sessions sit idle inside a transaction
/// before ending it (and its locks). iewatch never waits between the statements of a
/// transaction; a process that does is frozen (SIGSTOP, a paused VM) or hung, and while
/// it sat on the lease row's lock no standby could take over.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);
/// Longest password file read.
const MAX_PASSWORD_FILE: u64 = 4096;

/// The SQL dialect of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The statement text for this dialect.
    pub(super) fn pick<'a>(self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

// The dialect is the store's word for a database: an inherent impl here keeps the
// config from knowing the store.
impl Database {
    /// Its dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Database::File(_) => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Opens a pool on `database`: for SQLite with the durability settings of the store
/// (WAL, a full sync per commit, foreign keys; incremental vacuum when `creating`), for
/// PostgreSQL with the password file's content as password. A command's connections
/// (not `creating`) write nothing by being opened: no PRAGMA that changes the file, so
/// `status` reads beside a daemon in the middle of a write.
pub(super) async fn connect(database: &Database, creating: bool) -> Result<AnyPool, StoreError> {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    let open_error = |reason: String| StoreError::Open {
        path: database.to_string(),
        reason,
    };
    match database {
        Database::File(path) => {
            let url = sqlite_url(path).map_err(open_error)?;
            // In WAL mode, NORMAL survives a process crash but may lose the last commits on
            // a power cut; FULL syncs the WAL at every commit, so a committed change (and
            // its queued alerts) survives both. The cost is one fsync per commit, which is
            // why unchanged polls are batched. Pages freed by `retention` go back to the
            // file system (on a database created with incremental vacuum; README
            // "Retention").
            // Each connection's page cache is at most CACHE_KIB (SQLite's default is 2 MiB,
            // 8 MiB over the pool): the file's pages are in the OS's cache anyway.
            let mut setup = format!(
                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}; \
                 PRAGMA cache_size = -{CACHE_KIB};",
                BUSY_TIMEOUT.as_millis()
            );
            if creating {
                setup.push_str(" PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;");
            }
            probe_sqlite(&url, &setup).await.map_err(open_error)?;
            on_every_connection(AnyPoolOptions::new(), setup)
                .max_connections(SQLITE_CONNECTIONS)
                // A connection to a local file has nothing to test; the test is a trip
                // to its thread (and a wakeup) per query.
                .test_before_acquire(false)
                .connect(&url)
                .await
                .map_err(|e| open_error(e.to_string()))
        }
        Database::Postgres(pg) => {
            let url = postgres_url(pg).map_err(open_error)?;
            // One connection first: a pool retries until its timeout and then says only
            // that it timed out; this says why (refused, unknown host, bad password, TLS).
            let probe = tokio::time::timeout(
                POSTGRES_CONNECT_TIMEOUT,
                <sqlx::AnyConnection as sqlx::Connection>::connect(&url),
            );
            match probe.await {
                Ok(Ok(connection)) => {
                    let _ = sqlx::Connection::close(connection).await;
                }
                Ok(Err(e)) => return Err(open_error(e.to_string())),
                Err(_) => {
                    return Err(open_error(format!(
                        "no answer within {POSTGRES_CONNECT_TIMEOUT:?}"
                    )))
                }
            }
            let setup = format!(
                "SET idle_in_transaction_session_timeout = {}",
                IDLE_IN_TRANSACTION.as_millis()
            );
            on_every_connection(AnyPoolOptions::new(), setup)
                .max_connections(POSTGRES_CONNECTIONS)
                .acquire_timeout(POSTGRES_CONNECT_TIMEOUT)
                .connect(&url)
                .await
                .map_err(|e| open_error(e.to_string()))
        }
    }
}

/// One connection first, set up as the pool's will be, reading the schema: a file that
/// is not a database (a zeroed header, another file's bytes) is refused at once in
/// SQLite's words, where the pool would retry it until its timeout.
async fn probe_sqlite(url: &str, setup: &str) -> Result<(), String> {
    let probe = async {
        let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
        connection.execute(setup).await?;
        sqlx::query("SELECT COUNT(*) FROM sqlite_master")
            .execute(&mut connection)
            .await?;
        sqlx::Connection::close(connection).await
    };
    match tokio::time::timeout(BUSY_TIMEOUT * 2, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(match e.as_database_error() {
            Some(db) if db.message().contains("not a database") => format!(
                "not a SQLite database (its header is damaged or it is another kind of file): {}",
                db.message()
            ),
            Some(db) if db.message().contains("locked") => locked_message(),
            _ => e.to_string(),
        }),
        Err(_) => Err(locked_message()),
    }
}

/// What a database another process holds locked is called.
fn locked_message() -> String {
    format!(
        "locked by another process for over {}s (a write under way that does not end: is \
         another program holding a transaction open, e.g. an sqlite3 shell?)",
        BUSY_TIMEOUT.as_secs()
    )
}

/// `options` that run `setup` on each new connection.
fn on_every_connection(options: AnyPoolOptions, setup: String) -> AnyPoolOptions {
    let setup: std::sync::Arc<str> = setup.into();
    options.after_connect(move |conn, _| {
        let setup = setup.clone();
        Box::pin(async move {
            conn.execute(&*setup).await?;
            Ok(())
        })
    })
}

/// `sqlite://` and the absolute path, percent-encoded (a `?` or `#` in a name stays
/// part of the name).
fn sqlite_url(path: &Path) -> Result<String, String> {
    let absolute = std::path::absolute(path).map_err(|e| e.to_string())?;
    let text = absolute
        .to_str()
        .ok_or_else(|| "the path is not valid UTF-8".to_owned())?;
    let mut url = String::from("sqlite://");
    for c in text.chars() {
        match c {
            '%' | '?' | '#' | ' ' => url.push_str(&format!("%{:02X}", c as u32)),
            c => url.push(c),
        }
    }
    Ok(url)
}

/// The URL with the password file's content (first line) as password: what the pool
/// and the notifier's own `LISTEN` connection open.
pub(crate) fn postgres_url(pg: &Postgres) -> Result<String, String> {
    let Some(file) = &pg.password_file else {
        return Ok(pg.url.clone());
    };
    let password = read_password(file)?;
    let mut url = url::Url::parse(&pg.url).map_err(|e| format!("database URL: {e}"))?;
    url.set_password(Some(&password))
        .map_err(|()| "database URL: it cannot carry a password".to_owned())?;
    Ok(url.to_string())
}

/// The first line of a password file, bounded.
fn read_password(file: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_PASSWORD_FILE).read_to_string(&mut text))
        .map_err(|e| format!("password file {}: {e}", file.display()))?;
    let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if password.is_empty() {
        return Err(format!("password file {} is empty", file.display()));
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_postgres_and_everything_else_is_a_file() {
        assert!(matches!(
            Database::parse("postgres://u@127.0.0.1/iewatch", None),
            Database::Postgres(_)
        ));
        assert!(matches!(
            Database::parse("postgresql://u@h/db", None),
            Database::Postgres(_)
        ));
        assert_eq!(
            Database::parse("state/iewatch.db", None),
            Database::File("state/iewatch.db".into())
        );
    }

    #[test]
    fn passwords_never_show() {
        let db = Database::parse(
            "postgres://iewatch:s3cret@db.example:5432/iw?sslmode=require",
            None,
        );
        assert!(!db.to_string().contains("s3cret"), "{db}");
        assert!(db.to_string().contains("db.example"), "{db}");
        let db = Database::parse(
            "postgres://db.example/iw?password=s3cret&sslmode=require",
            None,
        );
        assert!(!db.to_string().contains("s3cret"), "{db}");
        assert!(db.to_string().contains("sslmode=require"), "{db}");
    }

    #[test]
    fn the_password_file_fills_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "p@ss word\nignored\n").unwrap();
        let pg = Postgres {
            url: "postgres://iewatch@127.0.0.1:5432/iw".into(),
            password_file: Some(file.clone()),
        };
        let url = url::Url::parse(&postgres_url(&pg).unwrap()).unwrap();
        assert_eq!(url.password(), Some("p%40ss%20word"));
        std::fs::write(&file, "\n").unwrap();
        assert!(postgres_url(&pg).unwrap_err().contains("empty"));
        let missing = Postgres {
            password_file: Some(dir.path().join("none")),
            ..pg
        };
        assert!(postgres_url(&missing)
            .unwrap_err()
            .contains("password file"));
    }

    #[test]
    fn odd_file_names_stay_names() {
        let url = sqlite_url(Path::new("/tmp/a b?c#d%e.db")).unwrap();
        assert_eq!(url, "sqlite:///tmp/a%20b%3Fc%23d%25e.db");
    }
}
