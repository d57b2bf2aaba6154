//! The registry: clusters and the nodes registered in them. Names are
//! unique: the check and the write share one transaction, so concurrent
//! requests cannot both take a name.

use serde::{Deserialize, Serialize};

use super::{
    CLUSTER_SETTINGS, CLUSTERS, NODES, Redb, RemovedNode, Result, all_values, decode, encode,
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    pub uuid: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub uuid: String,
    pub name: String,
    pub cluster_uuid: String,
    pub address: String,
}

impl crate::names::Named for Cluster {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
}

impl crate::names::Named for Node {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
}

/// What registering a node did.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    /// The node is stored as given: new, or changed since it last registered.
    Saved,
    /// The node is stored exactly so already (an agent restarting).
    Unchanged,
    /// This other node has the name; nothing was written.
    NameTaken(Node),
    /// The node was removed from the mesh and may not come back.
    Removed(RemovedNode),
}

/// What deleting a cluster did.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterDeletion {
    Deleted,
    /// No cluster has the UUID.
    NotFound,
    /// Nodes (their names) are registered in it; nothing was deleted.
    HasNodes(Vec<String>),
}

impl Redb {
    pub fn clusters(&self) -> Result<Vec<Cluster>> {
        all_values(&self.read()?.open_table(CLUSTERS)?)
    }

    pub fn cluster_by_name(&self, name: &str) -> Result<Option<Cluster>> {
        Ok(self.clusters()?.into_iter().find(|c| c.name == name))
    }

    pub fn cluster_by_uuid(&self, uuid: &str) -> Result<Option<Cluster>> {
        let t = self.read()?.open_table(CLUSTERS)?;
        t.get(uuid)?.map(|v| decode(v.value())).transpose()
    }

    /// Creates a cluster; returns the existing one (and false) when the name
    /// is taken.
    pub async fn create_cluster(&self, name: &str) -> Result<(Cluster, bool)> {
        let name = name.to_string();
        self.write(move |txn| {
            let mut t = txn.open_table(CLUSTERS)?;
            let existing = all_values::<Cluster>(&t)?.into_iter().find(|c| c.name == name);
            if let Some(c) = existing {
                return Ok((c, false));
            }
            let c = Cluster { uuid: new_cluster_uuid(), name };
            t.insert(c.uuid.as_str(), encode(&c).as_str())?;
            Ok((c, true))
        })
        .await
    }

    /// Deletes a cluster and its settings, unless nodes are registered in
    /// it: the check and the delete share one transaction.
    pub async fn delete_cluster(&self, uuid: &str) -> Result<ClusterDeletion> {
        let uuid = uuid.to_string();
        self.write(move |txn| {
            let nodes: Vec<String> = all_values::<Node>(&txn.open_table(NODES)?)?
                .into_iter()
                .filter(|n| n.cluster_uuid == uuid)
                .map(|n| n.name)
                .collect();
            if !nodes.is_empty() {
                return Ok(ClusterDeletion::HasNodes(nodes));
            }
            let mut t = txn.open_table(CLUSTERS)?;
            if t.remove(uuid.as_str())?.is_none() {
                return Ok(ClusterDeletion::NotFound);
            }
            txn.open_table(CLUSTER_SETTINGS)?.remove(uuid.as_str())?;
            Ok(ClusterDeletion::Deleted)
        })
        .await
    }

    pub fn nodes(&self) -> Result<Vec<Node>> {
        all_values(&self.read()?.open_table(NODES)?)
    }

    pub fn node(&self, uuid: &str) -> Result<Option<Node>> {
        let t = self.read()?.open_table(NODES)?;
        t.get(uuid)?.map(|v| decode(v.value())).transpose()
    }

    /// Stores a node under its UUID, unless another node has its name. A
    /// node registering again (same UUID) may change its name, cluster or
    /// address; what operators set on it is kept apart and stays.
    pub async fn register_node(&self, node: Node) -> Result<Registration> {
        self.write(move |txn| {
            if let Some(tomb) = super::removal::is_removed(txn, &node.uuid)? {
                return Ok(Registration::Removed(tomb));
            }
            let mut t = txn.open_table(NODES)?;
            let all = all_values::<Node>(&t)?;
            if let Some(other) = all.iter().find(|n| n.name == node.name && n.uuid != node.uuid) {
                return Ok(Registration::NameTaken(other.clone()));
            }
            if all.contains(&node) {
                return Ok(Registration::Unchanged);
            }
            t.insert(node.uuid.as_str(), encode(&node).as_str())?;
            Ok(Registration::Saved)
        })
        .await
    }
}

/// A fresh cluster UUID in git-annex's form for clusters: it begins with
/// `ac` and is a version 8 UUID (`8` as its 15th character). Clients that
/// see that form never count the cluster as a copy of its own and never
/// write it to location logs; they count its nodes instead.
pub fn new_cluster_uuid() -> String {
    let mut u = uuid::Uuid::new_v4().to_string().into_bytes();
    u[0] = b'a';
    u[1] = b'c';
    u[14] = b'8';
    String::from_utf8(u).expect("ASCII")
}

/// Whether `uuid` has git-annex's form for cluster UUIDs.
pub fn is_cluster_uuid(uuid: &str) -> bool {
    uuid.starts_with("ac") && uuid.as_bytes().get(14) == Some(&b'8')
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn node(uuid: &str, name: &str) -> Node {
        Node {
            uuid: uuid.into(),
            name: name.into(),
            cluster_uuid: "c".into(),
            address: "127.0.0.1:1".into(),
        }
    }

    #[tokio::test]
    async fn clusters_are_unique_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = Redb::open(dir.path()).unwrap();
        let (a, created) = s.create_cluster("mesh").await.unwrap();
        assert!(created);
        let (b, created) = s.create_cluster("mesh").await.unwrap();
        assert!(!created);
        assert_eq!(a, b);
        // In git-annex's form for cluster UUIDs, and still a UUID.
        assert!(is_cluster_uuid(&a.uuid), "{}", a.uuid);
        assert!(uuid::Uuid::parse_str(&a.uuid).is_ok());
        assert!(!is_cluster_uuid(&uuid::Uuid::new_v4().to_string().replacen(|_| true, "b", 1)));
        assert_eq!(s.cluster_by_uuid(&a.uuid).unwrap(), Some(a));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_of_one_name_make_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Redb::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.create_cluster("mesh").await.unwrap() })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        let clusters = s.clusters().unwrap();
        assert_eq!(clusters.len(), 1);
        // Every caller got the one cluster.
        assert!(results.iter().all(|(c, _)| *c == clusters[0]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_registrations_under_one_name_let_one_node_have_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Redb::open(dir.path()).unwrap());
        let (a, b) = (node("u-a", "node1"), node("u-b", "node1"));
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (s, a) = (s.clone(), a.clone());
                async move { s.register_node(a).await.unwrap() }
            }),
            tokio::spawn({
                let (s, b) = (s.clone(), b.clone());
                async move { s.register_node(b).await.unwrap() }
            }),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let winner = match (&ra, &rb) {
            (Registration::Saved, Registration::NameTaken(by)) => {
                assert_eq!(*by, a);
                a
            }
            (Registration::NameTaken(by), Registration::Saved) => {
                assert_eq!(*by, b);
                b
            }
            other => panic!("expected one success and one refusal, got {other:?}"),
        };
        assert_eq!(s.nodes().unwrap(), vec![winner]);
    }

    #[tokio::test]
    async fn a_node_registering_again_keeps_its_name_and_may_move() {
        let dir = tempfile::tempdir().unwrap();
        let s = Redb::open(dir.path()).unwrap();
        let n = node("u-a", "node1");
        assert_eq!(s.register_node(n.clone()).await.unwrap(), Registration::Saved);
        // A restart with the same identity changes nothing.
        assert_eq!(s.register_node(n.clone()).await.unwrap(), Registration::Unchanged);
        // A new address (or name) under the same UUID is stored.
        let moved = Node { address: "127.0.0.1:2".into(), ..n.clone() };
        assert_eq!(s.register_node(moved.clone()).await.unwrap(), Registration::Saved);
        assert_eq!(s.node("u-a").unwrap(), Some(moved.clone()));
        assert_eq!(
            s.register_node(node("u-b", "node1")).await.unwrap(),
            Registration::NameTaken(moved)
        );
        assert_eq!(s.nodes().unwrap().len(), 1);
    }
}
