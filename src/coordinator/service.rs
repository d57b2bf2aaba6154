//! The `Coordinator` gRPC service: what agents (registration, heartbeats)
//! and gateways (topology, locations, placement, clock, tokens) ask.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::clock::ClusterClock;
use super::core::Core;
use super::git::serve::{GitLimits, GitServer};
use super::health::{Failure, StoreCheck};
use super::identity;
use super::placement::{self, Candidate};
use super::store::{DEFAULT_REPLICATION, Node, NodeSettings, Registration};
use super::validate::{valid_key, valid_name, valid_token_sha256, valid_uuid};
use crate::preferred::Expr;
use crate::rpc::{self, coordinator_server};

pub use super::core::DEFAULT_RESERVE;
pub use super::health::HEALTH_TIMEOUT;

/// How long a gateway may reuse a plan that depends only on the key and the
/// nodes' state (see `placement::Plan::reusable`): long enough for the PUT
/// that follows a PUTOFFSET, short enough that a node's change of health
/// or space is heeded almost at once.
pub const PLAN_REUSE_MS: u32 = 1000;

/// Serves agents and gateways.
pub struct CoordinatorService {
    core: Arc<Core>,
    clock: Arc<ClusterClock>,
    git: GitServer,
}

impl CoordinatorService {
    pub fn new(core: Arc<Core>, clock: Arc<ClusterClock>) -> CoordinatorService {
        let git = GitServer::new(core.repos.clone(), GitLimits::default());
        CoordinatorService { core, clock, git }
    }

    /// Runs git processes within `limits` rather than the defaults.
    pub fn set_git_limits(&mut self, limits: GitLimits) {
        self.git = GitServer::new(self.core.repos.clone(), limits);
    }

    /// What placement knows of each of `nodes`.
    fn candidates(
        &self,
        nodes: &[Node],
        settings: &HashMap<String, NodeSettings>,
    ) -> Vec<Candidate> {
        let now = Instant::now();
        nodes
            .iter()
            .map(|n| {
                let (healthy, health) = self.core.health.get(&n.uuid);
                let s = settings.get(&n.uuid);
                // Expressions are checked when set; one that no longer parses
                // wants nothing rather than everything.
                let wanted = s.and_then(|s| s.wanted.as_deref()).map(|text| {
                    self.core.expr(text).unwrap_or_else(|e| {
                        warn!(node = %n.name, "ignoring bad preferred content expression {text:?}: {e}");
                        Arc::new(Expr::parse("nothing").expect("a valid expression"))
                    })
                });
                Candidate {
                    uuid: n.uuid.clone(),
                    name: n.name.clone(),
                    healthy,
                    degraded: self.core.health.is_degraded(&n.uuid, now),
                    draining: s.is_some_and(|s| s.draining),
                    free_bytes: health.and_then(|h| h.free_bytes),
                    wanted,
                }
            })
            .collect()
    }
}

impl CoordinatorService {
    /// Refuses to register `node` at an address where another live node
    /// answers: its traffic would go to the newcomer.
    async fn check_address_free(&self, node: &Node) -> Result<(), Status> {
        let holder = self.core.store.nodes().await?.into_iter().find(|n| {
            n.address == node.address && n.uuid != node.uuid && self.core.health.get(&n.uuid).0
        });
        match holder {
            Some(h) => {
                warn!(node = %node.uuid, address = %node.address, holder = %h.uuid, "refused a registration at a live node's address");
                Err(Status::already_exists(format!(
                    "address {} belongs to live node {} ({}); advertise an address of this agent's own",
                    node.address, h.name, h.uuid
                )))
            }
            None => Ok(()),
        }
    }
}

/// On a TLS coordinator, an agent speaks only for the node its certificate
/// names.
fn bind_caller<T>(req: &Request<T>, uuid: &str) -> Result<(), Status> {
    use crate::pki::{Identity, guard::Caller};
    match Caller::of(req) {
        None => Ok(()),
        Some(Identity::Agent(u)) if u == uuid => Ok(()),
        Some(who) => {
            warn!(%who, claimed = %uuid, "refused a call for another node");
            Err(Status::permission_denied(format!(
                "{who} may not speak for node {uuid}: its certificate names another node"
            )))
        }
    }
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for CoordinatorService {
    type GitStream = tokio_stream::wrappers::ReceiverStream<Result<rpc::GitReply, Status>>;

    async fn git(
        &self,
        req: Request<tonic::Streaming<rpc::GitRequest>>,
    ) -> Result<Response<Self::GitStream>, Status> {
        // Read before the stream names its cluster: the check is synchronous.
        let clusters: std::collections::HashSet<String> =
            self.core.store.clusters().await?.into_iter().map(|c| c.uuid).collect();
        let known = move |uuid: &str| Ok(clusters.contains(uuid));
        Ok(Response::new(self.git.serve(req.into_inner(), known).await?))
    }

    type WatchTopologyStream = super::watch::WatchStream;

    async fn watch_topology(
        &self,
        _: Request<rpc::WatchTopologyRequest>,
    ) -> Result<Response<Self::WatchTopologyStream>, Status> {
        Ok(Response::new(super::watch::watch(self.core.clone())))
    }

    async fn register(
        &self,
        req: Request<rpc::RegisterRequest>,
    ) -> Result<Response<rpc::RegisterReply>, Status> {
        bind_caller(&req, &req.get_ref().uuid)?;
        let r = req.into_inner();
        valid_uuid(&r.uuid)?;
        valid_name(&r.name)?;
        let store = &self.core.store;
        let cluster = store.cluster_by_name(&r.cluster).await?.ok_or_else(|| {
            Status::failed_precondition(format!(
                "unknown cluster {:?}: create it with `annexmesh admin cluster create {}`",
                r.cluster, r.cluster
            ))
        })?;
        let node = Node {
            uuid: r.uuid.clone(),
            name: r.name,
            cluster_uuid: cluster.uuid.clone(),
            address: r.address,
        };
        if self.core.ca().is_some() && !node.address.starts_with("https://") {
            return Err(Status::invalid_argument(format!(
                "address {} is not https://: this mesh talks TLS (use --advertise https://HOST:PORT)",
                node.address
            )));
        }
        self.check_address_free(&node).await?;
        if let Some(old) = store.node(&node.uuid).await? {
            identity::check_move(&self.core.dialer(), &self.core.health, &old, &node, &r.boot_id)
                .await?;
        }
        match store.register_node(node.clone()).await? {
            Registration::NameTaken(other) => {
                warn!(node = %node.uuid, name = %node.name, holder = %other.uuid, "refused a registration under a taken name");
                return Err(Status::already_exists(format!(
                    "node name {:?} is taken by node {}; choose another --name",
                    node.name, other.uuid
                )));
            }
            Registration::Removed(tomb) => {
                warn!(node = %node.uuid, name = %node.name, "refused a registration of a removed node");
                return Err(Status::failed_precondition(format!(
                    "node {} ({}) was removed from the mesh; to join again, start the agent \
                     with a new, empty store (it gets a new identity)",
                    tomb.node.name, tomb.node.uuid
                )));
            }
            Registration::Saved => {
                info!(node = %node.uuid, name = %node.name, cluster = %cluster.name, address = %node.address, "node registered");
            }
            Registration::Unchanged => {}
        }
        let free = self.core.health.get(&node.uuid).1.and_then(|h| h.free_bytes);
        self.core.health.touch(&node.uuid, &r.boot_id, free, 0);
        Ok(Response::new(rpc::RegisterReply { cluster_uuid: cluster.uuid }))
    }

    async fn heartbeat(
        &self,
        req: Request<rpc::HeartbeatRequest>,
    ) -> Result<Response<rpc::HeartbeatReply>, Status> {
        bind_caller(&req, &req.get_ref().uuid)?;
        let r = req.into_inner();
        let known = self.core.store.node(&r.uuid).await?.is_some();
        if known {
            let store = (r.partial_bytes, r.quarantined);
            let h = &self.core.health;
            h.touch_with(&r.uuid, &r.boot_id, Some(r.free_bytes), r.active_transfers, store);
            let check = store_check(&r);
            if self.core.health.store_checked(&r.uuid, &check, Instant::now()) {
                warn!(node = %r.uuid, error = %r.store_error, "node degraded: its store is not writable");
            }
        }
        Ok(Response::new(rpc::HeartbeatReply { known }))
    }

    async fn topology(
        &self,
        _: Request<rpc::TopologyRequest>,
    ) -> Result<Response<rpc::TopologyReply>, Status> {
        Ok(Response::new(rpc::TopologyReply {
            clusters: self.core.all_clusters().await?,
            nodes: self.core.all_nodes().await?,
        }))
    }

    async fn locate(
        &self,
        req: Request<rpc::LocateRequest>,
    ) -> Result<Response<rpc::LocateReply>, Status> {
        let key = &req.get_ref().key;
        valid_key(key)?;
        let node_uuids = self
            .core
            .store
            .locations(key)
            .await?
            .into_iter()
            .filter(|e| e.present)
            .map(|e| e.node_uuid)
            .collect();
        Ok(Response::new(rpc::LocateReply { node_uuids }))
    }

    async fn plan_put(
        &self,
        req: Request<rpc::PlanPutRequest>,
    ) -> Result<Response<rpc::PlanPutReply>, Status> {
        let r = req.into_inner();
        let key = valid_key(&r.key)?;
        let store = &self.core.store;
        let cluster = store
            .cluster_by_uuid(&r.cluster_uuid)
            .await?
            .ok_or_else(|| Status::not_found(format!("unknown cluster {}", r.cluster_uuid)))?;
        let cs = store.cluster_settings().await?.remove(&cluster.uuid).unwrap_or_default();
        let nodes: Vec<Node> =
            store.nodes().await?.into_iter().filter(|n| n.cluster_uuid == cluster.uuid).collect();
        let candidates = self.candidates(&nodes, &store.node_settings().await?);
        // A minimum no PUT can meet fails before any data moves, saying why.
        let min = cs.min_copies.unwrap_or(1);
        if min as usize > nodes.len() {
            let healthy = candidates.iter().filter(|c| c.healthy).count();
            let why = super::validate::min_copies_unmet(&cluster.name, min, nodes.len(), healthy);
            return Err(Status::failed_precondition(why.unwrap_or_default()));
        }
        let copies = store
            .locations(&r.key)
            .await?
            .iter()
            .filter(|e| e.present && nodes.iter().any(|n| n.uuid == e.node_uuid))
            .count() as u64;
        let file = Some(r.associated_file.as_str()).filter(|f| !f.is_empty());
        let reserve = cs.reserve_bytes.unwrap_or(self.core.reserve_default);
        let plan = placement::plan(&candidates, &key, file, copies, reserve)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        debug!(key = %r.key, file = ?file, targets = ?plan.targets, unwanted = plan.unwanted, "planned put");
        Ok(Response::new(rpc::PlanPutReply {
            node_uuids: plan.targets,
            min_copies: cs.min_copies.unwrap_or(1),
            reusable_ms: if plan.reusable { PLAN_REUSE_MS } else { 0 },
            replication: cs.replication.unwrap_or(DEFAULT_REPLICATION).to_rpc() as i32,
        }))
    }

    async fn record_locations(
        &self,
        req: Request<rpc::RecordLocationsRequest>,
    ) -> Result<Response<rpc::RecordLocationsReply>, Status> {
        // An agent records (or strikes) only its own copies; gateways
        // record for the nodes they stored on.
        let agent =
            matches!(crate::pki::guard::Caller::of(&req), Some(crate::pki::Identity::Agent(_)));
        for c in &req.get_ref().changes {
            valid_key(&c.key)?;
            valid_uuid(&c.node_uuid)?;
            if agent {
                bind_caller(&req, &c.node_uuid)?;
            }
        }
        let changes = req.into_inner().changes;
        let changes: Vec<_> =
            changes.into_iter().map(|c| (c.key, c.node_uuid, c.present)).collect();
        self.core.store.record(changes).await?;
        Ok(Response::new(rpc::RecordLocationsReply {}))
    }

    async fn cluster_timestamp(
        &self,
        req: Request<rpc::ClusterTimestampRequest>,
    ) -> Result<Response<rpc::TimestampReply>, Status> {
        let uuid = &req.get_ref().cluster_uuid;
        if self.core.store.cluster_by_uuid(uuid).await?.is_none() {
            return Err(Status::not_found(format!("unknown cluster {uuid}")));
        }
        let ms = self.clock.now().await?;
        Ok(Response::new(rpc::TimestampReply {
            timestamp: ms / 1000,
            timestamp_ms: ms,
            boot_id: String::new(),
        }))
    }

    async fn check_token(
        &self,
        req: Request<rpc::CheckTokenRequest>,
    ) -> Result<Response<rpc::CheckTokenReply>, Status> {
        let hash = &req.get_ref().token_sha256;
        valid_token_sha256(hash)?;
        let reply = match self.core.store.token(hash).await? {
            Some(t) => rpc::CheckTokenReply {
                valid: true,
                mode: t.mode.as_str().to_string(),
                id: t.id().to_string(),
                user: t.user.clone().unwrap_or_default(),
            },
            None => rpc::CheckTokenReply::default(),
        };
        Ok(Response::new(reply))
    }

    async fn join(
        &self,
        req: Request<rpc::JoinRequest>,
    ) -> Result<Response<rpc::JoinReply>, Status> {
        Ok(Response::new(super::join::join(&self.core, req.into_inner()).await?))
    }

    async fn renew(
        &self,
        req: Request<rpc::RenewRequest>,
    ) -> Result<Response<rpc::JoinReply>, Status> {
        let caller = crate::pki::guard::Caller::of(&req).cloned();
        Ok(Response::new(super::join::renew(&self.core, caller, req.into_inner()).await?))
    }

    async fn report_node_failure(
        &self,
        req: Request<rpc::ReportNodeFailureRequest>,
    ) -> Result<Response<rpc::ReportNodeFailureReply>, Status> {
        let r = req.into_inner();
        valid_uuid(&r.node_uuid)?;
        let kind = match rpc::FailureKind::try_from(r.kind) {
            Ok(rpc::FailureKind::Put) => Failure::Put,
            Ok(rpc::FailureKind::Data) => Failure::Data,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown failure kind {}: expected put or data",
                    r.kind
                )));
            }
        };
        let node = self.core.store.node(&r.node_uuid).await?.ok_or_else(|| {
            Status::not_found(format!("unknown node {}: it may have been removed", r.node_uuid))
        })?;
        // Bounded, so a flood of reports cannot grow the board.
        let error: String = r.error.chars().take(MAX_ERROR).collect();
        if self.core.health.fail(&node.uuid, kind, &error, Instant::now()) {
            warn!(node = %node.name, uuid = %node.uuid, kind = kind.as_str(), %error, "node degraded: a gateway reported a failure");
        } else {
            debug!(node = %node.name, kind = kind.as_str(), %error, "another failure on a degraded node");
        }
        Ok(Response::new(rpc::ReportNodeFailureReply {}))
    }
}

/// The longest failure message kept, in characters.
const MAX_ERROR: usize = 500;

/// What a heartbeat says of the agent's store.
fn store_check(r: &rpc::HeartbeatRequest) -> StoreCheck {
    match (r.store_checked, r.writable) {
        (false, _) => StoreCheck::Unchecked,
        (true, true) => StoreCheck::Writable,
        (true, false) => StoreCheck::Unwritable(r.store_error.chars().take(MAX_ERROR).collect()),
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Request};

    use crate::coordinator::Coordinator;
    use crate::rpc::{self, coordinator_server::Coordinator as _};

    /// A coordinator with cluster "mesh" and nodes n1, n2, n3 registered.
    async fn mesh() -> (tempfile::TempDir, Coordinator, String, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let c = Coordinator::open(dir.path()).await.unwrap();
        let cluster = c.store.create_cluster("mesh").await.unwrap();
        let mut uuids = Vec::new();
        for (port, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
            let uuid = uuid::Uuid::new_v4().to_string();
            let req = rpc::RegisterRequest {
                uuid: uuid.clone(),
                name: name.into(),
                cluster: "mesh".into(),
                // One address each: a live node's address is its own.
                address: format!("http://127.0.0.1:{}", port + 1),
                boot_id: "boot".into(),
            };
            c.service.register(Request::new(req)).await.unwrap();
            uuids.push(uuid);
        }
        (dir, c, cluster.0.uuid, uuids)
    }

    async fn planned(c: &Coordinator, cluster: &str) -> Vec<String> {
        let req = rpc::PlanPutRequest {
            cluster_uuid: cluster.into(),
            key: "SHA256E-s10--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
                .into(),
            associated_file: String::new(),
        };
        c.service.plan_put(Request::new(req)).await.unwrap().into_inner().node_uuids
    }

    async fn degraded(c: &Coordinator) -> Vec<bool> {
        let t = c.service.topology(Request::new(rpc::TopologyRequest {})).await.unwrap();
        let mut nodes = t.into_inner().nodes;
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.iter().map(|n| n.degraded).collect()
    }

    #[tokio::test]
    async fn a_reported_node_is_degraded_in_the_topology_and_left_out_of_placement() {
        let (_dir, c, cluster, uuids) = mesh().await;
        assert_eq!(planned(&c, &cluster).await.len(), 3);
        let report = rpc::ReportNodeFailureRequest {
            node_uuid: uuids[1].clone(),
            kind: rpc::FailureKind::Put.into(),
            error: "cannot open annex/tmp/KEY: Read-only file system".into(),
        };
        c.service.report_node_failure(Request::new(report)).await.unwrap();
        assert_eq!(degraded(&c).await, [false, true, false]);
        let mut want = vec![uuids[0].clone(), uuids[2].clone()];
        want.sort();
        let mut got = planned(&c, &cluster).await;
        got.sort();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_heartbeat_with_an_unwritable_store_degrades_the_node() {
        let (_dir, c, _, uuids) = mesh().await;
        let hb = rpc::HeartbeatRequest {
            uuid: uuids[2].clone(),
            boot_id: "boot".into(),
            free_bytes: 1 << 30,
            active_transfers: 0,
            writable: false,
            store_error: "cannot create annex/tmp/.annexmesh-store-check: read-only".into(),
            store_checked: true,
            partial_bytes: 4096,
            quarantined: 2,
        };
        c.service.heartbeat(Request::new(hb)).await.unwrap();
        assert_eq!(degraded(&c).await, [false, false, true]);
        // What the heartbeat said of the store is what operators see.
        let nodes = c.core.all_nodes().await.unwrap();
        let n = nodes.iter().find(|n| n.uuid == uuids[2]).unwrap();
        assert_eq!((n.partial_bytes, n.quarantined), (4096, 2));
    }

    #[tokio::test]
    async fn reports_of_unknown_nodes_or_kinds_are_refused_plainly() {
        let (_dir, c, _, uuids) = mesh().await;
        let report = |node_uuid: String, kind: i32| {
            Request::new(rpc::ReportNodeFailureRequest { node_uuid, kind, error: "x".into() })
        };
        let e = c.service.report_node_failure(report(uuids[0].clone(), 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("expected put or data"), "{}", e.message());
        let stranger = uuid::Uuid::new_v4().to_string();
        let e = c.service.report_node_failure(report(stranger, 2)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(degraded(&c).await, [false, false, false]);
    }
}
