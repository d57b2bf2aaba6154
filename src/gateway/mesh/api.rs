//! How the gateway reaches the rest of the mesh: an agent per node and the
//! coordinator, as traits, so the request core runs the same against the
//! real gRPC clients (`super::grpc`) and against in-memory fakes in tests.
//!
//! Errors are the gRPC status the far side (or the transport) gave: callers
//! tell an absent key, a refused offset or a restarted clock by its code.
//! Reply streams are boxed once per call and requests go through bounded
//! channels; their items are the wire messages, so the data path adds no
//! copy.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tonic::Status;

use crate::rpc;

/// A stream of replies from an agent.
pub type Replies<T> = BoxStream<'static, Result<T, Status>>;

/// One node's agent.
pub trait NodeClient: Send + Sync {
    /// Whether the node holds the key's content.
    fn check_present(&self, key: String) -> BoxFuture<'_, Result<bool, Status>>;
    /// Where an upload of the key would resume, or that the node has it.
    fn put_offset(&self, key: String) -> BoxFuture<'_, Result<rpc::PutOffsetReply, Status>>;
    /// An upload: a header, data chunks, then an end marker, through a
    /// bounded channel so the node sets the pace. A channel closed without
    /// the marker leaves the partial content for resume.
    fn put(
        &self,
        requests: mpsc::Receiver<rpc::PutRequest>,
    ) -> BoxFuture<'static, Result<rpc::PutReply, Status>>;
    /// A download: a header with the length, data chunks, an end marker.
    fn get(&self, req: rpc::GetRequest) -> BoxFuture<'_, Result<Replies<rpc::GetReply>, Status>>;
    fn remove(&self, req: rpc::RemoveRequest) -> BoxFuture<'_, Result<rpc::RemoveReply, Status>>;
    /// A content lock, held until `unlock` is sent or `requests` ends.
    fn lock_content(
        &self,
        requests: mpsc::Receiver<rpc::LockRequest>,
    ) -> BoxFuture<'_, Result<Replies<rpc::LockReply>, Status>>;
    /// The agent's clock, for REMOVE-BEFORE deadlines.
    fn clock(&self) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>>;
}

/// Opens a client for a node's agent. The mesh keeps what it returns for
/// as long as the node stays at the same address.
pub trait Nodes: Send + Sync {
    fn connect(&self, node: &rpc::NodeInfo) -> Result<Arc<dyn NodeClient>, Status>;
}

/// The coordinator: topology, location log, placement and cluster clock.
pub trait Control: Send + Sync {
    fn topology(&self) -> BoxFuture<'_, Result<rpc::TopologyReply, Status>>;
    /// UUIDs of the nodes the location log lists for `key`.
    fn locate(&self, key: String) -> BoxFuture<'_, Result<Vec<String>, Status>>;
    fn record_locations(
        &self,
        changes: Vec<rpc::LocationChange>,
    ) -> BoxFuture<'_, Result<(), Status>>;
    fn plan_put(
        &self,
        req: rpc::PlanPutRequest,
    ) -> BoxFuture<'_, Result<rpc::PlanPutReply, Status>>;
    fn cluster_timestamp(
        &self,
        cluster_uuid: String,
    ) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>>;
    fn check_token(
        &self,
        req: rpc::CheckTokenRequest,
    ) -> BoxFuture<'_, Result<rpc::CheckTokenReply, Status>>;
    /// A git process on a cluster's repository: `requests` starts with
    /// `start`, then its standard input; the replies carry its standard
    /// output and its exit. A coordinator without git says so.
    fn git(
        &self,
        requests: mpsc::Receiver<rpc::GitRequest>,
    ) -> BoxFuture<'_, Result<Replies<rpc::GitReply>, Status>> {
        let _ = requests;
        Box::pin(async {
            Err(Status::unimplemented("this coordinator serves no git repositories"))
        })
    }

    /// Tells the coordinator a node failed a write or a data call, so that
    /// it degrades the node until it recovers. A coordinator that takes no
    /// reports (a test double about other things) says so.
    fn report_node_failure(
        &self,
        req: rpc::ReportNodeFailureRequest,
    ) -> BoxFuture<'_, Result<(), Status>> {
        let _ = req;
        Box::pin(async { Err(Status::unimplemented("this coordinator takes no failure reports")) })
    }

    /// A message at once and whenever the topology changes (and as a
    /// keep-alive); a coordinator without the stream says so, and the
    /// gateway keeps polling.
    fn watch_topology(&self) -> BoxFuture<'_, Result<Replies<rpc::TopologyChanged>, Status>> {
        Box::pin(async { Err(Status::unimplemented("this coordinator has no topology watch")) })
    }
}
