//! Dead events grouped by why they died: source, event type and the error's fingerprint
//! (`hookd_error_fingerprint` in migration 0009, stored when the event dies). An on-call
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
    /// The most recently received event of the cluster: the `webhook_id` to open or retry.
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
    // Events stored dead by other means than dying under hookd (restored archives, older
    // rows) have no stored fingerprint; theirs is computed here.
    // Only rows of a supersedable Stripe type read their payload for `superseded`.
    sqlx::query_as(&format!(
        "WITH clusters AS (
             SELECT e.source, e.event_type,
                    coalesce(e.error_fingerprint, hookd_error_fingerprint(e.last_error))
                        AS fingerprint,
                    count(*) AS count, count(*) FILTER (WHERE {}) AS superseded,
                    min(e.dead_at) AS first_death, max(e.dead_at) AS last_death,
                    max(e.id) AS sample_id
             FROM events e {}
             WHERE e.state = 'dead'
             GROUP BY 1, 2, 3
             ORDER BY count DESC, last_death DESC
             LIMIT $1
         )
         SELECT c.*, e.last_error AS sample_error
         FROM clusters c JOIN events e ON e.id = c.sample_id AND e.state = 'dead'
         ORDER BY c.count DESC, c.last_death DESC",
        super::dlq::superseded_expr("e"),
        super::dlq::superseded_join("e"),
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The dead events of one cluster, newest first, at most `limit`.
pub async fn events(pool: &PgPool, key: &ClusterKey, limit: i64) -> sqlx::Result<Vec<DeadEvent>> {
    // The same cluster as `list` forms, but in two halves so each reads
    // `events_dead_clusters_idx` alone: the stored fingerprints in the index's order (a LIMIT
    // stops early however large the cluster), and the few rows without one, which are the
    // only ones the fingerprint is computed for. A `coalesce` would compute it for every dead
    // event of the type.
    sqlx::query_as(&format!(
        "WITH stored AS (
             SELECT id, source, event_id, event_type, attempts, last_error, received_at, dead_at,
                    payload
             FROM events
             WHERE state = 'dead' AND source = $1 AND event_type = $2
               AND error_fingerprint = $3
             ORDER BY dead_at DESC, id DESC
             LIMIT $4
         ), computed AS (
             SELECT id, source, event_id, event_type, attempts, last_error, received_at, dead_at,
                    payload
             FROM events
             WHERE state = 'dead' AND source = $1 AND event_type = $2
               AND error_fingerprint IS NULL AND hookd_error_fingerprint(last_error) = $3
             ORDER BY dead_at DESC, id DESC
             LIMIT $4
         )
         SELECT e.id, e.source, e.event_id, e.event_type, e.attempts, e.last_error,
                e.received_at, e.dead_at, {} AS superseded
         FROM (SELECT * FROM stored UNION ALL SELECT * FROM computed
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
        "SELECT source, event_type,
                coalesce(error_fingerprint, hookd_error_fingerprint(last_error))
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
