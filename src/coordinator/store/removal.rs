//! Removing a node from the mesh: its record leaves the registry (so its
//! name is free and no request waits for it), its location entries are
//! struck, and a tombstone keeps its identity from registering again.
//!
//! The check that the node holds no key's last copy and the removal share
//! one transaction, so no copy recorded meanwhile is lost unnoticed.

use std::collections::HashSet;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::Node;
use super::{LOCATION_STAMPS, LOCATIONS, NODE_SETTINGS, NODES, REMOVED_NODES, Redb, Result};
use super::{all_values, decode, encode};

/// Keys named in a refusal; the count says how many there are in all.
const SAMPLE: usize = 5;

/// A node removed from the mesh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemovedNode {
    pub node: Node,
    pub removed_unix_ms: u64,
    /// Removed as gone for good, whatever it held.
    pub lost: bool,
}

/// What removing a node did.
#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    /// Removed: `struck` location entries were struck, `lost_keys` of them
    /// the only copy the log knew of.
    Done { struck: u64, lost_keys: u64 },
    /// Refused, nothing written: the node holds the only copy of `count`
    /// keys, among them `sample`.
    SoleCopies { count: u64, sample: Vec<String> },
}

impl Redb {
    /// Removes the node `uuid`; unless `lost`, only when the log lists
    /// another registered node for every key it holds.
    pub async fn remove_node(&self, uuid: &str, lost: bool) -> Result<Removal> {
        let uuid = uuid.to_string();
        self.write(move |txn| remove_in(txn, &uuid, lost)).await
    }

    /// Every removed node.
    pub fn removed_nodes(&self) -> Result<Vec<RemovedNode>> {
        all_values(&self.read()?.open_table(REMOVED_NODES)?)
    }
}

/// Whether `uuid` was removed, read in `txn`.
pub(super) fn is_removed(txn: &WriteTransaction, uuid: &str) -> Result<Option<RemovedNode>> {
    let t = txn.open_table(REMOVED_NODES)?;
    t.get(uuid)?.map(|v| decode(v.value())).transpose()
}

fn remove_in(txn: &WriteTransaction, uuid: &str, lost: bool) -> Result<Removal> {
    let mut nodes = txn.open_table(NODES)?;
    let Some(node) = nodes.get(uuid)?.map(|v| decode::<Node>(v.value())).transpose()? else {
        return Ok(Removal::Done { struck: 0, lost_keys: 0 });
    };
    let others: HashSet<String> =
        all_values::<Node>(&nodes)?.into_iter().map(|n| n.uuid).filter(|u| u != uuid).collect();
    let (held, sole) = scan(txn, uuid, &others)?;
    if !lost && !sole.is_empty() {
        let sample = sole.iter().take(SAMPLE).cloned().collect();
        return Ok(Removal::SoleCopies { count: sole.len() as u64, sample });
    }
    let mut locations = txn.open_table(LOCATIONS)?;
    let mut index = txn.open_table(LOCATION_STAMPS)?;
    for row_key in &held {
        if let Some(v) = locations.remove(row_key.as_str())? {
            index.remove(v.value().0)?;
        }
    }
    nodes.remove(uuid)?;
    txn.open_table(NODE_SETTINGS)?.remove(uuid)?;
    let tomb = RemovedNode { node, removed_unix_ms: crate::clock::unix_ms(), lost };
    txn.open_table(REMOVED_NODES)?.insert(uuid, encode(&tomb).as_str())?;
    Ok(Removal::Done { struck: held.len() as u64, lost_keys: sole.len() as u64 })
}

/// The log's rows for `uuid`, and the keys it holds with no other node of
/// `others` listed as holding them, in key order.
fn scan(
    txn: &WriteTransaction,
    uuid: &str,
    others: &HashSet<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let t = txn.open_table(LOCATIONS)?;
    let (mut rows, mut sole) = (Vec::new(), Vec::new());
    // Rows of one key are contiguous: track the current key's state.
    let mut current: Option<(String, bool, bool)> = None; // key, here, elsewhere
    fn finish(c: Option<(String, bool, bool)>, sole: &mut Vec<String>) {
        if let Some((key, true, false)) = c {
            sole.push(key);
        }
    }
    for row in t.iter()? {
        let (k, v) = row?;
        let (key, node) = k.value().split_once('\t').unwrap_or((k.value(), ""));
        let present = v.value().1;
        if current.as_ref().is_none_or(|c| c.0 != key) {
            finish(current.take(), &mut sole);
            current = Some((key.to_string(), false, false));
        }
        let c = current.as_mut().expect("set above");
        if node == uuid {
            rows.push(k.value().to_string());
            c.1 |= present;
        } else if present && others.contains(node) {
            c.2 = true;
        }
    }
    finish(current, &mut sole);
    Ok((rows, sole))
}

#[cfg(test)]
mod tests;
