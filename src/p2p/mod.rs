//! The git-annex P2P protocol and storage model, free of networking: keys,
//! checksums, object layout, protocol messages and their line codec.

pub mod key;
pub mod layout;
pub mod verify;
pub mod line;
pub mod message;
