//! Hearing topology changes: one connection of its own LISTENs on the
//! topology channel and calls `on_change` for every notification. When the
//! connection is lost it reconnects with backoff, and calls `on_change`
//! once it is back, since changes may have been missed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, Connection};

use super::{TOPOLOGY_CHANNEL, Tls, chain};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the listening connection is checked, so that a silently lost
/// one (a host cut off) is noticed and replaced.
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until aborted (when the store is dropped); `ready` hears when it
/// first listens.
pub(super) async fn run(
    config: tokio_postgres::Config,
    tls: Tls,
    at: Arc<str>,
    on_change: Arc<dyn Fn() + Send + Sync>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = FIRST_BACKOFF;
    let mut connected_before = false;
    loop {
        match connect(&config, &tls).await {
            Ok((client, mut heard)) => {
                if let Err(e) = client.batch_execute(&format!("LISTEN {TOPOLOGY_CHANNEL}")).await {
                    tracing::warn!("cannot listen for topology changes on {at}: {}", chain(&e));
                } else {
                    if connected_before {
                        on_change();
                    }
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    connected_before = true;
                    backoff = FIRST_BACKOFF;
                    serve(&client, &mut heard, &*on_change).await;
                    tracing::warn!("lost the connection listening for topology changes on {at}");
                }
            }
            Err(e) => tracing::warn!("cannot listen for topology changes on {at}: {}", chain(&e)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Passes notifications on until the connection fails.
async fn serve(
    client: &Client,
    heard: &mut mpsc::UnboundedReceiver<()>,
    on_change: &(dyn Fn() + Send + Sync),
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            n = heard.recv() => match n {
                Some(()) => on_change(),
                None => return,
            },
            _ = ping.tick() => {
                let alive = tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await;
                if !matches!(alive, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// A connection whose notifications arrive on the receiver, which closes
/// when the connection ends.
async fn connect(
    config: &tokio_postgres::Config,
    tls: &Tls,
) -> Result<(Client, mpsc::UnboundedReceiver<()>), tokio_postgres::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = match tls {
        Tls::None => {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(drive(conn, tx));
            client
        }
        Tls::Rustls(t) => {
            let (client, conn) = config.connect(t.clone()).await?;
            tokio::spawn(drive(conn, tx));
            client
        }
    };
    Ok((client, rx))
}

/// Drives the connection; ends when it fails or its client is dropped.
async fn drive<S, T>(mut conn: Connection<S, T>, tx: mpsc::UnboundedSender<()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(m) = messages.next().await {
        match m {
            Ok(AsyncMessage::Notification(_)) => {
                if tx.send(()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("topology listener connection ended: {}", chain(&e));
                return;
            }
        }
    }
}
