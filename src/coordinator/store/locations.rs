//! The location log: which nodes hold which keys. Per key and node the
//! newest entry wins, as in git-annex's location log.

use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};

use super::{LOCATION_STAMPS, LOCATIONS, META, Redb, Result};

/// One location change: (key, node UUID, present).
pub type Change = (String, String, bool);

/// A node's newest entry for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationEntry {
    pub node_uuid: String,
    pub present: bool,
    pub changed_unix_ms: u64,
}

/// The wall clock location stamps start from: Unix milliseconds. Injectable,
/// so that tests can set it back.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> WallClock {
    Arc::new(crate::clock::unix_ms)
}

/// The meta counter that holds the largest stamp ever given, written with
/// every change, so that a restart resumes above it.
pub(super) const META_LAST_STAMP: &str = "location_stamp_max";

/// A hybrid logical clock for location stamps: `max(wall, last + 1)`.
/// Stamps strictly increase, so "newest wins" is a total order even within
/// one millisecond, and, seeded with the largest stamp stored, also across
/// restarts with a wall clock that was set back: a later change always wins.
pub(super) struct Stamps {
    last: AtomicU64,
    wall: WallClock,
}

impl Stamps {
    pub(super) fn new(last: u64, wall: WallClock) -> Stamps {
        Stamps { last: AtomicU64::new(last), wall }
    }

    /// Makes every later stamp larger than `stamp`.
    pub(super) fn raise(&self, stamp: u64) {
        self.last.fetch_max(stamp, Ordering::Relaxed);
    }

    fn next(&self) -> u64 {
        let now = (self.wall)();
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.last.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }
}

/// The largest stamp the database holds: the meta counter, or, in a
/// database written before it existed, the largest entry of the log.
pub(super) fn last_stamp(txn: &WriteTransaction) -> Result<u64> {
    if let Some(v) = txn.open_table(META)?.get(META_LAST_STAMP)? {
        return Ok(v.value());
    }
    let t = txn.open_table(LOCATIONS)?;
    let mut max = 0;
    for row in t.iter()? {
        max = max.max(row?.1.value().0);
    }
    Ok(max)
}

/// The meta counter set once `LOCATION_STAMPS` indexes every entry.
const META_STAMP_INDEX: &str = "location_stamp_index";

/// Builds the stamp index of a log written before it was kept; once.
pub(super) fn index_stamps(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    if meta.get(META_STAMP_INDEX)?.is_some() {
        return Ok(());
    }
    let t = txn.open_table(LOCATIONS)?;
    let mut index = txn.open_table(LOCATION_STAMPS)?;
    for row in t.iter()? {
        let (k, v) = row?;
        index.insert(v.value().0, k.value())?;
    }
    meta.insert(META_STAMP_INDEX, 1)?;
    Ok(())
}

/// A location entry with the key it is for, as `changes_after` lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct StampedChange {
    pub key: String,
    pub entry: LocationEntry,
}

fn location_key(key: &str, node: &str) -> String {
    format!("{key}\t{node}")
}

impl Redb {
    /// Records location changes; returns once they are committed. Changes
    /// of concurrent callers share one transaction (and one fsync), in the
    /// order they were made: a later change gets a later stamp.
    pub async fn record(&self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let stamps = self.stamps.clone();
        self.writer.write_grouped(move |txn| record_in(txn, &changes, &stamps)).await
    }

    /// The keys the log lists as present on each node, by node UUID: one
    /// pass over the whole log, for `admin fsck`.
    pub fn present_by_node(&self) -> Result<HashMap<String, HashSet<String>>> {
        let txn = self.read()?;
        let t = txn.open_table(LOCATIONS)?;
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        for row in t.iter()? {
            let (k, v) = row?;
            if let (Some((key, node)), true) = (k.value().split_once('\t'), v.value().1) {
                out.entry(node.to_string()).or_default().insert(key.to_string());
            }
        }
        Ok(out)
    }

    /// Up to `limit` entries of the log, oldest first, that last changed
    /// after the stamp `after`: what a reader that has seen every change up
    /// to `after` has yet to see. Stamps strictly increase and are
    /// committed in order, so reading on from the last one returned misses
    /// nothing. Entries of removed nodes are gone, not listed.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<StampedChange>> {
        let txn = self.read()?;
        let index = txn.open_table(LOCATION_STAMPS)?;
        let t = txn.open_table(LOCATIONS)?;
        let mut out = Vec::new();
        for row in index.range(after.saturating_add(1)..)?.take(limit) {
            let (stamp, lk) = row?;
            let Some((key, node)) = lk.value().split_once('\t') else { continue };
            let Some(v) = t.get(lk.value())? else { continue };
            let (changed_unix_ms, present) = v.value();
            if changed_unix_ms != stamp.value() {
                continue;
            }
            out.push(StampedChange {
                key: key.to_string(),
                entry: LocationEntry { node_uuid: node.to_string(), present, changed_unix_ms },
            });
        }
        Ok(out)
    }

    /// Every node's newest entry for `key`.
    pub fn locations(&self, key: &str) -> Result<Vec<LocationEntry>> {
        let txn = self.read()?;
        let t = txn.open_table(LOCATIONS)?;
        let start = format!("{key}\t");
        // '\n' is the character after '\t', so this bounds the key's range.
        let end = format!("{key}\n");
        let mut out = Vec::new();
        for row in t.range(start.as_str()..end.as_str())? {
            let (k, v) = row?;
            let (changed_unix_ms, present) = v.value();
            let node_uuid = k.value()[start.len()..].to_string();
            out.push(LocationEntry { node_uuid, present, changed_unix_ms });
        }
        Ok(out)
    }
}

fn record_in(txn: &WriteTransaction, changes: &[Change], stamps: &Stamps) -> Result<()> {
    let mut t = txn.open_table(LOCATIONS)?;
    let mut index = txn.open_table(LOCATION_STAMPS)?;
    let mut last = 0;
    for (key, node, present) in changes {
        // A removed node's entries stay struck, even when a request that
        // was under way as it was removed reports on it.
        if super::removal::is_removed(txn, node)?.is_some() {
            continue;
        }
        let stamp = stamps.next();
        last = stamp;
        let lk = location_key(key, node);
        let old = t.get(lk.as_str())?.map(|v| v.value().0);
        if old.is_none_or(|o| o < stamp) {
            t.insert(lk.as_str(), (stamp, *present))?;
            if let Some(o) = old {
                index.remove(o)?;
            }
            index.insert(stamp, lk.as_str())?;
        }
    }
    // Group members commit in order with increasing stamps: the last to
    // write holds the largest.
    let mut meta = txn.open_table(META)?;
    let stored = meta.get(META_LAST_STAMP)?.map_or(0, |v| v.value());
    meta.insert(META_LAST_STAMP, stored.max(last))?;
    Ok(())
}

/// Writes entries with the stamps they carry (moving a log between stores),
/// and raises the stamp counter above them so later changes still win.
pub(super) fn import_in(
    txn: &WriteTransaction,
    entries: &[StampedChange],
    stamps: &Stamps,
) -> Result<()> {
    let mut t = txn.open_table(LOCATIONS)?;
    let mut index = txn.open_table(LOCATION_STAMPS)?;
    let mut last = 0;
    for e in entries {
        let stamp = e.entry.changed_unix_ms;
        last = last.max(stamp);
        let lk = location_key(&e.key, &e.entry.node_uuid);
        let old = t.get(lk.as_str())?.map(|v| v.value().0);
        if old.is_none_or(|o| o < stamp) {
            t.insert(lk.as_str(), (stamp, e.entry.present))?;
            if let Some(o) = old {
                index.remove(o)?;
            }
            index.insert(stamp, lk.as_str())?;
        }
    }
    stamps.raise(last);
    let mut meta = txn.open_table(META)?;
    let stored = meta.get(META_LAST_STAMP)?.map_or(0, |v| v.value());
    meta.insert(META_LAST_STAMP, stored.max(last))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn newest_entry_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        {
            let s = Redb::open(dir.path()).unwrap();
            s.record(vec![(key.into(), "n1".into(), true), (key.into(), "n2".into(), true)])
                .await
                .unwrap();
            s.record(vec![(key.into(), "n2".into(), false)]).await.unwrap();
            // A key that shares a prefix must not leak into the range.
            s.record(vec![(format!("{key}x"), "n3".into(), true)]).await.unwrap();
        }
        let s = Redb::open(dir.path()).unwrap();
        let mut got: Vec<_> =
            s.locations(key).unwrap().into_iter().map(|e| (e.node_uuid, e.present)).collect();
        got.sort();
        assert_eq!(got, vec![("n1".to_string(), true), ("n2".to_string(), false)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_records_commit_every_change_in_request_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Redb::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let key = format!("SHA256E-s{i}--{i:064x}");
                    s.record(vec![
                        (key.clone(), "n1".into(), true),
                        (key.clone(), "n2".into(), true),
                    ])
                    .await
                    .unwrap();
                    // A later request for the same key and node wins.
                    s.record(vec![(key, "n2".into(), false)]).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        for i in 0..64 {
            let key = format!("SHA256E-s{i}--{i:064x}");
            let present: Vec<_> = s
                .locations(&key)
                .unwrap()
                .into_iter()
                .filter(|e| e.present)
                .map(|e| e.node_uuid)
                .collect();
            assert_eq!(present, vec!["n1".to_string()], "{key}");
        }
        assert!(s.record(Vec::new()).await.is_ok());
    }

    #[tokio::test]
    async fn changes_after_a_stamp_list_each_newest_entry_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Redb::open(dir.path()).unwrap();
        s.record(vec![("k1".into(), "n1".into(), true), ("k2".into(), "n1".into(), true)])
            .await
            .unwrap();
        let first = s.changes_after(0, 100).unwrap();
        assert_eq!(first.len(), 2);
        let w = first[1].entry.changed_unix_ms;
        assert!(first[0].entry.changed_unix_ms < w);
        assert!(s.changes_after(w, 100).unwrap().is_empty());
        // k1 changes again: only its newest entry is listed, after `w`.
        s.record(vec![("k1".into(), "n1".into(), false)]).await.unwrap();
        let next = s.changes_after(w, 100).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].key.as_str(), next[0].entry.present), ("k1", false));
        assert_eq!(s.changes_after(0, 100).unwrap().len(), 2);
        assert_eq!(s.changes_after(0, 1).unwrap().len(), 1);
        drop(s);
        // Kept across a restart.
        let s = Redb::open(dir.path()).unwrap();
        assert_eq!(s.changes_after(w, 100).unwrap(), next);
    }

    #[tokio::test]
    async fn a_log_written_before_the_stamp_index_is_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Redb::open(dir.path()).unwrap();
            s.record(vec![("k1".into(), "n1".into(), true)]).await.unwrap();
            s.write(|txn| {
                txn.delete_table(LOCATION_STAMPS)?;
                txn.open_table(META)?.remove(META_STAMP_INDEX)?;
                Ok(())
            })
            .await
            .unwrap();
        }
        let s = Redb::open(dir.path()).unwrap();
        assert_eq!(s.changes_after(0, 100).unwrap().len(), 1);
    }

    /// A wall clock fixed at `ms`.
    fn fixed(ms: u64) -> WallClock {
        Arc::new(move || ms)
    }

    #[tokio::test]
    async fn a_change_after_the_clock_was_set_back_across_a_restart_still_wins() {
        let dir = tempfile::tempdir().unwrap();
        let key = "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let now = 1_800_000_000_000;
        {
            let s = Redb::open_with_clock(dir.path(), fixed(now)).unwrap();
            s.record(vec![(key.into(), "n1".into(), true)]).await.unwrap();
        }
        let hour = 3_600_000;
        let s = Redb::open_with_clock(dir.path(), fixed(now - hour)).unwrap();
        s.record(vec![(key.into(), "n1".into(), false)]).await.unwrap();
        let e = &s.locations(key).unwrap()[0];
        assert!(!e.present, "the later change must win: {e:?}");
        assert!(e.changed_unix_ms > now);
        // And the change after it, too.
        s.record(vec![(key.into(), "n1".into(), true)]).await.unwrap();
        assert!(s.locations(key).unwrap()[0].present);
    }

    #[tokio::test]
    async fn a_log_written_before_the_counter_seeds_the_clock_from_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let key = "SHA256E-s6--5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        {
            let s = Redb::open_with_clock(dir.path(), fixed(5_000)).unwrap();
            s.record(vec![(key.into(), "n1".into(), true)]).await.unwrap();
            // As in a database from before the counter was kept.
            s.write(|txn| {
                txn.open_table(META)?.remove(META_LAST_STAMP)?;
                Ok(())
            })
            .await
            .unwrap();
        }
        let s = Redb::open_with_clock(dir.path(), fixed(1_000)).unwrap();
        s.record(vec![(key.into(), "n1".into(), false)]).await.unwrap();
        assert!(!s.locations(key).unwrap()[0].present);
    }
}
