//! What flows through hooktop: actions into [`crate::app::App::update`], and the effects it
//! asks the outside world to carry out.

use chrono::{DateTime, Utc};
use common::db::clusters::{Cluster, ClusterKey};
use crossterm::event::KeyEvent;

use common::db::selection::{Progress, Selection};

pub use crate::model::Bulk;
use crate::model::{Choice, Detail, Notification, Outcome, Snapshot};

/// Everything that can change the dashboard's state.
#[derive(Debug, Clone)]
pub enum Action {
    Key(KeyEvent),
    Resize,
    /// The clock moved on: ages, status timeouts and notification coalescing depend on it.
    Tick(DateTime<Utc>),
    /// A refresh succeeded, so the database is reachable.
    Snapshot(Box<Snapshot>),
    /// The dead events grouped by cause, read apart from the snapshot (it is the heaviest
    /// read of the dashboard).
    Clusters(Vec<Cluster>),
    /// A refresh failed; `since` is when the outage started.
    DbDown {
        since: DateTime<Utc>,
        error: String,
    },
    /// The answer to [`Command::Preview`], for a confirmation that states it.
    Previewed {
        op: Bulk,
        result: Result<Vec<Choice>, String>,
    },
    /// Where the events a canary retried are now, read with each refresh while it is watched.
    Canary(Vec<Progress>),
    Retried {
        id: i64,
        result: Result<(), String>,
    },
    Bulk {
        op: Bulk,
        result: Result<Outcome, String>,
    },
    Detail {
        id: i64,
        result: Result<Option<Box<Detail>>, String>,
    },
    /// The events of any state that [`Command::Find`]'s text names, by id or provider id.
    Found {
        key: String,
        result: Result<Vec<i64>, String>,
    },
    NotifyFailed(String),
    /// SIGTERM, SIGINT or SIGHUP.
    Quit,
}

/// Work for the data task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Refresh,
    /// The DLQ list is filtered in the database; later refreshes use this text.
    SetFilter(String),
    /// The DLQ list shows this cluster's events instead of the filter's, until `None`.
    SetCluster(Option<ClusterKey>),
    Retry(i64),
    /// Count what `op` would be for, each of `selections` in a snapshot of its own (a
    /// purge counts by age and ignores them).
    Preview {
        op: Bulk,
        selections: Vec<Selection>,
    },
    /// Carry `op` out on what `choice`'s preview counted.
    Run {
        op: Bulk,
        choice: Choice,
    },
    /// Read where these events are with each refresh (a canary's); empty stops.
    Watch(Vec<i64>),
    LoadDetail(i64),
    /// Look the filter's text up as an event id, in any state (not only dead events).
    Find(String),
}

/// What [`crate::app::App::update`] asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Command(Command),
    Notify(Notification),
    Quit,
}
