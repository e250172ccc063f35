//! Tells whoever waits that something changed, without a NOTIFY in any write transaction.
//!
//! A transaction that sends NOTIFY holds a database-wide lock from just before its commit until
//! the commit is flushed, so writers that notify cannot share a WAL flush: they commit one at a
//! time. Writers here announce after their commit instead. This process's workers are woken at
//! once; one side task sends the notifications for other hookd processes and hooktop, at most
//! one round per [`MIN_GAP`], in a transaction that writes nothing.
//!
//! It also counts what it announced and the workers have not claimed yet, so that under load
//! a worker claims a batch's worth at once instead of a few events per ingest commit: a batch
//! costs the same round trips and commit whatever its size, and during a burst the cores those
//! small batches took were the ones ingest needed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use common::{EVENTS_CHANNEL, PROGRESS_CHANNEL};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Shortest time between two rounds of notifications; what happens meanwhile is coalesced.
const MIN_GAP: Duration = Duration::from_millis(50);

/// Announcements whose times are kept (see [`Announcer::new_events`]).
const MAX_ARRIVALS: usize = 1024;

#[derive(Debug, Default)]
pub struct Announcer {
    workers: Arc<Notify>,
    new_events: AtomicBool,
    progress: AtomicBool,
    kick: Notify,
    unclaimed: Mutex<Unclaimed>,
}

/// Events announced in this process and not claimed since, as far as this process knows:
/// other processes' events and claims are not seen, which can only make a worker claim sooner,
/// never later.
#[derive(Debug, Default)]
struct Unclaimed {
    events: u64,
    /// Each announcement not claimed yet, oldest first: when, and how many it has left.
    /// Workers claim the oldest events first.
    arrivals: VecDeque<(Instant, u64)>,
}

impl Unclaimed {
    /// Takes up to `n` of the oldest; returns how many there were.
    fn take(&mut self, n: u64) -> u64 {
        let taken = n.min(self.events);
        self.events -= taken;
        let mut n = n;
        while n > 0
            && let Some((_, left)) = self.arrivals.front_mut()
        {
            let off = n.min(*left);
            (*left, n) = (*left - off, n - off);
            if *left == 0 {
                self.arrivals.pop_front();
            }
        }
        taken
    }
}

impl Announcer {
    /// What this process's workers wait on.
    pub fn workers(&self) -> Arc<Notify> {
        self.workers.clone()
    }

    /// `n` new events were committed.
    pub fn new_events(&self, n: u64) {
        {
            let mut unclaimed = self.lock_unclaimed();
            unclaimed.events += n;
            unclaimed.arrivals.push_back((Instant::now(), n));
            // Nobody claims in a receive-only process. Forgetting when the oldest came only
            // matters below a batch's worth, and this many announcements are more than that.
            if unclaimed.arrivals.len() > MAX_ARRIVALS {
                unclaimed.arrivals.pop_front();
            }
        }
        self.workers.notify_waiters();
        self.new_events.store(true, Ordering::Release);
        self.kick.notify_one();
    }

    /// Whether a worker should claim now: `batch` events are waiting, or the first of them has
    /// waited `wait`, or nothing announced is waiting (the worker was woken by a retry falling
    /// due, a poll or another process). Claiming now takes up to `batch` of them, so the other
    /// workers woken with it wait for the next batch's worth rather than split this one: how
    /// many, for [`Announcer::claimed`]. Otherwise, until when to wait for more.
    pub fn claim_after(&self, batch: u64, wait: Duration) -> Result<u64, Instant> {
        let mut unclaimed = self.lock_unclaimed();
        let Some(&(first, _)) = unclaimed.arrivals.front() else {
            return Ok(0);
        };
        let deadline = first + wait;
        if unclaimed.events < batch && Instant::now() < deadline {
            return Err(deadline);
        }
        Ok(unclaimed.take(batch))
    }

    /// A worker claimed `n` events, `taken` of them taken already when it was let claim.
    pub fn claimed(&self, n: u64, taken: u64) {
        self.lock_unclaimed().take(n.saturating_sub(taken));
    }

    fn lock_unclaimed(&self) -> std::sync::MutexGuard<'_, Unclaimed> {
        // Two counters: a panic elsewhere cannot leave them inconsistent.
        self.unclaimed.lock().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: u64 = 100;
    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test(start_paused = true)]
    async fn a_worker_woken_by_nothing_announced_claims_at_once() {
        assert_eq!(Announcer::default().claim_after(BATCH, WAIT), Ok(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_events_wait_for_more_until_the_first_has_waited() {
        let announcer = Announcer::default();
        let start = Instant::now();
        announcer.new_events(10);
        assert_eq!(announcer.claim_after(BATCH, WAIT), Err(start + WAIT));
        tokio::time::advance(WAIT / 2).await;
        announcer.new_events(20);
        assert_eq!(
            announcer.claim_after(BATCH, WAIT),
            Err(start + WAIT),
            "the oldest sets the deadline"
        );
        tokio::time::advance(WAIT / 2).await;
        assert_eq!(announcer.claim_after(BATCH, WAIT), Ok(30));
        announcer.claimed(30, 30);
        assert_eq!(announcer.claim_after(BATCH, WAIT), Ok(0), "nothing is left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_s_worth_is_claimed_at_once_and_not_split_between_workers() {
        let announcer = Announcer::default();
        let start = Instant::now();
        announcer.new_events(150);
        assert_eq!(announcer.claim_after(BATCH, WAIT), Ok(BATCH));
        assert_eq!(
            announcer.claim_after(BATCH, WAIT),
            Err(start + WAIT),
            "the second worker waits for the rest to fill a batch"
        );
        announcer.new_events(60);
        assert_eq!(announcer.claim_after(BATCH, WAIT), Ok(BATCH));
        announcer.claimed(BATCH, BATCH);
        assert_eq!(announcer.claim_after(BATCH, WAIT), Err(start + WAIT));
        // The other worker's claim found the last ten as well.
        announcer.claimed(BATCH + 10, BATCH);
        assert_eq!(
            announcer.claim_after(BATCH, WAIT),
            Ok(0),
            "all were claimed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_claims_at_once() {
        let announcer = Announcer::default();
        announcer.new_events(1);
        assert_eq!(announcer.claim_after(BATCH, Duration::ZERO), Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_receive_only_process_keeps_a_bounded_record() {
        let announcer = Announcer::default();
        for _ in 0..10 * MAX_ARRIVALS {
            announcer.new_events(1);
        }
        assert_eq!(announcer.lock_unclaimed().arrivals.len(), MAX_ARRIVALS);
    }
}
