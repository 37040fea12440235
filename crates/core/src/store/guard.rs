//! Who may read and write the database file, and what makes it the daemon's own while
//! it runs: files created and kept private (0600), one `iewatch run` per database
//! (an advisory lock on `DATABASE.lock`, held by an open file, so it dies with the
//! process and a SIGKILLed daemon never blocks its successor), and the file it opened
//! still being the file at its path (a database deleted or replaced under the daemon
//! would otherwise take every change into an unlinked inode while `/healthz` says 200).

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    path::{Path, PathBuf},
};

use super::StoreError;

/// The lock of one daemon on one database, released when dropped.
#[derive(Debug)]
pub(super) struct WriterLock {
    _file: File,
}

/// A file beside `database` named after it: `DATABASE{suffix}` (the lock, the wake FIFO).
pub fn beside(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    database.with_file_name(name)
}

/// The lock file of `database`.
fn lock_path(database: &Path) -> PathBuf {
    beside(database, ".lock")
}

impl WriterLock {
    /// Takes the lock of `database`, or says which process holds it.
    ///
    /// # Errors
    /// [`StoreError::InUse`] when another process holds it; [`StoreError::Open`] when the
    /// lock file cannot be created.
    pub(super) fn acquire(database: &Path) -> Result<WriterLock, StoreError> {
        let path = lock_path(database);
        let open_error = |e: std::io::Error| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(open_error)?;
        match file.try_lock() {
            Ok(()) => {
                // The pid is for people and for the next daemon's message; the lock is the
                // flock, not the file's content.
                file.set_len(0).map_err(open_error)?;
                file.rewind().map_err(open_error)?;
                writeln!(file, "{}", std::process::id()).map_err(open_error)?;
                Ok(WriterLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                Err(StoreError::InUse {
                    database: database.display().to_string(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        format!("pid {}", holder.chars().take(20).collect::<String>())
                    },
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(open_error(e)),
        }
    }
}

/// The identity of a file: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    /// The identity of the file at `path` now.
    pub(super) fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Ok(FileIdentity {
                device: metadata.dev(),
                inode: metadata.ino(),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = metadata;
            Ok(FileIdentity {
                device: 0,
                inode: 0,
            })
        }
    }
}

/// Checks that `path` is still the file whose identity was `opened`.
///
/// # Errors
/// [`StoreError::Replaced`]: deleted, replaced, or no longer readable.
pub(super) fn check_identity(path: &Path, opened: FileIdentity) -> Result<(), StoreError> {
    let replaced = |what: String| StoreError::Replaced {
        path: path.display().to_string(),
        what,
    };
    match FileIdentity::of(path) {
        Ok(now) if now == opened => Ok(()),
        Ok(_) => Err(replaced("replaced by another file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(replaced("deleted".into())),
        Err(e) => Err(replaced(format!("no longer readable ({e})"))),
    }
}

/// Makes the database and its -wal and -shm files readable by their owner only, however
/// they were made (an older version, a copy, an operator's sqlite3); SQLite gives the
/// -wal and -shm files the database's mode.
pub(super) fn make_private(database: &Path) {
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.permissions().mode() & 0o077 != 0 {
            if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!("cannot make {} private (chmod 600): {e}", path.display());
            }
        }
    }
    #[cfg(not(unix))]
    let _ = database;
}

pub(super) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let open_error = |e: std::io::Error| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(open_error)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(open_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_names_the_holder_and_dies_with_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("iewatch.db");
        let first = WriterLock::acquire(&db).unwrap();
        let refused = WriterLock::acquire(&db).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        WriterLock::acquire(&db).expect("free again once the holder is gone");
    }

    #[test]
    fn a_deleted_or_replaced_database_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("iewatch.db");
        std::fs::write(&db, "one").unwrap();
        let opened = FileIdentity::of(&db).unwrap();
        // Held open, as SQLite holds the daemon's database, so its inode is not reused.
        let _held = File::open(&db).unwrap();
        check_identity(&db, opened).unwrap();
        std::fs::remove_file(&db).unwrap();
        assert!(check_identity(&db, opened)
            .unwrap_err()
            .to_string()
            .contains("deleted"));
        std::fs::write(dir.path().join("other"), "two").unwrap();
        std::fs::rename(dir.path().join("other"), &db).unwrap();
        assert!(check_identity(&db, opened)
            .unwrap_err()
            .to_string()
            .contains("replaced"));
    }
}
