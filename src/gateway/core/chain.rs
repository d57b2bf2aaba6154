//! Chain replication, the gateway side: one upload to the first target
//! that names the others as its chain; the first stores and forwards, and
//! its answer carries every node's outcome (`agent::service::chain`).

use tracing::{info, warn};

use super::put::{Feed, PutRequest, Tally, TargetState};
use super::{Core, Result, stall, unavailable};
use crate::gateway::limits::call_limits;
use crate::rpc::{self, put_request};
use tokio::sync::mpsc;

impl Core {
    /// Starts a chain through every target that wants the content; None
    /// when fewer than two do (a chain of one is a plain upload).
    pub(super) async fn open_chain(
        &self,
        req: &PutRequest<'_>,
        states: &[(rpc::NodeInfo, TargetState)],
    ) -> Result<Option<Feed>> {
        let (offset, length) = (req.offset, req.length);
        let wanting: Vec<(&rpc::NodeInfo, u64)> = states
            .iter()
            .filter_map(|(n, s)| match s {
                // A node holding less than the client skipped, or more than
                // there is, starts from the client's offset.
                TargetState::Wants { offset: own } => {
                    Some((n, if *own < offset || *own > offset + length { offset } else { *own }))
                }
                _ => None,
            })
            .collect();
        // Cheapest first (`admin node cost`), so that operators can choose
        // the order; the plan's order otherwise.
        let mut wanting = wanting;
        wanting.sort_by_key(|(n, _)| n.cost);
        let Some(((head, head_offset), rest)) = wanting.split_first() else { return Ok(None) };
        if rest.is_empty() || req.data_present {
            return Ok(None);
        }
        let chain: Vec<rpc::ChainHop> = rest
            .iter()
            .map(|(n, own)| rpc::ChainHop {
                uuid: n.uuid.clone(),
                name: n.name.clone(),
                address: n.address.clone(),
                offset: *own,
            })
            .collect();
        let chunks = (call_limits().put_buffer / rpc::CHUNK_SIZE).max(1);
        let (tx, rx) = mpsc::channel::<rpc::PutRequest>(chunks);
        let header = rpc::PutHeader {
            key: req.key.to_string(),
            offset,
            associated_file: req.file.unwrap_or_default().to_string(),
            length,
            resume_at: *head_offset,
            chain,
            // Half the gateway's own limit, so that a stall down the chain
            // is cut out by the node before it, not taken for the head's.
            stall_ms: (stall() / 2).as_millis() as u64,
            ..Default::default()
        };
        let order: Vec<&str> = wanting.iter().map(|(n, _)| n.name.as_str()).collect();
        info!(key = %req.key, chain = %order.join(" > "), "chain put");
        let client = self.mesh.agent(head).map_err(|s| unavailable(&head.name, s))?;
        let _ = tx.send(rpc::PutRequest { msg: Some(put_request::Msg::Header(header)) }).await;
        let call = self.tasks.spawn(client.put(rx));
        Ok(Some(Feed {
            node: (*head).clone(),
            skip: 0,
            tx: Some(tx),
            stalled: None,
            call,
            chain: rest.iter().map(|(n, _)| (*n).clone()).collect(),
        }))
    }
}

/// Counts the outcome of every node down a chain: as its head reported
/// them when it answered (only for nodes that are in the chain), else as
/// failed, since the gateway cannot know whether they stored.
pub(super) fn tally_chain(
    tally: &mut Tally,
    chain: &[rpc::NodeInfo],
    results: Option<Vec<rpc::HopResult>>,
    head: &str,
) {
    let results = results.unwrap_or_default();
    for node in chain {
        match results.iter().find(|r| r.uuid == node.uuid) {
            Some(r) if r.stored => tally.stored.push(node.uuid.clone()),
            Some(r) => {
                tally.failed.push(format!("{}: {}", node.name, r.error));
                if node_at_fault(r) {
                    tally.faulty.push((node.clone(), r.error.clone()));
                }
            }
            None => {
                let why = format!("no outcome: the chain's head {head} did not report one");
                warn!(node = %node.name, "{why}");
                tally.failed.push(format!("{}: {why}", node.name));
            }
        }
    }
}

/// Whether a node down the chain failed through a fault of its own: a
/// cut-out or an error status, not a refusal of the data (a checksum that
/// does not match is the forwarder's fault, and the reply says so).
fn node_at_fault(r: &rpc::HopResult) -> bool {
    use tonic::Code;
    r.error.starts_with("cut out of the chain")
        || !matches!(
            Code::from_i32(r.code),
            Code::Ok
                | Code::InvalidArgument
                | Code::Aborted
                | Code::Cancelled
                | Code::FailedPrecondition
        )
}
