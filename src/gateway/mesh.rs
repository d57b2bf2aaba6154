//! What a gateway knows of the mesh: a topology snapshot refreshed from the
//! coordinator, and one multiplexed gRPC channel per agent.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tracing::warn;

use crate::rpc::{self, agent_client::AgentClient, coordinator_client::CoordinatorClient};

/// How often the snapshot is refreshed in the background. Lookups that miss
/// refresh at once, so a newly created cluster is served immediately.
const REFRESH: Duration = Duration::from_secs(1);

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
    Cluster { uuid: String, name: String, nodes: Vec<rpc::NodeInfo>, bypass: BTreeSet<String> },
    Node(rpc::NodeInfo),
}

impl Repo {
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
            Repo::Cluster { uuid, name, nodes, .. } => Repo::Cluster { uuid, name, nodes, bypass: uuids },
            node => node,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Repo::Cluster { .. })
    }

    /// Every node behind the repository, healthy or not.
    pub fn nodes(&self) -> Vec<rpc::NodeInfo> {
        match self {
            Repo::Cluster { nodes, bypass, .. } => nodes.iter().filter(|n| !bypass.contains(&n.uuid)).cloned().collect(),
            Repo::Node(n) => vec![n.clone()],
        }
    }
}

impl Snapshot {
    fn repo(&self, pred: impl Fn(&str, &str) -> bool) -> Option<Repo> {
        if let Some(c) = self.clusters.iter().find(|c| pred(&c.uuid, &c.name)) {
            let nodes = self.nodes.iter().filter(|n| n.cluster_uuid == c.uuid).cloned().collect();
            return Some(Repo::Cluster { uuid: c.uuid.clone(), name: c.name.clone(), nodes, bypass: BTreeSet::new() });
        }
        self.nodes.iter().find(|n| pred(&n.uuid, &n.name)).cloned().map(Repo::Node)
    }
}

pub struct Mesh {
    coordinator: CoordinatorClient<Channel>,
    snapshot: RwLock<Arc<Snapshot>>,
    agents: Mutex<HashMap<String, AgentClient<Channel>>>,
}

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(rpc::STREAM_WINDOW))
        .initial_connection_window_size(Some(rpc::CONNECTION_WINDOW)))
}

impl Mesh {
    pub fn new(coordinator_url: &str) -> anyhow::Result<Arc<Mesh>> {
        let coordinator = CoordinatorClient::new(endpoint(coordinator_url)?.connect_lazy())
            .max_decoding_message_size(rpc::MAX_MESSAGE);
        Ok(Arc::new(Mesh {
            coordinator,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            agents: Mutex::new(HashMap::new()),
        }))
    }

    pub fn coordinator(&self) -> CoordinatorClient<Channel> {
        self.coordinator.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap().clone()
    }

    pub async fn refresh(&self) -> Result<(), tonic::Status> {
        let t = self.coordinator().topology(rpc::TopologyRequest {}).await?.into_inner();
        *self.snapshot.write().unwrap() = Arc::new(Snapshot { clusters: t.clusters, nodes: t.nodes });
        Ok(())
    }

    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mesh = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            while let Some(m) = mesh.upgrade() {
                match m.refresh().await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        warn!("cannot refresh the topology from the coordinator: {}", e.message());
                        failing = true;
                    }
                    Err(_) => {}
                }
                drop(m);
                tokio::time::sleep(REFRESH).await;
            }
        })
    }

    async fn lookup(&self, pred: impl Fn(&str, &str) -> bool) -> Option<Repo> {
        if let Some(r) = self.snapshot().repo(&pred) {
            return Some(r);
        }
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
        match (self.snapshot().repo(&|u: &str, _: &str| u == repo.uuid()), repo) {
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

    /// The agent's client over its one shared HTTP/2 connection, made on
    /// first use; tonic reconnects it when it breaks.
    pub fn agent(&self, node: &rpc::NodeInfo) -> Result<AgentClient<Channel>, tonic::Status> {
        let mut agents = self.agents.lock().unwrap();
        if let Some(c) = agents.get(&node.address) {
            return Ok(c.clone());
        }
        let ep = endpoint(&node.address)
            .map_err(|e| tonic::Status::internal(format!("bad agent address {:?}: {e}", node.address)))?;
        let c = AgentClient::new(ep.connect_lazy())
            .max_decoding_message_size(rpc::MAX_MESSAGE)
            .max_encoding_message_size(rpc::MAX_MESSAGE);
        agents.insert(node.address.clone(), c.clone());
        Ok(c)
    }
}
