//! The git-annex P2P protocol and storage model, free of networking: keys,
//! checksums, object layout, protocol messages and their line codec.

pub mod key;
pub mod layout;
pub mod line;
pub mod message;
pub mod verify;

/// How long a content lock must outlast a connection that broke without
/// UNLOCKCONTENT: the client may still count on it for this long after the
/// lock was granted.
pub const LOCK_SAFETY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10 * 60);
