//! CHECKPRESENT and LOCKCONTENT: questions about content a cluster answers
//! from its best holder, trusting the location log but checking it.

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::debug;

use super::locations::LocationChange;
use super::{Core, CoreError, HeldLock, Result};
use crate::gateway::mesh::Repo;
use crate::p2p::key::Key;
use crate::rpc::{self, lock_request};

impl Core {
    /// CHECKPRESENT. A cluster asks the best node the location log lists;
    /// a listed node that turns out not to have the content is struck from
    /// the log and the next one asked. When no listed node has it, the other
    /// healthy nodes are asked in parallel and the log repaired with what
    /// they hold. When the answer could only come from nodes that cannot be
    /// reached, it is an error, not "not present".
    #[tracing::instrument(name = "checkpresent", skip_all, fields(repo = %repo.name(), key = %key))]
    pub async fn checkpresent(&self, repo: &Repo, key: &Key) -> Result<bool> {
        if let Repo::Node(n) = repo {
            return self.present_on(n, key).await.map_err(CoreError::Unavailable);
        }
        let (listed, down) = self.listed(repo, key).await?;
        let mut asked = Vec::new();
        let mut unreachable: Vec<String> =
            down.iter().map(|n| format!("{} is down", n.name)).collect();
        for node in self.mesh.rank(listed) {
            asked.push(node.uuid.clone());
            match self.present_on(&node, key).await {
                Ok(true) => return Ok(true),
                Ok(false) => {
                    debug!(%key, node = %node.name, "listed in the location log but not present");
                    self.repair(vec![LocationChange::absent(key, &node.uuid)]).await;
                }
                Err(e) => unreachable.push(e),
            }
        }
        let others: Vec<_> =
            repo.nodes().into_iter().filter(|n| n.healthy && !asked.contains(&n.uuid)).collect();
        if !self.probe(&others, key).await.is_empty() {
            return Ok(true);
        }
        if unreachable.is_empty() {
            return Ok(false);
        }
        Err(CoreError::Unavailable(format!(
            "cannot tell whether {key} is present: the nodes the location log lists for it cannot be reached ({})",
            unreachable.join("; ")
        )))
    }

    /// LOCKCONTENT: a lock on the best holder that grants one; None when
    /// none does.
    #[tracing::instrument(name = "lockcontent", skip_all, fields(repo = %repo.name(), key = %key))]
    pub async fn lock(&self, repo: &Repo, key: &Key) -> Result<Option<HeldLock>> {
        for node in self.holders(repo, key).await? {
            let Ok(c) = self.mesh.agent(&node) else { continue };
            let (tx, rx) = mpsc::channel(2);
            let _ = tx
                .send(rpc::LockRequest { msg: Some(lock_request::Msg::Key(key.to_string())) })
                .await;
            let mut replies = match c.lock_content(rx).await {
                Ok(r) => r,
                Err(s) => {
                    self.lock_refused(&node, key, s).await;
                    continue;
                }
            };
            let limit = crate::gateway::limits::call_limits().node;
            let Ok(first) = tokio::time::timeout(limit, replies.next()).await else {
                let why = format!("no answer to LOCKCONTENT within {} s", limit.as_secs());
                self.mesh.agent_failed(&node, &why);
                continue;
            };
            if let Some(Err(s)) = first {
                self.lock_refused(&node, key, s).await;
                continue;
            }
            if let Some(Ok(r)) = first
                && r.locked
            {
                // The reply stream ends when the agent lets go; keep it
                // drained so the lock stream stays healthy.
                self.tasks.spawn(async move { while let Some(Ok(_)) = replies.next().await {} });
                return Ok(Some(HeldLock { node: node.uuid, tx }));
            }
        }
        Ok(None)
    }

    /// A node that would not lock: one that found its copy corrupt holds
    /// none, and the log must stop listing it.
    async fn lock_refused(&self, node: &rpc::NodeInfo, key: &Key, s: tonic::Status) {
        if s.code() == tonic::Code::DataLoss {
            self.corrupt_copy(node, key, s.message()).await;
        } else {
            debug!(node = %node.name, "lock failed: {}", s.message());
        }
    }
}
