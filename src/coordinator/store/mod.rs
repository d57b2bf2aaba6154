//! The coordinator's durable state behind one interface (`backend`): the
//! registry of clusters and nodes (`registry`), the location log
//! (`locations`), what operators set on them (`settings`), the access tokens
//! (`tokens`, `credentials`), persisted counters such as the cluster clock's
//! lease (`meta`), and what several coordinators share (health, the clock).
//!
//! Two backends: the embedded redb database (`embedded`, the default: one
//! coordinator, one host; each concern file holds its redb code beside its
//! types) and PostgreSQL (`postgres`: any number of coordinators at once).

mod backend;
mod credentials;
mod embedded;
mod embedded_migrate;
mod locations;
mod meta;
pub mod postgres;
mod registry;
mod removal;
mod scan;
mod settings;
mod tokens;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use backend::{
    Backend, ClusterSettingsUpdate, CoordinatorRecord, HealthRow, Migrate, NodeSettingsUpdate,
    SharedDegraded, SharedHealth, Snapshot,
};
pub use credentials::{JoinCheck, JoinTokenRecord};
pub use locations::{Change, LocationEntry, StampedChange, WallClock, system_clock};
pub use registry::{
    Cluster, ClusterDeletion, Node, Registration, is_cluster_uuid, new_cluster_uuid,
};
pub use removal::{Removal, RemovedNode};
pub use settings::{
    ClusterSettings, DEFAULT_NODE_COST, DEFAULT_REPLICATION, NodeSettings, Replication,
};
pub use tokens::{Created, Revoked, Token};

pub use embedded::{DEFAULT_CACHE_MIB as REDB_DEFAULT_CACHE_MIB, FILE as REDB_FILE, Redb};

// The on-disk format: table names and encodings must stay as they are, so
// that an existing data directory keeps opening.

/// Cluster UUID -> Cluster as JSON.
const CLUSTERS: TableDefinition<&str, &str> = TableDefinition::new("clusters");
/// Node UUID -> Node as JSON.
const NODES: TableDefinition<&str, &str> = TableDefinition::new("nodes");
/// "KEY\tNODE-UUID" -> (changed unix ms, present). A tab never occurs in a
/// valid key, so all entries of one key form one contiguous range.
const LOCATIONS: TableDefinition<&str, (u64, bool)> = TableDefinition::new("locations");
/// Location stamp -> "KEY\tNODE-UUID": the log's entries by when they
/// last changed, so that changes since a stamp are one range read.
const LOCATION_STAMPS: TableDefinition<u64, &str> = TableDefinition::new("location_stamps");
/// Counter name -> value.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Node UUID -> NodeSettings as JSON, apart from `nodes` so that an agent's
/// registration never overwrites what an operator set.
const NODE_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("node_settings");
/// Node UUID -> RemovedNode as JSON: nodes removed from the mesh, whose
/// identity may not register again.
const REMOVED_NODES: TableDefinition<&str, &str> = TableDefinition::new("removed_nodes");
/// Cluster UUID -> ClusterSettings as JSON.
const CLUSTER_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("cluster_settings");
/// Hex SHA-256 of an access token -> TokenRecord as JSON. Only the hash is
/// kept, so the database alone grants no access.
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
/// Hex SHA-256 of a join token's secret -> JoinTokenRecord as JSON.
const JOIN_TOKENS: TableDefinition<&str, &str> = TableDefinition::new("join_tokens");
/// Hex SHA-256 of an admin token -> created unix ms.
const ADMIN_TOKENS: TableDefinition<&str, u64> = TableDefinition::new("admin_tokens");
/// Node UUID -> unix ms a certificate was issued for it by joining.
const JOINED_AGENTS: TableDefinition<&str, u64> = TableDefinition::new("joined_agents");

/// Why a store operation failed. Clone, so that one failed group commit can
/// answer every write in the group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(Arc<redb::Error>),
    /// A backend other than redb failed (e.g. PostgreSQL unreachable).
    #[error("database error: {0}")]
    Backend(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("{what}: {source}")]
    Io { what: String, source: Arc<std::io::Error> },
    #[error("the database writer has stopped; restart the coordinator")]
    WriterStopped,
    #[error("the database write failed unexpectedly and was abandoned; see the coordinator's log")]
    Abandoned,
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Arc::new(e.into())) }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where the coordinator keeps its state, as `--store` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSpec {
    /// The embedded database in this directory.
    Redb(PathBuf),
    /// A PostgreSQL database, shared by any number of coordinators.
    Postgres(String),
}

impl std::str::FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<StoreSpec, String> {
        if let Some(path) = s.strip_prefix("redb:") {
            if path.is_empty() {
                return Err("redb: needs a directory, e.g. redb:/var/lib/annexmesh/db".into());
            }
            Ok(StoreSpec::Redb(PathBuf::from(path)))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreSpec::Postgres(s.to_string()))
        } else {
            Err(format!(
                "unknown store {s:?}: give redb:DIRECTORY or postgres://USER@HOST/DATABASE"
            ))
        }
    }
}

/// The coordinator's state, in whichever backend `--store` chose, and the
/// topology change signal the gateways' watch streams follow.
pub struct Store {
    backend: Box<dyn Backend>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        self.backend.as_ref()
    }
}

impl Store {
    /// Opens (or creates) the embedded database in `dir`. Blocks on the
    /// disk: call it before serving, or off the async workers.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_clock(dir, system_clock())
    }

    /// As `open`, with location stamps starting from `wall` rather than the
    /// system's wall clock.
    pub fn open_with_clock(dir: &Path, wall: WallClock) -> Result<Store> {
        Store::open_with_cache(dir, wall, embedded::DEFAULT_CACHE_MIB)
    }

    /// As `open_with_clock`, with the embedded database's page cache at
    /// most `cache_mib` MiB.
    pub fn open_with_cache(dir: &Path, wall: WallClock, cache_mib: usize) -> Result<Store> {
        Store::with_backend(|| Ok(Box::new(Redb::open_with_cache(dir, wall, cache_mib)?)))
    }

    /// Opens the store `spec` names; `wall` applies to the embedded one.
    pub async fn connect(spec: &StoreSpec, wall: WallClock) -> Result<Store> {
        Store::connect_with_cache(spec, wall, embedded::DEFAULT_CACHE_MIB).await
    }

    /// As `connect`, with the embedded database's page cache at most
    /// `cache_mib` MiB (PostgreSQL keeps its cache in its own server).
    pub async fn connect_with_cache(
        spec: &StoreSpec,
        wall: WallClock,
        cache_mib: usize,
    ) -> Result<Store> {
        match spec {
            StoreSpec::Redb(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || Store::open_with_cache(&dir, wall, cache_mib))
                    .await
                    .map_err(|e| StoreError::Backend(format!("opening the database failed: {e}")))?
            }
            StoreSpec::Postgres(url) => {
                let changes = Arc::new(tokio::sync::watch::channel(0).0);
                let signal = changes.clone();
                let on_change: Arc<dyn Fn() + Send + Sync> =
                    Arc::new(move || signal.send_modify(|v| *v += 1));
                let pg = postgres::Postgres::connect(url, on_change).await?;
                Ok(Store { backend: Box::new(pg), changes })
            }
        }
    }

    fn with_backend(open: impl FnOnce() -> Result<Box<dyn Backend>>) -> Result<Store> {
        let changes = Arc::new(tokio::sync::watch::channel(0).0);
        Ok(Store { backend: open()?, changes })
    }

    /// The backend, for moving a mesh between stores.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Hears of changes to clusters, nodes and their settings, made by this
    /// coordinator or (on a shared store) another: the value only counts up.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells subscribers that the topology changed.
    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    // The writes that change the topology, so that subscribers hear of them.

    pub async fn create_cluster(&self, name: &str) -> Result<(Cluster, bool)> {
        let r = self.backend.create_cluster(name).await?;
        if r.1 {
            self.changed();
        }
        Ok(r)
    }

    pub async fn delete_cluster(&self, uuid: &str) -> Result<ClusterDeletion> {
        let r = self.backend.delete_cluster(uuid).await?;
        if r == ClusterDeletion::Deleted {
            self.changed();
        }
        Ok(r)
    }

    pub async fn register_node(&self, node: Node) -> Result<Registration> {
        let r = self.backend.register_node(node).await?;
        if r == Registration::Saved {
            self.changed();
        }
        Ok(r)
    }

    pub async fn remove_node(&self, uuid: &str, lost: bool) -> Result<Removal> {
        let r = self.backend.remove_node(uuid, lost).await?;
        self.changed();
        Ok(r)
    }

    /// Changes a node's settings in one transaction; returns the result.
    pub async fn update_node_settings(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut NodeSettings) + Send + 'static,
    ) -> Result<NodeSettings> {
        let r = self.backend.update_node_settings_boxed(uuid, Box::new(f)).await?;
        self.changed();
        Ok(r)
    }

    /// Changes a cluster's settings in one transaction; returns the result.
    pub async fn update_cluster_settings(
        &self,
        uuid: &str,
        f: impl FnOnce(&mut ClusterSettings) + Send + 'static,
    ) -> Result<ClusterSettings> {
        let r = self.backend.update_cluster_settings_boxed(uuid, Box::new(f)).await?;
        self.changed();
        Ok(r)
    }
}

/// Every value of a JSON-valued table.
fn all_values<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static str>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(t.len()? as usize);
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{e}: {s}")))
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialise")
}
