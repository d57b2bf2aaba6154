//! The coordinator's gRPC services: what agents and gateways ask
//! (`Coordinator`) and what operators ask (`Admin`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use tracing::info;

use super::clock::ClusterClock;
use super::state::{Node, State, StateError};
use crate::p2p::key::Key;
use crate::rpc::{self, admin_server, coordinator_server};

/// A node that missed this long of heartbeats is unhealthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(7);

#[derive(Debug, Clone)]
struct Health {
    last_seen: Instant,
    last_seen_unix_ms: u64,
    free_bytes: u64,
    active_transfers: u32,
}

pub struct CoordinatorService {
    state: Arc<State>,
    clock: Arc<ClusterClock>,
    health: Mutex<HashMap<String, Health>>,
}

impl From<StateError> for Status {
    fn from(e: StateError) -> Status {
        Status::internal(e.to_string())
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn valid_key(s: &str) -> Result<(), Status> {
    s.parse::<Key>().map(|_| ()).map_err(|e| Status::invalid_argument(format!("bad key {s:?}: {e}")))
}

fn valid_uuid(s: &str) -> Result<(), Status> {
    uuid::Uuid::parse_str(s).map(|_| ()).map_err(|_| Status::invalid_argument(format!("not a UUID: {s:?}")))
}

/// Cluster and node names appear in URLs and git remote names.
pub fn valid_name(s: &str) -> Result<(), Status> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s != "git-annex"
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "bad name {s:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.', and not 'git-annex'"
        )))
    }
}

impl CoordinatorService {
    pub fn new(state: Arc<State>, clock: Arc<ClusterClock>) -> CoordinatorService {
        CoordinatorService { state, clock, health: Mutex::new(HashMap::new()) }
    }

    fn node_info(&self, n: &Node) -> rpc::NodeInfo {
        let health = self.health.lock().unwrap().get(&n.uuid).cloned();
        let healthy = health.as_ref().is_some_and(|h| h.last_seen.elapsed() < HEALTH_TIMEOUT);
        rpc::NodeInfo {
            uuid: n.uuid.clone(),
            name: n.name.clone(),
            cluster_uuid: n.cluster_uuid.clone(),
            address: n.address.clone(),
            healthy,
            last_seen_unix_ms: health.as_ref().map_or(0, |h| h.last_seen_unix_ms),
            free_bytes: health.as_ref().map_or(0, |h| h.free_bytes),
            active_transfers: health.as_ref().map_or(0, |h| h.active_transfers),
        }
    }

    fn all_nodes(&self) -> Result<Vec<rpc::NodeInfo>, Status> {
        Ok(self.state.nodes()?.iter().map(|n| self.node_info(n)).collect())
    }

    fn touch(&self, uuid: &str, free_bytes: u64, active_transfers: u32) {
        self.health.lock().unwrap().insert(
            uuid.to_string(),
            Health { last_seen: Instant::now(), last_seen_unix_ms: unix_ms(), free_bytes, active_transfers },
        );
    }
}

fn cluster_info(c: &super::state::Cluster) -> rpc::ClusterInfo {
    rpc::ClusterInfo { uuid: c.uuid.clone(), name: c.name.clone() }
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for Arc<CoordinatorService> {
    async fn register(&self, req: Request<rpc::RegisterRequest>) -> Result<Response<rpc::RegisterReply>, Status> {
        let r = req.into_inner();
        valid_uuid(&r.uuid)?;
        valid_name(&r.name)?;
        let cluster = self.state.cluster_by_name(&r.cluster)?.ok_or_else(|| {
            Status::failed_precondition(format!(
                "unknown cluster {:?}: create it with `annexmesh admin cluster create {}`",
                r.cluster, r.cluster
            ))
        })?;
        if let Some(other) = self.state.nodes()?.into_iter().find(|n| n.name == r.name && n.uuid != r.uuid) {
            return Err(Status::already_exists(format!(
                "node name {:?} is taken by node {}; choose another --name",
                r.name, other.uuid
            )));
        }
        let node = Node { uuid: r.uuid.clone(), name: r.name, cluster_uuid: cluster.uuid.clone(), address: r.address };
        if self.state.node(&node.uuid)?.as_ref() != Some(&node) {
            self.state.upsert_node(&node)?;
            info!(node = %node.uuid, name = %node.name, cluster = %cluster.name, address = %node.address, "node registered");
        }
        self.touch(&node.uuid, 0, 0);
        Ok(Response::new(rpc::RegisterReply { cluster_uuid: cluster.uuid }))
    }

    async fn heartbeat(&self, req: Request<rpc::HeartbeatRequest>) -> Result<Response<rpc::HeartbeatReply>, Status> {
        let r = req.into_inner();
        let known = self.state.node(&r.uuid)?.is_some();
        if known {
            self.touch(&r.uuid, r.free_bytes, r.active_transfers);
        }
        Ok(Response::new(rpc::HeartbeatReply { known }))
    }

    async fn topology(&self, _: Request<rpc::TopologyRequest>) -> Result<Response<rpc::TopologyReply>, Status> {
        let clusters = self.state.clusters()?.iter().map(cluster_info).collect();
        Ok(Response::new(rpc::TopologyReply { clusters, nodes: self.all_nodes()? }))
    }

    async fn locate(&self, req: Request<rpc::LocateRequest>) -> Result<Response<rpc::LocateReply>, Status> {
        let key = &req.get_ref().key;
        valid_key(key)?;
        let node_uuids = self.state.locations(key)?.into_iter().filter(|e| e.present).map(|e| e.node_uuid).collect();
        Ok(Response::new(rpc::LocateReply { node_uuids }))
    }

    async fn plan_put(&self, req: Request<rpc::PlanPutRequest>) -> Result<Response<rpc::PlanPutReply>, Status> {
        let r = req.into_inner();
        valid_key(&r.key)?;
        if self.state.cluster_by_uuid(&r.cluster_uuid)?.is_none() {
            return Err(Status::not_found(format!("unknown cluster {}", r.cluster_uuid)));
        }
        let node_uuids: Vec<String> = self
            .all_nodes()?
            .into_iter()
            .filter(|n| n.cluster_uuid == r.cluster_uuid && n.healthy)
            .map(|n| n.uuid)
            .collect();
        if node_uuids.is_empty() {
            return Err(Status::unavailable("no healthy node in the cluster can take the content"));
        }
        Ok(Response::new(rpc::PlanPutReply { node_uuids }))
    }

    async fn record_locations(
        &self,
        req: Request<rpc::RecordLocationsRequest>,
    ) -> Result<Response<rpc::RecordLocationsReply>, Status> {
        let changes = req.into_inner().changes;
        for c in &changes {
            valid_key(&c.key)?;
            valid_uuid(&c.node_uuid)?;
        }
        let changes: Vec<_> = changes.into_iter().map(|c| (c.key, c.node_uuid, c.present)).collect();
        self.state.record(&changes)?;
        Ok(Response::new(rpc::RecordLocationsReply {}))
    }

    async fn cluster_timestamp(
        &self,
        req: Request<rpc::ClusterTimestampRequest>,
    ) -> Result<Response<rpc::TimestampReply>, Status> {
        let uuid = &req.get_ref().cluster_uuid;
        if self.state.cluster_by_uuid(uuid)?.is_none() {
            return Err(Status::not_found(format!("unknown cluster {uuid}")));
        }
        let ms = self.clock.now_ms();
        Ok(Response::new(rpc::TimestampReply { timestamp: ms / 1000, timestamp_ms: ms, boot_id: String::new() }))
    }
}

#[tonic::async_trait]
impl admin_server::Admin for Arc<CoordinatorService> {
    async fn create_cluster(&self, req: Request<rpc::CreateClusterRequest>) -> Result<Response<rpc::ClusterInfo>, Status> {
        let name = &req.get_ref().name;
        valid_name(name)?;
        let (c, created) = self.state.create_cluster(name)?;
        if !created {
            return Err(Status::already_exists(format!("cluster {name:?} exists already ({})", c.uuid)));
        }
        info!(cluster = %c.name, uuid = %c.uuid, "cluster created");
        Ok(Response::new(cluster_info(&c)))
    }

    async fn list_clusters(&self, _: Request<rpc::ListClustersRequest>) -> Result<Response<rpc::ListClustersReply>, Status> {
        let clusters = self.state.clusters()?.iter().map(cluster_info).collect();
        Ok(Response::new(rpc::ListClustersReply { clusters }))
    }

    async fn list_nodes(&self, req: Request<rpc::ListNodesRequest>) -> Result<Response<rpc::ListNodesReply>, Status> {
        let name = &req.get_ref().cluster;
        let mut nodes = self.all_nodes()?;
        if !name.is_empty() {
            let c = self
                .state
                .cluster_by_name(name)?
                .ok_or_else(|| Status::not_found(format!("unknown cluster {name:?}")))?;
            nodes.retain(|n| n.cluster_uuid == c.uuid);
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(rpc::ListNodesReply { nodes }))
    }

    async fn whereis(&self, req: Request<rpc::WhereisRequest>) -> Result<Response<rpc::WhereisReply>, Status> {
        let key = &req.get_ref().key;
        valid_key(key)?;
        let names: HashMap<String, String> = self.state.nodes()?.into_iter().map(|n| (n.uuid, n.name)).collect();
        let entries = self
            .state
            .locations(key)?
            .into_iter()
            .map(|e| rpc::WhereisEntry {
                node_name: names.get(&e.node_uuid).cloned().unwrap_or_default(),
                node_uuid: e.node_uuid,
                present: e.present,
                changed_unix_ms: e.changed_unix_ms,
            })
            .collect();
        Ok(Response::new(rpc::WhereisReply { entries }))
    }
}
