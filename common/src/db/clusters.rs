//! Dead events grouped by why they died: source, event type and the error's fingerprint
//! (`hookd_error_fingerprint` in migration 0009, stored by the database for every dead event,
//! migration 0013, and counted in `dead_tally` as events die and leave). An on-call
//! engineer sees three causes instead of three thousand rows, and acts on one of them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};

use super::dlq::DeadEvent;

/// Dead events of one source and event type that died of the same cause.
#[derive(Debug, Clone, Default, PartialEq, FromRow, Serialize, utoipa::ToSchema)]
pub struct Cluster {
    pub source: String,
    pub event_type: String,
    /// The last error with ids, numbers, timestamps and quoted values normalised away.
    pub fingerprint: String,
    /// How many dead events the cluster holds.
    pub count: i64,
    /// How many of them are superseded: Stripe events whose customer already has newer state
    /// applied, which a retry would not change (see `dlq::DeadEvent::superseded`).
    pub superseded: i64,
    /// When the cluster's first event was dead-lettered.
    pub first_death: DateTime<Utc>,
    /// When the cluster's latest event was dead-lettered.
    pub last_death: DateTime<Utc>,
    /// The event of the cluster that died last: the `webhook_id` to open or retry.
    pub sample_id: i64,
    /// The sample's last error as it was.
    #[schema(required = true)]
    pub sample_error: Option<String>,
}

/// What names a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    pub source: String,
    pub event_type: String,
    pub fingerprint: String,
}

impl Cluster {
    pub fn key(&self) -> ClusterKey {
        ClusterKey {
            source: self.source.clone(),
            event_type: self.event_type.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// The largest clusters first (then the most recent), at most `limit`.
pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Cluster>> {
    // Counted from dead_tally (migration 0013), not from the events: what it costs follows
    // the days and clusters, not the dead events. A cluster's first and last death are one
    // probe of `events_dead_clusters_idx` in the day each falls on, and its superseded events
    // are found from the customers with applied state.
    sqlx::query_as(&format!(
        "WITH days AS (
             SELECT source, event_type, fingerprint, day, sum(n) AS n
             FROM dead_tally GROUP BY 1, 2, 3, 4 HAVING sum(n) > 0
         ), clusters AS (
             SELECT source, event_type, fingerprint, sum(n)::bigint AS count,
                    min(day)::timestamp AT TIME ZONE 'UTC' AS first_day,
                    max(day)::timestamp AT TIME ZONE 'UTC' AS last_day
             FROM days GROUP BY 1, 2, 3
             ORDER BY count DESC, last_day DESC
             LIMIT $1
         ), superseded AS (
             SELECT e.source, e.event_type, e.error_fingerprint AS fingerprint, count(*) AS n
             FROM {superseded}
             GROUP BY 1, 2, 3
         )
         SELECT c.source, c.event_type, c.fingerprint, c.count,
                coalesce(s.n, 0) AS superseded,
                first.dead_at AS first_death, last.dead_at AS last_death,
                last.id AS sample_id, last.last_error AS sample_error
         FROM clusters c
         LEFT JOIN superseded s USING (source, event_type, fingerprint)
         CROSS JOIN LATERAL (
             SELECT dead_at FROM events
             WHERE state = 'dead' AND source = c.source AND event_type = c.event_type
               AND error_fingerprint = c.fingerprint
               AND dead_at >= c.first_day AND dead_at < c.first_day + interval '1 day'
             ORDER BY dead_at, id LIMIT 1
         ) first
         CROSS JOIN LATERAL (
             SELECT id, dead_at, last_error FROM events
             WHERE state = 'dead' AND source = c.source AND event_type = c.event_type
               AND error_fingerprint = c.fingerprint
               AND dead_at >= c.last_day AND dead_at < c.last_day + interval '1 day'
             ORDER BY dead_at DESC, id DESC LIMIT 1
         ) last
         ORDER BY c.count DESC, last_death DESC",
        superseded = super::dlq::superseded_rows("e"),
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The dead events of one cluster, newest first, at most `limit`.
pub async fn events(pool: &PgPool, key: &ClusterKey, limit: i64) -> sqlx::Result<Vec<DeadEvent>> {
    // In `events_dead_clusters_idx`'s order, so a LIMIT stops early however large the cluster.
    sqlx::query_as(&format!(
        "SELECT e.id, e.source, e.event_id, e.event_type, e.attempts, e.last_error,
                e.received_at, e.dead_at, {} AS superseded
         FROM (SELECT * FROM events
               WHERE state = 'dead' AND source = $1 AND event_type = $2
                 AND error_fingerprint = $3
               ORDER BY dead_at DESC, id DESC
               LIMIT $4) e {}
         ORDER BY e.dead_at DESC, e.id DESC",
        super::dlq::superseded_expr("e"),
        super::dlq::superseded_join("e"),
    ))
    .bind(&key.source)
    .bind(&key.event_type)
    .bind(&key.fingerprint)
    .bind(limit.clamp(0, 1_000))
    .fetch_all(pool)
    .await
}

/// The fingerprint of `error`, as stored for a dead event.
pub async fn fingerprint(pool: &PgPool, error: &str) -> sqlx::Result<String> {
    sqlx::query_scalar("SELECT hookd_error_fingerprint($1)")
        .bind(error)
        .fetch_one(pool)
        .await
}

/// The cluster dead event `id` belongs to (`None` when it is not dead): how the command line
/// names a cluster, by the sample `hookd dlq clusters` prints.
pub async fn key_of(pool: &PgPool, id: i64) -> sqlx::Result<Option<ClusterKey>> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT source, event_type, error_fingerprint
         FROM events WHERE id = $1 AND state = 'dead'",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(source, event_type, fingerprint)| ClusterKey {
        source,
        event_type,
        fingerprint,
    }))
}
