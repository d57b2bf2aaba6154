//! What the coordinator's two gRPC services share: the store, node health,
//! the default reserve, parsed preferred content expressions, and the
//! conversions from stored records to replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

use super::health::HealthBoard;
use super::store::{
    Cluster, ClusterSettings, DEFAULT_NODE_COST, DEFAULT_REPLICATION, Node, NodeSettings,
};
use super::store::{Store, StoreError};
use crate::preferred::{self, Expr};
use crate::rpc;

/// Free space a PUT must leave on a node unless the cluster sets its own:
/// git-annex's default `annex.diskreserve`, 100 megabytes.
pub const DEFAULT_RESERVE: u64 = 100_000_000;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        Status::internal(e.to_string())
    }
}

/// Most parsed expressions kept; past this the cache starts afresh. Each
/// node's expression is one entry, so a real mesh stays far below it, and a
/// caller cycling through distinct expressions cannot grow memory.
const MAX_CACHED_EXPRS: usize = 1024;

/// The state behind both services.
pub struct Core {
    pub store: Arc<Store>,
    pub health: HealthBoard,
    /// The reserve of clusters that set none.
    pub reserve_default: u64,
    /// Parsed preferred content expressions by their text.
    exprs: Mutex<HashMap<String, Arc<Expr>>>,
    /// The mesh CA and how to reach agents; unset on a plaintext coordinator.
    tls: std::sync::OnceLock<(Arc<crate::pki::Ca>, rpc::Dialer)>,
    /// The clusters' git repositories.
    pub repos: Arc<super::git::Repos>,
    /// This coordinator as it announces itself (its address set once it
    /// listens).
    pub me: Mutex<super::store::CoordinatorRecord>,
}

impl Core {
    /// `reserve_default`: the reserve of clusters that set none.
    pub fn new(store: Arc<Store>, reserve_default: u64, repos: Arc<super::git::Repos>) -> Core {
        Core {
            store,
            repos,
            health: HealthBoard::default(),
            reserve_default,
            exprs: Mutex::new(HashMap::new()),
            tls: std::sync::OnceLock::new(),
            me: Mutex::new(super::store::CoordinatorRecord {
                id: uuid::Uuid::new_v4().to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_unix_ms: crate::clock::unix_ms(),
                ..Default::default()
            }),
        }
    }

    /// Serves TLS from now on: the CA signs joining members' certificates
    /// and `dialer` reaches agents.
    pub fn set_tls(&self, ca: Arc<crate::pki::Ca>, dialer: rpc::Dialer) {
        let _ = self.tls.set((ca, dialer));
    }

    /// The mesh CA, when serving TLS.
    pub fn ca(&self) -> Option<&Arc<crate::pki::Ca>> {
        self.tls.get().map(|(ca, _)| ca)
    }

    /// How to open channels to agents: plaintext unless serving TLS.
    pub fn dialer(&self) -> rpc::Dialer {
        self.tls.get().map_or_else(rpc::Dialer::insecure, |(_, d)| d.clone())
    }

    /// A node as replies show it, with its health and settings.
    pub fn node_info(&self, n: &Node, settings: Option<&NodeSettings>) -> rpc::NodeInfo {
        let (healthy, health) = self.health.get(&n.uuid);
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
            removed: false,
            lost: false,
            degraded: self.health.is_degraded(&n.uuid, std::time::Instant::now()),
            partial_bytes: health.as_ref().map_or(0, |h| h.partial_bytes),
            quarantined: health.as_ref().map_or(0, |h| h.quarantined),
        }
    }

    /// The nodes removed from the mesh, as the admin API lists them.
    pub async fn removed_nodes(&self) -> Result<Vec<rpc::NodeInfo>, Status> {
        let removed = self.store.removed_nodes().await?;
        Ok(removed
            .into_iter()
            .map(|r| rpc::NodeInfo {
                uuid: r.node.uuid,
                name: r.node.name,
                cluster_uuid: r.node.cluster_uuid,
                address: r.node.address,
                last_seen_unix_ms: r.removed_unix_ms,
                removed: true,
                lost: r.lost,
                ..Default::default()
            })
            .collect())
    }

    /// Every node as replies show it.
    pub async fn all_nodes(&self) -> Result<Vec<rpc::NodeInfo>, Status> {
        let settings = self.store.node_settings().await?;
        Ok(self
            .store
            .nodes()
            .await?
            .iter()
            .map(|n| self.node_info(n, settings.get(&n.uuid)))
            .collect())
    }

    /// A cluster as replies show it, with its settings or their defaults.
    pub fn cluster_info(
        &self,
        c: &Cluster,
        settings: Option<&ClusterSettings>,
    ) -> rpc::ClusterInfo {
        let reserve = settings.and_then(|s| s.reserve_bytes);
        rpc::ClusterInfo {
            uuid: c.uuid.clone(),
            name: c.name.clone(),
            min_copies: settings.and_then(|s| s.min_copies).unwrap_or(1),
            reserve_bytes: reserve.unwrap_or(self.reserve_default),
            reserve_default: reserve.is_none(),
            replication: settings
                .and_then(|s| s.replication)
                .unwrap_or(DEFAULT_REPLICATION)
                .to_rpc() as i32,
        }
    }

    /// Every cluster as replies show it.
    pub async fn all_clusters(&self) -> Result<Vec<rpc::ClusterInfo>, Status> {
        let settings = self.store.cluster_settings().await?;
        Ok(self
            .store
            .clusters()
            .await?
            .iter()
            .map(|c| self.cluster_info(c, settings.get(&c.uuid)))
            .collect())
    }

    /// The parsed form of `text`, parsed once while the cache holds it.
    pub fn expr(&self, text: &str) -> Result<Arc<Expr>, preferred::ParseError> {
        if let Some(e) = self.exprs.lock().unwrap().get(text) {
            return Ok(e.clone());
        }
        let e = Arc::new(Expr::parse(text)?);
        let mut exprs = self.exprs.lock().unwrap();
        if exprs.len() >= MAX_CACHED_EXPRS {
            // Rarely hit, and re-parsing is cheap: no need for LRU order.
            exprs.clear();
        }
        exprs.insert(text.to_string(), e.clone());
        Ok(e)
    }
}

#[cfg(test)]
mod expr_cache_tests {
    use super::*;

    #[tokio::test]
    async fn the_expression_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let repos =
            Arc::new(crate::coordinator::git::Repos::new(std::path::Path::new("/nonexistent")));
        let core = Core::new(store, DEFAULT_RESERVE, repos);
        for n in 0..(MAX_CACHED_EXPRS * 3) {
            core.expr(&format!("copies={n}")).unwrap();
        }
        assert!(core.exprs.lock().unwrap().len() <= MAX_CACHED_EXPRS);
        assert!(core.expr("copies=1").is_ok());
    }
}
