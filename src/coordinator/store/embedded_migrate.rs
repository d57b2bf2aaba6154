//! Moving a mesh into or out of the embedded store (`admin migrate-store`).

use redb::{ReadableTable, ReadableTableMetadata};

use super::embedded::Redb;
use super::*;

fn pairs_u64(t: &impl ReadableTable<&'static str, u64>) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_string(), v.value()));
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Migrate for Redb {
    async fn export(&self) -> Result<Snapshot> {
        let txn = self.read()?;
        let mut join_tokens = Vec::new();
        for row in txn.open_table(JOIN_TOKENS)?.iter()? {
            let (k, v) = row?;
            join_tokens.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(Snapshot {
            clusters: Redb::clusters(self)?,
            nodes: Redb::nodes(self)?,
            node_settings: Redb::node_settings(self)?,
            cluster_settings: Redb::cluster_settings(self)?,
            removed: Redb::removed_nodes(self)?,
            tokens: Redb::tokens(self)?,
            join_tokens,
            admin_tokens: pairs_u64(&txn.open_table(ADMIN_TOKENS)?)?,
            joined_agents: pairs_u64(&txn.open_table(JOINED_AGENTS)?)?,
            meta: pairs_u64(&txn.open_table(META)?)?,
        })
    }

    async fn import(&self, s: Snapshot) -> Result<()> {
        self.write(move |txn| {
            let nonempty = !txn.open_table(CLUSTERS)?.is_empty()?
                || !txn.open_table(NODES)?.is_empty()?
                || !txn.open_table(LOCATIONS)?.is_empty()?;
            if nonempty {
                return Err(StoreError::Backend(
                    "the target store already holds a mesh; import only into an empty one".into(),
                ));
            }
            let mut t = txn.open_table(CLUSTERS)?;
            for c in &s.clusters {
                t.insert(c.uuid.as_str(), encode(c).as_str())?;
            }
            let mut t = txn.open_table(NODES)?;
            for n in &s.nodes {
                t.insert(n.uuid.as_str(), encode(n).as_str())?;
            }
            let mut t = txn.open_table(NODE_SETTINGS)?;
            for (k, v) in &s.node_settings {
                t.insert(k.as_str(), encode(v).as_str())?;
            }
            let mut t = txn.open_table(CLUSTER_SETTINGS)?;
            for (k, v) in &s.cluster_settings {
                t.insert(k.as_str(), encode(v).as_str())?;
            }
            let mut t = txn.open_table(REMOVED_NODES)?;
            for r in &s.removed {
                t.insert(r.node.uuid.as_str(), encode(r).as_str())?;
            }
            let mut t = txn.open_table(JOIN_TOKENS)?;
            for (k, v) in &s.join_tokens {
                t.insert(k.as_str(), encode(v).as_str())?;
            }
            let mut t = txn.open_table(ADMIN_TOKENS)?;
            for (k, v) in &s.admin_tokens {
                t.insert(k.as_str(), *v)?;
            }
            let mut t = txn.open_table(JOINED_AGENTS)?;
            for (k, v) in &s.joined_agents {
                t.insert(k.as_str(), *v)?;
            }
            let mut t = txn.open_table(META)?;
            for (k, v) in &s.meta {
                let old = t.get(k.as_str())?.map(|v| v.value()).unwrap_or(0);
                t.insert(k.as_str(), old.max(*v))?;
            }
            Ok(())
        })
        .await?;
        for token in s.tokens {
            Redb::create_token(self, token).await?;
        }
        Ok(())
    }

    async fn import_locations(&self, entries: Vec<StampedChange>) -> Result<()> {
        let stamps = self.stamps.clone();
        self.write(move |txn| locations::import_in(txn, &entries, &stamps)).await
    }
}
