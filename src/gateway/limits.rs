//! The gateway's limits: deadlines on the calls it makes to the coordinator
//! and to agents, the stall timeout of content streams, and the
//! line-protocol listener's connection limits.
//!
//! The call limits are process-wide (set once by `gateway::run` before
//! serving, defaults otherwise): every call site in the request core and
//! the mesh reads them, and a gateway process serves one configuration.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::line::{self, LineOptions};
use super::throttle::{self, AuthThrottle};
use crate::clock::parse_duration;

/// Limits on the gateway's calls to the rest of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Any unary call to the coordinator.
    pub coordinator: Duration,
    /// A unary call to an agent (CheckPresent, PutOffset, Remove,
    /// GetTimestamp, a lock's first answer).
    pub node: Duration,
    /// A content stream (PUT, GET) that makes no progress for this long
    /// fails on that node.
    pub stall: Duration,
    /// Bytes a PUT queues for each target beyond what its link has taken.
    pub put_buffer: usize,
}

pub const DEFAULT_COORDINATOR_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// 16 MiB: a few hundred milliseconds of a fast link, so a healthy target
/// never waits on it; the chunks are shared between targets, so only a
/// lagging target's backlog costs memory.
pub const DEFAULT_PUT_BUFFER: usize = 16 * 1024 * 1024;

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            coordinator: DEFAULT_COORDINATOR_TIMEOUT,
            node: DEFAULT_NODE_TIMEOUT,
            stall: DEFAULT_STALL_TIMEOUT,
            put_buffer: DEFAULT_PUT_BUFFER,
        }
    }
}

static CALL_LIMITS: OnceLock<CallLimits> = OnceLock::new();

/// The process's call limits: those `set_call_limits` gave, else the
/// defaults.
pub fn call_limits() -> CallLimits {
    CALL_LIMITS.get().copied().unwrap_or_default()
}

/// Sets the process's call limits; only the first call counts (a process
/// runs one gateway). Returns whether this call set them.
pub fn set_call_limits(l: CallLimits) -> bool {
    CALL_LIMITS.set(l).is_ok()
}

fn parse_buffer(s: &str) -> Result<usize, String> {
    let n = crate::preferred::parse_size(s)?;
    usize::try_from(n).map_err(|_| format!("{s} is too large"))
}

/// The gateway's limit flags.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayLimits {
    /// Deadline on every call to the coordinator (topology, placement,
    /// location log, token checks, cluster clock).
    #[arg(long, env = "ANNEXMESH_COORDINATOR_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub coordinator_timeout: Duration,
    /// Deadline on every unary call to an agent (CHECKPRESENT, PUTOFFSET,
    /// REMOVE, a lock's first answer, the agent's clock).
    #[arg(long, env = "ANNEXMESH_NODE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub node_timeout: Duration,
    /// A PUT or GET stream to a node that makes no progress for this long
    /// fails on that node; a PUT completes with the other targets.
    #[arg(long, env = "ANNEXMESH_STALL_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// Data a PUT queues for each target beyond what its link has taken
    /// (bytes or a size such as 16MiB); a target that far behind holds the
    /// others back until it moves again or the stall timeout drops it.
    #[arg(long, env = "ANNEXMESH_PUT_TARGET_BUFFER", default_value = "16MiB", value_parser = parse_buffer)]
    pub put_target_buffer: usize,
    /// Most authenticated line-protocol connections open at once; more are
    /// refused.
    #[arg(long, env = "ANNEXMESH_P2P_MAX_CONNECTIONS", default_value_t = line::DEFAULT_MAX_CONNECTIONS)]
    pub p2p_max_connections: usize,
    /// Most line-protocol connections waiting to authenticate, in all; more
    /// are refused at once with an ERROR line.
    #[arg(long, env = "ANNEXMESH_P2P_MAX_UNAUTHENTICATED", default_value_t = line::DEFAULT_MAX_UNAUTHENTICATED)]
    pub p2p_max_unauthenticated: usize,
    /// Most line-protocol connections waiting to authenticate from one
    /// source address.
    #[arg(long, env = "ANNEXMESH_P2P_MAX_UNAUTHENTICATED_PER_ADDRESS", default_value_t = line::DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS)]
    pub p2p_max_unauthenticated_per_address: usize,
    /// Time a line-protocol connection has from connecting (TLS included)
    /// to a successful AUTH.
    #[arg(long, env = "ANNEXMESH_P2P_AUTH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub p2p_auth_timeout: Duration,
    /// How long an authenticated line-protocol connection may sit idle
    /// between requests (git-annex keeps connections open between the
    /// commands of one run).
    #[arg(long, env = "ANNEXMESH_P2P_IDLE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub p2p_idle_timeout: Duration,
    /// Failed authentication attempts from one source address that cost
    /// nothing; after them each failure makes the address wait.
    #[arg(long, env = "ANNEXMESH_AUTH_THROTTLE_BURST", default_value_t = throttle::DEFAULT_BURST)]
    pub auth_throttle_burst: u32,
    /// The wait each failed authentication costs once the burst is spent.
    #[arg(long, env = "ANNEXMESH_AUTH_THROTTLE_PENALTY", default_value = "1s", value_parser = parse_duration)]
    pub auth_throttle_penalty: Duration,
}

impl GatewayLimits {
    pub fn call_limits(&self) -> CallLimits {
        CallLimits {
            coordinator: self.coordinator_timeout,
            node: self.node_timeout,
            stall: self.stall_timeout,
            put_buffer: self.put_target_buffer,
        }
    }

    /// A throttle of failed authentication with these settings.
    pub fn throttle(&self) -> Arc<AuthThrottle> {
        Arc::new(AuthThrottle::new(self.auth_throttle_burst, self.auth_throttle_penalty))
    }

    /// The line listener's options with these limits.
    pub fn line_options(
        &self,
        default_repo: Option<String>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> LineOptions {
        LineOptions {
            default_repo,
            max_connections: self.p2p_max_connections,
            max_unauthenticated: self.p2p_max_unauthenticated,
            max_unauthenticated_per_address: self.p2p_max_unauthenticated_per_address,
            auth_timeout: self.p2p_auth_timeout,
            idle_timeout: self.p2p_idle_timeout,
            throttle: self.throttle(),
            tls,
        }
    }
}
