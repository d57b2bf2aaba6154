//! A node whose store cannot be written, with real processes and the real
//! git-annex: the node is degraded (in `admin node list`), the gateway
//! counts its failed PUTs, later PUTs avoid it, and once it is writable
//! again it is up and repair gives it the copies written meanwhile.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Client, Mesh, http_get, objects_named, wait_until};

/// A read-only tmpfs mounted over a directory for as long as it lives. The
/// tests run as root, so permissions would not stop the agent's writes.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn over(dir: &Path) -> ReadOnlyMount {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "cannot mount a read-only tmpfs over {} (this test needs root or CAP_SYS_ADMIN \
             to make a store unwritable): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        ReadOnlyMount(dir.to_path_buf())
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.0).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("cannot unmount {}: {out:?}", self.0.display());
        }
    }
}

/// The HEALTH column of `node` in `admin node list`.
fn health(mesh: &Mesh, node: &str) -> String {
    mesh.node_field(node, "health")
}

/// A per-node series from the gateway's /metrics.
fn node_metric(mesh: &Mesh, name: &str, node: &str) -> u64 {
    let (status, body) = http_get(&format!("{}/metrics", mesh.url())).expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    let prefix = format!("{name}{{node=\"{node}\",");
    body.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}...}} in:\n{body}"))
}

/// Lines of the gateway's log that tell of a PUT failing on `node`.
fn put_failures_logged(mesh: &Mesh, node: &str) -> usize {
    let log = std::fs::read_to_string(mesh.dir.path().join("gateway.log")).unwrap();
    log.lines().filter(|l| l.contains("put failed") && l.contains(node)).count()
}

fn holds(mesh: &Mesh, node: &str, key: &str, data: &[u8]) -> bool {
    let store = mesh.store_of(node);
    objects_named(&store, key).iter().any(|p| std::fs::read(p).is_ok_and(|d| d == data))
}

#[test]
fn an_unwritable_node_is_degraded_avoided_and_repaired_once_writable() {
    let mesh = Mesh::separate_with_coordinator_args(3, &["--repair-interval", "1s"]);
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    client.add_remote("n2", &format!("{}/node2", mesh.url()));
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            let name = format!("f{i}.bin");
            let data = client.write_file(&name, 20_000 + i * 1000, 70 + i as u64);
            (name, data)
        })
        .collect();
    client.ok(&["git", "annex", "add", "."]);
    client.ok(&["git", "commit", "-q", "-m", "files"]);
    let keys: Vec<String> = files.iter().map(|(f, _)| client.key_of(f)).collect();
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f0.bin"]);
    mesh.assert_held_everywhere(&keys[0], &files[0].1);

    let mount = ReadOnlyMount::over(&mesh.store_of("node2").join("annex/tmp"));
    // The cluster still takes the file: the other nodes store it.
    let out = client.ok(&["git", "annex", "copy", "--to", "mesh", "f1.bin"]);
    assert!(out.contains("ok"), "{out}");
    // The node's own heartbeat may degrade it before that PUT reached it;
    // a PUT to the node addressed alone reaches it in any case, and fails.
    let direct = client.run(&["git", "annex", "copy", "--to", "n2", "f1.bin"]);
    assert!(!direct.status.success(), "a PUT to the read-only node alone must fail");
    wait_until("node2 to be degraded", Duration::from_secs(30), || {
        health(&mesh, "node2") == "degraded"
    });
    assert!(node_metric(&mesh, "annexmesh_node_put_failures_total", "node2") > 0);
    assert_eq!(node_metric(&mesh, "annexmesh_node_put_failures_total", "node1"), 0);
    wait_until("the gateway to see node2 degraded", Duration::from_secs(10), || {
        node_metric(&mesh, "annexmesh_node_degraded", "node2") == 1
    });

    // Later PUTs leave node2 out: no failure on it, no object in its store.
    let failures_before = put_failures_logged(&mesh, "node2");
    for (name, _) in &files[2..] {
        let out = client.ok(&["git", "annex", "copy", "--to", "mesh", name]);
        assert!(out.contains("ok"), "{out}");
    }
    assert_eq!(put_failures_logged(&mesh, "node2"), failures_before, "a PUT went to node2");
    for (i, (_, data)) in files.iter().enumerate().skip(1) {
        assert!(!holds(&mesh, "node2", &keys[i], data), "node2 got {}", keys[i]);
        assert!(holds(&mesh, "node1", &keys[i], data) && holds(&mesh, "node3", &keys[i], data));
    }
    assert_eq!(health(&mesh, "node2"), "degraded");

    // Writable again: the node is up, and repair copies what it missed.
    drop(mount);
    wait_until("node2 to be up again", Duration::from_secs(60), || health(&mesh, "node2") == "up");
    wait_until("repair to restore node2's copies", Duration::from_secs(60), || {
        files.iter().enumerate().skip(1).all(|(i, (_, data))| holds(&mesh, "node2", &keys[i], data))
    });
    // And the client still reads every file back intact.
    client.ok(&["git", "annex", "drop", "--force", "."]);
    client.ok(&["git", "annex", "get", "--from", "mesh", "."]);
    for (name, data) in &files {
        assert_eq!(std::fs::read(client.path().join(name)).unwrap(), *data, "{name}");
    }
}
