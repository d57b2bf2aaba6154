//! The agent's gRPC service: the node side of every request. The tonic
//! trait impl here only delegates: uploads are served by `put`, downloads
//! by `get`, content locks and removal by `lock`.

mod chain;
mod get;
mod list;
mod lock;
mod put;
mod replicate;
mod scrub;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::integrity::Integrity;
use super::locks::{ContentLocks, Uploads};
use super::store::{Store, StoreError};
use crate::clock::Stopwatch;
use crate::p2p::key::Key;
use crate::rpc::{self, agent_server};
use crate::tasks::Tasks;

pub struct AgentService {
    /// How this agent reaches other agents (repair copies).
    pub dialer: rpc::Dialer,
    /// Where requested scrub passes are counted, when the agent has metrics.
    pub metrics: Option<Arc<crate::agent::metrics::AgentMetrics>>,
    pub(crate) store: Store,
    pub(crate) uuid: String,
    pub(crate) name: String,
    pub(crate) cluster: String,
    pub(crate) boot_id: String,
    started: Stopwatch,
    locks: ContentLocks,
    pub(crate) uploads: Uploads,
    /// Verified stamps, quarantine and the count of quarantined copies.
    pub(crate) integrity: Integrity,
    pub(crate) active: Arc<AtomicU32>,
    /// Bytes in partial uploads as of the last sweep, for the heartbeat.
    pub(crate) partial_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Lock holders and GET readers: they end when the agent stops.
    tasks: Tasks,
}

/// Counts a transfer as active for as long as it lives.
struct Active(Arc<AtomicU32>);

impl Active {
    fn enter(counter: &Arc<AtomicU32>) -> Active {
        counter.fetch_add(1, Ordering::Relaxed);
        Active(counter.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::Invalid(m) => Status::invalid_argument(m),
            e @ StoreError::Io { .. } => Status::internal(e.to_string()),
        }
    }
}

pub(crate) fn parse_key(s: &str) -> Result<Key, Status> {
    s.parse::<Key>().map_err(|e| Status::invalid_argument(format!("bad key {s:?}: {e}")))
}

/// Reads up to `max` bytes (fewer only at the end of the file) into a buffer
/// of their own, filled without being zeroed first; empty at the end.
pub(crate) fn read_chunk(f: &mut std::fs::File, max: usize) -> std::io::Result<Bytes> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(max);
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

impl AgentService {
    pub fn new(
        store: Store,
        uuid: String,
        name: String,
        cluster: String,
        tasks: Tasks,
        coordinator: Option<rpc::CoordinatorApi>,
    ) -> AgentService {
        AgentService {
            dialer: rpc::Dialer::insecure(),
            metrics: None,
            partial_bytes: Arc::default(),
            integrity: Integrity::new(store.clone(), uuid.clone(), name.clone(), coordinator),
            tasks,
            store,
            uuid,
            name,
            cluster,
            boot_id: uuid::Uuid::new_v4().to_string(),
            started: Stopwatch::start(),
            locks: ContentLocks::default(),
            uploads: Uploads::default(),
            active: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Holds at most `max` content locks at once.
    pub fn limit_locks(&mut self, max: usize) {
        self.locks = ContentLocks::with_max(max);
    }

    /// Milliseconds of the agent's monotonic clock; it starts at zero when the
    /// process starts, and `boot_id` tells clock readings of different runs
    /// apart.
    fn clock_ms(&self) -> u64 {
        self.started.elapsed_ms()
    }
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    async fn info(&self, _: Request<rpc::InfoRequest>) -> Result<Response<rpc::AgentInfo>, Status> {
        Ok(Response::new(rpc::AgentInfo {
            uuid: self.uuid.clone(),
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            boot_id: self.boot_id.clone(),
        }))
    }

    #[tracing::instrument(name = "checkpresent", skip_all, fields(node = %self.name, key = %req.get_ref().key))]
    async fn check_present(
        &self,
        req: Request<rpc::KeyRequest>,
    ) -> Result<Response<rpc::CheckPresentReply>, Status> {
        let key = parse_key(&req.get_ref().key)?;
        let present = self.store.object_size(&key).await?.is_some();
        Ok(Response::new(rpc::CheckPresentReply { present }))
    }

    type LockContentStream = lock::LockStream;

    async fn lock_content(
        &self,
        req: Request<Streaming<rpc::LockRequest>>,
    ) -> Result<Response<Self::LockContentStream>, Status> {
        self.serve_lock(req.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(name = "remove", skip_all, fields(node = %self.name, key = %req.get_ref().key))]
    async fn remove(
        &self,
        req: Request<rpc::RemoveRequest>,
    ) -> Result<Response<rpc::RemoveReply>, Status> {
        self.serve_remove(req.into_inner()).await.map(Response::new)
    }

    async fn get_timestamp(
        &self,
        _: Request<rpc::TimestampRequest>,
    ) -> Result<Response<rpc::TimestampReply>, Status> {
        let ms = self.clock_ms();
        Ok(Response::new(rpc::TimestampReply {
            timestamp: ms / 1000,
            boot_id: self.boot_id.clone(),
            timestamp_ms: ms,
        }))
    }

    #[tracing::instrument(name = "putoffset", skip_all, fields(node = %self.name, key = %req.get_ref().key))]
    async fn put_offset(
        &self,
        req: Request<rpc::KeyRequest>,
    ) -> Result<Response<rpc::PutOffsetReply>, Status> {
        self.serve_put_offset(&req.get_ref().key).await.map(Response::new)
    }

    #[tracing::instrument(name = "put", skip_all, fields(node = %self.name, key = tracing::field::Empty))]
    async fn put(
        &self,
        req: Request<Streaming<rpc::PutRequest>>,
    ) -> Result<Response<rpc::PutReply>, Status> {
        self.serve_put(req.into_inner()).await.map(Response::new)
    }

    type ListKeysStream = ReceiverStream<Result<rpc::ListKeysReply, Status>>;

    async fn list_keys(
        &self,
        _: Request<rpc::ListKeysRequest>,
    ) -> Result<Response<Self::ListKeysStream>, Status> {
        Ok(Response::new(list::list_keys(self.store.clone())))
    }

    type GetStream = get::GetStream;

    #[tracing::instrument(name = "get", skip_all, fields(node = %self.name, key = %req.get_ref().key))]
    async fn get(
        &self,
        req: Request<rpc::GetRequest>,
    ) -> Result<Response<Self::GetStream>, Status> {
        self.serve_get(req.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(name = "replicate", skip_all, fields(node = %self.name, key = %req.get_ref().key))]
    async fn replicate(
        &self,
        req: Request<rpc::ReplicateRequest>,
    ) -> Result<Response<rpc::ReplicateReply>, Status> {
        self.serve_replicate(req.into_inner()).await.map(Response::new)
    }

    async fn scrub(
        &self,
        req: Request<rpc::ScrubRequest>,
    ) -> Result<Response<rpc::ScrubReply>, Status> {
        self.serve_scrub(req.into_inner()).await.map(Response::new)
    }
}
