//! Storage: every statement hookd and hooktop run lives under this module.

pub mod business;
pub mod dlq;
pub mod events;
pub mod stats;

pub use sqlx::PgPool;

/// Whether the database answers at all: for health checks and the watchdog.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}
