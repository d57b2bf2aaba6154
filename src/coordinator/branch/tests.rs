//! The branch writer against a real bare repository and the git CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::annexbranch::location;
use crate::annexbranch::logs::UuidLog;
use crate::coordinator::DEFAULT_RESERVE;
use crate::coordinator::git::Repos;
use crate::coordinator::store::{Node, Store};

const N1: &str = "e9a1b2c3-0000-4000-8000-000000000001";
const N2: &str = "e9a1b2c3-0000-4000-8000-000000000002";
const N3: &str = "e9a1b2c3-0000-4000-8000-000000000003";
const CLIENT: &str = "e9a1b2c3-0000-4000-8000-0000000000cc";
const KEY: &str = "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

struct Mesh {
    _dir: tempfile::TempDir,
    core: Arc<Core>,
    cluster: String,
}

impl Mesh {
    async fn new() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let core = core(dir.path());
        let (c, _) = core.store.create_cluster("mesh").await.unwrap();
        let mesh = Mesh { _dir: dir, core, cluster: c.uuid };
        for (u, n) in [(N1, "node1"), (N2, "node2")] {
            mesh.join(u, n).await;
        }
        mesh
    }

    async fn join(&self, uuid: &str, name: &str) {
        let node = Node {
            uuid: uuid.into(),
            name: name.into(),
            cluster_uuid: self.cluster.clone(),
            address: "127.0.0.1:1".into(),
        };
        self.core.store.register_node(node).await.unwrap();
    }

    fn writer(&self) -> Writer {
        Writer::new(self.core.clone(), BranchConfig::default())
    }

    fn repo(&self) -> PathBuf {
        self.core.repos.path(&self.cluster).unwrap()
    }

    /// A file of `rev` in the cluster's repository.
    fn show(&self, rev: &str, path: &str) -> Option<String> {
        let out = git(&self.repo(), &["show", &format!("{rev}:{path}")]);
        out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
    }

    /// A UUID-based log of the branch, parsed.
    fn log(&self, file: &str) -> UuidLog {
        UuidLog::parse(structure::format_of(file), &self.show(BRANCH_REF, file).unwrap())
    }
}

fn core(dir: &Path) -> Arc<Core> {
    let store = Arc::new(Store::open(&dir.join("db")).unwrap());
    Arc::new(Core::new(store, DEFAULT_RESERVE, Arc::new(Repos::new(dir))))
}

fn git(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git").arg("--git-dir").arg(repo).args(args).output().unwrap()
}

/// Runs git in a work tree, asserting success.
fn work(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn structure_and_locations_reach_the_branch() {
    let m = Mesh::new().await;
    m.core.store.update_node_settings(N2, |s| s.draining = true).await.unwrap();
    m.core
        .store
        .record(vec![(KEY.into(), N1.into(), true), (KEY.into(), N2.into(), true)])
        .await
        .unwrap();
    m.core.store.record(vec![(KEY.into(), N2.into(), false)]).await.unwrap();
    m.writer().pass(None).await;

    let c = &m.cluster;
    let uuids = m.log(structure::UUID_LOG);
    assert_eq!(uuids.value(c), Some("cluster mesh"));
    assert_eq!(uuids.value(N1), Some("node1"));
    assert_eq!(uuids.value(N2), Some("node2 (draining)"));
    let text = m.show(BRANCH_REF, structure::UUID_LOG).unwrap();
    assert!(text.contains(&format!("{N1} node1 timestamp=")), "{text}");
    let cluster = m.show(BRANCH_REF, structure::CLUSTER_LOG).unwrap();
    assert!(cluster.ends_with(&format!("s {c} {N1} {N2}\n")), "{cluster}");
    let proxy = m.show(BRANCH_REF, structure::PROXY_LOG).unwrap();
    assert!(proxy.ends_with(&format!("s {c} {N1}:node1 {N2}:node2\n")), "{proxy}");
    assert_eq!(m.show(BRANCH_REF, structure::TRUST_LOG), None);

    // The location log: present on node1, removed from node2, with the
    // coordinator's stamps; the cluster's own UUID is never listed.
    let log = m.show(BRANCH_REF, &location::path(KEY)).unwrap();
    let entries = m.core.store.locations(KEY).await.unwrap();
    for e in entries {
        let want = format!(
            "{} {} {}\n",
            Stamp::from_unix_ms(e.changed_unix_ms),
            if e.present { 1 } else { 0 },
            e.node_uuid
        );
        assert!(log.contains(&want), "{log} lacks {want}");
    }
    assert!(!log.contains(c.as_str()));
    assert_eq!(log.lines().count(), 2, "{log}");

    // Nothing changed: no new commit.
    let head = m.core.repos.path(c).map(|p| git(&p, &["rev-parse", BRANCH_REF])).unwrap();
    m.writer().pass(None).await;
    let again = git(&m.repo(), &["rev-parse", BRANCH_REF]);
    assert_eq!(head.stdout, again.stdout);
    assert!(git(&m.repo(), &["fsck", "--strict"]).status.success());
}

#[tokio::test]
async fn joined_drained_and_removed_nodes_reach_the_branch() {
    let m = Mesh::new().await;
    let mut w = m.writer();
    w.pass(None).await;
    m.join(N3, "node3").await;
    m.core.store.record(vec![(KEY.into(), N3.into(), true)]).await.unwrap();
    w.pass(None).await;
    assert!(m.log(structure::CLUSTER_LOG).value(&m.cluster).unwrap().contains(N3));
    assert_eq!(m.log(structure::UUID_LOG).value(N3), Some("node3"));
    // Drained: still a node, described so.
    m.core.store.update_node_settings(N3, |s| s.draining = true).await.unwrap();
    w.pass(None).await;
    assert_eq!(m.log(structure::UUID_LOG).value(N3), Some("node3 (draining)"));
    assert!(m.log(structure::PROXY_LOG).value(&m.cluster).unwrap().contains(N3));
    // Removed: out of the cluster and proxy logs, dead in the trust log.
    m.core.store.remove_node(N3, true).await.unwrap();
    w.pass(None).await;
    let c = &m.cluster;
    assert_eq!(m.log(structure::CLUSTER_LOG).value(c), Some(format!("{N1} {N2}").as_str()));
    assert_eq!(
        m.log(structure::PROXY_LOG).value(c),
        Some(format!("{N1}:node1 {N2}:node2").as_str())
    );
    assert_eq!(m.log(structure::TRUST_LOG).value(N3), Some("X"));
    assert_eq!(m.log(structure::UUID_LOG).value(N3), Some("node3 (removed)"));
}

#[tokio::test]
async fn pushed_branches_are_union_merged_and_never_lost() {
    let m = Mesh::new().await;
    m.core.store.record(vec![(KEY.into(), N1.into(), true)]).await.unwrap();
    let mut w = m.writer();
    w.pass(None).await;
    let ours = String::from_utf8(git(&m.repo(), &["rev-parse", BRANCH_REF]).stdout).unwrap();

    // A client adds itself and a copy of its own, and pushes.
    let client = tempfile::tempdir().unwrap();
    let wt = client.path().join("wt");
    work(client.path(), &["clone", "--quiet", m.repo().to_str().unwrap(), "wt"]);
    work(&wt, &["checkout", "--quiet", "git-annex"]);
    let uuid_log = wt.join("uuid.log");
    let mut text = std::fs::read_to_string(&uuid_log).unwrap();
    text.push_str(&format!("{CLIENT} laptop timestamp=1700000000s\n"));
    std::fs::write(&uuid_log, text).unwrap();
    let loc = wt.join(location::path(KEY));
    let mut text = std::fs::read_to_string(&loc).unwrap();
    text.push_str(&format!("1700000000s 1 {CLIENT}\n"));
    std::fs::write(&loc, text).unwrap();
    work(&wt, &["commit", "--quiet", "-am", "client"]);
    work(&wt, &["push", "--quiet", "origin", "git-annex:synced/git-annex"]);

    // Meanwhile the mesh writes more, and then a client force-pushes a
    // branch with nothing of the mesh's.
    m.core.store.record(vec![(KEY.into(), N2.into(), true)]).await.unwrap();
    work(&wt, &["checkout", "--quiet", "--orphan", "other"]);
    work(&wt, &["rm", "-rfq", "."]);
    std::fs::write(wt.join("remote.log"), format!("{CLIENT} type=directory timestamp=1s\n"))
        .unwrap();
    work(&wt, &["add", "remote.log"]);
    work(&wt, &["commit", "--quiet", "-m", "forced"]);
    work(&wt, &["push", "--quiet", "--force", "origin", "other:git-annex"]);
    let forced = work(&wt, &["rev-parse", "HEAD"]);
    let synced = work(&wt, &["rev-parse", "git-annex"]);
    m.core.repos.pushed(&m.cluster);
    w.pass(Some(&m.cluster)).await;

    // Everything anyone wrote is there.
    let uuids = m.log(structure::UUID_LOG);
    assert_eq!(uuids.value(CLIENT), Some("laptop"));
    assert_eq!(uuids.value(N1), Some("node1"));
    let log = m.show(BRANCH_REF, &location::path(KEY)).unwrap();
    for u in [N1, N2, CLIENT] {
        assert!(log.contains(&format!(" 1 {u}\n")), "{log} lacks {u}");
    }
    assert!(m.show(BRANCH_REF, "remote.log").unwrap().contains("type=directory"));
    // The merge has the pushed commits and the mesh's own state as parents.
    let parents =
        String::from_utf8(git(&m.repo(), &["rev-list", "--parents", "-n1", BRANCH_REF]).stdout)
            .unwrap();
    for p in [forced.trim(), synced.trim()] {
        assert!(parents.contains(p), "{parents} lacks {p}");
    }
    assert!(
        git(&m.repo(), &["merge-base", "--is-ancestor", ours.trim(), BRANCH_REF]).status.success()
    );
    assert!(git(&m.repo(), &["fsck", "--strict"]).status.success());
}

#[tokio::test]
async fn a_restart_catches_up_on_changes_recorded_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, repo) = {
        let core = core(dir.path());
        let (c, _) = core.store.create_cluster("mesh").await.unwrap();
        let node = Node {
            uuid: N1.into(),
            name: "node1".into(),
            cluster_uuid: c.uuid.clone(),
            address: "127.0.0.1:1".into(),
        };
        core.store.register_node(node).await.unwrap();
        core.store.record(vec![(KEY.into(), N1.into(), true)]).await.unwrap();
        Writer::new(core.clone(), BranchConfig::default()).pass(None).await;
        // Recorded with no writer running.
        core.store.record(vec![(KEY.into(), N1.into(), false)]).await.unwrap();
        core.store.record(vec![("SHA256E-s1--aa".into(), N1.into(), true)]).await.unwrap();
        (c.uuid.clone(), core.repos.path(&c.uuid).unwrap())
    };
    let core = core(dir.path());
    // Small batches: catching up takes several passes, and loses nothing.
    let mut w = Writer::new(core.clone(), BranchConfig { batch: 1, ..Default::default() });
    for _ in 0..3 {
        w.pass(Some(&cluster)).await;
    }
    let show = |p: &str| {
        String::from_utf8(git(&repo, &["show", &format!("{BRANCH_REF}:{p}")]).stdout).unwrap()
    };
    let log = show(&location::path(KEY));
    assert!(log.ends_with(&format!(" 0 {N1}\n")) && log.lines().count() == 1, "{log}");
    assert!(show(&location::path("SHA256E-s1--aa")).contains(&format!(" 1 {N1}\n")));
}
