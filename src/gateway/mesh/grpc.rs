//! The real mesh: tonic clients for agents and the coordinator behind the
//! traits of `super::api`.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use super::api::{Control, NodeClient, Nodes, Replies};
use crate::gateway::limits::call_limits;
use crate::rpc::{self, agent_client::AgentClient};
use crate::telemetry::traced;

/// `call`, failed with DEADLINE_EXCEEDED when it takes longer than `limit`:
/// a hung peer or a stalled disk behind it gives a clear error rather than
/// a hung client.
async fn within<T>(
    limit: std::time::Duration,
    who: &str,
    flag: &str,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(format!(
            "{who} did not answer within {} s ({flag})",
            limit.as_secs_f64()
        )))
    })
}

/// A call to the coordinator, within `--coordinator-timeout`.
async fn coordinator<T>(
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    within(call_limits().coordinator, "the coordinator", "--coordinator-timeout", call).await
}

/// A unary call to an agent, within `--node-timeout`.
async fn agent<T>(call: impl std::future::Future<Output = Result<T, Status>>) -> Result<T, Status> {
    within(call_limits().node, "the node", "--node-timeout", call).await
}

/// The coordinators over gRPC, failing over between them.
pub struct GrpcControl(rpc::CoordinatorApi);

impl GrpcControl {
    /// The coordinators of the comma-separated `urls`.
    pub fn new(urls: &str, dialer: &rpc::Dialer) -> Result<GrpcControl, rpc::DialError> {
        Ok(GrpcControl(dialer.coordinator_client(urls)?))
    }
}

impl Control for GrpcControl {
    fn topology(&self) -> BoxFuture<'_, Result<rpc::TopologyReply, Status>> {
        let mut c = self.0.clone();
        Box::pin(coordinator(
            async move { Ok(c.topology(rpc::TopologyRequest {}).await?.into_inner()) },
        ))
    }

    fn locate(&self, key: String) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        let mut c = self.0.clone();
        Box::pin(coordinator(async move {
            Ok(c.locate(rpc::LocateRequest { key }).await?.into_inner().node_uuids)
        }))
    }

    fn record_locations(
        &self,
        changes: Vec<rpc::LocationChange>,
    ) -> BoxFuture<'_, Result<(), Status>> {
        let mut c = self.0.clone();
        Box::pin(coordinator(async move {
            c.record_locations(rpc::RecordLocationsRequest { changes }).await?;
            Ok(())
        }))
    }

    fn plan_put(
        &self,
        req: rpc::PlanPutRequest,
    ) -> BoxFuture<'_, Result<rpc::PlanPutReply, Status>> {
        let mut c = self.0.clone();
        Box::pin(coordinator(async move { Ok(c.plan_put(req).await?.into_inner()) }))
    }

    fn cluster_timestamp(
        &self,
        cluster_uuid: String,
    ) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        let mut c = self.0.clone();
        let req = rpc::ClusterTimestampRequest { cluster_uuid };
        Box::pin(coordinator(async move { Ok(c.cluster_timestamp(req).await?.into_inner()) }))
    }

    fn check_token(
        &self,
        req: rpc::CheckTokenRequest,
    ) -> BoxFuture<'_, Result<rpc::CheckTokenReply, Status>> {
        let mut c = self.0.clone();
        Box::pin(coordinator(async move { Ok(c.check_token(req).await?.into_inner()) }))
    }

    fn git(
        &self,
        requests: mpsc::Receiver<rpc::GitRequest>,
    ) -> BoxFuture<'_, Result<Replies<rpc::GitReply>, Status>> {
        let mut c = self.0.clone();
        Box::pin(async move {
            // Only the start is bounded by --coordinator-timeout: a clone
            // or push may take long, and the coordinator bounds idleness.
            let replies = coordinator(c.git(ReceiverStream::new(requests))).await?.into_inner();
            Ok(replies.boxed())
        })
    }

    fn report_node_failure(
        &self,
        req: rpc::ReportNodeFailureRequest,
    ) -> BoxFuture<'_, Result<(), Status>> {
        let mut c = self.0.clone();
        Box::pin(coordinator(async move {
            c.report_node_failure(req).await?;
            Ok(())
        }))
    }

    fn watch_topology(&self) -> BoxFuture<'_, Result<Replies<rpc::TopologyChanged>, Status>> {
        let mut c = self.0.clone();
        Box::pin(async move {
            // Only the start is bounded: the stream stays open.
            let replies = coordinator(c.watch_topology(rpc::WatchTopologyRequest {})).await?;
            Ok(replies.into_inner().boxed())
        })
    }
}

/// Agents over gRPC: one lazily connected, multiplexed channel per node.
pub struct GrpcNodes(pub rpc::Dialer);

impl Nodes for GrpcNodes {
    fn connect(&self, node: &rpc::NodeInfo) -> Result<Arc<dyn NodeClient>, Status> {
        let channel = self.0.channel(&node.address, rpc::Peer::Agent(&node.uuid)).map_err(|e| {
            Status::internal(format!("cannot use agent address {:?}: {e}", node.address))
        })?;
        let client = AgentClient::new(channel)
            .max_decoding_message_size(rpc::MAX_MESSAGE)
            .max_encoding_message_size(rpc::MAX_MESSAGE);
        Ok(Arc::new(GrpcAgent {
            client,
            name: node.name.clone().into(),
            address: node.address.clone().into(),
        }))
    }
}

/// One agent over gRPC; each call works on a clone of the client, which
/// shares the channel.
struct GrpcAgent {
    client: AgentClient<Channel>,
    /// The node's name and address, for errors of calls that never
    /// reached it.
    name: Arc<str>,
    address: Arc<str>,
}

impl GrpcAgent {
    /// `call`, its failure to reach the agent naming the node and where.
    fn named<T, F>(&self, call: F) -> impl Future<Output = Result<T, Status>> + Send + 'static
    where
        F: Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let (name, address) = (self.name.clone(), self.address.clone());
        async move { call.await.map_err(|s| rpc::unreachable_node(&name, &address, s)) }
    }
}

impl NodeClient for GrpcAgent {
    fn check_present(&self, key: String) -> BoxFuture<'_, Result<bool, Status>> {
        let mut c = self.client.clone();
        let req = traced(rpc::KeyRequest { key });
        Box::pin(
            self.named(agent(async move { Ok(c.check_present(req).await?.into_inner().present) })),
        )
    }

    fn put_offset(&self, key: String) -> BoxFuture<'_, Result<rpc::PutOffsetReply, Status>> {
        let mut c = self.client.clone();
        let req = traced(rpc::KeyRequest { key });
        Box::pin(self.named(agent(async move { Ok(c.put_offset(req).await?.into_inner()) })))
    }

    /// No overall deadline: a PUT takes as long as its data; the request
    /// core fails a target that stops making progress.
    fn put(
        &self,
        requests: mpsc::Receiver<rpc::PutRequest>,
    ) -> BoxFuture<'static, Result<rpc::PutReply, Status>> {
        let mut c = self.client.clone();
        let req = traced(ReceiverStream::new(requests));
        Box::pin(self.named(async move { Ok(c.put(req).await?.into_inner()) }))
    }

    /// The request core bounds the wait for each answer of the stream.
    fn get(&self, req: rpc::GetRequest) -> BoxFuture<'_, Result<Replies<rpc::GetReply>, Status>> {
        let mut c = self.client.clone();
        let req = traced(req);
        Box::pin(self.named(async move { Ok(c.get(req).await?.into_inner().boxed()) }))
    }

    fn remove(&self, req: rpc::RemoveRequest) -> BoxFuture<'_, Result<rpc::RemoveReply, Status>> {
        let mut c = self.client.clone();
        let req = traced(req);
        Box::pin(self.named(agent(async move { Ok(c.remove(req).await?.into_inner()) })))
    }

    /// Bounded until the stream opens; the lock's first answer is awaited
    /// within the same deadline by the request core.
    fn lock_content(
        &self,
        requests: mpsc::Receiver<rpc::LockRequest>,
    ) -> BoxFuture<'_, Result<Replies<rpc::LockReply>, Status>> {
        let mut c = self.client.clone();
        let req = traced(ReceiverStream::new(requests));
        Box::pin(
            self.named(agent(async move { Ok(c.lock_content(req).await?.into_inner().boxed()) })),
        )
    }

    fn clock(&self) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        let mut c = self.client.clone();
        let req = traced(rpc::TimestampRequest {});
        Box::pin(self.named(agent(async move { Ok(c.get_timestamp(req).await?.into_inner()) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_agent_is_named_with_its_address() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let node = rpc::NodeInfo {
            uuid: "5c2f9a34-1111-4222-8333-944445555666".into(),
            name: "node2".into(),
            address: format!("http://127.0.0.1:{port}"),
            ..Default::default()
        };
        let agent = GrpcNodes(rpc::Dialer::insecure()).connect(&node).unwrap();
        let e = agent.check_present("SHA256E-s1--00".into()).await.unwrap_err();
        let msg = e.message();
        assert!(
            msg.starts_with(&format!("cannot reach node node2 at {}: ", node.address)),
            "{msg}"
        );
        assert!(msg.to_lowercase().contains("refused"), "{msg}");
    }

    #[test]
    fn statuses_from_the_agent_pass_unchanged() {
        let s = rpc::unreachable_node("n", "a", Status::unavailable("store not writable"));
        assert_eq!(s.message(), "store not writable");
        let s = rpc::unreachable_node("n", "a", Status::not_found("no such key"));
        assert_eq!(s.code(), tonic::Code::NotFound);
    }
}
