//! The store's self-check, reported with every heartbeat: can the agent
//! create, write, fsync and delete a small file in `annex/tmp`, where every
//! upload starts? A node whose store fails it is degraded at the coordinator
//! and gets no new content until it passes again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a check may take before the store counts as unwritable: a disk
/// that hangs is no better than one that refuses. Generous, because a
/// loaded disk may take seconds to fsync while it writes back uploads.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The name of the check's file: not a key, so partial expiry leaves it be.
const CHECK_FILE: &str = ".annexmesh-store-check";

/// Runs the check on a blocking thread in the background, never more than
/// one at a time, so a slow disk never holds a heartbeat up.
#[derive(Debug, Clone)]
pub struct StoreChecker {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// When the check in progress started.
    running_since: Option<Instant>,
    /// The last finished check's result.
    last: Option<Result<(), String>>,
}

impl StoreChecker {
    /// A checker for the store rooted at `root`.
    pub fn new(root: &Path) -> StoreChecker {
        StoreChecker { dir: root.join("annex/tmp"), state: Arc::default() }
    }

    /// Starts a check unless one is running, and says what is known now:
    /// the last finished check's result, a failure when the check in
    /// progress has taken longer than `CHECK_TIMEOUT`, or None before the
    /// first check finished. Needs a tokio runtime.
    pub fn poll(&self) -> Option<Result<(), String>> {
        let mut st = self.state.lock().unwrap();
        match st.running_since {
            Some(t) if t.elapsed() > CHECK_TIMEOUT => {
                return Some(Err(format!(
                    "writing a small file in {} has taken more than {CHECK_TIMEOUT:?}",
                    self.dir.display()
                )));
            }
            Some(_) => {}
            None => {
                st.running_since = Some(Instant::now());
                let (dir, state) = (self.dir.clone(), self.state.clone());
                tokio::task::spawn_blocking(move || {
                    let r = check_dir(&dir);
                    let mut st = state.lock().unwrap();
                    st.last = Some(r);
                    st.running_since = None;
                });
            }
        }
        st.last.clone()
    }

    /// Runs one check now and waits for its result (for tests and tools).
    pub async fn check(&self) -> Result<(), String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || check_dir(&dir))
            .await
            .map_err(|e| format!("the store check failed: {e}"))?
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
    async fn polling_reports_the_last_finished_check_without_waiting_for_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("annex/tmp")).unwrap();
        let checker = StoreChecker::new(dir.path());
        assert_eq!(checker.poll(), None, "nothing is known before a check finished");
        let mut known = None;
        for _ in 0..3000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            known = checker.poll();
            if known.is_some() {
                break;
            }
        }
        assert_eq!(known, Some(Ok(())));
        // A check may be writing its probe file there right now: retry.
        let tmp = dir.path().join("annex/tmp");
        for _ in 0..100 {
            if std::fs::remove_dir_all(&tmp).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!tmp.exists());
        // A check that was running when the directory went may fail to
        // delete its file instead; every check after it cannot create one.
        // fsync can be slow on a loaded machine: a generous bound.
        let mut failed = None;
        for _ in 0..3000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if let Some(Err(e)) = checker.poll()
                && e.contains("cannot create")
            {
                failed = Some(e);
                break;
            }
        }
        assert!(failed.is_some(), "the failure is reported");
    }

    #[tokio::test]
    async fn a_missing_tmp_dir_fails_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let e = StoreChecker::new(dir.path()).check().await.unwrap_err();
        assert!(e.contains("cannot create") && e.contains("annex/tmp"), "{e}");
    }
}
