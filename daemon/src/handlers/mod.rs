//! Built-in handlers: what an event does to the business tables. Each runs on the worker's
//! transaction, so its effect commits together with the event's `succeeded` mark, or not at all.
//!
//! A claimed event's body is read once into the fields its handler needs ([`Event::read`]).
//! A handler then turns them into an [`Effect`] ([`plan`], no database). A batch's effects are
//! written together, one statement per kind ([`apply_batch`]); a single event's alone
//! ([`apply`]), which is how the worker runs a batch again event by event when one of the
//! shared statements failed.

mod custom;
mod fields;
pub mod forward;
mod stripe;
mod telnyx;

use std::ops::Deref;

use common::Source;
use common::db::batch::{self, Audit, StripeEffect};
use common::db::business::{Applied, CallEvent, MessageEvent, Statements};
use common::db::events::ClaimedEvent;
use sqlx::PgConnection;

/// A claimed event with what its handler reads from the body.
#[derive(Debug)]
pub struct Event {
    claimed: ClaimedEvent,
    payload: Payload,
}

#[derive(Debug)]
enum Payload {
    Stripe(Box<stripe::Payload>),
    Telnyx(Box<telnyx::Payload>),
    Custom(custom::Payload),
    /// A source without built-in handlers: nothing to read.
    Unread,
}

impl Event {
    /// Reads the fields its source's handler needs. Ingest stored only bodies that parse; a
    /// body that does not (a row written by hand) reads as one without any of them, which its
    /// handler refuses as it would any payload missing its fields, rather than failing the
    /// claim of the whole batch.
    pub fn read(claimed: ClaimedEvent) -> Self {
        let body = &claimed.body;
        let payload = match claimed.source() {
            Source::Stripe => Payload::Stripe(Box::new(fields::read(body))),
            Source::Telnyx => Payload::Telnyx(Box::new(fields::read(body))),
            Source::Custom => Payload::Custom(fields::read(body)),
            _ => Payload::Unread,
        };
        Event { claimed, payload }
    }
}

impl Deref for Event {
    type Target = ClaimedEvent;

    fn deref(&self) -> &ClaimedEvent {
        &self.claimed
    }
}

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

/// What an event does to the business tables, read from its payload.
#[derive(Debug, Clone)]
pub enum Effect<'e> {
    Stripe(StripeEffect<'e>),
    Call(CallEvent<'e>),
    Message(MessageEvent<'e>),
    Audit(Audit<'e>),
    Unhandled,
}

/// Reads what `event` does, or why it cannot be applied.
pub fn plan(event: &Event) -> Result<Effect<'_>, HandlerError> {
    match &event.payload {
        Payload::Stripe(payload) => stripe::plan(event, payload),
        Payload::Telnyx(payload) => telnyx::plan(event, payload),
        Payload::Custom(payload) => Ok(custom::plan(event, payload)),
        // A source without built-in handlers: stored, forwarded if a URL is set, else skipped.
        Payload::Unread => Ok(Effect::Unhandled),
    }
}

/// Applies one event on its own.
pub async fn apply(
    conn: &mut PgConnection,
    statements: &Statements,
    event: &Event,
) -> Result<Outcome, HandlerError> {
    use common::db::business;
    match plan(event)? {
        Effect::Stripe(effect) => stripe::apply_one(conn, statements, &effect).await,
        Effect::Call(call) => {
            business::upsert_call(conn, statements, &call).await?;
            Ok(Outcome::Applied)
        }
        Effect::Message(message) => {
            business::upsert_message(conn, statements, &message).await?;
            Ok(Outcome::Applied)
        }
        Effect::Audit(audit) => {
            custom::apply_one(conn, statements, &audit).await?;
            Ok(Outcome::Applied)
        }
        Effect::Unhandled => Ok(Outcome::Unhandled),
    }
}

/// Applies a batch's events with one statement per kind of effect (Telnyx calls, messages,
/// audit entries, then Stripe, which locks business rows and so goes last, just before the
/// commit), as if each had been applied on its own in slice order. An event that cannot be
/// applied fails alone and writes nothing; an `Err` is a statement that failed, after which
/// the transaction is unusable and the caller runs the events one by one.
pub async fn apply_batch(
    conn: &mut PgConnection,
    statements: &Statements,
    events: &[&Event],
) -> sqlx::Result<Vec<Result<Outcome, HandlerError>>> {
    let mut results: Vec<Option<Result<Outcome, HandlerError>>> =
        std::iter::repeat_with(|| None).take(events.len()).collect();
    let mut stripe = Vec::new();
    let mut calls = Vec::new();
    let mut messages = Vec::new();
    let mut audits = Vec::new();
    // Where each effect's event is in `events`.
    let (mut stripe_at, mut applied_at) = (Vec::new(), Vec::new());
    for (i, event) in events.iter().enumerate() {
        match plan(event) {
            Err(e) => results[i] = Some(Err(e)),
            Ok(Effect::Unhandled) => results[i] = Some(Ok(Outcome::Unhandled)),
            Ok(Effect::Stripe(effect)) => {
                stripe.push(effect);
                stripe_at.push(i);
            }
            Ok(Effect::Call(call)) => {
                calls.push(call);
                applied_at.push(i);
            }
            Ok(Effect::Message(message)) => {
                messages.push(message);
                applied_at.push(i);
            }
            Ok(Effect::Audit(audit)) => {
                audits.push(audit);
                applied_at.push(i);
            }
        }
    }
    batch::upsert_calls(conn, statements, &calls).await?;
    batch::upsert_messages(conn, statements, &messages).await?;
    batch::insert_audits(conn, statements, &audits).await?;
    for i in applied_at {
        results[i] = Some(Ok(Outcome::Applied));
    }
    let applied = batch::apply_stripe(conn, statements, &stripe).await?;
    for ((i, applied), effect) in stripe_at.into_iter().zip(applied).zip(&stripe) {
        results[i] = Some(match applied {
            Applied::NoBusiness => Err(stripe::no_business(effect)),
            Applied::Updated | Applied::Stale => Ok(Outcome::Applied),
        });
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every event was planned"))
        .collect())
}

/// Where the event goes in its batch: by the key of the row its handler will lock (a Telnyx
/// call or message, a Stripe customer), Stripe last. Two batches that touch the same rows thus
/// lock them in the same order and cannot deadlock, and the business rows, which every
/// worker's Stripe events contend for, are locked last and held the shortest time before the
/// commit. Order within a batch changes no outcome: Stripe state is ordered by `created` and
/// Telnyx rows converge in any order.
pub fn batch_order(event: &Event) -> (u8, Option<&str>) {
    match &event.payload {
        Payload::Telnyx(payload) => (1, payload.row_key()),
        Payload::Stripe(payload) => (2, payload.row_key()),
        _ => (0, None),
    }
}

/// A required field: absent, it is a permanent failure that names the field, so the
/// dead-letter entry says exactly what the sender left out.
fn required<T>(value: Option<T>, pointer: &str) -> Result<T, HandlerError> {
    value.ok_or_else(|| HandlerError::Permanent(format!("payload has no string at {pointer}")))
}

fn unix_time(secs: Option<i64>) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(secs?, 0)
}

fn rfc3339(text: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}
