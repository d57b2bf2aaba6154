//! Data safety on the agent, end to end with the real git-annex: corrupt
//! copies are refused, quarantined and struck while good copies serve;
//! the scrubber finds rot at rest; partial uploads expire; a full disk is
//! reported plainly; and one agent at a time owns a store.

mod common;

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use common::{Client, Mesh, objects_named, wait_until};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Flips one bit of a stored object in place, with a real write (root may
/// write the read-only file).
fn flip_bit(path: &Path, at: u64) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.seek(std::io::SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x10;
    f.seek(std::io::SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

fn whereis(mesh: &Mesh, key: &str) -> String {
    let out = mesh.admin(&["whereis", key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lists(whereis: &str, node: &str) -> bool {
    whereis.lines().any(|l| l.trim_end().ends_with(&format!("-- {node}")))
}

fn set_cost(mesh: &Mesh, node: &str, cost: u32) {
    let out = mesh.admin(&["node", "cost", node, &cost.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gauge = format!("annexmesh_node_cost{{node=\"{node}\",uuid=\"{}\"}}", mesh.uuid_of(node));
    wait_until("the gateway to see the new cost", Duration::from_secs(30), || {
        Mesh::metric(&mesh.url(), &gauge) == u64::from(cost)
    });
}

/// A client with `file` copied to the mesh's three nodes and dropped
/// locally; returns it, the content and the key.
fn stored_on_all(mesh: &Mesh, file: &str, len: usize) -> (Client, Vec<u8>, String) {
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (data, key) = client.annex_file(file, len, 7);
    client.ok(&["git", "annex", "copy", "--to", "mesh", file]);
    mesh.assert_held_everywhere(&key, &data);
    client.ok(&["git", "annex", "drop", file]);
    (client, data, key)
}

/// Corrupts node1's copy and makes node1 the one a GET reads first.
fn corrupt_cheapest(mesh: &Mesh, key: &str) -> PathBuf {
    set_cost(mesh, "node1", 10);
    set_cost(mesh, "node2", 200);
    set_cost(mesh, "node3", 300);
    let obj = objects_named(&mesh.store_of("node1"), key).pop().expect("node1 holds the key");
    flip_bit(&obj, 1000);
    obj
}

/// node1's copy left annex/objects for annex/bad and the log; node2 and
/// node3 still hold `data`.
fn assert_quarantined_on_node1(mesh: &Mesh, key: &str, data: &[u8]) {
    let store = mesh.store_of("node1");
    assert!(objects_named(&store, key).is_empty(), "the corrupt copy is still in annex/objects");
    let bad = std::fs::read(store.join("annex/bad").join(key)).expect("the copy is in annex/bad");
    assert_eq!(bad.len(), data.len());
    assert_ne!(bad, data);
    let w = whereis(mesh, key);
    assert!(!lists(&w, "node1"), "node1 still listed:\n{w}");
    for node in ["node2", "node3"] {
        let objs = objects_named(&mesh.store_of(node), key);
        assert_eq!(objs.len(), 1, "{node} lost its copy");
        assert!(Sha256::digest(std::fs::read(&objs[0]).unwrap()) == Sha256::digest(data));
        assert!(lists(&w, node), "{node} not listed:\n{w}");
    }
}

#[test]
fn get_succeeds_while_the_cheapest_copy_is_corrupt_and_that_copy_is_quarantined() {
    let mesh = Mesh::separate(3);
    let (client, data, key) = stored_on_all(&mesh, "big.bin", 3 * MIB);
    corrupt_cheapest(&mesh, &key);
    client.ok(&["git", "annex", "get", "--from", "mesh", "big.bin"]);
    assert_eq!(std::fs::read(client.path().join("big.bin")).unwrap(), data);
    assert_quarantined_on_node1(&mesh, &key, &data);
}

/// `key` is back on all three nodes, each holding exactly `data`, and the
/// log lists all three.
fn assert_repaired_everywhere(mesh: &Mesh, key: &str, data: &[u8]) {
    mesh.assert_held_everywhere(key, data);
    let w = whereis(mesh, key);
    for node in ["node1", "node2", "node3"] {
        assert!(lists(&w, node), "{node} not listed after repair:\n{w}");
    }
}

/// Background repair off, so that the quarantined state can be checked
/// before a repair pass (run on request here) makes the copy again.
const NO_REPAIR_LOOP: [&str; 2] = ["--repair-interval", "0"];

#[test]
fn fsck_from_the_mesh_deletes_no_good_copy_and_passes_again() {
    let mesh = Mesh::separate_with_coordinator_args(3, &NO_REPAIR_LOOP);
    let (client, data, key) = stored_on_all(&mesh, "f.bin", 2 * MIB);
    corrupt_cheapest(&mesh, &key);
    // Whether this first fsck reports the bad copy or reads a good one, no
    // good copy may be lost, and the corrupt one must be set aside.
    let first = client.run(&["git", "annex", "fsck", "--from", "mesh", "f.bin"]);
    assert_quarantined_on_node1(&mesh, &key, &data);
    client.ok(&["git", "annex", "fsck", "--from", "mesh", "f.bin"]);
    assert_quarantined_on_node1(&mesh, &key, &data);
    drop(first);

    // Repair brings the key back to three verified copies, and the
    // cheapest node (node1 again) passes fsck.
    let done = mesh.admin_ok(&["repair"]);
    assert!(done.contains("1 copies made"), "{done}");
    assert_repaired_everywhere(&mesh, &key, &data);
    client.ok(&["git", "annex", "fsck", "--from", "mesh", "f.bin"]);
    assert_repaired_everywhere(&mesh, &key, &data);
}

#[test]
fn the_scrubber_quarantines_rot_at_rest_and_strikes_it() {
    let nodes = ["node1", "node2", "node3"];
    let args = ["--scrub-rate", "200", "--scrub-interval", "1s"];
    let mesh = Mesh::separate_with_args(nodes.len(), &NO_REPAIR_LOOP, &args);
    let (_client, data, key) = stored_on_all(&mesh, "rot.bin", MIB);
    let obj = objects_named(&mesh.store_of("node2"), &key).pop().unwrap();
    flip_bit(&obj, 4096);
    let bad = mesh.store_of("node2").join("annex/bad").join(&key);
    wait_until("the scrubber to quarantine the copy", Duration::from_secs(60), || bad.exists());
    assert!(objects_named(&mesh.store_of("node2"), &key).is_empty());
    wait_until("node2 to be struck from the log", Duration::from_secs(30), || {
        !lists(&whereis(&mesh, &key), "node2")
    });
    for node in ["node1", "node3"] {
        let objs = objects_named(&mesh.store_of(node), &key);
        assert_eq!(std::fs::read(&objs[0]).unwrap(), data, "{node}'s good copy");
    }
    // Repair makes node2's copy again, with the right bytes.
    mesh.admin_ok(&["repair"]);
    assert_repaired_everywhere(&mesh, &key, &data);
}

#[test]
fn an_admin_scrub_finds_rot_at_once_and_the_repair_loop_mends_it() {
    let repair = ["--repair-interval", "1s", "--repair-grace", "2s"];
    let mesh = Mesh::separate_with_coordinator_args(3, &repair);
    let (client, data, key) = stored_on_all(&mesh, "rot.bin", MIB);
    let obj = objects_named(&mesh.store_of("node2"), &key).pop().unwrap();
    flip_bit(&obj, 4096);

    // On request, at full speed: the bad copy is named and set aside, and
    // the command fails because there was one.
    let out = mesh.admin(&["scrub", "--node", "node2"]);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a bad copy was found:\n{stdout}{stderr}");
    assert!(stdout.contains("node2: 1 objects checked, 1.0 MiB, 1 bad"), "{stdout}");
    assert!(stdout.contains(&format!("node2: {key}: bad copy quarantined")), "{stdout}");
    assert!(!stdout.contains("node1") && !stdout.contains("node3"), "{stdout}");
    assert!(stderr.contains("1 bad copy quarantined"), "{stderr}");
    let bad = std::fs::read(mesh.store_of("node2").join("annex/bad").join(&key)).unwrap();
    assert_ne!(bad, data);

    // The repair loop makes the copy again from a good holder.
    wait_until("node2's copy to be made again", Duration::from_secs(60), || {
        objects_named(&mesh.store_of("node2"), &key)
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b == data))
    });
    wait_until("node2 to be listed again", Duration::from_secs(30), || {
        lists(&whereis(&mesh, &key), "node2")
    });
    assert_repaired_everywhere(&mesh, &key, &data);
    let again = mesh.admin_ok(&["scrub"]);
    for node in ["node1", "node2", "node3"] {
        assert!(again.contains(&format!("{node}: 1 objects checked, 1.0 MiB, 0 bad")), "{again}");
    }
    client.ok(&["git", "annex", "get", "--from", "mesh", "rot.bin"]);
    client.ok(&["git", "annex", "fsck", "--from", "mesh", "rot.bin"]);

    // A node that does not exist is an error.
    let out = mesh.admin(&["scrub", "--node", "nosuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown node"));
}

/// A request body that sends `first` bytes, then waits until told to fail.
struct Stalling {
    data: Vec<u8>,
    pos: usize,
    first: usize,
    release: mpsc::Receiver<()>,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.first {
            let _ = self.release.recv();
            return Err(std::io::Error::other("the test ended the upload"));
        }
        let n = buf.len().min(self.first - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn stale_partials_expire_but_not_one_being_written() {
    let args = ["--partial-max-age", "30s"];
    let mesh = Mesh::separate_with(&["node1"], &args, |_, _| {});
    let tmp = mesh.store_of("node1").join("annex/tmp");

    // An upload that stalls half way: its partial is being written.
    let data = vec![42u8; 2 * MIB];
    let key = format!("SHA256E-s{}--{}", data.len(), hex::encode(Sha256::digest(&data)));
    let url = format!(
        "{}/git-annex/{}/v4/put?key={key}&clientuuid=6d4e3c1a-8f0b-4a52-9c3e-2b7d9e1f0a44",
        mesh.url(),
        mesh.uuid_of("mesh")
    );
    let (release, rx) = mpsc::channel();
    let upload = std::thread::spawn(move || {
        let mut body = Stalling { data, pos: 0, first: 3 * MIB / 2, release: rx };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let _ = agent
            .post(&url)
            .header("X-git-annex-data-length", (2 * MIB).to_string())
            .send(ureq::SendBody::from_reader(&mut body));
    });
    let writing = tmp.join(&key);
    wait_until("the upload's partial", Duration::from_secs(30), || {
        std::fs::metadata(&writing).is_ok_and(|m| m.len() > 0)
    });
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let set_old = |p: &Path| {
        std::fs::File::options().write(true).open(p).unwrap().set_modified(hour_ago).unwrap()
    };
    set_old(&writing);

    // A partial left by an upload that never came back.
    let stale = tmp.join("WORM-s10-m1--abandoned");
    std::fs::write(&stale, b"0123456789").unwrap();
    set_old(&stale);
    wait_until("the stale partial to go", Duration::from_secs(60), || !stale.exists());
    // The sweep that removed it saw the stalled upload's partial too.
    assert!(writing.exists(), "the partial of an upload under way was removed");

    release.send(()).unwrap();
    upload.join().unwrap();
}

/// A tmpfs mounted for the test; unmounted when dropped, whatever happened.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a {size} tmpfs (run it as root, or where mount is \
             permitted): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir.to_path_buf())
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        s.blocks_available() * s.fragment_size()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn an_upload_into_a_full_disk_says_so_and_leaves_no_partial() {
    // The node's uploads land on a 50 MB filesystem, while the store's root
    // (what the agent reports, and placement goes by) has room: the disk
    // fills up after the upload was planned, as when other data grows.
    let fs_dir = tempfile::tempdir().unwrap();
    let small = SmallFs::mount(&fs_dir.path().join("small"), "50m");
    let mesh = Mesh::separate_with(&["node1"], &[], |_, store| {
        std::fs::create_dir_all(store.join("annex")).unwrap();
        std::os::unix::fs::symlink(&small.0, store.join("annex/tmp")).unwrap();
    });
    let before = small.free();
    let client = Client::new();
    client.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (_, key) = client.annex_file("huge.bin", 100 * MIB, 3);
    let out = client.run(&["git", "annex", "copy", "--to", "mesh", "huge.bin"]);
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the copy cannot succeed:\n{said}");
    // git-annex itself shows the node, the cause and the numbers (the
    // gateway's HTTP 507 carries them in its reason phrase).
    assert!(said.contains("507"), "no HTTP 507 in git-annex's output:\n{said}");
    let cause = "node1: no space left on device (";
    let line = said.lines().find(|l| l.contains(cause));
    let line = line.unwrap_or_else(|| panic!("git-annex did not say why:\n{said}"));
    assert!(line.contains("bytes free,") && line.contains(&key), "{line}");
    assert!(!small.0.join(&key).exists(), "the partial of the failed upload is kept");
    assert!(small.free() >= before - 1024 * 1024, "the space did not come back");
    drop(mesh);
}

#[test]
fn a_second_agent_on_a_live_store_refuses_to_start() {
    let mesh = Mesh::separate(1);
    let list = |m: &Mesh| m.node_list();
    let before = list(&mesh);
    let node1 = |l: &[serde_json::Value]| l.iter().find(|n| n["name"] == "node1").cloned();
    assert!(node1(&before).is_some(), "{before:?}");
    let store = mesh.store_of("node1");
    let out =
        mesh.agent_command("intruder", &store).args(mesh.agent_tls_args(&store)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second agent started:\n{stderr}");
    assert!(stderr.contains("annexmesh.lock"), "the lock is not named:\n{stderr}");
    assert!(stderr.contains("node node1"), "the holder is not named:\n{stderr}");
    let after = list(&mesh);
    assert!(!after.iter().any(|n| n["name"] == "intruder"), "{after:?}");
    // Name, UUID and address; free space moves on its own.
    let who = |n: Option<serde_json::Value>| {
        let n = n.expect("node1 is listed");
        (n["name"].clone(), n["uuid"].clone(), n["address"].clone())
    };
    assert_eq!(who(node1(&after)), who(node1(&before)), "node1's entry changed");
    assert_eq!(node1(&after).unwrap()["health"], "up", "{after:?}");
}
