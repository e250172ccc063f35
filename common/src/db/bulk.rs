//! Bulk loads of events as hookd would have left them (history, a backlog, a dead-letter queue
//! days old), for the benchmark and tests that need millions of rows in minutes.
//!
//! A load writes the same tables as ingest and the workers, and lets the schema do the rest:
//! keys are claimed as [`super::events::insert_many`] claims them, the received counters are
//! the insert trigger's (it counts by each row's `received_at`), and the outcome counters go
//! through [`super::stats::count_outcomes_at`] at the time of each attempt. Nothing here knows
//! what the triggers do, so a schema change that breaks a load breaks its test.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};

use super::events::{AttemptOutcome, NewEvent};
use super::stats::{self, Counted};

/// Where an event's processing got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Never tried.
    Pending,
    /// The last attempt ended at `at`.
    Succeeded {
        at: DateTime<Utc>,
    },
    Skipped {
        at: DateTime<Utc>,
    },
    /// The last attempt failed at `at`; the next is due at `next`.
    Retrying {
        at: DateTime<Utc>,
        next: DateTime<Utc>,
    },
    /// Died at `at`.
    Dead {
        at: DateTime<Utc>,
    },
}

impl Fate {
    fn state(self) -> &'static str {
        match self {
            Fate::Pending => "pending",
            Fate::Succeeded { .. } => "succeeded",
            Fate::Skipped { .. } => "skipped",
            Fate::Retrying { .. } => "retrying",
            Fate::Dead { .. } => "dead",
        }
    }

    /// When the last attempt ended, if there was one.
    fn ended(self) -> Option<DateTime<Utc>> {
        match self {
            Fate::Pending => None,
            Fate::Succeeded { at } | Fate::Skipped { at } | Fate::Dead { at } => Some(at),
            Fate::Retrying { at, .. } => Some(at),
        }
    }

    /// The outcome of the last attempt; the ones before it failed.
    fn last_outcome(self) -> AttemptOutcome {
        match self {
            Fate::Succeeded { .. } => AttemptOutcome::Succeeded,
            Fate::Skipped { .. } => AttemptOutcome::Skipped,
            Fate::Dead { .. } => AttemptOutcome::Dead,
            Fate::Pending | Fate::Retrying { .. } => AttemptOutcome::Failed,
        }
    }
}

/// One event received at `received_at` and tried `attempts` times (0 when pending), the
/// attempts spread evenly up to the end of the last one.
#[derive(Debug, Clone)]
pub struct PastEvent {
    pub event: NewEvent,
    pub received_at: DateTime<Utc>,
    pub fate: Fate,
    pub attempts: i32,
    pub last_error: Option<String>,
}

impl PastEvent {
    fn next_attempt_at(&self) -> DateTime<Utc> {
        match self.fate {
            Fate::Retrying { next, .. } => next,
            fate => fate.ended().unwrap_or(self.received_at),
        }
    }

    fn dead_at(&self) -> Option<DateTime<Utc>> {
        match self.fate {
            Fate::Dead { at } => Some(at),
            _ => None,
        }
    }

    /// When it was processed, for a succeeded or skipped event: its day in `events_done`.
    fn done_at(&self) -> Option<DateTime<Utc>> {
        match self.fate {
            Fate::Succeeded { at } | Fate::Skipped { at } => Some(at),
            _ => None,
        }
    }

    /// Attempt `k` of `attempts` (1-based): when it started and its outcome.
    fn attempt(&self, k: i32) -> (DateTime<Utc>, AttemptOutcome) {
        let end = self.fate.ended().unwrap_or(self.received_at);
        let step = (end - self.received_at) / self.attempts.max(1);
        let started = end - ATTEMPT_TIME - step * (self.attempts - k);
        let outcome = if k == self.attempts {
            self.fate.last_outcome()
        } else {
            AttemptOutcome::Failed
        };
        (started.max(self.received_at), outcome)
    }
}

/// How long each loaded attempt took.
const ATTEMPT_TIME: chrono::TimeDelta = chrono::TimeDelta::milliseconds(12);

/// Stores `events` in one transaction with their attempts and counters; returns how many were
/// new (an event whose key is already held is left out, as ingest would answer it duplicate).
/// The days they died or were processed on get their partitions first, as a hookd that saw
/// them would have left them. For loads only: the commit is not waited for on disk.
pub async fn load(pool: &PgPool, events: &[PastEvent]) -> sqlx::Result<u64> {
    for (days, create) in [
        (
            days_of(events, PastEvent::dead_at),
            "SELECT hookd_create_dead_day(day) FROM unnest($1::date[]) AS day",
        ),
        (
            days_of(events, PastEvent::done_at),
            "SELECT hookd_create_done_day(day) FROM unnest($1::date[]) AS day",
        ),
    ] {
        if !days.is_empty() {
            sqlx::query(create).bind(&days).execute(pool).await?;
        }
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let ids = insert_events(&mut tx, events).await?;
    let stored: Vec<(&PastEvent, i64)> = events
        .iter()
        .zip(ids)
        .filter_map(|(e, id)| Some((e, id?)))
        .collect();
    insert_attempts(&mut tx, &stored).await?;
    let outcomes: Vec<(Counted<'_>, DateTime<Utc>)> = stored
        .iter()
        .flat_map(|(e, _)| {
            (1..=e.attempts).map(move |k| {
                let (started, outcome) = e.attempt(k);
                let counted = Counted {
                    source: e.event.source,
                    event_type: e.event.event_type.as_str(),
                    outcome,
                };
                (counted, started + ATTEMPT_TIME)
            })
        })
        .collect();
    stats::count_outcomes_at(&mut tx, &outcomes).await?;
    tx.commit().await?;
    super::dlq::compact_tally(pool).await?;
    Ok(stored.len() as u64)
}

/// The UTC days `at` gives for `events`, each once.
fn days_of(events: &[PastEvent], at: fn(&PastEvent) -> Option<DateTime<Utc>>) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = events
        .iter()
        .filter_map(at)
        .map(|at| at.date_naive())
        .collect();
    days.sort_unstable();
    days.dedup();
    days
}

/// The events, through the key claim ingest makes; each one's new id, `None` for a duplicate.
async fn insert_events(
    conn: &mut PgConnection,
    events: &[PastEvent],
) -> sqlx::Result<Vec<Option<i64>>> {
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let sources: Vec<&str> = events.iter().map(|e| e.event.source.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.event.event_id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type.as_str()).collect();
    let bodies = events
        .iter()
        .map(|e| text(&e.event.body))
        .collect::<sqlx::Result<Vec<String>>>()?;
    let received: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
    let states: Vec<&str> = events.iter().map(|e| e.fate.state()).collect();
    let attempts: Vec<i32> = events.iter().map(|e| e.attempts).collect();
    let errors: Vec<Option<&str>> = events.iter().map(|e| e.last_error.as_deref()).collect();
    let due: Vec<DateTime<Utc>> = events.iter().map(PastEvent::next_attempt_at).collect();
    let processed: Vec<Option<DateTime<Utc>>> = events.iter().map(PastEvent::done_at).collect();
    let dead: Vec<Option<DateTime<Utc>>> = events.iter().map(PastEvent::dead_at).collect();
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "WITH batch AS (
             SELECT DISTINCT ON (source, event_id) *
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::text[], $7::int[], $8::text[], $9::timestamptz[],
                         $10::timestamptz[], $11::timestamptz[])
                  WITH ORDINALITY AS b(source, event_id, event_type, body, received_at, state,
                                       attempts, last_error, next_attempt_at, processed_at,
                                       dead_at, n)
             ORDER BY source, event_id, n
         ), claims AS (
             SELECT b.source, b.event_id, b.received_at,
                    (SELECT true FROM event_keys k
                     WHERE k.source = b.source AND k.event_id = b.event_id
                       AND k.gen < (SELECT max(gen) FROM event_key_generations)
                       AND k.claimed_at > now() - (SELECT dedup_window FROM retention_policy)
                     LIMIT 1) AS held
             FROM batch b
         ), fresh AS (
             -- Claimed when the event was received, as ingest would have claimed it.
             INSERT INTO event_keys (source, event_id, id, gen, claimed_at)
             SELECT source, event_id, nextval('events_id_seq'),
                    (SELECT max(gen) FROM event_key_generations), received_at
             FROM claims WHERE held IS NULL
             ORDER BY source, event_id
             ON CONFLICT (source, event_id, gen) DO UPDATE
                 SET id = EXCLUDED.id, claimed_at = EXCLUDED.claimed_at
                 WHERE event_keys.claimed_at <= now() - (SELECT dedup_window FROM retention_policy)
             RETURNING source, event_id, id
         )
         INSERT INTO events (id, source, event_id, event_type, state, attempts, next_attempt_at,
                             last_error, received_at, processed_at, dead_at, body)
         OVERRIDING SYSTEM VALUE
         SELECT f.id, f.source, f.event_id, b.event_type, b.state, b.attempts,
                b.next_attempt_at, b.last_error, b.received_at, b.processed_at, b.dead_at,
                convert_to(b.body, 'UTF8')
         FROM fresh f JOIN batch b USING (source, event_id)
         RETURNING id, source, event_id",
    )
    .bind(&sources)
    .bind(&keys)
    .bind(&types)
    .bind(&bodies)
    .bind(&received)
    .bind(&states)
    .bind(&attempts)
    .bind(&errors)
    .bind(&due)
    .bind(&processed)
    .bind(&dead)
    .fetch_all(&mut *conn)
    .await?;
    let mut created: std::collections::HashMap<(&str, &str), i64> = rows
        .iter()
        .map(|(id, source, key)| ((source.as_str(), key.as_str()), *id))
        .collect();
    Ok(events
        .iter()
        .map(|e| created.remove(&(e.event.source.as_str(), e.event.event_id.as_str())))
        .collect())
}

/// Every attempt of every stored event, in its event's partition (see migrations 0005 and
/// 0012).
async fn insert_attempts(
    conn: &mut PgConnection,
    stored: &[(&PastEvent, i64)],
) -> sqlx::Result<()> {
    let mut ids = Vec::new();
    let mut numbers = Vec::new();
    let mut started = Vec::new();
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    let mut dead = Vec::new();
    let mut done = Vec::new();
    for (event, id) in stored {
        for k in 1..=event.attempts {
            let (at, outcome) = event.attempt(k);
            ids.push(*id);
            numbers.push(k);
            started.push(at);
            outcomes.push(outcome.as_str());
            let failed = !matches!(outcome, AttemptOutcome::Succeeded | AttemptOutcome::Skipped);
            errors.push(event.last_error.as_deref().filter(|_| failed));
            dead.push(event.dead_at());
            done.push(event.done_at());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error,
                                     dead_at, done_at, processed_at)
         SELECT r.event_id, r.attempt, r.started_at, $7, r.outcome, r.error, r.dead_at,
                r.done_at, r.started_at + $7 * interval '1 millisecond'
         FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::timestamptz[], $8::timestamptz[])
              AS r(event_id, attempt, started_at, outcome, error, dead_at, done_at)",
    )
    .bind(&ids)
    .bind(&numbers)
    .bind(&started)
    .bind(&outcomes)
    .bind(&errors)
    .bind(&dead)
    .bind(ATTEMPT_TIME.num_milliseconds() as i32)
    .bind(&done)
    .execute(conn)
    .await?;
    Ok(())
}
