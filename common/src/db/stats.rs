//! Read models for dashboards: hooktop and the admin API's analytics and health. Everything
//! here reads either the per-minute counters or the small partial indexes (queue, DLQ), never
//! the history of events.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::Source;
use crate::db::events::AttemptOutcome;

/// One processed attempt, to be counted.
#[derive(Debug, Clone)]
pub struct Counted<'a> {
    pub source: Source,
    pub event_type: &'a str,
    pub outcome: AttemptOutcome,
}

/// Adds a batch's outcomes to the per-minute counters, in the batch's transaction.
pub async fn count_outcomes(conn: &mut PgConnection, outcomes: &[Counted<'_>]) -> sqlx::Result<()> {
    let sources: Vec<&str> = outcomes.iter().map(|o| o.source.as_str()).collect();
    let types: Vec<&str> = outcomes.iter().map(|o| o.event_type).collect();
    let kinds: Vec<&str> = outcomes.iter().map(|o| o.outcome.as_str()).collect();
    count(conn, &sources, &types, &kinds, &vec![None; outcomes.len()]).await
}

/// Adds outcomes to the counters of the minutes they happened in, for loads of history
/// (see [`super::bulk`]).
pub async fn count_outcomes_at(
    conn: &mut PgConnection,
    outcomes: &[(Counted<'_>, DateTime<Utc>)],
) -> sqlx::Result<()> {
    let sources: Vec<&str> = outcomes.iter().map(|(o, _)| o.source.as_str()).collect();
    let types: Vec<&str> = outcomes.iter().map(|(o, _)| o.event_type).collect();
    let kinds: Vec<&str> = outcomes.iter().map(|(o, _)| o.outcome.as_str()).collect();
    let at: Vec<Option<DateTime<Utc>>> = outcomes.iter().map(|(_, at)| Some(*at)).collect();
    count(conn, &sources, &types, &kinds, &at).await
}

/// One upsert per minute, source and type; an outcome without a time counts now.
async fn count(
    conn: &mut PgConnection,
    sources: &[&str],
    types: &[&str],
    kinds: &[&str],
    at: &[Option<DateTime<Utc>>],
) -> sqlx::Result<()> {
    if sources.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO stats_minute (bucket, source, event_type, shard, succeeded, skipped, failed, dead)
         SELECT date_trunc('minute', COALESCE(at, now())), source, event_type, hookd_counter_shard(),
                count(*) FILTER (WHERE outcome = 'succeeded'),
                count(*) FILTER (WHERE outcome = 'skipped'),
                count(*) FILTER (WHERE outcome = 'failed'),
                count(*) FILTER (WHERE outcome = 'dead')
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
              AS o(source, event_type, outcome, at)
         GROUP BY 1, source, event_type
         ORDER BY 1, source, event_type
         ON CONFLICT (bucket, source, event_type, shard) DO UPDATE SET
             succeeded = stats_minute.succeeded + EXCLUDED.succeeded,
             skipped = stats_minute.skipped + EXCLUDED.skipped,
             failed = stats_minute.failed + EXCLUDED.failed,
             dead = stats_minute.dead + EXCLUDED.dead",
    )
    .bind(sources)
    .bind(types)
    .bind(kinds)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Outcome totals over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, FromRow, utoipa::ToSchema)]
pub struct Totals {
    /// Events received.
    pub received: i64,
    /// Events processed successfully.
    pub succeeded: i64,
    /// Events of a type no handler takes.
    pub skipped: i64,
    /// Attempts that failed and left their event to be retried.
    pub failed: i64,
    /// Events that failed their last attempt and were dead-lettered.
    pub dead: i64,
}

impl Totals {
    /// Events that reached a final verdict and succeeded, as a fraction: succeeded over
    /// succeeded plus dead. Skipped events are neither. `None` when nothing finished.
    pub fn event_success_rate(&self) -> Option<f64> {
        ratio(self.succeeded, self.succeeded + self.dead)
    }

    /// Attempts that succeeded over all attempts (a retried event counts each try).
    pub fn attempt_success_rate(&self) -> Option<f64> {
        ratio(self.succeeded, self.succeeded + self.failed + self.dead)
    }
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// What the queue holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, FromRow)]
pub struct Queue {
    /// Waiting for a first attempt.
    pub pending: i64,
    /// Failed at least once, waiting for the next attempt.
    pub retrying: i64,
    /// Leased by a worker now.
    pub processing: i64,
    pub dead: i64,
    /// Seconds since the oldest event still waiting was received.
    pub oldest_pending_secs: Option<f64>,
}

impl Queue {
    pub fn depth(&self) -> i64 {
        self.pending + self.retrying + self.processing
    }
}

pub async fn queue(pool: &PgPool) -> sqlx::Result<Queue> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                count(*) FILTER (WHERE state = 'retrying') AS retrying,
                count(*) FILTER (WHERE state = 'processing') AS processing,
                (SELECT coalesce(sum(n), 0)::bigint FROM dead_tally) AS dead,
                EXTRACT(EPOCH FROM now() - min(received_at))::float8 AS oldest_pending_secs
         FROM events
         WHERE state IN ('pending', 'retrying', 'processing')",
    )
    .fetch_one(pool)
    .await
}

/// Totals over the last `window`.
pub async fn totals(pool: &PgPool, window: chrono::Duration) -> sqlx::Result<Totals> {
    sqlx::query_as(
        "SELECT COALESCE(sum(received), 0)::bigint AS received,
                COALESCE(sum(succeeded), 0)::bigint AS succeeded,
                COALESCE(sum(skipped), 0)::bigint AS skipped,
                COALESCE(sum(failed), 0)::bigint AS failed,
                COALESCE(sum(dead), 0)::bigint AS dead
         FROM stats_minute
         WHERE bucket > now() - make_interval(secs => $1)",
    )
    .bind(window.as_seconds_f64())
    .fetch_one(pool)
    .await
}

/// Events received per minute over the last `minutes`, oldest first, with empty minutes as 0.
pub async fn throughput(pool: &PgPool, minutes: i32) -> sqlx::Result<Vec<(DateTime<Utc>, i64)>> {
    sqlx::query_as(
        "SELECT m.bucket, COALESCE(sum(s.received), 0)::bigint
         FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1),
                              date_trunc('minute', now()), interval '1 minute') AS m(bucket)
         -- The bound on s.bucket lets the primary key find the window; the join alone
         -- would read every counter ever written.
         LEFT JOIN stats_minute s
                ON s.bucket = m.bucket
               AND s.bucket >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
         GROUP BY m.bucket
         ORDER BY m.bucket",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await
}

/// Per source and event type: flow over the window, and how many are retrying or dead now.
#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
pub struct TypeCounts {
    pub source: String,
    pub event_type: String,
    pub received: i64,
    pub succeeded: i64,
    pub skipped: i64,
    pub failed: i64,
    pub dead: i64,
    pub retrying_now: i64,
    pub dead_now: i64,
}

impl TypeCounts {
    pub fn totals(&self) -> Totals {
        Totals {
            received: self.received,
            succeeded: self.succeeded,
            skipped: self.skipped,
            failed: self.failed,
            dead: self.dead,
        }
    }
}

pub async fn by_type(pool: &PgPool, window: chrono::Duration) -> sqlx::Result<Vec<TypeCounts>> {
    sqlx::query_as(
        "WITH flow AS (
             SELECT source, event_type, sum(received)::bigint AS received,
                    sum(succeeded)::bigint AS succeeded, sum(skipped)::bigint AS skipped,
                    sum(failed)::bigint AS failed, sum(dead)::bigint AS dead
             FROM stats_minute
             WHERE bucket > now() - make_interval(secs => $1)
             GROUP BY source, event_type
         ), now_ AS (
             -- The dead ones from dead_tally (migration 0013), not by reading them.
             SELECT source, event_type, sum(retrying)::bigint AS retrying_now,
                    sum(dead)::bigint AS dead_now
             FROM (SELECT source, event_type, count(*) AS retrying, 0 AS dead
                   FROM events WHERE state = 'retrying' GROUP BY 1, 2
                   UNION ALL
                   SELECT source, event_type, 0, sum(n) FROM dead_tally GROUP BY 1, 2) now_
             GROUP BY source, event_type
             HAVING sum(retrying) > 0 OR sum(dead) > 0
         )
         SELECT source, event_type,
                COALESCE(f.received, 0) AS received, COALESCE(f.succeeded, 0) AS succeeded,
                COALESCE(f.skipped, 0) AS skipped, COALESCE(f.failed, 0) AS failed,
                COALESCE(f.dead, 0) AS dead,
                COALESCE(n.retrying_now, 0) AS retrying_now, COALESCE(n.dead_now, 0) AS dead_now
         FROM flow f FULL JOIN now_ n USING (source, event_type)
         ORDER BY source, event_type",
    )
    .bind(window.as_seconds_f64())
    .fetch_all(pool)
    .await
}

/// Folds the per-connection shards of minutes older than `settled` into shard 0, so readers
/// sum about one row per minute and type. Safe with concurrent writers and compactors: a
/// shard row is moved by exactly one of them, and one that appears later is still summed.
pub async fn compact(pool: &PgPool, settled: chrono::Duration) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "WITH moved AS (
             DELETE FROM stats_minute
             WHERE shard <> 0 AND bucket < now() - make_interval(secs => $1)
             RETURNING bucket, source, event_type, received, succeeded, skipped, failed, dead
         )
         INSERT INTO stats_minute AS s
                (bucket, source, event_type, shard, received, succeeded, skipped, failed, dead)
         SELECT bucket, source, event_type, 0, sum(received), sum(succeeded), sum(skipped),
                sum(failed), sum(dead)
         FROM moved
         GROUP BY bucket, source, event_type
         ON CONFLICT (bucket, source, event_type, shard) DO UPDATE SET
             received = s.received + EXCLUDED.received,
             succeeded = s.succeeded + EXCLUDED.succeeded,
             skipped = s.skipped + EXCLUDED.skipped,
             failed = s.failed + EXCLUDED.failed,
             dead = s.dead + EXCLUDED.dead",
    )
    .bind(settled.as_seconds_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Drops counters older than `keep`; dashboards look back a day, analytics a little further.
pub async fn prune(pool: &PgPool, keep: chrono::Duration) -> sqlx::Result<u64> {
    let done =
        sqlx::query("DELETE FROM stats_minute WHERE bucket < now() - make_interval(secs => $1)")
            .bind(keep.as_seconds_f64())
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}
