//! The coordinator's store at scale, for both backends: a synthetic location
//! log of N keys on 3 nodes, then a real coordinator process on it, asked
//! as gateways ask it.
//!
//!     cargo bench --locked --bench store
//!
//! Prints, per store: the load time, PUT planning plus location recording
//! (PlanPut then RecordLocations, as a gateway does for every PUT) per second
//! with 16 concurrent clients, `whereis` (Locate) latency p50/p99 of existing
//! keys, the coordinator's resident memory (now and peak) and the database's
//! size. ANNEXMESH_BENCH_KEYS (default 10000000) sets N,
//! ANNEXMESH_BENCH_SECS (default 20) each workload's length, and
//! ANNEXMESH_BENCH_STORES (default "redb postgres") the stores, and
//! ANNEXMESH_BENCH_STORE_CACHE the coordinator's `--store-cache` (MiB; its
//! default when unset). PostgreSQL is
//! a server the harness starts (as the tests do) but with PostgreSQL's
//! durable defaults (fsync, synchronous commit and full page writes on), as
//! redb commits durably too. The coordinator logs warnings only: a debug log
//! of every request would be measured too. The database size is redb's file,
//! or PostgreSQL's `pg_database_size` (tables and indexes, not the WAL).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/synthetic.rs"]
mod synthetic;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annexmesh::coordinator::store::StoreSpec;
use annexmesh::rpc::{self, coordinator_client::CoordinatorClient};
use common::pg::PgServer;
use common::{free_port, wait_until};

const NODES: [&str; 3] = [
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
];
const CLIENTS: usize = 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// VmRSS and VmHWM of `pid`, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The coordinator under measurement, started here with its own log level
/// (the harness's `Proc` logs at debug); stopped by its PID.
struct Coordinator(std::process::Child);

impl Coordinator {
    fn spawn(cmd: &mut std::process::Command, log: &std::path::Path) -> Coordinator {
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the coordinator");
        Coordinator(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Result {
    store: &'static str,
    load: Duration,
    rate: f64,
    whereis_p50: Duration,
    whereis_p99: Duration,
    rss: (u64, u64),
    size_mib: u64,
}

async fn measure(
    name: &'static str,
    spec: StoreSpec,
    keys: u64,
    secs: u64,
    size: impl Fn() -> u64,
) -> Result {
    eprintln!("{name}: loading {keys} keys on 3 nodes");
    let load = synthetic::load(&spec, keys, &NODES).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spec_arg = match &spec {
        StoreSpec::Redb(d) => format!("redb:{}", d.display()),
        StoreSpec::Postgres(u) => u.clone(),
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_annexmesh"));
    cmd.args(["coordinator", "--insecure", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", &spec_arg, "--repair-interval", "0"])
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("ANNEXMESH_LOG", "warn");
    if let Ok(mib) = std::env::var("ANNEXMESH_BENCH_STORE_CACHE") {
        cmd.args(["--store-cache", &mib]);
    }
    let mut coordinator = Coordinator::spawn(&mut cmd, &dir.path().join("coordinator.log"));
    let url = format!("http://127.0.0.1:{port}");
    wait_until("the coordinator", Duration::from_secs(120), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut c = CoordinatorClient::new(channel.clone());

    // A cluster and three registered, healthy nodes (heartbeats kept up).
    let admin_token = std::fs::read_to_string(dir.path().join("data").join("admin-token"))
        .expect("the coordinator's admin token");
    let token: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {}", admin_token.trim()).parse().unwrap();
    let mut admin = rpc::admin_client::AdminClient::with_interceptor(
        channel.clone(),
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", token.clone());
            Ok(r)
        },
    );
    let cluster = admin
        .create_cluster(rpc::CreateClusterRequest { name: "bench".into() })
        .await
        .unwrap()
        .into_inner()
        .uuid;
    for (i, uuid) in NODES.iter().enumerate() {
        c.register(rpc::RegisterRequest {
            uuid: uuid.to_string(),
            name: format!("node{}", i + 1),
            cluster: "bench".into(),
            address: format!("http://127.0.0.1:{}", 1 + i),
            boot_id: "bench".into(),
        })
        .await
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let beats = {
        let (mut c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for uuid in NODES {
                    let _ = c
                        .heartbeat(rpc::HeartbeatRequest {
                            uuid: uuid.to_string(),
                            boot_id: "bench".into(),
                            free_bytes: 1 << 40,
                            writable: true,
                            store_checked: true,
                            ..Default::default()
                        })
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // PUT planning plus location recording, 16 clients at once.
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for w in 0..CLIENTS as u64 {
        let (mut c, done, cluster) = (c.clone(), done.clone(), cluster.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = synthetic::key(keys + 1 + w * 1_000_000_000 + n);
                n += 1;
                synthetic::plan_and_record(&mut c, &cluster, &key).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in clients {
        t.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    // whereis of existing keys, one client, spread over the whole log.
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs.min(10));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while Instant::now() < deadline && lat.len() < 20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = Instant::now();
        let r = c
            .locate(rpc::LocateRequest { key: synthetic::key(x % keys) })
            .await
            .unwrap()
            .into_inner();
        lat.push(t.elapsed());
        assert_eq!(r.node_uuids.len(), 3, "every synthetic key is on three nodes");
    }
    lat.sort();
    let rss = rss_mib(coordinator.pid());
    stop.store(true, Ordering::Relaxed);
    let _ = beats.await;
    coordinator.stop();
    Result {
        store: name,
        load,
        rate,
        whereis_p50: percentile(&lat, 0.5),
        whereis_p99: percentile(&lat, 0.99),
        rss,
        size_mib: size() / (1024 * 1024),
    }
}

#[tokio::main]
async fn main() {
    let keys = env_u64("ANNEXMESH_BENCH_KEYS", 10_000_000);
    let secs = env_u64("ANNEXMESH_BENCH_SECS", 20);
    let stores = std::env::var("ANNEXMESH_BENCH_STORES").unwrap_or("redb postgres".into());
    let mut results = Vec::new();
    for s in stores.split_whitespace() {
        match s {
            "redb" => {
                let dir = tempfile::tempdir().unwrap();
                let db = dir.path().join("db");
                let file = db.join(annexmesh::coordinator::store::REDB_FILE);
                let spec = StoreSpec::Redb(db);
                let size = move || std::fs::metadata(&file).map_or(0, |m| m.len());
                results.push(measure("redb", spec, keys, secs, size).await);
            }
            "postgres" => {
                let server = PgServer::start_durable();
                let url = server.create_database();
                let db = url.rsplit('/').next().unwrap().to_string();
                let size = || {
                    let sql = "SELECT pg_database_size(current_database())";
                    server.query(&db, sql).parse().expect("pg_database_size")
                };
                results.push(measure("postgres", StoreSpec::Postgres(url), keys, secs, size).await);
            }
            other => panic!("unknown store {other}"),
        }
        // Each store's figures as soon as they are in: a long run that is
        // stopped later still has them.
        eprintln!("{}", row(results.last().unwrap(), keys));
    }
    println!();
    println!(
        "{keys} keys on 3 nodes; {CLIENTS} clients; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| store | load | PUT plan+record /s | whereis p50 | whereis p99 | coordinator RSS (peak) | database size |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &results {
        println!("{}", row(r, keys));
    }
}

/// A store's line of the table.
fn row(r: &Result, keys: u64) -> String {
    format!(
        "| {} | {:.0} s ({:.0} keys/s) | {:.0} | {:.2} ms | {:.2} ms | {} MiB ({} MiB) | {} MiB |",
        r.store,
        r.load.as_secs_f64(),
        keys as f64 / r.load.as_secs_f64(),
        r.rate,
        r.whereis_p50.as_secs_f64() * 1000.0,
        r.whereis_p99.as_secs_f64() * 1000.0,
        r.rss.0,
        r.rss.1,
        r.size_mib
    )
}
