//! The scrubber: re-verifies checksum objects at rest, at a bounded rate,
//! one full pass per interval at most, so that a copy that rotted on disk is
//! quarantined and struck from the location log before anyone relies on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::integrity::{Integrity, VERIFY_CHUNK};
use super::store::Store;
use crate::p2p::key::Key;
use crate::p2p::verify::Verifier;

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub objects: u64,
    pub bytes: u64,
    pub bad: u64,
    /// The keys whose copy this pass quarantined.
    pub bad_keys: Vec<String>,
}

/// Paces reads to at most `rate` bytes per second; an infinite rate does
/// not pace at all.
struct Pace {
    rate: f64,
    start: Instant,
    bytes: u64,
}

impl Pace {
    async fn add(&mut self, n: u64) {
        self.bytes += n;
        if !self.rate.is_finite() {
            return;
        }
        let due = self.start + Duration::from_secs_f64(self.bytes as f64 / self.rate);
        tokio::time::sleep_until(due).await;
    }
}

/// Runs passes forever: each starts at most once per `interval`. `mb_per_s`
/// is in MB/s (10^6 bytes) and must be positive.
pub async fn run(
    store: Store,
    integrity: Integrity,
    mb_per_s: f64,
    interval: Duration,
    metrics: std::sync::Arc<super::metrics::AgentMetrics>,
) {
    loop {
        let started = Instant::now();
        let pass = scrub_pass(&store, &integrity, mb_per_s * 1e6).await;
        metrics.scrubbed(&pass);
        info!(objects = pass.objects, bytes = pass.bytes, bad = pass.bad,
            took = ?started.elapsed(), "scrub pass done");
        tokio::time::sleep_until(started + interval).await;
    }
}

/// Verifies every checksum object once, reading at most `rate` bytes per
/// second (`f64::INFINITY`: as fast as the disk allows).
pub async fn scrub_pass(store: &Store, integrity: &Integrity, rate: f64) -> Pass {
    let mut walk = Some(Walk::new(store.root().join("annex/objects")));
    let mut pace = Pace { rate, start: Instant::now(), bytes: 0 };
    let mut pass = Pass::default();
    loop {
        let mut w = walk.take().expect("the walk is put back after every batch");
        let (w, files) = tokio::task::spawn_blocking(move || {
            let files = w.next(WALK_BATCH);
            (w, files)
        })
        .await
        .expect("scrub walk panicked");
        walk = Some(w);
        if files.is_empty() {
            return pass;
        }
        scrub_files(files, integrity, &mut pace, &mut pass).await;
    }
}

/// Object files a pass takes from its walk at a time.
const WALK_BATCH: usize = 1024;

/// Verifies `files` into `pass`.
async fn scrub_files(files: Vec<PathBuf>, integrity: &Integrity, pace: &mut Pace, pass: &mut Pass) {
    for path in files {
        let Some(key) = path.file_name().and_then(|n| n.to_str()?.parse::<Key>().ok()) else {
            continue;
        };
        let Some(verifier) = Verifier::for_key(&key) else { continue };
        match verify_paced(&path, verifier, pace).await {
            Ok(None) => {} // gone meanwhile (removed)
            Ok(Some((true, meta))) => {
                pass.objects += 1;
                pass.bytes += meta.len();
                integrity.record_verified(&key, &meta);
            }
            Ok(Some((false, meta))) => {
                pass.objects += 1;
                pass.bytes += meta.len();
                // Only the copy that was read goes, not one stored since.
                let quarantined = integrity.quarantine(&key, &meta).await;
                if let Err(e) = &quarantined {
                    warn!(%key, error = %e, "cannot quarantine the corrupt copy");
                }
                // Ok(None): gone or replaced since it was read.
                if !matches!(quarantined, Ok(None)) {
                    pass.bad += 1;
                    pass.bad_keys.push(key.to_string());
                }
            }
            Err(e) => warn!(path = %path.display(), error = %e, "scrub cannot read object"),
        }
    }
}

/// Reads the object in chunks on blocking threads, pausing between them to
/// keep to the pace; whether it matches its key, and its metadata as opened.
async fn verify_paced(
    path: &Path,
    mut verifier: Verifier,
    pace: &mut Pace,
) -> std::io::Result<Option<(bool, std::fs::Metadata)>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let mut file = Some(file);
    loop {
        let mut f = file.take().expect("the file is put back after every read");
        let (f, read) = tokio::task::spawn_blocking(move || {
            let read = super::service::read_chunk(&mut f, VERIFY_CHUNK);
            (f, read)
        })
        .await
        .expect("scrub read panicked");
        file = Some(f);
        let buf = read?;
        if buf.is_empty() {
            return Ok(Some((verifier.finish(), meta)));
        }
        verifier.update(&buf);
        pace.add(buf.len() as u64).await;
    }
}

/// The files under a directory, read a directory at a time: a pass holds
/// the paths of one batch and of the directories still to visit, not of
/// every object on the node. Files come in name order within a directory,
/// directories in name order.
struct Walk {
    /// Directories still to read, the next on top.
    stack: Vec<PathBuf>,
}

impl Walk {
    fn new(dir: PathBuf) -> Walk {
        Walk { stack: vec![dir] }
    }

    /// At least `n` more files (all of the last directory read), or fewer
    /// at the end; empty when done. Blocking.
    fn next(&mut self, n: usize) -> Vec<PathBuf> {
        let mut found = Vec::new();
        while found.len() < n {
            let Some(d) = self.stack.pop() else { break };
            let (mut dirs, mut files) = (Vec::new(), Vec::new());
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(e.path()),
                    Ok(t) if t.is_file() => files.push(e.path()),
                    _ => {}
                }
            }
            files.sort();
            found.extend(files);
            dirs.sort_by(|a, b| b.cmp(a));
            self.stack.extend(dirs);
        }
        found
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_walk_yields_every_file_once_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut want = Vec::new();
        for a in ["b", "a", "c"] {
            for b in ["y", "x"] {
                for f in ["2", "1", "3"] {
                    let d = dir.path().join(a).join(b);
                    std::fs::create_dir_all(&d).unwrap();
                    std::fs::write(d.join(f), b"").unwrap();
                    want.push(d.join(f));
                }
            }
        }
        want.sort();
        let mut walk = Walk::new(dir.path().to_path_buf());
        let mut got = Vec::new();
        for _ in 0..100 {
            let batch = walk.next(2);
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 3, "one directory's files past the batch at most");
            got.extend(batch);
        }
        assert_eq!(got, want, "every file once, in name order");
        assert!(walk.stack.is_empty());
    }

    /// Stores `stored` as the object of `content`'s SHA256E key (`stored`
    /// differing from `content` makes a corrupt copy); the key.
    pub(crate) fn put_object(store: &Store, content: &[u8], stored: &[u8]) -> Key {
        let key: Key =
            format!("SHA256E-s{}--{}", content.len(), hex::encode(Sha256::digest(content)))
                .parse()
                .unwrap();
        let p = store.object_path(&key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, stored).unwrap();
        key
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_quarantines_rotten_objects_and_stamps_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let integrity = Integrity::new(store.clone(), "u".into(), "n1".into(), None);
        let good = put_object(&store, b"good content", b"good content");
        let bad = put_object(&store, b"bad content", b"bad cOntent");
        let worm: Key = "WORM-s3--unverifiable".parse().unwrap();
        let p = store.object_path(&worm);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"xyz").unwrap();

        let pass = scrub_pass(&store, &integrity, 1e6).await;
        assert_eq!(pass, Pass { objects: 2, bytes: 23, bad: 1, bad_keys: vec![bad.to_string()] });
        assert!(!store.object_path(&bad).exists());
        assert!(store.bad_dir().join(bad.to_string()).exists());
        let m = std::fs::metadata(store.object_path(&good)).unwrap();
        assert!(integrity.is_verified(&good, &m));
        assert!(store.object_path(&worm).exists(), "WORM content cannot be checked; left alone");
    }
}
