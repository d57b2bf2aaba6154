//! The cluster's git repository, as every front-end reaches it: the
//! repository lives on the coordinator, and a git process there (the
//! coordinator's `Git` call) serves each fetch or push; the gateway only
//! relays git's bytes. Shared by smart HTTP and the line protocol's CONNECT.

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::Status;

use super::mesh::Mesh;
use super::mesh::api::Replies;
pub use crate::rpc::{GitExit, GitService, GitStart};
use crate::rpc::{GitReply, GitRequest, git_reply, git_request};

/// Largest piece of input sent in one message.
pub const MAX_PIECE: usize = 256 * 1024;

/// The UUID of the cluster whose repository `name` reaches: a cluster's
/// name or UUID, or one of its nodes' (as git-annex's proxied node remotes
/// reach their cluster's repository), with or without `.git`.
pub async fn cluster_of(mesh: &Mesh, name: &str) -> Option<String> {
    let name = name.strip_suffix(".git").unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let repo = match mesh.repo_by_name(name).await {
        Some(r) => r,
        None if uuid::Uuid::parse_str(name).is_ok() => mesh.repo_by_uuid(name).await?,
        None => return None,
    };
    Some(repo.cluster_uuid().to_string())
}

/// What the process said.
#[derive(Debug)]
pub enum Output {
    Stdout(Bytes),
    Exit(GitExit),
}

/// One git process on the coordinator.
pub struct GitCall {
    /// Its standard input (see [`stdin`], [`eof`]). Dropping every sender
    /// without `eof` abandons the call: the coordinator then kills the
    /// process rather than act on input that may be cut short.
    pub input: mpsc::Sender<GitRequest>,
    pub output: GitOutput,
}

impl GitCall {
    /// Starts the process `start` describes.
    pub async fn open(mesh: &Mesh, start: GitStart) -> Result<GitCall, Status> {
        let (input, rx) = mpsc::channel(8);
        let first = GitRequest { msg: Some(git_request::Msg::Start(start)) };
        input.send(first).await.expect("the receiver is here");
        let output = GitOutput(mesh.control().git(rx).await?);
        Ok(GitCall { input, output })
    }
}

/// What a git process on the coordinator writes.
pub struct GitOutput(Replies<GitReply>);

impl GitOutput {
    /// The next output; an error when the call failed (a limit, the
    /// coordinator went away).
    pub async fn next(&mut self) -> Result<Output, Status> {
        match self.0.next().await {
            Some(Ok(GitReply { msg: Some(git_reply::Msg::Stdout(b)) })) => Ok(Output::Stdout(b)),
            Some(Ok(GitReply { msg: Some(git_reply::Msg::Exit(e)) })) => Ok(Output::Exit(e)),
            Some(Ok(GitReply { msg: None })) => Err(Status::internal("an empty git reply")),
            Some(Err(e)) => Err(e),
            None => Err(Status::unavailable("the coordinator's git process ended without an exit")),
        }
    }
}

/// Bytes for the process's standard input.
pub fn stdin(b: Bytes) -> GitRequest {
    GitRequest { msg: Some(git_request::Msg::Stdin(b)) }
}

/// The end of the process's standard input.
pub fn eof() -> GitRequest {
    GitRequest { msg: Some(git_request::Msg::Eof(true)) }
}

/// Whether GIT_PROTOCOL asks for protocol version 2.
pub fn wants_v2(git_protocol: &str) -> bool {
    git_protocol.split(':').any(|e| e == "version=2")
}
