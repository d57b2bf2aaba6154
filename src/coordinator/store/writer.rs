//! The one thread that writes to the database. Async callers queue a job on
//! a bounded channel (waiting when it is full, so a burst cannot grow memory
//! without limit) and await a reply sent after the commit, so no commit or
//! fsync runs on an async worker and every answer means "durable".
//!
//! A job either runs alone, in its own transaction, or joins a group:
//! grouped jobs queued next to each other share one transaction and one
//! fsync (location changes, which come in bursts). Jobs are applied in the
//! order they were queued.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};

/// Jobs that may wait for the writer; senders wait beyond this.
pub(super) const QUEUE: usize = 1024;

/// Name of the writer thread, as seen in debuggers and tests.
pub(super) const THREAD_NAME: &str = "coordinator-db-writer";

type Alone = Box<dyn FnOnce(&Database) + Send>;
type Grouped = Box<dyn FnOnce(&WriteTransaction) -> Result<()> + Send>;

enum Job {
    Alone(Alone),
    Grouped(Grouped, oneshot::Sender<Result<()>>),
}

/// The handle on the writer thread; dropping it lets the thread finish the
/// queued jobs and waits for it, so the database is closed afterwards.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> std::io::Result<Writer> {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let thread =
            std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || run(&db, jobs))?;
        Ok(Writer { queue: Some(queue), thread: Some(thread) })
    }

    /// Runs `f` in a transaction of its own; see `Store::write`.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let (done, reply) = oneshot::channel();
        let job = Job::Alone(Box::new(move |db: &Database| {
            let _ = done.send(commit_alone(db, f));
        }));
        self.send(job).await?;
        reply.await.map_err(|_| self.lost())?
    }

    /// Runs `f` in a transaction it may share with other grouped jobs; any
    /// failure in the group fails them all, as nothing of it is committed.
    pub(super) async fn write_grouped<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&WriteTransaction) -> Result<()> + Send + 'static,
    {
        let (done, reply) = oneshot::channel();
        self.send(Job::Grouped(Box::new(f), done)).await?;
        reply.await.map_err(|_| self.lost())?
    }

    /// Why a job's reply never came: the thread is gone, or the job panicked
    /// and was abandoned.
    fn lost(&self) -> StoreError {
        match &self.queue {
            Some(queue) if !queue.is_closed() => StoreError::Abandoned,
            _ => StoreError::WriterStopped,
        }
    }

    async fn send(&self, job: Job) -> Result<()> {
        let queue = self.queue.as_ref().ok_or(StoreError::WriterStopped)?;
        queue.send(job).await.map_err(|_| StoreError::WriterStopped)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has done what is queued.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: takes what is queued, up to the queue's size at a
/// time, and applies it in order.
fn run(db: &Database, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < QUEUE
            && let Ok(job) = jobs.try_recv()
        {
            batch.push(job);
        }
        let mut group = Vec::new();
        for job in batch {
            match job {
                Job::Grouped(f, done) => group.push((f, done)),
                Job::Alone(f) => {
                    // Earlier grouped jobs commit first, to keep the order.
                    let earlier = std::mem::take(&mut group);
                    guarded(|| commit_group(db, earlier));
                    guarded(|| f(db));
                }
            }
        }
        guarded(|| commit_group(db, group));
    }
}

/// Runs `f`, surviving a panic in it: the transaction it was in is dropped
/// (abandoning its writes), its callers are answered `Abandoned` as their
/// reply senders drop, and the writer goes on with the next jobs.
fn guarded(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("a database write panicked and was abandoned; the writer goes on");
    }
}

fn commit_alone<T>(db: &Database, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
    let txn = db.begin_write()?;
    // On an error `txn` is dropped, which abandons whatever `f` wrote.
    let value = f(&txn)?;
    txn.commit()?;
    Ok(value)
}

fn commit_group(db: &Database, group: Vec<(Grouped, oneshot::Sender<Result<()>>)>) {
    if group.is_empty() {
        return;
    }
    let (fs, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    let result = commit_alone(db, |txn| fs.into_iter().try_for_each(|f| f(txn)));
    for done in replies {
        let _ = done.send(result.clone());
    }
}
