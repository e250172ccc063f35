//! Dead events grouped by why they died: source, event type and the error's fingerprint
//! (`hookd_error_fingerprint` in migration 0009, stored when the event dies). An on-call
//! engineer sees three causes instead of three thousand rows, and acts on one of them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};

#[derive(Debug, Clone, PartialEq, FromRow, Serialize)]
pub struct Cluster {
    pub source: String,
    pub event_type: String,
    /// The last error with ids, numbers, timestamps and quoted values normalised away.
    pub fingerprint: String,
    pub count: i64,
    pub first_death: DateTime<Utc>,
    pub last_death: DateTime<Utc>,
    /// The most recently received event of the cluster, and its error as it was.
    pub sample_id: i64,
    pub sample_error: Option<String>,
}

/// The largest clusters first (then the most recent), at most `limit`.
pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Cluster>> {
    // Events stored dead by other means than dying under hookd (restored archives, older
    // rows) have no stored fingerprint; theirs is computed here.
    sqlx::query_as(
        "WITH clusters AS (
             SELECT source, event_type,
                    coalesce(error_fingerprint, hookd_error_fingerprint(last_error)) AS fingerprint,
                    count(*) AS count, min(dead_at) AS first_death, max(dead_at) AS last_death,
                    max(id) AS sample_id
             FROM events
             WHERE state = 'dead'
             GROUP BY 1, 2, 3
             ORDER BY count DESC, last_death DESC
             LIMIT $1
         )
         SELECT c.*, e.last_error AS sample_error
         FROM clusters c JOIN events e ON e.id = c.sample_id AND e.state = 'dead'
         ORDER BY c.count DESC, c.last_death DESC",
    )
    .bind(limit)
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
