//! Storage: every statement hookd and hooktop run lives under this module.

pub mod archive;
pub mod batch;
pub mod bulk;
pub mod business;
pub mod clusters;
pub mod dlq;
pub mod events;
pub mod liveness;
pub mod retention;
pub mod schema;
pub mod selection;
pub mod stats;

pub use sqlx::PgPool;

/// Whether the database answers at all: for health checks and the watchdog.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}

/// Whether the pool could hand out another connection without waiting: only then may a task
/// keep the one it holds for its next statement without starving the others.
pub fn has_spare_connection(pool: &PgPool) -> bool {
    pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections()
}

/// True when a statement failed because a row it wanted to lock had just moved to another
/// partition (an event dying, or coming back from the dead-letter queue; see migration 0005).
/// PostgreSQL reports that as a serialization failure instead of skipping or following the row;
/// the next try sees where the row went.
pub fn is_row_moved(e: &sqlx::Error) -> bool {
    const SERIALIZATION_FAILURE: &str = "40001";
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some(SERIALIZATION_FAILURE)
}

/// Runs `op` again while it fails with [`is_row_moved`].
pub(crate) async fn retry_moved<T, F, Fut>(mut op: F) -> sqlx::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(e) if tries < 5 && is_row_moved(&e) => tries += 1,
            done => return done,
        }
    }
}
