//! Tells whoever waits that something changed, without a NOTIFY in any write transaction.
//!
//! A transaction that sends NOTIFY holds a database-wide lock from just before its commit until
//! the commit is flushed, so writers that notify cannot share a WAL flush: they commit one at a
//! time. Writers here announce after their commit instead. This process's workers are woken at
//! once; one side task sends the notifications for other hookd processes and hooktop, at most
//! one round per [`MIN_GAP`], in a transaction that writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{EVENTS_CHANNEL, PROGRESS_CHANNEL};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Shortest time between two rounds of notifications; what happens meanwhile is coalesced.
const MIN_GAP: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
pub struct Announcer {
    workers: Arc<Notify>,
    new_events: AtomicBool,
    progress: AtomicBool,
    kick: Notify,
}

impl Announcer {
    /// What this process's workers wait on.
    pub fn workers(&self) -> Arc<Notify> {
        self.workers.clone()
    }

    /// New events were committed.
    pub fn new_events(&self) {
        self.workers.notify_waiters();
        self.new_events.store(true, Ordering::Release);
        self.kick.notify_one();
    }

    /// A batch of attempts was committed.
    pub fn progress(&self) {
        self.progress.store(true, Ordering::Release);
        self.kick.notify_one();
    }

    /// Sends the notifications until `shutdown`. Notifications only save listeners a poll, so
    /// a round that fails is logged and dropped.
    pub async fn run(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = self.kick.notified() => {}
                () = shutdown.cancelled() => return,
            }
            let mut channels = Vec::with_capacity(2);
            if self.new_events.swap(false, Ordering::AcqRel) {
                channels.push(EVENTS_CHANNEL);
            }
            if self.progress.swap(false, Ordering::AcqRel) {
                channels.push(PROGRESS_CHANNEL);
            }
            if let Err(e) = common::db::events::notify(&pool, &channels).await {
                tracing::debug!(error = %e, "cannot send notifications; listeners will poll");
            }
            tokio::time::sleep(MIN_GAP).await;
        }
    }
}
