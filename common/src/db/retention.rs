//! Bounded storage (see migration 0012): processed events and their attempts are kept for the
//! retention and dropped by whole UTC days, idempotency keys are kept for the dedup window in
//! generations dropped whole. Everything here is a partition created or dropped, never a
//! delete of many rows, except for the rare processed events that landed in no day.
//!
//! Any number of hookd processes may run these at once: creating and dropping are idempotent,
//! and each takes its locks for milliseconds with a short `lock_timeout`, giving up until the
//! next round rather than queueing ingest or processing behind a long reader.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The shortest dedup window accepted: Stripe retries a delivery for up to 3 days, and a
/// redelivery after its key expired would be processed a second time.
pub const MIN_DEDUP_WINDOW: Duration = Duration::from_secs(3 * 86_400);

/// The default retention of processed events (and, unless set, of keys).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Rows each statement deletes from an undated partition, one transaction each.
const BATCH: i64 = 5_000;

/// How long hookd keeps what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Succeeded and skipped events, with their attempts; dropped by whole days past it.
    pub retention: Duration,
    /// Idempotency keys: a delivery of a key claimed longer ago than this is a new event.
    pub dedup_window: Duration,
    /// Dead events, when set; otherwise they stay until purged.
    pub dlq_retention: Option<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("must be above 0")]
    Zero,
    #[error(
        "must be at least 3 days ({} given): providers redeliver for days (Stripe for up to 3), \
         and a redelivery whose key has expired would be processed again",
        humanise(*.0)
    )]
    DedupWindowTooShort(Duration),
}

fn humanise(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else {
        format!("{secs}s")
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retention: DEFAULT_RETENTION,
            dedup_window: DEFAULT_RETENTION,
            dlq_retention: None,
        }
    }
}

impl Policy {
    /// The dedup window defaults to the retention, and is never under [`MIN_DEDUP_WINDOW`].
    pub fn new(
        retention: Duration,
        dedup_window: Option<Duration>,
        dlq_retention: Option<Duration>,
    ) -> Result<Policy, (&'static str, PolicyError)> {
        if retention.is_zero() {
            return Err(("HOOKD_RETENTION", PolicyError::Zero));
        }
        if dlq_retention.is_some_and(|d| d.is_zero()) {
            return Err(("HOOKD_DLQ_RETENTION", PolicyError::Zero));
        }
        let dedup_window = match dedup_window {
            Some(w) if w < MIN_DEDUP_WINDOW => {
                return Err(("HOOKD_DEDUP_WINDOW", PolicyError::DedupWindowTooShort(w)));
            }
            Some(w) => w,
            // A short retention does not shorten the keys below the providers' redeliveries.
            None => retention.max(MIN_DEDUP_WINDOW),
        };
        Ok(Policy {
            retention,
            dedup_window,
            dlq_retention,
        })
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Makes `policy` the one every claim of a key and every hooktop reads (ingest finds the dedup
/// window in the database, so all instances and bulk loads agree). Writes only on a change.
pub async fn store_policy(pool: &PgPool, policy: &Policy) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE retention_policy
         SET retention = make_interval(secs => $1), dedup_window = make_interval(secs => $2),
             dlq_retention = make_interval(secs => $3), updated_at = now()
         WHERE (retention, dedup_window, dlq_retention) IS DISTINCT FROM
               (make_interval(secs => $1), make_interval(secs => $2), make_interval(secs => $3))",
    )
    .bind(secs(policy.retention))
    .bind(secs(policy.dedup_window))
    .bind(policy.dlq_retention.map(secs))
    .execute(pool)
    .await?;
    Ok(())
}

/// What [`prepare`] made ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Days of processed events whose partitions were created.
    pub days: Vec<NaiveDate>,
    /// The generation of keys started, when the newest one had reached the dedup window.
    pub key_generation: Option<i32>,
}

/// Stores `policy`, gets the partitions ready for events processed today and in the next
/// `ahead` days, and starts a new generation of keys when the newest is a dedup window old.
pub async fn prepare(pool: &PgPool, policy: &Policy, ahead: u32) -> sqlx::Result<Prepared> {
    store_policy(pool, policy).await?;
    let mut tx = pool.begin().await?;
    // Creating a day locks `events_done`: rather come back at the next round than keep
    // finishing events queued behind a long reader.
    sqlx::query("SET LOCAL lock_timeout = '1s'")
        .execute(&mut *tx)
        .await?;
    let days: Vec<NaiveDate> = sqlx::query_scalar(
        "SELECT day FROM (
             SELECT (now() AT TIME ZONE 'UTC')::date + ahead AS day
             FROM generate_series(0, $1) AS ahead
         ) d
         WHERE hookd_create_done_day(day)
         ORDER BY day",
    )
    .bind(i32::try_from(ahead).unwrap_or(i32::MAX))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let key_generation = start_key_generation_if_due(pool, policy).await?;
    Ok(Prepared {
        days,
        key_generation,
    })
}

async fn start_key_generation_if_due(pool: &PgPool, policy: &Policy) -> sqlx::Result<Option<i32>> {
    let due: bool = sqlx::query_scalar(
        "SELECT coalesce(max(started_at) <= now() - make_interval(secs => $1), true)
         FROM event_key_generations",
    )
    .bind(secs(policy.dedup_window))
    .fetch_one(pool)
    .await?;
    if !due {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    // Starting a generation waits for every claim in flight and holds new ones until it
    // commits (that is what makes it safe): a short wait, given up on a busy moment.
    sqlx::query("SET LOCAL lock_timeout = '200ms'")
        .execute(&mut *tx)
        .await?;
    // Looked at again under the lock: another process may have just started one.
    let started: Option<i32> = sqlx::query_scalar(
        "SELECT hookd_start_key_generation()
         WHERE (SELECT coalesce(max(started_at) <= now() - make_interval(secs => $1), true)
                FROM event_key_generations)",
    )
    .bind(secs(policy.dedup_window))
    .fetch_optional(&mut *tx)
    .await
    .or_else(|e| if lock_busy(&e) { Ok(None) } else { Err(e) })?;
    tx.commit().await?;
    Ok(started)
}

fn lock_busy(e: &sqlx::Error) -> bool {
    const LOCK_NOT_AVAILABLE: &str = "55P03";
    const DEADLOCK_DETECTED: &str = "40P01";
    matches!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some(LOCK_NOT_AVAILABLE | DEADLOCK_DETECTED)
    )
}

/// What a run of retention dropped, or with [`expired`] would drop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Days of processed events dropped whole.
    pub days: Vec<NaiveDate>,
    /// Processed events they held, with those deleted from the undated partition.
    pub events: u64,
    /// Generations of keys dropped.
    pub key_generations: Vec<i32>,
}

/// The days past the retention that have partitions, oldest first.
async fn expired_days(pool: &PgPool, policy: &Policy) -> sqlx::Result<Vec<NaiveDate>> {
    sqlx::query_scalar(
        "SELECT day FROM hookd_done_days() AS day
         WHERE (day + 1)::timestamp AT TIME ZONE 'UTC' <= now() - make_interval(secs => $1)",
    )
    .bind(secs(policy.retention))
    .fetch_all(pool)
    .await
}

/// Generations of keys every one of which is past the dedup window: the next one started
/// longer ago than the window, so nothing was claimed in them since.
async fn expired_generations(pool: &PgPool, policy: &Policy) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar(
        "SELECT g.gen FROM event_key_generations g
         WHERE (SELECT min(n.started_at) FROM event_key_generations n WHERE n.gen > g.gen)
               <= now() - make_interval(secs => $1)
         ORDER BY g.gen",
    )
    .bind(secs(policy.dedup_window))
    .fetch_all(pool)
    .await
}

/// The start of the oldest UTC day still kept: processed events before it are past the
/// retention by a whole day.
const UNDATED_CUT: &str =
    "date_trunc('day', (now() - make_interval(secs => $1)) AT TIME ZONE 'UTC')
                           AT TIME ZONE 'UTC'";

/// What [`drop_expired`] would drop now, without dropping it (`hookd retention run --dry-run`).
pub async fn expired(pool: &PgPool, policy: &Policy) -> sqlx::Result<Dropped> {
    let days = expired_days(pool, policy).await?;
    let mut events = 0;
    for &day in &days {
        events += day_events(pool, day).await?;
    }
    let undated: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM events_done_undated
         WHERE coalesce(processed_at, received_at) < {UNDATED_CUT}"
    ))
    .bind(secs(policy.retention))
    .fetch_one(pool)
    .await?;
    Ok(Dropped {
        days,
        events: events + undated.unsigned_abs(),
        key_generations: expired_generations(pool, policy).await?,
    })
}

/// Drops the days of processed events past the retention with their attempts, deletes the
/// undated ones past it in batches, and drops the generations of keys past the dedup window.
/// Pending, processing, retrying and dead events are never touched: they are not in
/// `events_done`.
pub async fn drop_expired(pool: &PgPool, policy: &Policy) -> sqlx::Result<Dropped> {
    let mut dropped = Dropped::default();
    for day in expired_days(pool, policy).await? {
        // Counted before the drop, outside its locks; the day is past, nothing lands in it.
        let held = day_events(pool, day).await?;
        if drop_day(pool, day).await? {
            dropped.days.push(day);
            dropped.events += held;
        }
    }
    dropped.events += delete_undated(pool, policy).await?;
    for generation in expired_generations(pool, policy).await? {
        if drop_generation(pool, generation).await? {
            dropped.key_generations.push(generation);
        }
    }
    Ok(dropped)
}

async fn day_events(pool: &PgPool, day: NaiveDate) -> sqlx::Result<u64> {
    let n: Option<i64> = sqlx::query_scalar("SELECT hookd_done_day_events($1)")
        .bind(day)
        .fetch_one(pool)
        .await?;
    Ok(n.unwrap_or(0).unsigned_abs())
}

/// Runs `statement` (returning a boolean) in a transaction of its own with a short lock
/// timeout, trying again a few times when the tables are busy.
async fn briefly_locked(pool: &PgPool, statement: &str, arg: Arg) -> sqlx::Result<bool> {
    let mut tries = 0;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await?;
        let query = sqlx::query_scalar::<_, bool>(statement);
        let query = match arg {
            Arg::Day(day) => query.bind(day),
            Arg::Generation(g) => query.bind(g),
        };
        match query.fetch_one(&mut *tx).await {
            Err(e) if tries < 10 && lock_busy(&e) => tries += 1,
            done => {
                let done = done?;
                tx.commit().await?;
                return Ok(done);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Arg {
    Day(NaiveDate),
    Generation(i32),
}

async fn drop_day(pool: &PgPool, day: NaiveDate) -> sqlx::Result<bool> {
    briefly_locked(pool, "SELECT hookd_drop_done_day($1)", Arg::Day(day)).await
}

async fn drop_generation(pool: &PgPool, generation: i32) -> sqlx::Result<bool> {
    briefly_locked(
        pool,
        "SELECT hookd_drop_key_generation($1)",
        Arg::Generation(generation),
    )
    .await
}

/// Processed events that landed in no day (their day had no partition, or they were processed
/// before migration 0012 without a time), deleted once past the retention: one batch per
/// transaction, through `events` so their attempts go with them.
async fn delete_undated(pool: &PgPool, policy: &Policy) -> sqlx::Result<u64> {
    let statement = format!(
        "DELETE FROM events
                 WHERE id IN (
                     SELECT id FROM events_done_undated
                     WHERE coalesce(processed_at, received_at) < {UNDATED_CUT}
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED
                 )
                 AND state IN ('succeeded', 'skipped')
                 AND (processed_at IS NULL OR processed_at < {UNDATED_CUT})"
    );
    let mut total = 0;
    loop {
        let done = super::retry_moved(|| {
            sqlx::query(&statement)
                .bind(secs(policy.retention))
                .bind(BATCH)
                .execute(pool)
        })
        .await?;
        if done.rows_affected() == 0 {
            return Ok(total);
        }
        total += done.rows_affected();
    }
}

/// What is retained, for hooktop and the admin API: read from the catalog and the policy
/// table, so it costs the same whatever the history holds.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// How long processed (succeeded, skipped) events are kept, in seconds.
    pub retention_secs: u64,
    /// How long idempotency keys are kept, in seconds.
    pub dedup_window_secs: u64,
    /// How long dead events are kept, in seconds; absent: until purged.
    pub dlq_retention_secs: Option<u64>,
    /// The oldest day of processed events still kept (UTC).
    pub oldest_processed_day: Option<NaiveDate>,
    /// Days of processed events kept, up to and including today.
    pub days_kept: u32,
    /// Days after today whose partitions are ready.
    pub days_ahead: u32,
    /// When the oldest kept day passes the retention and is dropped.
    pub next_drop_at: Option<DateTime<Utc>>,
    /// Processed events in no day's partition, counted up to 10,000: above 0 only when
    /// retention could not run for a while.
    pub undated_processed: u64,
    /// Generations of keys kept (normally two: the current one and the previous one).
    pub key_generations: u32,
    /// When the newest generation of keys was started.
    pub keys_generation_started_at: Option<DateTime<Utc>>,
    /// When hookd last changed the stored policy.
    pub policy_updated_at: DateTime<Utc>,
}

/// A window as the settings write it: `30d`, `72h`, else seconds.
fn window(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s => format!("{s}s"),
    }
}

impl Status {
    /// One line for a dashboard, `kept 30d · dead until purged`, naming the keys' window
    /// only where it differs from the retention: `kept 30d · keys 7d · dead 90d`.
    pub fn summary(&self) -> String {
        let mut out = format!("kept {}", window(self.retention_secs));
        if self.dedup_window_secs != self.retention_secs {
            out.push_str(&format!(" · keys {}", window(self.dedup_window_secs)));
        }
        match self.dlq_retention_secs {
            Some(secs) => out.push_str(&format!(" · dead {}", window(secs))),
            None => out.push_str(" · dead until purged"),
        }
        out
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |t: Option<DateTime<Utc>>| {
            t.map_or_else(
                || "never".to_owned(),
                |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
            )
        };
        write!(
            f,
            "processed events (HOOKD_RETENTION {}): {} days kept",
            window(self.retention_secs),
            self.days_kept
        )?;
        if let Some(day) = self.oldest_processed_day {
            write!(f, " from {day} (dropped after {})", at(self.next_drop_at))?;
        }
        writeln!(f, "; {} days ready ahead", self.days_ahead)?;
        if self.undated_processed > 0 {
            writeln!(
                f,
                "  {} processed events in no day's partition: retention could not run for a while",
                self.undated_processed
            )?;
        }
        writeln!(
            f,
            "idempotency keys (HOOKD_DEDUP_WINDOW {}): {} generations, the newest started {}",
            window(self.dedup_window_secs),
            self.key_generations,
            at(self.keys_generation_started_at)
        )?;
        match self.dlq_retention_secs {
            Some(secs) => writeln!(
                f,
                "dead events (HOOKD_DLQ_RETENTION {}): purged by whole days past it, archived first",
                window(secs)
            )?,
            None => writeln!(
                f,
                "dead events (HOOKD_DLQ_RETENTION off): kept until purged"
            )?,
        }
        write!(f, "policy stored {}", at(Some(self.policy_updated_at)))
    }
}

pub async fn status(pool: &PgPool) -> sqlx::Result<Status> {
    #[derive(sqlx::FromRow)]
    struct Row {
        retention: f64,
        dedup_window: f64,
        dlq_retention: Option<f64>,
        policy_updated_at: DateTime<Utc>,
        oldest: Option<NaiveDate>,
        kept: i64,
        ahead: i64,
        next_drop_at: Option<DateTime<Utc>>,
        undated: i64,
        generations: i64,
        started: Option<DateTime<Utc>>,
    }
    let row: Row = sqlx::query_as(
        "WITH days AS (SELECT day FROM hookd_done_days() AS day),
              today AS (SELECT (now() AT TIME ZONE 'UTC')::date AS day)
         SELECT extract(epoch FROM p.retention)::float8 AS retention,
                extract(epoch FROM p.dedup_window)::float8 AS dedup_window,
                extract(epoch FROM p.dlq_retention)::float8 AS dlq_retention,
                p.updated_at AS policy_updated_at,
                (SELECT min(day) FROM days) AS oldest,
                (SELECT count(*) FROM days, today WHERE days.day <= today.day) AS kept,
                (SELECT count(*) FROM days, today WHERE days.day > today.day) AS ahead,
                (SELECT (min(day) + 1)::timestamp AT TIME ZONE 'UTC' + p.retention FROM days)
                    AS next_drop_at,
                (SELECT count(*) FROM (SELECT FROM events_done_undated LIMIT 10000) u)
                    AS undated,
                (SELECT count(*) FROM event_key_generations) AS generations,
                (SELECT max(started_at) FROM event_key_generations) AS started
         FROM retention_policy p",
    )
    .fetch_one(pool)
    .await?;
    let secs = |s: f64| s.max(0.0).round() as u64;
    Ok(Status {
        retention_secs: secs(row.retention),
        dedup_window_secs: secs(row.dedup_window),
        dlq_retention_secs: row.dlq_retention.map(secs),
        oldest_processed_day: row.oldest,
        days_kept: u32::try_from(row.kept).unwrap_or(u32::MAX),
        days_ahead: u32::try_from(row.ahead).unwrap_or(u32::MAX),
        next_drop_at: row.next_drop_at,
        undated_processed: row.undated.unsigned_abs(),
        key_generations: u32::try_from(row.generations).unwrap_or(u32::MAX),
        keys_generation_started_at: row.started,
        policy_updated_at: row.policy_updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(retention: u64, keys: u64, dead: Option<u64>) -> Status {
        Status {
            retention_secs: retention,
            dedup_window_secs: keys,
            dlq_retention_secs: dead,
            oldest_processed_day: None,
            days_kept: 1,
            days_ahead: 3,
            next_drop_at: None,
            undated_processed: 0,
            key_generations: 1,
            keys_generation_started_at: None,
            policy_updated_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_summary_names_the_keys_window_only_where_it_differs() {
        const DAY: u64 = 86_400;
        assert_eq!(
            status(30 * DAY, 30 * DAY, None).summary(),
            "kept 30d · dead until purged"
        );
        assert_eq!(
            status(30 * DAY, 7 * DAY, Some(90 * DAY)).summary(),
            "kept 30d · keys 7d · dead 90d"
        );
        assert_eq!(
            status(36 * 3_600, 3 * DAY, None).summary(),
            "kept 36h · keys 3d · dead until purged"
        );
        assert_eq!(
            status(90, 3 * DAY, None).summary(),
            "kept 90s · keys 3d · dead until purged"
        );
    }
}
