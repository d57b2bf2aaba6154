//! The coordinator's gRPC services: what agents and gateways ask
//! (`Coordinator`) and what operators ask (`Admin`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::clock::ClusterClock;
use super::placement::{self, Candidate};
use super::state::{
    Cluster, ClusterSettings, DEFAULT_NODE_COST, Node, NodeSettings, Revoked, State, StateError,
    Token,
};
use crate::auth::Mode;
use crate::p2p::key::Key;
use crate::preferred::{self, Expr};
use crate::rpc::{self, admin_server, coordinator_server};

/// A node that missed this long of heartbeats is unhealthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(7);

/// Free space a PUT must leave on a node unless the cluster sets its own:
/// git-annex's default `annex.diskreserve`, 100 megabytes.
pub const DEFAULT_RESERVE: u64 = 100_000_000;

#[derive(Debug, Clone)]
struct Health {
    last_seen: Instant,
    last_seen_unix_ms: u64,
    /// None until the first heartbeat reports it.
    free_bytes: Option<u64>,
    active_transfers: u32,
}

pub struct CoordinatorService {
    state: Arc<State>,
    clock: Arc<ClusterClock>,
    health: Mutex<HashMap<String, Health>>,
    reserve_default: u64,
    /// Parsed preferred content expressions by their text.
    exprs: Mutex<HashMap<String, Arc<Expr>>>,
    recorder: super::state::GroupRecorder,
}

impl From<StateError> for Status {
    fn from(e: StateError) -> Status {
        Status::internal(e.to_string())
    }
}

fn valid_key(s: &str) -> Result<(), Status> {
    s.parse::<Key>()
        .map(|_| ())
        .map_err(|e| Status::invalid_argument(format!("bad key {s:?}: {e}")))
}

fn valid_uuid(s: &str) -> Result<(), Status> {
    uuid::Uuid::parse_str(s)
        .map(|_| ())
        .map_err(|_| Status::invalid_argument(format!("not a UUID: {s:?}")))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A token's hash as `auth::hash_token` writes it.
fn valid_token_sha256(s: &str) -> Result<(), Status> {
    if s.len() == 64 && is_lower_hex(s) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "bad token hash {s:?}: expected a SHA-256 as 64 lowercase hex digits (send the hash, not the token)"
        )))
    }
}

/// Longest label a token may carry.
pub const MAX_TOKEN_LABEL: usize = 200;

/// Labels are printed in tab-separated listings, so no control characters.
fn valid_token_label(s: &str) -> Result<(), Status> {
    if s.chars().count() > MAX_TOKEN_LABEL {
        return Err(Status::invalid_argument(format!(
            "token label too long: at most {MAX_TOKEN_LABEL} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "bad token label {s:?}: no control characters (tabs, newlines, ...)"
        )));
    }
    Ok(())
}

/// Shortest id prefix accepted for revoking, so that a typo is unlikely to
/// match another token.
pub const MIN_TOKEN_ID_PREFIX: usize = 6;

fn token_info(t: &Token) -> rpc::TokenInfo {
    rpc::TokenInfo {
        id: t.id().to_string(),
        mode: t.mode.as_str().to_string(),
        label: t.label.clone(),
        created_unix_ms: t.created_unix_ms,
    }
}

/// Cluster and node names: see `names::validate`.
pub fn valid_name(s: &str) -> Result<(), Status> {
    crate::names::validate(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

impl CoordinatorService {
    pub fn new(
        state: Arc<State>,
        clock: Arc<ClusterClock>,
        reserve_default: u64,
    ) -> CoordinatorService {
        CoordinatorService {
            recorder: state.group_recorder(),
            state,
            clock,
            health: Mutex::new(HashMap::new()),
            reserve_default,
            exprs: Mutex::new(HashMap::new()),
        }
    }

    fn health(&self, uuid: &str) -> (bool, Option<Health>) {
        let health = self.health.lock().unwrap().get(uuid).cloned();
        let healthy = health.as_ref().is_some_and(|h| h.last_seen.elapsed() < HEALTH_TIMEOUT);
        (healthy, health)
    }

    fn node_info(&self, n: &Node, settings: Option<&NodeSettings>) -> rpc::NodeInfo {
        let (healthy, health) = self.health(&n.uuid);
        rpc::NodeInfo {
            uuid: n.uuid.clone(),
            name: n.name.clone(),
            cluster_uuid: n.cluster_uuid.clone(),
            address: n.address.clone(),
            healthy,
            last_seen_unix_ms: health.as_ref().map_or(0, |h| h.last_seen_unix_ms),
            free_bytes: health.as_ref().and_then(|h| h.free_bytes).unwrap_or(0),
            active_transfers: health.as_ref().map_or(0, |h| h.active_transfers),
            draining: settings.is_some_and(|s| s.draining),
            wanted: settings.and_then(|s| s.wanted.clone()).unwrap_or_default(),
            cost: settings.and_then(|s| s.cost).unwrap_or(DEFAULT_NODE_COST),
        }
    }

    fn all_nodes(&self) -> Result<Vec<rpc::NodeInfo>, Status> {
        let settings = self.state.node_settings()?;
        Ok(self.state.nodes()?.iter().map(|n| self.node_info(n, settings.get(&n.uuid))).collect())
    }

    fn cluster_info(&self, c: &Cluster, settings: Option<&ClusterSettings>) -> rpc::ClusterInfo {
        let reserve = settings.and_then(|s| s.reserve_bytes);
        rpc::ClusterInfo {
            uuid: c.uuid.clone(),
            name: c.name.clone(),
            min_copies: settings.and_then(|s| s.min_copies).unwrap_or(1),
            reserve_bytes: reserve.unwrap_or(self.reserve_default),
            reserve_default: reserve.is_none(),
        }
    }

    fn all_clusters(&self) -> Result<Vec<rpc::ClusterInfo>, Status> {
        let settings = self.state.cluster_settings()?;
        Ok(self
            .state
            .clusters()?
            .iter()
            .map(|c| self.cluster_info(c, settings.get(&c.uuid)))
            .collect())
    }

    fn touch(&self, uuid: &str, free_bytes: Option<u64>, active_transfers: u32) {
        self.health.lock().unwrap().insert(
            uuid.to_string(),
            Health {
                last_seen: Instant::now(),
                last_seen_unix_ms: crate::clock::unix_ms(),
                free_bytes,
                active_transfers,
            },
        );
    }

    /// A node by name or UUID.
    fn find_node(&self, node: &str) -> Result<Node, Status> {
        crate::names::find(self.state.nodes()?, node).ok_or_else(|| {
            Status::not_found(format!(
                "unknown node {node:?} (`annexmesh admin node list` lists them)"
            ))
        })
    }

    /// A cluster by name or UUID.
    fn find_cluster(&self, cluster: &str) -> Result<Cluster, Status> {
        crate::names::find(self.state.clusters()?, cluster)
            .ok_or_else(|| Status::not_found(format!("unknown cluster {cluster:?}")))
    }

    fn expr(&self, text: &str) -> Result<Arc<Expr>, preferred::ParseError> {
        if let Some(e) = self.exprs.lock().unwrap().get(text) {
            return Ok(e.clone());
        }
        let e = Arc::new(Expr::parse(text)?);
        self.exprs.lock().unwrap().insert(text.to_string(), e.clone());
        Ok(e)
    }

    fn wanted_reply(n: &Node, settings: &NodeSettings) -> rpc::WantedReply {
        rpc::WantedReply {
            node_uuid: n.uuid.clone(),
            node_name: n.name.clone(),
            expression: settings.wanted.clone().unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for Arc<CoordinatorService> {
    async fn register(
        &self,
        req: Request<rpc::RegisterRequest>,
    ) -> Result<Response<rpc::RegisterReply>, Status> {
        let r = req.into_inner();
        valid_uuid(&r.uuid)?;
        valid_name(&r.name)?;
        let cluster = self.state.cluster_by_name(&r.cluster)?.ok_or_else(|| {
            Status::failed_precondition(format!(
                "unknown cluster {:?}: create it with `annexmesh admin cluster create {}`",
                r.cluster, r.cluster
            ))
        })?;
        if let Some(other) =
            self.state.nodes()?.into_iter().find(|n| n.name == r.name && n.uuid != r.uuid)
        {
            return Err(Status::already_exists(format!(
                "node name {:?} is taken by node {}; choose another --name",
                r.name, other.uuid
            )));
        }
        let node = Node {
            uuid: r.uuid.clone(),
            name: r.name,
            cluster_uuid: cluster.uuid.clone(),
            address: r.address,
        };
        if self.state.node(&node.uuid)?.as_ref() != Some(&node) {
            self.state.upsert_node(&node)?;
            info!(node = %node.uuid, name = %node.name, cluster = %cluster.name, address = %node.address, "node registered");
        }
        let free = self.health(&node.uuid).1.and_then(|h| h.free_bytes);
        self.touch(&node.uuid, free, 0);
        Ok(Response::new(rpc::RegisterReply { cluster_uuid: cluster.uuid }))
    }

    async fn heartbeat(
        &self,
        req: Request<rpc::HeartbeatRequest>,
    ) -> Result<Response<rpc::HeartbeatReply>, Status> {
        let r = req.into_inner();
        let known = self.state.node(&r.uuid)?.is_some();
        if known {
            self.touch(&r.uuid, Some(r.free_bytes), r.active_transfers);
        }
        Ok(Response::new(rpc::HeartbeatReply { known }))
    }

    async fn topology(
        &self,
        _: Request<rpc::TopologyRequest>,
    ) -> Result<Response<rpc::TopologyReply>, Status> {
        Ok(Response::new(rpc::TopologyReply {
            clusters: self.all_clusters()?,
            nodes: self.all_nodes()?,
        }))
    }

    async fn locate(
        &self,
        req: Request<rpc::LocateRequest>,
    ) -> Result<Response<rpc::LocateReply>, Status> {
        let key = &req.get_ref().key;
        valid_key(key)?;
        let node_uuids = self
            .state
            .locations(key)?
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
        let key: Key = r
            .key
            .parse()
            .map_err(|e| Status::invalid_argument(format!("bad key {:?}: {e}", r.key)))?;
        let cluster = self
            .state
            .cluster_by_uuid(&r.cluster_uuid)?
            .ok_or_else(|| Status::not_found(format!("unknown cluster {}", r.cluster_uuid)))?;
        let cs = self.state.cluster_settings()?.remove(&cluster.uuid).unwrap_or_default();
        let settings = self.state.node_settings()?;
        let nodes: Vec<Node> =
            self.state.nodes()?.into_iter().filter(|n| n.cluster_uuid == cluster.uuid).collect();
        let mut candidates = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let (healthy, health) = self.health(&n.uuid);
            let s = settings.get(&n.uuid);
            // Expressions are checked when set; one that no longer parses
            // wants nothing rather than everything.
            let wanted = s.and_then(|s| s.wanted.as_deref()).map(|text| {
                self.expr(text).unwrap_or_else(|e| {
                    warn!(node = %n.name, "ignoring bad preferred content expression {text:?}: {e}");
                    Arc::new(Expr::parse("nothing").expect("a valid expression"))
                })
            });
            candidates.push(Candidate {
                uuid: n.uuid.clone(),
                name: n.name.clone(),
                healthy,
                draining: s.is_some_and(|s| s.draining),
                free_bytes: health.and_then(|h| h.free_bytes),
                wanted,
            });
        }
        let copies = self
            .state
            .locations(&r.key)?
            .iter()
            .filter(|e| e.present && nodes.iter().any(|n| n.uuid == e.node_uuid))
            .count() as u64;
        let file = Some(r.associated_file.as_str()).filter(|f| !f.is_empty());
        let reserve = cs.reserve_bytes.unwrap_or(self.reserve_default);
        let plan = placement::plan(&candidates, &key, file, copies, reserve)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        debug!(key = %r.key, file = ?file, targets = ?plan.targets, unwanted = plan.unwanted, "planned put");
        Ok(Response::new(rpc::PlanPutReply {
            node_uuids: plan.targets,
            min_copies: cs.min_copies.unwrap_or(1),
        }))
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
        let changes: Vec<_> =
            changes.into_iter().map(|c| (c.key, c.node_uuid, c.present)).collect();
        self.recorder.record(changes).await.map_err(Status::internal)?;
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
        let reply = match self.state.token(hash)? {
            Some(t) => rpc::CheckTokenReply {
                valid: true,
                mode: t.mode.as_str().to_string(),
                id: t.id().to_string(),
            },
            None => rpc::CheckTokenReply::default(),
        };
        Ok(Response::new(reply))
    }
}

#[tonic::async_trait]
impl admin_server::Admin for Arc<CoordinatorService> {
    async fn create_cluster(
        &self,
        req: Request<rpc::CreateClusterRequest>,
    ) -> Result<Response<rpc::ClusterInfo>, Status> {
        let name = &req.get_ref().name;
        valid_name(name)?;
        let (c, created) = self.state.create_cluster(name)?;
        if !created {
            return Err(Status::already_exists(format!(
                "cluster {name:?} exists already ({})",
                c.uuid
            )));
        }
        info!(cluster = %c.name, uuid = %c.uuid, "cluster created");
        Ok(Response::new(self.cluster_info(&c, None)))
    }

    async fn list_clusters(
        &self,
        _: Request<rpc::ListClustersRequest>,
    ) -> Result<Response<rpc::ListClustersReply>, Status> {
        let mut clusters = self.all_clusters()?;
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(rpc::ListClustersReply { clusters }))
    }

    async fn list_nodes(
        &self,
        req: Request<rpc::ListNodesRequest>,
    ) -> Result<Response<rpc::ListNodesReply>, Status> {
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

    async fn whereis(
        &self,
        req: Request<rpc::WhereisRequest>,
    ) -> Result<Response<rpc::WhereisReply>, Status> {
        let key = &req.get_ref().key;
        valid_key(key)?;
        let names: HashMap<String, String> =
            self.state.nodes()?.into_iter().map(|n| (n.uuid, n.name)).collect();
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

    async fn get_wanted(
        &self,
        req: Request<rpc::GetWantedRequest>,
    ) -> Result<Response<rpc::WantedReply>, Status> {
        let n = self.find_node(&req.get_ref().node)?;
        let settings = self.state.node_settings()?.remove(&n.uuid).unwrap_or_default();
        Ok(Response::new(CoordinatorService::wanted_reply(&n, &settings)))
    }

    async fn set_wanted(
        &self,
        req: Request<rpc::SetWantedRequest>,
    ) -> Result<Response<rpc::WantedReply>, Status> {
        let r = req.into_inner();
        let n = self.find_node(&r.node)?;
        let wanted = if r.expression.trim().is_empty() {
            None
        } else {
            let e = self.expr(&r.expression).map_err(|e| {
                Status::invalid_argument(format!(
                    "bad preferred content expression {:?}: {e}",
                    r.expression
                ))
            })?;
            Some(e.as_str().to_string())
        };
        let settings = self.state.update_node_settings(&n.uuid, |s| s.wanted = wanted.clone())?;
        info!(node = %n.name, wanted = ?wanted, "preferred content set");
        Ok(Response::new(CoordinatorService::wanted_reply(&n, &settings)))
    }

    async fn set_draining(
        &self,
        req: Request<rpc::SetDrainingRequest>,
    ) -> Result<Response<rpc::NodeInfo>, Status> {
        let r = req.into_inner();
        let n = self.find_node(&r.node)?;
        let settings = self.state.update_node_settings(&n.uuid, |s| s.draining = r.draining)?;
        info!(node = %n.name, draining = r.draining, "node drain state set");
        Ok(Response::new(self.node_info(&n, Some(&settings))))
    }

    async fn set_cluster_min_copies(
        &self,
        req: Request<rpc::SetClusterMinCopiesRequest>,
    ) -> Result<Response<rpc::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.find_cluster(&r.cluster)?;
        if r.min_copies == 0 {
            return Err(Status::invalid_argument(
                "the minimum number of copies must be at least 1",
            ));
        }
        let settings =
            self.state.update_cluster_settings(&c.uuid, |s| s.min_copies = Some(r.min_copies))?;
        info!(cluster = %c.name, min_copies = r.min_copies, "minimum copies set");
        Ok(Response::new(self.cluster_info(&c, Some(&settings))))
    }

    async fn set_cluster_reserve(
        &self,
        req: Request<rpc::SetClusterReserveRequest>,
    ) -> Result<Response<rpc::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.find_cluster(&r.cluster)?;
        let reserve = match r.reserve.trim() {
            "" | "default" => None,
            size => Some(
                preferred::parse_size(size)
                    .map_err(|e| Status::invalid_argument(format!("bad reserve: {e}")))?,
            ),
        };
        let settings =
            self.state.update_cluster_settings(&c.uuid, |s| s.reserve_bytes = reserve)?;
        info!(cluster = %c.name, reserve = ?reserve, "space reserve set");
        Ok(Response::new(self.cluster_info(&c, Some(&settings))))
    }

    async fn set_node_cost(
        &self,
        req: Request<rpc::SetNodeCostRequest>,
    ) -> Result<Response<rpc::NodeInfo>, Status> {
        let r = req.into_inner();
        let n = self.find_node(&r.node)?;
        let settings = self.state.update_node_settings(&n.uuid, |s| s.cost = Some(r.cost))?;
        info!(node = %n.name, cost = r.cost, "node cost set");
        Ok(Response::new(self.node_info(&n, Some(&settings))))
    }

    async fn create_token(
        &self,
        req: Request<rpc::CreateTokenRequest>,
    ) -> Result<Response<rpc::TokenInfo>, Status> {
        let r = req.into_inner();
        valid_token_sha256(&r.token_sha256)?;
        let mode: Mode = r.mode.parse().map_err(Status::invalid_argument)?;
        valid_token_label(&r.label)?;
        let token = Token {
            sha256: r.token_sha256,
            mode,
            label: r.label,
            created_unix_ms: crate::clock::unix_ms(),
        };
        if !self.state.create_token(&token)? {
            return Err(Status::already_exists(format!(
                "a token with this hash exists already ({})",
                token.id()
            )));
        }
        info!(token = %token.id(), mode = %token.mode, label = %token.label, "access token created");
        Ok(Response::new(token_info(&token)))
    }

    async fn list_tokens(
        &self,
        _: Request<rpc::ListTokensRequest>,
    ) -> Result<Response<rpc::ListTokensReply>, Status> {
        let mut tokens = self.state.tokens()?;
        tokens.sort_by(|a, b| {
            a.created_unix_ms.cmp(&b.created_unix_ms).then_with(|| a.sha256.cmp(&b.sha256))
        });
        Ok(Response::new(rpc::ListTokensReply { tokens: tokens.iter().map(token_info).collect() }))
    }

    async fn revoke_token(
        &self,
        req: Request<rpc::RevokeTokenRequest>,
    ) -> Result<Response<rpc::TokenInfo>, Status> {
        let id = req.get_ref().id.trim().to_ascii_lowercase();
        if id.len() < MIN_TOKEN_ID_PREFIX || id.len() > 64 || !is_lower_hex(&id) {
            return Err(Status::invalid_argument(format!(
                "bad token id {:?}: give the id `annexmesh admin token list` shows, or at least its first \
                 {MIN_TOKEN_ID_PREFIX} hex digits",
                req.get_ref().id
            )));
        }
        match self.state.revoke_token(&id)? {
            Revoked::Done(t) => {
                info!(token = %t.id(), mode = %t.mode, label = %t.label, "access token revoked");
                Ok(Response::new(token_info(&t)))
            }
            Revoked::NotFound => Err(Status::not_found(format!(
                "no token with id {id} (`annexmesh admin token list` lists them)"
            ))),
            Revoked::Ambiguous(ts) => {
                let ids: Vec<&str> = ts.iter().map(|t| t.id()).collect();
                Err(Status::invalid_argument(format!(
                    "token id {id} is ambiguous: it matches {}; give more digits",
                    ids.join(", ")
                )))
            }
        }
    }
}
