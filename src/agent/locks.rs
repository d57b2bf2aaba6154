//! Content locks and the one-upload-per-key rule.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::p2p::key::Key;

use super::store::Store;

/// Shared locks on content. A remove holds the table while it checks and
/// deletes, so a lock is either taken before the remove looks (and blocks it)
/// or after it finished (and then finds the content gone).
///
/// Each lock holds a stream and a task for as long as its holder keeps it,
/// so their number is capped ([`DEFAULT_MAX_LOCKS`], `--max-locks`).
#[derive(Clone)]
pub struct ContentLocks {
    table: Arc<tokio::sync::Mutex<HashMap<String, usize>>>,
    /// Locks held, on all keys.
    held: Arc<AtomicUsize>,
    max: usize,
}

/// Default cap on the content locks an agent holds at once.
pub const DEFAULT_MAX_LOCKS: usize = 4096;

impl Default for ContentLocks {
    fn default() -> Self {
        ContentLocks::with_max(DEFAULT_MAX_LOCKS)
    }
}

pub struct LockGuard {
    table: Arc<tokio::sync::Mutex<HashMap<String, usize>>>,
    held: Arc<AtomicUsize>,
    key: String,
}

impl ContentLocks {
    /// A table holding at most `max` locks at once.
    pub fn with_max(max: usize) -> ContentLocks {
        ContentLocks { table: Arc::default(), held: Arc::default(), max: max.max(1) }
    }

    /// A lock on `key`, or None when the node holds as many as it may.
    pub async fn lock(&self, key: &Key) -> Option<LockGuard> {
        let max = self.max;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()?;
        let key = key.to_string();
        *self.table.lock().await.entry(key.clone()).or_insert(0) += 1;
        Some(LockGuard { table: self.table.clone(), held: self.held.clone(), key })
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
        self.held.fetch_sub(1, Ordering::AcqRel);
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

    #[tokio::test]
    async fn locks_are_capped_in_all_and_given_back() {
        let locks = ContentLocks::with_max(2);
        let (a, b): (Key, Key) = ("WORM-s1--a".parse().unwrap(), "WORM-s1--b".parse().unwrap());
        let first = locks.lock(&a).await.unwrap();
        let _second = locks.lock(&b).await.unwrap();
        assert!(locks.lock(&a).await.is_none(), "a third lock is refused");
        drop(first);
        assert!(locks.lock(&a).await.is_some(), "a released lock frees its place");
    }
}
