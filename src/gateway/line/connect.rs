//! CONNECT: git's own protocol over the session, in DATA frames both ways,
//! to a full-duplex git process on the coordinator (`gateway::git`);
//! CONNECTDONE with its exit code ends the session.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::conn::{Close, Conn, Res};
use super::session::Session;
use crate::auth::Mode;
use crate::gateway::git::{self, GitCall, GitService, GitStart, Output};
use crate::p2p::codec::Inbound;
use crate::p2p::message::{Message, Service};
use crate::rpc::GitRequest;

/// Waits for room in `tx`; never, once the input is closed.
async fn reserve(
    tx: &mpsc::Sender<GitRequest>,
    closed: bool,
) -> Option<mpsc::Permit<'_, GitRequest>> {
    if closed {
        return std::future::pending().await;
    }
    tx.reserve().await.ok()
}

impl Session<'_> {
    /// Serves `CONNECT service`. Ok(true) when the session is over (the
    /// process ran); Ok(false) when it was refused with ERROR and the
    /// session goes on.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        conn: &mut Conn<S>,
        service: Service,
    ) -> Res<bool> {
        let (svc, write) = match service {
            Service::UploadPack => (GitService::UploadPack, false),
            Service::ReceivePack => (GitService::ReceivePack, true),
        };
        if write && self.mode == Mode::ReadOnly {
            conn.send(&Message::Error(super::session::READ_ONLY_PUSH.into())).await?;
            return Ok(false);
        }
        let start = GitStart {
            cluster_uuid: self.repo.cluster_uuid().to_string(),
            service: svc as i32,
            stateless: false,
            advertise_refs: false,
            git_protocol: String::new(),
            append_only: self.mode != Mode::ReadWrite,
        };
        let GitCall { input, mut output } = match GitCall::open(&self.core.mesh, start).await {
            Ok(c) => c,
            Err(e) => {
                let why = format!("cannot reach the cluster's repository: {}", e.message());
                conn.send(&Message::Error(why)).await?;
                return Ok(false);
            }
        };
        // Set once `eof` went to git, or git stopped taking input.
        let mut closed = false;
        // Input read from the client, waiting for room towards git: the
        // client is not read meanwhile, but git's output still flows.
        let mut pending: Option<GitRequest> = None;
        loop {
            tokio::select! {
                item = conn.next(), if pending.is_none() && !closed => {
                    pending = Some(match item? {
                        Some(Inbound::Data(b)) => git::stdin(b),
                        Some(Inbound::Message(Message::Data(_))) => continue,
                        // The client is done sending (git-annex never says
                        // so; its end of input does).
                        None | Some(Inbound::Message(Message::ConnectDone(_))) => git::eof(),
                        Some(_) => {
                            let why = "expected DATA or CONNECTDONE";
                            conn.send(&Message::Error(why.into())).await?;
                            // Dropping the input unfinished stops git.
                            return Err(Close::Protocol(why.into()));
                        }
                    });
                }
                permit = reserve(&input, closed), if pending.is_some() => {
                    let req = pending.take().expect("pending input");
                    closed = matches!(req.msg, Some(crate::rpc::git_request::Msg::Eof(_)));
                    match permit {
                        Some(p) => p.send(req),
                        // git is gone; its exit follows.
                        None => closed = true,
                    }
                }
                out = output.next() => match out {
                    Ok(Output::Stdout(b)) => {
                        conn.send(&Message::Data(b.len() as u64)).await?;
                        conn.write_data(&b).await?;
                        conn.flush().await?;
                    }
                    Ok(Output::Exit(e)) => {
                        if e.code == 0 {
                            info!(service = service.as_str(), "CONNECT done");
                        } else {
                            warn!(service = service.as_str(), code = e.code, "git failed: {}", e.error);
                        }
                        conn.send(&Message::ConnectDone(e.code)).await?;
                        return Ok(true);
                    }
                    Err(s) => {
                        let why = format!("the cluster's repository: {}", s.message());
                        conn.send(&Message::Error(why.clone())).await?;
                        return Err(Close::Protocol(why));
                    }
                }
            }
        }
    }
}
