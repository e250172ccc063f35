//! Processing: workers claim due events in batches, run the handlers and the forward, and
//! record each attempt. A batch commits once, its effects written with one statement per kind
//! of effect. One bad event never undoes the others: it fails alone in the shared statements,
//! and a batch in which a shared statement fails is run again with a savepoint per event.

mod retry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::db::business::Statements;
use common::db::events::{self, AttemptOutcome, AttemptRecord, ClaimedEvent, Lease};
use common::db::stats;
use common::{EVENTS_CHANNEL, State};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use retry::RetryPolicy;

use crate::announce::Announcer;
use crate::handlers::forward::{Delivery, Forwarder};
use crate::handlers::{self, Event, HandlerError, Outcome};
use crate::liveness::Owner;
use crate::metrics::Metrics;

/// How long a worker waits before trying again after the database failed it.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub policy: RetryPolicy,
    pub batch_size: i64,
    /// How long an announced event may wait for others to fill its batch.
    pub batch_wait: Duration,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub forward_timeout: Duration,
    /// The built-in handlers' statements, shaped by the application's tables.
    pub statements: Statements,
}

/// When the workers of this process last came round their loop, for the health check and
/// the systemd watchdog: a worker wedged on something never comes round again.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last_ms: Arc<AtomicI64>,
    stale_after: Duration,
}

impl Heartbeat {
    pub fn new(stale_after: Duration) -> Self {
        let beat = Heartbeat {
            last_ms: Arc::default(),
            stale_after,
        };
        beat.beat();
        beat
    }

    fn beat(&self) {
        self.last_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub fn alive(&self) -> bool {
        let age = Utc::now().timestamp_millis() - self.last_ms.load(Ordering::Relaxed);
        u128::try_from(age).unwrap_or(0) <= self.stale_after.as_millis()
    }
}

/// One worker; several may run in one process and several processes on one database.
#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    config: Arc<WorkerConfig>,
    forwarder: Arc<Forwarder>,
    metrics: Arc<Metrics>,
    heartbeat: Heartbeat,
    /// Events this process leased and has not committed, shared by the worker's clones, so a
    /// shutdown that gives up on its batches can hand them back at once instead of leaving them
    /// until their leases run out.
    in_flight: Arc<Mutex<HashMap<i64, i32>>>,
    /// The owner this process claims in (see `crate::liveness`).
    owner: Owner,
}

/// Why an attempt failed, and what the attempt history should keep of it.
struct Failure {
    message: String,
    permanent: bool,
}

impl Worker {
    pub fn new(
        pool: PgPool,
        config: WorkerConfig,
        forwarder: Arc<Forwarder>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // A healthy worker comes round at least once per poll interval, plus one batch whose
        // forwards may each take the whole timeout.
        let heartbeat = Heartbeat::new(
            config.poll_interval * 2 + config.forward_timeout + Duration::from_secs(30),
        );
        Worker {
            pool,
            config: Arc::new(config),
            forwarder,
            metrics,
            heartbeat,
            in_flight: Arc::default(),
            owner: Owner::default(),
        }
    }

    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// The owner the workers claim in; [`crate::liveness::run`] keeps it held.
    pub fn owner(&self) -> Owner {
        self.owner.clone()
    }

    /// Claims one batch of due events and processes it. Returns how many were claimed.
    pub async fn process_batch(&self) -> sqlx::Result<usize> {
        self.process_batch_on(&mut None).await
    }

    /// [`Self::process_batch`] on `kept`, the connection the last batch used if it claimed
    /// anything, and kept for the next one if this one does and the pool has another to give
    /// (a small pool is shared with ingest's writer). A pool connection is tested with
    /// a round trip each time it is taken and again each time it is given back: taken for the
    /// claim and again for the transaction, that was four round trips beside a batch's eight
    /// statements. A kept connection the database has closed meanwhile fails the claim, which
    /// leases nothing; after any error the connection goes back to the pool, which tests it.
    async fn process_batch_on(
        &self,
        kept: &mut Option<PoolConnection<Postgres>>,
    ) -> sqlx::Result<usize> {
        let mut conn = match kept.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        let result = self.claim_and_process(&mut conn).await;
        if matches!(result, Ok(n) if n > 0) && common::db::has_spare_connection(&self.pool) {
            *kept = Some(conn);
        }
        result
    }

    async fn claim_and_process(&self, conn: &mut PgConnection) -> sqlx::Result<usize> {
        let claimed = events::claim_due(
            &mut *conn,
            self.config.batch_size,
            self.config.lease,
            self.owner.get(),
        )
        .await?;
        let mut claimed: Vec<Event> = claimed.into_iter().map(Event::read).collect();
        if claimed.is_empty() {
            return Ok(0);
        }
        claimed.sort_by(|a, b| handlers::batch_order(a).cmp(&handlers::batch_order(b)));
        self.lock_in_flight()
            .extend(claimed.iter().map(|e| (e.id, e.attempt)));
        // Deliveries go out before the transaction opens, so no row lock waits on the network.
        let deliveries =
            futures::future::join_all(claimed.iter().map(|event| self.forwarder.deliver(event)))
                .await;
        let leases: Vec<Lease> = claimed.iter().map(|e| e.lease()).collect();
        let mut isolation = Isolation::Batch;
        let mut moved = 0;
        let mut lost = Vec::new();
        let result = loop {
            match self
                .complete(conn, &claimed, &deliveries, &lost, isolation)
                .await
            {
                Err(Retry::HandlerFailed) if isolation == Isolation::Batch => {
                    isolation = Isolation::Event;
                }
                // Each round leaves out at least one more event, so this ends.
                Err(Retry::LeaseLost(ids)) => {
                    for &event in &ids {
                        tracing::warn!(
                            event,
                            "lease lost before completion; left to its new worker"
                        );
                    }
                    lost.extend(ids);
                }
                // One of the events died under a worker that took over its lease: the next
                // try sees it gone and leaves it alone. The deliveries are not sent again.
                Err(Retry::Database(e)) if common::db::is_row_moved(&e) && moved < 3 => {
                    moved += 1;
                }
                other => break other,
            }
        };
        let result = match result {
            Ok(records) => {
                self.report(&claimed, &records);
                Ok(claimed.len())
            }
            Err(e) => {
                let e = e.into_sqlx();
                tracing::warn!(error = %e, events = claimed.len(), "batch failed, releasing leases");
                release(&self.pool, &leases).await;
                Err(e)
            }
        };
        let mut in_flight = self.lock_in_flight();
        for lease in &leases {
            in_flight.remove(&lease.id);
        }
        result
    }

    /// Runs the batch's attempts in one transaction and commits them with the events' new
    /// states, leaving out the events in `lost`. In `Isolation::Batch` the handlers' effects
    /// are written together, one statement per kind of effect ([`handlers::apply_batch`]); an
    /// event that cannot be applied (its business is not linked yet, its payload lacks a
    /// field) fails alone there, writing nothing. Only a statement that fails sends the whole
    /// batch back to be run again in `Isolation::Event`, where each attempt has a savepoint
    /// that undoes its writes alone. An event whose lease ran out and was taken over sends it
    /// back too, to be run without that event ([`events::complete`]).
    async fn complete<'d>(
        &self,
        conn: &mut PgConnection,
        claimed: &[Event],
        deliveries: &'d [Option<Delivery>],
        lost: &[i64],
        isolation: Isolation,
    ) -> Result<Vec<AttemptRecord<'d>>, Retry> {
        let mut tx = conn.begin().await?;
        let live: Vec<(&Event, Option<&Delivery>)> = claimed
            .iter()
            .zip(deliveries)
            .filter(|(event, _)| !lost.contains(&event.id))
            .map(|(event, delivery)| (event, delivery.as_ref()))
            .collect();
        let records = match isolation {
            Isolation::Batch => self.attempt_together(&mut tx, &live).await?,
            Isolation::Event => {
                let mut records = Vec::with_capacity(live.len());
                for &(event, delivery) in &live {
                    records.push(self.attempt_alone(&mut tx, event, delivery).await?);
                }
                records
            }
        };
        let unsettled = events::complete(&mut tx, &records).await?;
        if !unsettled.is_empty() {
            return Err(Retry::LeaseLost(unsettled));
        }
        let counted: Vec<stats::Counted> = live
            .iter()
            .zip(&records)
            .map(|((event, _), record)| stats::Counted {
                source: event.source(),
                event_type: &event.event_type,
                outcome: record.outcome,
            })
            .collect();
        stats::count_outcomes(&mut tx, &counted).await?;
        tx.commit().await?;
        Ok(records)
    }

    /// Runs the attempts of `live` with shared statements. Each attempt is recorded with its
    /// share of the time they took.
    async fn attempt_together<'d>(
        &self,
        tx: &mut PgConnection,
        live: &[(&Event, Option<&'d Delivery>)],
    ) -> Result<Vec<AttemptRecord<'d>>, Retry> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let max_attempts = self.config.policy.max_attempts;
        let mut results: Vec<Option<Result<State, Failure>>> = live
            .iter()
            .map(|&(event, delivery)| precondition(event, delivery, max_attempts).err().map(Err))
            .collect();
        let runs: Vec<usize> = (0..live.len()).filter(|&i| results[i].is_none()).collect();
        let events: Vec<&Event> = runs.iter().map(|&i| live[i].0).collect();
        let outcomes = handlers::apply_batch(tx, &self.config.statements, &events)
            .await
            .map_err(|e| {
                tracing::info!(error = %e, events = events.len(),
                    "a shared statement failed; running the batch again event by event");
                Retry::HandlerFailed
            })?;
        for (i, outcome) in runs.into_iter().zip(outcomes) {
            results[i] = Some(verdict(outcome, live[i].1));
        }
        let share = clock.elapsed() / u32::try_from(live.len().max(1)).unwrap_or(u32::MAX);
        Ok(live
            .iter()
            .zip(results)
            .map(|(&(event, delivery), result)| {
                let result = result.expect("every event has a verdict");
                self.record(event, delivery, started_at, share, result)
            })
            .collect())
    }

    /// Runs one attempt under a savepoint of its own, so a failure undoes only its writes.
    async fn attempt_alone<'d>(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        delivery: Option<&'d Delivery>,
    ) -> Result<AttemptRecord<'d>, Retry> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let result = match precondition(event, delivery, self.config.policy.max_attempts) {
            Err(failure) => Err(failure),
            Ok(()) => {
                let mut savepoint = tx.begin().await?;
                let outcome = handlers::apply(&mut savepoint, &self.config.statements, event).await;
                let result = verdict(outcome, delivery);
                if result.is_ok() {
                    savepoint.commit().await?;
                } else {
                    savepoint.rollback().await?;
                }
                result
            }
        };
        Ok(self.record(event, delivery, started_at, clock.elapsed(), result))
    }

    /// The attempt's line in the history, and when the event is tried next if it failed.
    fn record<'d>(
        &self,
        event: &ClaimedEvent,
        delivery: Option<&'d Delivery>,
        started_at: chrono::DateTime<Utc>,
        duration: Duration,
        result: Result<State, Failure>,
    ) -> AttemptRecord<'d> {
        let mut record = AttemptRecord {
            event_id: event.id,
            attempt: event.attempt,
            started_at,
            duration,
            outcome: AttemptOutcome::Succeeded,
            error: None,
            retry_at: None,
            http_status: delivery.and_then(|d| d.status),
            response_body: delivery.and_then(|d| d.response.as_deref()),
        };
        match result {
            Ok(State::Skipped) => record.outcome = AttemptOutcome::Skipped,
            Ok(_) => {}
            Err(failure) => {
                let delay = if failure.permanent {
                    None
                } else {
                    let attempt = u32::try_from(event.attempt).unwrap_or(u32::MAX);
                    self.config
                        .policy
                        .delay_after(attempt, &mut rand::thread_rng())
                };
                record.retry_at = delay.map(|d| Utc::now() + d);
                record.outcome = if delay.is_some() {
                    AttemptOutcome::Failed
                } else {
                    AttemptOutcome::Dead
                };
                record.error = Some(failure.message);
            }
        }
        record
    }

    /// Metrics and one log line per attempt, once the batch is committed.
    fn report(&self, claimed: &[Event], records: &[AttemptRecord<'_>]) {
        let mut records = records.iter().peekable();
        for event in claimed {
            let Some(record) = records.next_if(|r| r.event_id == event.id) else {
                continue;
            };
            let outcome = record.outcome.as_str();
            self.metrics
                .processed(event.source(), outcome, record.duration);
            if let Some(error) = &record.error {
                tracing::warn!(
                    event = event.id, source = %event.source(), event_type = event.event_type,
                    attempt = event.attempt, outcome, retry_at = ?record.retry_at, error,
                    "event failed"
                );
            } else {
                // At debug: one line per event at thousands a second is most of a busy worker's
                // CPU and more than journald keeps (10,000 lines per 30 s by default); the
                // attempts table holds the same history.
                tracing::debug!(
                    event = event.id, source = %event.source(), event_type = event.event_type,
                    attempt = event.attempt, outcome, "event processed"
                );
            }
        }
    }

    /// Leases by event id.
    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i32>> {
        // A poisoned map still holds whole entries; nothing in it can be half-updated.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands back every event this process holds, without counting the attempt. Only for
    /// after the workers have been stopped.
    pub async fn release_in_flight(&self) {
        let held: Vec<Lease> = self
            .lock_in_flight()
            .drain()
            .map(|(id, attempt)| Lease { id, attempt })
            .collect();
        release(&self.pool, &held).await;
    }

    /// Processes until `shutdown`, sleeping between batches until woken (new work announced),
    /// the next scheduled retry, or the poll interval, whichever comes first; woken by new
    /// events, until a batch's worth of them is waiting or the first has waited
    /// `batch_wait`. Each batch that commits is announced.
    pub async fn run(self, announcer: Arc<Announcer>, shutdown: CancellationToken) {
        let wake = announcer.workers();
        let batch = self.config.batch_size.unsigned_abs();
        let mut taken = 0;
        let mut kept = None;
        while !shutdown.is_cancelled() {
            self.heartbeat.beat();
            // Registered before the batch, so a wake-up during it is not lost.
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let processed = self.process_batch_on(&mut kept).await;
            if let Ok(n) = processed {
                announcer.claimed(n as u64, std::mem::take(&mut taken));
                if n > 0 {
                    announcer.progress();
                }
            }
            let pause = match processed {
                Ok(n) if n as i64 >= self.config.batch_size => continue,
                Ok(_) => self.idle_time(kept.as_deref_mut()).await,
                Err(e) => {
                    tracing::error!(error = %e, "processing failed");
                    ERROR_PAUSE
                }
            };
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => {}
            }
            loop {
                let more = wake.notified();
                tokio::pin!(more);
                more.as_mut().enable();
                let deadline = match announcer.claim_after(batch, self.config.batch_wait) {
                    Ok(reserved) => {
                        taken = reserved;
                        break;
                    }
                    Err(deadline) => deadline,
                };
                tokio::select! {
                    () = more => {}
                    () = tokio::time::sleep_until(deadline) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }

    async fn idle_time(&self, kept: Option<&mut PgConnection>) -> Duration {
        let due = match kept {
            Some(conn) => events::next_due_at(conn).await,
            None => events::next_due_at(&self.pool).await,
        };
        match due {
            Ok(Some(due)) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.config.poll_interval),
            Ok(None) => self.config.poll_interval,
            Err(_) => ERROR_PAUSE,
        }
    }
}

async fn release(pool: &PgPool, held: &[Lease]) {
    if held.is_empty() {
        return;
    }
    match events::release(pool, held).await {
        Ok(n) => tracing::info!(events = n, "released leases"),
        Err(e) => tracing::warn!(error = %e, "could not release leases; they will expire"),
    }
}

/// What fails an attempt before any handler runs: an event whose earlier attempts never
/// completed too often, or a forward that failed.
fn precondition(
    event: &ClaimedEvent,
    delivery: Option<&Delivery>,
    max_attempts: u32,
) -> Result<(), Failure> {
    if i64::from(event.attempt) > i64::from(max_attempts) {
        // Earlier leases ran out without a result: a worker keeps dying on this event.
        return Err(Failure {
            message: format!(
                "abandoned: {} attempts never completed (worker crashed or timed out)",
                event.attempt - 1
            ),
            permanent: true,
        });
    }
    if let Some(error) = delivery.and_then(|d| d.error.as_ref()) {
        return Err(Failure {
            message: error.clone(),
            permanent: false,
        });
    }
    Ok(())
}

/// Which state the handler's outcome leaves the event in.
fn verdict(
    outcome: Result<Outcome, HandlerError>,
    delivery: Option<&Delivery>,
) -> Result<State, Failure> {
    match outcome {
        Ok(Outcome::Applied) => Ok(State::Succeeded),
        Ok(Outcome::Unhandled) if delivery.is_some() => Ok(State::Succeeded),
        Ok(Outcome::Unhandled) => Ok(State::Skipped),
        Err(HandlerError::Permanent(message)) => Err(Failure {
            message,
            permanent: true,
        }),
        Err(e) => Err(Failure {
            message: e.to_string(),
            permanent: false,
        }),
    }
}

/// How the attempts of a batch are kept apart; see [`Worker::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    Batch,
    Event,
}

/// Why a batch did not commit.
#[derive(Debug)]
enum Retry {
    /// A handler failed in `Isolation::Batch`: run the batch again, event by event.
    HandlerFailed,
    /// These events' leases ran out and were taken over: run the batch again without them.
    LeaseLost(Vec<i64>),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Retry {
    fn from(e: sqlx::Error) -> Self {
        Retry::Database(e)
    }
}

impl Retry {
    fn into_sqlx(self) -> sqlx::Error {
        match self {
            Retry::Database(e) => e,
            // Only `Isolation::Batch` reports this, and its batch is always run again.
            Retry::HandlerFailed => {
                sqlx::Error::Protocol("handler failed in a shared batch".into())
            }
            // The batch is always run again without them.
            Retry::LeaseLost(_) => sqlx::Error::Protocol("leases lost in a batch".into()),
        }
    }
}

/// Keeps the workers of this process awake to new work: one LISTEN connection for all of them,
/// re-established whenever it drops (and then every worker looks, since notifications sent
/// meanwhile are lost).
pub async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for new events; retrying");
                tokio::select! {
                    () = tokio::time::sleep(ERROR_PAUSE) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        if let Err(e) = listener.listen(EVENTS_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        }
        wake.notify_waiters();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                message = listener.try_recv() => match message {
                    Ok(Some(_)) => wake.notify_waiters(),
                    // The connection dropped; try_recv reconnects on the next call.
                    Ok(None) => wake.notify_waiters(),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
