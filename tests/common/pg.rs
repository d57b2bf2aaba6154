//! A real PostgreSQL server for tests: its own data directory, on an
//! address and port chosen at run time, stopped when dropped and also when
//! the test process dies (a wrapper stops it when its stdin, a pipe this
//! process holds, closes).

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Starts the command in "$@" and stops it (fast shutdown) when stdin
/// closes, whether this process ends normally or is killed.
const WRAPPER: &str =
    r#""$@" </dev/null & pid=$!; cat >/dev/null; kill -INT "$pid" 2>/dev/null; wait "$pid""#;

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PgServer {
    addr: String,
    port: u16,
    bin: PathBuf,
    netns: Option<String>,
    /// Run the server's programs as the `postgres` user (initdb refuses root).
    as_postgres: bool,
    wrapper: Option<Child>,
    /// The pipe whose closing stops the server.
    stdin: Option<ChildStdin>,
    databases: AtomicUsize,
    _dir: tempfile::TempDir,
}

/// The directory of PostgreSQL's server programs, or a panic saying how to
/// install them.
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ANNEXMESH_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if bin.join("initdb").is_file() {
            return bin;
        }
    }
    panic!(
        "PostgreSQL's server programs (initdb, postgres) were not found. Install them with \
         `apt-get install postgresql` (scripts/test does), or point ANNEXMESH_TEST_PG_BIN at \
         their directory."
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgServer {
    /// A server on 127.0.0.1.
    pub fn start() -> PgServer {
        PgServer::start_on("127.0.0.1", None)
    }

    /// One server for the whole test binary, stopped when it exits.
    pub fn shared() -> &'static PgServer {
        static SERVER: OnceLock<PgServer> = OnceLock::new();
        SERVER.get_or_init(PgServer::start)
    }

    /// A server listening on `addr`, run in the network namespace `netns`
    /// when given (`ip netns exec`).
    pub fn start_on(addr: &str, netns: Option<&str>) -> PgServer {
        PgServer::start_with(addr, netns, None)
    }

    /// As `start_on`, serving TLS with `tls` (certificate and key, PEM)
    /// when given.
    pub fn start_with(addr: &str, netns: Option<&str>, tls: Option<(&str, &str)>) -> PgServer {
        PgServer::start_full(addr, netns, tls, false)
    }

    /// A server on 127.0.0.1 with PostgreSQL's durable defaults (fsync,
    /// synchronous commit, full page writes), for measurements.
    pub fn start_durable() -> PgServer {
        PgServer::start_full("127.0.0.1", None, None, true)
    }

    fn start_full(
        addr: &str,
        netns: Option<&str>,
        tls: Option<(&str, &str)>,
        durable: bool,
    ) -> PgServer {
        let bin = pg_bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let (data, sockets) = (dir.path().join("data"), dir.path().join("sockets"));
        std::fs::create_dir(&sockets).unwrap();
        let mut settings = Vec::new();
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            let (c, k) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            settings.extend([
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", c.display()),
                format!("ssl_key_file={}", k.display()),
            ]);
        }
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "cannot hand {} to the postgres user", dir.path().display());
        }
        let mut server = PgServer {
            addr: addr.to_string(),
            port: super::free_port(),
            bin,
            netns: netns.map(String::from),
            as_postgres,
            wrapper: None,
            stdin: None,
            databases: AtomicUsize::new(0),
            _dir: dir,
        };
        let out = server
            .command("initdb", false)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Clients on other (namespaced) hosts too; a test server trusts all.
        let mut hba =
            std::fs::OpenOptions::new().append(true).open(data.join("pg_hba.conf")).unwrap();
        std::io::Write::write_all(&mut hba, b"host all all 0.0.0.0/0 trust\n").unwrap();
        let log = std::fs::File::create(server._dir.path().join("postgres.log")).unwrap();
        let mut cmd = server.command("postgres", true);
        cmd.arg("-D")
            .arg(&data)
            .args(["-c", &format!("listen_addresses={addr}"), "-p", &server.port.to_string()])
            .arg("-k")
            .arg(&sockets);
        if !durable {
            // A test server: speed over durability.
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        cmd.args(["-c", "max_connections=500"])
            .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut wrapper = cmd.spawn().expect("start postgres");
        server.stdin = wrapper.stdin.take();
        server.wrapper = Some(wrapper);
        server.wait_ready();
        server
    }

    /// `program` of the server's, as the postgres user when root, in the
    /// namespace when there is one, under the stopping wrapper when asked.
    fn command(&self, program: &str, wrapped: bool) -> Command {
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if self.as_postgres {
            argv.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        if wrapped {
            argv.extend(["sh", "-c", WRAPPER, "sh"].map(String::from));
        }
        argv.push(self.bin.join(program).to_string_lossy().into_owned());
        let mut cmd = Command::new(&argv[0]);
        // Somewhere the postgres user may be.
        cmd.args(&argv[1..]).current_dir(self._dir.path());
        cmd
    }

    /// psql as the superuser, over TCP, running `sql` in `db`; rows
    /// unaligned, without headers.
    fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        let psql = self.bin.join("psql");
        let psql = if psql.is_file() { psql } else { PathBuf::from("psql") };
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        argv.push(psql.to_string_lossy().into_owned());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", &self.addr, "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .stdin(Stdio::null());
        cmd.output().expect("psql")
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if self.psql("postgres", "SELECT 1").status.success() {
                return;
            }
            let exited = self.wrapper.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || start.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                panic!("PostgreSQL did not start on {}:{}: {log}", self.addr, self.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> PathBuf {
        self._dir.path().join("postgres.log")
    }

    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{}/{db}", self.addr, self.port)
    }

    /// A fresh, empty database; its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("annexmesh_{}_{n}", std::process::id());
        let out = self.psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
        self.url(&name)
    }

    /// Runs SQL in database `db` as the superuser; panics when it fails.
    pub fn execute(&self, db: &str, sql: &str) {
        self.query(db, sql);
    }

    /// Runs SQL in database `db` as the superuser: its output, unaligned
    /// and without headers; panics when it fails.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql);
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper stop the server and exit.
        drop(self.stdin.take());
        if let Some(mut w) = self.wrapper.take() {
            let start = Instant::now();
            while w.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = w.kill();
                    let _ = w.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
