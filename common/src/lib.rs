//! hookd's domain types and all of its SQL. The daemon, hooktop and the tests go through these
//! functions, so the database is the only contract between them.

pub mod db;
mod domain;

pub use domain::{
    BadSourceName, EventType, IdentifierError, MAX_IDENTIFIER_LEN, ProviderEventId, Source, State,
    UnknownSource, UnknownState,
};

/// The schema, embedded: `hookd migrate` and `#[sqlx::test(migrator = "common::MIGRATOR")]`
/// apply the same files.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Channel on which inserts and DLQ retries announce work; workers and hooktop listen.
pub const EVENTS_CHANNEL: &str = "hookd_events";
/// Channel on which workers announce finished batches, so hooktop refreshes without polling.
pub const PROGRESS_CHANNEL: &str = "hookd_progress";
