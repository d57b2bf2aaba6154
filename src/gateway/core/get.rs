//! GET from the nodes holding a key. The client is promised a length up
//! front (P2P over HTTP sends `X-git-annex-data-length` before the data), so
//! when the serving node fails, before or during the transfer, the rest comes
//! from another holder starting at the same offset: the client still gets
//! exactly the promised bytes. Only checksum keys continue elsewhere; under a
//! WORM or URL key two nodes may hold different content, and such a GET
//! fails as it would have from one node.
//!
//! No client receives every promised byte before the node vouches for them:
//! the last chunk waits for the node's end marker. A node that finds its
//! copy corrupt (DATA_LOSS before any data, or an invalid end marker) is
//! struck from the location log; before any of its bytes went out, the next
//! holder serves instead, after that the download fails.

use std::collections::HashSet;

use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info, warn};

use super::locations::LocationChange;
use super::{Core, CoreError, Download, Result, stall};
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
    #[tracing::instrument(name = "get", skip_all, fields(repo = %repo.name(), key = %key))]
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
            match tokio::time::timeout(stall(), self.start(&node, offset)).await {
                Err(_) => self.failed(&node, &format!("no answer in {:?}", stall())),
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
                    self.core.repair(vec![LocationChange::absent(&self.key, &node.uuid)]).await;
                }
                Ok(Err(Start::Corrupt(why))) => {
                    // Found before any byte was sent: as good as absent,
                    // and the next holder serves the client.
                    self.core.mesh.agent_ok(&node);
                    self.core.corrupt_copy(&node, &self.key, &why).await;
                    self.errors.push(format!("{}: its copy is corrupt", node.name));
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
            Err(s) => return Err(Start::failed(s)),
        };
        match replies.next().await {
            Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::Header(h)) })) => {
                Ok((replies, h.length))
            }
            Some(Ok(_)) | None => {
                Err(Start::Failed("the GET stream did not start with a header".into()))
            }
            Some(Err(s)) => Err(Start::failed(s)),
        }
    }
}

enum Start {
    /// The node refused the offset (beyond the object's size).
    BadOffset(String),
    Absent,
    /// The node found its copy corrupt before sending any of it.
    Corrupt(String),
    Failed(String),
}

impl Start {
    fn failed(s: tonic::Status) -> Start {
        match s.code() {
            tonic::Code::DataLoss => Start::Corrupt(s.message().to_string()),
            _ => Start::Failed(s.message().to_string()),
        }
    }
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
    let pump = Pump::new(sources, source, offset, offset + length, failover);
    let body =
        futures::stream::unfold(pump, |mut p| async move { p.next().await.map(|item| (item, p)) });
    Ok(Some(Download { length, node, body: body.boxed() }))
}

/// Moves one download's bytes from its current node to the client. The
/// chunk that completes the download is withheld until the node vouches for
/// the content (its end marker says valid), so a client never holds every
/// promised byte of content the node found corrupt; one chunk is all it
/// holds back.
struct Pump {
    sources: Sources,
    source: Option<Source>,
    /// Bytes received from nodes so far, sent to the client or held.
    pos: u64,
    end: u64,
    failover: bool,
    /// The chunk completing the download, until the node vouches for it.
    held: Option<Bytes>,
    /// Bytes the current node sent in this download.
    from_source: u64,
}

/// Why the current node stopped serving a download.
enum Stop {
    /// It failed or misbehaved; another holder may continue.
    Failed(String),
    /// It reported its copy corrupt.
    Corrupt(String),
}

impl Pump {
    fn new(sources: Sources, source: Source, pos: u64, end: u64, failover: bool) -> Pump {
        Pump { sources, source: Some(source), pos, end, failover, held: None, from_source: 0 }
    }

    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let src = self.source.as_mut()?;
            let stop = match tokio::time::timeout(stall(), src.replies.next()).await {
                Ok(Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::Data(d)) }))) => {
                    match self.take(d) {
                        Ok(Some(d)) => return Some(Ok(d)),
                        Ok(None) => continue,
                        Err(stop) => stop,
                    }
                }
                Ok(Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::End(e)) }))) if e.valid => {
                    if self.pos == self.end {
                        // Vouched for: the last chunk may go, and with the
                        // stream the node's slot.
                        self.source = None;
                        return self.held.take().map(|d| Ok(self.sent(d)));
                    }
                    Stop::Failed("ended the data early".into())
                }
                Ok(Some(Ok(rpc::GetReply { msg: Some(get_reply::Msg::End(_)) }))) => {
                    Stop::Corrupt("reported the data invalid".into())
                }
                Ok(Some(Ok(_))) => Stop::Failed("sent an unexpected message".into()),
                Ok(None) => Stop::Failed("closed the stream early".into()),
                Ok(Some(Err(s))) if s.code() == tonic::Code::DataLoss => {
                    Stop::Corrupt(format!("found its copy corrupt: {}", s.message()))
                }
                Ok(Some(Err(s))) => Stop::Failed(format!("failed: {}", s.message())),
                Err(_) => Stop::Failed(format!("sent nothing for {:?}", stall())),
            };
            if let Some(e) = self.stopped(stop).await {
                return Some(Err(e));
            }
        }
    }

    /// Takes a chunk from the node: Some to pass on now, None when it is
    /// the last and held until the node vouches for it.
    fn take(&mut self, d: Bytes) -> std::result::Result<Option<Bytes>, Stop> {
        let len = d.len() as u64;
        if len > self.end - self.pos {
            return Err(Stop::Failed("sent more than it announced".into()));
        }
        self.pos += len;
        self.from_source += len;
        if self.pos < self.end {
            return Ok(Some(self.sent(d)));
        }
        if !d.is_empty() {
            self.held = Some(d);
        }
        Ok(None)
    }

    fn sent(&self, d: Bytes) -> Bytes {
        Metrics::add(&self.sources.core.metrics.get_bytes, d.len() as u64);
        d
    }

    /// The current node stopped serving: continues on another holder when
    /// that can still give the client good content, or says why not.
    async fn stopped(&mut self, stop: Stop) -> Option<std::io::Error> {
        let node = self.source.take().expect("a source is being read").node;
        let key = self.sources.key.clone();
        let why = match stop {
            Stop::Failed(why) => {
                self.sources.failed(&node, &why);
                why
            }
            Stop::Corrupt(why) => {
                self.sources.core.corrupt_copy(&node, &key, &why).await;
                self.sources.errors.push(format!("{}: {why}", node.name));
                if self.from_source > 0 {
                    // The client has bytes of the corrupt copy already, and
                    // no other node can make them good.
                    warn!(%key, node = %node.name, at = self.pos, "GET failed: the node {why} after sending part of it");
                    return Some(std::io::Error::other(format!(
                        "{} {why}: the data sent is not valid",
                        node.name
                    )));
                }
                why
            }
        };
        if self.pos == self.end {
            // Every byte came, but the node did not vouch for them.
            warn!(%key, node = %node.name, "GET failed: the node {why} before confirming the data valid");
            return Some(std::io::Error::other(format!(
                "{} {why} before confirming the data valid",
                node.name
            )));
        }
        if !self.failover {
            warn!(%key, node = %node.name, at = self.pos, "GET failed: the node {why}; {key} is not a checksum key, so no other node may continue it");
            return Some(std::io::Error::other(format!("{} {why}", node.name)));
        }
        info!(%key, node = %node.name, at = self.pos, "the node {why}; continuing the GET on another node");
        match self.sources.open(self.pos, Some(self.end - self.pos)).await {
            Ok(Some((next, _))) => {
                info!(%key, node = %next.node.name, at = self.pos, "GET continues");
                Metrics::add(&self.sources.core.metrics.get_failovers, 1);
                self.sources.core.mesh.failed_over(&node);
                self.source = Some(next);
                self.from_source = 0;
                None
            }
            Ok(None) | Err(_) => {
                let errors = self.sources.errors.join("; ");
                warn!(%key, at = self.pos, "GET failed: no other node could continue it ({errors})");
                Some(std::io::Error::other(format!("no node could continue: {errors}")))
            }
        }
    }
}
