//! Content locks and the one-upload-per-key rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::p2p::key::Key;

use super::store::Store;

/// Shared locks on content. A remove holds the table while it checks and
/// deletes, so a lock is either taken before the remove looks (and blocks it)
/// or after it finished (and then finds the content gone).
#[derive(Default, Clone)]
pub struct ContentLocks {
    table: Arc<tokio::sync::Mutex<HashMap<String, usize>>>,
}

pub struct LockGuard {
    table: Arc<tokio::sync::Mutex<HashMap<String, usize>>>,
    key: String,
}

impl ContentLocks {
    pub async fn lock(&self, key: &Key) -> LockGuard {
        let key = key.to_string();
        *self.table.lock().await.entry(key.clone()).or_insert(0) += 1;
        LockGuard { table: self.table.clone(), key }
    }

    /// Runs `check` and removes the content, unless the content is locked or
    /// `check` refuses. Errors are messages for the client.
    pub async fn remove_unless_locked(
        &self,
        key: &Key,
        check: impl FnOnce() -> Result<(), String>,
        store: &Store,
    ) -> Result<(), String> {
        let table = self.table.lock().await;
        if table.get(&key.to_string()).copied().unwrap_or(0) > 0 {
            return Err(format!("{key} is locked; not removed"));
        }
        check()?;
        store.remove(key).await.map_err(|e| e.to_string())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let table = self.table.clone();
        let key = std::mem::take(&mut self.key);
        let release = async move {
            let mut t = table.lock().await;
            if let Some(n) = t.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    t.remove(&key);
                }
            }
        };
        // Drop cannot await; releasing on the runtime keeps the table's lock
        // async so that removes can hold it across file I/O.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(release);
            }
            Err(_) => futures::executor::block_on(release),
        }
    }
}

/// Uploads in progress on this node, one at a time per key.
///
/// A second upload of a key waits for the first instead of failing: the
/// first is usually the remains of an interrupted transfer whose stream is
/// about to end, and its retry must not fail with "already in progress".
#[derive(Default, Clone)]
pub struct Uploads {
    keys: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

pub struct UploadGuard {
    keys: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    key: String,
    slot: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Uploads {
    /// Waits up to `wait` for other uploads of the key to finish; None if
    /// one is still under way then.
    pub async fn begin(&self, key: &Key, wait: std::time::Duration) -> Option<UploadGuard> {
        let key = key.to_string();
        let slot = self.keys.lock().unwrap().entry(key.clone()).or_default().clone();
        let mut guard =
            UploadGuard { keys: self.keys.clone(), key, slot: slot.clone(), held: None };
        // On timeout the guard is dropped and cleans its slot up.
        guard.held = Some(tokio::time::timeout(wait, slot.lock_owned()).await.ok()?);
        Some(guard)
    }

    /// The key's upload slot if no upload of it is under way: whoever holds
    /// it may touch the key's partial file.
    pub fn try_begin(&self, key: &Key) -> Option<UploadGuard> {
        let key = key.to_string();
        let slot = self.keys.lock().unwrap().entry(key.clone()).or_default().clone();
        let mut guard =
            UploadGuard { keys: self.keys.clone(), key, slot: slot.clone(), held: None };
        guard.held = Some(slot.try_lock_owned().ok()?);
        Some(guard)
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.held.take();
        let mut keys = self.keys.lock().unwrap();
        // The map and this guard hold the last references: nobody waits.
        if Arc::strong_count(&self.slot) == 2 {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_upload_waits_for_the_first() {
        let uploads = Uploads::default();
        let key: Key = "WORM-s1--k".parse().unwrap();
        let first = uploads.begin(&key, Duration::ZERO).await.unwrap();
        assert!(uploads.begin(&key, Duration::from_millis(10)).await.is_none());
        let u = uploads.clone();
        let k = key.clone();
        let second =
            tokio::spawn(async move { u.begin(&k, Duration::from_secs(10)).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(second.await.unwrap());
        assert!(uploads.keys.lock().unwrap().is_empty(), "slots are cleaned up");
    }
}
