//! git-annex's own cluster gateway, set up as git-annex documents it
//! (`initcluster`, node repositories as remotes marked
//! `annex-cluster-node`, `updatecluster`, `updateproxy`) and served by
//! `git-annex p2phttp`: the reference the mesh's git side is compared with.

use std::path::{Path, PathBuf};

use super::{Client, Proc, objects_named};

/// A running git-annex cluster gateway and its node repositories.
pub struct AnnexCluster {
    /// `git-annex p2phttp` in the gateway repository; declared first so it
    /// stops before the repositories are removed.
    server: Proc,
    /// The cluster's name, as given to `initcluster`.
    pub name: String,
    /// The gateway repository (bare; not a node of the cluster).
    pub gateway: Client,
    /// The node repositories, named node1, node2, ...
    pub nodes: Vec<(String, Client)>,
    /// Where p2phttp listens on 127.0.0.1.
    pub port: u16,
    /// What the gateway's setup commands printed, for the record.
    pub setup_log: String,
    logs: tempfile::TempDir,
}

impl AnnexCluster {
    /// A cluster `name` with `nodes` bare node repositories (described
    /// node1, node2, ...), its gateway not wanting any content itself (as
    /// git-annex's clusters tip advises), served with `--wideopen`.
    pub fn new(name: &str, nodes: usize) -> AnnexCluster {
        let mut setup_log = String::new();
        let mut step = |repo: &Client, args: &[&str]| {
            let out = repo.ok(args);
            setup_log.push_str(&format!("$ {}\n{out}", args.join(" ")));
        };
        let nodes: Vec<(String, Client)> = (1..=nodes)
            .map(|i| {
                let name = format!("node{i}");
                let repo = Client::new_uninit();
                repo.ok(&["git", "init", "-q", "--bare", "-b", "main"]);
                repo.ok(&["git", "annex", "init", "-q", &name]);
                (name, repo)
            })
            .collect();
        let gateway = Client::new_uninit();
        gateway.ok(&["git", "init", "-q", "--bare", "-b", "main"]);
        gateway.ok(&["git", "annex", "init", "-q", "gateway"]);
        step(&gateway, &["git", "annex", "initcluster", name]);
        for (node, repo) in &nodes {
            let path = repo.path().to_str().unwrap();
            step(&gateway, &["git", "remote", "add", node, path]);
            step(&gateway, &["git", "config", &format!("remote.{node}.annex-cluster-node"), name]);
        }
        step(&gateway, &["git", "fetch", "-q", "--all"]);
        step(&gateway, &["git", "annex", "updatecluster"]);
        step(&gateway, &["git", "annex", "updateproxy"]);
        step(&gateway, &["git", "annex", "wanted", "here", "nothing"]);

        let logs = tempfile::tempdir().unwrap();
        let (server, port) = gateway.serve_p2phttp(&["--wideopen", "--jobs", "4"], logs.path());
        AnnexCluster { server, name: name.to_string(), gateway, nodes, port, setup_log, logs }
    }

    /// The P2P over HTTP URL clients set as `remote.NAME.annexUrl`.
    pub fn annex_url(&self) -> String {
        format!("annex+http://127.0.0.1:{}/git-annex/", self.port)
    }

    /// The cluster's UUID, as `initcluster` recorded it.
    pub fn cluster_uuid(&self) -> String {
        let key = format!("annex.cluster.{}", self.name);
        self.gateway.ok(&["git", "config", &key]).trim().to_string()
    }

    /// The gateway repository's own UUID.
    pub fn gateway_uuid(&self) -> String {
        self.gateway.ok(&["git", "config", "annex.uuid"]).trim().to_string()
    }

    /// The UUID of node `name`.
    pub fn node_uuid(&self, name: &str) -> String {
        self.node(name).ok(&["git", "config", "annex.uuid"]).trim().to_string()
    }

    /// The repository of node `name`.
    pub fn node(&self, name: &str) -> &Client {
        &self.nodes.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no node {name}")).1
    }

    /// A client as a user makes one: `git clone` of the gateway (by path,
    /// for git), `remote.origin.annexUrl` at its p2phttp server (so that
    /// git-annex proxies through it and learns `origin-CLUSTER` and
    /// `origin-NODE`), then `git annex init DESCRIPTION`.
    pub fn clone_client(&self, description: &str) -> Client {
        let c = Client::new_uninit();
        c.ok(&["git", "clone", "-q", self.gateway.path().to_str().unwrap(), "."]);
        c.ok(&["git", "config", "remote.origin.annexUrl", &self.annex_url()]);
        c.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
        c.ok(&["git", "annex", "init", description]);
        c
    }

    /// How many node repositories hold `key`.
    pub fn node_copies(&self, key: &str) -> usize {
        self.nodes.iter().filter(|(_, repo)| !objects_named(repo.path(), key).is_empty()).count()
    }

    /// Where p2phttp writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join(format!("{}.log", self.server.name))
    }

    /// The gateway repository's path.
    pub fn gateway_path(&self) -> &Path {
        self.gateway.path()
    }
}
