//! Built-in handlers: what an event does to the business tables. Each runs on the worker's
//! transaction, so its effect commits together with the event's `succeeded` mark, or not at all.

mod custom;
pub mod forward;
mod stripe;
mod telnyx;

use common::Source;
use common::db::business::Statements;
use common::db::events::ClaimedEvent;
use serde_json::Value;
use sqlx::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The event changed (or was recorded in) the business tables.
    Applied,
    /// No built-in handler knows this event type.
    Unhandled,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (a business not linked yet, a downstream outage): retry with backoff.
    #[error("{0}")]
    Retryable(String),
    /// Will never work (the payload lacks what the handler needs): dead-letter at once.
    #[error("{0}")]
    Permanent(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub async fn apply(
    conn: &mut PgConnection,
    statements: &Statements,
    event: &ClaimedEvent,
) -> Result<Outcome, HandlerError> {
    match event.source() {
        Source::Stripe => stripe::apply(conn, statements, event).await,
        Source::Telnyx => telnyx::apply(conn, statements, event).await,
        Source::Custom => custom::apply(conn, statements, event).await,
        // A source without built-in handlers: stored, forwarded if a URL is set, else skipped.
        _ => Ok(Outcome::Unhandled),
    }
}

/// Where the event goes in its batch: by the key of the row its handler will lock (a Telnyx
/// call or message, a Stripe customer), Stripe last. Two batches that touch the same rows thus
/// lock them in the same order and cannot deadlock, and the business rows, which every
/// worker's Stripe events contend for, are locked last and held the shortest time before the
/// commit. Order within a batch changes no outcome: Stripe state is ordered by `created` and
/// Telnyx rows converge in any order.
pub fn batch_order(event: &ClaimedEvent) -> (u8, Option<&str>) {
    let fields = Fields(&event.payload);
    match event.source() {
        Source::Telnyx => (
            1,
            fields
                .opt_str("/data/payload/call_control_id")
                .or_else(|| fields.opt_str("/data/payload/id")),
        ),
        Source::Stripe => (
            2,
            fields
                .opt_str("/data/object/customer")
                .or_else(|| fields.opt_str("/data/object/subscription")),
        ),
        _ => (0, None),
    }
}

/// Reading payload fields. A required field that is absent is a permanent failure that names
/// the field, so the dead-letter entry says exactly what the sender left out.
struct Fields<'a>(&'a Value);

impl<'a> Fields<'a> {
    fn opt_str(&self, pointer: &str) -> Option<&'a str> {
        self.0.pointer(pointer).and_then(Value::as_str)
    }

    fn str(&self, pointer: &str) -> Result<&'a str, HandlerError> {
        self.opt_str(pointer)
            .ok_or_else(|| HandlerError::Permanent(format!("payload has no string at {pointer}")))
    }

    fn opt_unix_time(&self, pointer: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let secs = self.0.pointer(pointer).and_then(Value::as_i64)?;
        chrono::DateTime::from_timestamp(secs, 0)
    }

    fn unix_time(&self, pointer: &str) -> Result<chrono::DateTime<chrono::Utc>, HandlerError> {
        self.opt_unix_time(pointer).ok_or_else(|| {
            HandlerError::Permanent(format!("payload has no unix timestamp at {pointer}"))
        })
    }

    fn opt_rfc3339(&self, pointer: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let text = self.opt_str(pointer)?;
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}
