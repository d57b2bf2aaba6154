//! Every gateway serves the cluster's git repository, which lives on the
//! coordinator: smart HTTP at `/NAME`, `/NAME/` and `/NAME.git` (and at a
//! node's name or the cluster's UUID), ssh through `annexmesh shell`, and
//! the line protocol's CONNECT; with the content's access modes, and with
//! concurrent pushes serialised by git's ref locking.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{Client, Mesh};

/// A git working repository inside a client's directory (its HOME and
/// environment are the client's).
struct Work<'a> {
    client: &'a Client,
    dir: PathBuf,
}

impl<'a> Work<'a> {
    /// `git clone URL NAME` inside `client`'s directory.
    fn clone(client: &'a Client, url: &str, name: &str) -> Work<'a> {
        client.ok(&["git", "clone", "-q", url, name]);
        Work { client, dir: client.path().join(name) }
    }

    fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.to_str().unwrap();
        let mut full = vec!["git", "-C", dir];
        full.extend_from_slice(args);
        self.client.command(&full).stdin(std::process::Stdio::null()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "git {args:?} in {}: {}\n{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit(&self, file: &str, text: &str) -> String {
        std::fs::write(self.dir.join(file), text).unwrap();
        self.ok(&["add", file]);
        self.ok(&["commit", "-q", "-m", &format!("{file}: {text}")]);
        self.ok(&["rev-parse", "HEAD"])
    }
}

/// The repository the coordinator keeps for the cluster `mesh`.
fn served_repo(mesh: &Mesh) -> PathBuf {
    let uuid = mesh.uuid_of("mesh");
    mesh.dir.path().join("coordinator").join("git").join(format!("{uuid}.git"))
}

fn served_ref(repo: &Path, r: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["rev-parse", "--verify", "-q", r])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn assert_fsck_clean(repo: &Path) {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["fsck", "--strict", "--no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git fsck of the served repository: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clone_push_and_fetch_through_any_gateway_and_name() {
    let mut mesh = Mesh::separate(1);
    let a = mesh.url();
    let b = mesh.add_gateway("gateway2");
    let client = Client::new();

    // The empty repository clones (git warns that it is empty).
    let w = Work::clone(&client, &format!("{a}/mesh"), "w");
    let first = w.commit("README", "one");
    w.ok(&["push", "-q", "origin", "main"]);
    assert_eq!(served_ref(&served_repo(&mesh), "refs/heads/main").as_deref(), Some(&*first));

    // Seen at once through the other gateway, under every name of it.
    let uuid = mesh.uuid_of("mesh");
    let names = ["mesh", "mesh/", "mesh.git", "node1", &uuid];
    for (i, name) in names.iter().enumerate() {
        let c = Work::clone(&client, &format!("{b}/{name}"), &format!("b{i}"));
        assert_eq!(c.ok(&["rev-parse", "HEAD"]), first, "through {name}");
    }

    // A push through B is fetched through A.
    let other = Work { client: &client, dir: client.path().join("b2") };
    let second = other.commit("README", "two");
    other.ok(&["push", "-q", "origin", "main"]);
    w.ok(&["pull", "-q", "--ff-only", "origin", "main"]);
    assert_eq!(w.ok(&["rev-parse", "HEAD"]), second);

    // Protocol v2 and v0 both work (git speaks v2 by default).
    let v0 = Work::clone(&client, &format!("{a}/mesh"), "v0");
    v0.ok(&["-c", "protocol.version=0", "fetch", "-q", "origin"]);
    assert_eq!(v0.ok(&["rev-parse", "origin/main"]), second);
    assert_fsck_clean(&served_repo(&mesh));
}

#[test]
fn concurrent_pushes_one_ref_one_wins_different_refs_both_land() {
    let mut mesh = Mesh::separate(0);
    let a = mesh.url();
    let b = mesh.add_gateway("gateway2");
    let client = Client::new();
    let seed = Work::clone(&client, &format!("{a}/mesh"), "seed");
    seed.commit("base", "base");
    seed.ok(&["push", "-q", "origin", "main"]);
    let wa = Work::clone(&client, &format!("{a}/mesh"), "wa");
    let wb = Work::clone(&client, &format!("{b}/mesh"), "wb");
    let repo = served_repo(&mesh);

    for round in 0..3 {
        let ca = wa.commit("a", &format!("a{round}"));
        let cb = wb.commit("b", &format!("b{round}"));
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| wa.run(&["push", "origin", "main"]));
            let tb = s.spawn(|| wb.run(&["push", "origin", "main"]));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let won: Vec<bool> = [&ra, &rb].iter().map(|o| o.status.success()).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "exactly one push wins:\n{}\n{}",
            String::from_utf8_lossy(&ra.stderr),
            String::from_utf8_lossy(&rb.stderr)
        );
        let (winner, loser) = if won[0] { (&ca, &rb) } else { (&cb, &ra) };
        let why = String::from_utf8_lossy(&loser.stderr);
        assert!(why.contains("rejected"), "the loser is told it was rejected: {why}");
        assert_eq!(served_ref(&repo, "refs/heads/main").as_deref(), Some(winner.as_str()));
        // Both catch up for the next round.
        for w in [&wa, &wb] {
            w.ok(&["pull", "-q", "--no-rebase", "--no-edit", "origin", "main"]);
            w.ok(&["push", "-q", "origin", "main"]);
        }
    }

    // Different refs: both land.
    let ca = wa.commit("x", "x");
    let cb = wb.commit("y", "y");
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| wa.run(&["push", "origin", "HEAD:refs/heads/from-a"]));
        let tb = s.spawn(|| wb.run(&["push", "origin", "HEAD:refs/heads/from-b"]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(ra.status.success() && rb.status.success(), "{ra:?}\n{rb:?}");
    assert_eq!(served_ref(&repo, "refs/heads/from-a"), Some(ca));
    assert_eq!(served_ref(&repo, "refs/heads/from-b"), Some(cb));
    assert_fsck_clean(&repo);
}

#[test]
fn bad_requests_change_nothing() {
    let mesh = Mesh::separate_with_coordinator_args(0, &["--git-max-push", "1MiB"]);
    let a = mesh.url();
    let client = Client::new();
    let w = Work::clone(&client, &format!("{a}/mesh"), "w");
    let head = w.commit("small", "small");
    w.ok(&["push", "-q", "origin", "main"]);
    let repo = served_repo(&mesh);

    let get = |path: &str| common::http_get(&format!("{a}{path}")).unwrap().0;
    assert_eq!(get("/nosuch/info/refs?service=git-upload-pack"), 404);
    assert_eq!(get("/mesh/info/refs?service=git-frobnicate"), 403);
    // Dumb HTTP is not served.
    assert_eq!(get("/mesh/info/refs"), 403);
    assert_eq!(get("/mesh/info/refs?service=git-upload-pack"), 200);
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        common::http_post(&format!("{a}{path}"), headers, body).0
    };
    assert_eq!(post("/nosuch/git-upload-pack", &[], b"0000"), 404);
    assert_eq!(post("/mesh/git-frobnicate", &[], b"0000"), 404);
    // Malformed pkt-lines: git fails, and says so.
    assert_eq!(post("/mesh/git-receive-pack", &[], b"zzzz not a pkt-line"), 500);
    assert_eq!(post("/mesh/git-upload-pack", &[], b"00zzgarbage"), 500);
    // A push that claims to update main with garbage after it.
    let zero = "0".repeat(40);
    let cmd = format!("{zero} {head} refs/heads/main\0report-status\n");
    let mut body = format!("{:04x}{cmd}0000", cmd.len() + 4).into_bytes();
    body.extend_from_slice(b"PACK garbage");
    let status = post("/mesh/git-receive-pack", &[], &body);
    assert_ne!(status, 0);
    assert_eq!(served_ref(&repo, "refs/heads/main").as_deref(), Some(head.as_str()));

    // Gzip that inflates to 4 MiB of commands git reads to the end: past
    // --git-max-push, refused.
    let line = format!("{zero} {head} refs/heads/x\n");
    let pkt = format!("{:04x}{line}", line.len() + 4);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..(4 << 20) / pkt.len() {
        std::io::Write::write_all(&mut enc, pkt.as_bytes()).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 64 * 1024);
    let status = post("/mesh/git-receive-pack", &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!(status, 413, "an oversize body is refused");

    // An oversize push is refused and changes nothing.
    let mut big = vec![0u8; 4 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(w.dir.join("big"), &big).unwrap();
    w.ok(&["add", "big"]);
    w.ok(&["commit", "-q", "-m", "big"]);
    let out = w.run(&["push", "origin", "main"]);
    assert!(!out.status.success(), "an oversize push is refused");
    assert_eq!(served_ref(&repo, "refs/heads/main").as_deref(), Some(head.as_str()));

    // Still serving, and nothing is corrupt.
    let again = Work::clone(&client, &format!("{a}/mesh"), "again");
    assert_eq!(again.ok(&["rev-parse", "HEAD"]), head);
    assert_fsck_clean(&repo);
    let _ = Duration::ZERO;
}

#[test]
fn slash_and_dot_git_urls_are_git_annex_remotes() {
    let mesh = Mesh::separate(3);
    let url = mesh.url();
    let cluster = mesh.uuid_of("mesh");
    let a = Client::new();
    a.add_remote("origin", &format!("{url}/mesh/"));
    a.add_remote("dotgit", &format!("{url}/mesh.git"));
    let (data, key) = a.annex_file("file.bin", 100_000, 7);
    a.ok(&["git", "annex", "copy", "--to", "origin", "file.bin"]);
    mesh.assert_held_everywhere(&key, &data);
    // As `git annex sync` pushes: the mesh itself moves `git-annex`, so a
    // direct push of it can race the mesh's own commit.
    a.ok(&["git", "push", "-q", "origin", "main", "+git-annex:synced/git-annex"]);
    for remote in ["origin", "dotgit"] {
        a.ok(&["git", "annex", "checkpresentkey", &key, remote]);
    }
    // The branch fetched through either form names the nodes, so the drop
    // locks their copies, as through the plain form.
    let whereis = a.ok(&["git", "annex", "whereis", "file.bin"]);
    assert!(whereis.contains("node1 [origin-node1]"), "{whereis}");
    a.ok(&["git", "annex", "drop", "file.bin"]);
    a.ok(&["git", "annex", "transferkey", &key, "--from", "dotgit", "--file", "file.bin"]);
    assert_eq!(std::fs::read(a.path().join("file.bin")).unwrap(), data);
    for remote in ["origin", "dotgit"] {
        let key = format!("remote.{remote}.annex-uuid");
        assert_eq!(a.ok(&["git", "config", &key]).trim(), cluster, "{remote}");
    }

    // A clone of the .git form has the commits and git-annex branch pushed
    // through the slash form, and stores content through it.
    let b = Client::new();
    let w = Work::clone(&b, &format!("{url}/mesh.git"), "w");
    w.ok(&["annex", "init", "second"]);
    w.ok(&["config", "annex.security.allowed-ip-addresses", "all"]);
    assert!(w.dir.join("file.bin").symlink_metadata().unwrap().file_type().is_symlink());
    w.ok(&["rev-parse", "--verify", "origin/git-annex"]);
    std::fs::write(w.dir.join("second.bin"), b"second file\n").unwrap();
    w.ok(&["annex", "add", "second.bin"]);
    w.ok(&["annex", "copy", "--to", "origin", "second.bin"]);
    assert_eq!(w.ok(&["config", "remote.origin.annex-uuid"]), cluster);
}

#[test]
fn ssh_through_annexmesh_shell_clones_and_pushes_over_connect() {
    let mesh = Mesh::separate(1);
    let ssh_dir = tempfile::tempdir().unwrap();
    let mut client = Client::new();
    client.env.push(("GIT_SSH_VARIANT".into(), "simple".into()));
    client.env.push(("GIT_SSH_COMMAND".into(), mesh.fake_ssh(ssh_dir.path(), &mesh.token(&[]))));

    // Empty, then with commits; pushes over ssh are seen over HTTP.
    let w = Work::clone(&client, "ssh://gateway.invalid/~/mesh", "w");
    // Over CONNECT git speaks protocol v0, which cannot name the empty
    // repository's unborn branch.
    w.ok(&["symbolic-ref", "HEAD", "refs/heads/main"]);
    let first = w.commit("f", "1");
    w.ok(&["push", "-q", "origin", "main"]);
    let second = w.commit("f", "2");
    w.ok(&["push", "-q", "origin", "main"]);
    assert_eq!(served_ref(&served_repo(&mesh), "refs/heads/main"), Some(second.clone()));
    let h = Work::clone(&client, &format!("{}/mesh", mesh.url()), "h");
    assert_eq!(h.ok(&["rev-parse", "HEAD"]), second);
    let s = Work::clone(&client, "gateway.invalid:mesh.git", "s");
    assert_eq!(s.ok(&["rev-parse", "HEAD~1"]), first);
    let log = std::fs::read_to_string(ssh_dir.path().join("ssh.log")).unwrap();
    assert!(log.contains("git-upload-pack '~/mesh'"), "{log}");
    assert!(log.contains("git-receive-pack '~/mesh'"), "{log}");

    // A readonly token fetches but may not push.
    let mut reader = Client::new();
    reader.env.push(("GIT_SSH_VARIANT".into(), "simple".into()));
    let ro = mesh.token(&["--readonly"]);
    reader.env.push(("GIT_SSH_COMMAND".into(), mesh.fake_ssh(ssh_dir.path(), &ro)));
    let r = Work::clone(&reader, "ssh://gateway.invalid/mesh", "r");
    r.commit("g", "3");
    let out = r.run(&["push", "origin", "main"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("read-only"), "{why}");
    assert_eq!(served_ref(&served_repo(&mesh), "refs/heads/main"), Some(second));
    assert_fsck_clean(&served_repo(&mesh));
}

#[test]
fn access_modes_as_for_content() {
    let mut mesh = Mesh::separate(0);
    mesh.restart_gateway_with(&["--auth-users", "--unauth", "readonly"]);
    let rw = mesh.user("writer", &[]);
    let ro = mesh.user("reader", &["--readonly"]);
    let ao = mesh.user("appender", &["--appendonly"]);
    let host = mesh.http;
    let url = |cred: &str| format!("http://{cred}@{host}/mesh");
    let mut client = Client::new();
    client.env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    let repo = served_repo(&mesh);

    let w = Work::clone(&client, &url(&format!("writer:{rw}")), "w");
    let base = w.commit("f", "base");
    w.ok(&["push", "-q", "origin", "main", "main:refs/heads/doomed"]);

    // Anonymous: clones; a push is asked for credentials (401).
    let anon = Work::clone(&client, &format!("http://{host}/mesh"), "anon");
    assert_eq!(anon.ok(&["rev-parse", "HEAD"]), base);
    anon.commit("f", "anon");
    let out = anon.run(&["push", "origin", "main"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("Authentication failed") || why.contains("could not read Username"),
        "{why}"
    );

    // Readonly user: clones; pushing is forbidden (403).
    let r = Work::clone(&client, &url(&format!("reader:{ro}")), "r");
    r.commit("f", "reader");
    let out = r.run(&["push", "origin", "main"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{out:?}");
    assert_eq!(served_ref(&repo, "refs/heads/main").as_deref(), Some(base.as_str()));

    // Appendonly user: pushes forward, but neither forces nor deletes.
    let a = Work::clone(&client, &url(&format!("appender:{ao}")), "a");
    let next = a.commit("f", "appended");
    a.ok(&["push", "-q", "origin", "main"]);
    assert_eq!(served_ref(&repo, "refs/heads/main").as_deref(), Some(next.as_str()));
    a.ok(&["reset", "-q", "--hard", &base]);
    let forced = a.commit("f", "rewritten");
    let out = a.run(&["push", "--force", "origin", "main"]);
    assert!(!out.status.success(), "a force push is refused");
    assert_eq!(served_ref(&repo, "refs/heads/main").as_deref(), Some(next.as_str()));
    let out = a.run(&["push", "origin", ":doomed"]);
    assert!(!out.status.success(), "a deletion is refused");
    assert_eq!(served_ref(&repo, "refs/heads/doomed").as_deref(), Some(base.as_str()));
    let _ = forced;

    // A read-write user may do both.
    w.ok(&["fetch", "-q", "origin"]);
    w.ok(&["push", "-q", "--force", "origin", "main", ":doomed"]);
    assert_eq!(served_ref(&repo, "refs/heads/main").as_deref(), Some(base.as_str()));
    assert_eq!(served_ref(&repo, "refs/heads/doomed"), None);
    assert_fsck_clean(&repo);
}
