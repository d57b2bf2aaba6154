//! The cluster as a git remote, driven by the real git-annex client, side by
//! side with git-annex's own cluster gateway set up the same way
//! (`initcluster`, three nodes as remotes, `updatecluster`, served by
//! `git-annex p2phttp`). One script runs against both: clone a gateway,
//! store and get content from two clients, sync both ways, then `whereis`,
//! `info` and a numcopies-guarded `drop`. Outputs are normalised (UUIDs,
//! cluster and remote names become placeholders) and must agree; both are
//! printed and named in every assertion message.
//!
//! See docs/git-annex-cluster-comparison.md for the recorded reference.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use common::annex_cluster::AnnexCluster;
use common::{Client, Mesh, objects_named};

/// The name git-annex's cluster is created with.
const ANNEX_CLUSTER: &str = "mycluster";
const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// One of the two systems the script runs against.
enum Side {
    Annex(AnnexCluster),
    /// The mesh and the URL of a second gateway.
    Mesh(Mesh, String),
}

impl Side {
    fn annex() -> Side {
        Side::Annex(AnnexCluster::new(ANNEX_CLUSTER, NODES.len()))
    }

    fn mesh() -> Side {
        let mut mesh = Mesh::separate(NODES.len());
        let second = mesh.add_gateway("gateway2");
        Side::Mesh(mesh, second)
    }

    fn label(&self) -> &'static str {
        match self {
            Side::Annex(_) => "git-annex cluster",
            Side::Mesh(..) => "annexmesh",
        }
    }

    /// A client cloned from the first gateway, or (`second`) from another
    /// gateway of the same cluster where there is one: git-annex's cluster
    /// has one gateway (its gateways do not share a git repository).
    fn clone_client(&self, description: &str, second: bool) -> Client {
        match self {
            Side::Annex(ga) => ga.clone_client(description),
            Side::Mesh(mesh, second_url) => {
                let base = if second { second_url.clone() } else { mesh.url() };
                let c = Client::new_uninit();
                c.ok(&["git", "clone", "-q", &format!("{base}/mesh"), "."]);
                c.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
                c.ok(&["git", "annex", "init", description]);
                c
            }
        }
    }

    /// The remote that is the cluster itself: with git-annex's gateway,
    /// `origin` is the gateway repository and the cluster is proxied as
    /// `origin-CLUSTER`; the mesh's URL is the cluster.
    fn cluster_remote(&self) -> String {
        match self {
            Side::Annex(ga) => format!("origin-{}", ga.name),
            Side::Mesh(..) => "origin".to_string(),
        }
    }

    /// `git annex sync --content` as a user of each runs it. With
    /// git-annex's cluster, naming `origin` would sync content with the
    /// gateway repository only (which wants none), so all remotes are
    /// synced; the mesh's `origin` is the cluster, named as cloned.
    fn sync_args(&self) -> Vec<&'static str> {
        match self {
            Side::Annex(_) => vec!["git", "annex", "sync", "--content"],
            Side::Mesh(..) => vec!["git", "annex", "sync", "--content", "origin"],
        }
    }

    /// The URL of a manual remote reaching node `name` directly.
    fn node_url(&self, name: &str) -> String {
        match self {
            Side::Annex(ga) => ga.node(name).path().to_str().unwrap().to_string(),
            Side::Mesh(mesh, _) => format!("{}/{name}", mesh.url()),
        }
    }

    /// How many nodes physically hold `key`.
    fn node_copies(&self, key: &str) -> usize {
        match self {
            Side::Annex(ga) => ga.node_copies(key),
            Side::Mesh(mesh, _) => {
                mesh.node_stores().iter().filter(|s| !objects_named(s, key).is_empty()).count()
            }
        }
    }

    /// Placeholders for this side's UUIDs and remote names.
    fn names(&self, clients: &[(&str, &Client)]) -> Names {
        let mut n = Names::default();
        match self {
            Side::Annex(ga) => {
                n.uuids.insert(ga.cluster_uuid(), "CLUSTER".into());
                n.uuids.insert(ga.gateway_uuid(), "GATEWAY".into());
                for node in NODES {
                    n.uuids.insert(ga.node_uuid(node), node.into());
                }
                n.remotes.insert(format!("origin-{}", ga.name), "CLUSTER-REMOTE".into());
                n.remotes.insert("origin".into(), "GATEWAY-REMOTE".into());
                n.places.push((ga.gateway_path().display().to_string(), "GATEWAY-REPO".into()));
                for node in NODES {
                    let path = ga.node(node).path().display().to_string();
                    n.places.push((path, format!("{}-REPO", node.to_uppercase())));
                }
                n.places.push((format!("127.0.0.1:{}", ga.port), "HOST:PORT".into()));
            }
            Side::Mesh(mesh, second) => {
                n.uuids.insert(mesh.uuid_of("mesh"), "CLUSTER".into());
                for node in NODES {
                    n.uuids.insert(mesh.uuid_of(node), node.into());
                }
                n.remotes.insert("origin".into(), "CLUSTER-REMOTE".into());
                n.places.push((mesh.http.to_string(), "HOST:PORT".into()));
                let second = second.trim_start_matches("http://").to_string();
                n.places.push((second, "HOST2:PORT2".into()));
            }
        }
        for (role, c) in clients {
            let uuid = c.ok(&["git", "config", "annex.uuid"]).trim().to_string();
            n.uuids.insert(uuid, format!("client-{role}"));
        }
        n
    }
}

/// Placeholders for what legitimately differs between the two systems.
#[derive(Default)]
struct Names {
    uuids: BTreeMap<String, String>,
    remotes: BTreeMap<String, String>,
    /// Paths and URLs chosen at run time, for a readable transcript.
    places: Vec<(String, String)>,
}

impl Names {
    fn role(&self, uuid: &str) -> String {
        self.uuids.get(uuid).cloned().unwrap_or_else(|| format!("UNKNOWN({uuid})"))
    }

    fn remote(&self, name: &str) -> String {
        self.remotes.get(name).cloned().unwrap_or_else(|| name.to_string())
    }

    /// Every known UUID in `text` replaced by its placeholder.
    fn text(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (uuid, role) in &self.uuids {
            t = t.replace(uuid, &format!("<{role}>"));
        }
        for (place, name) in &self.places {
            t = t.replace(place, name);
        }
        t
    }

    /// `DESCRIPTION [REMOTE ...]` normalised: remote names replaced and
    /// sorted; the cluster's own description (a name) replaced.
    fn described(&self, role: &str, rest: &str) -> String {
        let rest = rest.trim();
        let (desc, remotes) = match rest.strip_suffix(']').and_then(|r| r.rsplit_once('[')) {
            Some((d, r)) => (d.trim(), r.split_whitespace().collect::<Vec<_>>()),
            None => (rest, Vec::new()),
        };
        let desc =
            if role == "CLUSTER" && !desc.is_empty() { "<cluster description>" } else { desc };
        let mut remotes: Vec<String> = remotes.iter().map(|r| self.remote(r)).collect();
        remotes.sort();
        if remotes.is_empty() {
            desc.to_string()
        } else {
            format!("{desc} [{}]", remotes.join(" ")).trim().to_string()
        }
    }
}

/// `git annex whereis FILE` parsed: the copy count and the normalised
/// entries, sorted.
#[derive(Debug, PartialEq)]
struct Whereis {
    copies: Option<usize>,
    entries: Vec<String>,
}

fn whereis(out: &str, names: &Names) -> Whereis {
    let copies = out.lines().find_map(|l| {
        let (_, tail) = l.split_once(" (")?;
        tail.split_whitespace().next()?.parse().ok()
    });
    let mut entries: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let (uuid, rest) = l.trim().split_once(" -- ")?;
            (uuid.len() == 36).then_some((uuid, rest))
        })
        .map(|(uuid, rest)| {
            let role = names.role(uuid);
            format!("{role} -- {}", names.described(&role, rest))
        })
        .collect();
    entries.sort();
    Whereis { copies, entries }
}

/// The `key: value` lines of `git annex info REMOTE`.
fn info_fields(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// What the script saw on one side: the raw transcript and the
/// normalised facts compared between the sides.
struct Record {
    label: &'static str,
    transcript: String,
    facts: Vec<(&'static str, String)>,
}

impl Record {
    fn fact(&self, name: &str) -> &str {
        &self.facts.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no fact {name}")).1
    }

    fn render(&self) -> String {
        let mut s = format!("=== {} ===\n--- facts (normalised) ---\n", self.label);
        for (k, v) in &self.facts {
            let _ = writeln!(s, "{k}: {v}");
        }
        let _ = write!(s, "--- transcript ---\n{}", self.transcript);
        s
    }
}

/// Runs commands in clients and keeps every command and its output.
struct Script<'a> {
    side: &'a Side,
    transcript: String,
}

impl Script<'_> {
    /// Runs `args` in `c` (named `who` in the transcript); its success and
    /// its stdout and stderr together.
    fn run(&mut self, who: &str, c: &Client, args: &[&str]) -> (bool, String) {
        let out = c.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = writeln!(
            self.transcript,
            "[{who}]$ {}   (exit {})\n{}",
            args.join(" "),
            out.status.code().unwrap_or(-1),
            text.trim_end()
        );
        (out.status.success(), text)
    }

    /// As `run`, for a step the rest of the script depends on.
    fn must(&mut self, who: &str, c: &Client, args: &[&str]) -> String {
        let (ok, text) = self.run(who, c, args);
        assert!(ok, "{}: {args:?} failed:\n{}", self.side.label(), self.transcript);
        text
    }

    fn sync(&mut self, who: &str, c: &Client) -> bool {
        let args = self.side.sync_args();
        self.run(who, c, &args).0
    }
}

fn has_content(c: &Client, file: &str, want: &[u8]) -> bool {
    std::fs::read(c.path().join(file)).is_ok_and(|d| d == want)
}

fn client_copies(clients: &[&Client], key: &str) -> usize {
    clients.iter().filter(|c| !objects_named(&c.path().join(".git"), key).is_empty()).count()
}

/// The scenario, run as a user would against `side`.
fn script(side: &Side) -> Record {
    let mut s = Script { side, transcript: String::new() };
    let mut facts: Vec<(&'static str, String)> = Vec::new();

    // Must-show 1: clone a gateway, store, and get from another clone.
    let a = side.clone_client("a", false);
    let (f1, key1) = a.annex_file("f1", 100_000, 1);
    let _ = writeln!(s.transcript, "[a] annexed and committed f1 ({key1})");
    facts.push(("a: first sync exits 0", s.sync("a", &a).to_string()));
    let b = side.clone_client("b", true);
    let (get_ok, _) = s.run("b", &b, &["git", "annex", "get", "f1"]);
    facts.push(("b: get f1 of a's content exits 0", get_ok.to_string()));
    facts.push(("b: f1 holds a's bytes", has_content(&b, "f1", &f1).to_string()));

    // Must-show 2: both clients commit, sync both ways.
    let (f3, key3) = b.annex_file("f3", 50_000, 3);
    let (f4, key4) = a.annex_file("f4", 50_000, 4);
    let _ = writeln!(s.transcript, "[b] annexed f3 ({key3}); [a] annexed f4 ({key4})");
    let syncs = [s.sync("b", &b), s.sync("a", &a), s.sync("b", &b)];
    facts.push(("sync b, a, b: each exits 0", format!("{syncs:?}")));
    facts.push(("a: pulled b's f3 with its content", has_content(&a, "f3", &f3).to_string()));
    facts.push(("b: pulled a's f4 with its content", has_content(&b, "f4", &f4).to_string()));

    let names = side.names(&[("a", &a), ("b", &b)]);

    // Must-show 4: whereis names the nodes, counts physical copies only.
    let out = s.must("b", &b, &["git", "annex", "whereis", "f1"]);
    let w1 = whereis(&out, &names);
    let physical1 = side.node_copies(&key1) + client_copies(&[&a, &b], &key1);
    facts.push(("whereis f1: copies", format!("{:?}", w1.copies)));
    facts.push(("whereis f1: physical copies", physical1.to_string()));
    facts.push(("whereis f1: entries", w1.entries.join(" | ")));
    let out = s.must("a", &a, &["git", "annex", "whereis", "f3"]);
    let w3 = whereis(&out, &names);
    facts.push(("whereis f3 (stored by b): copies", format!("{:?}", w3.copies)));
    facts.push(("whereis f3 (stored by b): entries", w3.entries.join(" | ")));

    let origin = info_fields(&s.must("b", &b, &["git", "annex", "info", "origin"]));
    let mut proxying: Vec<&str> =
        origin.get("proxying").map(|p| p.split_whitespace().collect()).unwrap_or_default();
    proxying.sort();
    facts.push(("info origin: proxying", proxying.join(" ")));
    let cluster_remote = side.cluster_remote();
    let cluster = info_fields(&s.must("b", &b, &["git", "annex", "info", &cluster_remote]));
    let field = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
    facts.push(("info CLUSTER-REMOTE: cluster", field(&cluster, "cluster")));
    facts.push(("info CLUSTER-REMOTE: remote annex keys", field(&cluster, "remote annex keys")));
    let node1 = info_fields(&s.must("b", &b, &["git", "annex", "info", "origin-node1"]));
    let desc = field(&node1, "description");
    let role = names.role(&field(&node1, "uuid"));
    facts.push(("info origin-node1: uuid", role.clone()));
    facts.push(("info origin-node1: description", names.described(&role, &desc)));
    facts.push(("info origin-node1: proxied", field(&node1, "proxied")));

    // Must-show 3: numcopies 2, only node1 holds the file, a second remote
    // reaches node1 directly; the drop must be refused.
    let (f2, key2) = a.annex_file("f2", 20_000, 2);
    let _ = writeln!(s.transcript, "[a] annexed f2 ({key2})");
    s.must("a", &a, &["git", "annex", "numcopies", "2"]);
    s.must("a", &a, &["git", "annex", "copy", "--to", "origin-node1", "f2"]);
    s.must("a", &a, &["git", "remote", "add", "node1", &side.node_url("node1")]);
    let out = s.must("a", &a, &["git", "annex", "whereis", "f2"]);
    let w2 = whereis(&out, &names);
    let physical2 = side.node_copies(&key2) + client_copies(&[&a, &b], &key2);
    facts.push(("whereis f2: copies", format!("{:?}", w2.copies)));
    facts.push(("whereis f2: physical copies", physical2.to_string()));
    facts.push(("whereis f2: entries", w2.entries.join(" | ")));
    let (dropped, out) = s.run("a", &a, &["git", "annex", "drop", "f2"]);
    facts.push(("drop f2 exits 0", dropped.to_string()));
    facts.push(("drop f2: unsafe", out.contains("(unsafe)").to_string()));
    let verify = out.lines().find(|l| l.contains("Could only verify")).unwrap_or("").trim();
    facts.push(("drop f2: verified", verify.to_string()));
    facts.push(("a: still holds f2", has_content(&a, "f2", &f2).to_string()));

    Record { label: side.label(), transcript: names.text(&s.transcript), facts }
}

/// What must hold on either side; the mesh must also match git-annex.
fn assert_cluster_behaviour(r: &Record) {
    let want = [
        ("a: first sync exits 0", "true"),
        ("b: get f1 of a's content exits 0", "true"),
        ("b: f1 holds a's bytes", "true"),
        ("sync b, a, b: each exits 0", "[true, true, true]"),
        ("a: pulled b's f3 with its content", "true"),
        ("b: pulled a's f4 with its content", "true"),
        ("info origin: proxying", "origin-node1 origin-node2 origin-node3"),
        ("info CLUSTER-REMOTE: cluster", "true"),
        ("info origin-node1: uuid", "node1"),
        ("info origin-node1: proxied", "true"),
        ("drop f2 exits 0", "false"),
        ("drop f2: unsafe", "true"),
        ("a: still holds f2", "true"),
    ];
    for (fact, value) in want {
        assert_eq!(r.fact(fact), value, "{fact}\n{}", r.render());
    }
    // The cluster is listed but not counted: the count is the physical
    // copies (three nodes and both clients for f1; node1 and a for f2).
    assert_eq!(r.fact("whereis f1: copies"), "Some(5)", "{}", r.render());
    assert_eq!(r.fact("whereis f1: physical copies"), "5", "{}", r.render());
    assert_eq!(r.fact("whereis f2: copies"), "Some(2)", "{}", r.render());
    assert_eq!(r.fact("whereis f2: physical copies"), "2", "{}", r.render());
    let f1 = r.fact("whereis f1: entries");
    for node in NODES {
        assert!(
            f1.contains(&format!("{node} -- {node} [origin-{node}]")),
            "{node}: {}",
            r.render()
        );
    }
    assert!(f1.contains("CLUSTER -- <cluster description> [CLUSTER-REMOTE]"), "{}", r.render());
    let f3 = r.fact("whereis f3 (stored by b): entries");
    assert!(f3.contains("node1 -- node1") && f3.contains("client-b"), "{}", r.render());
    assert!(
        r.fact("drop f2: verified").contains("1 out of 2 necessary copies"),
        "the node reached twice counted once:\n{}",
        r.render()
    );
}

/// git-annex's own cluster, the reference: every must-show holds for it.
#[test]
fn annex_cluster_reference() {
    let side = Side::annex();
    let r = script(&side);
    if let Side::Annex(ga) = &side {
        println!("--- git-annex gateway setup ---\n{}", ga.setup_log);
    }
    println!("{}", r.render());
    assert_cluster_behaviour(&r);
}

/// The mesh on its own: cloned from a gateway, synced through two
/// gateways, whereis/info naming the nodes, the drop refused.
#[test]
fn mesh_git_cluster_workflow() {
    let side = Side::mesh();
    let r = script(&side);
    println!("{}", r.render());
    assert_cluster_behaviour(&r);
}

/// The same script against both; every normalised fact must agree
/// (differences only in UUIDs and names).
#[test]
fn mesh_matches_annex_cluster() {
    let reference = script(&Side::annex());
    let mesh = script(&Side::mesh());
    println!("{}\n{}", reference.render(), mesh.render());
    let mut diff = String::new();
    for ((k, want), (k2, got)) in reference.facts.iter().zip(&mesh.facts) {
        assert_eq!(k, k2);
        if want != got {
            let _ = writeln!(diff, "{k}:\n  git-annex: {want}\n  annexmesh: {got}");
        }
    }
    assert!(
        diff.is_empty(),
        "the mesh differs from git-annex's cluster:\n{diff}\n{}\n{}",
        reference.render(),
        mesh.render()
    );
}

/// The issue's own words: a repository that adds the mesh as remote `mesh`
/// (not a clone) and runs `git annex sync --content mesh` pushes its
/// commits and content and pulls others', through either gateway.
#[test]
fn sync_content_with_an_added_remote_pushes_and_pulls_through_two_gateways() {
    let mut mesh = Mesh::separate(NODES.len());
    let second = mesh.add_gateway("gateway2");
    let a = Client::new();
    a.add_remote("mesh", &format!("{}/mesh", mesh.url()));
    let (fa, key_a) = a.annex_file("from-a", 40_000, 11);
    a.ok(&["git", "annex", "sync", "--content", "mesh"]);
    // Pushed: the branch and the content, and the location reached the
    // branch the mesh serves.
    let head_a = a.ok(&["git", "rev-parse", "HEAD"]);
    let remote = a.ok(&["git", "ls-remote", "mesh"]);
    assert!(remote.contains(head_a.trim()), "a's commit on the mesh:\n{remote}");
    assert_eq!(
        mesh.node_stores().iter().filter(|s| !objects_named(s, &key_a).is_empty()).count(),
        3
    );

    // b clones (naming the remote `mesh`): two repositories with unrelated
    // histories would not merge, with any git server.
    let b = Client::new_uninit();
    b.ok(&["git", "clone", "-q", "-o", "mesh", &format!("{second}/mesh"), "."]);
    b.ok(&["git", "config", "annex.security.allowed-ip-addresses", "all"]);
    b.ok(&["git", "annex", "init", "b"]);
    let (fb, _) = b.annex_file("from-b", 30_000, 12);
    b.ok(&["git", "annex", "sync", "--content", "mesh"]);
    assert!(has_content(&b, "from-a", &fa), "b pulled a's file with its content");
    a.ok(&["git", "annex", "sync", "--content", "mesh"]);
    assert!(has_content(&a, "from-b", &fb), "a pulled b's file with its content");
    // Each sees the other's copies on the nodes, by node name.
    let whereis = b.ok(&["git", "annex", "whereis", "from-a"]);
    for n in NODES {
        assert!(whereis.contains(&format!("[mesh-{n}]")), "{n} in:\n{whereis}");
    }
}
