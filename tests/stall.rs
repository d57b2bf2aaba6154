//! A node frozen (SIGSTOP) part-way through a PUT: the real git-annex
//! client's copy completes on the other nodes within a bounded time, the
//! frozen node is not recorded as holding the content, and the others are
//! held back by no more than the gateway's stall timeout.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Client, Mesh, objects_named};

/// The gateway's stall timeout in this test (`ANNEXMESH_STALL_TIMEOUT`):
/// short, so the others' hold is a few seconds.
const STALL: &str = "5s";

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// Bytes of an upload of `key` the node has received so far.
fn received(store: &Path, key: &str) -> u64 {
    let partial = std::fs::metadata(store.join("annex/tmp").join(key)).map_or(0, |m| m.len());
    let whole =
        objects_named(store, key).first().map_or(0, |p| std::fs::metadata(p).unwrap().len());
    partial.max(whole)
}

#[test]
fn a_frozen_node_is_dropped_from_a_put_and_the_others_complete() {
    // Only the gateway reads it; set before any process starts.
    // SAFETY: this binary's only test; no other thread reads the environment.
    unsafe { std::env::set_var("ANNEXMESH_STALL_TIMEOUT", STALL) };
    let mut mesh = Mesh::separate(3);
    let token = mesh.token(&[]);
    let client = Client::new();
    client.p2p_link("mesh", &format!("p2p-annex::annexmesh:{}/mesh:{token}", mesh.p2p));

    let size = 100 * 1024 * 1024;
    let (_data, key) = client.annex_file("big.bin", size, 11);
    let stores: Vec<_> = (1..=3).map(|i| mesh.store_of(&format!("node{i}"))).collect();
    let mut copy = client
        .command(&["git", "annex", "copy", "--to", "mesh", "big.bin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Freeze node3 once it has some of the data.
    let started = Instant::now();
    while received(&stores[2], &key) < 10 * 1024 * 1024 {
        assert!(started.elapsed() < Duration::from_secs(60), "node3 never received 10 MiB");
        assert!(copy.try_wait().unwrap().is_none(), "the copy ended before node3 was frozen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let node3 = mesh.proc("node3").pid();
    signal(node3, libc::SIGSTOP);
    let frozen = Instant::now();
    let at_freeze: Vec<u64> = stores.iter().map(|s| received(s, &key)).collect();
    println!(
        "node3 frozen {:?} into the copy; received then (bytes): {at_freeze:?}",
        frozen - started
    );

    // The copy completes; note when node1 and node2 have it all.
    let mut done: [Option<Duration>; 2] = [None, None];
    let status = loop {
        for (i, d) in done.iter_mut().enumerate() {
            if d.is_none() && !objects_named(&stores[i], &key).is_empty() {
                *d = Some(frozen.elapsed());
            }
        }
        if let Some(s) = copy.try_wait().unwrap() {
            break s;
        }
        if frozen.elapsed() > Duration::from_secs(90) {
            let _ = copy.kill();
            signal(node3, libc::SIGCONT);
            panic!("the copy hung for 90 s after node3 froze");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = frozen.elapsed();
    let out = copy.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!(
        "copy finished {took:?} after the freeze (stall timeout {STALL}); node1 complete at {:?}, node2 at {:?}",
        done[0], done[1]
    );
    signal(node3, libc::SIGCONT);
    assert!(status.success(), "the copy failed:\n{text}");

    for (i, store) in stores.iter().take(2).enumerate() {
        assert!(!objects_named(store, &key).is_empty(), "node{} does not hold {key}", i + 1);
    }
    assert!(objects_named(&stores[2], &key).is_empty(), "the frozen node stored {key}");
    let whereis = client.ok(&["git", "annex", "whereis", "big.bin"]);
    assert!(whereis.contains(&mesh.uuid_of("node1")), "{whereis}");
    assert!(whereis.contains(&mesh.uuid_of("node2")), "{whereis}");
    assert!(!whereis.contains(&mesh.uuid_of("node3")), "whereis lists the frozen node:\n{whereis}");
}
