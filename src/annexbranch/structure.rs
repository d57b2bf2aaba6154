//! What the mesh says of a cluster's structure in the git-annex branch, as
//! git-annex's own cluster gateway does (`initcluster`, `updatecluster`,
//! `updateproxy`, `dead`):
//!
//! - `uuid.log`: the cluster described as `cluster NAME`, each node by its
//!   name (`NAME (draining)` while drained, `NAME (removed)` once removed);
//! - `cluster.log`: the cluster UUID and its current nodes;
//! - `proxy.log`: under the cluster UUID (the UUID clients see for the
//!   mesh's remote), the current nodes as `UUID:NAME`, from which clients
//!   make `REMOTE-NAME` remotes;
//! - `trust.log`: removed nodes dead, as `git annex dead` marks them.

use std::collections::BTreeMap;

use super::Stamp;
use super::logs::{self, Format, UuidLog};

pub const UUID_LOG: &str = "uuid.log";
pub const CLUSTER_LOG: &str = "cluster.log";
pub const PROXY_LOG: &str = "proxy.log";
pub const TRUST_LOG: &str = "trust.log";

/// A node as the branch shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub uuid: String,
    pub name: String,
    pub draining: bool,
}

/// A cluster's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub uuid: String,
    pub name: String,
    /// Its registered nodes.
    pub nodes: Vec<NodeView>,
    /// Nodes removed from it for good.
    pub removed: Vec<NodeView>,
}

/// The value each log should have per UUID: (file, UUID) -> value.
pub type Wanted = BTreeMap<(&'static str, String), String>;

impl ClusterView {
    /// What the branch should say of this cluster.
    pub fn wanted(&self) -> Wanted {
        let mut w = Wanted::new();
        w.insert((UUID_LOG, self.uuid.clone()), format!("cluster {}", self.name));
        for n in &self.nodes {
            let desc = if n.draining { format!("{} (draining)", n.name) } else { n.name.clone() };
            w.insert((UUID_LOG, n.uuid.clone()), desc);
        }
        for n in &self.removed {
            w.insert((UUID_LOG, n.uuid.clone()), format!("{} (removed)", n.name));
            w.insert((TRUST_LOG, n.uuid.clone()), logs::TRUST_DEAD.to_string());
        }
        w.insert(
            (CLUSTER_LOG, self.uuid.clone()),
            logs::cluster_value(self.nodes.iter().map(|n| n.uuid.as_str())),
        );
        w.insert(
            (PROXY_LOG, self.uuid.clone()),
            logs::proxy_value(self.nodes.iter().map(|n| (n.uuid.as_str(), n.name.as_str()))),
        );
        w
    }
}

/// The line format of one of the structure logs.
pub fn format_of(file: &str) -> Format {
    if file == CLUSTER_LOG || file == PROXY_LOG { Format::New } else { Format::Old }
}

/// The files to rewrite so that the branch says `wanted`, given their
/// current text (`current(file)`, None when missing). An entry is written
/// only where the branch says otherwise and `before` (what was wanted when
/// the branch was last written, if known) wanted something else: a value
/// someone changed later in the branch (`git annex describe`) is kept until
/// the mesh's own view changes. New entries are stamped `now`, or past the
/// entry they replace.
pub fn apply(
    wanted: &Wanted,
    before: Option<&Wanted>,
    now: Stamp,
    current: impl Fn(&str) -> Option<String>,
) -> BTreeMap<&'static str, String> {
    let mut logs: BTreeMap<&'static str, (UuidLog, bool)> = BTreeMap::new();
    for ((file, uuid), value) in wanted {
        let (log, changed) = logs.entry(file).or_insert_with(|| {
            (UuidLog::parse(format_of(file), &current(file).unwrap_or_default()), false)
        });
        if log.value(uuid) == Some(value.as_str()) {
            continue;
        }
        if before.and_then(|b| b.get(&(*file, uuid.clone()))) == Some(value) {
            continue;
        }
        log.change(uuid, value, now);
        *changed = true;
    }
    logs.into_iter()
        .filter(|(_, (_, changed))| *changed)
        .map(|(file, (log, _))| (file, log.build(format_of(file))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "ac000000-0000-8000-8000-000000000000";
    const U1: &str = "e9a1b2c3-0000-4000-8000-000000000001";
    const U2: &str = "e9a1b2c3-0000-4000-8000-000000000002";
    const U3: &str = "e9a1b2c3-0000-4000-8000-000000000003";

    fn node(uuid: &str, name: &str, draining: bool) -> NodeView {
        NodeView { uuid: uuid.into(), name: name.into(), draining }
    }

    fn view() -> ClusterView {
        ClusterView {
            uuid: C.into(),
            name: "mesh".into(),
            nodes: vec![node(U2, "node2", true), node(U1, "node1", false)],
            removed: vec![node(U3, "node3", false)],
        }
    }

    #[test]
    fn a_fresh_branch_gets_every_log() {
        let files = apply(&view().wanted(), None, Stamp::from_secs(100), |_| None);
        assert_eq!(
            files[UUID_LOG],
            format!(
                "{C} cluster mesh timestamp=100s\n{U1} node1 timestamp=100s\n\
                 {U2} node2 (draining) timestamp=100s\n{U3} node3 (removed) timestamp=100s\n"
            )
        );
        assert_eq!(files[CLUSTER_LOG], format!("100s {C} {U1} {U2}\n"));
        assert_eq!(files[PROXY_LOG], format!("100s {C} {U1}:node1 {U2}:node2\n"));
        assert_eq!(files[TRUST_LOG], format!("{U3} X timestamp=100s\n"));
    }

    #[test]
    fn only_what_changed_is_written_and_later_edits_are_kept() {
        let w = view().wanted();
        let files = apply(&w, None, Stamp::from_secs(100), |_| None);
        let get = |f: &str| files.get(f).cloned();
        // Nothing changed: nothing to write.
        assert!(apply(&w, Some(&w), Stamp::from_secs(200), get).is_empty());
        // Someone described node1 later: kept while the mesh's view stays.
        let described = files[UUID_LOG].replace(
            &format!("{U1} node1 timestamp=100s"),
            &format!("{U1} my node timestamp=150s"),
        );
        let get2 = |f: &str| if f == UUID_LOG { Some(described.clone()) } else { get(f) };
        assert!(apply(&w, Some(&w), Stamp::from_secs(200), get2).is_empty());
        // The mesh's view changes (node1 drained): written, past the edit.
        let mut v = view();
        v.nodes[1].draining = true;
        let out = apply(&v.wanted(), Some(&w), Stamp::from_secs(120), get2);
        assert!(out[UUID_LOG].contains(&format!("{U1} node1 (draining) timestamp=151s\n")));
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn a_removed_node_leaves_the_cluster_and_proxy_logs() {
        let w = view().wanted();
        let files = apply(&w, None, Stamp::from_secs(100), |_| None);
        let mut v = view();
        let gone = v.nodes.remove(0);
        v.removed.push(gone);
        let out = apply(&v.wanted(), Some(&w), Stamp::from_secs(200), |f| files.get(f).cloned());
        assert_eq!(out[CLUSTER_LOG], format!("200s {C} {U1}\n"));
        assert_eq!(out[PROXY_LOG], format!("200s {C} {U1}:node1\n"));
        assert!(out[TRUST_LOG].contains(&format!("{U2} X timestamp=200s\n")));
        assert!(out[UUID_LOG].contains(&format!("{U2} node2 (removed) timestamp=200s\n")));
    }
}
