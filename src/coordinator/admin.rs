//! The `Admin` gRPC service: what operators ask through `annexmesh admin`.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::core::Core;
use super::repair::{PassRequest, Repairer};
use super::store::{Cluster, Created, Node, NodeSettings, Removal, Replication, Revoked, Token};
use super::validate::valid_token_sha256;
use super::validate::{valid_key, valid_name, valid_token_id, valid_token_label};
use crate::auth::Mode;
use crate::rpc::{self, admin_server};

/// Serves operators.
pub struct AdminService {
    core: Arc<Core>,
    repair: Arc<Repairer>,
    clock: Arc<super::clock::ClusterClock>,
}

fn token_info(t: &Token) -> rpc::TokenInfo {
    rpc::TokenInfo {
        id: t.id().to_string(),
        mode: t.mode.as_str().to_string(),
        label: t.label.clone(),
        created_unix_ms: t.created_unix_ms,
        user: t.user.clone().unwrap_or_default(),
    }
}

/// A user name for HTTP basic auth: a plain name as for clusters and nodes
/// (so no ':' and nothing a URL or a credential file must escape).
fn valid_user(s: &str) -> Result<(), Status> {
    crate::names::validate(s).map_err(|_| {
        Status::invalid_argument(format!(
            "bad user name {s:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    })
}

/// Names for an error message: sorted, comma-separated, "none" for none.
fn known_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.collect();
    v.sort_unstable();
    if v.is_empty() { "none".to_string() } else { v.join(", ") }
}

fn wanted_reply(n: &Node, settings: &NodeSettings) -> rpc::WantedReply {
    rpc::WantedReply {
        node_uuid: n.uuid.clone(),
        node_name: n.name.clone(),
        expression: settings.wanted.clone().unwrap_or_default(),
    }
}

impl AdminService {
    pub fn new(
        core: Arc<Core>,
        repair: Arc<Repairer>,
        clock: Arc<super::clock::ClusterClock>,
    ) -> AdminService {
        AdminService { core, repair, clock }
    }

    /// A node by name or UUID.
    async fn find_node(&self, node: &str) -> Result<Node, Status> {
        let nodes = self.core.store.nodes().await?;
        let known = known_names(nodes.iter().map(|n| n.name.as_str()));
        crate::names::find(nodes, node).ok_or_else(|| {
            Status::not_found(format!("unknown node {node:?}; known nodes: {known}"))
        })
    }

    /// A cluster by name or UUID.
    async fn find_cluster(&self, cluster: &str) -> Result<Cluster, Status> {
        let clusters = self.core.store.clusters().await?;
        let known = known_names(clusters.iter().map(|c| c.name.as_str()));
        crate::names::find(clusters, cluster).ok_or_else(|| {
            Status::not_found(format!("unknown cluster {cluster:?}; known clusters: {known}"))
        })
    }

    /// The expression to store for `text`: None for an empty one (wants
    /// everything), else its normalised form, refused when it does not parse.
    fn wanted(&self, text: &str) -> Result<Option<String>, Status> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let e = self.core.expr(text).map_err(|e| {
            // A hostile expression can be huge: quote only its start.
            let shown: String = text.chars().take(60).collect();
            let more = if shown.len() < text.len() { "…" } else { "" };
            Status::invalid_argument(format!(
                "bad preferred content expression {shown:?}{more}: {e}"
            ))
        })?;
        Ok(Some(e.as_str().to_string()))
    }

    /// The reserve to store for `text`: None for the coordinator's default.
    fn reserve(text: &str) -> Result<Option<u64>, Status> {
        match text.trim() {
            "" | "default" => Ok(None),
            size => crate::preferred::parse_size(size)
                .map(Some)
                .map_err(|e| Status::invalid_argument(format!("bad reserve: {e}"))),
        }
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn create_cluster(
        &self,
        req: Request<rpc::CreateClusterRequest>,
    ) -> Result<Response<rpc::ClusterInfo>, Status> {
        let name = &req.get_ref().name;
        valid_name(name)?;
        let (c, created) = self.core.store.create_cluster(name).await?;
        if !created {
            return Err(Status::already_exists(format!(
                "cluster {name:?} exists already ({})",
                c.uuid
            )));
        }
        info!(cluster = %c.name, uuid = %c.uuid, "cluster created");
        if let Err(e) = self.core.repos.ensure(&c.uuid).await {
            tracing::warn!(cluster = %c.name, "cannot create the cluster's git repository: {e:#}");
        }
        Ok(Response::new(self.core.cluster_info(&c, None)))
    }

    async fn list_clusters(
        &self,
        _: Request<rpc::ListClustersRequest>,
    ) -> Result<Response<rpc::ListClustersReply>, Status> {
        let mut clusters = self.core.all_clusters().await?;
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(rpc::ListClustersReply { clusters }))
    }

    async fn delete_cluster(
        &self,
        req: Request<rpc::DeleteClusterRequest>,
    ) -> Result<Response<rpc::DeleteClusterReply>, Status> {
        let r = req.into_inner();
        let c = self.find_cluster(&r.cluster).await?;
        Ok(Response::new(super::cluster_delete::delete(&self.core, c, r.force).await?))
    }

    async fn status(
        &self,
        _req: Request<rpc::StatusRequest>,
    ) -> Result<Response<rpc::StatusReply>, Status> {
        let me = self.core.me.lock().unwrap().clone();
        let store = &self.core.store;
        let nodes = self.core.all_nodes().await?;
        let mut coordinators: Vec<rpc::CoordinatorStatus> = store
            .coordinators()
            .await?
            .into_iter()
            .map(|c| rpc::CoordinatorStatus {
                id: c.id,
                address: c.address,
                version: c.version,
                started_unix_ms: c.started_unix_ms,
                age_ms: c.age_ms,
            })
            .collect();
        if !coordinators.iter().any(|c| c.id == me.id) {
            coordinators.push(rpc::CoordinatorStatus {
                id: me.id.clone(),
                address: me.address.clone(),
                version: me.version.clone(),
                started_unix_ms: me.started_unix_ms,
                age_ms: 0,
            });
        }
        coordinators.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(Response::new(rpc::StatusReply {
            id: me.id,
            address: me.address,
            version: me.version,
            store: store.describe(),
            shared: store.shared(),
            clock_ms: self.clock.now().await?,
            coordinators,
            clusters: store.clusters().await?.len() as u32,
            nodes: nodes.len() as u32,
            nodes_up: nodes.iter().filter(|n| n.healthy && !n.degraded).count() as u32,
            nodes_degraded: nodes.iter().filter(|n| n.degraded).count() as u32,
            topology_version: *store.subscribe_changes().borrow(),
        }))
    }

    async fn list_nodes(
        &self,
        req: Request<rpc::ListNodesRequest>,
    ) -> Result<Response<rpc::ListNodesReply>, Status> {
        let name = &req.get_ref().cluster;
        let mut nodes = self.core.all_nodes().await?;
        nodes.extend(self.core.removed_nodes().await?);
        if !name.is_empty() {
            let c = self.find_cluster(name).await?;
            nodes.retain(|n| n.cluster_uuid == c.uuid);
        }
        // Removed nodes last, so that a name's live node comes first.
        nodes.sort_by(|a, b| (a.removed, &a.name).cmp(&(b.removed, &b.name)));
        Ok(Response::new(rpc::ListNodesReply { nodes }))
    }

    async fn whereis(
        &self,
        req: Request<rpc::WhereisRequest>,
    ) -> Result<Response<rpc::WhereisReply>, Status> {
        let key = &req.get_ref().key;
        valid_key(key)?;
        let names: HashMap<String, String> =
            self.core.store.nodes().await?.into_iter().map(|n| (n.uuid, n.name)).collect();
        let entries = self
            .core
            .store
            .locations(key)
            .await?
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
        let n = self.find_node(&req.get_ref().node).await?;
        let settings = self.core.store.node_settings().await?.remove(&n.uuid).unwrap_or_default();
        Ok(Response::new(wanted_reply(&n, &settings)))
    }

    async fn set_wanted(
        &self,
        req: Request<rpc::SetWantedRequest>,
    ) -> Result<Response<rpc::WantedReply>, Status> {
        let r = req.into_inner();
        let n = self.find_node(&r.node).await?;
        let wanted = self.wanted(&r.expression)?;
        let set = wanted.clone();
        let settings =
            self.core.store.update_node_settings(&n.uuid, move |s| s.wanted = set).await?;
        info!(node = %n.name, wanted = ?wanted, "preferred content set");
        Ok(Response::new(wanted_reply(&n, &settings)))
    }

    async fn set_draining(
        &self,
        req: Request<rpc::SetDrainingRequest>,
    ) -> Result<Response<rpc::NodeInfo>, Status> {
        let r = req.into_inner();
        let n = self.find_node(&r.node).await?;
        let draining = r.draining;
        let settings =
            self.core.store.update_node_settings(&n.uuid, move |s| s.draining = draining).await?;
        info!(node = %n.name, draining, "node drain state set");
        Ok(Response::new(self.core.node_info(&n, Some(&settings))))
    }

    async fn set_cluster_min_copies(
        &self,
        req: Request<rpc::SetClusterMinCopiesRequest>,
    ) -> Result<Response<rpc::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.find_cluster(&r.cluster).await?;
        if r.min_copies == 0 {
            return Err(Status::invalid_argument(
                "the minimum number of copies must be at least 1",
            ));
        }
        let min = r.min_copies;
        let settings = self
            .core
            .store
            .update_cluster_settings(&c.uuid, move |s| s.min_copies = Some(min))
            .await?;
        info!(cluster = %c.name, min_copies = min, "minimum copies set");
        let warning = super::validate::settings_warning(&self.core, &c, Some(min), None).await?;
        let reply = Response::new(self.core.cluster_info(&c, Some(&settings)));
        Ok(super::validate::with_warning(reply, warning))
    }

    async fn set_cluster_reserve(
        &self,
        req: Request<rpc::SetClusterReserveRequest>,
    ) -> Result<Response<rpc::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.find_cluster(&r.cluster).await?;
        let reserve = Self::reserve(&r.reserve)?;
        let settings = self
            .core
            .store
            .update_cluster_settings(&c.uuid, move |s| s.reserve_bytes = reserve)
            .await?;
        info!(cluster = %c.name, reserve = ?reserve, "space reserve set");
        let warning = super::validate::settings_warning(&self.core, &c, None, reserve).await?;
        let reply = Response::new(self.core.cluster_info(&c, Some(&settings)));
        Ok(super::validate::with_warning(reply, warning))
    }

    async fn set_cluster_replication(
        &self,
        req: Request<rpc::SetClusterReplicationRequest>,
    ) -> Result<Response<rpc::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.find_cluster(&r.cluster).await?;
        let mode = rpc::Replication::try_from(r.replication).map_err(|_| {
            Status::invalid_argument(format!("unknown replication {}", r.replication))
        })?;
        let mode = Replication::from_rpc(mode);
        let settings = self
            .core
            .store
            .update_cluster_settings(&c.uuid, move |s| s.replication = Some(mode))
            .await?;
        info!(cluster = %c.name, replication = ?mode, "replication set");
        Ok(Response::new(self.core.cluster_info(&c, Some(&settings))))
    }

    async fn set_node_cost(
        &self,
        req: Request<rpc::SetNodeCostRequest>,
    ) -> Result<Response<rpc::NodeInfo>, Status> {
        let r = req.into_inner();
        let n = self.find_node(&r.node).await?;
        let cost = r.cost;
        let settings =
            self.core.store.update_node_settings(&n.uuid, move |s| s.cost = Some(cost)).await?;
        info!(node = %n.name, cost, "node cost set");
        Ok(Response::new(self.core.node_info(&n, Some(&settings))))
    }

    async fn remove_node(
        &self,
        req: Request<rpc::RemoveNodeRequest>,
    ) -> Result<Response<rpc::RemoveNodeReply>, Status> {
        let r = req.into_inner();
        let n = self.find_node(&r.node).await?;
        match self.core.store.remove_node(&n.uuid, r.lost).await? {
            Removal::SoleCopies { count, sample } => Err(Status::failed_precondition(format!(
                "node {} holds the only copy of {count} key{} by the location log, such as {}; \
                 copy them elsewhere first (`annexmesh admin fsck` checks the log), or, if the \
                 node is gone for good, remove it with `annexmesh admin node remove --lost {}`",
                n.name,
                if count == 1 { "" } else { "s" },
                sample.join(", "),
                n.name
            ))),
            Removal::Done { struck, lost_keys } => {
                self.core.health.forget(&n.uuid);
                warn!(node = %n.name, uuid = %n.uuid, lost = r.lost, struck, lost_keys, "node removed from the mesh");
                Ok(Response::new(rpc::RemoveNodeReply {
                    node_uuid: n.uuid,
                    node_name: n.name,
                    struck,
                    lost_keys,
                }))
            }
        }
    }

    async fn fsck(
        &self,
        req: Request<rpc::FsckRequest>,
    ) -> Result<Response<rpc::FsckReply>, Status> {
        let r = req.into_inner();
        let mut nodes = self.core.store.nodes().await?;
        if !r.cluster.is_empty() {
            let c = self.find_cluster(&r.cluster).await?;
            nodes.retain(|n| n.cluster_uuid == c.uuid);
        }
        let reply = super::fsck::fsck(&self.core, nodes, r.fix).await?;
        Ok(Response::new(reply))
    }

    async fn create_token(
        &self,
        req: Request<rpc::CreateTokenRequest>,
    ) -> Result<Response<rpc::TokenInfo>, Status> {
        let r = req.into_inner();
        valid_token_sha256(&r.token_sha256)?;
        let mode: Mode = r.mode.parse().map_err(Status::invalid_argument)?;
        valid_token_label(&r.label)?;
        let user = if r.user.is_empty() { None } else { Some(r.user) };
        if let Some(u) = &user {
            valid_user(u)?;
        }
        let token = Token {
            sha256: r.token_sha256,
            mode,
            label: r.label,
            created_unix_ms: crate::clock::unix_ms(),
            user,
        };
        match self.core.store.create_token(token.clone()).await? {
            Created::Done => {}
            Created::HashTaken => {
                return Err(Status::already_exists(format!(
                    "a token with this hash exists already ({})",
                    token.id()
                )));
            }
            Created::UserTaken => {
                return Err(Status::already_exists(format!(
                    "a user named {:?} exists already (`annexmesh admin user remove` it first)",
                    token.user.as_deref().unwrap_or_default()
                )));
            }
        }
        let user = token.user.as_deref().unwrap_or("-");
        info!(token = %token.id(), mode = %token.mode, label = %token.label, user, "access token created");
        Ok(Response::new(token_info(&token)))
    }

    async fn list_tokens(
        &self,
        _: Request<rpc::ListTokensRequest>,
    ) -> Result<Response<rpc::ListTokensReply>, Status> {
        let mut tokens = self.core.store.tokens().await?;
        tokens.sort_by(|a, b| {
            a.created_unix_ms.cmp(&b.created_unix_ms).then_with(|| a.sha256.cmp(&b.sha256))
        });
        Ok(Response::new(rpc::ListTokensReply { tokens: tokens.iter().map(token_info).collect() }))
    }

    async fn revoke_token(
        &self,
        req: Request<rpc::RevokeTokenRequest>,
    ) -> Result<Response<rpc::TokenInfo>, Status> {
        let id = valid_token_id(&req.get_ref().id)?;
        match self.core.store.revoke_token(&id).await? {
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

    async fn remove_user(
        &self,
        req: Request<rpc::RemoveUserRequest>,
    ) -> Result<Response<rpc::TokenInfo>, Status> {
        let name = &req.get_ref().user;
        valid_user(name)?;
        match self.core.store.remove_user(name).await? {
            Some(t) => {
                info!(token = %t.id(), mode = %t.mode, user = %name, "user removed");
                Ok(Response::new(token_info(&t)))
            }
            None => Err(Status::not_found(format!(
                "no user named {name:?} (`annexmesh admin user list` lists them)"
            ))),
        }
    }

    type RepairStream = tokio_stream::wrappers::ReceiverStream<Result<rpc::RepairProgress, Status>>;

    async fn repair(
        &self,
        req: Request<rpc::RepairRequest>,
    ) -> Result<Response<Self::RepairStream>, Status> {
        let r = req.into_inner();
        let cluster = match r.cluster.as_str() {
            "" => None,
            name => Some(self.find_cluster(name).await?.uuid),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        self.repair.spawn_pass(PassRequest { cluster, dry_run: r.dry_run }, tx);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn repair_status(
        &self,
        _: Request<rpc::RepairStatusRequest>,
    ) -> Result<Response<rpc::RepairStatusReply>, Status> {
        Ok(Response::new(self.repair.status().await?))
    }

    async fn create_join_token(
        &self,
        req: Request<rpc::CreateJoinTokenRequest>,
    ) -> Result<Response<rpc::JoinTokenInfo>, Status> {
        Ok(Response::new(super::join::create_token(&self.core, req.into_inner()).await?))
    }

    type ScrubNodesStream = super::scrub::ScrubStream;

    async fn scrub_nodes(
        &self,
        req: Request<rpc::ScrubNodesRequest>,
    ) -> Result<Response<Self::ScrubNodesStream>, Status> {
        let r = req.into_inner();
        let mut nodes = self.core.store.nodes().await?;
        if !r.cluster.is_empty() {
            let c = self.find_cluster(&r.cluster).await?;
            nodes.retain(|n| n.cluster_uuid == c.uuid);
        }
        if !r.node.is_empty() {
            let n = self.find_node(&r.node).await?;
            nodes.retain(|m| m.uuid == n.uuid);
            if nodes.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "node {} is not in cluster {:?}",
                    n.name, r.cluster
                )));
            }
        }
        info!(nodes = nodes.len(), rate = r.rate_bytes_per_s, "scrub requested");
        Ok(Response::new(super::scrub::scrub_nodes(self.core.dialer(), nodes, r.rate_bytes_per_s)))
    }
}
