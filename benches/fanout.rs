//! Streams one large key through a 3-way fan-out PUT and prints the gateway's
//! throughput and peak memory, beside git-annex's own `git annex p2phttp`
//! receiving the same upload into one repository on the same machine.
//!
//!     cargo bench --locked --bench fanout
//!
//! ANNEXMESH_BENCH_MB (default 2048) sets the size, ANNEXMESH_BENCH_ROUNDS
//! (default 3) the rounds; medians are printed. Needs the pinned git-annex
//! (scripts/test installs it into .tools/venv).
//!
//! The stores live under TMPDIR: on a disk, three copies are written for
//! every byte sent, so the disk's write rate bounds the fan-out; with
//! `TMPDIR=/dev/shm` the numbers are the proxy's own.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Client, Mesh};
use sha2::{Digest, Sha256};

const CLIENT: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";

/// Deterministic pseudo-random content, generated as it is read.
struct Content {
    left: u64,
    x: u64,
}

impl Content {
    fn new(len: u64) -> Content {
        Content { left: len, x: 0x9e37_79b9_7f4a_7c15 }
    }
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize & !7;
        let n = if n == 0 { (buf.len() as u64).min(self.left) as usize } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            chunk.copy_from_slice(&self.x.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn key_of(len: u64) -> String {
    let mut h = Sha256::new();
    let mut c = Content::new(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("SHA256E-s{len}--{}.bin", hex::encode(h.finalize()))
}

/// One PUT of the whole content; returns seconds.
fn put(base: &str, repo: &str, key: &str, len: u64) -> f64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3600)))
        .build()
        .into();
    let url = format!("{base}/git-annex/{repo}/v4/put?key={key}&clientuuid={CLIENT}");
    let mut content = Content::new(len);
    let started = Instant::now();
    let mut r = agent
        .post(&url)
        .header("Content-Type", "application/octet-stream")
        .header("X-git-annex-data-length", len.to_string())
        .send(ureq::SendBody::from_reader(&mut content))
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    assert!(body.contains(r#""stored":true"#), "PUT failed: {} {body}", r.status());
    secs
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let mb = env_num("ANNEXMESH_BENCH_MB", 2048);
    let rounds = env_num("ANNEXMESH_BENCH_ROUNDS", 3).max(1);
    let len = mb * 1024 * 1024;
    let key = key_of(len);
    let mib = len as f64 / (1024.0 * 1024.0);
    println!("fan-out PUT of {mb} MiB ({key}), {rounds} round(s)");

    let mut mesh_secs = Vec::new();
    let mut mesh_rss = Vec::new();
    for round in 1..=rounds {
        let mut mesh = Mesh::separate(3);
        let cluster = mesh.uuid_of("mesh");
        let secs = put(&mesh.url(), &cluster, &key, len);
        for s in mesh.node_stores() {
            assert_eq!(
                common::objects_named(&s, &key).len(),
                1,
                "{} lacks the object",
                s.display()
            );
        }
        let rss = peak_rss_mib(mesh.proc("gateway").pid());
        println!(
            "  annexmesh 3-way round {round}: {secs:.2} s, {:.0} MiB/s, gateway peak RSS {rss:.1} MiB",
            mib / secs
        );
        mesh_secs.push(secs);
        mesh_rss.push(rss);
    }

    let mut ref_secs = Vec::new();
    let mut ref_rss = Vec::new();
    for round in 1..=rounds {
        let server = Client::new_bare();
        let (p2phttp, port) = server.serve_p2phttp(&["--wideopen", "-J2"], server.path());
        let uuid = server.ok(&["git", "config", "annex.uuid"]);
        let secs = put(&format!("http://127.0.0.1:{port}"), uuid.trim(), &key, len);
        let rss = peak_rss_mib(p2phttp.pid());
        println!(
            "  git-annex p2phttp (1 repo) round {round}: {secs:.2} s, {:.0} MiB/s, peak RSS {rss:.1} MiB",
            mib / secs
        );
        ref_secs.push(secs);
        ref_rss.push(rss);
    }

    let (ms, rs) = (median(mesh_secs), median(ref_secs));
    let (mr, rr) = (median(mesh_rss), median(ref_rss));
    println!();
    println!("median                         throughput   peak RSS");
    println!("annexmesh gateway, 3 nodes     {:>7.0} MiB/s {:>7.1} MiB", mib / ms, mr);
    println!("git annex p2phttp, 1 repo      {:>7.0} MiB/s {:>7.1} MiB", mib / rs, rr);
    println!("ratio annexmesh / git-annex    {:>7.2}x      {:>7.2}x", rs / ms, mr / rr);
    println!("(annexmesh writes 3 copies: {:.0} MiB/s stored in all)", 3.0 * mib / ms);
}
