//! annexmesh: a distributed proxy mesh serving git-annex clusters.
//!
//! `p2p` is the pure protocol layer; the role modules build on it and on the
//! gRPC API in `rpc`.

pub mod admin;
pub mod agent;
pub mod annexbranch;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod p2p;
pub mod pki;
pub mod preferred;
pub mod rpc;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod up;

/// The version `--version` prints: the package version and the commit built.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ANNEXMESH_COMMIT"), ")");
