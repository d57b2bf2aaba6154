//! Which nodes of a cluster a PUT goes to.
//!
//! A node is eligible when it is up, not degraded (a write or data call
//! failed on it lately, see `super::health`), not draining, and would keep at least
//! the cluster's reserve of free space after storing the key. The targets are
//! the eligible nodes whose preferred content expression wants the key (a
//! node without one wants everything, as in git-annex); when no eligible node
//! wants it, every eligible node gets it, as git-annex's clusters do.

use std::sync::Arc;

use crate::p2p::key::Key;
use crate::preferred::{Expr, Subject};

/// What placement knows of one node.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub uuid: String,
    pub name: String,
    pub healthy: bool,
    /// A write or data call failed on it lately, or its store is not
    /// writable: it gets no new content until it recovers.
    pub degraded: bool,
    pub draining: bool,
    /// Free space from the last heartbeat; None until the first one.
    pub free_bytes: Option<u64>,
    pub wanted: Option<Arc<Expr>>,
}

/// Why a node was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Down,
    Degraded,
    Draining,
    ShortOfSpace { free: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub targets: Vec<String>,
    /// True when no eligible node wanted the key and it goes to all of them.
    pub unwanted: bool,
    /// True when the plan depends only on the key and the nodes' state:
    /// no node's preferred content reads the file name or the number of
    /// copies, so the same upload may use it again a moment later.
    pub reusable: bool,
}

/// No node can take a key: each node and why, with the reserve and the
/// key's size so that the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no node of the cluster can take the content now: {}", describe(self))]
pub struct NoTarget {
    pub skipped: Vec<(String, Skip)>,
    pub reserve: u64,
    pub size: u64,
}

fn describe(n: &NoTarget) -> String {
    if n.skipped.is_empty() {
        return "the cluster has no nodes; start an agent with --cluster naming it".into();
    }
    let mut short = false;
    let mut unhealthy = false;
    let mut text = n
        .skipped
        .iter()
        .map(|(name, why)| match why {
            Skip::Down => {
                unhealthy = true;
                format!("{name} is down")
            }
            Skip::Degraded => {
                unhealthy = true;
                format!("{name} is degraded (a write failed on it lately)")
            }
            Skip::Draining => format!("{name} is draining"),
            Skip::ShortOfSpace { free } => {
                short = true;
                format!("{name} has {} free", human(*free))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if short {
        text.push_str(&format!(
            "; a {} key must leave the cluster's reserve of {} free on a node: free space or              lower it (annexmesh admin cluster reserve CLUSTER SIZE)",
            human(n.size),
            human(n.reserve)
        ));
    } else if unhealthy {
        text.push_str("; no healthy node: check the agents (annexmesh admin node list)");
    }
    text
}

/// A size in the decimal units `--reserve` takes.
pub fn human(bytes: u64) -> String {
    crate::preferred::format_size(bytes, false)
}

/// Why `c` cannot take a key of `size` bytes, if it cannot.
pub fn skip(c: &Candidate, size: u64, reserve: u64) -> Option<Skip> {
    if !c.healthy {
        return Some(Skip::Down);
    }
    if c.degraded {
        return Some(Skip::Degraded);
    }
    if c.draining {
        return Some(Skip::Draining);
    }
    match c.free_bytes {
        Some(free) if free.checked_sub(size).is_none_or(|left| left < reserve) => {
            Some(Skip::ShortOfSpace { free })
        }
        _ => None,
    }
}

/// Chooses the targets among `candidates` (the nodes of one cluster) for a
/// key with `copies` known copies in the cluster.
pub fn plan(
    candidates: &[Candidate],
    key: &Key,
    file: Option<&str>,
    copies: u64,
    reserve: u64,
) -> Result<Plan, NoTarget> {
    let size = key.size.unwrap_or(0);
    let mut skipped = Vec::new();
    let mut eligible = Vec::new();
    for c in candidates {
        match skip(c, size, reserve) {
            Some(why) => skipped.push((c.name.clone(), why)),
            None => eligible.push(c),
        }
    }
    if eligible.is_empty() {
        return Err(NoTarget { skipped, reserve, size });
    }
    let reusable =
        candidates.iter().all(|c| c.wanted.as_ref().is_none_or(|e| !e.reads_file_or_copies()));
    let subject = Subject { key, file, copies };
    let wanting: Vec<String> = eligible
        .iter()
        .filter(|c| c.wanted.as_ref().is_none_or(|e| e.matches(&subject)))
        .map(|c| c.uuid.clone())
        .collect();
    if wanting.is_empty() {
        return Ok(Plan {
            targets: eligible.iter().map(|c| c.uuid.clone()).collect(),
            unwanted: true,
            reusable,
        });
    }
    Ok(Plan { targets: wanting, unwanted: false, reusable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, wanted: Option<&str>) -> Candidate {
        Candidate {
            uuid: format!("uuid-{name}"),
            name: name.into(),
            healthy: true,
            degraded: false,
            draining: false,
            free_bytes: Some(10_000_000_000),
            wanted: wanted.map(|w| Arc::new(Expr::parse(w).unwrap())),
        }
    }

    fn key(size: u64) -> Key {
        format!(
            "SHA256E-s{size}--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03.bin"
        )
        .parse()
        .unwrap()
    }

    fn targets(nodes: &[Candidate], size: u64) -> Vec<String> {
        plan(nodes, &key(size), Some("dir/file.bin"), 0, 100).unwrap().targets
    }

    #[test]
    fn preferred_content_steers() {
        let nodes = [
            node("n1", Some("largerthan=1MB")),
            node("n2", Some("nothing")),
            node("n3", Some("smallerthan=1MB")),
        ];
        assert_eq!(targets(&nodes, 2_000_000), ["uuid-n1"]);
        assert_eq!(targets(&nodes, 10), ["uuid-n3"]);
    }

    #[test]
    fn a_node_without_an_expression_wants_everything() {
        let nodes = [node("n1", None), node("n2", Some("nothing"))];
        assert_eq!(targets(&nodes, 10), ["uuid-n1"]);
    }

    #[test]
    fn unwanted_content_goes_to_every_eligible_node() {
        let mut nodes =
            [node("n1", Some("nothing")), node("n2", Some("nothing")), node("n3", Some("nothing"))];
        let p = plan(&nodes, &key(10), None, 0, 100).unwrap();
        assert!(p.unwanted);
        assert_eq!(p.targets, ["uuid-n1", "uuid-n2", "uuid-n3"]);
        nodes[1].draining = true;
        assert_eq!(targets(&nodes, 10), ["uuid-n1", "uuid-n3"]);
    }

    #[test]
    fn down_draining_and_full_nodes_are_skipped() {
        let mut nodes = [node("n1", None), node("n2", None), node("n3", None), node("n4", None)];
        nodes[0].healthy = false;
        nodes[1].draining = true;
        nodes[2].free_bytes = Some(50);
        // Free space not reported yet: not held against the node.
        nodes[3].free_bytes = None;
        assert_eq!(targets(&nodes, 10), ["uuid-n4"]);
        // The key's size counts: 1000 free - 900 leaves exactly the reserve.
        nodes[3].healthy = false;
        nodes[2].free_bytes = Some(1_000);
        assert_eq!(targets(&nodes, 900), ["uuid-n3"]);
        let err = plan(&nodes, &key(901), None, 0, 100).unwrap_err();
        assert_eq!(err.skipped.len(), 4);
        let text = err.to_string();
        assert!(text.contains("reserve of 100 bytes"), "{text}");
        assert!(text.contains("admin cluster reserve"), "{text}");
        let msg = err.to_string();
        for part in
            ["n1 is down", "n2 is draining", "n3 has 1.0 kB free", "n4 is down", "a 901 bytes key"]
        {
            assert!(msg.contains(part), "{msg}");
        }
    }

    #[test]
    fn degraded_nodes_get_no_new_content() {
        let mut nodes = [node("n1", None), node("n2", None), node("n3", None)];
        nodes[1].degraded = true;
        assert_eq!(targets(&nodes, 10), ["uuid-n1", "uuid-n3"]);
        // Not even when nobody eligible wants the key.
        let mut unwanted = [node("n1", Some("nothing")), node("n2", Some("nothing"))];
        unwanted[0].degraded = true;
        assert_eq!(targets(&unwanted, 10), ["uuid-n2"]);
        nodes[0].degraded = true;
        nodes[2].degraded = true;
        let msg = plan(&nodes, &key(10), None, 0, 100).unwrap_err().to_string();
        assert_eq!(
            msg,
            "no node of the cluster can take the content now: n1 is degraded (a write failed on \
             it lately), n2 is degraded (a write failed on it lately), n3 is degraded (a write \
             failed on it lately); no healthy node: check the agents (annexmesh admin node list)"
        );
    }

    #[test]
    fn a_wanting_node_that_is_skipped_does_not_count() {
        let mut nodes = [
            node("n1", Some("anything")),
            node("n2", Some("nothing")),
            node("n3", Some("nothing")),
        ];
        nodes[0].draining = true;
        // n1 would want it but is draining: nobody eligible wants it.
        assert_eq!(targets(&nodes, 10), ["uuid-n2", "uuid-n3"]);
    }

    #[test]
    fn copies_and_files_reach_the_expressions() {
        let nodes = [
            node("n1", Some("not copies=2")),
            node("n2", Some("include=dir/*")),
            node("n3", Some("exclude=*.bin")),
        ];
        let p = |copies, file| plan(&nodes, &key(10), file, copies, 0).unwrap().targets;
        assert_eq!(p(0, Some("dir/x.bin")), ["uuid-n1", "uuid-n2"]);
        assert_eq!(p(2, Some("dir/x.bin")), ["uuid-n2"]);
        assert_eq!(p(2, Some("x.txt")), ["uuid-n3"]);
        assert_eq!(p(2, None), ["uuid-n3"]);
    }

    #[test]
    fn only_plans_that_read_neither_file_nor_copies_are_reusable() {
        let reusable = |exprs: &[Option<&str>]| {
            let nodes: Vec<_> = exprs.iter().map(|e| node("n", *e)).collect();
            plan(&nodes, &key(10), Some("dir/x.bin"), 1, 0).unwrap().reusable
        };
        assert!(reusable(&[None, None]));
        assert!(reusable(&[Some("largerthan=1MB"), Some("not smallerthan=5kB or anything")]));
        assert!(!reusable(&[None, Some("include=dir/*")]));
        assert!(!reusable(&[Some("not exclude=*.bin"), None]));
        assert!(!reusable(&[Some("largerthan=1MB and not copies=2")]));
        // A node passed over still counts: it may be eligible a moment later.
        let mut nodes = [node("n1", None), node("n2", Some("include=*"))];
        nodes[1].draining = true;
        assert!(!plan(&nodes, &key(10), None, 0, 0).unwrap().reusable);
    }

    #[test]
    fn an_empty_cluster_says_so() {
        assert_eq!(
            plan(&[], &key(1), None, 0, 0).unwrap_err().to_string(),
            "no node of the cluster can take the content now: the cluster has no nodes; start an agent with --cluster naming it"
        );
    }
}
