//! In-memory nodes and coordinator behind the mesh's traits: content per
//! node, misbehaviours on demand, a location log, a placement plan and a
//! cluster clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tonic::Status;

use crate::clock::boottime_ms;
use crate::gateway::mesh::api::{Control, NodeClient, Nodes, Replies};
use crate::p2p::key::Key;
use crate::rpc::{self, get_reply, put_request};

/// Bytes per GET data message, small so downloads fail over mid-stream.
pub const CHUNK: usize = 4;

/// How a fake node misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    Healthy,
    /// Every call fails as if the connection were refused.
    Unreachable,
    /// Never answers a request.
    Stalls,
    /// A GET sends this many bytes, then nothing more.
    StallsAfter(u64),
    /// A GET sends this many bytes, then closes its stream.
    EndsAfter(u64),
    /// A GET announces one byte more than it holds.
    WrongSize,
    /// Takes an upload's data but refuses to store it.
    RefusesWrites,
    /// An upload fails at once, as on a store whose `annex/tmp` is
    /// read-only.
    FailsWrites,
    /// Refuses to remove.
    KeepsContent,
    /// Takes an upload's header, then nothing more: a frozen node or a
    /// link that stopped accepting data.
    StopsReading,
    /// Finds its copy corrupt before sending any: GET, CHECKPRESENT and
    /// LOCKCONTENT answer DATA_LOSS.
    Corrupt,
    /// A GET sends this many bytes, then reports the data invalid (a copy
    /// found corrupt only once it was read).
    InvalidAfter(u64),
    /// A GET sends this many bytes, then claims the data complete and valid.
    VouchesAfter(u64),
    /// A GET sends all its bytes, then closes without vouching for them.
    NeverVouches,
}

/// What a fake node saw and holds.
pub struct FakeNode {
    pub behaviour: Behaviour,
    pub content: Mutex<HashMap<String, Bytes>>,
    /// Partial uploads, kept for resume.
    pub partial: Mutex<HashMap<String, Vec<u8>>>,
    pub checks: Mutex<usize>,
    /// PUTOFFSET questions asked.
    pub offsets: Mutex<usize>,
    pub gets: Mutex<Vec<u64>>,
    pub put_headers: Mutex<Vec<rpc::PutHeader>>,
    pub removes: Mutex<Vec<rpc::RemoveRequest>>,
}

impl FakeNode {
    pub fn new(behaviour: Behaviour) -> FakeNode {
        FakeNode {
            behaviour,
            content: Mutex::default(),
            partial: Mutex::default(),
            checks: Mutex::default(),
            offsets: Mutex::default(),
            gets: Mutex::default(),
            put_headers: Mutex::default(),
            removes: Mutex::default(),
        }
    }

    pub fn holds(&self, key: &str) -> Option<Bytes> {
        self.content.lock().unwrap().get(key).cloned()
    }

    pub fn partial_len(&self, key: &str) -> usize {
        self.partial.lock().unwrap().get(key).map_or(0, Vec::len)
    }

    /// DATA_LOSS when the node holds the key but its copy is corrupt.
    fn verify(&self, key: &str) -> Result<(), Status> {
        if self.behaviour == Behaviour::Corrupt && self.holds(key).is_some() {
            return Err(Status::data_loss("checksum mismatch; copy quarantined"));
        }
        Ok(())
    }

    /// Fails the call when the node is unreachable; never returns when it
    /// stalls.
    async fn reach(&self) -> Result<(), Status> {
        match self.behaviour {
            Behaviour::Unreachable => Err(Status::unavailable("connection refused")),
            Behaviour::Stalls => futures::future::pending().await,
            _ => Ok(()),
        }
    }

    fn get_replies(&self, req: &rpc::GetRequest) -> Result<Replies<rpc::GetReply>, Status> {
        let Some(data) = self.holds(&req.key) else {
            return Err(Status::not_found("not present"));
        };
        if self.behaviour == Behaviour::Corrupt {
            return Err(Status::data_loss("checksum mismatch; copy quarantined"));
        }
        if req.offset > data.len() as u64 {
            return Err(Status::invalid_argument(format!("offset {} is beyond", req.offset)));
        }
        let rest = data.slice(req.offset as usize..);
        let extra = u64::from(self.behaviour == Behaviour::WrongSize);
        let header = get_reply::Msg::Header(rpc::GetHeader { length: rest.len() as u64 + extra });
        // How many bytes go out, whether an end marker follows them (and
        // what it says), and whether the stream then stalls.
        let whole = |n: u64| (n as usize >= rest.len()).then_some(true);
        let (cut, end, stall) = match self.behaviour {
            Behaviour::EndsAfter(n) => (n as usize, whole(n), false),
            Behaviour::StallsAfter(n) => (n as usize, whole(n), true),
            Behaviour::InvalidAfter(n) => (n as usize, Some(false), false),
            Behaviour::VouchesAfter(n) => (n as usize, Some(true), false),
            Behaviour::NeverVouches => (rest.len(), None, false),
            _ => (rest.len(), Some(true), false),
        };
        let sent = rest.slice(..cut.min(rest.len()));
        let mut msgs = vec![header];
        msgs.extend(sent.chunks(CHUNK).map(|c| get_reply::Msg::Data(sent.slice_ref(c))));
        msgs.extend(end.map(|valid| get_reply::Msg::End(rpc::GetEnd { valid })));
        let replies =
            futures::stream::iter(msgs.into_iter().map(|m| Ok(rpc::GetReply { msg: Some(m) })));
        if stall {
            Ok(replies.chain(futures::stream::pending()).boxed())
        } else {
            Ok(replies.boxed())
        }
    }

    /// An agent's upload: data after the header goes to the partial file;
    /// the end marker stores it when it is whole.
    async fn receive(
        &self,
        mut rx: mpsc::Receiver<rpc::PutRequest>,
    ) -> Result<rpc::PutReply, Status> {
        let Some(rpc::PutRequest { msg: Some(put_request::Msg::Header(h)) }) = rx.recv().await
        else {
            return Err(Status::invalid_argument("no header"));
        };
        self.put_headers.lock().unwrap().push(h.clone());
        if self.behaviour == Behaviour::StopsReading {
            // Holds the stream open without reading, so its buffer fills.
            let _rx = rx;
            return futures::future::pending().await;
        }
        if self.behaviour == Behaviour::FailsWrites {
            return Err(Status::internal(format!(
                "cannot open annex/tmp/{}: Read-only file system (os error 30)",
                h.key
            )));
        }
        // As an agent: content it holds is stored already, and it resumes
        // no further than its partial reaches.
        if self.holds(&h.key).is_some() {
            return Ok(rpc::PutReply { stored: true, ..Default::default() });
        }
        let held = self.partial_len(&h.key) as u64;
        if h.offset > held {
            return Err(Status::failed_precondition(format!(
                "cannot resume at offset {}: only {held} bytes of {} are held",
                h.offset, h.key
            )));
        }
        let mut data = self.partial.lock().unwrap().remove(&h.key).unwrap_or_default();
        data.truncate(h.offset as usize);
        let end = loop {
            match rx.recv().await {
                Some(rpc::PutRequest { msg: Some(put_request::Msg::Data(d)) }) => {
                    data.extend_from_slice(&d)
                }
                Some(rpc::PutRequest { msg: Some(put_request::Msg::End(e)) }) => break Some(e),
                _ => break None,
            }
        };
        let Some(end) = end else {
            self.partial.lock().unwrap().insert(h.key, data);
            return Err(Status::cancelled("the upload ended without its end marker"));
        };
        let size = h.key.parse::<Key>().ok().and_then(|k| k.size);
        let error = match () {
            _ if !end.valid => "the sender reported the data invalid",
            _ if self.behaviour == Behaviour::RefusesWrites => "no space left on device",
            _ if size.is_some_and(|s| s != data.len() as u64) => "the content has the wrong size",
            _ => {
                self.content.lock().unwrap().insert(h.key, data.into());
                return Ok(rpc::PutReply { stored: true, ..Default::default() });
            }
        };
        Ok(rpc::PutReply { stored: false, error: error.into(), chain: vec![] })
    }
}

/// A client of one fake node.
struct FakeClient(Arc<FakeNode>);

impl NodeClient for FakeClient {
    fn check_present(&self, key: String) -> BoxFuture<'_, Result<bool, Status>> {
        Box::pin(async move {
            *self.0.checks.lock().unwrap() += 1;
            self.0.reach().await?;
            self.0.verify(&key)?;
            Ok(self.0.holds(&key).is_some())
        })
    }

    fn put_offset(&self, key: String) -> BoxFuture<'_, Result<rpc::PutOffsetReply, Status>> {
        Box::pin(async move {
            *self.0.offsets.lock().unwrap() += 1;
            self.0.reach().await?;
            self.0.verify(&key)?;
            let already_have = self.0.holds(&key).is_some();
            Ok(rpc::PutOffsetReply { already_have, offset: self.0.partial_len(&key) as u64 })
        })
    }

    fn put(
        &self,
        requests: mpsc::Receiver<rpc::PutRequest>,
    ) -> BoxFuture<'static, Result<rpc::PutReply, Status>> {
        let node = self.0.clone();
        Box::pin(async move {
            node.reach().await?;
            node.receive(requests).await
        })
    }

    fn get(&self, req: rpc::GetRequest) -> BoxFuture<'_, Result<Replies<rpc::GetReply>, Status>> {
        Box::pin(async move {
            self.0.reach().await?;
            self.0.gets.lock().unwrap().push(req.offset);
            self.0.get_replies(&req)
        })
    }

    fn remove(&self, req: rpc::RemoveRequest) -> BoxFuture<'_, Result<rpc::RemoveReply, Status>> {
        Box::pin(async move {
            self.0.reach().await?;
            self.0.removes.lock().unwrap().push(req.clone());
            if self.0.behaviour == Behaviour::KeepsContent {
                return Ok(rpc::RemoveReply { removed: false, error: "content is locked".into() });
            }
            self.0.content.lock().unwrap().remove(&req.key);
            Ok(rpc::RemoveReply { removed: true, error: String::new() })
        })
    }

    fn lock_content(
        &self,
        mut requests: mpsc::Receiver<rpc::LockRequest>,
    ) -> BoxFuture<'_, Result<Replies<rpc::LockReply>, Status>> {
        Box::pin(async move {
            self.0.reach().await?;
            let key = match requests.recv().await {
                Some(rpc::LockRequest { msg: Some(rpc::lock_request::Msg::Key(k)) }) => k,
                _ => return Err(Status::invalid_argument("no key")),
            };
            self.0.verify(&key)?;
            let locked = self.0.holds(&key).is_some();
            let first =
                futures::stream::iter([Ok(rpc::LockReply { locked, error: String::new() })]);
            Ok(first.chain(futures::stream::pending()).boxed())
        })
    }

    fn clock(&self) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        Box::pin(async move {
            self.0.reach().await?;
            let ms = boottime_ms();
            Ok(rpc::TimestampReply {
                timestamp: ms / 1000,
                boot_id: "boot".into(),
                timestamp_ms: ms,
            })
        })
    }
}

/// The fake nodes, by UUID.
#[derive(Default)]
pub struct FakeNodes(pub HashMap<String, Arc<FakeNode>>);

impl Nodes for FakeNodes {
    fn connect(&self, node: &rpc::NodeInfo) -> Result<Arc<dyn NodeClient>, Status> {
        let fake = self.0.get(&node.uuid).ok_or_else(|| Status::internal("no such node"))?;
        Ok(Arc::new(FakeClient(fake.clone())))
    }
}

/// The fake coordinator.
#[derive(Default)]
pub struct FakeControl {
    pub topology: rpc::TopologyReply,
    /// Key to the UUIDs of the nodes holding it.
    pub log: Mutex<HashMap<String, BTreeSet<String>>>,
    /// The placement plan for every key: target UUIDs and minimum copies.
    pub plan: (Vec<String>, u32),
    /// How long a plan may be reused (0: never).
    pub reusable_ms: std::sync::atomic::AtomicU32,
    /// Plans asked for.
    pub plans: std::sync::atomic::AtomicUsize,
    pub clock_ms: u64,
    /// Whether writes to the location log fail (the coordinator is gone or
    /// cannot write).
    pub records_fail: AtomicBool,
    /// Every batch of location changes that was recorded, in order.
    pub recorded: Mutex<Vec<Vec<rpc::LocationChange>>>,
    /// Every node failure a gateway reported, in order.
    pub failures: Mutex<Vec<rpc::ReportNodeFailureRequest>>,
}

impl FakeControl {
    pub fn listed(&self, key: &str) -> Vec<String> {
        self.log.lock().unwrap().get(key).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

impl Control for FakeControl {
    fn topology(&self) -> BoxFuture<'_, Result<rpc::TopologyReply, Status>> {
        Box::pin(async move { Ok(self.topology.clone()) })
    }

    fn locate(&self, key: String) -> BoxFuture<'_, Result<Vec<String>, Status>> {
        Box::pin(async move { Ok(self.listed(&key)) })
    }

    fn record_locations(
        &self,
        changes: Vec<rpc::LocationChange>,
    ) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            if self.records_fail.load(Ordering::SeqCst) {
                return Err(Status::unavailable("coordinator unreachable"));
            }
            self.recorded.lock().unwrap().push(changes.clone());
            let mut log = self.log.lock().unwrap();
            for c in changes {
                let holders = log.entry(c.key).or_default();
                if c.present {
                    holders.insert(c.node_uuid);
                } else {
                    holders.remove(&c.node_uuid);
                }
            }
            Ok(())
        })
    }

    fn plan_put(&self, _: rpc::PlanPutRequest) -> BoxFuture<'_, Result<rpc::PlanPutReply, Status>> {
        let (node_uuids, min_copies) = self.plan.clone();
        self.plans.fetch_add(1, Ordering::SeqCst);
        let reusable_ms = self.reusable_ms.load(Ordering::SeqCst);
        Box::pin(async move {
            Ok(rpc::PlanPutReply { node_uuids, min_copies, reusable_ms, ..Default::default() })
        })
    }

    fn cluster_timestamp(&self, _: String) -> BoxFuture<'_, Result<rpc::TimestampReply, Status>> {
        let ms = self.clock_ms;
        let reply =
            rpc::TimestampReply { timestamp: ms / 1000, boot_id: String::new(), timestamp_ms: ms };
        Box::pin(async move { Ok(reply) })
    }

    fn check_token(
        &self,
        _: rpc::CheckTokenRequest,
    ) -> BoxFuture<'_, Result<rpc::CheckTokenReply, Status>> {
        Box::pin(async move { Ok(rpc::CheckTokenReply::default()) })
    }

    fn report_node_failure(
        &self,
        req: rpc::ReportNodeFailureRequest,
    ) -> BoxFuture<'_, Result<(), Status>> {
        self.failures.lock().unwrap().push(req);
        Box::pin(async move { Ok(()) })
    }
}
