//! The scale curve: how each operation's latency and each role's memory grow
//! with the number of keys in the location log and the number of agents.
//!
//!     cargo bench --locked --bench scale -- --quick
//!     cargo bench --locked --bench scale -- --keys 10000,1000000,10000000 \
//!         --agents 3,9,27 --agents-at 1000000
//!
//! For every configuration (a key count and an agent count) it loads a
//! synthetic location log of that many keys (each on 3 nodes that are not in
//! the cluster, 3 entries a key) through the store's import path, then starts
//! a real mesh on it (release build, plaintext between the roles, one
//! process per role, warnings-only logs): a coordinator on that store, the
//! agents of one cluster, one gateway. Then, one request at a time:
//!
//! - plan+record: PlanPut then RecordLocations of a new key, as a gateway
//!   does for every PUT (gRPC to the coordinator);
//! - locate: Locate (a whereis) of a random key of the synthetic log;
//! - put: a 100 KiB PUT of new content through the gateway (P2P over HTTP),
//!   stored on the cluster's nodes and recorded before it answers;
//! - checkpresent: CHECKPRESENT through the gateway of a key just PUT;
//! - get: a GET through the gateway of a key just PUT.
//!
//! p50 and p99 of each, and each role's peak resident memory (VmHWM; for
//! the agents the largest). The agents hold only what the timed PUTs store:
//! the synthetic log names nodes outside the cluster, as no agent here can
//! hold millions of real files. Repair is off; the coordinator's git-annex
//! branch writer runs every 5 s (`--branch-interval 5s`, default 1 s), so
//! that its catch-up through the freshly imported log (10,000 changes a
//! pass, none of them the cluster's) weighs less on the measurements.
//!
//! Options (after `--`): `--keys LIST` (default 10000,1000000,10000000),
//! `--agents LIST` (3,9,27) measured at `--agents-at KEYS` (1000000; the
//! first of --keys with --quick), `--ops N` requests of each kind (300),
//! `--store redb|postgres` (redb), `--store-cache MIB` (the coordinator's
//! --store-cache), `--out DIR` (target/scale), `--quick` (10000,100000 keys;
//! 3,9 agents; 100 ops). Writes scale.md, scale.csv, scale.json and, with
//! matplotlib (installed into target/bench-venv when missing), scale.png.
//! The store is under TMPDIR: 10 million keys take about 10 GiB.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/synthetic.rs"]
mod synthetic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use annexmesh::coordinator::store::StoreSpec;
use annexmesh::rpc::{self, coordinator_client::CoordinatorClient};
use common::Mesh;
use sha2::{Digest, Sha256};

const FAKE_NODES: [&str; 3] = [
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
];
const CLIENT: &str = "0b1c3a3e-2b1f-4c53-9d1e-6f7a2f2f0a11";
const OBJECT: usize = 100 * 1024;
const OPS: [&str; 5] = ["plan+record", "locate", "put", "checkpresent", "get"];

struct Opts {
    keys: Vec<u64>,
    agents: Vec<usize>,
    agents_at: u64,
    ops: usize,
    store: String,
    store_cache: Option<String>,
    out: PathBuf,
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',')
        .map(|v| v.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("bad number in {s}")))
        .collect()
}

fn opts() -> Opts {
    let mut o = Opts {
        keys: vec![10_000, 1_000_000, 10_000_000],
        agents: vec![3, 9, 27],
        agents_at: 1_000_000,
        ops: 300,
        store: "redb".into(),
        store_cache: None,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scale"),
    };
    let (mut agents_at, mut ops) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {} // what `cargo bench` passes
            "--quick" => {
                o.keys = vec![10_000, 100_000];
                o.agents = vec![3, 9];
                agents_at = agents_at.or(Some(10_000));
                ops = ops.or(Some(100));
            }
            "--keys" => o.keys = list(&val()),
            "--agents" => o.agents = list(&val()),
            "--agents-at" => agents_at = Some(list(&val())[0]),
            "--ops" => ops = Some(list(&val())[0]),
            "--store" => o.store = val(),
            "--store-cache" => o.store_cache = Some(val()),
            "--out" => o.out = PathBuf::from(val()),
            other => panic!("unknown option {other}: see the top of benches/scale.rs"),
        }
    }
    o.agents_at = agents_at.unwrap_or(o.agents_at);
    o.ops = ops.unwrap_or(o.ops).max(2);
    assert!(["redb", "postgres"].contains(&o.store.as_str()), "--store redb|postgres");
    o
}

/// Deterministic content of the i-th object of a run.
fn object(run: u64, i: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (run << 32) ^ i;
    let mut v = Vec::with_capacity(OBJECT);
    while v.len() < OBJECT {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(OBJECT);
    v
}

fn object_key(data: &[u8]) -> String {
    format!("SHA256E-s{}--{}.bin", data.len(), hex::encode(Sha256::digest(data)))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// VmHWM of `pid`, in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One configuration's figures.
#[derive(serde::Serialize)]
struct Row {
    keys: u64,
    agents: usize,
    /// Operation → (p50, p99) in milliseconds.
    ms: BTreeMap<String, (f64, f64)>,
    coordinator_mib: f64,
    gateway_mib: f64,
    agent_max_mib: f64,
    load_secs: f64,
}

struct Timed(BTreeMap<String, Vec<Duration>>);

impl Timed {
    fn add(&mut self, op: &str, t: Instant) {
        self.0.entry(op.into()).or_default().push(t.elapsed());
    }
}

/// Where each key count's loaded log is kept between configurations.
struct Template {
    dir: tempfile::TempDir,
    load_secs: f64,
    uses_left: usize,
}

fn measure(o: &Opts, keys: u64, agents: usize, template: Option<&mut Template>, run: u64) -> Row {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = None;
    let (store_arg, load_secs) = match template {
        Some(t) => {
            // The last configuration on a log takes it; the others a copy.
            let db = dir.path().join("db");
            std::fs::create_dir_all(&db).unwrap();
            let from = t.dir.path().join(annexmesh::coordinator::store::REDB_FILE);
            let to = db.join(annexmesh::coordinator::store::REDB_FILE);
            t.uses_left -= 1;
            if t.uses_left == 0 {
                std::fs::rename(&from, &to).expect("move the loaded log");
            } else {
                std::fs::copy(&from, &to).expect("copy the loaded log");
            }
            (format!("redb:{}", db.display()), t.load_secs)
        }
        None => {
            let server = common::pg::PgServer::start_durable();
            let url = server.create_database();
            eprintln!("postgres: loading {keys} keys");
            let secs = rt
                .block_on(synthetic::load(&StoreSpec::Postgres(url.clone()), keys, &FAKE_NODES))
                .as_secs_f64();
            pg = Some(server);
            (url, secs)
        }
    };
    let mut args = vec!["--repair-interval", "0", "--branch-interval", "5s"];
    if let Some(c) = &o.store_cache {
        args.extend(["--store-cache", c]);
    }
    eprintln!("{keys} keys, {agents} agents: starting the mesh");
    let mut mesh =
        Mesh::separate_on_store(agents, &args, true, Default::default(), Some(store_arg));
    let cluster = mesh.uuid_of("mesh");
    let url = mesh.url();
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut timed = Timed(BTreeMap::new());

    // The coordinator's API, as a gateway calls it.
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(mesh.coordinator.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect to the coordinator");
        let mut c = CoordinatorClient::new(channel);
        for i in 0..o.ops as u64 {
            let key = synthetic::key(keys + 1_000_000_000 + run * 1_000_000 + i);
            let t = Instant::now();
            synthetic::plan_and_record(&mut c, &cluster, &key).await;
            timed.add("plan+record", t);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ run;
        for _ in 0..o.ops {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = Instant::now();
            let r = c.locate(rpc::LocateRequest { key: synthetic::key(x % keys) }).await.unwrap();
            timed.add("locate", t);
            assert_eq!(r.into_inner().node_uuids.len(), 3, "a synthetic key is on 3 nodes");
        }
    });

    // The gateway's data path, over P2P HTTP.
    let base = format!("{url}/git-annex/{cluster}/v4");
    let mut stored = Vec::new();
    for i in 0..o.ops as u64 {
        let data = object(run, i);
        let key = object_key(&data);
        let t = Instant::now();
        let mut r = http
            .post(&format!("{base}/put?key={key}&clientuuid={CLIENT}"))
            .header("Content-Type", "application/octet-stream")
            .header("X-git-annex-data-length", data.len().to_string())
            .send(&data[..])
            .expect("PUT");
        let body = r.body_mut().read_to_string().unwrap_or_default();
        timed.add("put", t);
        assert!(body.contains(r#""stored":true"#), "PUT failed: {} {body}", r.status());
        stored.push(key);
    }
    for key in &stored {
        let t = Instant::now();
        let mut r = http
            .post(&format!("{base}/checkpresent?key={key}&clientuuid={CLIENT}"))
            .send_empty()
            .expect("CHECKPRESENT");
        let body = r.body_mut().read_to_string().unwrap_or_default();
        timed.add("checkpresent", t);
        assert!(body.contains(r#""present":true"#), "CHECKPRESENT: {} {body}", r.status());
    }
    for key in &stored {
        let t = Instant::now();
        let mut r = http.get(&format!("{base}/key/{key}?clientuuid={CLIENT}")).call().expect("GET");
        let body = r.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap_or_default();
        timed.add("get", t);
        assert_eq!(body.len(), OBJECT, "GET {key}: {}", r.status());
    }

    let peak = |mesh: &mut Mesh, name: &str| peak_mib(mesh.proc(name).pid());
    let coordinator_mib = peak(&mut mesh, "coordinator");
    let gateway_mib = peak(&mut mesh, "gateway");
    let agent_max_mib =
        (1..=agents).map(|i| peak(&mut mesh, &format!("node{i}"))).fold(0.0, f64::max);
    let ms = timed
        .0
        .into_iter()
        .map(|(op, mut v)| {
            v.sort();
            (op, (percentile(&v, 0.5), percentile(&v, 0.99)))
        })
        .collect();
    for p in &mut mesh.procs {
        p.stop();
    }
    drop(pg);
    Row { keys, agents, ms, coordinator_mib, gateway_mib, agent_max_mib, load_secs }
}

fn main() {
    let o = opts();
    std::fs::create_dir_all(&o.out).unwrap();
    // Every configuration: the key sweep at the first agent count, then the
    // agent sweep at --agents-at keys.
    let mut configs: Vec<(u64, usize)> = o.keys.iter().map(|&k| (k, o.agents[0])).collect();
    for &a in &o.agents {
        if !configs.contains(&(o.agents_at, a)) {
            configs.push((o.agents_at, a));
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut templates: BTreeMap<u64, Template> = BTreeMap::new();
    let mut rows = Vec::new();
    let started = Instant::now();
    for (run, &(keys, agents)) in configs.iter().enumerate() {
        let template = (o.store == "redb").then(|| {
            templates.entry(keys).or_insert_with(|| {
                let dir = tempfile::tempdir().unwrap();
                eprintln!("redb: loading {keys} keys on 3 nodes");
                let secs = rt
                    .block_on(synthetic::load(
                        &StoreSpec::Redb(dir.path().into()),
                        keys,
                        &FAKE_NODES,
                    ))
                    .as_secs_f64();
                let uses_left = configs.iter().filter(|c| c.0 == keys).count();
                Template { dir, load_secs: secs, uses_left }
            })
        });
        let row = measure(&o, keys, agents, template, run as u64);
        eprintln!("{}", md_row(&row));
        rows.push(row);
        write(&o, &rows, started.elapsed());
    }
    println!("{}", std::fs::read_to_string(o.out.join("scale.md")).unwrap());
    chart(&o.out);
}

fn md_row(r: &Row) -> String {
    let mut s = format!("| {} | {} |", thousands(r.keys), r.agents);
    for op in OPS {
        let (p50, p99) = r.ms.get(op).copied().unwrap_or_default();
        s += &format!(" {p50:.2} / {p99:.2} |");
    }
    s + &format!(
        " {:.0} | {:.0} | {:.0} | {:.0} s |",
        r.coordinator_mib, r.gateway_mib, r.agent_max_mib, r.load_secs
    )
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// scale.md, scale.csv and scale.json, rewritten after each configuration
/// so that a long run stopped part way still has what it measured.
fn write(o: &Opts, rows: &[Row], took: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "{} store (coordinator --store-cache {} MiB), {} requests of each kind, one at a time; \
         {cores} cores; {:.0} s in all\n\n",
        o.store,
        o.store_cache
            .clone()
            .unwrap_or(annexmesh::coordinator::store::REDB_DEFAULT_CACHE_MIB.to_string()),
        o.ops,
        took.as_secs_f64()
    );
    md += "| keys | agents | plan+record p50 / p99 ms | locate | PUT 100 KiB | CHECKPRESENT | GET \
           100 KiB | coordinator peak MiB | gateway peak MiB | agent peak MiB (max) | load |\n";
    md += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let mut csv =
        String::from("keys,agents,op,p50_ms,p99_ms,coordinator_mib,gateway_mib,agent_max_mib\n");
    for r in rows {
        md += &md_row(r);
        md.push('\n');
        for op in OPS {
            let (p50, p99) = r.ms.get(op).copied().unwrap_or_default();
            csv += &format!(
                "{},{},{op},{p50:.3},{p99:.3},{:.1},{:.1},{:.1}\n",
                r.keys, r.agents, r.coordinator_mib, r.gateway_mib, r.agent_max_mib
            );
        }
    }
    std::fs::write(o.out.join("scale.md"), md).unwrap();
    std::fs::write(o.out.join("scale.csv"), csv).unwrap();
    std::fs::write(o.out.join("scale.json"), serde_json::to_string_pretty(rows).unwrap()).unwrap();
}

/// scale.png from scale.json with matplotlib, installed into
/// target/bench-venv when missing (as tests/bench/run does); skipped with a
/// note when that fails.
fn chart(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/bench-venv");
    let py = venv.join("bin/python");
    let has = |py: &Path| {
        std::process::Command::new(py)
            .args(["-c", "import matplotlib"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&py) {
        eprintln!("installing matplotlib into {}", venv.display());
        let _ = std::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
        let _ = std::process::Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"])
            .status();
        if !has(&py) {
            eprintln!("no matplotlib: no chart");
            return;
        }
    }
    let ok = std::process::Command::new(&py)
        .arg(root.join("benches/scale_chart.py"))
        .arg(out.join("scale.json"))
        .arg(out.join("scale.png"))
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        println!("chart: {}", out.join("scale.png").display());
    }
}
