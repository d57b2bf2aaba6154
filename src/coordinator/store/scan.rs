//! Walking the location log key by key, a page at a time, for background
//! work such as repair: each page is its own read transaction, so a long
//! walk never holds one snapshot open.

use super::{LOCATIONS, Redb, Result};

impl Redb {
    /// Up to `limit` distinct keys of the location log, in order, after
    /// `after` (from the first key when None). Entries saying "absent" count:
    /// the caller reads each key's entries with `locations`.
    pub fn location_keys_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let txn = self.read()?;
        let t = txn.open_table(LOCATIONS)?;
        // Every entry of a key sorts before "KEY\n", so starting there skips
        // all of `after`'s entries.
        let start = after.map(|k| format!("{k}\n")).unwrap_or_default();
        let mut keys: Vec<String> = Vec::new();
        for row in t.range(start.as_str()..)? {
            let (k, _) = row?;
            let key = k.value().split('\t').next().unwrap_or_default();
            if keys.last().is_some_and(|last| last == key) {
                continue;
            }
            if keys.len() == limit {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_come_once_each_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = Redb::open(dir.path()).unwrap();
        let keys: Vec<String> = (0..5).map(|i| format!("SHA256E-s{i}--{i:064x}")).collect();
        for k in &keys {
            s.record(vec![(k.clone(), "n1".into(), true), (k.clone(), "n2".into(), false)])
                .await
                .unwrap();
        }
        // A key that extends another sorts after it and is its own key.
        let longer = format!("{}x", keys[0]);
        s.record(vec![(longer.clone(), "n1".into(), true)]).await.unwrap();
        let mut all = keys.clone();
        all.push(longer);
        all.sort();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let page = s.location_keys_after(after.as_deref(), 2).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            after = page.last().cloned();
            seen.extend(page);
        }
        assert_eq!(seen, all);
    }
}
