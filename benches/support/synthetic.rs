//! The synthetic location log the store and scale benchmarks load: real
//! SHA256E keys of small files, each present on the same few nodes,
//! written through the store's import path (as `admin migrate-store`
//! writes) a page at a time.

use std::time::{Duration, Instant};

use annexmesh::coordinator::store::{LocationEntry, StampedChange, Store, StoreSpec, system_clock};
use annexmesh::rpc::{self, coordinator_client::CoordinatorClient};
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

/// One PUT's coordinator work: a placement plan for `key` in `cluster`,
/// then its copies recorded present on every planned node.
pub async fn plan_and_record(
    c: &mut CoordinatorClient<tonic::transport::Channel>,
    cluster: &str,
    key: &str,
) {
    let plan = c
        .plan_put(rpc::PlanPutRequest {
            cluster_uuid: cluster.to_string(),
            key: key.to_string(),
            associated_file: String::new(),
        })
        .await
        .expect("PlanPut")
        .into_inner();
    assert!(!plan.node_uuids.is_empty(), "no node planned");
    let changes = plan
        .node_uuids
        .into_iter()
        .map(|node_uuid| rpc::LocationChange { key: key.to_string(), node_uuid, present: true })
        .collect();
    c.record_locations(rpc::RecordLocationsRequest { changes }).await.expect("RecordLocations");
}
