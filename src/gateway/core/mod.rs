//! The one request handler behind every front-end: the cluster semantics of
//! each P2P request, expressed as calls to agents and the coordinator.
//!
//! `Core` reaches them only through the mesh's traits (`mesh::api`), so the
//! rules here run unchanged against in-memory nodes in the tests.
//!
//! - `locations`: what the location log lists, probing nodes, recording;
//! - `get`: downloads with failover, `put`: uploads fanned out to targets;
//! - `present`: CHECKPRESENT and LOCKCONTENT; `remove`: REMOVE(-BEFORE)
//!   and the cluster clock.

mod chain;
mod get;
mod locations;
mod present;
mod put;
mod remove;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

use super::clocks::AgentClocks;
use super::mesh::{Mesh, Repo};
use super::metrics::Metrics;
use crate::rpc::{self, lock_request};
use crate::tasks::Tasks;

pub use locations::LocationChange;
pub use put::{PutRequest, TargetState};

/// How long a node may keep a request waiting (a CHECKPRESENT answer, a
/// GET's first answer or its next chunk while the gateway is ready for it,
/// room for a PUT's next chunk) before it counts as failed: the gateway's
/// `--stall-timeout`. A slow client does not count: the gateway only waits
/// for a node while it has data for it or room for more.
pub fn stall() -> Duration {
    super::limits::call_limits().stall
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadRequest(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

fn unavailable(what: &str, s: Status) -> CoreError {
    CoreError::Unavailable(format!("{what}: {}", s.message()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    /// Node UUIDs, besides the repository addressed, that the request
    /// affected (SUCCESS-PLUS, FAILURE-PLUS, ALREADY-HAVE-PLUS).
    pub plus: Vec<String>,
    pub error: Option<String>,
    /// A PUT that stored nothing because a node is out of space: that
    /// node's message, which front-ends pass on as such (HTTP 507).
    pub no_space: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PutOffset {
    AlreadyHave(Vec<String>),
    Offset(u64),
}

/// Content being sent to a client: `length` bytes from the requested offset.
pub struct Download {
    pub length: u64,
    pub node: String,
    /// Ends early with an error when the node fails or reports the data
    /// invalid; a front-end then makes sure the client sees invalid data.
    pub body: futures::stream::BoxStream<'static, std::result::Result<Bytes, std::io::Error>>,
}

/// A content lock held on one node. Dropping it releases the lock.
pub struct HeldLock {
    pub node: String,
    tx: mpsc::Sender<rpc::LockRequest>,
}

impl HeldLock {
    pub async fn unlock(self) {
        let _ = self.tx.send(rpc::LockRequest { msg: Some(lock_request::Msg::Unlock(true)) }).await;
    }
}

/// The request core; cheap to clone, one per gateway.
#[derive(Clone)]
pub struct Core {
    pub mesh: Arc<Mesh>,
    pub metrics: Arc<Metrics>,
    clocks: Arc<AgentClocks>,
    /// The gateway's tasks: lock holders, agent calls, front-end timers.
    pub tasks: Tasks,
}

impl Core {
    pub fn new(mesh: Arc<Mesh>, tasks: Tasks) -> Core {
        let nodes = super::mesh::metrics::NodeCollector(mesh.clone());
        let metrics = Arc::new(Metrics::default().with_collector(Box::new(nodes)));
        Core { mesh, metrics, clocks: Arc::default(), tasks }
    }

    fn plus(repo: &Repo, nodes: Vec<String>) -> Vec<String> {
        // Only a cluster reports nodes: a node addressed alone is the repo.
        if repo.is_cluster() { nodes } else { Vec::new() }
    }
}
