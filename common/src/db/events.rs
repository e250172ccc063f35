//! The queue: ingest inserts, workers claim, complete and fail events.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};

use crate::{EventType, ProviderEventId, Source};

/// An accepted, verified webhook about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: Source,
    pub event_id: ProviderEventId,
    pub event_type: EventType,
    /// The exact bytes that were signed; must be valid JSON text (the caller parsed it).
    pub body: Vec<u8>,
    /// The caller knows that PostgreSQL's jsonb takes the body (hookd's ingest finds out in
    /// the pass that reads the id and type). Otherwise the insert parses it, a quarter of its
    /// time, and refuses what jsonb refuses.
    pub jsonb_checked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New(i64),
    /// The provider redelivered an event we already hold; nothing was written.
    Duplicate,
}

/// Stores one event durably. Returns after the row is committed (autocommit), so the caller may
/// acknowledge the webhook.
pub async fn insert<'e>(db: impl PgExecutor<'e>, event: &NewEvent) -> sqlx::Result<Inserted> {
    Ok(insert_many(db, std::slice::from_ref(event))
        .await?
        .remove(0))
}

/// Stores many events in one statement and one commit, for ingest's micro-batches. The
/// answer for each event is in input order; when an id appears twice in `events`, the first
/// occurrence is the new event and the second a duplicate, as if they had come one by one.
pub async fn insert_many<'e>(
    db: impl PgExecutor<'e>,
    events: &[NewEvent],
) -> sqlx::Result<Vec<Inserted>> {
    let mut sources = Vec::with_capacity(events.len());
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    let mut checked = Vec::with_capacity(events.len());
    for event in events {
        sources.push(event.source.as_str());
        ids.push(event.event_id.as_str());
        types.push(event.event_type.as_str());
        bodies
            .push(std::str::from_utf8(&event.body).map_err(|e| sqlx::Error::Decode(Box::new(e)))?);
        checked.push(event.jsonb_checked);
    }
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "WITH batch AS (
             -- The first of each key; a later copy in the same batch is a duplicate.
             SELECT DISTINCT ON (source, event_id) *
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[])
                  WITH ORDINALITY AS b(source, event_id, event_type, body, checked, n)
             ORDER BY source, event_id, n
         ), claims AS (
             -- A key claimed within the dedup window in an older generation (see migration
             -- 0012). A subquery per row rather than a join, so each probe is an index
             -- descent whatever the planner thinks of the batch's size.
             SELECT b.source, b.event_id,
                    (SELECT true FROM event_keys k
                     WHERE k.source = b.source AND k.event_id = b.event_id
                       AND k.gen < (SELECT max(gen) FROM event_key_generations)
                       AND k.claimed_at > now() - (SELECT dedup_window FROM retention_policy)
                     LIMIT 1) AS held
             FROM batch b
         ), fresh AS (
             -- Claiming the key first makes the unique index of the newest generation decide,
             -- whatever the planner thinks of the table's size, and a concurrent batch holding
             -- one of these keys is waited for. Keys are taken in one order: no deadlocks. A
             -- key there whose window has passed is taken over: the delivery is a new event.
             INSERT INTO event_keys (source, event_id, id, gen, claimed_at)
             SELECT source, event_id, nextval('events_id_seq'),
                    (SELECT max(gen) FROM event_key_generations), now()
             FROM claims WHERE held IS NULL
             ORDER BY source, event_id
             ON CONFLICT (source, event_id, gen) DO UPDATE
                 SET id = EXCLUDED.id, claimed_at = EXCLUDED.claimed_at
                 WHERE event_keys.claimed_at <= now() - (SELECT dedup_window FROM retention_policy)
             RETURNING source, event_id, id
         ), stored AS (
             -- The partition, not `events`: the statement triggers on `events` claim keys
             -- and count for inserts that do neither (a bulk load, an INSERT by hand), and
             -- this statement does both. Without them PostgreSQL also stops copying each
             -- batch, bodies and all, into a transition table: a quarter of its time.
             INSERT INTO events_live (id, source, event_id, event_type, body)
             OVERRIDING SYSTEM VALUE
             SELECT f.id, f.source, f.event_id, b.event_type, convert_to(b.body, 'UTF8')
             FROM fresh f JOIN batch b USING (source, event_id)
             -- Not stored (see migration 0014), but a body jsonb refuses is refused here,
             -- before its sender is answered, not when the event dies and is parsed. One
             -- the caller already vouched for is not parsed again.
             WHERE b.checked OR b.body::jsonb IS NOT NULL
             RETURNING id, source, event_id, event_type, received_at
         ), counted AS (
             -- What the statement trigger would have counted (see migration 0015).
             SELECT hookd_add_received(array_agg(received_at), array_agg(source),
                                       array_agg(event_type))
             FROM stored
         )
         SELECT id, source, event_id FROM stored, counted",
    )
    .bind(&sources)
    .bind(&ids)
    .bind(&types)
    .bind(&bodies)
    .bind(&checked)
    .fetch_all(db)
    .await?;
    let mut created: std::collections::HashMap<(&str, &str), i64> = rows
        .iter()
        .map(|(id, source, event_id)| ((source.as_str(), event_id.as_str()), *id))
        .collect();
    Ok(events
        .iter()
        .map(|e| {
            created
                .remove(&(e.source.as_str(), e.event_id.as_str()))
                .map_or(Inserted::Duplicate, Inserted::New)
        })
        .collect())
}

/// Makes each key name its event again, claimed now in the newest generation (see migration
/// 0012), for events stored again by id such as an archive's restore: a key still held for
/// another id is taken over, one held for this id is left alone. Callers insert the events in
/// the same transaction.
pub async fn reclaim_keys(
    conn: &mut PgConnection,
    sources: &[String],
    event_ids: &[String],
    ids: &[i64],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO event_keys (source, event_id, id, gen, claimed_at)
         SELECT u.source, u.event_id, u.id, (SELECT max(gen) FROM event_key_generations), now()
         FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(source, event_id, id)
         ORDER BY 1, 2
         ON CONFLICT (source, event_id, gen) DO UPDATE
             SET id = EXCLUDED.id, claimed_at = EXCLUDED.claimed_at
             WHERE event_keys.id IS DISTINCT FROM EXCLUDED.id",
    )
    .bind(sources)
    .bind(event_ids)
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// True when PostgreSQL refused the payload itself (a `\u0000` escape, or a number such as
/// `1e-20000` that no numeric holds, both valid JSON jsonb cannot store): the sender's fault,
/// not an outage.
pub fn is_payload_rejected(err: &sqlx::Error) -> bool {
    const UNTRANSLATABLE_CHARACTER: &str = "22P05";
    const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    matches!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some(
            UNTRANSLATABLE_CHARACTER
                | INVALID_TEXT_REPRESENTATION
                | CHARACTER_NOT_IN_REPERTOIRE
                | NUMERIC_VALUE_OUT_OF_RANGE
        )
    ) || matches!(err, sqlx::Error::Decode(_))
}

/// An event a worker holds a lease on. `attempt` doubles as the fencing token: completions only
/// apply while the row still carries it, so a worker whose lease expired cannot overwrite the
/// work of the one that took over.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedEvent {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub source: SourceColumn,
    pub event_id: String,
    pub event_type: String,
    #[sqlx(rename = "attempts")]
    pub attempt: i32,
    /// The body as received; the queue stores nothing parsed (see migration 0014).
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
}

impl ClaimedEvent {
    pub fn source(&self) -> Source {
        self.source.0
    }

    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            attempt: self.attempt,
        }
    }
}

/// A worker's hold on an event: the event and the attempt it was claimed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub attempt: i32,
}

/// Adapter so `FromRow` can parse the text column into a [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceColumn(pub Source);

impl TryFrom<String> for SourceColumn {
    type Error = crate::BadSourceName;
    /// Whatever source hookd stored is one, known to this process or not yet.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        crate::Source::register(&s).map(SourceColumn)
    }
}

/// Leases up to `limit` due events: new ones, retries whose time has come, and events whose
/// worker died (returned by [`super::liveness::rescue_orphans`], or their lease ran out), in
/// the name of `owner` (see [`super::liveness`]). Safe with any number of workers and
/// processes.
pub async fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    lease: std::time::Duration,
    owner: Option<i32>,
) -> sqlx::Result<Vec<ClaimedEvent>> {
    // super::retry_moved's loop, written out: a closure cannot lend the connection to each try.
    let mut tries = 0;
    loop {
        let claimed = sqlx::query_as(
            "WITH due AS (
                 SELECT id FROM events
                 WHERE state IN ('pending', 'retrying', 'processing') AND next_attempt_at <= now()
                 ORDER BY next_attempt_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE events e
             SET state = 'processing',
                 attempts = e.attempts + 1,
                 locked_until = now() + make_interval(secs => $2),
                 next_attempt_at = now() + make_interval(secs => $2),
                 claimed_by = $3
             FROM due
             -- The state again, so only the live partition is planned and locked.
             WHERE e.id = due.id AND e.state IN ('pending', 'retrying', 'processing')
             RETURNING e.id, e.source, e.event_id, e.event_type, e.attempts, e.body,
                       e.received_at",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .bind(owner)
        .fetch_all(&mut *conn)
        .await;
        match claimed {
            Err(e) if tries < 5 && super::is_row_moved(&e) => tries += 1,
            done => return done,
        }
    }
}

/// Vacuums the queue's partition once it holds `min_dead` dead rows; returns how many it
/// held, if it vacuumed. Every event the workers settle leaves one there (a state change moves
/// the row to another partition), and every claim walks the index of due rows from the start,
/// where those dead rows' entries are, until a vacuum removes them. Autovacuum looks at a
/// database once a minute at most: at a few thousand events a second, each claim then walks
/// hundreds of thousands of them, and the claims starve ingest. The queue itself stays small,
/// so this vacuum takes milliseconds; one already running elsewhere is not waited for.
pub async fn vacuum_queue(pool: &PgPool, min_dead: i64) -> sqlx::Result<Option<i64>> {
    let dead: i64 = sqlx::query_scalar(
        "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables
         WHERE relid = 'events_live'::regclass",
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or(0);
    if dead < min_dead {
        return Ok(None);
    }
    sqlx::query("VACUUM (SKIP_LOCKED) events_live")
        .execute(pool)
        .await?;
    Ok(Some(dead))
}

/// When the earliest scheduled event falls due, so an idle worker knows how long it may sleep.
pub async fn next_due_at(conn: impl PgExecutor<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM events
         WHERE state IN ('pending', 'retrying', 'processing')",
    )
    .fetch_one(conn)
    .await
}

/// What one processing attempt did: its consequence for the event and its line in the
/// history hooktop and the admin API show.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub event_id: i64,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration: std::time::Duration,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    /// When a `Failed` event is tried next.
    pub retry_at: Option<DateTime<Utc>>,
    pub http_status: Option<u16>,
    pub response_body: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    /// Failed; another attempt is scheduled.
    Failed,
    /// Failed for the last time: the event is in the dead-letter queue.
    Dead,
    Skipped,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Skipped => "skipped",
        }
    }
}

/// Applies a batch of attempts to their events and appends them to the history: two
/// statements for the whole batch, three when events die. Only an event still leased under the
/// recorded attempt (live, `processing`, its attempt count unchanged) is settled; the call
/// returns the ids of those that were not, whose leases ran out and were taken over. If there
/// are any, it writes no history and the caller must roll back: what its handlers did for those
/// events is their new worker's to do.
///
/// The events' rows are locked here, at the end of the batch, not when it starts: until its
/// lease runs out no other worker claims an event, and a worker that finds its lease lost
/// only rolls back, so checking once, in the statement that settles, is enough.
pub async fn complete(
    conn: &mut PgConnection,
    records: &[AttemptRecord<'_>],
) -> sqlx::Result<Vec<i64>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = records.iter().map(|r| r.event_id).collect();
    let attempts: Vec<i32> = records.iter().map(|r| r.attempt).collect();
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    let errors: Vec<Option<&str>> = records.iter().map(|r| r.error.as_deref()).collect();
    let retry_at: Vec<Option<DateTime<Utc>>> = records.iter().map(|r| r.retry_at).collect();
    let settled: Vec<i64> = sqlx::query_scalar(
        // An event that succeeds or is skipped moves to the day it was processed on, and its
        // earlier attempts (failed ones, or those before a retry from the dead-letter queue)
        // go with it; this attempt is written there below. Events before attempts: the lock
        // order of every writer. The UPDATE is driven from the records, one probe of the id
        // index each: `e.id = ANY($1)` beside the join, or `state = 'processing'` (a partial
        // index its statistics often say is empty), lets the planner expect a row or two and
        // compare every event with every record (5.5-8 ms instead of 2 for a batch of 100). The
        // list of live states keeps the scan to `events_live`.
        "WITH r AS (
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[],
                                  $5::timestamptz[])
                  AS r(id, attempt, outcome, error, retry_at)
         ), settled AS (
             UPDATE events e
             SET state = CASE r.outcome WHEN 'failed' THEN 'retrying' ELSE r.outcome END,
                 processed_at = CASE WHEN r.outcome IN ('succeeded', 'skipped') THEN now()
                                     ELSE e.processed_at END,
                 dead_at = CASE WHEN r.outcome = 'dead' THEN now() END,
                 next_attempt_at = COALESCE(r.retry_at, e.next_attempt_at),
                 locked_until = NULL,
                 last_error = r.error
             FROM r
             WHERE e.id = r.id AND e.attempts = r.attempt
               AND e.state IN ('pending', 'processing', 'retrying')
               AND e.state NOT IN ('pending', 'retrying')
             RETURNING e.id, r.outcome
         ), earlier AS (
             UPDATE event_attempts SET done_at = now()
             WHERE event_id = ANY (ARRAY(SELECT id FROM settled
                                         WHERE outcome IN ('succeeded', 'skipped')))
               AND dead_at IS NULL AND done_at IS NULL
         )
         SELECT id FROM settled",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&errors)
    .bind(&retry_at)
    .fetch_all(&mut *conn)
    .await?;
    if settled.len() < records.len() {
        let settled: std::collections::HashSet<i64> = settled.into_iter().collect();
        return Ok(ids.into_iter().filter(|id| !settled.contains(id)).collect());
    }
    let started: Vec<DateTime<Utc>> = records.iter().map(|r| r.started_at).collect();
    let durations: Vec<i32> = records
        .iter()
        .map(|r| i32::try_from(r.duration.as_millis()).unwrap_or(i32::MAX))
        .collect();
    let statuses: Vec<Option<i32>> = records
        .iter()
        .map(|r| r.http_status.map(i32::from))
        .collect();
    let bodies: Vec<Option<&str>> = records.iter().map(|r| r.response_body).collect();
    let dying: Vec<i64> = records
        .iter()
        .filter(|r| r.outcome == AttemptOutcome::Dead)
        .map(|r| r.event_id)
        .collect();
    if !dying.is_empty() {
        // The history joins its event in the day's dead partition (see migration 0005), so a
        // purge drops both together. The events got this transaction's `now()` as `dead_at`,
        // and every record's event was settled above, so each of them did die.
        sqlx::query(
            "UPDATE event_attempts SET dead_at = now() WHERE event_id = ANY($1) AND dead_at IS NULL",
        )
        .bind(&dying)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error,
                                     http_status, response_body, dead_at, done_at, processed_at)
         SELECT r.*, CASE WHEN r.outcome = 'dead' THEN now() END,
                CASE WHEN r.outcome IN ('succeeded', 'skipped') THEN now() END,
                r.started_at + r.duration_ms * interval '1 millisecond'
         FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[], $5::text[],
                     $6::text[], $7::int[], $8::text[])
              AS r(event_id, attempt, started_at, duration_ms, outcome, error, http_status,
                   response_body)",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&started)
    .bind(&durations)
    .bind(&outcomes)
    .bind(&errors)
    .bind(&statuses)
    .bind(&bodies)
    .execute(conn)
    .await?;
    Ok(Vec::new())
}

/// Hands leased events back without counting the attempt, for a worker shutting down before it
/// started on them.
pub async fn release(pool: &PgPool, leases: &[Lease]) -> sqlx::Result<u64> {
    let ids: Vec<i64> = leases.iter().map(|l| l.id).collect();
    let attempts: Vec<i32> = leases.iter().map(|l| l.attempt).collect();
    let done = sqlx::query(
        "UPDATE events e
         SET state = CASE WHEN e.attempts > 1 THEN 'retrying' ELSE 'pending' END,
             attempts = e.attempts - 1,
             next_attempt_at = now(),
             locked_until = NULL
         FROM unnest($1::bigint[], $2::int[]) AS l(id, attempt)
         WHERE e.id = l.id AND e.attempts = l.attempt AND e.state = 'processing'",
    )
    .bind(&ids)
    .bind(&attempts)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Sends an empty notification on each of `channels` (hookd announces commits with these; see
/// its `announce` module).
pub async fn notify(pool: &PgPool, channels: &[&str]) -> sqlx::Result<()> {
    if channels.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify(channel, '') FROM unnest($1::text[]) AS channel")
        .bind(channels)
        .execute(pool)
        .await?;
    Ok(())
}

/// One stored event with its attempt history: the detail view of hooktop and the admin API.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct EventDetail {
    pub id: i64,
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct Attempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub outcome: String,
    pub error: Option<String>,
    pub http_status: Option<i32>,
    pub response_body: Option<String>,
}

/// An event's payload as readers see it: only dead events keep their parse (migration 0014).
const PAYLOAD: &str = "coalesce(payload, hookd_body_json(body)) AS payload";

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<EventDetail>> {
    sqlx::query_as(&format!(
        "SELECT id, source, event_id, event_type, state, attempts, last_error, received_at,
                processed_at, dead_at, {PAYLOAD}
         FROM events WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn attempts(pool: &PgPool, id: i64) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_as(
        "SELECT attempt, started_at, duration_ms, outcome, error, http_status, response_body
         FROM event_attempts WHERE event_id = $1 ORDER BY started_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// The events `key` names, in any state: the one whose `id` it is, else those whose provider
/// event id it is (one per source that sent it). What an engineer has at hand is usually the
/// provider's id (`evt_...`, a Telnyx UUID), from a provider dashboard or a log line.
pub async fn find(pool: &PgPool, key: &str) -> sqlx::Result<Vec<EventDetail>> {
    // The keys table is indexed by (source, event_id) only; a loose index scan walks its few
    // distinct sources, then looks the id up under each, so no index is added to the insert
    // path for an operator's occasional lookup.
    sqlx::query_as(&format!(
        "WITH RECURSIVE sources(source) AS (
             (SELECT source FROM event_keys ORDER BY source LIMIT 1)
             UNION ALL
             SELECT (SELECT k.source FROM event_keys k WHERE k.source > s.source
                     ORDER BY k.source LIMIT 1)
             FROM sources s WHERE s.source IS NOT NULL
         ),
         ids AS (
             SELECT id FROM events WHERE id = (CASE WHEN $1 ~ '^[0-9]{{1,18}}$' THEN $1::bigint END)
             UNION
             SELECT k.id FROM sources s JOIN event_keys k
                 ON k.source = s.source AND k.event_id = $1
         )
         SELECT e.id, e.source, e.event_id, e.event_type, e.state, e.attempts, e.last_error,
                e.received_at, e.processed_at, e.dead_at, {PAYLOAD}
         FROM ids JOIN events e USING (id)
         ORDER BY e.id"
    ))
    .bind(key)
    .fetch_all(pool)
    .await
}
