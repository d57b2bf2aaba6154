//! What operators set on nodes (preferred content, draining, cost) and on
//! clusters (minimum copies, space reserve), kept apart from the registry so
//! that an agent registering again never resets them.

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CLUSTER_SETTINGS, NODE_SETTINGS, Redb, Result, decode, encode};

/// What operators set on a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeSettings {
    /// Preferred content expression; None wants everything.
    pub wanted: Option<String>,
    /// A draining node gets no new content but still serves what it has.
    pub draining: bool,
    /// Preference among holders for GET and CHECKPRESENT, lower first; None
    /// means DEFAULT_NODE_COST.
    pub cost: Option<u32>,
}

/// A node's cost when operators set none (git-annex's cost of a remote
/// reached over the network is 200 and a local one 100; nodes start equal).
pub const DEFAULT_NODE_COST: u32 = 100;

/// What operators set on a cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClusterSettings {
    /// Nodes that must store a PUT for it to succeed; None means 1.
    pub min_copies: Option<u32>,
    /// Free space a PUT must leave on a node; None means the coordinator's
    /// default.
    pub reserve_bytes: Option<u64>,
    /// How PUTs reach the nodes; None means [`DEFAULT_REPLICATION`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
}

/// How a PUT's content reaches the nodes that store it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// The gateway sends a copy to every target at once.
    Fanout,
    /// The gateway sends one copy down a chain of the targets.
    Chain,
}

/// A cluster's replication when operators set none.
pub const DEFAULT_REPLICATION: Replication = Replication::Fanout;

impl Replication {
    pub fn to_rpc(self) -> crate::rpc::Replication {
        match self {
            Replication::Fanout => crate::rpc::Replication::Fanout,
            Replication::Chain => crate::rpc::Replication::Chain,
        }
    }

    pub fn from_rpc(r: crate::rpc::Replication) -> Self {
        match r {
            crate::rpc::Replication::Fanout => Replication::Fanout,
            crate::rpc::Replication::Chain => Replication::Chain,
        }
    }
}

type Settings = TableDefinition<'static, &'static str, &'static str>;

impl Redb {
    /// Every node's settings, by node UUID.
    pub fn node_settings(&self) -> Result<HashMap<String, NodeSettings>> {
        self.all_settings(NODE_SETTINGS)
    }

    /// Every cluster's settings, by cluster UUID.
    pub fn cluster_settings(&self) -> Result<HashMap<String, ClusterSettings>> {
        self.all_settings(CLUSTER_SETTINGS)
    }

    /// Changes a node's settings in one transaction; returns the result.
    pub async fn update_node_settings(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut NodeSettings) + Send + 'static,
    ) -> Result<NodeSettings> {
        self.update_settings(NODE_SETTINGS, uuid, f).await
    }

    /// Changes a cluster's settings in one transaction; returns the result.
    pub async fn update_cluster_settings(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut ClusterSettings) + Send + 'static,
    ) -> Result<ClusterSettings> {
        self.update_settings(CLUSTER_SETTINGS, uuid, f).await
    }

    fn all_settings<T: DeserializeOwned>(&self, table: Settings) -> Result<HashMap<String, T>> {
        let t = self.read()?.open_table(table)?;
        let mut out = HashMap::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.insert(k.value().to_string(), decode(v.value())?);
        }
        Ok(out)
    }

    async fn update_settings<T>(
        &self,
        table: Settings,
        uuid: &str,
        f: impl FnOnce(&mut T) + Send + 'static,
    ) -> Result<T>
    where
        T: Default + Serialize + DeserializeOwned + Send + 'static,
    {
        let uuid = uuid.to_string();
        self.write(move |txn| {
            let mut t = txn.open_table(table)?;
            let mut value: T = match t.get(uuid.as_str())? {
                Some(v) => decode(v.value())?,
                None => T::default(),
            };
            f(&mut value);
            t.insert(uuid.as_str(), encode(&value).as_str())?;
            Ok(value)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::store::Node;

    #[tokio::test]
    async fn settings_survive_reopen_and_registration() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node {
            uuid: "n1".into(),
            name: "node1".into(),
            cluster_uuid: "c".into(),
            address: "a".into(),
        };
        {
            let s = Redb::open(dir.path()).unwrap();
            s.register_node(node.clone()).await.unwrap();
            let set = s
                .update_node_settings("n1", |n| {
                    n.wanted = Some("largerthan=1MB".into());
                    n.draining = true;
                })
                .await
                .unwrap();
            assert_eq!(
                set,
                NodeSettings { wanted: Some("largerthan=1MB".into()), draining: true, cost: None }
            );
            let set = s.update_node_settings("n1", |n| n.cost = Some(10)).await.unwrap();
            assert_eq!(set.cost, Some(10));
            s.update_cluster_settings("c", |c| c.min_copies = Some(3)).await.unwrap();
            s.update_cluster_settings("c", |c| c.reserve_bytes = Some(5)).await.unwrap();
            // An agent registering again does not reset what operators set.
            s.register_node(Node { address: "b".into(), ..node.clone() }).await.unwrap();
        }
        let s = Redb::open(dir.path()).unwrap();
        assert_eq!(
            s.node_settings().unwrap().get("n1"),
            Some(&NodeSettings {
                wanted: Some("largerthan=1MB".into()),
                draining: true,
                cost: Some(10)
            })
        );
        assert_eq!(
            s.cluster_settings().unwrap().get("c"),
            Some(&ClusterSettings {
                min_copies: Some(3),
                reserve_bytes: Some(5),
                replication: None
            })
        );
        let set = s.update_node_settings("n1", |n| n.draining = false).await.unwrap();
        assert_eq!(set.wanted.as_deref(), Some("largerthan=1MB"));
        assert!(!s.node_settings().unwrap()["n1"].draining);
    }
}
