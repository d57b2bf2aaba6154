//! Named counters kept across restarts, such as the cluster clock's lease.

use super::{META, Redb, Result};

impl Redb {
    /// The counter `name`, if it was ever set.
    pub fn meta(&self, name: &str) -> Result<Option<u64>> {
        let t = self.read()?.open_table(META)?;
        Ok(t.get(name)?.map(|v| v.value()))
    }

    /// Sets the counter `name`; returns once it is durable.
    pub async fn set_meta(&self, name: &str, value: u64) -> Result<()> {
        let name = name.to_string();
        self.write(move |txn| {
            txn.open_table(META)?.insert(name.as_str(), value)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_are_kept_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Redb::open(dir.path()).unwrap();
            assert_eq!(s.meta("lease").unwrap(), None);
            s.set_meta("lease", 7).await.unwrap();
            s.set_meta("lease", 9).await.unwrap();
            assert_eq!(s.meta("lease").unwrap(), Some(9));
        }
        let s = Redb::open(dir.path()).unwrap();
        assert_eq!(s.meta("lease").unwrap(), Some(9));
        assert_eq!(s.meta("other").unwrap(), None);
    }
}
