//! Failures the gateway saw on nodes: counted per node for `/metrics`, and
//! reported to the coordinator, which degrades the node (no new content,
//! asked last for reads) until it recovers.
//!
//! Reports go through a bounded queue to one background sender, so a
//! request never waits on the coordinator to report; when the queue is full
//! (the coordinator is slow or gone) a report is dropped, and the next
//! failure reports the node again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;

use super::api::Control;
use crate::rpc;
use crate::tasks::Tasks;

/// Reports waiting to be sent, at most.
const QUEUE: usize = 64;

/// How long one report may take before the sender moves on.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest error text a report carries, in characters.
const MAX_ERROR: usize = 500;

/// What failed on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A PUT target failed to store (not because the client's data was cut
    /// short).
    Put,
    /// A GET, CHECKPRESENT or REMOVE call failed or stalled.
    Data,
}

/// Failures counted on one node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub put: u64,
    pub data: u64,
    /// GETs continued on another node after this one failed mid-way.
    pub failovers: u64,
}

/// The counts, and the queue to the coordinator.
pub struct Failures {
    counts: Mutex<HashMap<String, Counts>>,
    tx: mpsc::Sender<rpc::ReportNodeFailureRequest>,
    /// Taken by the sender when it starts.
    rx: Mutex<Option<mpsc::Receiver<rpc::ReportNodeFailureRequest>>>,
}

impl Default for Failures {
    fn default() -> Failures {
        let (tx, rx) = mpsc::channel(QUEUE);
        Failures { counts: Mutex::default(), tx, rx: Mutex::new(Some(rx)) }
    }
}

impl Failures {
    /// Counts a failure on `node` and queues its report.
    pub fn note(&self, node: &rpc::NodeInfo, kind: Kind, why: &str) {
        let mut counts = self.counts.lock().unwrap();
        let c = counts.entry(node.uuid.clone()).or_default();
        match kind {
            Kind::Put => c.put += 1,
            Kind::Data => c.data += 1,
        }
        drop(counts);
        let kind = match kind {
            Kind::Put => rpc::FailureKind::Put,
            Kind::Data => rpc::FailureKind::Data,
        };
        let report = rpc::ReportNodeFailureRequest {
            node_uuid: node.uuid.clone(),
            kind: kind.into(),
            error: why.chars().take(MAX_ERROR).collect(),
        };
        if self.tx.try_send(report).is_err() {
            debug!(node = %node.name, "failure report dropped: the queue to the coordinator is full");
        }
    }

    /// Counts a GET continued elsewhere after the node `uuid` failed.
    pub fn note_failover(&self, uuid: &str) {
        self.counts.lock().unwrap().entry(uuid.to_string()).or_default().failovers += 1;
    }

    /// The failures counted on the node `uuid`.
    pub fn counts(&self, uuid: &str) -> Counts {
        self.counts.lock().unwrap().get(uuid).copied().unwrap_or_default()
    }

    /// Sends the queued reports to `control` until the gateway stops. Only
    /// the first call starts a sender.
    pub fn spawn_sender(&self, control: Arc<dyn Control>, tasks: &Tasks) {
        let Some(mut rx) = self.rx.lock().unwrap().take() else { return };
        tasks.spawn(async move {
            while let Some(report) = rx.recv().await {
                let node = report.node_uuid.clone();
                match tokio::time::timeout(REPORT_TIMEOUT, control.report_node_failure(report))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(s)) => debug!(%node, "cannot report a node failure: {}", s.message()),
                    Err(_) => debug!(%node, "cannot report a node failure: no answer"),
                }
            }
        });
    }
}
