//! `daemon.database`: a SQLite file (the default: one daemon, one machine) or a
//! PostgreSQL database (several daemons, one leading), as the config names it. How to
//! connect to it is the store's business (`store/database.rs`).

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// Where iewatch keeps its state.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL database.
    Postgres(Postgres),
}

/// A PostgreSQL database: its URL (TLS options as libpq's `sslmode`, `sslrootcert`,
/// `sslcert`, `sslkey` parameters) and where its password is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    /// `postgres://user@host:port/database?sslmode=...`, without a password.
    pub url: String,
    /// A file holding the password (a systemd credential, say); None: the URL's
    /// environment (`PGPASSWORD`, `~/.pgpass`) or no password.
    pub password_file: Option<PathBuf>,
}

impl Database {
    /// Reads `database` from the config: a `postgres://` or `postgresql://` URL, else a
    /// file path (relative ones resolved by the caller).
    pub fn parse(text: &str, password_file: Option<PathBuf>) -> Database {
        if is_postgres_url(text) {
            Database::Postgres(Postgres {
                url: text.to_owned(),
                password_file,
            })
        } else {
            Database::File(PathBuf::from(text))
        }
    }

    /// The SQLite file, if it is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Database::File(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

/// Whether `text` names a PostgreSQL database.
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// Shown in logs and messages: the path, or the URL without any password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::File(path) => write!(f, "{}", path.display()),
            Database::Postgres(pg) => f.write_str(&redacted(&pg.url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

/// A URL with its password (in the authority or the `password` parameter) replaced.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("REDACTED"));
            }
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "REDACTED".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if pairs.iter().any(|(k, _)| k == "password") {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "postgres://(unparseable URL)".into(),
    }
}
