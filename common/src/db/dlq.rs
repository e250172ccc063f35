//! The dead-letter queue. Dead is a state of `events`, so recovery is an UPDATE that keeps the
//! attempt history, and hookd, hooktop and the admin API all recover through these functions.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::{EVENTS_CHANNEL, Source};

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("event {0} does not exist")]
    NotFound(i64),
    #[error("event {id} is {state}, not dead")]
    NotDead { id: i64, state: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Rows each statement of a bulk operation touches: small enough that no lock is held for long
/// and ingest keeps flowing, large enough that a million rows take few round trips.
pub const BATCH: i64 = 5_000;

#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub source: Option<Source>,
    pub event_type: Option<String>,
    /// Case-insensitive substring of the event type, provider event id or last error.
    pub text: Option<String>,
    /// Page on: only entries listed after this event (the last one of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A dead-lettered event, under the names the runbook's `failed_webhooks` has.
#[derive(Debug, Clone, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
pub struct DeadEvent {
    /// hookd's id of the event: the `webhook_id` to retry it by.
    pub id: i64,
    pub source: String,
    /// The provider's id of the event.
    pub event_id: String,
    pub event_type: String,
    pub attempts: i32,
    // Serialised under the runbook's names, as `failed_webhooks` has them.
    /// The error of the last attempt.
    #[serde(rename = "error_message")]
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    /// When the event was dead-lettered.
    #[serde(rename = "failed_at")]
    pub dead_at: DateTime<Utc>,
}

/// Dead events, newest first.
pub async fn list(pool: &PgPool, filter: &DeadFilter) -> sqlx::Result<Vec<DeadEvent>> {
    // LIKE metacharacters in the user's text are matched literally.
    let pattern = filter.text.as_deref().map(|t| {
        let escaped = t
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    sqlx::query_as(
        "SELECT id, source, event_id, event_type, attempts, last_error, received_at, dead_at
         FROM events
         WHERE state = 'dead'
           AND ($1::text IS NULL OR source = $1)
           AND ($2::text IS NULL OR event_type = $2)
           AND ($3::text IS NULL OR event_type ILIKE $3 OR event_id ILIKE $3
                OR last_error ILIKE $3)
           AND ($4::bigint IS NULL
                OR (dead_at, id) < (SELECT dead_at, id FROM events
                                    WHERE state = 'dead' AND id = $4))
         ORDER BY dead_at DESC, id DESC
         LIMIT $5",
    )
    .bind(filter.source.map(Source::as_str))
    .bind(filter.event_type.as_deref())
    .bind(pattern)
    .bind(filter.before_id)
    .bind(filter.limit.clamp(0, 1_000))
    .fetch_all(pool)
    .await
}

pub async fn count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE state = 'dead'")
        .fetch_one(pool)
        .await
}

/// Sends one dead event back to the queue with a fresh attempt budget; its history stays.
pub async fn retry(pool: &PgPool, id: i64) -> Result<(), DlqError> {
    let state = super::retry_moved(|| async {
        let mut tx = pool.begin().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM events WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if state.as_deref() == Some("dead") {
            revive(&mut tx, &[id]).await?;
            tx.commit().await?;
        }
        Ok(state)
    })
    .await?;
    match state {
        None => Err(DlqError::NotFound(id)),
        Some(state) if state == "dead" => Ok(()),
        Some(state) => Err(DlqError::NotDead { id, state }),
    }
}

/// Retries every event that is dead now. Works on a snapshot taken at the start and in batches,
/// so events that die again meanwhile are not picked up a second time and no lock is held long.
pub async fn retry_all(pool: &PgPool) -> sqlx::Result<u64> {
    let snapshot: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let mut total = 0;
    loop {
        let revived = super::retry_moved(|| async {
            let mut tx = pool.begin().await?;
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM events
                 WHERE state = 'dead' AND dead_at <= $1
                 ORDER BY dead_at
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(snapshot)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                return Ok(0);
            }
            let revived = revive(&mut tx, &ids).await?;
            tx.commit().await?;
            Ok(revived)
        })
        .await?;
        if revived == 0 {
            return Ok(total);
        }
        total += revived;
    }
}

pub(super) async fn revive(conn: &mut sqlx::PgConnection, ids: &[i64]) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE events
         SET state = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL,
             locked_until = NULL
         WHERE id = ANY($1) AND state = 'dead'",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    // The history leaves the dead partitions with its event (events before attempts, the lock
    // order of every writer).
    sqlx::query(
        "UPDATE event_attempts SET dead_at = NULL WHERE event_id = ANY($1) AND dead_at IS NOT NULL",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, 'retry')")
        .bind(EVENTS_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// How many dead events died longer ago than `age`: what a purge would delete.
pub async fn count_older_than(pool: &PgPool, age: chrono::Duration) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events
         WHERE state = 'dead' AND dead_at < now() - make_interval(secs => $1)",
    )
    .bind(age.as_seconds_f64())
    .fetch_one(pool)
    .await
}

/// Deletes dead events that died longer ago than `age`, with their attempt history. Whole days
/// are dropped (see migration 0005); what is left, the day the cut falls in and any undated
/// dead events, is deleted one batch per transaction so ingest never waits behind it.
pub async fn purge_older_than(pool: &PgPool, age: chrono::Duration) -> sqlx::Result<u64> {
    let age = age.as_seconds_f64();
    let days: Vec<NaiveDate> = sqlx::query_scalar(
        "SELECT day FROM hookd_dead_days() AS day
         WHERE (day + 1)::timestamp AT TIME ZONE 'UTC' <= now() - make_interval(secs => $1)",
    )
    .bind(age)
    .fetch_all(pool)
    .await?;
    let mut total = 0;
    for day in days {
        // Counted before the drop, outside its locks. The day is past the cut, so no event
        // dies into it meanwhile.
        let held = day_events(pool, day, None).await?;
        if drop_day(pool, day, false).await? {
            total += held;
        }
    }
    loop {
        let done = super::retry_moved(|| {
            sqlx::query(
                "DELETE FROM events
                 WHERE id IN (
                     SELECT id FROM events
                     WHERE state = 'dead' AND dead_at < now() - make_interval(secs => $1)
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED
                 )
                 AND state = 'dead'",
            )
            .bind(age)
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

/// Gets the partitions ready for events that die today and in the next `ahead` days, and drops
/// those of past days that stayed empty, so days without deaths leave nothing behind. Any
/// number of processes may run this at once.
pub async fn prepare_days(pool: &PgPool, ahead: u32) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    // Creating a day locks the dead side of `events`: rather give up and come back at the next
    // round than keep dying events and dashboard reads queued behind a long reader.
    sqlx::query("SET LOCAL lock_timeout = '1s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "SELECT hookd_create_dead_day((now() AT TIME ZONE 'UTC')::date + ahead)
         FROM generate_series(0, $1) AS ahead",
    )
    .bind(i32::try_from(ahead).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let past: Vec<NaiveDate> = sqlx::query_scalar(
        "SELECT day FROM hookd_dead_days() AS day WHERE day < (now() AT TIME ZONE 'UTC')::date",
    )
    .fetch_all(pool)
    .await?;
    for day in past {
        // Only days that look empty are locked, and the drop looks again under its locks.
        if day_events(pool, day, Some(1)).await? == 0 {
            drop_day(pool, day, true).await?;
        }
    }
    Ok(())
}

/// How many events a day holds, counting at most `up_to`; 0 when it has no partition.
async fn day_events(pool: &PgPool, day: NaiveDate, up_to: Option<i64>) -> sqlx::Result<u64> {
    let n: Option<i64> = sqlx::query_scalar("SELECT hookd_dead_day_events($1, $2)")
        .bind(day)
        .bind(up_to)
        .fetch_one(pool)
        .await?;
    Ok(n.unwrap_or(0).unsigned_abs())
}

/// Drops one day's partitions in a transaction of its own; false when the day was gone or,
/// with `only_if_empty`, held events. A day another session keeps busy is waited for a little
/// and then tried again.
async fn drop_day(pool: &PgPool, day: NaiveDate, only_if_empty: bool) -> sqlx::Result<bool> {
    const LOCK_NOT_AVAILABLE: &str = "55P03";
    const DEADLOCK_DETECTED: &str = "40P01";
    let mut tries = 0;
    loop {
        let mut tx = pool.begin().await?;
        // The drop locks the dead side of `events`; a short wait keeps dying events and
        // dashboard reads from queueing behind it for long.
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await?;
        let dropped = sqlx::query_scalar::<_, bool>("SELECT hookd_drop_dead_day($1, $2)")
            .bind(day)
            .bind(only_if_empty)
            .fetch_one(&mut *tx)
            .await;
        match dropped {
            Err(e)
                if tries < 10
                    && matches!(
                        e.as_database_error().and_then(|d| d.code()).as_deref(),
                        Some(LOCK_NOT_AVAILABLE | DEADLOCK_DETECTED)
                    ) =>
            {
                tries += 1;
            }
            dropped => {
                let dropped = dropped?;
                tx.commit().await?;
                return Ok(dropped);
            }
        }
    }
}
