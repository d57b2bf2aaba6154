//! The location log: which nodes hold which keys. Per key and node the
//! newest entry wins, as in git-annex's location log.

use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, WriteTransaction};

use super::{LOCATIONS, Result, Store};

/// One location change: (key, node UUID, present).
pub type Change = (String, String, bool);

/// A node's newest entry for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationEntry {
    pub node_uuid: String,
    pub present: bool,
    pub changed_unix_ms: u64,
}

/// Location timestamps strictly increase, so "newest wins" is a total order
/// even for changes recorded within one millisecond.
#[derive(Debug, Default)]
pub(super) struct Stamps {
    last: AtomicU64,
}

impl Stamps {
    fn next(&self) -> u64 {
        let now = crate::clock::unix_ms();
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

fn location_key(key: &str, node: &str) -> String {
    format!("{key}\t{node}")
}

impl Store {
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
    for (key, node, present) in changes {
        let stamp = stamps.next();
        let lk = location_key(key, node);
        let newer = match t.get(lk.as_str())? {
            Some(v) => v.value().0 < stamp,
            None => true,
        };
        if newer {
            t.insert(lk.as_str(), (stamp, *present))?;
        }
    }
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
            let s = Store::open(dir.path()).unwrap();
            s.record(vec![(key.into(), "n1".into(), true), (key.into(), "n2".into(), true)])
                .await
                .unwrap();
            s.record(vec![(key.into(), "n2".into(), false)]).await.unwrap();
            // A key that shares a prefix must not leak into the range.
            s.record(vec![(format!("{key}x"), "n3".into(), true)]).await.unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let mut got: Vec<_> =
            s.locations(key).unwrap().into_iter().map(|e| (e.node_uuid, e.present)).collect();
        got.sort();
        assert_eq!(got, vec![("n1".to_string(), true), ("n2".to_string(), false)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_records_commit_every_change_in_request_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(dir.path()).unwrap());
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
}
