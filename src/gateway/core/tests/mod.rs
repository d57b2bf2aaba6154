//! The cluster rules of the request core, table-driven over fake nodes and
//! a fake coordinator (`fake`). Every case builds its own small cluster
//! named "c" whose nodes are named (and identified) by other single letters.

/// A table of cases, one test each, so that every case is reported by name
/// and a failing case does not hide the others:
///
/// ```text
/// cases! {
///     #[tokio::test] check;
///     short_name => Case { .. },
/// }
/// ```
///
/// expands to `#[tokio::test] async fn short_name() { check(Case { .. }).await }`
/// for every entry.
macro_rules! cases {
    (#[$test:meta] $check:ident; $($name:ident => $case:expr,)+) => {
        $(
            #[$test]
            async fn $name() {
                $check($case).await
            }
        )+
    };
}

mod fake;
mod get;
mod present;
mod put;
mod remove;
mod reuse;

use crate::tasks::Tasks;
use std::collections::HashMap;
use std::sync::Arc;

use self::fake::{Behaviour, FakeControl, FakeNode, FakeNodes};
use super::Core;
use crate::gateway::mesh::{Mesh, Repo};
use crate::p2p::key::Key;
use crate::rpc;

const CLUSTER: &str = "c-uuid";
/// The content every holder has, 16 bytes.
const CONTENT: &[u8] = b"0123456789abcdef";

fn checksum_key() -> Key {
    format!("SHA256E-s16--{}.txt", "a".repeat(64)).parse().unwrap()
}

fn worm_key() -> Key {
    "WORM-s16-m1700000000--file.txt".parse().unwrap()
}

/// One node of a test cluster.
#[derive(Debug, Clone, Copy)]
struct N {
    name: &'static str,
    cost: u32,
    healthy: bool,
    behaviour: Behaviour,
    holds: bool,
    listed: bool,
    partial: usize,
}

/// A healthy node of cost 100, without the content, not in the log.
fn n(name: &'static str) -> N {
    N {
        name,
        cost: 100,
        healthy: true,
        behaviour: Behaviour::Healthy,
        holds: false,
        listed: false,
        partial: 0,
    }
}

impl N {
    /// Holds the content, and the location log says so.
    fn has(self) -> N {
        N { holds: true, listed: true, ..self }
    }
    /// Holds the content; the location log does not know.
    fn has_unlisted(self) -> N {
        N { holds: true, ..self }
    }
    /// The location log lists it, but it does not hold the content.
    fn lies(self) -> N {
        N { listed: true, ..self }
    }
    fn cost(self, cost: u32) -> N {
        N { cost, ..self }
    }
    /// The coordinator reports it down.
    fn down(self) -> N {
        N { healthy: false, ..self }
    }
    fn behaving(self, behaviour: Behaviour) -> N {
        N { behaviour, ..self }
    }
    /// Holds the first `bytes` of the content from an interrupted upload.
    fn partial(self, bytes: usize) -> N {
        N { partial: bytes, ..self }
    }

    fn info(&self) -> rpc::NodeInfo {
        rpc::NodeInfo {
            uuid: self.name.into(),
            name: self.name.into(),
            cluster_uuid: CLUSTER.into(),
            address: format!("fake://{}", self.name),
            healthy: self.healthy,
            cost: self.cost,
            ..Default::default()
        }
    }
}

/// A core over fake nodes and a fake coordinator.
struct World {
    core: Core,
    control: Arc<FakeControl>,
    nodes: HashMap<String, Arc<FakeNode>>,
}

impl World {
    /// Every node is a PUT target and one copy is enough.
    fn new(specs: &[N], key: &Key) -> World {
        let all = specs.iter().map(|s| s.name).collect();
        World::planned(specs, key, all, 1, 0)
    }

    /// With a placement plan (`targets`, `min_copies`) and a cluster clock.
    fn planned(specs: &[N], key: &Key, targets: Vec<&str>, min: u32, clock_ms: u64) -> World {
        let k = key.to_string();
        let mut nodes = HashMap::new();
        let mut listed = std::collections::BTreeSet::new();
        for s in specs {
            let node = FakeNode::new(s.behaviour);
            if s.holds {
                node.content.lock().unwrap().insert(k.clone(), CONTENT.into());
            }
            if s.partial > 0 {
                node.partial.lock().unwrap().insert(k.clone(), CONTENT[..s.partial].to_vec());
            }
            if s.listed {
                listed.insert(s.name.to_string());
            }
            nodes.insert(s.name.to_string(), Arc::new(node));
        }
        let cluster =
            rpc::ClusterInfo { uuid: CLUSTER.into(), name: "c".into(), ..Default::default() };
        let topology = rpc::TopologyReply {
            clusters: vec![cluster],
            nodes: specs.iter().map(N::info).collect(),
        };
        let control = Arc::new(FakeControl {
            topology,
            log: std::sync::Mutex::new(HashMap::from([(k, listed)])),
            plan: (targets.into_iter().map(String::from).collect(), min),
            clock_ms,
            ..Default::default()
        });
        let mesh = Mesh::with(control.clone(), Arc::new(FakeNodes(nodes.clone())));
        World { core: Core::new(mesh, Tasks::new(&Default::default())), control, nodes }
    }

    /// The cluster, or the node `name` addressed alone.
    async fn repo(&self, name: &str) -> Repo {
        self.core.mesh.repo_by_name(name).await.expect("the repository exists")
    }

    /// From now on, writes to the location log fail.
    fn fail_records(&self) {
        self.control.records_fail.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Copies nodes reported corrupt, as the gateway counted them.
    fn corrupt_copies(&self) -> u64 {
        self.core.metrics.corrupt_copies.get()
    }

    fn node(&self, name: &str) -> &FakeNode {
        &self.nodes[name]
    }

    /// The nodes holding the whole content, by name.
    fn holders(&self, key: &Key) -> Vec<String> {
        let mut names: Vec<_> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.holds(&key.to_string()).is_some())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }
}

/// `names` as owned, sorted strings, to compare with node lists.
fn names(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
