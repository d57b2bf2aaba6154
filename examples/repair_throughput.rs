//! Repair throughput between two agents: the Replicate RPC, agent to agent
//! over loopback, as the coordinator's repair drives it.
//!
//!     cargo run --release --locked --example repair_throughput [-- --objects 20 --mib 10]
//!
//! Starts two agents in this process (they look for a coordinator that is
//! not there, which does not stop them serving), fills the first with
//! `--objects` objects of `--mib` MiB, asks the second to replicate each
//! from the first, one at a time and then four at a time into a fresh
//! store, and prints MiB/s for each. Every copy is hash-verified and
//! fsynced by the receiver, as repair's copies are.

use std::time::Instant;

use annexmesh::agent::{self, AgentConfig};
use annexmesh::rpc::{self, ReplicateOutcome, agent_client::AgentClient};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

/// Starts an agent on a loopback port over `store`; its URL.
async fn start_agent(name: &str, store: std::path::PathBuf, stop: &CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cfg = AgentConfig {
        coordinator: "http://127.0.0.1:1".into(),
        failover: Default::default(),
        listen: listener.local_addr().unwrap(),
        advertise: None,
        store,
        name: name.into(),
        cluster: "bench".into(),
        metrics: None,
        // No scrubbing: it would compete with the copies being measured.
        safety: agent::config::SafetyConfig { scrub_rate: 0.0, ..Default::default() },
        grpc: Default::default(),
        // A plaintext baseline on loopback.
        tls: annexmesh::pki::MemberTlsArgs { insecure: true, ..Default::default() },
    };
    tokio::spawn(agent::serve(cfg, listener, stop.clone()));
    url
}

/// Writes `n` objects of `size` bytes into the store at `root`; their keys.
fn fill(root: &std::path::Path, n: usize, size: usize) -> Vec<String> {
    let store = agent::store::Store::open(root).unwrap();
    (0..n)
        .map(|i| {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
            let data: Vec<u8> = (0..size / 8)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()
                })
                .collect();
            let key = format!("SHA256E-s{}--{}", data.len(), hex::encode(Sha256::digest(&data)));
            let path = store.object_path(&key.parse().unwrap());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &data).unwrap();
            key
        })
        .collect()
}

/// Replicates every key to `target` from `source`, `parallel` at a time;
/// MiB/s.
async fn run(target: &str, source: &str, keys: &[String], parallel: usize, mib: usize) -> f64 {
    use futures::StreamExt;
    let client = AgentClient::new(rpc::endpoint(target).unwrap().connect_lazy());
    let started = Instant::now();
    futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let mut c = client.clone();
            let req = rpc::ReplicateRequest {
                key,
                sources: vec![source.to_string()],
                source_uuids: Vec::new(),
            };
            async move {
                let r = c.replicate(req).await.expect("replicate").into_inner();
                assert_eq!(r.outcome(), ReplicateOutcome::Stored, "{}", r.error);
            }
        })
        .buffer_unordered(parallel)
        .collect::<Vec<()>>()
        .await;
    (keys.len() * mib) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let (objects, mib) = (arg("--objects", 20), arg("--mib", 10));
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let keys = fill(&dir.path().join("source"), objects, mib * 1024 * 1024);
    let source = start_agent("source", dir.path().join("source"), &stop).await;
    for parallel in [1, 4] {
        let target = start_agent(
            &format!("target{parallel}"),
            dir.path().join(format!("target{parallel}")),
            &stop,
        )
        .await;
        let rate = run(&target, &source, &keys, parallel, mib).await;
        println!("{objects} x {mib} MiB, {parallel} at a time: {rate:.0} MiB/s");
    }
    stop.cancel();
}
