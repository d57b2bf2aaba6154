//! Partial uploads in `annex/tmp` expire: one kept for a resume that never
//! came is removed after a maximum age, and under space pressure the oldest
//! go first. A partial whose upload is under way is never touched: the
//! sweep takes the key's upload slot before it removes anything.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use super::locks::Uploads;
use super::store::Store;
use crate::p2p::key::Key;

/// Free space kept at the least when no threshold is configured.
const MIN_FREE_FLOOR: u64 = 64 * 1024 * 1024;

/// What one sweep found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub removed: usize,
    pub removed_bytes: u64,
    /// Bytes the partials that stay hold.
    pub kept_bytes: u64,
}

struct Partial {
    key: Key,
    path: PathBuf,
    len: u64,
    modified: SystemTime,
}

/// The partial uploads in the store, oldest first. Blocking.
fn list(store: &Store) -> Vec<Partial> {
    let dir = store.root().join("annex/tmp");
    let mut found: Vec<Partial> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let key = e.file_name().to_str()?.parse::<Key>().ok()?;
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            Some(Partial { key, path: e.path(), len: m.len(), modified: m.modified().ok()? })
        })
        .collect();
    found.sort_by_key(|p| p.modified);
    found
}

/// Removes partials older than `max_age`, then, while `free()` is below
/// `min_free`, the oldest of the rest; skips any whose upload is under way.
/// Blocking.
pub fn sweep(
    store: &Store,
    uploads: &Uploads,
    max_age: Duration,
    min_free: u64,
    now: SystemTime,
    free: impl Fn() -> u64,
) -> Sweep {
    let mut report = Sweep::default();
    for p in list(store) {
        let stale = now.duration_since(p.modified).is_ok_and(|age| age > max_age);
        let pressed = !stale && free() < min_free;
        if !(stale || pressed) {
            report.kept_bytes += p.len;
            continue;
        }
        let Some(_slot) = uploads.try_begin(&p.key) else {
            debug!(key = %p.key, "partial is being written; kept");
            report.kept_bytes += p.len;
            continue;
        };
        match std::fs::remove_file(&p.path) {
            Ok(()) => {
                let why = if stale { "older than the maximum age" } else { "space is short" };
                info!(key = %p.key, bytes = p.len, why, "removed a partial upload");
                report.removed += 1;
                report.removed_bytes += p.len;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(key = %p.key, path = %p.path.display(), error = %e, "cannot remove partial");
                report.kept_bytes += p.len;
            }
        }
    }
    report
}

/// The free space below which partials are removed: `configured`, or the
/// larger of 1% of the filesystem and 64 MiB.
pub fn min_free(store: &Store, configured: Option<u64>) -> u64 {
    configured.unwrap_or_else(|| {
        let size = nix::sys::statvfs::statvfs(store.root())
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        (size / 100).max(MIN_FREE_FLOOR)
    })
}

/// Sweeps the partials periodically (often enough for `max_age`, at least
/// every 10 s for space pressure) until the agent stops.
/// `held` is kept at the bytes partials hold after each sweep.
pub async fn expire(
    store: Store,
    uploads: Uploads,
    max_age: Duration,
    min_free: u64,
    held: Arc<AtomicU64>,
) {
    let period = (max_age / 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
    let mut last_kept = None;
    loop {
        tokio::time::sleep(period).await;
        let (s, u) = (store.clone(), uploads.clone());
        let report = tokio::task::spawn_blocking(move || {
            let dir = s.root().join("annex/tmp");
            sweep(&s, &u, max_age, min_free, SystemTime::now(), || super::free_bytes(&dir))
        })
        .await
        .expect("partial sweep panicked");
        held.store(report.kept_bytes, Ordering::Relaxed);
        // The bytes partials hold, logged when they change.
        if last_kept != Some(report.kept_bytes) || report.removed > 0 {
            info!(
                partial_bytes = report.kept_bytes,
                removed = report.removed,
                removed_bytes = report.removed_bytes,
                "partial uploads"
            );
            last_kept = Some(report.kept_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(store: &Store, name: &str, len: usize, age: Duration) -> Key {
        let key: Key = name.parse().unwrap();
        let p = store.partial_path(&key);
        std::fs::write(&p, vec![0u8; len]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        key
    }

    #[tokio::test]
    async fn stale_partials_go_but_not_one_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let uploads = Uploads::default();
        let hour = Duration::from_secs(3600);
        let stale = partial(&store, "WORM-s10--stale", 10, 2 * hour);
        let writing = partial(&store, "WORM-s20--writing", 20, 2 * hour);
        let fresh = partial(&store, "WORM-s30--fresh", 30, Duration::ZERO);
        let _upload = uploads.try_begin(&writing).unwrap();
        let now = SystemTime::now();
        let report = sweep(&store, &uploads, hour, 0, now, || u64::MAX);
        assert_eq!(report, Sweep { removed: 1, removed_bytes: 10, kept_bytes: 50 });
        assert!(!store.partial_path(&stale).exists());
        assert!(store.partial_path(&writing).exists(), "an upload is writing it");
        assert!(store.partial_path(&fresh).exists());
    }

    #[tokio::test]
    async fn under_space_pressure_the_oldest_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let uploads = Uploads::default();
        let min = Duration::from_secs(60);
        let old = partial(&store, "WORM-s10--old", 10, 3 * min);
        let mid = partial(&store, "WORM-s20--mid", 20, 2 * min);
        let new = partial(&store, "WORM-s30--new", 30, min);
        // Free space comes back as partials are removed: 100 + their bytes.
        let tmp = dir.path().join("annex/tmp");
        let free = || {
            let held: u64 = std::fs::read_dir(&tmp)
                .unwrap()
                .flatten()
                .map(|e| e.metadata().unwrap().len())
                .sum();
            100 + (60 - held)
        };
        let report =
            sweep(&store, &uploads, Duration::from_secs(3600), 125, SystemTime::now(), free);
        assert_eq!(report.removed, 2, "{report:?}");
        assert!(!store.partial_path(&old).exists() && !store.partial_path(&mid).exists());
        assert!(store.partial_path(&new).exists(), "enough space once the two oldest went");
    }
}
