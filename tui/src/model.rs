//! The data hooktop's parts pass to one another: what the data task reads, what a bulk action
//! is, what a notification says. Everything else imports this and nothing here imports them,
//! so the modules form no cycle.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::db::archive::PurgeReceipt;
use common::db::clusters::ClusterKey;
use common::db::dlq::DeadEvent;
use common::db::dlq::PurgeToken;
use common::db::events::{Attempt, EventDetail};
use common::db::retention;
use common::db::selection::{Token, TypeCount};
use common::db::stats::{Queue, Totals, TypeCounts};

/// Everything the main screen shows, read in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// How long the refresh took.
    pub took: Duration,
    pub queue: Queue,
    pub last_5m: Totals,
    pub last_hour: Totals,
    pub last_day: Totals,
    /// Events received per minute over the last hour, oldest first.
    pub throughput: Vec<(DateTime<Utc>, i64)>,
    /// Flow over the last 24 hours, with what is retrying and dead now.
    pub by_type: Vec<TypeCounts>,
    /// The DLQ as filtered on screen (or one cluster of it), newest first.
    pub dead: Vec<DeadEvent>,
    /// The filter `dead` was read with.
    pub filter: String,
    /// The cluster `dead` was read from, which takes the filter's place.
    pub cluster: Option<ClusterKey>,
    /// The newest dead events regardless of the filter, for notifications.
    pub recent_dead: Vec<DeadEvent>,
    /// What the database keeps, and for how long.
    pub retained: retention::Status,
}

/// One event opened from the DLQ.
#[derive(Debug, Clone)]
pub struct Detail {
    pub event: EventDetail,
    pub attempts: Vec<Attempt>,
    /// Pretty-printed once here rather than on every frame.
    pub payload: Vec<String>,
    /// Dead, and its object already has newer state applied: a retry would change nothing.
    pub superseded: bool,
}

/// The actions that touch many events, and so preview first and ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// Retry exactly what a preview counted: all dead events, a filter's or a cluster's.
    Retry,
    /// Retry a few of a preview first, and offer the rest only when those succeed.
    Canary,
    Purge,
}

/// One set a bulk action may be for, as its preview counted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The set as the confirmation names it: "all dead events", "dead events matching ...".
    pub what: String,
    pub count: i64,
    /// Largest first.
    pub by_type: Vec<TypeCount>,
    /// Of `count`, those whose object already has newer state applied (a purge counts them).
    pub superseded: Option<i64>,
    /// What the action is bound to: the events dead in the preview's snapshot, and no others.
    pub bound: Bound,
}

/// A preview's token, which the action takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Retry(Token),
    Purge(PurgeToken),
}

/// What a bulk action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Retried(common::db::selection::Retried),
    /// The events a canary retried, newest first.
    CanaryStarted(Vec<i64>),
    Purged(PurgeReceipt),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub summary: String,
    pub body: String,
    pub critical: bool,
}
