//! The one request handler behind every front-end: the cluster semantics of
//! each P2P request, expressed as calls to agents and the coordinator.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, info, warn};

use super::clocks::AgentClocks;
use super::fetch;
use super::mesh::{Mesh, Repo};
use super::metrics::Metrics;
use crate::clock::boottime_ms;
use crate::p2p::key::Key;
use crate::rpc::{self, lock_request, put_request};

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

const DEADLINE_PASSED: &str = "not removed: the deadline has passed";

#[derive(Clone)]
pub struct Core {
    pub mesh: Arc<Mesh>,
    pub metrics: Arc<Metrics>,
    clocks: Arc<AgentClocks>,
}

impl Core {
    pub fn new(mesh: Arc<Mesh>) -> Core {
        Core { mesh, metrics: Arc::default(), clocks: Arc::default() }
    }

    fn plus(repo: &Repo, nodes: Vec<String>) -> Vec<String> {
        // Only a cluster reports nodes: a node addressed alone is the repo.
        if repo.is_cluster() { nodes } else { Vec::new() }
    }

    pub(super) async fn record(&self, changes: Vec<(String, String, bool)>) {
        if changes.is_empty() {
            return;
        }
        let req = rpc::RecordLocationsRequest {
            changes: changes
                .into_iter()
                .map(|(key, node_uuid, present)| rpc::LocationChange { key, node_uuid, present })
                .collect(),
        };
        if let Err(e) = self.mesh.coordinator().record_locations(req).await {
            warn!("cannot record locations: {}", e.message());
        }
    }

    /// The nodes of `repo` the location log lists for `key`: those up, and
    /// those the coordinator reports down.
    async fn listed(
        &self,
        repo: &Repo,
        key: &Key,
    ) -> Result<(Vec<rpc::NodeInfo>, Vec<rpc::NodeInfo>)> {
        let located = self
            .mesh
            .coordinator()
            .locate(rpc::LocateRequest { key: key.to_string() })
            .await
            .map_err(|s| unavailable("coordinator", s))?
            .into_inner()
            .node_uuids;
        Ok(repo.nodes().into_iter().filter(|n| located.contains(&n.uuid)).partition(|n| n.healthy))
    }

    /// Healthy nodes of `repo` holding `key`, best first (lowest cost, then
    /// least busy). The location log is trusted; when it names no healthy
    /// node, the healthy nodes are asked and the log repaired.
    async fn holders(&self, repo: &Repo, key: &Key) -> Result<Vec<rpc::NodeInfo>> {
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
        self.record(found.iter().map(|n| (key.to_string(), n.uuid.clone(), true)).collect()).await;
        found
    }

    /// Whether `node` has the content; an error names the node and says why
    /// it could not tell.
    async fn present_on(
        &self,
        node: &rpc::NodeInfo,
        key: &Key,
    ) -> std::result::Result<bool, String> {
        let ask = async {
            let mut c = self.mesh.agent(node).map_err(|s| s.message().to_string())?;
            let r = c.check_present(rpc::KeyRequest { key: key.to_string() }).await;
            r.map(|r| r.into_inner().present).map_err(|s| s.message().to_string())
        };
        let r = tokio::time::timeout(fetch::STALL, ask)
            .await
            .unwrap_or_else(|_| Err(format!("no answer in {:?}", fetch::STALL)));
        match &r {
            Ok(_) => self.mesh.agent_ok(node),
            Err(e) => self.mesh.agent_failed(node, e),
        }
        r.map_err(|e| format!("{}: {e}", node.name))
    }

    /// CHECKPRESENT. A cluster asks the best node the location log lists;
    /// a listed node that turns out not to have the content is struck from
    /// the log and the next one asked. When no listed node has it, the other
    /// healthy nodes are asked in parallel and the log repaired with what
    /// they hold. When the answer could only come from nodes that cannot be
    /// reached, it is an error, not "not present".
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
                    self.record(vec![(key.to_string(), node.uuid.clone(), false)]).await;
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

    pub async fn lock(&self, repo: &Repo, key: &Key) -> Result<Option<HeldLock>> {
        for node in self.holders(repo, key).await? {
            let Ok(mut c) = self.mesh.agent(&node) else { continue };
            let (tx, rx) = mpsc::channel(2);
            let _ = tx
                .send(rpc::LockRequest { msg: Some(lock_request::Msg::Key(key.to_string())) })
                .await;
            let mut replies = match c.lock_content(ReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    debug!(node = %node.name, "lock failed: {}", s.message());
                    continue;
                }
            };
            if let Ok(Some(r)) = replies.message().await
                && r.locked
            {
                // The reply stream ends when the agent lets go; keep it
                // drained so the lock stream stays healthy.
                tokio::spawn(async move { while let Ok(Some(_)) = replies.message().await {} });
                return Ok(Some(HeldLock { node: node.uuid, tx }));
            }
        }
        Ok(None)
    }

    /// The repository's clock (GETTIMESTAMP): the cluster's one clock, kept
    /// by the coordinator, whichever gateway or node is asked.
    pub async fn timestamp(&self, repo: &Repo) -> Result<u64> {
        Ok(self.cluster_clock_ms(repo).await?.0 / 1000)
    }

    /// The cluster clock in ms, the moment of our clock when the reply came,
    /// and the round trip: at that moment the cluster clock was at most the
    /// reading plus the round trip.
    async fn cluster_clock_ms(&self, repo: &Repo) -> Result<(u64, u64, u64)> {
        let sent = boottime_ms();
        let r = self
            .mesh
            .coordinator()
            .cluster_timestamp(rpc::ClusterTimestampRequest {
                cluster_uuid: repo.cluster_uuid().to_string(),
            })
            .await
            .map_err(|s| unavailable("coordinator", s))?
            .into_inner();
        let received = boottime_ms();
        Ok((r.timestamp_ms, received, received - sent))
    }

    /// REMOVE and REMOVE-BEFORE: every node of the repository, in parallel,
    /// including nodes the location log does not list.
    pub async fn remove(&self, repo: &Repo, key: &Key, before: Option<u64>) -> Result<Outcome> {
        // The deadline in our own clock, never later than the true one: the
        // client's deadline counts from the start of its second, and the
        // cluster clock may have moved on by a whole round trip.
        let deadline = match before {
            None => None,
            Some(secs) => {
                let (now_ms, received, rtt) = self.cluster_clock_ms(repo).await?;
                let left = secs.saturating_mul(1000).saturating_sub(now_ms + rtt);
                if left == 0 {
                    return Ok(Outcome {
                        ok: false,
                        plus: Vec::new(),
                        error: Some(DEADLINE_PASSED.into()),
                    });
                }
                Some(received + left)
            }
        };
        // Every node, also one that joined or moved a moment ago.
        let nodes = self.mesh.fresh(repo).await.nodes();
        let removes = nodes
            .iter()
            .map(|n| async move { (n.uuid.clone(), self.remove_on(n, key, deadline).await) });
        let results = join_all(removes).await;
        Metrics::add(&self.metrics.removes, 1);
        let removed: Vec<String> =
            results.iter().filter(|(_, r)| r.is_ok()).map(|(u, _)| u.clone()).collect();
        let error = results.iter().find_map(|(_, r)| r.as_ref().err().cloned());
        self.record(removed.iter().map(|u| (key.to_string(), u.clone(), false)).collect()).await;
        if let Some(e) = &error {
            Metrics::add(&self.metrics.removes_failed, 1);
            info!(%key, error = %e, "remove failed on some node");
        }
        Ok(Outcome { ok: error.is_none(), plus: Self::plus(repo, removed), error })
    }

    /// Removes from one node; `deadline` is in our clock.
    async fn remove_on(
        &self,
        n: &rpc::NodeInfo,
        key: &Key,
        deadline: Option<u64>,
    ) -> std::result::Result<(), String> {
        let failed = |s: Status| format!("{}: {}", n.name, s.message());
        let mut c = self.mesh.agent(n).map_err(failed)?;
        // One retry: the agent refuses a deadline tied to a clock run that
        // has since restarted, and then it is measured again.
        for attempt in 0..2 {
            let (before_ms, boot_id) = match deadline {
                None => (None, String::new()),
                Some(d) => {
                    match self.clocks.translate(&n.uuid, &mut c, d).await.map_err(failed)? {
                        Some(t) => (Some(t.before_ms), t.boot_id),
                        None => return Err(DEADLINE_PASSED.into()),
                    }
                }
            };
            match c.remove(rpc::RemoveRequest { key: key.to_string(), before_ms, boot_id }).await {
                Ok(r) => {
                    let r = r.into_inner();
                    return if r.removed {
                        Ok(())
                    } else {
                        Err(format!("{}: {}", n.name, r.error))
                    };
                }
                Err(s) if s.code() == tonic::Code::FailedPrecondition && attempt == 0 => {
                    debug!(node = %n.name, "agent clock restarted: {}", s.message());
                    self.clocks.forget(&n.uuid);
                }
                Err(s) => return Err(failed(s)),
            }
        }
        Err(format!("{}: its clock keeps restarting", n.name))
    }

    /// The nodes a PUT goes to, and how many of them must store it for the
    /// PUT to succeed.
    async fn put_targets(
        &self,
        repo: &Repo,
        key: &Key,
        file: Option<&str>,
    ) -> Result<(Vec<rpc::NodeInfo>, usize)> {
        match repo {
            Repo::Node(n) => Ok((vec![n.clone()], 1)),
            Repo::Cluster { uuid, .. } => {
                let nodes = &repo.nodes();
                let plan = self
                    .mesh
                    .coordinator()
                    .plan_put(rpc::PlanPutRequest {
                        cluster_uuid: uuid.clone(),
                        key: key.to_string(),
                        associated_file: file.unwrap_or_default().to_string(),
                    })
                    .await
                    .map_err(|s| unavailable("placement", s))?
                    .into_inner();
                let planned = plan.node_uuids;
                // A node that joined since our last topology refresh is in
                // the plan but not in our snapshot: refresh once to find it.
                let known = |nodes: &[rpc::NodeInfo]| {
                    planned.iter().all(|u| nodes.iter().any(|n| &n.uuid == u))
                };
                let nodes =
                    if known(nodes) { nodes.clone() } else { self.mesh.fresh(repo).await.nodes() };
                let targets = nodes.into_iter().filter(|n| planned.contains(&n.uuid)).collect();
                Ok((targets, (plan.min_copies as usize).max(1)))
            }
        }
    }

    /// Each target's resume offset, or None when it has the content already.
    async fn target_offsets(
        &self,
        targets: &[rpc::NodeInfo],
        key: &Key,
    ) -> Vec<(rpc::NodeInfo, Option<Option<u64>>)> {
        let asks = targets.iter().map(|n| async move {
            let r = async {
                let mut c = self.mesh.agent(n).ok()?;
                let r =
                    c.put_offset(rpc::KeyRequest { key: key.to_string() }).await.ok()?.into_inner();
                Some(if r.already_have { None } else { Some(r.offset) })
            }
            .await;
            (n.clone(), r)
        });
        join_all(asks).await
    }

    pub async fn put_offset(
        &self,
        repo: &Repo,
        key: &Key,
        file: Option<&str>,
    ) -> Result<PutOffset> {
        let (targets, min_copies) = self.put_targets(repo, key, file).await?;
        let offsets = self.target_offsets(&targets, key).await;
        let have: Vec<String> = offsets
            .iter()
            .filter(|(_, o)| matches!(o, Some(None)))
            .map(|(n, _)| n.uuid.clone())
            .collect();
        let wanting: Vec<u64> = offsets.iter().filter_map(|(_, o)| o.flatten()).collect();
        if wanting.is_empty() {
            if have.is_empty() {
                return Err(CoreError::Unavailable("no node can take the content now".into()));
            }
            if have.len() < min_copies {
                // Fewer copies than the cluster requires is no ALREADY-HAVE:
                // nothing is left to send, and the PUT then fails listing
                // the nodes that have it.
                return Ok(PutOffset::Offset(key.size.unwrap_or(0)));
            }
            return Ok(PutOffset::AlreadyHave(Self::plus(repo, have)));
        }
        Ok(PutOffset::Offset(wanting.into_iter().min().unwrap_or(0)))
    }

    /// PUT: streams the client's data (`length` bytes from `offset`) to every
    /// target at once, each from its own resume offset, through bounded
    /// channels so the slowest target sets the pace. A body that fails
    /// (client gone) closes every agent stream without an end marker, so each
    /// agent keeps its partial file for resume.
    pub async fn put<S, E>(
        &self,
        repo: &Repo,
        key: &Key,
        file: Option<&str>,
        offset: u64,
        length: u64,
        data_present: bool,
        mut body: S,
    ) -> Result<Outcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if let Some(size) = key.size
            && offset.checked_add(length) != Some(size)
            && !data_present
        {
            return Err(CoreError::BadRequest(format!(
                "offset {offset} + length {length} does not match the size {size} of {key}"
            )));
        }
        let started = std::time::Instant::now();
        let (targets, min_copies) = self.put_targets(repo, key, file).await?;
        let offsets = self.target_offsets(&targets, key).await;
        let placed = started.elapsed();
        let mut have = Vec::new();
        let mut feeds = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for (node, o) in offsets {
            match o {
                Some(None) => have.push(node.uuid.clone()),
                None => failed.push(format!("{}: unreachable", node.name)),
                Some(Some(_)) if data_present => {
                    failed.push(format!("{}: content not present", node.name));
                }
                Some(Some(own)) => {
                    // A node holding less than the client skipped cannot be fed.
                    let own = if own < offset || own > offset + length { offset } else { own };
                    let (tx, rx) = mpsc::channel::<rpc::PutRequest>(4);
                    let header = rpc::PutHeader {
                        key: key.to_string(),
                        offset: own,
                        associated_file: file.unwrap_or_default().to_string(),
                        length: length - (own - offset),
                        data_present: false,
                    };
                    let mut client =
                        self.mesh.agent(&node).map_err(|s| unavailable(&node.name, s))?;
                    let _ = tx
                        .send(rpc::PutRequest { msg: Some(put_request::Msg::Header(header)) })
                        .await;
                    let call =
                        tokio::spawn(async move { client.put(ReceiverStream::new(rx)).await });
                    feeds.push(Feed { node, skip: own - offset, tx: Some(tx), call });
                }
            }
        }

        let mut received: u64 = 0;
        let mut broken = None;
        if !feeds.is_empty() && !data_present {
            let mut pending = BytesMut::new();
            loop {
                let chunk = match body.next().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        broken = Some(e.to_string());
                        break;
                    }
                    None => break,
                };
                if received + chunk.len() as u64 > length {
                    broken = Some(format!("more than the {length} bytes promised"));
                    break;
                }
                // Coalesce small reads into chunk-sized messages.
                pending.extend_from_slice(&chunk);
                received += chunk.len() as u64;
                Metrics::add(&self.metrics.put_client_bytes, chunk.len() as u64);
                if pending.len() >= rpc::CHUNK_SIZE || received == length {
                    let data = pending.split().freeze();
                    let start = received - data.len() as u64;
                    let sent = fan_out(&mut feeds, start, data).await;
                    Metrics::add(&self.metrics.put_agent_bytes, sent);
                }
            }
            if !pending.is_empty() && broken.is_none() {
                let data = pending.split().freeze();
                let sent = fan_out(&mut feeds, received - data.len() as u64, data).await;
                Metrics::add(&self.metrics.put_agent_bytes, sent);
            }
        }

        let body_done = started.elapsed();
        let valid = broken.is_none() && (received == length || data_present);
        for f in feeds.iter_mut() {
            if let Some(tx) = f.tx.take()
                && broken.is_none()
            {
                let end = rpc::PutEnd { valid };
                let _ = tx.send(rpc::PutRequest { msg: Some(put_request::Msg::End(end)) }).await;
            }
            // Dropping the sender ends the agent's stream.
        }
        let mut stored = have.clone();
        for f in feeds {
            match f.call.await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    if r.stored {
                        stored.push(f.node.uuid.clone());
                    } else {
                        failed.push(format!("{}: {}", f.node.name, r.error));
                    }
                }
                Ok(Err(s)) => failed.push(format!("{}: {}", f.node.name, s.message())),
                Err(e) => failed.push(format!("{}: {e}", f.node.name)),
            }
        }
        Metrics::add(&self.metrics.puts, 1);
        if let Some(why) = &broken {
            Metrics::add(&self.metrics.puts_interrupted, 1);
            info!(%key, received, "upload from client ended early ({why}); partial data kept for resume");
        }
        let nodes_done = started.elapsed();
        self.record(stored.iter().map(|u| (key.to_string(), u.clone(), true)).collect()).await;
        // Where a PUT's time went, for operators chasing latency.
        debug!(%key, ?placed, ?body_done, ?nodes_done, recorded = ?started.elapsed(), "put timings");
        // Success takes the cluster's minimum number of copies; the nodes
        // that did store are reported either way.
        let ok = !stored.is_empty() && stored.len() >= min_copies;
        let error = if stored.is_empty() {
            Some(failed.join("; "))
        } else if !ok {
            Some(format!(
                "stored on {} node(s), but the cluster requires {min_copies}{}",
                stored.len(),
                if failed.is_empty() { String::new() } else { format!(" ({})", failed.join("; ")) }
            ))
        } else {
            None
        };
        if !ok {
            Metrics::add(&self.metrics.puts_failed, 1);
        }
        if !failed.is_empty() {
            warn!(%key, "put failed on: {}", failed.join("; "));
        }
        if !ok && !stored.is_empty() {
            warn!(%key, "put fell short of the cluster's minimum copies: stored on {} of {min_copies}", stored.len());
        }
        Ok(Outcome { ok, plus: Self::plus(repo, stored), error })
    }

    /// GET: from the best node holding the key (lowest cost, then least
    /// busy), continuing on another holder should that node fail (see
    /// `fetch`). A node addressed alone is asked whatever its health.
    pub async fn get(&self, repo: &Repo, key: &Key, offset: u64) -> Result<Option<Download>> {
        let sources = match repo {
            Repo::Node(n) => fetch::Sources::new(
                self.clone(),
                repo.clone(),
                key.clone(),
                vec![n.clone()],
                Vec::new(),
            ),
            Repo::Cluster { .. } => {
                let (listed, down) = self.listed(repo, key).await?;
                let down = down.iter().map(|n| format!("{} is down", n.name)).collect();
                fetch::Sources::new(self.clone(), repo.clone(), key.clone(), listed, down)
            }
        };
        fetch::download(sources, offset).await
    }
}

struct Feed {
    node: rpc::NodeInfo,
    /// Bytes of the client's stream this node already holds.
    skip: u64,
    tx: Option<mpsc::Sender<rpc::PutRequest>>,
    call: tokio::task::JoinHandle<std::result::Result<tonic::Response<rpc::PutReply>, Status>>,
}

/// Sends `data`, which starts at `start` in the client's stream, to every
/// live feed, minus what each one already holds.
async fn fan_out(feeds: &mut [Feed], start: u64, data: Bytes) -> u64 {
    let end = start + data.len() as u64;
    let sends = feeds.iter_mut().filter(|f| f.tx.is_some() && f.skip < end).map(|f| {
        let from = f.skip.saturating_sub(start) as usize;
        let part = data.slice(from..);
        async move {
            let tx = f.tx.as_ref().expect("filtered on live feeds");
            let len = part.len() as u64;
            if tx.send(rpc::PutRequest { msg: Some(put_request::Msg::Data(part)) }).await.is_err() {
                // The agent ended its side; its reply says why.
                f.tx = None;
                return 0;
            }
            len
        }
    });
    join_all(sends).await.into_iter().sum()
}
