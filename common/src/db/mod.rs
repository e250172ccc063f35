//! Storage: every statement hookd and hooktop run lives under this module.

pub mod business;
pub mod dlq;
pub mod events;
pub mod stats;

pub use sqlx::PgPool;
