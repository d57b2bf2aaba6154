//! What a gateway knows of the mesh: a topology snapshot refreshed from the
//! coordinator, one client per agent (reused while the node keeps its
//! address), which agents failed a moment ago, and the failures counted
//! and reported per node (`failures`).

pub mod api;
pub mod failures;
pub mod grpc;
pub mod metrics;
mod traced;
pub mod uploads;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::Status;
use tracing::{info, warn};

use self::api::{Control, NodeClient, Nodes};
use self::failures::{Failures, Kind};
use super::select::{Busy, Loads};
use crate::rpc;
use crate::tasks::Tasks;

/// After failing to reach an agent, the gateway ranks it last for this long,
/// doubling with each further failure up to BACKOFF_MAX. Connecting is left
/// to the channel, which reconnects on the next request after a failure; the
/// backoff keeps requests from waiting on a node that just failed while
/// others can serve.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Snapshot {
    pub clusters: Vec<rpc::ClusterInfo>,
    pub nodes: Vec<rpc::NodeInfo>,
}

/// A repository the gateway serves: a whole cluster or one node of it.
#[derive(Debug, Clone)]
pub enum Repo {
    /// `bypass`: nodes the client asked to avoid (P2P BYPASS), which the
    /// request then does not use.
    Cluster {
        uuid: String,
        name: String,
        nodes: Vec<rpc::NodeInfo>,
        bypass: BTreeSet<String>,
    },
    Node(rpc::NodeInfo),
}

impl Repo {
    /// The cluster's or node's name, as logs and messages show it.
    pub fn name(&self) -> &str {
        match self {
            Repo::Cluster { name, .. } => name,
            Repo::Node(n) => &n.name,
        }
    }

    pub fn uuid(&self) -> &str {
        match self {
            Repo::Cluster { uuid, .. } => uuid,
            Repo::Node(n) => &n.uuid,
        }
    }

    /// The cluster whose clock the repository presents.
    pub fn cluster_uuid(&self) -> &str {
        match self {
            Repo::Cluster { uuid, .. } => uuid,
            Repo::Node(n) => &n.cluster_uuid,
        }
    }

    /// The repository without the nodes the client asked to bypass.
    pub fn bypassing(self, uuids: BTreeSet<String>) -> Repo {
        match self {
            Repo::Cluster { uuid, name, nodes, .. } => {
                Repo::Cluster { uuid, name, nodes, bypass: uuids }
            }
            node => node,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Repo::Cluster { .. })
    }

    /// Every node behind the repository, healthy or not.
    pub fn nodes(&self) -> Vec<rpc::NodeInfo> {
        match self {
            Repo::Cluster { nodes, bypass, .. } => {
                nodes.iter().filter(|n| !bypass.contains(&n.uuid)).cloned().collect()
            }
            Repo::Node(n) => vec![n.clone()],
        }
    }
}

impl Snapshot {
    fn repo(&self, pred: impl Fn(&str, &str) -> bool) -> Option<Repo> {
        if let Some(c) = self.clusters.iter().find(|c| pred(&c.uuid, &c.name)) {
            let nodes = self.nodes.iter().filter(|n| n.cluster_uuid == c.uuid).cloned().collect();
            return Some(Repo::Cluster {
                uuid: c.uuid.clone(),
                name: c.name.clone(),
                nodes,
                bypass: BTreeSet::new(),
            });
        }
        self.nodes.iter().find(|n| pred(&n.uuid, &n.name)).cloned().map(Repo::Node)
    }
}

/// The gateway's connection to one agent, by node UUID.
struct Link {
    address: String,
    client: Arc<dyn NodeClient>,
    /// Failures since the last success.
    failures: u32,
    /// Until when the node is ranked last.
    backoff_until: Option<Instant>,
}

pub struct Mesh {
    control: Arc<dyn Control>,
    nodes: Arc<dyn Nodes>,
    snapshot: RwLock<Arc<Snapshot>>,
    agents: Mutex<HashMap<String, Link>>,
    loads: Loads,
    failures: Failures,
    /// When a lookup that missed last refreshed the snapshot; the lock also
    /// keeps such refreshes to one at a time.
    missed: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// When a topology read last succeeded, for readiness.
    last_ok: Mutex<Option<Instant>>,
    /// Plans and offsets one request of an upload learned for the next.
    pub uploads: uploads::Uploads,
}

/// Lookups that miss (a name nobody serves, or one just created) refresh
/// the snapshot at most this often, waiting for the next refresh when the
/// last one is older than they are, so requests naming unknown repositories
/// cannot make the coordinator read the whole topology for each.
const MISS_REFRESH: Duration = Duration::from_secs(1);

/// A topology read this recent shows the coordinator reachable.
const READY_FRESH: Duration = Duration::from_secs(2);
/// How long a readiness check waits for the coordinator.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

impl Mesh {
    /// The real mesh: the coordinator at `coordinator_url` and agents over
    /// gRPC.
    pub fn new(coordinator_url: &str, dialer: crate::rpc::Dialer) -> anyhow::Result<Arc<Mesh>> {
        let control = grpc::GrpcControl::new(coordinator_url, &dialer)?;
        Ok(Mesh::with(Arc::new(control), Arc::new(grpc::GrpcNodes(dialer))))
    }

    /// A mesh reaching the coordinator and the agents through `control` and
    /// `nodes`.
    pub fn with(control: Arc<dyn Control>, nodes: Arc<dyn Nodes>) -> Arc<Mesh> {
        Arc::new(Mesh {
            control,
            nodes,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            agents: Mutex::new(HashMap::new()),
            loads: Loads::default(),
            failures: Failures::default(),
            missed: tokio::sync::Mutex::new(None),
            last_ok: Mutex::new(None),
            uploads: uploads::Uploads::default(),
        })
    }

    /// The coordinator.
    pub fn control(&self) -> &dyn Control {
        &*self.control
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap().clone()
    }

    pub async fn refresh(&self) -> Result<(), Status> {
        let t = self.control.topology().await?;
        let new = Arc::new(Snapshot { clusters: t.clusters, nodes: t.nodes });
        let old = std::mem::replace(&mut *self.snapshot.write().unwrap(), new.clone());
        self.follow_health(&old, &new);
        *self.last_ok.lock().unwrap() = Some(Instant::now());
        Ok(())
    }

    /// Whether the gateway can serve: it reaches the coordinator (a
    /// topology read in the last `READY_FRESH`, or one now) and knows at
    /// least one cluster. Err says why not.
    pub async fn ready(&self) -> Result<(), String> {
        let fresh = self.last_ok.lock().unwrap().is_some_and(|t| t.elapsed() < READY_FRESH);
        if !fresh {
            match tokio::time::timeout(READY_TIMEOUT, self.refresh()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("cannot reach the coordinator: {}", e.message())),
                Err(_) => return Err("the coordinator does not answer".into()),
            }
        }
        if self.snapshot().clusters.is_empty() {
            return Err("the coordinator knows no cluster yet".into());
        }
        Ok(())
    }

    /// Keeps the agent links in step with the coordinator's view: a node that
    /// is gone loses its channel, and one that came back up (its agent
    /// heartbeats again, typically after a restart) is tried again at once
    /// instead of waiting out a backoff.
    fn follow_health(&self, old: &Snapshot, new: &Snapshot) {
        // A plan made before a node went down, degraded, drained, moved or
        // changed what it wants is not reused.
        fn placed(s: &Snapshot) -> Vec<(&String, &String, bool, bool, bool, &String)> {
            let mut v: Vec<_> = s
                .nodes
                .iter()
                .map(|n| (&n.uuid, &n.address, n.healthy, n.degraded, n.draining, &n.wanted))
                .collect();
            v.sort();
            v
        }
        if placed(old) != placed(new) {
            self.uploads.forget();
        }
        let mut agents = self.agents.lock().unwrap();
        agents.retain(|uuid, _| new.nodes.iter().any(|n| &n.uuid == uuid));
        for n in &new.nodes {
            let was_down = old.nodes.iter().any(|o| o.uuid == n.uuid && !o.healthy);
            if n.healthy && was_down {
                if let Some(link) = agents.get_mut(&n.uuid) {
                    link.failures = 0;
                    link.backoff_until = None;
                }
                info!(node = %n.name, "node is up again");
            }
        }
    }

    async fn lookup(&self, pred: impl Fn(&str, &str) -> bool) -> Option<Repo> {
        if let Some(r) = self.snapshot().repo(&pred) {
            return Some(r);
        }
        // A miss is answered from a snapshot read after it arrived, so a
        // node or cluster that exists by then is found; misses share those
        // reads, and there is at most one a second.
        let asked = tokio::time::Instant::now();
        let mut missed = self.missed.lock().await;
        if let Some(last) = *missed {
            if last >= asked {
                return self.snapshot().repo(&pred);
            }
            tokio::time::sleep_until(last + MISS_REFRESH).await;
        }
        *missed = Some(tokio::time::Instant::now());
        if self.refresh().await.is_ok() {
            return self.snapshot().repo(&pred);
        }
        None
    }

    /// `repo` as the coordinator knows it now, for requests that must reach
    /// every node (a node may have joined or moved since the last refresh);
    /// the snapshot's view when the coordinator cannot be asked.
    pub async fn fresh(&self, repo: &Repo) -> Repo {
        if let Err(e) = self.refresh().await {
            warn!("using the last known topology: {}", e.message());
        }
        match (self.snapshot().repo(|u: &str, _: &str| u == repo.uuid()), repo) {
            (Some(now), Repo::Cluster { bypass, .. }) => now.bypassing(bypass.clone()),
            (Some(now), _) => now,
            (None, _) => repo.clone(),
        }
    }

    pub async fn repo_by_uuid(&self, uuid: &str) -> Option<Repo> {
        self.lookup(|u, _| u == uuid).await
    }

    pub async fn repo_by_name(&self, name: &str) -> Option<Repo> {
        self.lookup(|_, n| n == name).await
    }

    /// The agent's client (over gRPC: one shared HTTP/2 connection), made
    /// on first use and made anew when the agent moves to another address;
    /// tonic reconnects it when it breaks.
    pub fn agent(&self, node: &rpc::NodeInfo) -> Result<Arc<dyn NodeClient>, Status> {
        let mut agents = self.agents.lock().unwrap();
        if let Some(link) = agents.get(&node.uuid).filter(|l| l.address == node.address) {
            return Ok(link.client.clone());
        }
        let client = traced::Traced::wrap(node, self.nodes.connect(node)?);
        let link = Link {
            address: node.address.clone(),
            client: client.clone(),
            failures: 0,
            backoff_until: None,
        };
        agents.insert(node.uuid.clone(), link);
        Ok(client)
    }

    /// Sends the failure reports to the coordinator until the gateway
    /// stops (started by `spawn_refresh`; only the first call counts).
    pub fn spawn_reports(&self, tasks: &Tasks) {
        self.failures.spawn_sender(self.control.clone(), tasks);
    }

    /// Notes that a PUT target failed to store: counted, and reported to
    /// the coordinator, which then places no new content on the node until
    /// it recovers.
    pub fn put_failed(&self, node: &rpc::NodeInfo, why: &str) {
        warn!(node = %node.name, uuid = %node.uuid, "put failed on the node: {why}; reporting it degraded");
        self.uploads.forget();
        self.failures.note(node, Kind::Put, why);
    }

    /// Counts a GET continued on another node after `node` failed.
    pub fn failed_over(&self, node: &rpc::NodeInfo) {
        self.failures.note_failover(&node.uuid);
    }

    /// The failures counted on the node `uuid`.
    pub fn failures(&self, uuid: &str) -> failures::Counts {
        self.failures.counts(uuid)
    }

    /// Notes that `node` could not be reached or failed mid-request (a GET,
    /// CHECKPRESENT or REMOVE call failed or stalled): it is ranked last for
    /// a backoff, and the failure is counted and reported to the
    /// coordinator.
    pub fn agent_failed(&self, node: &rpc::NodeInfo, why: &str) {
        self.failures.note(node, Kind::Data, why);
        self.uploads.forget();
        let mut agents = self.agents.lock().unwrap();
        let Some(link) = agents.get_mut(&node.uuid) else { return };
        link.failures = link.failures.saturating_add(1);
        let backoff = BACKOFF_MIN.saturating_mul(1 << (link.failures - 1).min(16)).min(BACKOFF_MAX);
        link.backoff_until = Some(Instant::now() + backoff);
        if link.failures == 1 {
            warn!(node = %node.name, "agent failed: {why}; preferring other nodes for {backoff:?}");
        } else {
            tracing::debug!(node = %node.name, failures = link.failures, "agent failed again: {why}");
        }
    }

    /// Notes that `node` answered.
    pub fn agent_ok(&self, node: &rpc::NodeInfo) {
        let mut agents = self.agents.lock().unwrap();
        if let Some(link) = agents.get_mut(&node.uuid) {
            if link.failures > 0 {
                info!(node = %node.name, "agent answers again");
            }
            link.failures = 0;
            link.backoff_until = None;
        }
    }

    /// Nodes the gateway failed to reach a moment ago.
    fn backing_off_set(&self) -> Vec<String> {
        let now = Instant::now();
        let agents = self.agents.lock().unwrap();
        agents
            .iter()
            .filter(|(_, l)| l.backoff_until.is_some_and(|t| now < t))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// `nodes` best first for a GET or CHECKPRESENT (see `select`). Nodes
    /// this gateway failed to reach a moment ago and nodes the coordinator
    /// reports degraded come last, but are still asked when nothing else is
    /// left (as a node addressed alone is).
    pub fn rank(&self, nodes: Vec<rpc::NodeInfo>) -> Vec<rpc::NodeInfo> {
        let off = self.backing_off_set();
        self.loads.rank(nodes, |n| n.degraded || off.contains(&n.uuid))
    }

    /// The best of `nodes` to GET from, counted busy until the guard drops.
    pub fn pick(&self, nodes: &[rpc::NodeInfo]) -> Option<(rpc::NodeInfo, Busy)> {
        let off = self.backing_off_set();
        self.loads.pick(nodes, |n| n.degraded || off.contains(&n.uuid))
    }
}

#[cfg(test)]
mod tests;
