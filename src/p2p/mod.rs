//! The git-annex P2P protocol and storage model, free of networking: keys,
//! checksums, object layout, protocol messages, their line codec (also as a
//! `tokio_util` codec) and annexmesh's connection preamble.

pub mod codec;
pub mod key;
pub mod layout;
pub mod line;
pub mod message;
pub mod preamble;
pub mod verify;

/// How long a content lock must outlast a connection that broke without
/// UNLOCKCONTENT: the client may still count on it for this long after the
/// lock was granted.
pub const LOCK_SAFETY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10 * 60);
