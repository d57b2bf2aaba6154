//! The storage interface: everything the coordinator keeps, as one trait
//! with two implementations, the embedded redb database (`redb`, one host)
//! and PostgreSQL (`postgres`, any number of coordinators sharing it).
//!
//! Every method is one transaction: a check and the write it guards are
//! never split, whichever coordinator runs them.

use std::collections::{HashMap, HashSet};

use super::{
    Change, Cluster, ClusterDeletion, ClusterSettings, Created, JoinCheck, JoinTokenRecord,
    LocationEntry, Node, NodeSettings, Registration, Removal, RemovedNode, Result, Revoked,
    StampedChange, Token,
};

/// A change to a node's settings, applied in the transaction that reads them.
pub type NodeSettingsUpdate = Box<dyn FnOnce(&mut NodeSettings) + Send>;
/// A change to a cluster's settings, applied in the transaction that reads them.
pub type ClusterSettingsUpdate = Box<dyn FnOnce(&mut ClusterSettings) + Send>;

/// A node's last health report as kept for every coordinator to read.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SharedHealth {
    /// How long before it was written the node was last heard from: the
    /// report may be written later (with a failure noted since), and must
    /// not make the node look heard from then.
    pub heard_ms_ago: u64,
    pub boot_id: String,
    pub free_bytes: Option<u64>,
    pub active_transfers: u32,
    pub partial_bytes: u64,
    pub quarantined: u64,
    /// When degraded: the last failure (kind and error), and what the node
    /// has shown since.
    pub degraded: Option<SharedDegraded>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SharedDegraded {
    /// "put", "data" or "store".
    pub kind: String,
    pub error: String,
    pub writable: bool,
    pub reached: bool,
    /// When the last failure was noted (the noting coordinator's clock):
    /// which failure this is, so that a newer one wins.
    pub failure_unix_ms: u64,
}

/// A health report read back: the report and how long ago it was written,
/// by the database's clock (so that coordinators' clocks need not agree).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRow {
    pub node_uuid: String,
    pub age_ms: u64,
    pub health: SharedHealth,
}

/// A coordinator as it announces itself to the others.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CoordinatorRecord {
    /// A fresh id per run.
    pub id: String,
    /// Where it serves gRPC, as members reach it.
    pub address: String,
    pub version: String,
    pub started_unix_ms: u64,
    /// Filled in when read: milliseconds since it last announced itself.
    pub age_ms: u64,
}

#[async_trait::async_trait]
pub trait Backend: Migrate + Send + Sync {
    /// "redb:PATH" or "postgres://HOST/DB" (without credentials), for logs
    /// and `admin status`.
    fn describe(&self) -> String;

    /// Whether other coordinators may share this store (and so its health
    /// reports, clock and topology changes come from outside this process).
    fn shared(&self) -> bool;

    // The registry.
    async fn clusters(&self) -> Result<Vec<Cluster>>;
    async fn cluster_by_name(&self, name: &str) -> Result<Option<Cluster>>;
    async fn cluster_by_uuid(&self, uuid: &str) -> Result<Option<Cluster>>;
    /// Creates a cluster; returns the existing one (and false) when the name
    /// is taken.
    async fn create_cluster(&self, name: &str) -> Result<(Cluster, bool)>;
    /// Deletes a cluster and its settings; refused while nodes are
    /// registered in it (removed nodes do not count).
    async fn delete_cluster(&self, uuid: &str) -> Result<ClusterDeletion>;
    async fn nodes(&self) -> Result<Vec<Node>>;
    async fn node(&self, uuid: &str) -> Result<Option<Node>>;
    /// Stores a node under its UUID, unless another node has its name or it
    /// was removed.
    async fn register_node(&self, node: Node) -> Result<Registration>;
    /// Removes the node `uuid`; unless `lost`, only when the log lists
    /// another registered node for every key it holds. Strikes its entries.
    async fn remove_node(&self, uuid: &str, lost: bool) -> Result<Removal>;
    async fn removed_nodes(&self) -> Result<Vec<RemovedNode>>;

    // What operators set.
    async fn node_settings(&self) -> Result<HashMap<String, NodeSettings>>;
    async fn cluster_settings(&self) -> Result<HashMap<String, ClusterSettings>>;
    async fn update_node_settings_boxed(
        &self,
        uuid: &str,
        f: NodeSettingsUpdate,
    ) -> Result<NodeSettings>;
    async fn update_cluster_settings_boxed(
        &self,
        uuid: &str,
        f: ClusterSettingsUpdate,
    ) -> Result<ClusterSettings>;

    // Access tokens of the line-protocol and HTTP front-ends.
    async fn create_token(&self, token: Token) -> Result<Created>;
    async fn remove_user(&self, name: &str) -> Result<Option<Token>>;
    async fn token(&self, sha256: &str) -> Result<Option<Token>>;
    async fn tokens(&self) -> Result<Vec<Token>>;
    async fn revoke_token(&self, prefix: &str) -> Result<Revoked>;

    // Join and admin credentials.
    async fn create_join_token(&self, sha256: String, r: JoinTokenRecord) -> Result<()>;
    async fn use_join_token(
        &self,
        sha256: String,
        role: String,
        node: Option<String>,
        now_unix_ms: u64,
    ) -> Result<JoinCheck>;
    async fn add_admin_token(&self, sha256: String, created_unix_ms: u64) -> Result<()>;
    async fn is_admin_token(&self, sha256: &str) -> Result<bool>;
    async fn admin_token_count(&self) -> Result<u64>;
    /// Every admin token's hash.
    async fn admin_token_hashes(&self) -> Result<HashSet<String>>;

    // The location log.
    /// Records location changes; returns once they are durable. Concurrent
    /// callers' changes may share a transaction; a later change gets a later
    /// stamp.
    async fn record(&self, changes: Vec<Change>) -> Result<()>;
    async fn present_by_node(&self) -> Result<HashMap<String, HashSet<String>>>;
    /// Up to `limit` entries, oldest stamp first, that changed after
    /// `after`. Stamps are committed in order, so reading on from the last
    /// one returned misses nothing.
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<StampedChange>>;
    async fn locations(&self, key: &str) -> Result<Vec<LocationEntry>>;
    async fn location_keys_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    // Counters.
    async fn meta(&self, name: &str) -> Result<Option<u64>>;
    async fn set_meta(&self, name: &str, value: u64) -> Result<()>;

    // What coordinators share when there are several (see `shared`).
    /// The cluster clock: never below `floor_ms` nor any value it returned
    /// before, to any coordinator. Only for shared stores.
    async fn shared_clock_ms(&self, floor_ms: u64) -> Result<u64>;
    /// Keeps a node's health report for the other coordinators.
    async fn save_health(&self, node_uuid: &str, health: SharedHealth) -> Result<()>;
    /// Every node's health report with its age.
    async fn load_health(&self) -> Result<Vec<HealthRow>>;
    /// Announces this coordinator (again); the others list it.
    async fn announce(&self, me: CoordinatorRecord) -> Result<()>;
    /// The coordinators that announced themselves lately, with their ages.
    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>>;
}

/// Everything a store holds but the location log, for moving a mesh from
/// one store to another (`admin migrate-store`); the log moves by
/// `changes_after` and `import_locations`, a page at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub clusters: Vec<Cluster>,
    pub nodes: Vec<Node>,
    pub node_settings: HashMap<String, NodeSettings>,
    pub cluster_settings: HashMap<String, ClusterSettings>,
    pub removed: Vec<RemovedNode>,
    pub tokens: Vec<Token>,
    /// (SHA-256 of the secret, record).
    pub join_tokens: Vec<(String, JoinTokenRecord)>,
    /// (SHA-256 of the token, created unix ms).
    pub admin_tokens: Vec<(String, u64)>,
    /// (node UUID, unix ms its certificate was issued).
    pub joined_agents: Vec<(String, u64)>,
    /// Counters, the cluster clock's lease and the largest stamp among them.
    pub meta: Vec<(String, u64)>,
}

/// Moving a mesh between stores.
#[async_trait::async_trait]
pub trait Migrate: Send + Sync {
    async fn export(&self) -> Result<Snapshot>;
    /// Writes `s` into this store, which must hold no clusters, nodes or
    /// locations yet.
    async fn import(&self, s: Snapshot) -> Result<()>;
    /// Writes location entries with their stamps as given; later stamps of
    /// this store's own continue above the largest.
    async fn import_locations(&self, entries: Vec<StampedChange>) -> Result<()>;
}
