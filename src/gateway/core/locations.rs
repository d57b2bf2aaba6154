//! The gateway's location bookkeeping: what the coordinator's location log
//! lists for a key, asking nodes directly when the log cannot be trusted,
//! and recording what was found.

use futures::future::join_all;
use tonic::{Code, Status};
use tracing::warn;

use super::{Core, CoreError, Result, stall, unavailable};
use crate::gateway::mesh::Repo;
use crate::gateway::metrics::Metrics;
use crate::p2p::key::Key;
use crate::rpc;

/// One entry for the location log: `key` is (or is not) on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationChange {
    pub key: String,
    pub node_uuid: String,
    pub present: bool,
}

impl LocationChange {
    pub fn present(key: &Key, node_uuid: &str) -> LocationChange {
        LocationChange { key: key.to_string(), node_uuid: node_uuid.to_string(), present: true }
    }

    pub fn absent(key: &Key, node_uuid: &str) -> LocationChange {
        LocationChange { key: key.to_string(), node_uuid: node_uuid.to_string(), present: false }
    }
}

impl From<LocationChange> for rpc::LocationChange {
    fn from(c: LocationChange) -> rpc::LocationChange {
        rpc::LocationChange { key: c.key, node_uuid: c.node_uuid, present: c.present }
    }
}

impl Core {
    /// Records `changes` in the location log. The caller decides what a
    /// failure means: a removal or an upload must not go on as if the log
    /// said what it does not.
    pub(super) async fn record(&self, changes: Vec<LocationChange>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.into_iter().map(Into::into).collect();
        self.mesh.control().record_locations(changes).await.map_err(|s| {
            CoreError::Unavailable(format!("cannot update the location log: {}", s.message()))
        })
    }

    /// Records a repair of the location log, found while answering a
    /// question. A failure is only logged: the log is repaired the next time
    /// a node is found to differ from it.
    pub(super) async fn repair(&self, changes: Vec<LocationChange>) {
        if let Err(e) = self.record(changes).await {
            warn!("{e}");
        }
    }

    /// A node reported its copy of `key` corrupt: it is no holder, so the
    /// log must not send anyone to it again. The node quarantines the copy
    /// and strikes itself; recording it here too covers an agent that could
    /// not reach the coordinator.
    pub(super) async fn corrupt_copy(&self, node: &rpc::NodeInfo, key: &Key, why: &str) {
        warn!(%key, node = %node.name, "corrupt copy: {why}; striking it from the location log");
        Metrics::add(&self.metrics.corrupt_copies, 1);
        self.repair(vec![LocationChange::absent(key, &node.uuid)]).await;
    }

    /// The nodes of `repo` the location log lists for `key`: those up, and
    /// those the coordinator reports down.
    pub(super) async fn listed(
        &self,
        repo: &Repo,
        key: &Key,
    ) -> Result<(Vec<rpc::NodeInfo>, Vec<rpc::NodeInfo>)> {
        let located = self
            .mesh
            .control()
            .locate(key.to_string())
            .await
            .map_err(|s| unavailable("coordinator", s))?;
        Ok(repo.nodes().into_iter().filter(|n| located.contains(&n.uuid)).partition(|n| n.healthy))
    }

    /// Healthy nodes of `repo` holding `key`, best first (lowest cost, then
    /// least busy). The location log is trusted; when it names no healthy
    /// node, the healthy nodes are asked and the log repaired.
    pub(super) async fn holders(&self, repo: &Repo, key: &Key) -> Result<Vec<rpc::NodeInfo>> {
        let healthy: Vec<_> = repo.nodes().into_iter().filter(|n| n.healthy).collect();
        if !repo.is_cluster() {
            return Ok(healthy);
        }
        let (mut holders, _) = self.listed(repo, key).await?;
        if holders.is_empty() {
            holders = self.probe(&healthy, key).await;
        }
        Ok(self.mesh.rank(holders))
    }

    /// Asks every node in parallel; records what it finds.
    pub(super) async fn probe(&self, nodes: &[rpc::NodeInfo], key: &Key) -> Vec<rpc::NodeInfo> {
        let asks = nodes
            .iter()
            .map(|n| async move { self.present_on(n, key).await.ok()?.then(|| n.clone()) });
        let found: Vec<_> = join_all(asks).await.into_iter().flatten().collect();
        self.repair(found.iter().map(|n| LocationChange::present(key, &n.uuid)).collect()).await;
        found
    }

    /// Whether `node` has the content; an error names the node and says why
    /// it could not tell.
    pub(super) async fn present_on(
        &self,
        node: &rpc::NodeInfo,
        key: &Key,
    ) -> std::result::Result<bool, String> {
        let ask = async {
            let c = self.mesh.agent(node)?;
            c.check_present(key.to_string()).await
        };
        let r = tokio::time::timeout(stall(), ask).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!("no answer in {:?}", stall())))
        });
        match r {
            Ok(present) => {
                self.mesh.agent_ok(node);
                Ok(present)
            }
            Err(s) if s.code() == Code::DataLoss => {
                // A corrupt copy is no copy: the node answered, it lacks it.
                self.mesh.agent_ok(node);
                self.corrupt_copy(node, key, s.message()).await;
                Ok(false)
            }
            Err(s) => {
                self.mesh.agent_failed(node, s.message());
                Err(format!("{}: {}", node.name, s.message()))
            }
        }
    }
}
