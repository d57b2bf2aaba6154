//! GET from the nodes holding a key. The client is promised a length up
//! front (P2P over HTTP sends `X-git-annex-data-length` before the data), so
//! when the serving node fails, before or during the transfer, the rest comes
//! from another holder starting at the same offset: the client still gets
//! exactly the promised bytes. Only checksum keys continue elsewhere; under a
//! WORM or URL key two nodes may hold different content, and such a GET
//! fails as it would have from one node.

use std::collections::HashSet;

use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info, warn};

use super::locations::LocationChange;
use super::{Core, CoreError, Download, Result, STALL};
use crate::gateway::mesh::Repo;
use crate::gateway::mesh::api::Replies;
use crate::gateway::metrics::Metrics;
use crate::gateway::select::Busy;
use crate::p2p::key::Key;
use crate::rpc::{self, get_reply};

impl Core {
    /// GET: from the best node holding the key (lowest cost, then least
    /// busy), continuing on another holder should that node fail. A node
    /// addressed alone is asked whatever its health.
    pub async fn get(&self, repo: &Repo, key: &Key, offset: u64) -> Result<Option<Download>> {
        let (candidates, errors) = match repo {
            Repo::Node(n) => (vec![n.clone()], Vec::new()),
            Repo::Cluster { .. } => {
                let (listed, down) = self.listed(repo, key).await?;
                (listed, down.iter().map(|n| format!("{} is down", n.name)).collect())
            }
        };
        let sources = Sources::new(self.clone(), repo.clone(), key.clone(), candidates, errors);
        download(sources, offset).await
    }
}

/// One node's GET stream.
struct Source {
    node: rpc::NodeInfo,
    replies: Replies<rpc::GetReply>,
    _busy: Busy,
}

/// The holders of a key and which of them were tried.
struct Sources {
    core: Core,
    repo: Repo,
    key: Key,
    candidates: Vec<rpc::NodeInfo>,
    tried: HashSet<String>,
    /// Whether the healthy nodes the location log does not list were asked
    /// already (they are asked once, when the listed ones are used up).
    probed: bool,
    /// Why nodes could not serve, for the final error.
    errors: Vec<String>,
}

impl Sources {
    /// `candidates` are the holders to try first; `errors` says why others
    /// that should hold the key cannot be asked.
    fn new(
        core: Core,
        repo: Repo,
        key: Key,
        candidates: Vec<rpc::NodeInfo>,
        errors: Vec<String>,
    ) -> Sources {
        Sources { core, repo, key, candidates, tried: HashSet::new(), probed: false, errors }
    }

    /// Starts a GET at `offset` on the best holder not tried yet. `expect`
    /// is the length the stream must have (when continuing a download).
    async fn open(&mut self, offset: u64, expect: Option<u64>) -> Result<Option<(Source, u64)>> {
        loop {
            let untried: Vec<_> =
                self.candidates.iter().filter(|n| !self.tried.contains(&n.uuid)).cloned().collect();
            let Some((node, busy)) = self.core.mesh.pick(&untried) else {
                if self.probed || !self.repo.is_cluster() {
                    return Ok(None);
                }
                self.probed = true;
                let others: Vec<_> = self
                    .repo
                    .nodes()
                    .into_iter()
                    .filter(|n| n.healthy && !self.tried.contains(&n.uuid))
                    .filter(|n| !self.candidates.iter().any(|c| c.uuid == n.uuid))
                    .collect();
                let found = self.core.probe(&others, &self.key).await;
                if !found.is_empty() {
                    debug!(key = %self.key, "found on nodes the location log did not list");
                }
                self.candidates.extend(found);
                continue;
            };
            self.tried.insert(node.uuid.clone());
            match tokio::time::timeout(STALL, self.start(&node, offset)).await {
                Err(_) => self.failed(&node, &format!("no answer in {STALL:?}")),
                Ok(Ok((replies, length))) => match expect {
                    Some(l) if l != length => {
                        // Same key, different size: not the same content.
                        warn!(key = %self.key, node = %node.name, "offers {length} bytes from offset {offset}, not {l}");
                        self.errors.push(format!("{}: holds content of another size", node.name));
                    }
                    _ => {
                        self.core.mesh.agent_ok(&node);
                        return Ok(Some((Source { node, replies, _busy: busy }, length)));
                    }
                },
                Ok(Err(Start::BadOffset(m))) if expect.is_none() => {
                    return Err(CoreError::BadRequest(m));
                }
                Ok(Err(Start::BadOffset(m))) => self.errors.push(format!("{}: {m}", node.name)),
                Ok(Err(Start::Absent)) => {
                    // The location log was wrong about this node.
                    debug!(key = %self.key, node = %node.name, "not present after all");
                    self.core.record(vec![LocationChange::absent(&self.key, &node.uuid)]).await;
                }
                Ok(Err(Start::Failed(why))) => self.failed(&node, &why),
            }
        }
    }

    fn failed(&mut self, node: &rpc::NodeInfo, why: &str) {
        self.core.mesh.agent_failed(node, why);
        self.errors.push(format!("{}: {why}", node.name));
    }

    /// Asks `node` for the key from `offset`; returns the stream and the
    /// length its header announces.
    async fn start(
        &self,
        node: &rpc::NodeInfo,
        offset: u64,
    ) -> std::result::Result<(Replies<rpc::GetReply>, u64), Start> {
        let c = self.core.mesh.agent(node).map_err(|s| Start::Failed(s.message().to_string()))?;
        let req =
            rpc::GetRequest { key: self.key.to_string(), offset, associated_file: String::new() };
        let mut replies = match c.get(req).await {
            Ok(r) => r,
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                return Err(Start::BadOffset(s.message().to_string()));
            }
            Err(s) if s.code() == tonic::Code::NotFound => return Err(Start::Absent),
            Err(s) => return Err(Start::Failed(s.message().to_string())),
        };
        match replies.next().await {
            Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::Header(h)) })) => {
                Ok((replies, h.length))
            }
            Some(Ok(_)) | None => {
                Err(Start::Failed("the GET stream did not start with a header".into()))
            }
            Some(Err(s)) => Err(Start::Failed(s.message().to_string())),
        }
    }
}

enum Start {
    /// The node refused the offset (beyond the object's size).
    BadOffset(String),
    Absent,
    Failed(String),
}

/// Starts the download: the first holder that answers sets the length.
async fn download(mut sources: Sources, offset: u64) -> Result<Option<Download>> {
    let Some((source, length)) = sources.open(offset, None).await? else {
        if sources.errors.is_empty() {
            return Ok(None);
        }
        return Err(CoreError::Unavailable(format!(
            "cannot get {}: no node holding it can serve it ({})",
            sources.key,
            sources.errors.join("; ")
        )));
    };
    let core = sources.core.clone();
    Metrics::add(&core.metrics.gets, 1);
    info!(key = %sources.key, node = %source.node.name, offset, length, "GET");
    let node = source.node.uuid.clone();
    let failover = sources.key.is_checksum();
    let pump = Pump { sources, source: Some(source), pos: offset, end: offset + length, failover };
    let body =
        futures::stream::unfold(pump, |mut p| async move { p.next().await.map(|item| (item, p)) });
    Ok(Some(Download { length, node, body: body.boxed() }))
}

/// Moves one download's bytes from its current node to the client.
struct Pump {
    sources: Sources,
    source: Option<Source>,
    pos: u64,
    end: u64,
    failover: bool,
}

impl Pump {
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            if self.pos == self.end {
                // Everything promised is sent; the node's end marker adds
                // nothing, so the stream (and the node's slot) goes now.
                self.source = None;
                return None;
            }
            let src = self.source.as_mut()?;
            let why = match tokio::time::timeout(STALL, src.replies.next()).await {
                Ok(Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::Data(d)) }))) => {
                    if d.len() as u64 > self.end - self.pos {
                        "sent more than it announced".to_string()
                    } else {
                        self.pos += d.len() as u64;
                        Metrics::add(&self.sources.core.metrics.get_bytes, d.len() as u64);
                        return Some(Ok(d));
                    }
                }
                Ok(Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::End(e)) }))) if e.valid => {
                    "ended the data early".to_string()
                }
                Ok(Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::End(_)) }))) => {
                    "reported the data invalid".to_string()
                }
                Ok(Some(Ok(_))) => "sent an unexpected message".to_string(),
                Ok(None) => "closed the stream early".to_string(),
                Ok(Some(Err(s))) => format!("failed: {}", s.message()),
                Err(_) => format!("sent nothing for {STALL:?}"),
            };
            let failed = self.source.take().expect("a source is being read").node;
            self.sources.failed(&failed, &why);
            let key = &self.sources.key;
            if !self.failover {
                warn!(%key, node = %failed.name, at = self.pos, "GET failed: the node {why}; {key} is not a checksum key, so no other node may continue it");
                return Some(Err(std::io::Error::other(format!("{} {why}", failed.name))));
            }
            info!(%key, node = %failed.name, at = self.pos, "the node {why}; continuing the GET on another node");
            match self.sources.open(self.pos, Some(self.end - self.pos)).await {
                Ok(Some((next, _))) => {
                    info!(key = %self.sources.key, node = %next.node.name, at = self.pos, "GET continues");
                    Metrics::add(&self.sources.core.metrics.get_failovers, 1);
                    self.source = Some(next);
                }
                Ok(None) | Err(_) => {
                    let errors = self.sources.errors.join("; ");
                    warn!(key = %self.sources.key, at = self.pos, "GET failed: no other node could continue it ({errors})");
                    return Some(Err(std::io::Error::other(format!(
                        "no node could continue: {errors}"
                    ))));
                }
            }
        }
    }
}
