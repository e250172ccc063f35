//! The dead-letter queue. Dead is a state of `events`, so recovery is an UPDATE that keeps the
//! attempt history, and hookd, hooktop and the admin API all recover through these functions.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Default, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
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
    /// A Stripe event whose customer already has newer state applied (by the payload's
    /// `created`): retrying it would change nothing, so it can be purged with confidence.
    pub superseded: bool,
}

/// The Stripe event types whose effect the handler skips when the customer has newer state
/// (`stripe_state`, migration 0006): the subscription's lifecycle and failed payments. A paid
/// invoice only moves `last_payment_date` forward, so a late one still counts.
const SUPERSEDABLE: &str = "'customer.subscription.created', 'customer.subscription.updated',
     'customer.subscription.deleted', 'invoice.payment_failed'";

/// `LEFT JOIN` of the customer's applied Stripe state onto events `e`, as `ss`: only rows of a
/// supersedable type look into their payload, and the lookup is `stripe_state`'s primary key
/// (or a hash of that small table when many rows are read).
pub(crate) fn superseded_join(e: &str) -> String {
    format!(
        "LEFT JOIN stripe_state ss ON ss.customer_id = CASE
             WHEN {e}.source = 'stripe' AND {e}.event_type IN ({SUPERSEDABLE})
                  AND jsonb_typeof({e}.payload -> 'created') = 'number'
             THEN {e}.payload #>> '{{data,object,customer}}' END"
    )
}

/// `FROM` the superseded dead events as `e`, each joined to its customer's applied state
/// (`stripe_state` as `ss`): the same rows [`superseded_expr`] marks, found from the few
/// customers with state through `events_dead_customer_idx` (migration 0013), so counting them
/// costs what they are, not what the dead-letter queue holds.
pub(crate) fn superseded_rows(e: &str) -> String {
    format!(
        "stripe_state ss
         JOIN events {e} ON {e}.state = 'dead' AND {e}.source = 'stripe'
              AND {e}.event_type IN ({SUPERSEDABLE})
              AND jsonb_typeof({e}.payload -> 'created') = 'number'
              AND ({e}.payload #>> '{{data,object,customer}}') = ss.customer_id
              AND ({e}.payload -> 'created')::numeric < extract(epoch FROM ss.state_at)"
    )
}

/// Whether the row of events `e` joined by [`superseded_join`] is superseded. Computed when
/// read, not stored: state applied later flips it. Equal `created` is not superseded, as the
/// handler applies an event whose `created` equals the newest state's.
pub(crate) fn superseded_expr(e: &str) -> String {
    format!(
        "coalesce(extract(epoch FROM ss.state_at)
                      > CASE WHEN ss.customer_id IS NOT NULL
                             THEN ({e}.payload -> 'created')::numeric END,
                  false)"
    )
}

/// Whether dead event `id` is superseded ([`DeadEvent::superseded`]); `None` when it is not
/// dead. For a detail view of an event found by other means.
pub async fn superseded(pool: &PgPool, id: i64) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar(&format!(
        "SELECT {} FROM events e {} WHERE e.id = $1 AND e.state = 'dead'",
        superseded_expr("e"),
        superseded_join("e"),
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
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
    // The page is chosen first, so only its rows are looked up for `superseded`.
    sqlx::query_as(&format!(
        "WITH page AS (
             SELECT id, source, event_id, event_type, attempts, last_error, received_at,
                    dead_at, payload
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
             LIMIT $5
         )
         SELECT e.id, e.source, e.event_id, e.event_type, e.attempts, e.last_error,
                e.received_at, e.dead_at, {} AS superseded
         FROM page e {}
         ORDER BY e.dead_at DESC, e.id DESC",
        superseded_expr("e"),
        superseded_join("e"),
    ))
    .bind(filter.source.map(Source::as_str))
    .bind(filter.event_type.as_deref())
    .bind(pattern)
    .bind(filter.before_id)
    .bind(filter.limit.clamp(0, 1_000))
    .fetch_all(pool)
    .await
}

pub async fn count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(sum(n), 0)::bigint FROM dead_tally")
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

/// Which dead events a purge is for: those that died longer ago than an age, those that are
/// superseded ([`DeadEvent::superseded`]), or those that are both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurgeFilter {
    /// Only events that died longer ago than this many seconds; none: any age.
    pub older_than_secs: Option<i64>,
    /// Only superseded events.
    #[serde(default)]
    pub superseded: bool,
}

impl PurgeFilter {
    pub fn older_than(age: chrono::Duration) -> PurgeFilter {
        PurgeFilter {
            older_than_secs: Some(age.num_seconds()),
            superseded: false,
        }
    }

    /// How a confirmation or a receipt names the set.
    pub fn describe(&self) -> String {
        let age = self.older_than_secs.map(|s| {
            format!(
                "that died more than {} ago",
                humanize_secs(s.unsigned_abs())
            )
        });
        match (self.superseded, age) {
            (false, Some(age)) => format!("dead events {age}"),
            (true, Some(age)) => format!("superseded dead events {age}"),
            (true, None) => "superseded dead events".to_owned(),
            (false, None) => "all dead events".to_owned(),
        }
    }
}

/// `604800` as `7d`, `5400` as `1h 30m`: the ages operators write.
fn humanize_secs(secs: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut left = secs;
    let mut parts = Vec::new();
    for (size, unit) in units {
        if left >= size {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// What a purge preview saw: its filter, the cut the age gave at that moment, and the
/// snapshot it counted in. Like [`super::selection::Token`] it travels as an opaque string
/// (`hookd dlq purge --token`, the admin API), and the purge then deletes only events that
/// were dead in that snapshot: one that died after the preview is kept, and one retried
/// meanwhile is no longer dead, so it is skipped and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeToken {
    pub filter: PurgeFilter,
    /// Events that died before this are old enough; fixed at the preview, so a later purge
    /// does not reach further than what was counted.
    pub cut: Option<DateTime<Utc>>,
    /// `pg_current_snapshot()` of the preview, as text; none for a purge that takes whatever
    /// matches when it runs.
    snapshot: Option<String>,
    /// How many events the preview counted.
    pub count: i64,
}

impl PurgeToken {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(self).expect("a token serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str) -> Result<PurgeToken, BadPurgeToken> {
        use base64::Engine;
        let bad = BadPurgeToken;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))
    }

    /// A purge of whatever `filter` matches when it runs, for callers that did not preview:
    /// the cut is taken then, and no snapshot bounds it.
    pub fn unbounded(filter: PurgeFilter) -> PurgeToken {
        PurgeToken {
            filter,
            cut: None,
            snapshot: None,
            count: 0,
        }
    }

    pub(crate) fn snapshot(&self) -> Option<&str> {
        self.snapshot.as_deref()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a purge token (take one with `hookd dlq purge --dry-run` or the purge preview): {0}")]
pub struct BadPurgeToken(String);

/// Dead events of one source and type in a purge preview, and how many of them are
/// superseded.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct PurgeTypeCount {
    pub source: String,
    pub event_type: String,
    pub count: i64,
    pub superseded: i64,
}

/// What a purge would delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgePreview {
    pub token: PurgeToken,
    /// The largest first.
    pub by_type: Vec<PurgeTypeCount>,
    /// How many of them are superseded (all of them for a superseded-only purge).
    pub superseded: i64,
}

impl PurgePreview {
    pub fn count(&self) -> i64 {
        self.token.count
    }
}

/// The purge set in SQL over events `e` joined by [`superseded_join`]: $1 the cut (none: any
/// age), $2 superseded only, $3 the preview's snapshot (none: unbounded).
pub(crate) fn purge_predicate() -> String {
    format!(
        "e.state = 'dead'
         AND ($1::timestamptz IS NULL OR e.dead_at < $1)
         AND (NOT $2 OR {})
         AND ($3::text IS NULL OR e.dead_xid IS NULL
              OR pg_visible_in_snapshot(e.dead_xid, $3::pg_snapshot))",
        superseded_expr("e")
    )
}

/// Folds the rows `dead_tally` (migration 0013) gathers as the dead-letter queue changes, so
/// what is counted from it stays cheap. Bulk changes run it when they are done, and hookd
/// every few seconds; a failure leaves the counts exact, only dearer to read.
pub async fn compact_tally(pool: &PgPool) -> sqlx::Result<i64> {
    let folded: i64 = sqlx::query_scalar("SELECT hookd_compact_dead_tally()")
        .fetch_one(pool)
        .await?;
    if folded > 10_000 {
        // Readers sum the table through its index alone, which needs its pages all-visible:
        // after a bulk change, that is not left to autovacuum.
        sqlx::raw_sql("VACUUM dead_tally").execute(pool).await?;
    }
    Ok(folded)
}

/// Counts what a purge of `filter` would delete now, by type and superseded, and remembers the
/// cut and the snapshot the count was taken in. `hookd dlq purge --dry-run`, the admin API's
/// purge preview and hooktop's confirmation all show this.
pub async fn purge_preview(pool: &PgPool, filter: &PurgeFilter) -> sqlx::Result<PurgePreview> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    // The cut, and the UTC day it falls in: the days before it are counted whole.
    type Cut = (
        String,
        Option<DateTime<Utc>>,
        Option<NaiveDate>,
        Option<DateTime<Utc>>,
    );
    let (snapshot, cut, cut_day, cut_day_start): Cut = sqlx::query_as(
        "SELECT pg_current_snapshot()::text, cut, (cut AT TIME ZONE 'UTC')::date,
                (cut AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC'
         FROM (SELECT now() - make_interval(secs => $1::float8) AS cut) c",
    )
    .bind(filter.older_than_secs.map(|s| s as f64))
    .fetch_one(&mut *tx)
    .await?;
    // The days before the cut's from dead_tally (migration 0013), the rest of the cut's day
    // from its events, the superseded ones from the customers with state: nothing here reads
    // every dead event. With `superseded`, the superseded ones are all there is.
    let by_type: Vec<PurgeTypeCount> = sqlx::query_as(&format!(
        "WITH superseded AS (
             SELECT e.source, e.event_type, count(*) AS n
             FROM {superseded}
             WHERE $1::timestamptz IS NULL OR e.dead_at < $1
             GROUP BY 1, 2
         ), counted AS (
             SELECT source, event_type, n FROM dead_tally
             WHERE NOT $2 AND ($3::date IS NULL OR day < $3)
             UNION ALL
             SELECT source, event_type, count(*) FROM events
             WHERE NOT $2 AND state = 'dead' AND dead_at >= $4 AND dead_at < $1
             GROUP BY 1, 2
             UNION ALL
             SELECT source, event_type, n FROM superseded WHERE $2
         )
         SELECT c.source, c.event_type, sum(c.n)::bigint AS count,
                coalesce(max(s.n), 0) AS superseded
         FROM counted c
         LEFT JOIN superseded s ON s.source = c.source AND s.event_type = c.event_type
         GROUP BY 1, 2 HAVING sum(c.n) > 0
         ORDER BY 3 DESC, 1, 2",
        superseded = superseded_rows("e"),
    ))
    .bind(cut)
    .bind(filter.superseded)
    .bind(cut_day)
    .bind(cut_day_start)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(PurgePreview {
        token: PurgeToken {
            filter: filter.clone(),
            cut,
            snapshot: Some(snapshot),
            count: by_type.iter().map(|t| t.count).sum(),
        },
        superseded: by_type.iter().map(|t| t.superseded).sum(),
        by_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_token_survives_the_round_trip() {
        let token = PurgeToken {
            filter: PurgeFilter {
                older_than_secs: Some(604_800),
                superseded: true,
            },
            cut: Some(Utc::now()),
            snapshot: Some("100:104:101".into()),
            count: 7,
        };
        assert_eq!(PurgeToken::decode(&token.encode()).unwrap(), token);
        assert!(PurgeToken::decode("garbage").is_err());
    }

    #[test]
    fn filters_are_described_in_operators_words() {
        assert_eq!(
            PurgeFilter::older_than(chrono::Duration::days(7)).describe(),
            "dead events that died more than 7d ago"
        );
        let superseded = PurgeFilter {
            older_than_secs: Some(5_400),
            superseded: true,
        };
        assert_eq!(
            superseded.describe(),
            "superseded dead events that died more than 1h 30m ago"
        );
    }
}
