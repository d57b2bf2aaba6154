//! Verifying stored content, and what happens to a copy found corrupt.
//!
//! A *verified stamp* (inode, size, mtime, ctime) is kept in memory for each
//! object whose content was last found to match its key: on upload commit,
//! after a GET that verified it, and by the scrubber. An object whose stat no
//! longer matches its stamp is verified in full before it is served. Stamps
//! are lost on restart, which costs one extra read per object.
//!
//! The stamps are a cache of at most `--verified-cache` entries (the least
//! recently used go first), so that an agent's memory does not grow with the
//! number of objects it holds. A stamp that was evicted costs what a restart
//! does: the object is verified again before it is trusted.
//!
//! A corrupt copy is moved to `annex/bad/` (never deleted), counted, and this
//! node is struck from the location log, so no one is told it holds the key.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::store::{Store, StoreError};
use crate::p2p::key::Key;
use crate::p2p::verify::Verifier;
use crate::rpc;

/// How much a verification reads at a time.
pub const VERIFY_CHUNK: usize = 1024 * 1024;

/// What identifies one state of an object file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    pub fn of(m: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Default cap on the verified stamps an agent keeps: about 200 bytes each
/// (the key, the stamp and the map's own), so about 20 MiB.
pub const DEFAULT_VERIFIED_CACHE: usize = 100_000;

/// Verified stamps in two generations: lookups and inserts go to `young`;
/// when it is half the cap it becomes `old` and the previous `old` is
/// dropped. A stamp found in `old` moves back to `young`, so what is used
/// stays and at most `cap` entries are kept: a least-recently-used cache
/// at the cost of one map swap per `cap / 2` inserts.
#[derive(Debug)]
struct Stamps {
    young: HashMap<String, Stamp>,
    old: HashMap<String, Stamp>,
    cap: usize,
}

impl Stamps {
    fn with_cap(cap: usize) -> Stamps {
        Stamps { young: HashMap::new(), old: HashMap::new(), cap }
    }

    fn get(&mut self, key: &str) -> Option<Stamp> {
        if let Some(s) = self.young.get(key) {
            return Some(*s);
        }
        let s = self.old.remove(key)?;
        self.insert(key.to_string(), s);
        Some(s)
    }

    fn insert(&mut self, key: String, stamp: Stamp) {
        if self.cap == 0 {
            return;
        }
        self.old.remove(&key);
        self.young.insert(key, stamp);
        if self.young.len() >= self.cap.div_ceil(2) {
            self.old = std::mem::take(&mut self.young);
        }
    }

    fn remove(&mut self, key: &str) {
        self.young.remove(key);
        self.old.remove(key);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Verified stamps, quarantine and striking, shared by GETs, uploads and
/// the scrubber.
#[derive(Clone)]
pub struct Integrity {
    store: Store,
    node_uuid: String,
    node_name: String,
    stamps: Arc<Mutex<Stamps>>,
    quarantined: Arc<AtomicU64>,
    coordinator: Option<rpc::CoordinatorApi>,
}

impl Integrity {
    pub fn new(
        store: Store,
        node_uuid: String,
        node_name: String,
        coordinator: Option<rpc::CoordinatorApi>,
    ) -> Integrity {
        Integrity {
            store,
            node_uuid,
            node_name,
            stamps: Arc::new(Mutex::new(Stamps::with_cap(DEFAULT_VERIFIED_CACHE))),
            quarantined: Arc::default(),
            coordinator,
        }
    }

    /// Whether the object, as `m` describes it now, was verified since it
    /// last changed.
    pub fn is_verified(&self, key: &Key, m: &Metadata) -> bool {
        self.stamps.lock().unwrap().get(&key.to_string()) == Some(Stamp::of(m))
    }

    /// Keeps at most `max` verified stamps (0: none, every read verifies);
    /// the ones held now are forgotten.
    pub fn limit_stamps(&self, max: usize) {
        *self.stamps.lock().unwrap() = Stamps::with_cap(max);
    }

    /// Verified stamps held now.
    pub fn stamps_held(&self) -> usize {
        self.stamps.lock().unwrap().len()
    }

    /// Records that the object, as `m` describes it, matches its key.
    pub fn record_verified(&self, key: &Key, m: &Metadata) {
        self.stamps.lock().unwrap().insert(key.to_string(), Stamp::of(m));
    }

    /// Copies quarantined since the agent started.
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// The gRPC status of a GET refused because the copy is corrupt.
    pub fn corrupt_status(&self, key: &Key) -> tonic::Status {
        tonic::Status::data_loss(format!("{}: corrupt copy of {key} quarantined", self.node_name))
    }

    /// Moves the corrupt copy of `key` that was read as `read` out of
    /// `annex/objects`, then strikes this node from the location log. A copy
    /// stored since under the same key (another file) is left alone, and so
    /// is its place in the log. A failed strike is logged only: the copy is
    /// bad either way, and gateways strike nodes that answer DATA_LOSS
    /// themselves.
    pub async fn quarantine(
        &self,
        key: &Key,
        read: &Metadata,
    ) -> Result<Option<PathBuf>, StoreError> {
        let (store, k, read) = (self.store.clone(), key.clone(), read.clone());
        let moved =
            tokio::task::spawn_blocking(move || match std::fs::metadata(store.object_path(&k)) {
                Ok(now) if !same_file(&now, &read) => Err(()),
                _ => Ok(store.quarantine(&k)),
            })
            .await
            .expect("quarantine task panicked");
        let Ok(moved) = moved else {
            info!(%key, node = %self.node_name, "the corrupt copy was replaced meanwhile; kept");
            return Ok(None);
        };
        let moved = moved?;
        self.stamps.lock().unwrap().remove(&key.to_string());
        if let Some(path) = &moved {
            self.quarantined.fetch_add(1, Ordering::Relaxed);
            warn!(%key, node = %self.node_name, path = %path.display(),
                total = self.quarantined(), "corrupt copy quarantined");
        }
        self.strike(key).await;
        Ok(moved)
    }

    async fn strike(&self, key: &Key) {
        let Some(mut c) = self.coordinator.clone() else { return };
        let req = rpc::RecordLocationsRequest {
            changes: vec![rpc::LocationChange {
                key: key.to_string(),
                node_uuid: self.node_uuid.clone(),
                present: false,
            }],
        };
        match c.record_locations(req).await {
            Ok(_) => info!(%key, node = %self.node_name, "struck from the location log"),
            Err(s) => warn!(%key, node = %self.node_name, error = %s.message(),
                "cannot strike the corrupt copy from the location log"),
        }
    }
}

/// Whether two metadata describe the same file (not just the same name).
pub(crate) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.ino() == b.ino() && a.dev() == b.dev()
}

/// Reads `file` from its current position to the end into `verifier`, and
/// says whether the whole content matches the key. Blocking.
pub fn verify_rest(file: &mut std::fs::File, mut verifier: Verifier) -> std::io::Result<bool> {
    use std::io::Read;
    let mut buf = vec![0u8; VERIFY_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(verifier.finish());
        }
        verifier.update(&buf[..n]);
    }
}

/// Hashes the first `len` bytes of `file` (from its start) into `verifier`
/// and leaves the file positioned at `len`. Blocking.
pub fn hash_prefix(
    file: &mut std::fs::File,
    verifier: &mut Verifier,
    len: u64,
) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut buf = vec![0u8; VERIFY_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(VERIFY_CHUNK as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "object shrank while it was read",
            ));
        }
        verifier.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn stamp(n: u64) -> Stamp {
        Stamp { ino: n, size: n, mtime_ns: 0, ctime_ns: 0 }
    }

    #[test]
    fn stamps_stay_within_the_cap_and_keep_what_is_used() {
        let mut s = Stamps::with_cap(10);
        for n in 0..1000u64 {
            s.insert(format!("k{n}"), stamp(n));
            // Used on every round: never evicted.
            assert_eq!(s.get("k0"), Some(stamp(0)));
            assert!(s.len() <= 10, "{} stamps held", s.len());
        }
        assert_eq!(s.get("k999"), Some(stamp(999)), "the newest is kept");
        assert_eq!(s.get("k500"), None, "an old one unused since is gone");
        s.remove("k0");
        assert_eq!(s.get("k0"), None);
        let mut none = Stamps::with_cap(0);
        none.insert("k".into(), stamp(1));
        assert_eq!(none.get("k"), None, "a cap of 0 keeps nothing");
    }

    #[test]
    fn an_evicted_stamp_means_not_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let integrity = Integrity::new(store, "u".into(), "n1".into(), None);
        integrity.limit_stamps(4);
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        let keys: Vec<Key> = (0..20u32)
            .map(|n| format!("SHA256E-s{n}--{}", hex::encode(Sha256::digest(n.to_le_bytes()))))
            .map(|k| k.parse().unwrap())
            .collect();
        for k in &keys {
            integrity.record_verified(k, &m);
        }
        assert!(integrity.stamps_held() <= 4);
        assert!(integrity.is_verified(&keys[19], &m));
        assert!(!integrity.is_verified(&keys[0], &m), "evicted: verified again, not trusted");
    }

    #[tokio::test]
    async fn quarantine_moves_the_copy_aside_and_keeps_earlier_bad_copies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key: Key =
            format!("SHA256E-s3--{}", hex::encode(Sha256::digest(b"abc"))).parse().unwrap();
        let integrity = Integrity::new(store.clone(), "u".into(), "n1".into(), None);
        for (i, content) in [b"abX", b"abY"].iter().enumerate() {
            let p = store.object_path(&key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
            let read = std::fs::metadata(&p).unwrap();
            let moved = integrity.quarantine(&key, &read).await.unwrap().unwrap();
            assert!(!p.exists(), "the copy left annex/objects");
            assert_eq!(std::fs::read(&moved).unwrap(), content.to_vec(), "kept, not deleted");
            assert_eq!(integrity.quarantined(), i as u64 + 1);
        }
        assert!(store.bad_dir().join(key.to_string()).exists());
        assert!(store.bad_dir().join(format!("{key}.1")).exists());
        let read = std::fs::metadata(store.bad_dir().join(key.to_string())).unwrap();
        assert_eq!(integrity.quarantine(&key, &read).await.unwrap(), None, "already gone");
        // A good copy stored since under the key is another file: kept.
        let p = store.object_path(&key);
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(integrity.quarantine(&key, &read).await.unwrap(), None);
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
    }
}
