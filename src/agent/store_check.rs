//! The store's self-check, reported with every heartbeat: can the agent
//! create, write, fsync and delete a small file in `annex/tmp`, where every
//! upload starts? A node whose store fails it is degraded at the coordinator
//! and gets no new content until it passes again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a check may take before the store counts as unwritable: a disk
/// that hangs is no better than one that refuses.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the check's file: not a key, so partial expiry leaves it be.
const CHECK_FILE: &str = ".annexmesh-store-check";

/// Runs the check on a blocking thread, never more than one at a time.
#[derive(Debug, Clone)]
pub struct StoreChecker {
    dir: PathBuf,
    running: Arc<AtomicBool>,
}

impl StoreChecker {
    /// A checker for the store rooted at `root`.
    pub fn new(root: &Path) -> StoreChecker {
        StoreChecker { dir: root.join("annex/tmp"), running: Arc::default() }
    }

    /// Ok when the store is writable, else why not.
    pub async fn check(&self) -> Result<(), String> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(format!("an earlier check of {} has not finished", self.dir.display()));
        }
        let (dir, running) = (self.dir.clone(), self.running.clone());
        let job = tokio::task::spawn_blocking(move || {
            let r = check_dir(&dir);
            running.store(false, Ordering::Release);
            r
        });
        match tokio::time::timeout(CHECK_TIMEOUT, job).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("the store check failed: {e}")),
            Err(_) => Err(format!(
                "writing a small file in {} took more than {CHECK_TIMEOUT:?}",
                self.dir.display()
            )),
        }
    }
}

/// Creates, writes, fsyncs and deletes a small file in `dir`. Blocking.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let path = dir.join(CHECK_FILE);
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let mut f = std::fs::File::create(&path).map_err(|e| fail("create", e))?;
    f.write_all(b"annexmesh store check\n").map_err(|e| fail("write", e))?;
    f.sync_all().map_err(|e| fail("fsync", e))?;
    drop(f);
    std::fs::remove_file(&path).map_err(|e| fail("delete", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writable_store_passes_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("annex/tmp")).unwrap();
        StoreChecker::new(dir.path()).check().await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("annex/tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_missing_tmp_dir_fails_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let e = StoreChecker::new(dir.path()).check().await.unwrap_err();
        assert!(e.contains("cannot create") && e.contains("annex/tmp"), "{e}");
    }
}
