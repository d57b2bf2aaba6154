//! PUT and PUTOFFSET: the targets the coordinator plans for a key, each
//! target's resume offset, and the client's data fanned out to all of them
//! at once.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, info, warn};

use super::locations::LocationChange;
use super::{Core, CoreError, Outcome, PutOffset, Result, stall, unavailable};
use crate::gateway::limits::call_limits;
use crate::gateway::mesh::Repo;
use crate::gateway::mesh::uploads::{CachedPlan, EMPTY_FRESH, Learned, PLAN_REUSE_MAX};
use crate::gateway::metrics::Metrics;
use crate::p2p::key::Key;
use crate::rpc::{self, put_request};

/// One PUT as a front-end received it: `length` bytes of the key's content
/// from `offset` follow, unless the client says the data is already present
/// (v4 DATA-PRESENT).
#[derive(Debug, Clone, Copy)]
pub struct PutRequest<'a> {
    pub repo: &'a Repo,
    pub key: &'a Key,
    pub file: Option<&'a str>,
    pub offset: u64,
    pub length: u64,
    pub data_present: bool,
}

/// Where a target of a PUT stands with the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Has,
    /// Lacks it; an upload would resume at `offset`.
    Wants {
        offset: u64,
    },
    Unreachable,
}

/// The nodes a PUT goes to, and how many must store it for success.
struct Targets {
    nodes: Vec<rpc::NodeInfo>,
    min_copies: usize,
    /// The cluster replicates through a chain of its nodes.
    chain: bool,
    /// The plan, when the coordinator allows reusing it for a moment.
    reuse: Option<CachedPlan>,
}

/// One target being fed the client's data.
pub(super) struct Feed {
    pub(super) node: rpc::NodeInfo,
    /// Bytes of the client's stream this node already holds.
    pub(super) skip: u64,
    pub(super) tx: Option<mpsc::Sender<rpc::PutRequest>>,
    /// Why the target was dropped mid-PUT (it made no progress).
    pub(super) stalled: Option<String>,
    /// None when the gateway stopped before the agent answered.
    pub(super) call: tokio::task::JoinHandle<Option<std::result::Result<rpc::PutReply, Status>>>,
    /// The head of a chain: the nodes it forwards to, in order.
    pub(super) chain: Vec<rpc::NodeInfo>,
}

/// How the nodes of one PUT ended up.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) stored: Vec<String>,
    pub(super) failed: Vec<String>,
    /// The failures that were a full disk (also in `failed`).
    no_space: Vec<String>,
    /// Targets that failed through no fault of the client's data: reported
    /// to the coordinator once the PUT is over.
    pub(super) faulty: Vec<(rpc::NodeInfo, String)>,
}

/// What came of the client's body.
struct Body {
    received: u64,
    /// Why the body ended before its promised length, if it did.
    broken: Option<String>,
}

impl Core {
    /// What an earlier request of this upload learned (see
    /// `mesh::uploads`), taken so that no other request uses it.
    fn learned(&self, repo: &Repo, key: &Key) -> Learned {
        self.mesh.uploads.take(repo.cluster_uuid(), &key.to_string())
    }

    /// The nodes a PUT goes to, and how many of them must store it for the
    /// PUT to succeed: the plan an earlier request of the upload was allowed
    /// to keep, or a new one from the coordinator.
    async fn put_targets(
        &self,
        repo: &Repo,
        key: &Key,
        file: Option<&str>,
        learned: &Learned,
    ) -> Result<Targets> {
        let Repo::Cluster { uuid, .. } = repo else {
            return Ok(Targets { nodes: repo.nodes(), min_copies: 1, chain: false, reuse: None });
        };
        let (planned, min_copies, replication, reuse) = match learned.plan() {
            Some(p) => (p.node_uuids.clone(), p.min_copies, p.replication, Some(p.clone())),
            None => {
                let req = rpc::PlanPutRequest {
                    cluster_uuid: uuid.clone(),
                    key: key.to_string(),
                    associated_file: file.unwrap_or_default().to_string(),
                };
                let plan = self
                    .mesh
                    .control()
                    .plan_put(req)
                    .await
                    .map_err(|s| unavailable("placement", s))?;
                let reuse = (plan.reusable_ms > 0).then(|| {
                    let ttl = Duration::from_millis(plan.reusable_ms.into()).min(PLAN_REUSE_MAX);
                    CachedPlan {
                        node_uuids: plan.node_uuids.clone(),
                        min_copies: plan.min_copies,
                        replication: plan.replication,
                        until: Instant::now() + ttl,
                    }
                });
                (plan.node_uuids, plan.min_copies, plan.replication, reuse)
            }
        };
        // A node that joined since our last topology refresh is in the plan
        // but not in our snapshot: refresh once to find it.
        let known =
            |nodes: &[rpc::NodeInfo]| planned.iter().all(|u| nodes.iter().any(|n| &n.uuid == u));
        let nodes = repo.nodes();
        let nodes = if known(&nodes) { nodes } else { self.mesh.fresh(repo).await.nodes() };
        let nodes = nodes.into_iter().filter(|n| planned.contains(&n.uuid)).collect();
        let chain = replication == rpc::Replication::Chain as i32;
        Ok(Targets { nodes, min_copies: (min_copies as usize).max(1), chain, reuse })
    }

    /// Each target's state, asked in parallel. A target an earlier request
    /// of this upload found holding nothing of the key a moment ago is not
    /// asked: it wants the content from offset 0, an offset no agent
    /// refuses.
    async fn target_states(
        &self,
        targets: &[rpc::NodeInfo],
        key: &Key,
        learned: &Learned,
    ) -> Vec<(rpc::NodeInfo, TargetState)> {
        let asks = targets.iter().map(|n| async move {
            if learned.empty_on(&n.uuid) {
                return (n.clone(), TargetState::Wants { offset: 0 });
            }
            let r = async {
                let c = self.mesh.agent(n).ok()?;
                let r = c.put_offset(key.to_string()).await.ok()?;
                Some(if r.already_have {
                    TargetState::Has
                } else {
                    TargetState::Wants { offset: r.offset }
                })
            };
            (n.clone(), r.await.unwrap_or(TargetState::Unreachable))
        });
        join_all(asks).await
    }

    /// PUTOFFSET: where the client should start sending, or ALREADY-HAVE
    /// when enough targets hold the content. What it learns (a reusable
    /// plan, the targets holding nothing) is kept for the PUT that follows.
    #[tracing::instrument(name = "putoffset", skip_all, fields(repo = %repo.name(), key = %key))]
    pub async fn put_offset(
        &self,
        repo: &Repo,
        key: &Key,
        file: Option<&str>,
    ) -> Result<PutOffset> {
        let learned = self.learned(repo, key);
        let targets = self.put_targets(repo, key, file, &learned).await?;
        let states = self.target_states(&targets.nodes, key, &learned).await;
        // What the nodes said now is believed for a moment; what an earlier
        // request learned, no longer than it was.
        let fresh = Instant::now() + EMPTY_FRESH;
        let empty = states
            .iter()
            .filter(|(_, s)| *s == TargetState::Wants { offset: 0 })
            .map(|(n, _)| {
                let until = learned.empty.get(&n.uuid).copied().unwrap_or(fresh);
                (n.uuid.clone(), until)
            })
            .collect();
        let kept = Learned { plan: targets.reuse.clone(), empty };
        self.mesh.uploads.keep(repo.cluster_uuid(), &key.to_string(), kept);
        let have: Vec<String> = states
            .iter()
            .filter(|(_, s)| *s == TargetState::Has)
            .map(|(n, _)| n.uuid.clone())
            .collect();
        let wanting = states.iter().filter_map(|(_, s)| match s {
            TargetState::Wants { offset } => Some(*offset),
            _ => None,
        });
        if let Some(lowest) = wanting.min() {
            return Ok(PutOffset::Offset(lowest));
        }
        if have.is_empty() {
            return Err(CoreError::Unavailable("no node can take the content now".into()));
        }
        if have.len() < targets.min_copies {
            // Fewer copies than the cluster requires is no ALREADY-HAVE:
            // nothing is left to send, and the PUT then fails listing the
            // nodes that have it.
            return Ok(PutOffset::Offset(key.size.unwrap_or(0)));
        }
        Ok(PutOffset::AlreadyHave(Self::plus(repo, have)))
    }

    /// PUT: streams the client's data (`length` bytes from `offset`) to every
    /// target at once, each from its own resume offset, through a bounded
    /// buffer per target (`--put-target-buffer`): a slow target sets the pace
    /// once it is that far behind, but one that then takes nothing for the
    /// stall timeout is dropped and the PUT goes on with the others. A body that fails
    /// (client gone) closes every agent stream without an end marker, so each
    /// agent keeps its partial file for resume.
    #[tracing::instrument(name = "put", skip_all, fields(repo = %req.repo.name(), key = %req.key))]
    pub async fn put<S, E>(&self, req: PutRequest<'_>, body: S) -> Result<Outcome>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key = req.key;
        if let Some(size) = key.size
            && req.offset.checked_add(req.length) != Some(size)
            && !req.data_present
        {
            return Err(CoreError::BadRequest(format!(
                "offset {} + length {} does not match the size {size} of {key}",
                req.offset, req.length
            )));
        }
        let started = Instant::now();
        let mut learned = self.learned(req.repo, key);
        if req.offset != 0 || req.data_present {
            // Only an upload from the start may skip asking the targets.
            learned.empty.clear();
        }
        let targets = self.put_targets(req.repo, key, req.file, &learned).await?;
        let states = self.target_states(&targets.nodes, key, &learned).await;
        let placed = started.elapsed();
        let (mut tally, mut feeds) = self.open_feeds(&req, states, targets.chain).await?;
        let body = if feeds.is_empty() || req.data_present {
            Body { received: 0, broken: None }
        } else {
            self.pump_body(&mut feeds, req.length, body).await
        };
        let body_done = started.elapsed();
        let valid = body.broken.is_none() && (body.received == req.length || req.data_present);
        finish(&mut feeds, &body, valid).await;
        collect(feeds, &mut tally).await;
        self.report_faulty(&mut tally, &body, valid);
        Metrics::add(&self.metrics.puts, 1);
        if let Some(why) = &body.broken {
            Metrics::add(&self.metrics.puts_interrupted, 1);
            let received = body.received;
            info!(%key, received, "upload from client ended early ({why}); partial data kept for resume");
        }
        let nodes_done = started.elapsed();
        let changes = tally.stored.iter().map(|u| LocationChange::present(key, u)).collect();
        let recorded = self.record(changes).await;
        // Where a PUT's time went, for operators chasing latency.
        debug!(%key, ?placed, ?body_done, ?nodes_done, recorded = ?started.elapsed(), "put timings");
        if let Err(e) = recorded {
            return Ok(self.unrecorded(req.repo, key, tally, e));
        }
        Ok(self.put_outcome(req.repo, key, tally, targets.min_copies))
    }

    /// A PUT whose copies the location log does not know of is no success:
    /// nobody could find them. The content stays on the nodes (they are
    /// still named), and a retry finds it there and records it.
    fn unrecorded(&self, repo: &Repo, key: &Key, tally: Tally, e: CoreError) -> Outcome {
        Metrics::add(&self.metrics.puts_failed, 1);
        Metrics::add(&self.metrics.puts_unrecorded, 1);
        warn!(%key, stored = tally.stored.len(), "put stored but not recorded: {e}");
        let error = Some(format!(
            "stored on {} node(s), but {e}; retry once the coordinator is reachable",
            tally.stored.len()
        ));
        Outcome { ok: false, plus: Self::plus(repo, tally.stored), error, no_space: None }
    }

    /// Starts an upload on every target that wants the content (or one
    /// through all of them, in `chain` mode); the others are counted as
    /// stored or failed already.
    async fn open_feeds(
        &self,
        req: &PutRequest<'_>,
        states: Vec<(rpc::NodeInfo, TargetState)>,
        chain: bool,
    ) -> Result<(Tally, Vec<Feed>)> {
        let mut tally = Tally::default();
        let mut feeds = Vec::new();
        let chained = if chain { self.open_chain(req, &states).await? } else { None };
        if let Some(feed) = chained {
            feeds.push(feed);
        }
        for (node, state) in states {
            if feeds.iter().any(|f| f.node.uuid == node.uuid || f.chain.contains(&node)) {
                continue;
            }
            match state {
                TargetState::Has => tally.stored.push(node.uuid.clone()),
                TargetState::Unreachable => {
                    tally.failed.push(format!("{}: unreachable", node.name));
                    tally.faulty.push((node, "unreachable for PUTOFFSET".into()));
                }
                TargetState::Wants { .. } if req.data_present => {
                    tally.failed.push(format!("{}: content not present", node.name));
                }
                TargetState::Wants { offset } => {
                    feeds.push(self.open_feed(req, node, offset).await?)
                }
            }
        }
        Ok((tally, feeds))
    }

    /// Starts the upload to one target that holds `own` bytes already.
    async fn open_feed(&self, req: &PutRequest<'_>, node: rpc::NodeInfo, own: u64) -> Result<Feed> {
        let (offset, length) = (req.offset, req.length);
        // A node holding less than the client skipped cannot be fed.
        let own = if own < offset || own > offset + length { offset } else { own };
        // Messages are at most a chunk each (`pump_body`).
        let chunks = (call_limits().put_buffer / rpc::CHUNK_SIZE).max(1);
        let (tx, rx) = mpsc::channel::<rpc::PutRequest>(chunks);
        let header = rpc::PutHeader {
            key: req.key.to_string(),
            offset: own,
            associated_file: req.file.unwrap_or_default().to_string(),
            length: length - (own - offset),
            ..Default::default()
        };
        let client = self.mesh.agent(&node).map_err(|s| unavailable(&node.name, s))?;
        let _ = tx.send(rpc::PutRequest { msg: Some(put_request::Msg::Header(header)) }).await;
        let call = self.tasks.spawn(client.put(rx));
        Ok(Feed { node, skip: own - offset, tx: Some(tx), stalled: None, call, chain: vec![] })
    }

    /// Reads the client's body and fans it out, coalescing small reads into
    /// chunk-sized messages. Stops at the first error or at more data than
    /// was promised.
    async fn pump_body<S, E>(&self, feeds: &mut [Feed], length: u64, mut body: S) -> Body
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut received: u64 = 0;
        let mut pending = BytesMut::new();
        let broken = loop {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => break Some(e.to_string()),
                None => break None,
            };
            if received + chunk.len() as u64 > length {
                break Some(format!("more than the {length} bytes promised"));
            }
            pending.extend_from_slice(&chunk);
            received += chunk.len() as u64;
            Metrics::add(&self.metrics.put_client_bytes, chunk.len() as u64);
            // Messages of at most a chunk, so each target's buffer, counted
            // in messages, holds a known number of bytes.
            while pending.len() >= rpc::CHUNK_SIZE || (received == length && !pending.is_empty()) {
                let n = pending.len().min(rpc::CHUNK_SIZE);
                let start = received - pending.len() as u64;
                let sent = fan_out(feeds, start, pending.split_to(n).freeze()).await;
                Metrics::add(&self.metrics.put_agent_bytes, sent);
            }
        };
        if !pending.is_empty() && broken.is_none() {
            let data = pending.split().freeze();
            let sent = fan_out(feeds, received - data.len() as u64, data).await;
            Metrics::add(&self.metrics.put_agent_bytes, sent);
        }
        Body { received, broken }
    }

    /// Reports the targets that failed to the coordinator (counted, sent in
    /// the background). Not when the client's body broke or was marked
    /// invalid: then the agents' refusals are the client's doing.
    fn report_faulty(&self, tally: &mut Tally, body: &Body, valid: bool) {
        let faulty = std::mem::take(&mut tally.faulty);
        if body.broken.is_some() || !valid {
            return;
        }
        for (node, why) in faulty {
            self.mesh.put_failed(&node, &why);
        }
    }

    /// Success takes the cluster's minimum number of copies; the nodes that
    /// did store are reported either way.
    fn put_outcome(&self, repo: &Repo, key: &Key, tally: Tally, min_copies: usize) -> Outcome {
        let Tally { stored, failed, no_space, .. } = tally;
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
        let no_space = (stored.is_empty() && !no_space.is_empty()).then(|| no_space.join("; "));
        Outcome { ok, plus: Self::plus(repo, stored), error, no_space }
    }
}

/// Ends every feed: with the client's verdict when the body arrived whole,
/// without an end marker when it broke, so the agents keep partial data.
async fn finish(feeds: &mut [Feed], body: &Body, valid: bool) {
    let ends = feeds.iter_mut().map(|f| async move {
        if let Some(tx) = f.tx.take()
            && body.broken.is_none()
        {
            let end = rpc::PutEnd { valid };
            let end = rpc::PutRequest { msg: Some(put_request::Msg::End(end)) };
            if let Err(why) = send_or_stall(&tx, end).await {
                f.stalled = Some(why);
            }
        }
        // Dropping the sender ends the agent's stream.
    });
    join_all(ends).await;
}

/// Sends one message to a target, waiting for room at most the stall
/// timeout; Err says why the target is to be dropped.
async fn send_or_stall(
    tx: &mpsc::Sender<rpc::PutRequest>,
    msg: rpc::PutRequest,
) -> std::result::Result<(), String> {
    let msg = match tx.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
        Err(mpsc::error::TrySendError::Full(msg)) => msg,
    };
    let limit = stall();
    match tokio::time::timeout(limit, tx.send(msg)).await {
        // A closed stream is the agent ending its side: its reply says why.
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "took no data for {} s with {} MiB queued; dropped from the PUT (--stall-timeout)",
            limit.as_secs_f64(),
            call_limits().put_buffer >> 20
        )),
    }
}

/// Waits for every target's answer, at once. A target dropped as stalled
/// is not waited for; the others get the node deadline plus the stall
/// timeout to drain what is queued for them and answer.
async fn collect(feeds: Vec<Feed>, tally: &mut Tally) {
    let answers = feeds.into_iter().map(|mut f| async move {
        // A chain's head answers once every node after it has.
        let limit = call_limits().node + stall() * (1 + f.chain.len() as u32);
        if f.stalled.is_some() {
            f.call.abort();
            return (f, None);
        }
        let r = tokio::time::timeout(limit, &mut f.call).await;
        if r.is_err() {
            f.call.abort();
        }
        (f, Some(r))
    });
    for (mut f, r) in join_all(answers).await {
        let chain = std::mem::take(&mut f.chain);
        if !chain.is_empty() {
            let results = match &r {
                Some(Ok(Ok(Some(Ok(reply))))) => Some(reply.chain.clone()),
                _ => None,
            };
            super::chain::tally_chain(tally, &chain, results, &f.node.name);
        }
        let limit = call_limits().node + stall() * (1 + chain.len() as u32);
        let r = match (r, &f.stalled) {
            (_, Some(why)) => {
                warn!(node = %f.node.name, "put target stalled: {why}");
                tally.failed.push(format!("{}: {why}", f.node.name));
                tally.faulty.push((f.node, why.clone()));
                continue;
            }
            (Some(Ok(r)), None) => r,
            (Some(Err(_)), None) | (None, None) => {
                let why = format!("no answer within {} s of the end of the data", limit.as_secs());
                tally.failed.push(format!("{}: {why}", f.node.name));
                tally.faulty.push((f.node, why));
                continue;
            }
        };
        match r {
            Ok(Some(Ok(r))) if r.stored => tally.stored.push(f.node.uuid.clone()),
            Ok(Some(Ok(r))) => tally.failed.push(format!("{}: {}", f.node.name, r.error)),
            Ok(Some(Err(s))) => {
                // The agent names itself in a full-disk message already.
                if s.code() == tonic::Code::ResourceExhausted {
                    tally.no_space.push(s.message().to_string());
                }
                tally.failed.push(format!("{}: {}", f.node.name, s.message()));
                if node_at_fault(&s) {
                    tally.faulty.push((f.node, s.message().to_string()));
                }
            }
            Ok(None) => tally.failed.push(format!("{}: the gateway is stopping", f.node.name)),
            Err(e) => tally.failed.push(format!("{}: {e}", f.node.name)),
        }
    }
}

/// Whether an agent's error on an upload is the node's failure rather than
/// a refusal of the request: a bad request or another upload of the key
/// still under way says nothing about the node's health.
fn node_at_fault(s: &Status) -> bool {
    use tonic::Code;
    !matches!(
        s.code(),
        Code::InvalidArgument | Code::Aborted | Code::Cancelled | Code::FailedPrecondition
    )
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
            if tx.is_closed() {
                // The agent ended its side; its reply says why.
                f.tx = None;
                return 0;
            }
            let len = part.len() as u64;
            let msg = rpc::PutRequest { msg: Some(put_request::Msg::Data(part)) };
            if let Err(why) = send_or_stall(tx, msg).await {
                // Dropping the sender ends the target's stream; its call
                // is abandoned in `collect`.
                f.tx = None;
                f.stalled = Some(why);
                return 0;
            }
            len
        }
    });
    join_all(sends).await.into_iter().sum()
}
