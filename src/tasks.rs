//! Owned background work. Each role spawns its tasks through one `Tasks`:
//! every task belongs to a tracker and watches a child of the role's
//! shutdown token, so stopping a role ends its tasks and waits for them, for
//! a bounded time, instead of leaving them to whoever drops the runtime.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// How long a role lets requests in flight and its tasks finish once
/// shutdown begins. An upload cut off then keeps its partial file for the
/// client's retry, and a lock ends with the process as it would in a crash,
/// so waiting longer only delays a restart.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A role's tasks and its shutdown token.
#[derive(Clone, Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Tasks {
    /// Tasks that end when `parent` is cancelled (or `shutdown` is called).
    pub fn new(parent: &CancellationToken) -> Tasks {
        Tasks { tracker: TaskTracker::new(), token: parent.child_token() }
    }

    /// The token cancelled when shutdown begins.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs `task` until it ends or shutdown begins, whichever is first;
    /// the handle yields None when shutdown cut it short.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let token = self.token.clone();
        // The task logs in the span of the request that spawned it.
        let task = tracing::Instrument::in_current_span(task);
        self.tracker.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => None,
                out = task => Some(out),
            }
        })
    }

    /// Runs `task` to its end, or until `grace` after shutdown begins: for
    /// work a client is waiting on, such as a connection mid-request.
    pub fn spawn_graceful<F>(&self, task: F, grace: Duration)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        let task = tracing::Instrument::in_current_span(task);
        self.tracker.spawn(async move {
            tokio::select! {
                _ = async { token.cancelled().await; tokio::time::sleep(grace).await } => {}
                _ = task => {}
            }
        });
    }

    /// Runs `task`, which watches `token()` itself, and hands back its result.
    pub fn spawn_owned<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Begins shutdown and waits up to `grace` for every task to end;
    /// false when some were still running then (they are dropped with the
    /// runtime).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_ok() {
            return true;
        }
        warn!(tasks = self.tracker.len(), "tasks still running {grace:?} after shutdown began");
        false
    }
}

/// Runs `server` until `shutdown` is cancelled, then lets it finish the
/// requests in flight for at most `grace`. A server's own graceful shutdown
/// waits for every open request, and a client may keep one open for minutes
/// (a `keeplocked` poll, a stalled upload).
pub async fn serve_until<F, E>(
    server: F,
    shutdown: &CancellationToken,
    grace: Duration,
    what: &str,
) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(r) => r,
        Err(_) => {
            warn!("{what}: requests still open {grace:?} after shutdown began; closing them");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_tasks_that_would_run_forever() {
        let root = CancellationToken::new();
        let tasks = Tasks::new(&root);
        let forever = tasks.spawn(std::future::pending::<()>());
        let watcher = tasks.token().clone();
        let owned = tasks.spawn_owned(async move {
            watcher.cancelled().await;
            7
        });
        assert!(tasks.shutdown(Duration::from_secs(1)).await);
        assert_eq!(owned.await.unwrap(), 7);
        assert_eq!(forever.await.unwrap(), None, "cut short by shutdown");
        assert!(!root.is_cancelled(), "a role's shutdown is its own");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_reports_a_task_that_ignores_it() {
        let tasks = Tasks::new(&CancellationToken::new());
        tasks.spawn_owned(std::future::pending::<()>());
        assert!(!tasks.shutdown(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_gets_a_bounded_grace() {
        let stop = CancellationToken::new();
        stop.cancel();
        let r: Result<(), ()> =
            serve_until(std::future::pending(), &stop, Duration::from_secs(2), "test").await;
        assert_eq!(r, Ok(()));
        let r = serve_until(async { Err::<(), _>("failed") }, &stop, Duration::ZERO, "t").await;
        assert_eq!(r, Err("failed"));
    }
}
