//! The git-annex branch's formats, as git-annex reads and writes them: the
//! vector clock's timestamps, the UUID-based logs (`uuid.log`, `trust.log`,
//! `cluster.log`, `proxy.log`), location logs and their paths, what the
//! mesh writes of a cluster's structure, and the union merge of branches.
//!
//! Pure: no I/O. The coordinator's branch writer
//! (`crate::coordinator::branch`) applies them to the clusters'
//! repositories.

pub mod location;
pub mod logs;
pub mod merge;
mod stamp;
pub mod structure;

pub use stamp::Stamp;
