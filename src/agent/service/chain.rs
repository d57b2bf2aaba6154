//! Chain replication, the node side: an upload whose header names further
//! nodes is stored here while every chunk is forwarded to the next node,
//! which does the same (HDFS-style pipelining), so the gateway's link
//! carries the content once.
//!
//! Each node keeps its own resume offset and verifies the content against
//! its key itself, so a corrupt forward is caught by the node after the one
//! that corrupted it. A next node that fails or stalls is cut out: the nodes
//! after it are then fed from this node's own copy, read back from disk as
//! it is written, each from where its partial upload stands. Every node
//! answers for itself and for the nodes after it.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};
use tracing::{info, warn};

use super::AgentService;
use super::put::{UPLOAD_WAIT, Upload, write_upload};
use crate::agent::store::Store;
use crate::p2p::key::Key;
use crate::rpc::{self, agent_client::AgentClient, put_request};

/// How long a next node may take no data when the header sets no limit.
const DEFAULT_STALL: Duration = Duration::from_secs(15);

/// Chunks queued for the next node beyond what its link has taken.
const FORWARD_QUEUE: usize = 16;

/// Chunks queued for this node's own writer.
const WRITER_QUEUE: usize = 8;

/// The shortest stall limit handed down the chain: each node hands the
/// next half its own, so that a stall deep in the chain is cut out by the
/// node just before it, before the nodes further up give up on theirs.
const MIN_STALL: Duration = Duration::from_millis(500);

/// What one chain upload shares with the task that feeds the nodes after
/// a cut-out from this node's copy.
#[derive(Clone)]
struct Source {
    key: Key,
    store: Store,
    dialer: rpc::Dialer,
    /// The stream's first and end offsets.
    start: u64,
    end: u64,
    /// How long the next node may take no data.
    stall: Duration,
    /// How far this node's copy is written (object offsets).
    written: watch::Receiver<u64>,
    /// The sender's verdict once its end marker arrived.
    verdict: watch::Receiver<Option<bool>>,
    /// This node held the object complete before the upload began.
    had: bool,
}

/// This node's own copy of a chain upload.
enum Own {
    /// The node holds the object already: the stream is only forwarded.
    Had,
    Writing {
        chunks: Option<mpsc::Sender<Upload>>,
        writer: tokio::task::JoinHandle<Result<rpc::PutReply, Status>>,
        _upload: crate::agent::locks::UploadGuard,
    },
}

/// The next node, fed the stream as it arrives.
struct Live {
    hop: rpc::ChainHop,
    tx: Option<mpsc::Sender<rpc::PutRequest>>,
    call: tokio::task::JoinHandle<Result<rpc::PutReply, Status>>,
}

/// Where the nodes after this one stand.
enum Downstream {
    None,
    Live(Live, Vec<rpc::ChainHop>),
    /// Cut over to feeding from this node's copy; the task answers for
    /// every node after the ones already counted.
    Following(tokio::task::JoinHandle<Vec<rpc::HopResult>>),
}

impl AgentService {
    /// An upload that is also forwarded down `header.chain`.
    pub(super) async fn serve_chain_put(
        &self,
        key: Key,
        header: rpc::PutHeader,
        stream: &mut Streaming<rpc::PutRequest>,
    ) -> Result<rpc::PutReply, Status> {
        let (start, end) = (header.offset, header.offset.saturating_add(header.length));
        if key.size.is_some_and(|size| end != size) {
            return Err(Status::invalid_argument(format!(
                "offset {start} + length {} does not match the size of {key}",
                header.length
            )));
        }
        if header.data_present {
            return Err(Status::invalid_argument("a chain upload carries data"));
        }
        let resume = header.resume_at.max(start);
        if resume > end {
            return Err(Status::invalid_argument(format!(
                "resume offset {resume} is beyond the end {end} of the stream"
            )));
        }
        let stall = match header.stall_ms {
            0 => DEFAULT_STALL,
            ms => Duration::from_millis(ms),
        };
        let had = self.store.object_size(&key).await?.is_some();
        let (written_tx, written) = watch::channel(if had { end } else { resume });
        let (verdict_tx, verdict) = watch::channel(None);
        let mut own = if had {
            Own::Had
        } else {
            let upload = self.uploads.begin(&key, UPLOAD_WAIT).await.ok_or_else(|| {
                Status::aborted(format!("another upload of {key} to this node is still under way"))
            })?;
            if resume > 0 {
                info!(%key, offset = resume, "upload resumes");
            }
            let (chunks, rx) = mpsc::channel::<Upload>(WRITER_QUEUE);
            let (store, k) = (self.store.clone(), key.clone());
            let span = tracing::Span::current();
            let writer = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    write_upload(&store, &k, resume, end - resume, rx, Some(written_tx))
                })
            });
            Own::Writing { chunks: Some(chunks), writer, _upload: upload }
        };
        let source = Source {
            key: key.clone(),
            store: self.store.clone(),
            dialer: self.dialer.clone(),
            start,
            end,
            stall,
            written,
            verdict,
            had,
        };
        let mut results = Vec::new();
        let mut down = Downstream::None;
        let hops: Vec<rpc::ChainHop> = header.chain.clone();
        if let Some((first, rest)) = hops.split_first() {
            down = source.open_live(first.clone(), rest.to_vec(), start, &mut results).await;
        }
        let refused = receive(
            &source,
            stream,
            &mut own,
            &mut down,
            &mut results,
            &verdict_tx,
            header.forwarded,
        )
        .await;
        // Without an end marker the writer keeps its partial for a resume,
        // and so does every node after this one.
        let own_reply = match own {
            Own::Had => Ok(rpc::PutReply { stored: true, ..Default::default() }),
            Own::Writing { chunks, writer, _upload } => {
                drop(chunks);
                let r = writer.await.map_err(|e| Status::internal(format!("writer failed: {e}")));
                self.own_outcome(&key, r.and_then(|r| r))
            }
        };
        drop(verdict_tx);
        results.extend(down.finish(&source).await);
        if let Some(status) = refused {
            return Err(status);
        }
        let mut reply = match own_reply {
            Ok(r) => r,
            // This node failed, but the nodes after it may have stored:
            // say both, so the gateway records exactly those that did.
            Err(s) => {
                rpc::PutReply { stored: false, error: s.message().to_string(), chain: vec![] }
            }
        };
        reply.chain = results;
        Ok(reply)
    }
}

/// Takes the sender's stream: each chunk to this node's writer (from its
/// resume offset on) and to the next node. Returns a refusal of the stream
/// itself (more data than promised, a misplaced message).
async fn receive(
    source: &Source,
    stream: &mut Streaming<rpc::PutRequest>,
    own: &mut Own,
    down: &mut Downstream,
    results: &mut Vec<rpc::HopResult>,
    verdict: &watch::Sender<Option<bool>>,
    forwarded: bool,
) -> Option<Status> {
    let resume = *source.written.borrow();
    let mut pos = source.start;
    // An idle sender sends an empty chunk this often (see `forwarded`).
    let beat = heartbeat(source.stall);
    let mut quiet = Duration::ZERO;
    loop {
        let msg = match tokio::time::timeout(beat, stream.message()).await {
            Ok(m) => {
                quiet = Duration::ZERO;
                m
            }
            Err(_) => {
                quiet += beat;
                if forwarded && quiet >= source.stall * 2 {
                    let secs = quiet.as_secs_f64();
                    warn!(key = %source.key, at = pos, "the node before this one sent nothing for {secs:.1} s; upload ended, partial kept");
                    return None;
                }
                // Nothing to pass on yet (the sender is waiting for its
                // own data): tell the next node this one is alive.
                down.forward(source, pos, Bytes::new(), results).await;
                continue;
            }
        };
        let msg = match msg {
            Ok(Some(m)) => m.msg,
            Ok(None) | Err(_) => return None,
        };
        match msg {
            Some(put_request::Msg::Data(chunk)) => {
                let len = chunk.len() as u64;
                if pos + len > source.end {
                    return Some(Status::invalid_argument(format!(
                        "more data than the {} bytes promised for {}",
                        source.end - source.start,
                        source.key
                    )));
                }
                if let Own::Writing { chunks: Some(tx), .. } = own
                    && len > 0
                    && pos + len > resume
                {
                    let from = resume.saturating_sub(pos) as usize;
                    // A send fails only when the writer stopped on an
                    // error, which its result reports.
                    if tx.send(Upload::Data(chunk.slice(from..))).await.is_err()
                        && let Own::Writing { chunks, .. } = own
                    {
                        *chunks = None;
                    }
                }
                down.forward(source, pos, chunk, results).await;
                pos += len;
            }
            Some(put_request::Msg::End(e)) => {
                let _ = verdict.send(Some(e.valid));
                if let Own::Writing { chunks: Some(tx), .. } = own {
                    let _ = tx.send(Upload::End { valid: e.valid }).await;
                }
                down.end(source, e.valid, results).await;
                return None;
            }
            Some(put_request::Msg::Header(_)) | None => {
                return Some(Status::invalid_argument("unexpected message in put stream"));
            }
        }
    }
}

impl Downstream {
    /// Forwards one chunk (at `pos` in the stream) to the next node; one
    /// that fails or stalls is cut out and the rest are fed from this
    /// node's copy from then on.
    async fn forward(
        &mut self,
        source: &Source,
        pos: u64,
        chunk: Bytes,
        results: &mut Vec<rpc::HopResult>,
    ) {
        let Downstream::Live(live, _) = self else { return };
        let chunk = corrupt_for_tests(chunk);
        let msg = rpc::PutRequest { msg: Some(put_request::Msg::Data(chunk)) };
        if let Err(why) = live.send(msg, source.stall).await {
            self.cut_out(source, why, results, pos).await;
        }
    }

    /// Passes the sender's end marker on.
    async fn end(&mut self, source: &Source, valid: bool, results: &mut Vec<rpc::HopResult>) {
        let Downstream::Live(live, _) = self else { return };
        let msg = rpc::PutRequest { msg: Some(put_request::Msg::End(rpc::PutEnd { valid })) };
        if let Err(why) = live.send(msg, source.stall).await {
            self.cut_out(source, why, results, source.end).await;
        }
    }

    /// Drops the next node, counting it failed with `why` (or with its own
    /// answer when it gave one), and starts feeding the nodes after it from
    /// this node's copy.
    async fn cut_out(
        &mut self,
        source: &Source,
        why: String,
        results: &mut Vec<rpc::HopResult>,
        at: u64,
    ) {
        let Downstream::Live(mut live, rest) = std::mem::replace(self, Downstream::None) else {
            return;
        };
        live.tx = None;
        // A node that ended its side may have said why; a stalled one is
        // not waited for.
        let answer = tokio::time::timeout(Duration::from_millis(200), &mut live.call).await;
        live.call.abort();
        let why = match answer {
            Ok(Ok(Err(s))) => s.message().to_string(),
            Ok(Ok(Ok(r))) if !r.error.is_empty() => r.error,
            _ => why,
        };
        warn!(key = %source.key, node = %live.hop.name, at, "cut out of the chain: {why}");
        results.push(failed(&live.hop, format!("cut out of the chain: {why}"), 0));
        if !rest.is_empty() {
            *self = Downstream::Following(tokio::spawn(source.clone().follow(rest.into())));
        }
    }

    /// Every node's outcome after this one, once the data is all passed on.
    async fn finish(self, source: &Source) -> Vec<rpc::HopResult> {
        match self {
            Downstream::None => vec![],
            Downstream::Following(task) => task.await.unwrap_or_default(),
            Downstream::Live(mut live, rest) => {
                live.tx = None;
                let limit = answer_limit(source.stall, rest.len());
                let answer = tokio::time::timeout(limit, &mut live.call).await;
                let mut out = Vec::new();
                match answer {
                    Ok(Ok(Ok(reply))) => {
                        out.push(rpc::HopResult {
                            uuid: live.hop.uuid.clone(),
                            stored: reply.stored,
                            error: reply.error,
                            code: 0,
                        });
                        out.extend(reply.chain);
                    }
                    Ok(Ok(Err(s))) => {
                        out.push(failed(&live.hop, s.message().to_string(), s.code() as i32))
                    }
                    Ok(Err(e)) => out.push(failed(&live.hop, e.to_string(), 13)),
                    Err(_) => {
                        live.call.abort();
                        let why = format!("no answer within {} s", limit.as_secs());
                        out.push(failed(&live.hop, why, 4));
                    }
                }
                // Nodes the answer does not cover were never reached.
                let why = format!("not reached: {} failed", live.hop.name);
                unreached(&mut out, &rest, &why);
                out
            }
        }
    }
}

impl Live {
    /// Sends one message, waiting for room at most `stall`.
    async fn send(&mut self, msg: rpc::PutRequest, stall: Duration) -> Result<(), String> {
        let Some(tx) = &self.tx else { return Err("its stream is closed".into()) };
        let msg = match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err("it ended its upload".into());
            }
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        match tokio::time::timeout(stall, tx.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("it ended its upload".into()),
            Err(_) => Err(format!("took no data for {:.1} s", stall.as_secs_f64())),
        }
    }
}

impl Source {
    /// Opens the upload to the next node, fed as the stream arrives; a node
    /// that cannot be reached is cut out at once.
    async fn open_live(
        &self,
        hop: rpc::ChainHop,
        rest: Vec<rpc::ChainHop>,
        from: u64,
        results: &mut Vec<rpc::HopResult>,
    ) -> Downstream {
        match self.open(&hop, &rest, from, hop.offset).await {
            Ok((tx, call)) => Downstream::Live(Live { hop, tx: Some(tx), call }, rest),
            Err(why) => {
                warn!(key = %self.key, node = %hop.name, "cut out of the chain: {why}");
                results.push(failed(&hop, format!("cut out of the chain: {why}"), 14));
                if rest.is_empty() {
                    Downstream::None
                } else {
                    Downstream::Following(tokio::spawn(self.clone().follow(rest.into())))
                }
            }
        }
    }

    /// Starts an upload of the stream from `from` to `hop`, which resumes
    /// its own copy at `resume` and forwards to `rest`.
    async fn open(
        &self,
        hop: &rpc::ChainHop,
        rest: &[rpc::ChainHop],
        from: u64,
        resume: u64,
    ) -> Result<
        (mpsc::Sender<rpc::PutRequest>, tokio::task::JoinHandle<Result<rpc::PutReply, Status>>),
        String,
    > {
        let mut client = self.client(hop)?;
        let header = rpc::PutHeader {
            key: self.key.to_string(),
            offset: from,
            length: self.end - from,
            resume_at: resume.max(from),
            chain: rest.to_vec(),
            stall_ms: (self.stall / 2).max(MIN_STALL).as_millis() as u64,
            forwarded: true,
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        let first = rpc::PutRequest { msg: Some(put_request::Msg::Header(header)) };
        tx.try_send(first).map_err(|_| "cannot queue the header".to_string())?;
        let call = tokio::spawn(async move {
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            client.put(stream).await.map(|r| r.into_inner())
        });
        Ok((tx, call))
    }

    fn client(
        &self,
        hop: &rpc::ChainHop,
    ) -> Result<AgentClient<tonic::transport::Channel>, String> {
        let channel = self
            .dialer
            .channel(&hop.address, rpc::Peer::Agent(&hop.uuid))
            .map_err(|e| e.to_string())?;
        Ok(AgentClient::new(channel)
            .max_decoding_message_size(rpc::MAX_MESSAGE)
            .max_encoding_message_size(rpc::MAX_MESSAGE))
    }

    /// Feeds `hops` from this node's copy, the first of them forwarding to
    /// the rest; one that fails is cut out and the next takes its place.
    async fn follow(self, mut hops: VecDeque<rpc::ChainHop>) -> Vec<rpc::HopResult> {
        let mut out = Vec::new();
        while let Some(hop) = hops.pop_front() {
            let rest: Vec<rpc::ChainHop> = self.fresh_offsets(hops.iter().cloned().collect()).await;
            match self.feed_from_copy(&hop, &rest).await {
                Ok(reply) => {
                    out.push(rpc::HopResult {
                        uuid: hop.uuid.clone(),
                        stored: reply.stored,
                        error: reply.error,
                        code: 0,
                    });
                    out.extend(reply.chain);
                    unreached(&mut out, &rest, &format!("not reached: {} failed", hop.name));
                    return out;
                }
                Err((why, code)) => {
                    warn!(key = %self.key, node = %hop.name, "cut out of the chain: {why}");
                    out.push(failed(&hop, format!("cut out of the chain: {why}"), code));
                }
            }
        }
        out
    }

    /// Where each of `hops` stands now: their own resume offsets, asked
    /// again, since they may have received more since the chain began.
    async fn fresh_offsets(&self, hops: Vec<rpc::ChainHop>) -> Vec<rpc::ChainHop> {
        let asks = hops.into_iter().map(|mut h| async move {
            if let Ok(mut c) = self.client(&h)
                && let Ok(Ok(r)) = tokio::time::timeout(
                    self.stall,
                    c.put_offset(rpc::KeyRequest { key: self.key.to_string() }),
                )
                .await
            {
                let r = r.into_inner();
                h.offset = if r.already_have { self.end } else { r.offset };
            }
            h
        });
        join_all(asks).await
    }

    /// Sends `hop` the content from this node's copy, from the lowest
    /// offset it or the nodes after it need, following the copy as it is
    /// written; then the sender's end marker.
    async fn feed_from_copy(
        &self,
        hop: &rpc::ChainHop,
        rest: &[rpc::ChainHop],
    ) -> Result<rpc::PutReply, (String, i32)> {
        let own = self.fresh_offsets(vec![hop.clone()]).await.remove(0).offset;
        let need = rest.iter().map(|h| h.offset).chain([own]).min().unwrap_or(own);
        let from = need.clamp(self.start, self.end);
        let file = self.open_copy().map_err(|e| (e, 13))?;
        let (tx, call) = self.open(hop, rest, from, own).await.map_err(|e| (e, 14))?;
        let mut live = Live { hop: hop.clone(), tx: Some(tx), call };
        let mut written = self.written.clone();
        let mut verdict = self.verdict.clone();
        let mut pos = from;
        let beat = heartbeat(self.stall);
        while pos < self.end {
            // Wait for this node's writer to get past `pos`.
            let avail = loop {
                let w = *written.borrow_and_update();
                if w > pos {
                    break w;
                }
                match tokio::time::timeout(beat, written.changed()).await {
                    Ok(Err(_)) if *written.borrow() <= pos => {
                        return Err((format!("this node's copy stopped at {pos} bytes"), 10));
                    }
                    Ok(_) => {}
                    // Still waiting for this node's own data: keep the
                    // next node from taking the silence for a stall.
                    Err(_) => {
                        let beat =
                            rpc::PutRequest { msg: Some(put_request::Msg::Data(Bytes::new())) };
                        live.send(beat, self.stall).await.map_err(|e| (e, 4))?;
                    }
                }
            };
            let n = (avail - pos).min(rpc::CHUNK_SIZE as u64) as usize;
            let (f, at) = (file.clone(), pos);
            let chunk = tokio::task::spawn_blocking(move || read_at(&f, at, n))
                .await
                .map_err(|e| (e.to_string(), 13))?
                .map_err(|e| (format!("reading this node's copy: {e}"), 13))?;
            if chunk.is_empty() {
                return Err(("this node's copy is shorter than it was written".into(), 13));
            }
            pos += chunk.len() as u64;
            let msg = rpc::PutRequest { msg: Some(put_request::Msg::Data(chunk)) };
            live.send(msg, self.stall).await.map_err(|e| (e, 4))?;
        }
        let valid = loop {
            if let Some(v) = *verdict.borrow_and_update() {
                break v;
            }
            match tokio::time::timeout(beat, verdict.changed()).await {
                // The sender's stream broke: the nodes keep their partials.
                Ok(Err(_)) => return Err(("the upload was interrupted".into(), 1)),
                Ok(Ok(())) => {}
                Err(_) => {
                    let beat = rpc::PutRequest { msg: Some(put_request::Msg::Data(Bytes::new())) };
                    live.send(beat, self.stall).await.map_err(|e| (e, 4))?;
                }
            }
        };
        let end = rpc::PutRequest { msg: Some(put_request::Msg::End(rpc::PutEnd { valid })) };
        live.send(end, self.stall).await.map_err(|e| (e, 4))?;
        live.tx = None;
        let limit = answer_limit(self.stall, rest.len());
        match tokio::time::timeout(limit, &mut live.call).await {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(s))) => Err((s.message().to_string(), s.code() as i32)),
            Ok(Err(e)) => Err((e.to_string(), 13)),
            Err(_) => {
                live.call.abort();
                Err((format!("no answer within {} s", limit.as_secs()), 4))
            }
        }
    }

    /// This node's copy: the partial file being written, or the object once
    /// it is committed (the open descriptor outlives the rename).
    fn open_copy(&self) -> Result<Arc<std::fs::File>, String> {
        let object = self.store.object_path(&self.key);
        let paths =
            if self.had { vec![object] } else { vec![self.store.partial_path(&self.key), object] };
        for p in &paths {
            if let Ok(f) = std::fs::File::open(p) {
                return Ok(Arc::new(f));
            }
        }
        Err("this node no longer has the data it was forwarding".into())
    }
}

/// How often an idle node tells the next one it is alive: the next node's
/// limit (half this node's, doubled) is `stall`, so twice within it.
fn heartbeat(stall: Duration) -> Duration {
    (stall / 2).max(Duration::from_millis(100))
}

/// Reads up to `n` bytes at `at`.
fn read_at(f: &std::fs::File, at: u64, n: usize) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match f.read_at(&mut buf[got..], at + got as u64)? {
            0 => break,
            k => got += k,
        }
    }
    buf.truncate(got);
    Ok(Bytes::from(buf))
}

/// How long to wait for a node's answer once its data is sent: it and each
/// node after it may take a stall limit to commit and answer.
fn answer_limit(stall: Duration, after: usize) -> Duration {
    stall * (after as u32 + 2) + Duration::from_secs(30)
}

/// Counts the nodes of `hops` that `out` has no outcome for as failed.
fn unreached(out: &mut Vec<rpc::HopResult>, hops: &[rpc::ChainHop], why: &str) {
    for h in hops {
        if !out.iter().any(|r| r.uuid == h.uuid) {
            out.push(failed(h, why.to_string(), 0));
        }
    }
}

fn failed(hop: &rpc::ChainHop, error: String, code: i32) -> rpc::HopResult {
    rpc::HopResult { uuid: hop.uuid.clone(), stored: false, error, code }
}

/// A fault to test the chain with: an agent of a debug build started with
/// `ANNEXMESH_TEST_CORRUPT_FORWARD` set flips a byte of every chunk it
/// forwards, and the next node must refuse the result. Release builds never
/// read the variable.
fn corrupt_for_tests(chunk: Bytes) -> Bytes {
    #[cfg(debug_assertions)]
    if !chunk.is_empty() && std::env::var_os("ANNEXMESH_TEST_CORRUPT_FORWARD").is_some() {
        let mut v = chunk.to_vec();
        v[0] ^= 0xff;
        return Bytes::from(v);
    }
    chunk
}
