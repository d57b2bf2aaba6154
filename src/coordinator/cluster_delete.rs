//! Deleting a cluster (`annexmesh admin cluster delete`): refused while
//! nodes are registered in it; with `force`, its nodes are removed as lost
//! first. Its git repository (and so its git-annex branch, with the
//! cluster's structure) goes with it.

use tonic::Status;
use tracing::warn;

use super::core::Core;
use super::store::{Cluster, ClusterDeletion, Removal};
use crate::rpc;

/// Deletes `c`; what was removed.
pub async fn delete(
    core: &Core,
    c: Cluster,
    force: bool,
) -> Result<rpc::DeleteClusterReply, Status> {
    let (mut nodes_removed, mut struck) = (0u32, 0u64);
    if force {
        for n in core.store.nodes().await?.into_iter().filter(|n| n.cluster_uuid == c.uuid) {
            if let Removal::Done { struck: s, .. } = core.store.remove_node(&n.uuid, true).await? {
                core.health.forget(&n.uuid);
                nodes_removed += 1;
                struck += s;
            }
        }
    }
    match core.store.delete_cluster(&c.uuid).await? {
        ClusterDeletion::Deleted => {}
        ClusterDeletion::NotFound => {
            return Err(Status::not_found(format!("unknown cluster {:?}", c.name)));
        }
        ClusterDeletion::HasNodes(names) => {
            return Err(Status::failed_precondition(format!(
                "cluster {} has nodes ({}) and so content: drain and remove its nodes first \
                 (`annexmesh admin node drain NODE --wait`, then `annexmesh admin node remove \
                 NODE`), or delete it anyway with --force (what its nodes hold is then lost \
                 to the mesh)",
                c.name,
                names.join(", ")
            )));
        }
    }
    // The repository only served this cluster's clients; a failure to
    // remove it leaves an unused directory, not a wrong mesh.
    if let Ok(path) = core.repos.path(&c.uuid)
        && let Err(e) = tokio::fs::remove_dir_all(&path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(cluster = %c.name, "cannot remove the cluster's git repository {}: {e}", path.display());
    }
    warn!(cluster = %c.name, uuid = %c.uuid, force, nodes_removed, struck, "cluster deleted");
    Ok(rpc::DeleteClusterReply { uuid: c.uuid, name: c.name, nodes_removed, struck })
}
