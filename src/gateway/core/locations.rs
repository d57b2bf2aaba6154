//! The gateway's location bookkeeping: what the coordinator's location log
//! lists for a key, asking nodes directly when the log cannot be trusted,
//! and recording what was found.

use std::collections::{BTreeMap, BTreeSet};

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

    /// Asks every node in parallel; records what it finds. The question is
    /// where an upload would start, which also says whether the node has
    /// the content: the nodes found holding nothing of the key are noted for
    /// an upload that may follow (`mesh::uploads`).
    pub(super) async fn probe(&self, nodes: &[rpc::NodeInfo], key: &Key) -> Vec<rpc::NodeInfo> {
        let asks = nodes.iter().map(|n| async move { (n, self.offset_on(n, key).await) });
        let answers = join_all(asks).await;
        let found: Vec<_> = answers
            .iter()
            .filter(|(_, a)| matches!(a, Ok(Some(Held::All))))
            .map(|(n, _)| (*n).clone())
            .collect();
        let mut empty: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (n, _) in answers.iter().filter(|(_, a)| matches!(a, Ok(Some(Held::Nothing)))) {
            empty.entry(&n.cluster_uuid).or_default().insert(n.uuid.clone());
        }
        for (cluster, uuids) in empty {
            self.mesh.uploads.note_empty(cluster, &key.to_string(), uuids);
        }
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
        Ok(self.answer(node, key, ask).await?.unwrap_or(false))
    }

    /// How much of the content `node` holds; None when it found its copy
    /// corrupt (it holds none of use). An error names the node and says why
    /// it could not tell.
    async fn offset_on(
        &self,
        node: &rpc::NodeInfo,
        key: &Key,
    ) -> std::result::Result<Option<Held>, String> {
        let ask = async {
            let c = self.mesh.agent(node)?;
            let r = c.put_offset(key.to_string()).await?;
            Ok(match (r.already_have, r.offset) {
                (true, _) => Held::All,
                (false, 0) => Held::Nothing,
                (false, _) => Held::Part,
            })
        };
        self.answer(node, key, ask).await
    }

    /// A node's answer within the stall timeout, with its health noted;
    /// None when it found its copy corrupt, which is struck from the log.
    async fn answer<T>(
        &self,
        node: &rpc::NodeInfo,
        key: &Key,
        ask: impl std::future::Future<Output = std::result::Result<T, Status>>,
    ) -> std::result::Result<Option<T>, String> {
        let r = tokio::time::timeout(stall(), ask).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!("no answer in {:?}", stall())))
        });
        match r {
            Ok(answer) => {
                self.mesh.agent_ok(node);
                Ok(Some(answer))
            }
            Err(s) if s.code() == Code::DataLoss => {
                // A corrupt copy is no copy: the node answered, it lacks it.
                self.mesh.agent_ok(node);
                self.corrupt_copy(node, key, s.message()).await;
                Ok(None)
            }
            Err(s) => {
                self.mesh.agent_failed(node, s.message());
                Err(format!("{}: {}", node.name, s.message()))
            }
        }
    }
}

/// How much of a key's content a node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    All,
    Part,
    Nothing,
}
