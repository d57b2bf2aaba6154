//! Checks of request fields shared by the coordinator's gRPC services, with
//! errors that say what a valid value looks like.

use tonic::Status;

use crate::p2p::key::Key;

/// Longest label a token may carry.
pub const MAX_TOKEN_LABEL: usize = 200;

/// Shortest id prefix accepted for revoking, so that a typo is unlikely to
/// match another token.
pub const MIN_TOKEN_ID_PREFIX: usize = 6;

/// A git-annex key.
pub fn valid_key(s: &str) -> Result<Key, Status> {
    s.parse::<Key>().map_err(|e| Status::invalid_argument(format!("bad key {s:?}: {e}")))
}

/// A node UUID, as git-annex repositories have them.
pub fn valid_uuid(s: &str) -> Result<(), Status> {
    uuid::Uuid::parse_str(s)
        .map(|_| ())
        .map_err(|_| Status::invalid_argument(format!("not a UUID: {s:?}")))
}

/// Cluster and node names: see `names::validate`.
pub fn valid_name(s: &str) -> Result<(), Status> {
    crate::names::validate(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A token's hash as `auth::hash_token` writes it.
pub fn valid_token_sha256(s: &str) -> Result<(), Status> {
    if s.len() == 64 && is_lower_hex(s) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "bad token hash {s:?}: expected a SHA-256 as 64 lowercase hex digits (send the hash, not the token)"
        )))
    }
}

/// Labels are printed in tab-separated listings, so no control characters.
pub fn valid_token_label(s: &str) -> Result<(), Status> {
    if s.chars().count() > MAX_TOKEN_LABEL {
        return Err(Status::invalid_argument(format!(
            "token label too long: at most {MAX_TOKEN_LABEL} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "bad token label {s:?}: no control characters (tabs, newlines, ...)"
        )));
    }
    Ok(())
}

/// A token id or a prefix of it, as operators type it; returns it in
/// lowercase without surrounding spaces.
pub fn valid_token_id(s: &str) -> Result<String, Status> {
    let id = s.trim().to_ascii_lowercase();
    if id.len() < MIN_TOKEN_ID_PREFIX || id.len() > 64 || !is_lower_hex(&id) {
        return Err(Status::invalid_argument(format!(
            "bad token id {s:?}: give the id `annexmesh admin token list` shows, or at least its first \
             {MIN_TOKEN_ID_PREFIX} hex digits"
        )));
    }
    Ok(id)
}

/// Response metadata with a warning about a setting just made, which the
/// admin CLI prints on stderr.
pub const WARNING_METADATA: &str = "annexmesh-warning";

/// `r` with `warning` (when there is one) in its metadata, logged too.
pub fn with_warning<T>(mut r: tonic::Response<T>, warning: Option<String>) -> tonic::Response<T> {
    if let Some(w) = warning {
        tracing::warn!("{w}");
        // Metadata is visible ASCII: our messages are, but be safe.
        let ascii: String = w.chars().map(|c| if c.is_ascii_graphic() { c } else { ' ' }).collect();
        if let Ok(v) = ascii.parse() {
            r.metadata_mut().insert(WARNING_METADATA, v);
        }
    }
    r
}

/// Why a minimum of `min` copies cannot be met by a cluster of `nodes`
/// nodes, `healthy` of them up; None when it can.
pub fn min_copies_unmet(cluster: &str, min: u32, nodes: usize, healthy: usize) -> Option<String> {
    let min_n = min as usize;
    if min_n <= healthy {
        return None;
    }
    if min_n > nodes {
        return Some(format!(
            "cluster {cluster} needs {min} copies but has {nodes} nodes ({healthy} healthy): \
             every PUT fails until it has {min}; add nodes or lower it (annexmesh admin cluster \
             mincopies {cluster} {})",
            nodes.max(1)
        ));
    }
    Some(format!(
        "cluster {cluster} needs {min} copies but has {healthy} healthy nodes of {nodes}: PUTs \
         fail until {min} are up (annexmesh admin node list)"
    ))
}

/// Why a reserve of `reserve` bytes leaves no node of `cluster` room for
/// anything, given each node's last reported free space; None when some
/// node has more free, or none has reported yet.
pub fn reserve_unmet(
    cluster: &str,
    reserve: u64,
    free: &[(String, Option<u64>)],
) -> Option<String> {
    use super::placement::human;
    let (name, most) =
        free.iter().filter_map(|(n, f)| f.map(|f| (n, f))).max_by_key(|(_, f)| *f)?;
    if most > reserve {
        return None;
    }
    Some(format!(
        "cluster {cluster}'s reserve of {} is more than any node has free (most: {name} with {}): \
         no PUT can be placed; lower it (annexmesh admin cluster reserve {cluster} SIZE)",
        human(reserve),
        human(most)
    ))
}

/// Each node of the cluster `cluster_uuid`: name, healthy, free bytes.
pub async fn node_states(
    core: &super::core::Core,
    cluster_uuid: &str,
) -> Result<Vec<(String, bool, Option<u64>)>, Status> {
    let nodes = core.store.nodes().await?;
    Ok(nodes
        .into_iter()
        .filter(|n| n.cluster_uuid == cluster_uuid)
        .map(|n| {
            let (healthy, health) = core.health.get(&n.uuid);
            (n.name, healthy, health.and_then(|h| h.free_bytes))
        })
        .collect())
}

/// The warning for a cluster's settings as they now are, if any.
pub async fn settings_warning(
    core: &super::core::Core,
    cluster: &super::store::Cluster,
    min_copies: Option<u32>,
    reserve: Option<u64>,
) -> Result<Option<String>, Status> {
    let nodes = node_states(core, &cluster.uuid).await?;
    if let Some(min) = min_copies {
        let healthy = nodes.iter().filter(|n| n.1).count();
        return Ok(min_copies_unmet(&cluster.name, min, nodes.len(), healthy));
    }
    let reserve = reserve.unwrap_or(core.reserve_default);
    let free: Vec<(String, Option<u64>)> = nodes.into_iter().map(|(n, _, f)| (n, f)).collect();
    Ok(reserve_unmet(&cluster.name, reserve, &free))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_copies_beyond_the_nodes_says_so() {
        assert_eq!(min_copies_unmet("mesh", 3, 3, 3), None);
        let w = min_copies_unmet("mesh", 4, 3, 3).unwrap();
        assert!(w.starts_with("cluster mesh needs 4 copies but has 3 nodes (3 healthy)"), "{w}");
        assert!(w.contains("admin cluster mincopies mesh 3"), "{w}");
        let w = min_copies_unmet("mesh", 3, 3, 2).unwrap();
        assert!(w.contains("has 2 healthy nodes of 3"), "{w}");
    }

    #[test]
    fn a_reserve_above_every_node_says_so() {
        let free = [("n1".to_string(), Some(5_000_000)), ("n2".to_string(), None)];
        assert_eq!(reserve_unmet("mesh", 1000, &free), None);
        assert_eq!(reserve_unmet("mesh", 1000, &[("n1".to_string(), None)]), None);
        let w = reserve_unmet("mesh", 100_000_000_000_000, &free).unwrap();
        assert!(w.contains("reserve of 100.0 TB"), "{w}");
        assert!(w.contains("most: n1 with 5.0 MB"), "{w}");
    }
}
