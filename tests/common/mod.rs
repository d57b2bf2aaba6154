//! Test harness: runs the real annexmesh binary's roles as separate processes
//! on loopback ports chosen at run time, and drives the real git-annex.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod annex_cluster;
pub mod hosts;
pub mod netns;
pub mod pg;

pub const GIT_ANNEX_VERSION: &str = "10.20261026";

/// The directory holding the pinned git-annex, or a panic that says how to
/// get it: these tests never skip silently.
pub fn git_annex_bin_dir() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin");
    let mut dirs = vec![local];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for d in dirs {
        let bin = d.join("git-annex");
        if bin.is_file() {
            let out = Command::new(&bin).arg("version").arg("--raw").output();
            if let Ok(o) = out
                && String::from_utf8_lossy(&o.stdout).starts_with(GIT_ANNEX_VERSION)
            {
                return d;
            }
        }
    }
    panic!(
        "git-annex {GIT_ANNEX_VERSION} was not found. Run the tests with `scripts/test`, which installs it, \
         or install it yourself with `pip install git-annex=={GIT_ANNEX_VERSION}` and put it on PATH."
    );
}

pub fn annexmesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_annexmesh"))
}

/// A port free on 127.0.0.1, from below the kernel's ephemeral range
/// (32768 up): a port the kernel hands out for `bind(0)` may be taken as
/// the source port of an outgoing connection before the server binds it.
/// Each test process walks its own slice of 20000..32000 (by PID), so
/// concurrent tests and test binaries rarely try the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(613)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (BASE + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process this test started; stopped by its PID when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Proc {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).unwrap();
        let child = cmd
            // A benchmark logs less (ANNEXMESH_BENCH_LOG, e.g. warn): a
            // debug line per request would be measured too.
            .env(
                "ANNEXMESH_LOG",
                std::env::var("ANNEXMESH_BENCH_LOG").unwrap_or("info,annexmesh=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name: name.to_string(), child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then how long the process took to exit, or None when it
    /// was still running after `limit` (it is then killed).
    pub fn stop_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        while started.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Resident memory (kB) and open descriptors of a process.
pub fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (rss, fds)
}

/// Runs `cmd` (stdout discarded) until it exits, at most 60 s: whether it
/// succeeded, and its stderr.
pub fn run_to_exit(cmd: &mut Command) -> (bool, String) {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut status = None;
    wait_until("the process to exit", Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let out = child.wait_with_output().unwrap();
    (status.unwrap().success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn http_get(url: &str) -> Option<(u16, String)> {
    http_get_with(url, &[])
}

/// `http_get` with request headers (e.g. `Authorization`).
pub fn http_get_with(url: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.call().ok()?;
    let status = r.status().as_u16();
    Some((status, r.body_mut().read_to_string().unwrap_or_default()))
}

pub fn http_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// An HTTP basic `Authorization` header value for "user:password".
pub fn basic_auth(userinfo: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(userinfo))
}

/// A running mesh: its processes, addresses and state directory.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    /// The gateway's line-protocol listener.
    pub p2p: SocketAddr,
    pub coordinator: String,
    pub procs: Vec<Proc>,
    /// Plaintext between the roles (`--insecure`) rather than mTLS.
    pub insecure: bool,
    /// Where the admin CLI finds the mesh CA and the admin token.
    pub credentials: PathBuf,
    /// Processes that run on a namespaced host, by process name; the others
    /// run here on 127.0.0.1.
    pub sites: std::collections::HashMap<String, Site>,
    /// The coordinators' `--store`: None for the embedded default (see
    /// `test_store`).
    pub store: Option<String>,
}

/// The store the suite runs coordinators on: with ANNEXMESH_TEST_STORE=
/// postgres (scripts/test's second pass), a fresh database for each mesh on
/// the PostgreSQL server the harness starts; else None, the embedded redb.
pub fn test_store() -> Option<String> {
    on_postgres().then(|| pg::PgServer::shared().create_database())
}

/// Whether the suite runs its coordinators on PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var("ANNEXMESH_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("redb") | Ok("") | Err(_) => false,
        Ok(other) => panic!("ANNEXMESH_TEST_STORE={other}: give redb or postgres"),
    }
}

/// `--store URL` when the suite runs on PostgreSQL (see `test_store`), for
/// a test that starts `up` or a coordinator itself.
pub fn store_args(store: &Option<String>) -> Vec<String> {
    store.iter().flat_map(|s| ["--store".to_string(), s.clone()]).collect()
}

/// A namespaced host a mesh process runs on.
#[derive(Clone, Debug)]
pub struct Site {
    pub netns: String,
    pub addr: std::net::IpAddr,
}

/// `cmd` (program, arguments, environment, directory) run in the network
/// namespace `netns` by `ip netns exec`, which execs: the child's PID is
/// the program's.
pub fn in_netns(netns: &str, cmd: &Command) -> Command {
    let mut out = Command::new("ip");
    out.args(["netns", "exec", netns]).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        out.current_dir(d);
    }
    out
}

/// The mesh CA's certificate and a member's certificate and key (PEM),
/// as a member keeps them after joining.
pub struct MemberFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl MemberFiles {
    pub fn read(dir: &Path) -> MemberFiles {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
        };
        MemberFiles { ca: read("ca.pem"), cert: read("cert.pem"), key: read("key.pem") }
    }
}

/// A gRPC channel to `url`: TLS trusting `ca` and expecting the server name
/// `domain`, with `identity` (certificate, key) as client certificate when
/// given.
pub async fn tls_channel(
    url: &str,
    ca: &str,
    identity: Option<(&str, &str)>,
    domain: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name(domain);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await
}

impl Mesh {
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `annexmesh up`: everything in one process.
    pub fn up() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let p2p: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cport = free_port();
        let store = test_store();
        let mut up = annexmesh();
        up.arg("up");
        if let Some(s) = &store {
            up.args(["--store", s]);
        }
        let p = Proc::spawn(
            "up",
            up.arg("--data")
                .arg(dir.path().join("data"))
                .arg("--http")
                .arg(http.to_string())
                .arg("--coordinator-listen")
                .arg(format!("127.0.0.1:{cport}"))
                .arg("--p2p")
                .arg(p2p.to_string()),
            dir.path(),
        );
        let credentials = dir.path().join("data");
        let mesh = Mesh {
            dir,
            http,
            p2p,
            coordinator: format!("https://127.0.0.1:{cport}"),
            procs: vec![p],
            insecure: false,
            credentials,
            sites: Default::default(),
            store,
        };
        mesh.wait_ready(3);
        mesh
    }

    /// A coordinator, `agents` agents and one gateway, each its own process.
    pub fn separate(agents: usize) -> Mesh {
        Mesh::separate_with_coordinator_args(agents, &[])
    }

    /// As `separate`, with extra coordinator options (e.g. `--repair-grace
    /// 2s`). A coordinator restarted with `start_coordinator` runs without
    /// them; `start_coordinator_with` takes them again.
    pub fn separate_with_coordinator_args(agents: usize, coordinator_args: &[&str]) -> Mesh {
        Mesh::separate_full(agents, coordinator_args, false)
    }

    /// As `separate`, with every role plaintext (`--insecure`).
    pub fn separate_insecure(agents: usize) -> Mesh {
        Mesh::separate_full(agents, &[], true)
    }

    fn separate_full(agents: usize, coordinator_args: &[&str], insecure: bool) -> Mesh {
        Mesh::separate_on(agents, coordinator_args, insecure, Default::default())
    }

    /// As `separate`, with the processes named in `sites` (coordinator,
    /// gateway, node1, ...) each in its namespace, listening on its address
    /// (agents advertise it). Ports come from `free_port`: a fresh namespace
    /// has every port free.
    pub fn separate_on(
        agents: usize,
        coordinator_args: &[&str],
        insecure: bool,
        sites: std::collections::HashMap<String, Site>,
    ) -> Mesh {
        Mesh::separate_on_store(agents, coordinator_args, insecure, sites, test_store())
    }

    /// As `separate_on`, with the coordinator on `store` (None: the
    /// embedded redb in its --data) whatever ANNEXMESH_TEST_STORE says.
    pub fn separate_on_store(
        agents: usize,
        coordinator_args: &[&str],
        insecure: bool,
        sites: std::collections::HashMap<String, Site>,
        store: Option<String>,
    ) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let cport = free_port();
        let scheme = if insecure { "http" } else { "https" };
        let credentials = dir.path().join("coordinator");
        let ip =
            |name: &str| sites.get(name).map_or(std::net::IpAddr::from([127, 0, 0, 1]), |s| s.addr);
        let mut mesh = Mesh {
            http: SocketAddr::new(ip("gateway"), free_port()),
            p2p: SocketAddr::new(ip("gateway"), free_port()),
            coordinator: format!("{scheme}://{}", SocketAddr::new(ip("coordinator"), cport)),
            procs: Vec::new(),
            dir,
            insecure,
            credentials,
            sites,
            store,
        };
        mesh.start_coordinator_with(coordinator_args);
        wait_until("the coordinator", Duration::from_secs(20), || {
            mesh.admin(&["cluster", "create", "mesh"]).status.success()
        });
        for i in 1..=agents {
            mesh.start_agent(&format!("node{i}"));
        }
        mesh.start_gateway();
        mesh.wait_ready(agents);
        mesh
    }

    /// As `separate_with_coordinator_args`, with `agent_args` for every
    /// agent too (e.g. `--scrub-rate 200`).
    pub fn separate_with_args(
        agents: usize,
        coordinator_args: &[&str],
        agent_args: &[&str],
    ) -> Mesh {
        let mut mesh = Mesh::separate_with_coordinator_args(0, coordinator_args);
        for i in 1..=agents {
            mesh.start_agent_with(&format!("node{i}"), agent_args);
        }
        mesh.wait_ready(agents);
        mesh
    }

    /// Starts an agent named `name` on the store at `store`, as process
    /// `proc_name` (e.g. a new node taking a removed node's name).
    pub fn start_agent_at(&mut self, proc_name: &str, name: &str, store: &Path) {
        self.spawn_agent(proc_name, name, store, &[]);
    }

    /// `annexmesh agent` for node `name` of the cluster `mesh` on `store`,
    /// on a free port, without its TLS arguments (`agent_tls_args`).
    pub fn agent_command(&self, name: &str, store: &Path) -> Command {
        let site = self.sites.get(name);
        let listen = SocketAddr::new(
            site.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |s| s.addr),
            free_port(),
        );
        let mut cmd = annexmesh();
        cmd.args(["agent", "--coordinator", &self.coordinator, "--cluster", "mesh"])
            .args(["--name", name, "--listen", &listen.to_string()])
            .arg("--store")
            .arg(store);
        if site.is_some() {
            let scheme = if self.insecure { "http" } else { "https" };
            cmd.args(["--advertise", &format!("{scheme}://{listen}")]);
        }
        cmd
    }

    /// Starts an agent of the cluster `mesh` as the process `proc_name`.
    fn spawn_agent(&mut self, proc_name: &str, name: &str, store: &Path, extra: &[&str]) {
        let mut cmd = self.agent_command(name, store);
        cmd.args(self.agent_tls_args(store)).args(extra);
        self.spawn(proc_name, cmd);
    }

    /// Starts `cmd` as the process `name`, in its host's namespace when it
    /// has one.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) {
        if let Some(site) = self.sites.get(name) {
            cmd = in_netns(&site.netns, &cmd);
        }
        let p = Proc::spawn(name, &mut cmd, self.dir.path());
        self.procs.push(p);
    }

    pub fn start_coordinator(&mut self) {
        self.start_coordinator_with(&[]);
    }

    /// Starts the coordinator with extra options (e.g. `--repair-grace 2s`).
    pub fn start_coordinator_with(&mut self, args: &[&str]) {
        let mut cmd = self.coordinator_command();
        cmd.args(args);
        self.spawn("coordinator", cmd);
    }

    pub fn start_agent(&mut self, name: &str) {
        self.start_agent_with(name, &[]);
    }

    /// `start_agent` with extra arguments (e.g. `--scrub-rate 100`).
    pub fn start_agent_with(&mut self, name: &str, extra: &[&str]) {
        let store = self.dir.path().join("nodes").join(name);
        self.spawn_agent(name, name, &store, extra);
    }

    /// A coordinator and gateway, then `names` agents started with `extra`
    /// arguments each, once `prepare` has seen each node's store directory
    /// (e.g. to put part of it on another filesystem).
    pub fn separate_with(
        names: &[&str],
        extra: &[&str],
        mut prepare: impl FnMut(&str, &Path),
    ) -> Mesh {
        let mut mesh = Mesh::separate(0);
        for name in names {
            let store = mesh.dir.path().join("nodes").join(name);
            std::fs::create_dir_all(&store).unwrap();
            prepare(name, &store);
            mesh.start_agent_with(name, extra);
        }
        mesh.wait_ready(names.len());
        mesh
    }

    /// The gateway, open to anyone over HTTP (`--wideopen`: an explicit
    /// choice, as the gateway requires one).
    pub fn start_gateway(&mut self) {
        self.start_gateway_with(&["--wideopen"]);
    }

    /// The gateway with `args` in place of `--wideopen` (e.g.
    /// `--auth-users`, `--unauth readonly`).
    pub fn start_gateway_with(&mut self, args: &[&str]) {
        let tls = self.gateway_tls_args("gateway");
        let mut cmd = annexmesh();
        cmd.args(["gateway", "--coordinator", &self.coordinator, "--http", &self.http.to_string()])
            .args(["--p2p", &self.p2p.to_string()])
            .args(args)
            .args(tls);
        self.spawn("gateway", cmd);
    }

    /// Starts a gateway as process `name` (in its site's namespace when it
    /// has one) serving P2P over HTTP on `http`, open to anyone; returns its
    /// URL once it answers.
    pub fn start_gateway_named(&mut self, name: &str, http: SocketAddr) -> String {
        let tls = self.gateway_tls_args(name);
        let mut cmd = annexmesh();
        cmd.args(["gateway", "--coordinator", &self.coordinator, "--http", &http.to_string()])
            .arg("--wideopen")
            .args(tls);
        self.spawn(name, cmd);
        let url = format!("http://{http}");
        wait_until("the new gateway", Duration::from_secs(30), || {
            matches!(http_get(&format!("{url}/mesh/config")), Some((200, _)))
        });
        url
    }

    /// Stops the gateway and starts it again with `args` (see
    /// `start_gateway_with`); returns once it accepts connections (HTTP or
    /// HTTPS).
    pub fn restart_gateway_with(&mut self, args: &[&str]) {
        let i = self.procs.iter().position(|p| p.name == "gateway").expect("a gateway");
        let mut old = self.procs.remove(i);
        old.stop();
        self.start_gateway_with(args);
        let addr = self.http;
        wait_until("the restarted gateway", Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
    }

    /// Adds a P2P over HTTP user (`extra`: `--readonly`, `--appendonly`);
    /// returns its password.
    pub fn user(&self, name: &str, extra: &[&str]) -> String {
        let out = self.admin(&[&["user", "add", name], extra].concat());
        assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
        let password = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(!password.is_empty() && password.bytes().all(|b| b.is_ascii_alphanumeric()));
        password
    }

    /// For a mesh from `up`: the git credential store file it wrote.
    pub fn up_credentials(&self) -> PathBuf {
        self.dir.path().join("data").join("git-credentials")
    }

    /// For a mesh from `up`: an `Authorization` header with its user.
    pub fn up_auth_header(&self) -> String {
        let line = std::fs::read_to_string(self.up_credentials()).expect("up's git-credentials");
        let userinfo = line.split("://").nth(1).and_then(|r| r.split('@').next()).unwrap();
        basic_auth(userinfo)
    }

    /// Starts another gateway on the same coordinator; returns its URL.
    pub fn add_gateway(&mut self, name: &str) -> String {
        let http = format!("127.0.0.1:{}", free_port());
        let tls = self.gateway_tls_args(name);
        let p = Proc::spawn(
            name,
            annexmesh()
                .args(["gateway", "--coordinator", &self.coordinator, "--http", &http])
                .arg("--wideopen")
                .args(tls),
            self.dir.path(),
        );
        self.procs.push(p);
        let url = format!("http://{http}");
        wait_until("the new gateway", Duration::from_secs(30), || {
            matches!(http_get(&format!("{url}/mesh/config")), Some((200, _)))
        });
        url
    }

    /// A counter from a gateway's /metrics.
    pub fn metric(gateway_url: &str, name: &str) -> u64 {
        let (status, body) =
            http_get(&format!("{gateway_url}/metrics")).expect("gateway answers /metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    }

    /// The store directory of the named node.
    pub fn store_of(&self, name: &str) -> PathBuf {
        self.node_stores()
            .into_iter()
            .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(name))
            .unwrap_or_else(|| panic!("no store for {name}"))
    }

    pub fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// A new access token for the line protocol (`extra`: `--readonly`,
    /// `--appendonly`).
    pub fn token(&self, extra: &[&str]) -> String {
        let out = self.admin(&[&["token", "create"], extra].concat());
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token:?}");
        token
    }

    /// stdout of `annexmesh admin ARGS`, which must succeed.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "admin {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// stderr of `annexmesh admin ARGS`, which must fail.
    pub fn admin_err(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            !out.status.success(),
            "admin {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `annexmesh admin --json ARGS`, which must succeed, parsed.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.admin_ok(&[&["--json"], args].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("admin {args:?}: {e}:\n{out}"))
    }

    /// The nodes as `admin node list --json` gives them (an empty list when
    /// the coordinator does not answer).
    pub fn node_list(&self) -> Vec<serde_json::Value> {
        let out = self.admin(&["--json", "node", "list"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
    }

    /// Field `field` of node `name` in `admin node list --json`, as text
    /// (strings bare, other values as JSON); "" when the node is missing.
    pub fn node_field(&self, name: &str, field: &str) -> String {
        let nodes = self.node_list();
        let node = nodes.iter().find(|n| n["name"] == name);
        match node.map(|n| &n[field]) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }

    /// Node `name` of `admin node list --json` as columns: NAME UUID HEALTH
    /// ADDRESS FREE TRANSFERS STATE WANTED COST LEFT PARTIAL QUARANTINED
    /// (FREE "0" before the first report, WANTED and LEFT "-" when unset).
    pub fn node_columns(&self, name: &str) -> Option<Vec<String>> {
        let nodes = self.node_list();
        let n = nodes.iter().find(|n| n["name"] == name)?;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) if s.is_empty() => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".to_string(),
            v => v.to_string(),
        };
        let free = if n["free_bytes"].is_null() { "0".to_string() } else { text(&n["free_bytes"]) };
        let mut cols: Vec<String> =
            ["name", "uuid", "health", "address"].map(|f| text(&n[f])).into();
        cols.push(free);
        cols.extend(
            [
                "active_transfers",
                "state",
                "wanted",
                "cost",
                "keys_left",
                "partial_bytes",
                "quarantined",
            ]
            .map(|f| text(&n[f])),
        );
        Some(cols)
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = annexmesh();
        cmd.args(["admin", "--coordinator", &self.coordinator]).args(args);
        for (k, v) in self.admin_env() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// The environment that gives the admin CLI this mesh's credentials.
    pub fn admin_env(&self) -> Vec<(&'static str, String)> {
        let file = |f: &str| self.credentials.join(f).to_string_lossy().into_owned();
        let mut env = vec![("ANNEXMESH_ADMIN_TOKEN_FILE", file("admin-token"))];
        if self.insecure {
            env.push(("ANNEXMESH_INSECURE", "1".into()));
        } else {
            env.push(("ANNEXMESH_CA", file("ca.pem")));
        }
        env
    }

    /// A stand-in for ssh (`dir/fake-ssh`, for GIT_SSH_COMMAND) to the host
    /// `gateway.invalid`, whose sshd runs `annexmesh shell` as ForceCommand
    /// with `token`: the command asked for arrives in SSH_ORIGINAL_COMMAND and
    /// is logged to `dir/ssh.log`. Other hosts do not resolve, as with ssh.
    pub fn fake_ssh(&self, dir: &Path, token: &str) -> String {
        let log = dir.join("ssh.log");
        let script = dir.join("fake-ssh");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
# ssh [options] host command...
while [ $# -gt 0 ]; do
  case "$1" in
    -p|-o|-S|-l|-i|-F|-J|-c|-m|-b|-e|-E|-L|-R|-D|-W|-w|-Q|-O|-I|-B) shift 2 ;;
    -n) exec </dev/null; shift ;;
    -*) shift ;;
    *) break ;;
  esac
done
host="$1"
shift
# Like ssh, reach only a host that exists (testremote makes an unreachable
# copy of the remote by changing the host).
if [ "$host" != gateway.invalid ]; then
  echo "ssh: Could not resolve hostname $host: Name or service not known" >&2
  exit 255
fi
echo "$*" >> '{log}'
export ANNEXMESH_P2P='{p2p}'
export ANNEXMESH_TOKEN='{token}'
# As sshd's ForceCommand runs it: every command, git's included.
export SSH_ORIGINAL_COMMAND="$*"
exec '{annexmesh}' shell
"#,
                log = log.display(),
                annexmesh = env!("CARGO_BIN_EXE_annexmesh"),
                p2p = self.p2p,
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script.display().to_string()
    }

    /// The admin token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.credentials.join("admin-token")).unwrap().trim().to_string()
    }

    /// The coordinator's command line as the harness starts it, for tests
    /// that start it by hand.
    pub fn coordinator_command(&self) -> Command {
        let first = self.coordinator.split(',').next().unwrap().to_string();
        self.coordinator_command_at(&first, "coordinator")
    }

    /// `annexmesh coordinator` listening where `url` says, with its data in
    /// DIR/`name` (a second coordinator of a shared store has its own).
    pub fn coordinator_command_at(&self, url: &str, name: &str) -> Command {
        let listen = url.split_once("://").unwrap().1.to_string();
        let data = self.dir.path().join(name);
        let mut cmd = annexmesh();
        cmd.args(["coordinator", "--listen", &listen]).arg("--data").arg(data);
        if let Some(s) = &self.store {
            cmd.args(["--store", s]);
        }
        if self.insecure {
            cmd.arg("--insecure");
        }
        cmd
    }

    /// A new join token for `role` (agent or gateway).
    pub fn join_token(&self, role: &str) -> String {
        self.admin_ok(&["join-token", "create", "--role", role]).trim().to_string()
    }

    /// The TLS arguments of an agent on `store`: a join token unless it
    /// joined before (or --insecure).
    pub fn agent_tls_args(&self, store: &Path) -> Vec<String> {
        if self.insecure {
            return vec!["--insecure".into()];
        }
        if store.join(".annexmesh/tls/cert.pem").exists() {
            return Vec::new();
        }
        vec!["--join-token".into(), self.join_token("agent")]
    }

    /// Where the gateway started as process `name` keeps its credentials.
    pub fn gateway_state(&self, name: &str) -> PathBuf {
        self.dir.path().join("gateway-state").join(name)
    }

    /// The TLS arguments of the gateway process `name`.
    pub fn gateway_tls_args(&self, name: &str) -> Vec<String> {
        if self.insecure {
            return vec!["--insecure".into()];
        }
        let state = self.gateway_state(name);
        let mut args = vec!["--state-dir".to_string(), state.to_string_lossy().into_owned()];
        if !state.join("cert.pem").exists() {
            args.extend(["--join-token".into(), self.join_token("gateway")]);
        }
        args
    }

    /// A channel to the coordinator with the first gateway's certificate
    /// (plaintext on an insecure mesh).
    pub async fn gateway_channel(&self) -> tonic::transport::Channel {
        if self.insecure {
            return tonic::transport::Endpoint::from_shared(self.coordinator.clone())
                .unwrap()
                .connect()
                .await
                .unwrap();
        }
        let f = MemberFiles::read(&self.gateway_state("gateway"));
        tls_channel(&self.coordinator, &f.ca, Some((&f.cert, &f.key)), "coordinator.annexmesh")
            .await
            .unwrap()
    }

    /// An admin API client that presents the admin token.
    pub async fn admin_client(
        &self,
    ) -> annexmesh::rpc::admin_client::AdminClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            impl tonic::service::Interceptor + Clone,
        >,
    > {
        let channel = if self.insecure {
            tonic::transport::Endpoint::from_shared(self.coordinator.clone())
                .unwrap()
                .connect()
                .await
                .unwrap()
        } else {
            let ca = std::fs::read_to_string(self.credentials.join("ca.pem")).unwrap();
            tls_channel(&self.coordinator, &ca, None, "coordinator.annexmesh").await.unwrap()
        };
        let bearer: tonic::metadata::AsciiMetadataValue =
            format!("Bearer {}", self.admin_token()).parse().unwrap();
        annexmesh::rpc::admin_client::AdminClient::with_interceptor(
            channel,
            move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", bearer.clone());
                Ok(req)
            },
        )
    }

    pub fn healthy_nodes(&self) -> usize {
        self.node_list().iter().filter(|n| n["health"] == "up").count()
    }

    /// Waits for the gateway to know the cluster and for `agents` healthy
    /// nodes (for `up`, asking with its user's credentials).
    pub fn wait_ready(&self, agents: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.is_ready(agents) {
            if Instant::now() >= deadline {
                self.print_logs();
                panic!(
                    "timed out waiting for the mesh to come up: {} of {agents} nodes up, {} in \
                     the branch",
                    self.healthy_nodes(),
                    self.branch_nodes()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every process's log, on stderr: what a test that
    /// timed out needs to say why.
    pub fn print_logs(&self) {
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("----- {} (last 40 of {} lines)", log.display(), lines.len());
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }

    fn is_ready(&self, agents: usize) -> bool {
        let auth = self.up_credentials().exists().then(|| self.up_auth_header());
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        matches!(http_get_with(&format!("{}/mesh/config", self.url()), &headers), Some((200, _)))
            && self.healthy_nodes() == agents
            && self.branch_nodes() >= agents
    }

    /// How many nodes the cluster's git-annex branch names as proxied
    /// remotes (`proxy.log`, in the coordinator's repository): clients that
    /// fetch it learn no more nodes than that.
    pub fn branch_nodes(&self) -> usize {
        // `up` keeps the coordinator's data in DATA/coordinator.
        [self.credentials.join("git"), self.credentials.join("coordinator/git")]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".git"))
            .map(|e| {
                let out = Command::new("git")
                    .arg("--git-dir")
                    .arg(e.path())
                    .args(["show", "git-annex:proxy.log"])
                    .output();
                out.map(|o| String::from_utf8_lossy(&o.stdout).matches(':').count()).unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    /// Where the nodes keep their stores (the same layout for `up`).
    pub fn node_stores(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for base in [self.dir.path().join("nodes"), self.dir.path().join("data/nodes")] {
            if let Ok(rd) = std::fs::read_dir(base) {
                dirs.extend(rd.flatten().map(|e| e.path()));
            }
        }
        dirs.sort();
        dirs
    }

    /// Asserts that each of the 3 nodes holds exactly `data` under `key`;
    /// returns their stores.
    pub fn assert_held_everywhere(&self, key: &str, data: &[u8]) -> Vec<PathBuf> {
        use sha2::{Digest, Sha256};
        let stores = self.node_stores();
        assert_eq!(stores.len(), 3);
        let want = Sha256::digest(data);
        for s in &stores {
            let objs = objects_named(s, key);
            assert_eq!(objs.len(), 1, "{} should hold {key}", s.display());
            assert!(
                Sha256::digest(std::fs::read(&objs[0]).unwrap()) == want,
                "{} holds other bytes",
                s.display()
            );
        }
        stores
    }

    /// The UUID of a cluster or node, from its config (for `up`, asked
    /// with its user's credentials).
    pub fn uuid_of(&self, name: &str) -> String {
        let auth = self.up_credentials().exists().then(|| self.up_auth_header());
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let url = format!("{}/{name}/config", self.url());
        let (status, body) = http_get_with(&url, &headers).unwrap();
        assert_eq!(status, 200, "config of {name}: {body}");
        body.lines()
            .find_map(|l| l.trim().strip_prefix("uuid = "))
            .unwrap_or_else(|| panic!("no uuid in {body}"))
            .to_string()
    }
}

/// Every file under `store/annex/objects` named `key`.
pub fn objects_named(store: &Path, key: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![store.join("annex/objects")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().and_then(|n| n.to_str()) == Some(key) {
                found.push(p);
            }
        }
    }
    found
}

/// A git-annex client repository.
pub struct Client {
    pub dir: tempfile::TempDir,
    path: String,
    _links: tempfile::TempDir,
    /// Extra environment for every command (e.g. GIT_SSH_COMMAND).
    pub env: Vec<(String, String)>,
}

impl Client {
    pub fn new() -> Client {
        let c = Client::new_uninit();
        c.ok(&["git", "init", "-q", "-b", "main"]);
        c.ok(&["git", "annex", "init", "client"]);
        c.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
        c
    }

    /// A clone of another client's repository, with git-annex initialised.
    pub fn clone_of(other: &Client) -> Client {
        let c = Client::new_uninit();
        let src = other.path().to_str().unwrap();
        c.ok(&["git", "clone", "-q", src, "."]);
        c.ok(&["git", "annex", "init", "reader"]);
        c.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
        c
    }

    /// A client with no repository yet, for a test that makes one itself
    /// (e.g. with `git clone`).
    pub fn new_uninit() -> Client {
        // The generic P2P transport program, as a user installs it on PATH.
        let links = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_annexmesh"),
            links.path().join("git-annex-p2p-annexmesh"),
        )
        .unwrap();
        let bin = git_annex_bin_dir();
        let path = std::env::join_paths(
            [links.path().to_path_buf(), bin]
                .into_iter()
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap()
        .into_string()
        .unwrap();
        Client { dir: tempfile::tempdir().unwrap(), path, _links: links, env: Vec::new() }
    }

    /// `git-annex p2phttp` serving this repository on 127.0.0.1 at a free
    /// port with `options` (e.g. `--wideopen`), its output in `logs`;
    /// returns once it accepts connections. git-annex itself is run, not the
    /// `git` wrapper, so that the process stopped at the end is the server.
    pub fn serve_p2phttp(&self, options: &[&str], logs: &Path) -> (Proc, u16) {
        let port = free_port();
        let port_arg = port.to_string();
        let mut args = vec!["git-annex", "p2phttp", "--bind", "127.0.0.1", "--port", &port_arg];
        args.extend_from_slice(options);
        let server = Proc::spawn("p2phttp", &mut self.command(&args), logs);
        wait_until("git-annex p2phttp", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        (server, port)
    }

    /// A bare git-annex repository, as a server keeps one.
    pub fn new_bare() -> Client {
        let c = Client::new_uninit();
        c.ok(&["git", "init", "-q", "--bare"]);
        c.ok(&["git", "annex", "init", "server"]);
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
    }

    /// A command run in this repository with the test's git-annex on PATH.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..])
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("GIT_AUTHOR_NAME", "annexmesh test")
            .env("GIT_AUTHOR_EMAIL", "test@annexmesh.invalid")
            .env("GIT_COMMITTER_NAME", "annexmesh test")
            .env("GIT_COMMITTER_EMAIL", "test@annexmesh.invalid")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `git remote add`, then a fetch of the remote's branches, as `git
    /// annex pull` would: a mesh's git-annex branch tells git-annex that the
    /// remote is a cluster and names its nodes, without which it counts no
    /// copy there. A remote that serves no git (or wants credentials the
    /// client lacks) is left unfetched.
    pub fn add_remote(&self, name: &str, url: &str) {
        self.ok(&["git", "remote", "add", name, url]);
        self.fetch(name);
    }

    /// A remote `meshgit` for the cluster `mesh` over P2P over HTTP, fetched:
    /// clients of the line protocol learn the cluster's nodes through it
    /// (git-annex proxies no P2P-address remote, so it gives no node
    /// remotes of its own).
    pub fn learn_cluster(&self, mesh: &Mesh) {
        self.add_remote("meshgit", &format!("{}/mesh", mesh.url()));
    }

    /// The PATH the client's commands run with.
    pub fn path_env(&self) -> &str {
        &self.path
    }

    /// `git fetch NAME`, never prompting; whether it worked.
    pub fn fetch(&self, name: &str) -> bool {
        self.command(&["git", "fetch", "-q", name])
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `git annex p2p --link --name NAME`, answering its address prompt on
    /// stdin, whether it succeeds or not.
    pub fn p2p_link_output(&self, name: &str, address: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(&["git", "annex", "p2p", "--link", "--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{address}").unwrap();
        child.wait_with_output().unwrap()
    }

    /// `p2p_link_output`, which must succeed; what it printed.
    pub fn p2p_link(&self, name: &str, address: &str) -> String {
        let out = self.p2p_link_output(name, address);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "p2p --link failed:\n{text}");
        text
    }

    /// Writes `len` bytes of deterministic pseudo-random data.
    pub fn write_file(&self, name: &str, len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(len);
        std::fs::write(self.dir.path().join(name), &data).unwrap();
        data
    }

    /// Writes a file of `len` deterministic bytes, annexes and commits it;
    /// returns its content and key.
    pub fn annex_file(&self, name: &str, len: usize, seed: u64) -> (Vec<u8>, String) {
        let data = self.write_file(name, len, seed);
        self.ok(&["git", "annex", "add", name]);
        self.ok(&["git", "commit", "-q", "-m", name]);
        (data, self.key_of(name))
    }

    pub fn key_of(&self, file: &str) -> String {
        self.ok(&["git", "annex", "lookupkey", file]).trim().to_string()
    }
}

/// What `git annex testremote` reported: every test by "group / name", and
/// the ones that failed.
#[derive(Debug)]
pub struct TestRemoteReport {
    pub tests: Vec<String>,
    pub failed: std::collections::BTreeSet<String>,
    pub output: String,
}

pub fn testremote(client: &Client, remote: &str) -> TestRemoteReport {
    if !client.path().join("seed.txt").exists() {
        client.write_file("seed.txt", 10, 9);
        client.ok(&["git", "annex", "add", "seed.txt"]);
        client.ok(&["git", "commit", "-q", "-m", "seed"]);
    }
    let out = client.run(&["git", "annex", "testremote", remote]);
    let output =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // tasty prints groups at indent 2 and tests at indent 4 as "name: OK|FAIL".
    let (mut group, mut tests, mut failed) =
        (String::new(), Vec::new(), std::collections::BTreeSet::new());
    for line in output.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 2 && !text.is_empty() {
            group = text.to_string();
        } else if indent == 4
            && let Some((name, result)) = text.split_once(':')
        {
            let result = result.trim_start();
            let test = format!("{group} / {name}");
            if result.starts_with("OK") {
                tests.push(test);
            } else if result.starts_with("FAIL") {
                tests.push(test.clone());
                failed.insert(test);
            }
        }
    }
    let report = TestRemoteReport { tests, failed, output };
    eprintln!(
        "testremote {remote}: {} of {} tests passed",
        report.tests.len() - report.failed.len(),
        report.tests.len()
    );
    assert!(report.tests.len() >= 100, "testremote {remote} ran too few tests:\n{}", report.output);
    report
}
