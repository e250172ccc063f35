//! The write path of ingest: concurrent requests are gathered into micro-batches that are
//! stored with one statement and one commit. Under load that turns many small fsyncs into a
//! few large ones; alone, a request is written at once. Each request is still answered only
//! after the commit that holds its own row.
//!
//! One batch is written at a time, and whatever arrives meanwhile forms the next one. Commits
//! wait for the WAL flush one after another anyway, so a second writer in flight only splits
//! the same rows into smaller batches and more flushes: with four writers, hookd acknowledged
//! 0.59 x pgbench's insert rate, with one 0.67 x, and its p99 fell from ~26 to ~21 ms
//! (docs/BENCHMARKS.md).

use std::sync::Arc;
use std::time::Duration;

use common::db::events::{self, Inserted, NewEvent};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};

use crate::announce::Announcer;
use crate::reachability::Reachability;

/// Most events in one statement: bounds the statement size and the damage of a failed batch.
const MAX_BATCH: usize = 256;
/// Requests waiting for the writer before new ones are pushed back.
const QUEUE: usize = 8 * MAX_BATCH;

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<sqlx::Result<Inserted>>,
}

/// A handle to submit events; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts the batcher; `announcer` hears of every commit that stored something. It stops
    /// when every handle is dropped.
    pub fn start(pool: PgPool, announcer: Arc<Announcer>, reachability: Arc<Reachability>) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(gather(pool, announcer, reachability, queue));
        Ingest { jobs }
    }

    /// Stores the event; returns once it is committed (or known to be a duplicate). A full
    /// queue refuses at once: waiting for room would only hold the body longer and answer
    /// later than a stalled writer deserves.
    pub async fn insert(&self, event: NewEvent) -> Result<Inserted, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job { event, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => IngestError::Full,
                mpsc::error::TrySendError::Closed(_) => sqlx::Error::PoolClosed.into(),
            })?;
        Ok(answer.await.map_err(|_| sqlx::Error::PoolClosed)??)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full")]
    Full,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

async fn gather(
    pool: PgPool,
    announcer: Arc<Announcer>,
    reachability: Arc<Reachability>,
    mut queue: mpsc::Receiver<Job>,
) {
    let mut writer = Writer { pool, conn: None };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // recv_many is cancel-safe: a timeout loses no job.
        let received = match writer.conn {
            Some(_) => {
                match tokio::time::timeout(LINGER, queue.recv_many(&mut batch, MAX_BATCH)).await {
                    Ok(received) => received,
                    Err(_) => {
                        writer.conn = None;
                        queue.recv_many(&mut batch, MAX_BATCH).await
                    }
                }
            }
            None => queue.recv_many(&mut batch, MAX_BATCH).await,
        };
        if received == 0 {
            return;
        }
        let jobs = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let stored = write(&mut writer, &reachability, jobs).await;
        if stored > 0 {
            announcer.new_events(stored);
        }
        if !common::db::has_spare_connection(&writer.pool) {
            writer.conn = None;
        }
    }
}

/// How long the writer keeps its connection with nothing to write.
const LINGER: Duration = Duration::from_millis(250);

/// The writer's connection, kept from one batch to the next while requests keep coming. A
/// pool connection is tested with a round trip each time it is taken and again each time it
/// is given back; at one batch per commit that was two round trips beside each statement,
/// one of them on the path every acknowledgement waits for.
struct Writer {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl Writer {
    /// Stores the batch. A kept connection is not tested first, so one the database closed
    /// meanwhile (a restart, an idle timeout, an administrator) fails at once; the batch is
    /// then tried once more on a connection the pool has tested, as it is when its session is
    /// ended mid-statement. Trying again is safe whatever the first try did: a key it
    /// committed makes the second try answer "duplicate", which is still an acknowledgement.
    async fn insert_many(&mut self, events: &[NewEvent]) -> sqlx::Result<Vec<Inserted>> {
        match self.try_insert_many(events).await {
            Err(e) if crate::connection_lost(&e) => {
                tracing::info!(error = %e, "the writer's connection was lost; trying a new one");
                self.try_insert_many(events).await
            }
            result => result,
        }
    }

    async fn try_insert_many(&mut self, events: &[NewEvent]) -> sqlx::Result<Vec<Inserted>> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        let result = events::insert_many(&mut *conn, events).await;
        // After an error (or if this future is dropped mid-statement) the connection goes back
        // to the pool, which tests it before anyone uses it again.
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }
}

/// Stores the batch and answers each request. Returns how many new events were stored.
async fn write(writer: &mut Writer, reachability: &Reachability, jobs: Vec<Job>) -> u64 {
    let (events, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.event, j.reply)).unzip();
    match reachability.guard(writer.insert_many(&events)).await {
        Ok(results) => {
            let stored = results
                .iter()
                .filter(|r| matches!(r, Inserted::New(_)))
                .count() as u64;
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
            stored
        }
        // One payload PostgreSQL refuses fails the whole statement: store the others one by
        // one, so only the bad one is refused.
        Err(e) if events::is_payload_rejected(&e) && events.len() > 1 => {
            let mut stored = 0;
            for (reply, event) in replies.into_iter().zip(&events) {
                let result = events::insert(&writer.pool, event).await;
                stored += u64::from(matches!(result, Ok(Inserted::New(_))));
                let _ = reply.send(result);
            }
            stored
        }
        // Nothing was committed: every request in the batch fails and its sender retries.
        Err(e) => {
            let message = e.to_string();
            let mut replies = replies.into_iter();
            if let Some(first) = replies.next() {
                let _ = first.send(Err(e));
            }
            for reply in replies {
                let _ = reply.send(Err(sqlx::Error::Protocol(message.clone())));
            }
            0
        }
    }
}
