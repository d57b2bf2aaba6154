//! Content locks and the one-upload-per-key rule.

use std::collections::{HashMap, HashSet};
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

/// Keys with an upload in progress on this node.
#[derive(Default, Clone)]
pub struct Uploads {
    keys: Arc<Mutex<HashSet<String>>>,
}

pub struct UploadGuard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Uploads {
    /// None when another upload of the key is under way.
    pub fn begin(&self, key: &Key) -> Option<UploadGuard> {
        let key = key.to_string();
        if !self.keys.lock().unwrap().insert(key.clone()) {
            return None;
        }
        Some(UploadGuard { keys: self.keys.clone(), key })
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.keys.lock().unwrap().remove(&self.key);
    }
}
