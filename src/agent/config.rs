//! The agent's data-safety settings: scrubbing at rest and the expiry of
//! partial uploads.

use std::time::Duration;

/// How the agent looks after the content at rest.
#[derive(Debug, Clone, clap::Args)]
pub struct SafetyConfig {
    /// Re-verify stored objects in the background at up to this many MB/s
    /// (0 disables scrubbing).
    #[arg(long, env = "ANNEXMESH_SCRUB_RATE", default_value_t = 8.0)]
    pub scrub_rate: f64,
    /// A full scrub pass starts at most once per this interval (e.g. 24h, 30m, 5s).
    #[arg(long, env = "ANNEXMESH_SCRUB_INTERVAL", default_value = "24h", value_parser = crate::clock::parse_duration)]
    pub scrub_interval: Duration,
    /// Partial uploads untouched for longer than this are removed (e.g. 24h).
    #[arg(long, env = "ANNEXMESH_PARTIAL_MAX_AGE", default_value = "24h", value_parser = crate::clock::parse_duration)]
    pub partial_max_age: Duration,
    /// Below this much free space (bytes) the oldest partial uploads are removed
    /// first (default: the larger of 1% of the filesystem and 64 MiB).
    #[arg(long, env = "ANNEXMESH_MIN_FREE")]
    pub min_free: Option<u64>,
    /// Most content locks held at once on this node; past it, lock
    /// requests are answered "cannot lock".
    #[arg(long, env = "ANNEXMESH_MAX_LOCKS", default_value_t = crate::agent::locks::DEFAULT_MAX_LOCKS)]
    pub max_locks: usize,
    /// Most objects whose last verification the agent remembers (about 200
    /// bytes each), so that a GET of an unchanged object need not hash it
    /// again; past it the least recently used are forgotten and verified
    /// again when next read. 0 verifies every read.
    #[arg(long, env = "ANNEXMESH_VERIFIED_CACHE", default_value_t = crate::agent::integrity::DEFAULT_VERIFIED_CACHE)]
    pub verified_cache: usize,
}

impl Default for SafetyConfig {
    fn default() -> SafetyConfig {
        SafetyConfig {
            scrub_rate: 8.0,
            scrub_interval: Duration::from_secs(24 * 3600),
            partial_max_age: Duration::from_secs(24 * 3600),
            min_free: None,
            max_locks: crate::agent::locks::DEFAULT_MAX_LOCKS,
            verified_cache: crate::agent::integrity::DEFAULT_VERIFIED_CACHE,
        }
    }
}
