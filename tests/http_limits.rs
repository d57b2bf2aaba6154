//! P2P over HTTP stays usable under idle and slowloris connections: a
//! normal client's copy and get complete while thousands of connections
//! are held open, and the gateway's memory and descriptors stay bounded.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, Mesh, usage};
use sha2::{Digest, Sha256};

const IDLE: usize = 2000;
const SLOWLORIS: usize = 50;
/// The attack's own hang guard.
const ATTACK_LIMIT: Duration = Duration::from_secs(300);

/// Raises this test process's open-file limit, to hold the connections.
fn raise_own_nofile_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read or write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    assert!(
        lim.rlim_max as usize > IDLE + SLOWLORIS + 500,
        "the hard open-file limit ({}) is too low for this test",
        lim.rlim_max
    );
}

/// Whether the server closed `s` (EOF or an error); `s` is non-blocking.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Holds `IDLE` silent connections and `SLOWLORIS` that send one header
/// byte a second, reopening any the gateway closes, until `stop`.
fn attack(addr: SocketAddr, stop: Arc<AtomicBool>, reopened: Arc<AtomicUsize>) {
    let started = Instant::now();
    let mut idle: Vec<Option<TcpStream>> = (0..IDLE).map(|_| connect(addr)).collect();
    let mut slow: Vec<Option<TcpStream>> = Vec::new();
    for _ in 0..SLOWLORIS {
        let mut s = connect(addr);
        if let Some(c) = s.as_mut()
            && c.write_all(b"POST /git-annex/x/v4/put HTTP/1.1\r\nHost: x\r\nX-Slow: ").is_err()
        {
            s = None;
        }
        slow.push(s);
    }
    while !stop.load(Ordering::SeqCst) && started.elapsed() < ATTACK_LIMIT {
        for s in slow.iter_mut() {
            let ok = s.as_mut().is_some_and(|c| c.write_all(b"a").is_ok() && !closed(c));
            if !ok {
                *s = connect(addr).and_then(|mut c| {
                    c.write_all(b"POST /git-annex/x/v4/put HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        .ok()?;
                    Some(c)
                });
                reopened.fetch_add(1, Ordering::SeqCst);
            }
        }
        for s in idle.iter_mut() {
            if s.as_mut().is_none_or(closed) {
                *s = connect(addr);
                reopened.fetch_add(1, Ordering::SeqCst);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_copy_and_get_complete_while_idle_and_slowloris_connections_are_held() {
    raise_own_nofile_limit();
    let mesh = Mesh::separate(3);
    let pid = mesh.procs.iter().find(|p| p.name == "gateway").unwrap().pid();
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (data, _key) = client.annex_file("big.bin", 50 * 1024 * 1024, 11);
    let before = usage(pid);
    eprintln!("gateway before: RSS {} kB, {} descriptors", before.0, before.1);

    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    let attacker = {
        let (stop, reopened) = (stop.clone(), reopened.clone());
        let addr = mesh.http;
        std::thread::spawn(move || attack(addr, stop, reopened))
    };
    // Let the attack's connections be open before the client starts.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(30) && usage(pid).1 < before.1 + IDLE {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut peak = usage(pid);
    eprintln!("gateway under attack: RSS {} kB, {} descriptors", peak.0, peak.1);

    // The client works meanwhile; sample the gateway while it does.
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = (0u64, 0usize);
            let started = Instant::now();
            while !sampling.load(Ordering::SeqCst) && started.elapsed() < ATTACK_LIMIT {
                let u = usage(pid);
                peak = (peak.0.max(u.0), peak.1.max(u.1));
                std::thread::sleep(Duration::from_millis(250));
            }
            peak
        })
    };
    let started = Instant::now();
    client.ok(&["git", "annex", "copy", "--to", "mesh", "big.bin"]);
    client.ok(&["git", "annex", "drop", "big.bin"]);
    client.ok(&["git", "annex", "get", "--from", "mesh", "big.bin"]);
    let took = started.elapsed();
    sampling.store(true, Ordering::SeqCst);
    let sampled = sampler.join().unwrap();
    peak = (peak.0.max(sampled.0), peak.1.max(sampled.1));
    stop.store(true, Ordering::SeqCst);
    attacker.join().unwrap();

    let back = std::fs::read(client.path().join("big.bin")).unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    eprintln!(
        "copy, drop and get of 50 MiB took {took:?}; gateway peak: RSS {} kB, {} descriptors; \
         the attack reopened {} connections the gateway closed",
        peak.0,
        peak.1,
        reopened.load(Ordering::SeqCst)
    );
    assert!(peak.0 < 400 * 1024, "gateway RSS reached {} kB", peak.0);
    assert!(peak.1 < 4096 + 200, "gateway held {} descriptors", peak.1);
}

#[test]
fn locks_over_the_per_client_cap_answer_not_locked() {
    let mut mesh = Mesh::separate(3);
    let cluster = mesh.uuid_of("mesh");
    mesh.restart_gateway_with(&["--wideopen", "--max-locks-per-client", "2"]);
    let base = format!("{}/git-annex/{cluster}/v4", mesh.url());
    let client = "0a1b2c3d-0000-4000-8000-000000000003";
    let json = |(status, body): (u16, String)| -> serde_json::Value {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {status} {body}"))
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        let key = format!("WORM-s5-m1--lock{i}");
        let put = format!("{base}/put?key={key}&clientuuid={client}");
        let stored = json(common::http_post(&put, &[("X-git-annex-data-length", "5")], b"lock!"));
        assert_eq!(stored["stored"], true, "{stored}");
        let lock = format!("{base}/lockcontent?key={key}&clientuuid={client}");
        let r = json(common::http_post(&lock, &[], b""));
        if i < 2 {
            assert_eq!(r["locked"], true, "lock {i}: {r}");
            ids.push(r["lockid"].as_str().unwrap().to_string());
        } else {
            assert_eq!(r["locked"], false, "a third lock from one client: {r}");
        }
    }
    // Releasing one makes room again.
    let unlock = format!("{base}/keeplocked?lockid={}&clientuuid={client}", ids[0]);
    common::http_post(&unlock, &[], br#"{"unlock": true}"#);
    let lock = format!("{base}/lockcontent?key=WORM-s5-m1--lock2&clientuuid={client}");
    assert_eq!(json(common::http_post(&lock, &[], b""))["locked"], true);
}
