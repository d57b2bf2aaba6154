//! The real git-annex learns a cluster from the git-annex branch the mesh
//! writes: its nodes by name as proxied remotes, their copies, and that the
//! cluster's own UUID is no copy.
//!
//! git itself reaches the cluster's repository by path here (as a push
//! through a gateway would), and the content through the gateway's P2P
//! over HTTP (`remote.NAME.annexUrl`), which makes the remote able to proxy.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Client, Mesh, wait_until};

/// A file of the cluster repository's git-annex branch.
fn branch_file(repo: &Path, file: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["show", &format!("refs/heads/git-annex:{file}")])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn clients_learn_the_cluster_and_its_nodes_from_the_git_annex_branch() {
    let mesh = Mesh::up();
    let cluster = mesh.uuid_of("mesh");
    let nodes: Vec<(String, String)> =
        ["node1", "node2", "node3"].iter().map(|n| (n.to_string(), mesh.uuid_of(n))).collect();
    let repo = mesh.dir.path().join("data/coordinator/git").join(format!("{cluster}.git"));
    wait_until("the branch lists the nodes", Duration::from_secs(30), || {
        branch_file(&repo, "proxy.log")
            .is_some_and(|p| nodes.iter().all(|(n, u)| p.contains(&format!("{u}:{n}"))))
    });
    let helper = format!("store --file={}", mesh.up_credentials().display());

    // A client stores a file through the gateway and publishes its commit
    // and its git-annex branch to the cluster's repository.
    let a = Client::new();
    a.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    a.ok(&["git", "config", "credential.helper", &helper]);
    let (data, key) = a.annex_file("f.bin", 200_000, 7);
    a.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    let path = repo.to_str().unwrap();
    a.ok(&["git", "push", "-q", path, "main", "git-annex:synced/git-annex"]);
    // The mesh writes the nodes' copies and merges what was pushed.
    let loc = location_path(&key);
    wait_until("the branch has the copies and the push", Duration::from_secs(30), || {
        let Some(log) = branch_file(&repo, &loc) else { return false };
        let uuids = branch_file(&repo, "uuid.log").unwrap_or_default();
        nodes.iter().all(|(_, u)| log.contains(&format!(" 1 {u}\n"))) && uuids.contains(" client ")
    });

    // Another client clones the cluster's repository and reaches its
    // content through the gateway.
    let b = Client::new();
    b.add_remote("origin", path);
    // The user's credentials in the URL: git's credential store does not
    // match an `annex+http` URL with the `http` one `up` wrote.
    let line = std::fs::read_to_string(mesh.up_credentials()).unwrap();
    let userinfo = line.split("://").nth(1).and_then(|r| r.rsplit_once('@')).unwrap().0;
    let annex_url = format!("annex+http://{userinfo}@{}/git-annex/", mesh.http);
    b.ok(&["git", "config", "remote.origin.annexUrl", &annex_url]);
    b.ok(&["git", "config", "remote.origin.annex-uuid", &cluster]);
    b.ok(&["git", "fetch", "-q", "origin"]);
    b.ok(&["git", "checkout", "-q", "-B", "main", "origin/main"]);

    let whereis = b.ok(&["git", "annex", "whereis", "f.bin"]);
    // Three nodes and the first client. The cluster is listed, as
    // git-annex lists a cluster whose nodes hold a copy, but not counted.
    assert!(whereis.contains("(4 copies)"), "{whereis}");
    assert!(whereis.contains(&format!("{cluster} -- cluster mesh [origin]")), "{whereis}");
    for (n, u) in &nodes {
        assert!(whereis.contains(&format!("{u} -- {n} [origin-{n}]")), "{whereis}");
    }
    let info = b.ok(&["git", "annex", "info", "origin"]);
    assert!(info.contains("cluster: true"), "{info}");
    let proxying = info.lines().find_map(|l| l.strip_prefix("proxying: ")).unwrap_or_default();
    let mut names: Vec<&str> = proxying.split(' ').collect();
    names.sort();
    assert_eq!(names, ["origin-node1", "origin-node2", "origin-node3"], "{info}");

    b.ok(&["git", "annex", "get", "f.bin"]);
    assert_eq!(std::fs::read(b.path().join("f.bin")).unwrap(), data);

    // With only node1 holding a file, numcopies 2 refuses the drop: node1
    // and the cluster it is in are one copy, not two.
    b.annex_file("g.bin", 1000, 9);
    b.ok(&["git", "annex", "copy", "--to", "origin-node1", "g.bin"]);
    b.ok(&["git", "annex", "numcopies", "2"]);
    let drop = b.run(&["git", "annex", "drop", "g.bin"]);
    let said =
        String::from_utf8_lossy(&drop.stdout).into_owned() + &String::from_utf8_lossy(&drop.stderr);
    assert!(!drop.status.success(), "the drop must be refused:\n{said}");
    assert!(said.contains("1 out of 2 necessary copies"), "{said}");
    assert!(b.path().join("g.bin").metadata().is_ok());
}

/// The location log's path for `key`, as git-annex lays out its branch.
fn location_path(key: &str) -> String {
    use md5::{Digest, Md5};
    let hex = hex::encode(Md5::digest(key.as_bytes()));
    format!("{}/{}/{key}.log", &hex[0..3], &hex[3..6])
}
