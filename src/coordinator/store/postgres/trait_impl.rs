//! The storage interface, answered by the concern modules.

use std::collections::{HashMap, HashSet};

use super::Postgres;
use super::registry::{CLUSTER_SETTINGS, NODE_SETTINGS};
use crate::coordinator::store::{
    Backend, Change, Cluster, ClusterDeletion, ClusterSettings, ClusterSettingsUpdate,
    CoordinatorRecord, Created, HealthRow, JoinCheck, JoinTokenRecord, LocationEntry, Migrate,
    Node, NodeSettings, NodeSettingsUpdate, Registration, Removal, RemovedNode, Result, Revoked,
    SharedHealth, Snapshot, StampedChange, Token,
};

#[async_trait::async_trait]
impl Backend for Postgres {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    async fn clusters(&self) -> Result<Vec<Cluster>> {
        self.pg_clusters().await
    }
    async fn cluster_by_name(&self, name: &str) -> Result<Option<Cluster>> {
        self.pg_cluster_by("name", name).await
    }
    async fn cluster_by_uuid(&self, uuid: &str) -> Result<Option<Cluster>> {
        self.pg_cluster_by("uuid", uuid).await
    }
    async fn create_cluster(&self, name: &str) -> Result<(Cluster, bool)> {
        self.pg_create_cluster(name).await
    }
    async fn delete_cluster(&self, uuid: &str) -> Result<ClusterDeletion> {
        self.pg_delete_cluster(uuid).await
    }
    async fn nodes(&self) -> Result<Vec<Node>> {
        self.pg_nodes().await
    }
    async fn node(&self, uuid: &str) -> Result<Option<Node>> {
        self.pg_node(uuid).await
    }
    async fn register_node(&self, node: Node) -> Result<Registration> {
        self.pg_register_node(node).await
    }
    async fn remove_node(&self, uuid: &str, lost: bool) -> Result<Removal> {
        self.pg_remove_node(uuid, lost).await
    }
    async fn removed_nodes(&self) -> Result<Vec<RemovedNode>> {
        self.pg_removed_nodes().await
    }

    async fn node_settings(&self) -> Result<HashMap<String, NodeSettings>> {
        self.pg_all_settings(NODE_SETTINGS).await
    }
    async fn cluster_settings(&self) -> Result<HashMap<String, ClusterSettings>> {
        self.pg_all_settings(CLUSTER_SETTINGS).await
    }
    async fn update_node_settings_boxed(
        &self,
        uuid: &str,
        f: NodeSettingsUpdate,
    ) -> Result<NodeSettings> {
        self.pg_update_settings(NODE_SETTINGS, uuid, f).await
    }
    async fn update_cluster_settings_boxed(
        &self,
        uuid: &str,
        f: ClusterSettingsUpdate,
    ) -> Result<ClusterSettings> {
        self.pg_update_settings(CLUSTER_SETTINGS, uuid, f).await
    }

    async fn create_token(&self, token: Token) -> Result<Created> {
        self.pg_create_token(token).await
    }
    async fn remove_user(&self, name: &str) -> Result<Option<Token>> {
        self.pg_remove_user(name).await
    }
    async fn token(&self, sha256: &str) -> Result<Option<Token>> {
        self.pg_token(sha256).await
    }
    async fn tokens(&self) -> Result<Vec<Token>> {
        self.pg_tokens().await
    }
    async fn revoke_token(&self, prefix: &str) -> Result<Revoked> {
        self.pg_revoke_token(prefix).await
    }

    async fn create_join_token(&self, sha256: String, r: JoinTokenRecord) -> Result<()> {
        self.pg_create_join_token(sha256, r).await
    }
    async fn use_join_token(
        &self,
        sha256: String,
        role: String,
        node: Option<String>,
        now_unix_ms: u64,
    ) -> Result<JoinCheck> {
        self.pg_use_join_token(sha256, role, node, now_unix_ms).await
    }
    async fn add_admin_token(&self, sha256: String, created_unix_ms: u64) -> Result<()> {
        self.pg_add_admin_token(sha256, created_unix_ms).await
    }
    async fn is_admin_token(&self, sha256: &str) -> Result<bool> {
        self.pg_is_admin_token(sha256).await
    }
    async fn admin_token_count(&self) -> Result<u64> {
        self.pg_admin_token_count().await
    }
    async fn admin_token_hashes(&self) -> Result<HashSet<String>> {
        self.pg_admin_token_hashes().await
    }

    async fn record(&self, changes: Vec<Change>) -> Result<()> {
        self.writer.record(changes).await
    }
    async fn present_by_node(&self) -> Result<HashMap<String, HashSet<String>>> {
        self.pg_present_by_node().await
    }
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<StampedChange>> {
        self.pg_changes_after(after, limit).await
    }
    async fn locations(&self, key: &str) -> Result<Vec<LocationEntry>> {
        self.pg_locations(key).await
    }
    async fn location_keys_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.pg_location_keys_after(after, limit).await
    }

    async fn meta(&self, name: &str) -> Result<Option<u64>> {
        self.pg_meta(name).await
    }
    async fn set_meta(&self, name: &str, value: u64) -> Result<()> {
        self.pg_set_meta(name, value).await
    }

    async fn shared_clock_ms(&self, floor_ms: u64) -> Result<u64> {
        self.pg_shared_clock_ms(floor_ms).await
    }
    async fn save_health(&self, node_uuid: &str, health: SharedHealth) -> Result<()> {
        self.pg_save_health(node_uuid, health).await
    }
    async fn load_health(&self) -> Result<Vec<HealthRow>> {
        self.pg_load_health().await
    }
    async fn announce(&self, me: CoordinatorRecord) -> Result<()> {
        self.pg_announce(me).await
    }
    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>> {
        self.pg_coordinators().await
    }
}

#[async_trait::async_trait]
impl Migrate for Postgres {
    async fn export(&self) -> Result<Snapshot> {
        self.pg_export().await
    }
    async fn import(&self, s: Snapshot) -> Result<()> {
        self.pg_import(s).await
    }
    async fn import_locations(&self, entries: Vec<StampedChange>) -> Result<()> {
        self.pg_import_locations(entries).await
    }
}
