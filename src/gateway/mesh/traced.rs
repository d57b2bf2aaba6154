//! Every call the gateway makes to a node's agent runs in a `node` span
//! naming the node and the operation, inside the request's span: a failover
//! from one node to the next shows as two `node` spans of one request.

use std::sync::Arc;

use std::future::Future;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument;

use super::api::{NodeClient, Replies};
use crate::rpc;

/// A node's client whose calls each run in a span.
pub struct Traced {
    inner: Arc<dyn NodeClient>,
    name: String,
    uuid: String,
}

impl Traced {
    pub fn wrap(node: &rpc::NodeInfo, inner: Arc<dyn NodeClient>) -> Arc<dyn NodeClient> {
        Arc::new(Traced { inner, name: node.name.clone(), uuid: node.uuid.clone() })
    }

    fn span(&self, op: &'static str) -> tracing::Span {
        tracing::info_span!("node", node = %self.name, uuid = %self.uuid, op)
    }
}

/// `call` in `span`, ending with a debug line that tells how it went (the
/// line carries the span, so a log shows which node answered what).
fn run<'a, T: Send + 'a>(
    span: tracing::Span,
    call: impl Future<Output = Result<T, Status>> + Send + 'a,
) -> BoxFuture<'a, Result<T, Status>> {
    async move {
        let result = call.await;
        match &result {
            Ok(_) => tracing::debug!("node call answered"),
            Err(e) => tracing::debug!(code = ?e.code(), "node call failed: {}", e.message()),
        }
        result
    }
    .instrument(span)
    .boxed()
}

impl NodeClient for Traced {
    fn check_present(&self, key: String) -> BoxFuture<'_, Result<bool, Status>> {
        run(self.span("checkpresent"), self.inner.check_present(key))
    }

    fn put_offset(&self, key: String) -> BoxFuture<'_, Result<rpc::PutOffsetReply, Status>> {
        run(self.span("putoffset"), self.inner.put_offset(key))
    }

    fn put(
        &self,
        requests: mpsc::Receiver<rpc::PutRequest>,
    ) -> BoxFuture<'static, Result<rpc::PutReply, Status>> {
        run(self.span("put"), self.inner.put(requests))
    }

    fn get(&self, req: rpc::GetRequest) -> BoxFuture<'_, Result<Replies<rpc::GetReply>, Status>> {
        run(self.span("get"), self.inner.get(req))
    }

    fn remove(&self, req: rpc::RemoveRequest) -> BoxFuture<'_, Result<rpc::RemoveReply, Status>> {
        run(self.span("remove"), self.inner.remove(req))
    }

    fn lock_content(
        &self,
        requests: mpsc::Receiver<rpc::LockRequest>,
    ) -> BoxFuture<'_, Result<Replies<rpc::LockReply>, Status>> {
        run(self.span("lockcontent"), self.inner.lock_content(requests))
    }

    fn clock(&self) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        run(self.span("clock"), self.inner.clock())
    }
}
