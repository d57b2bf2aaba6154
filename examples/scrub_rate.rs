//! Scrub at its configured rate: one pass over a store of checksum objects,
//! paced at `--rate` MB/s and then unpaced, with the rate each achieved.
//!
//!     cargo run --release --locked --example scrub_rate [-- --objects 40 --mib 4 --rate 8]
//!
//! The paced figure shows the limit holding (it should be just under the
//! rate); the unpaced one is what the disk and SHA-256 allow on this
//! machine, and so the most a scrub could take from client traffic.

use std::time::Instant;

use annexmesh::agent::integrity::Integrity;
use annexmesh::agent::scrub::scrub_pass;
use annexmesh::agent::store::Store;
use annexmesh::p2p::key::Key;
use sha2::{Digest, Sha256};

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let (objects, mib, rate) = (arg("--objects", 40.0), arg("--mib", 4.0), arg("--rate", 8.0));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let size = (mib * 1024.0 * 1024.0) as usize;
    for i in 0..objects as usize {
        let data: Vec<u8> = (0..size).map(|j| (j * 31 + i * 7) as u8).collect();
        let key: Key =
            format!("SHA256E-s{size}--{}.bin", hex::encode(Sha256::digest(&data))).parse().unwrap();
        let path = store.object_path(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
    }
    let integrity = Integrity::new(store.clone(), "bench".into(), "bench".into(), None);
    println!("scrub of {objects} objects of {mib} MiB");
    for (label, bytes_per_s) in
        [(format!("paced at {rate} MB/s"), rate * 1e6), ("unpaced".into(), f64::INFINITY)]
    {
        let started = Instant::now();
        let pass = scrub_pass(&store, &integrity, bytes_per_s).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!((pass.objects, pass.bad), (objects as u64, 0));
        println!(
            "{label:>20}: {:.1} MB/s ({} bytes in {secs:.2} s)",
            pass.bytes as f64 / 1e6 / secs,
            pass.bytes
        );
    }
}
