//! Cluster and node names: what a valid one looks like, and finding a
//! cluster or node by name or UUID. Pure: no I/O.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad name {0:?}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.', \
     and not 'git-annex' or 'metrics'"
)]
pub struct BadName(pub String);

/// Longest cluster or node name.
pub const MAX_NAME: usize = 64;

/// Checks a cluster or node name. Names appear in URLs (`/NAME/config`),
/// git remote names, the line protocol's space-separated preamble and ssh
/// paths, so they are one path component of plain characters; `git-annex`
/// is the P2P over HTTP API's own path and `metrics` the gateway's
/// (`/metrics/ROLE` would shadow `/NAME/...`).
pub fn validate(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !matches!(name, "git-annex" | "metrics")
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(BadName(name.to_string())) }
}

/// Something addressed by a name or by its UUID.
pub trait Named {
    fn name(&self) -> &str;
    fn uuid(&self) -> &str;

    /// Whether `wanted` is this thing's name or UUID.
    fn is(&self, wanted: &str) -> bool {
        self.name() == wanted || self.uuid() == wanted
    }
}

/// The first of `items` whose name or UUID is `wanted`.
pub fn find<T: Named>(items: impl IntoIterator<Item = T>, wanted: &str) -> Option<T> {
    items.into_iter().find(|i| i.is(wanted))
}

impl<T: Named> Named for &T {
    fn name(&self) -> &str {
        (*self).name()
    }
    fn uuid(&self) -> &str {
        (*self).uuid()
    }
}

impl Named for crate::rpc::NodeInfo {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
}

impl Named for crate::rpc::ClusterInfo {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_path_component() {
        for good in ["mesh", "node-1", "a_b.c", "0", &"x".repeat(MAX_NAME)] {
            assert_eq!(validate(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            ".hidden",
            "git-annex",
            "metrics",
            "a/b",
            "a b",
            "a\nb",
            "é",
            "..",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(validate(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn found_by_name_or_uuid() {
        let nodes = vec![
            crate::rpc::NodeInfo { name: "a".into(), uuid: "u1".into(), ..Default::default() },
            crate::rpc::NodeInfo { name: "b".into(), uuid: "u2".into(), ..Default::default() },
        ];
        assert_eq!(find(&nodes, "b").map(|n| n.uuid.as_str()), Some("u2"));
        assert_eq!(find(&nodes, "u1").map(|n| n.name.as_str()), Some("a"));
        assert!(find(&nodes, "c").is_none());
    }
}
