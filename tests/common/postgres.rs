//! A real PostgreSQL server for the tests: a cluster made by `initdb` in a temporary
//! directory, listening on a free 127.0.0.1 port only, password authentication
//! (scram-sha-256) for its one user, TLS with a certificate of a CA made here, stopped
//! (immediate shutdown) when dropped. As root it runs as `nobody` (PostgreSQL refuses
//! root). From Debian's `postgresql` package, which `.ci/run` installs and requires with
//! IEWATCH_REQUIRE_POSTGRES; on a machine without it the tests that need it say so once
//! and do not run.
//!
//! [`Proxy`] stands between a daemon and the server, so that a test can cut the daemon
//! off the database (its connections closed, new ones swallowed) and let it back.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use iewatch::store::{Database, Postgres};

/// The cluster's one user.
pub const USER: &str = "iewatch";
/// Its password (a test cluster on loopback only).
const PASSWORD: &str = "pg-test-password-7d1e";
/// How long the server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running test cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

/// The directory of `initdb` and `postgres`: the newest installed major version.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether the tests run as root (and may use chattr and mount).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command run as the cluster's owner: `nobody` when the tests run as root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Cluster {
    /// Starts a cluster, or says (once per test binary) why not and returns None. With
    /// IEWATCH_REQUIRE_POSTGRES set, a missing server is a failure. Its commits are not
    /// synced (tests check behaviour, not durability).
    pub fn start() -> Option<Cluster> {
        Self::start_with(false)
    }

    /// As [`Cluster::start`], with every commit synced to disk as on a production
    /// server (`fsync`, full page writes): what benchmarks compare with SQLite's FULL
    /// synchronous mode.
    pub fn start_durable() -> Option<Cluster> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            super::prerequisites::not_run(
                "IEWATCH_REQUIRE_POSTGRES",
                "what needs PostgreSQL here (tests/ha.rs, the PostgreSQL benchmark \
                 figures): no server is installed (/usr/lib/postgresql/*/bin); install \
                 Debian's postgresql package",
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("iewatch-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let password_file = dir.path().join("superuser-password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        // TLS with a CA of the test's own (clients may ask for it: sslmode=verify-full).
        let ca = iewatch::simulator::certs::CertificateAuthority::generate("test PostgreSQL CA")
            .unwrap();
        let (cert, key) = ca
            .issue_server(&["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert).unwrap();
        iewatch::simulator::certs::write_private(&dir.path().join("server.key"), &key).unwrap();
        if is_root() {
            for name in ["", "superuser-password", "server.pem", "server.key"] {
                let path = dir.path().join(name);
                std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
            }
        }
        let data = dir.path().join("data");
        let initdb = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C", "--no-instructions"])
            .arg(format!("--pwfile={}", password_file.display()))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = as_owner(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args(if durable {
                ["-c", "fsync=on", "-c", "full_page_writes=on"]
            } else {
                ["-c", "fsync=off", "-c", "full_page_writes=off"]
            })
            .args(["-c", "max_connections=200", "-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.path().join("server.pem").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                dir.path().join("server.key").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut cluster = Cluster { dir, child, port };
        cluster.wait_until_up(&bin.join("pg_isready"));
        Some(cluster)
    }

    /// Waits until the server accepts sessions: a listening socket is not enough (while
    /// it recovers or starts, it answers "the database system is starting up").
    fn wait_until_up(&mut self, pg_isready: &Path) {
        let started = Instant::now();
        loop {
            let ready = Command::new(pg_isready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-t",
                    "1",
                    "-p",
                    &self.port.to_string(),
                ])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "PostgreSQL exited: {}",
                self.log()
            );
            assert!(
                started.elapsed() < START_DEADLINE,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The CA that signed the server's certificate (for `sslrootcert`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A file holding the user's password, for `database_password_file` (readable by
    /// whoever runs the daemons).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("superuser-password")
    }

    /// The URL of `database` through `port` (the server's, or a [`Proxy`]'s), tagged
    /// with `application_name` so that a test can find a daemon's connections.
    pub fn url_via(&self, port: u16, database: &str, application: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{port}/{database}?application_name={application}")
    }

    /// `database` as iewatch names it, with the password file.
    pub fn database(&self, database: &str) -> Database {
        Database::Postgres(Postgres {
            url: self.url_via(self.port, database, "iewatch-test"),
            password_file: Some(self.password_file()),
        })
    }

    /// Creates a database and returns it.
    pub async fn create_database(&self, name: &str) -> Database {
        self.admin("postgres", &format!("CREATE DATABASE \"{name}\""))
            .await;
        self.database(name)
    }

    /// A connection of the admin's own to `database` (PostgreSQL's own driver, for
    /// queries whose types the store's driver does not read, such as numeric).
    pub async fn connect(&self, database: &str) -> sqlx::PgConnection {
        use sqlx::ConnectOptions as _;
        sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(USER)
            .password(PASSWORD)
            .database(database)
            .connect()
            .await
            .unwrap()
    }

    /// Runs `sql` on `database` as the admin.
    pub async fn admin(&self, database: &str, sql: &str) {
        let mut admin = self.connect(database).await;
        sqlx::Executor::execute(&mut admin, sql).await.unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown (the postmaster ends every backend, then itself).
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay on 127.0.0.1 in front of the server. [`Proxy::cut`] closes every relayed
/// connection and swallows new ones (accepted, never answered: the hostile case of a
/// network that drops packets); [`Proxy::restore`] relays again.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

impl Proxy {
    /// Relays 127.0.0.1:(new port) to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (cut2, relays2) = (cut.clone(), relays.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let cut = cut2.clone();
                let relay = tokio::spawn(async move {
                    if cut.load(Ordering::SeqCst) {
                        // Swallowed: held open, unanswered, for at most a minute.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut relays = relays2.lock().unwrap();
                relays.retain(|r| !r.is_finished());
                relays.push(relay);
            }
        });
        Proxy {
            port,
            cut,
            relays,
            accept,
        }
    }

    /// Cuts every connection through the proxy and swallows new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
