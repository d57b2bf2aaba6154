//! A private network per test: a bridge in the root namespace and hosts,
//! each a network namespace joined to the bridge by a veth pair, with
//! addresses in one /24 of 10.213.0.0/16 that the harness picks. Needs root
//! (CAP_NET_ADMIN), iproute2 and tc.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

/// Directory of the lock files that hand out subnet numbers.
fn lock_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("annexmesh-netns")
}

/// Runs `ip`/`tc` with `args`; its stderr as the error.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// One namespaced host.
pub struct Host {
    pub index: usize,
    netns: String,
    /// The veth end in the root namespace (a bridge port).
    outer: String,
    /// The veth end inside the host's namespace.
    inner: String,
    addr: Ipv4Addr,
}

impl Host {
    /// `program` run in this host's namespace. `ip netns exec` execs, so the
    /// child's PID is the program's and stopping it by PID stops the program.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Cuts the host off: its bridge port goes down, so nothing reaches it
    /// and it reaches nothing.
    pub fn link_down(&self) {
        ip(&["link", "set", &self.outer, "down"]).unwrap();
    }

    pub fn link_up(&self) {
        ip(&["link", "set", &self.outer, "up"]).unwrap();
    }

    /// Limits the host's traffic both ways to `rate` (tc syntax, e.g.
    /// "100mbit") with a token bucket on each end of its veth.
    pub fn limit_rate(&self, rate: &str) {
        let spec = ["root", "tbf", "rate", rate, "burst", "256kb", "latency", "200ms"];
        let outer = [&["qdisc", "replace", "dev", self.outer.as_str()][..], &spec].concat();
        run("tc", &outer).unwrap();
        let inner =
            [&["-n", self.netns.as_str(), "qdisc", "replace", "dev", &self.inner][..], &spec]
                .concat();
        run("tc", &inner).unwrap();
    }
}

/// The network: dropped, it removes every namespace, veth and the bridge it
/// made, and stops any process still in its namespaces.
pub struct Net {
    pub hosts: Vec<Host>,
    bridge: String,
    bridge_addr: Ipv4Addr,
    /// Held (flock) while the subnet and names are in use; the kernel
    /// releases it if the test process dies, so a crash leaks no number.
    _lock: Flock<std::fs::File>,
    number: u8,
}

impl Net {
    /// A bridge and `hosts` hosts; an error where namespaces cannot be
    /// made here.
    pub fn new(hosts: usize) -> Result<Net, String> {
        assert!(hosts < 200);
        std::fs::create_dir_all(lock_dir())
            .map_err(|e| format!("{}: {e}", lock_dir().display()))?;
        // Shared like /tmp, so that every user's tests can take numbers.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(lock_dir(), std::fs::Permissions::from_mode(0o1777));
        for number in 0..=255u8 {
            let path = lock_dir().join(format!("{number}.lock"));
            // flock needs only a read descriptor: another user's lock file
            // still locks.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .or_else(|_| std::fs::File::open(&path))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            // Whatever a crashed holder of this number left is ours to clear.
            remove_leftovers(number);
            if subnet_in_use(number)? {
                continue;
            }
            let mut net = Net {
                hosts: Vec::new(),
                bridge: format!("amb{number}"),
                bridge_addr: Ipv4Addr::new(10, 213, number, 1),
                _lock: lock,
                number,
            };
            net.build(hosts)?;
            return Ok(net);
        }
        Err("no free subnet number (all 256 locked or in use)".into())
    }

    fn build(&mut self, hosts: usize) -> Result<(), String> {
        let n = self.number;
        ip(&["link", "add", &self.bridge, "type", "bridge", "forward_delay", "0"])?;
        ip(&["addr", "add", &format!("{}/24", self.bridge_addr), "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for i in 0..hosts {
            let host = Host {
                index: i,
                netns: format!("am{n}h{i}"),
                outer: format!("am{n}v{i}"),
                inner: format!("am{n}p{i}"),
                addr: Ipv4Addr::new(10, 213, n, 10 + i as u8),
            };
            ip(&["netns", "add", &host.netns])?;
            // Pushed before it is complete, so Drop removes a half-made host.
            self.hosts.push(host);
            let host = self.hosts.last().unwrap();
            let ns = host.netns.as_str();
            ip(&["link", "add", &host.outer, "type", "veth", "peer", "name", &host.inner])?;
            ip(&["link", "set", &host.inner, "netns", ns])?;
            ip(&["link", "set", &host.outer, "master", &self.bridge])?;
            ip(&["link", "set", &host.outer, "up"])?;
            let inner = |args: &[&str]| {
                let mut a = vec!["-n", ns];
                a.extend_from_slice(args);
                ip(&a)
            };
            inner(&["link", "set", "lo", "up"])?;
            inner(&["addr", "add", &format!("{}/24", host.addr), "dev", &host.inner])?;
            inner(&["link", "set", &host.inner, "up"])?;
        }
        Ok(())
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge's address: the root namespace as the hosts see it.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.bridge_addr
    }
}

/// Whether any address or route already covers 10.213.N.0/24, or the
/// bridge's name is taken (by something other than this harness).
fn subnet_in_use(number: u8) -> Result<bool, String> {
    let prefix = format!("10.213.{number}.");
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show", "table", "all"])?;
    let taken = addrs.contains(&prefix) || routes.contains(&prefix);
    let bridge = ip(&["link", "show", &format!("amb{number}")]).is_ok();
    Ok(taken || bridge)
}

/// Removes namespaces, veths and the bridge of subnet `number`.
fn remove_leftovers(number: u8) {
    let prefix = format!("am{number}h");
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.strip_prefix(&prefix).is_some_and(|r| r.bytes().all(|b| b.is_ascii_digit())) {
                remove_netns(name);
            }
        }
    }
    let _ = ip(&["link", "del", &format!("amb{number}")]);
}

/// Stops (SIGKILL, by PID) whatever still runs in `netns`, then deletes it.
fn remove_netns(netns: &str) {
    for _ in 0..50 {
        let pids = ip(&["netns", "pids", netns]).unwrap_or_default();
        let pids: Vec<i32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ip(&["netns", "del", netns]);
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            remove_netns(&h.netns);
            // Deleting the namespace deletes the pair; this is for a host
            // whose inner end never moved into it.
            let _ = ip(&["link", "del", &h.outer]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A network of `hosts` hosts, or None with the reason printed where this
/// machine cannot make network namespaces (not root, no `ip`, or the kernel
/// refuses: no CAP_NET_ADMIN). As root with `ip` present any other failure
/// to set up is a test failure, not a skip.
pub fn net_or_skip(hosts: usize) -> Option<Net> {
    match Net::new(hosts) {
        Ok(net) => Some(net),
        Err(e) => {
            // SAFETY: geteuid cannot fail and touches no memory.
            let root = unsafe { libc::geteuid() } == 0;
            let has_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
            // Root in a container without CAP_NET_ADMIN is refused by the
            // kernel: that machine cannot make namespaces, which is a skip.
            // Any other failure as root is a fault of the harness.
            if root && has_ip && !e.contains("Operation not permitted") {
                panic!("cannot make network namespaces as root: {e}");
            }
            eprintln!("skipped: cannot make network namespaces: {e}");
            None
        }
    }
}
