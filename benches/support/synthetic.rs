//! The synthetic location log the store and scale benchmarks load: real
//! SHA256E keys of small files, each present on the same few nodes,
//! written through the store's import path (as `admin migrate-store`
//! writes) a page at a time.

use std::time::{Duration, Instant};

use annexmesh::coordinator::store::{LocationEntry, StampedChange, Store, StoreSpec, system_clock};
use sha2::{Digest, Sha256};

/// Location entries written per import call.
const PAGE: u64 = 20_000;

/// The n-th synthetic key: a real SHA256E key of a small file.
pub fn key(n: u64) -> String {
    let d = Sha256::digest(n.to_le_bytes());
    format!("SHA256E-s{}--{}", 1000 + n % 100_000, hex::encode(d))
}

/// Loads keys 0..`keys`, each present on every one of `nodes`; returns how
/// long it took.
pub async fn load(spec: &StoreSpec, keys: u64, nodes: &[&str]) -> Duration {
    let store = Store::connect(spec, system_clock()).await.expect("open the store");
    let t = Instant::now();
    let per_page = (PAGE / nodes.len() as u64).max(1);
    let mut stamp = 1_000_000_000_000u64;
    let mut n = 0;
    while n < keys {
        let end = (n + per_page).min(keys);
        let mut page = Vec::with_capacity(((end - n) as usize) * nodes.len());
        for k in n..end {
            let key = key(k);
            for node in nodes {
                stamp += 1;
                page.push(StampedChange {
                    key: key.clone(),
                    entry: LocationEntry {
                        node_uuid: node.to_string(),
                        present: true,
                        changed_unix_ms: stamp,
                    },
                });
            }
        }
        store.backend().import_locations(page).await.expect("import");
        n = end;
        if n % 1_000_000 < per_page {
            eprintln!("  loaded {n} keys in {:.0}s", t.elapsed().as_secs_f64());
        }
    }
    t.elapsed()
}
