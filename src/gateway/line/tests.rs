//! Sessions driven over an in-memory stream. The core's mesh points at a
//! coordinator that is not there, so these cover what a session answers
//! without reaching a node: versions, refusals, access modes and bad input.

use crate::tasks::Tasks;
use std::collections::BTreeSet;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{Close, Conn};
use super::session::Session;
use crate::auth::Mode;
use crate::gateway::core::Core;
use crate::gateway::mesh::{Mesh, Repo};

const KEY: &str = "SHA256E-s5--2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

fn core() -> Core {
    // Port 1 on loopback: nothing listens, so every lookup fails at once
    // and the session keeps the repository it was given.
    Core::new(
        Mesh::new("http://127.0.0.1:1", crate::rpc::Dialer::insecure()).unwrap(),
        Tasks::new(&Default::default()),
    )
}

fn cluster() -> Repo {
    Repo::Cluster {
        uuid: "5c2f9a34-1111-4222-8333-944445555666".into(),
        name: "mesh".into(),
        nodes: Vec::new(),
        bypass: BTreeSet::new(),
    }
}

/// Serves `input` (then end of input) in `mode`: the session's result and
/// every line it sent.
async fn serve(mode: Mode, input: &str) -> (Result<(), Close>, Vec<String>) {
    let core = core();
    let (ours, mut peer) = tokio::io::duplex(1 << 20);
    peer.write_all(input.as_bytes()).await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = Conn::new(ours);
    let result = Session::new(&core, cluster(), mode).serve(&mut conn).await;
    conn.close().await;
    let mut sent = String::new();
    peer.read_to_string(&mut sent).await.unwrap();
    (result, sent.lines().map(str::to_string).collect())
}

#[tokio::test]
async fn versions_and_refused_commands_keep_the_session() {
    let input = "VERSION 9\nCONNECT git-upload-pack\nNOTIFYCHANGE\n\
                 AUTH 11111111-2222-3333-4444-555555555555 tok\nFROB\nVALID\nVERSION 1\n";
    let (r, sent) = serve(Mode::ReadWrite, input).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(sent[0], "VERSION 4");
    // A coordinator without git repositories: refused, and the session goes on.
    assert!(sent[1].starts_with("ERROR cannot reach the cluster's repository"), "{sent:?}");
    assert!(sent[2].starts_with("ERROR NOTIFYCHANGE is not served"), "{sent:?}");
    assert_eq!(sent[3], "ERROR already authenticated");
    assert!(sent[4].starts_with("ERROR unknown command: "), "{sent:?}");
    assert_eq!(sent[5], "ERROR unexpected command VALID");
    assert_eq!(sent[6], "VERSION 1");
    assert_eq!(sent.len(), 7);
}

#[tokio::test]
async fn access_modes_refuse_before_reaching_a_node() {
    let put = format!("PUT file {KEY}\n");
    let remove = format!("REMOVE {KEY}\n");
    let remove_before = format!("REMOVE-BEFORE 100 {KEY}\n");
    let (r, sent) = serve(Mode::ReadOnly, &format!("{put}{remove}{remove_before}")).await;
    assert!(r.is_ok(), "{r:?}");
    let write = format!("ERROR {}", super::session::READ_ONLY_WRITE);
    assert_eq!(sent, vec![write.as_str(); 3]);
    assert!(write.contains("read-only") && write.contains("admin token create"), "{write}");
    let (r, sent) = serve(Mode::ReadOnly, "CONNECT git-receive-pack\n").await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(sent, vec![format!("ERROR {}", super::session::READ_ONLY_PUSH)]);
    let (r, sent) = serve(Mode::AppendOnly, &format!("{remove}{remove_before}")).await;
    assert!(r.is_ok(), "{r:?}");
    let remove = format!("ERROR {}", super::session::APPEND_ONLY_REMOVE);
    assert_eq!(sent, vec![remove.as_str(); 2]);
}

#[tokio::test]
async fn data_outside_a_transfer_or_a_client_error_closes() {
    let (r, sent) = serve(Mode::ReadWrite, "VERSION 1\nDATA 3\nabc").await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("outside a transfer")));
    assert_eq!(sent, ["VERSION 1", "ERROR unexpected DATA"]);
    let (r, sent) = serve(Mode::ReadWrite, "ERROR giving up\nVERSION 1\n").await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("giving up")));
    assert!(sent.is_empty(), "{sent:?}");
    let (r, sent) = serve(Mode::ReadWrite, "DATA -1\nVERSION 1\n").await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("unreadable DATA")));
    assert_eq!(sent.len(), 1);
}

#[tokio::test]
async fn an_over_long_line_closes_the_session() {
    let line = format!("ERROR {}\n", "x".repeat(super::MAX_LINE));
    let (r, sent) = serve(Mode::ReadWrite, &line).await;
    assert!(matches!(r, Err(Close::Protocol(w)) if w.contains("longer than")));
    assert_eq!(sent, [format!("ERROR protocol line longer than {} bytes", super::MAX_LINE)]);
}

#[tokio::test]
async fn an_unreachable_coordinator_is_an_error_and_the_session_goes_on() {
    // GETTIMESTAMP asks the coordinator; when it cannot be reached the
    // client is told, and the session goes on.
    let (r, sent) = serve(Mode::ReadWrite, "GETTIMESTAMP\nVERSION 1\n").await;
    assert!(r.is_ok(), "{r:?}");
    assert!(sent[0].starts_with("ERROR "), "{sent:?}");
    assert_eq!(sent[1], "VERSION 1");
}
