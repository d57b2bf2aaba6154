//! One agent per store: an exclusive `flock` on `annexmesh.lock` inside the
//! store, held for the life of the process. Two agents on one store would
//! race each other's uploads, removals and quarantines.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the store.
pub const LOCK_FILE: &str = "annexmesh.lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreLockError {
    #[error(
        "store {store} is already in use by another agent ({holder}); lock file {lock}. \
         Stop that agent or give this one a store of its own"
    )]
    Held { store: PathBuf, lock: PathBuf, holder: String },
    #[error("cannot lock store {store} ({lock}): {source}")]
    Io { store: PathBuf, lock: PathBuf, source: std::io::Error },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the store's lock without waiting and writes this process's pid
    /// and node name into it, so a second agent can say who holds it.
    pub fn acquire(store: &Path, node: &str) -> Result<StoreLock, StoreLockError> {
        let lock = store.join(LOCK_FILE);
        let io =
            |source| StoreLockError::Io { store: store.to_path_buf(), lock: lock.clone(), source };
        std::fs::create_dir_all(store).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(err));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "holder unknown".to_string(),
                h => h.to_string(),
            };
            return Err(StoreLockError::Held { store: store.to_path_buf(), lock, holder });
        }
        let who = format!("pid {} node {node}\n", std::process::id());
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(who.as_bytes()))
            .map_err(io)?;
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_store_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StoreLock::acquire(dir.path(), "node1").unwrap();
        let err = StoreLock::acquire(dir.path(), "node2").unwrap_err().to_string();
        assert!(err.contains(LOCK_FILE), "{err}");
        assert!(err.contains("node node1"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        StoreLock::acquire(dir.path(), "node2").expect("free again once released");
    }
}
