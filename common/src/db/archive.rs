//! Purges that leave a receipt, and the way back.
//!
//! Before a purge deletes anything it writes the events it removes, with their attempt
//! history, to a gzip-compressed NDJSON archive (one [`ArchivedEvent`] a line) and makes it
//! durable; only then are they deleted, and an `audit_logs` row (`action` `dlq.purge`) records
//! who, the filter, the count, the archive's path and its SHA-256. A purge whose archive cannot
//! be written deletes nothing. [`restore`] brings an archive's events back as dead events.
//!
//! The archive is written one gzip member per batch (a file of concatenated members is one
//! valid gzip stream to `gzip -d`, `zcat` and [`flate2::read::MultiGzDecoder`]): a batch whose
//! delete fails is cut off the file again, so the archive holds exactly what was deleted.
//! Whole days of dead events still go by dropping their partitions (migration 0005), under a
//! lock that keeps their rows from moving while they are archived.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{FromRow, PgConnection, PgPool};

use super::dlq::{self, PurgeToken};

/// Where a purge writes its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveTarget {
    /// Into a new file in this directory (created if missing).
    Dir(PathBuf),
    /// No archive: the operator turned it off (`HOOKD_ARCHIVE_DIR=off`).
    Off,
}

impl From<Option<PathBuf>> for ArchiveTarget {
    fn from(dir: Option<PathBuf>) -> Self {
        dir.map_or(ArchiveTarget::Off, ArchiveTarget::Dir)
    }
}

/// Who purged or restored, for the audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The OS user, or the admin token's label.
    pub who: String,
    /// What they used: `cli`, `admin-api`, `hooktop`.
    pub via: String,
}

impl Actor {
    pub fn new(who: impl Into<String>, via: impl Into<String>) -> Actor {
        Actor {
            who: who.into(),
            via: via.into(),
        }
    }

    /// The user this process runs as, as the OS names them.
    pub fn os_user(via: impl Into<String>) -> Actor {
        Actor::new(whoami::username(), via)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Nothing (more) was deleted: the archive could not be written.
    #[error(
        "cannot write the purge archive {path}: {cause}; {}",
        if *.purged == 0 { "nothing was deleted".to_owned() }
        else { format!("stopped after {} events, which the archive holds", .purged) }
    )]
    Write {
        path: PathBuf,
        // Not `source`: the message carries it already, and `{:#}` would print it twice.
        cause: std::io::Error,
        /// What was deleted (and archived) before the failure.
        purged: u64,
    },
    #[error("cannot read the archive {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} line {line} is not an archived event: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One attempt of an archived event, as `event_attempts` held it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct ArchivedAttempt {
    #[serde(skip)]
    event_id: i64,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub outcome: String,
    pub error: Option<String>,
    pub http_status: Option<i32>,
    pub response_body: Option<String>,
}

/// One line of an archive: a purged event as `events` held it, with its attempts.
#[derive(Debug, Clone, PartialEq, FromRow, Serialize, Deserialize)]
pub struct ArchivedEvent {
    pub id: i64,
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    /// Exactly the bytes that were signed, base64 (standard, padded).
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    pub payload: serde_json::Value,
    #[sqlx(skip)]
    pub history: Vec<ArchivedAttempt>,
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// What a purge did: the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PurgeReceipt {
    /// How many the preview counted (0 for a purge that did not preview).
    pub previewed: i64,
    /// Deleted now, and in the archive.
    pub purged: u64,
    /// Previewed, but retried or purged by someone else by the time the purge came.
    pub skipped: i64,
    /// The archive, none when archiving is off.
    #[schema(value_type = Option<String>, required = true)]
    pub archive: Option<PathBuf>,
    /// SHA-256 of the archive file's bytes, hex.
    #[schema(required = true)]
    pub sha256: Option<String>,
    /// What was purged, in words.
    pub filter: String,
}

impl std::fmt::Display for PurgeReceipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "purged {} {}", self.purged, self.filter)?;
        match self.skipped {
            0 => {}
            1 => write!(f, "; 1 had changed since the preview (retried or purged)")?,
            n => write!(f, "; {n} had changed since the preview (retried or purged)")?,
        }
        match (&self.archive, &self.sha256) {
            (Some(path), Some(sha)) => {
                write!(f, "\narchive {} (sha256 {sha})", path.display())
            }
            _ => write!(f, "\nno archive (HOOKD_ARCHIVE_DIR=off)"),
        }
    }
}

/// The archive being written: the file, where the current batch began, and how many lines
/// it holds.
struct Writer {
    path: PathBuf,
    file: File,
}

impl Writer {
    fn create(dir: &Path) -> Result<Writer, (PathBuf, std::io::Error)> {
        std::fs::create_dir_all(dir).map_err(|e| (dir.to_owned(), e))?;
        let stem = format!(
            "dlq-purge-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            std::process::id()
        );
        // Two purges of one process in one millisecond (the admin API and retention, say) get
        // names of their own: an archive is never written over or refused for its name.
        let mut n = 1;
        let (path, file) = loop {
            let path = match n {
                1 => dir.join(format!("{stem}.ndjson.gz")),
                n => dir.join(format!("{stem}-{n}.ndjson.gz")),
            };
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1_000 => n += 1,
                Err(e) => return Err((path, e)),
            }
        };
        // An empty member: a purge of nothing still leaves a valid (empty) gzip file.
        let mut file = file;
        write_member(&mut file, &[]).map_err(|e| (path.clone(), e))?;
        // The directory entry must outlive a crash as much as the bytes do.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| (dir.to_owned(), e))?;
        Ok(Writer { path, file })
    }

    /// Appends `events` as one gzip member and makes it durable; returns where the file
    /// ended before, for [`Writer::cut`].
    fn append(&mut self, events: &[ArchivedEvent]) -> std::io::Result<u64> {
        let start = self.file.seek(std::io::SeekFrom::End(0))?;
        if let Err(e) = write_member(&mut self.file, events) {
            // A half-written member would make the rest of the file unreadable.
            let _ = self.file.set_len(start);
            return Err(e);
        }
        Ok(start)
    }

    /// Takes back what was appended from `start` on: its events were not deleted after all.
    fn cut(&mut self, start: u64) -> std::io::Result<()> {
        self.file.set_len(start)?;
        self.file.sync_data()
    }

    fn sha256(&self) -> std::io::Result<String> {
        let mut hasher = Sha256::new();
        std::io::copy(&mut File::open(&self.path)?, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    }
}

fn write_member(file: &mut File, events: &[ArchivedEvent]) -> std::io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(&mut *file),
        flate2::Compression::default(),
    );
    for event in events {
        serde_json::to_writer(&mut gz, event)?;
        gz.write_all(b"\n")?;
    }
    gz.finish()?.flush()?;
    file.sync_data()
}

/// The archive writer moved onto a blocking thread for each write, so a purge from the
/// daemon never stalls its runtime on disk.
struct Archive {
    writer: Option<Writer>,
    purged: u64,
}

impl Archive {
    fn error(&self, source: std::io::Error) -> ArchiveError {
        ArchiveError::Write {
            path: self
                .writer
                .as_ref()
                .map(|w| w.path.clone())
                .unwrap_or_default(),
            cause: source,
            purged: self.purged,
        }
    }

    /// Writes `events` (none when archiving is off); returns where to cut back to.
    async fn append(&mut self, events: Vec<ArchivedEvent>) -> Result<Option<u64>, ArchiveError> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(None);
        };
        let (writer, done) = tokio::task::spawn_blocking(move || {
            let done = writer.append(&events);
            (writer, done)
        })
        .await
        .expect("the archive writer does not panic");
        self.writer = Some(writer);
        done.map(Some).map_err(|e| self.error(e))
    }

    /// Undoes [`Archive::append`] after its delete failed, and returns `cause`.
    async fn cut(&mut self, start: Option<u64>, cause: ArchiveError) -> ArchiveError {
        let (Some(start), Some(mut writer)) = (start, self.writer.take()) else {
            return cause;
        };
        let (writer, done) = tokio::task::spawn_blocking(move || {
            let done = writer.cut(start);
            (writer, done)
        })
        .await
        .expect("the archive writer does not panic");
        self.writer = Some(writer);
        match done {
            Ok(()) => cause,
            // The archive now holds a batch that was not deleted: say so rather than the
            // database error, which the caller can retry.
            Err(e) => self.error(e),
        }
    }
}

const EVENT_COLUMNS: &str = "e.id, e.source, e.event_id, e.event_type, e.attempts, e.last_error,
     e.received_at, e.processed_at, e.dead_at, e.body, e.payload";

/// `ids`' rows with their attempts, read from `events` (or one day's partitions).
async fn fetch(
    conn: &mut PgConnection,
    ids: &[i64],
    events_table: &str,
    attempts_table: &str,
) -> sqlx::Result<Vec<ArchivedEvent>> {
    let mut events: Vec<ArchivedEvent> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM {events_table} e WHERE e.id = ANY($1) ORDER BY e.id"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let attempts: Vec<ArchivedAttempt> = sqlx::query_as(&format!(
        "SELECT event_id, attempt, started_at, duration_ms, outcome, error, http_status,
                response_body
         FROM {attempts_table} WHERE event_id = ANY($1) ORDER BY event_id, attempt, id"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut attempts = attempts.into_iter().peekable();
    for event in &mut events {
        while attempts.peek().is_some_and(|a| a.event_id < event.id) {
            attempts.next();
        }
        while let Some(a) = attempts.next_if(|a| a.event_id == event.id) {
            event.history.push(a);
        }
    }
    Ok(events)
}

/// Purges exactly the set `token` names, archiving it first into `target`, and records the
/// receipt in `audit_logs`. A token from [`dlq::purge_preview`] deletes only events that
/// were dead when the preview counted; [`PurgeToken::unbounded`] whatever matches now.
pub async fn purge(
    pool: &PgPool,
    token: &PurgeToken,
    target: &ArchiveTarget,
    actor: &Actor,
) -> Result<PurgeReceipt, ArchiveError> {
    let token = &fix_cut(pool, token).await?;
    let writer = match target {
        ArchiveTarget::Off => None,
        ArchiveTarget::Dir(dir) => {
            let dir = dir.clone();
            let made = tokio::task::spawn_blocking(move || Writer::create(&dir))
                .await
                .expect("creating a file does not panic");
            Some(made.map_err(|(path, cause)| ArchiveError::Write {
                path,
                cause,
                purged: 0,
            })?)
        }
    };
    let mut archive = Archive { writer, purged: 0 };
    if !token.filter.superseded
        && let Some(cut) = token.cut
    {
        drop_days(pool, token, cut, &mut archive).await?;
    }
    loop {
        let n = purge_batch(pool, token, &mut archive).await?;
        if n == 0 {
            break;
        }
    }
    let sha256 = match archive.writer.take() {
        None => None,
        Some(writer) => {
            let (writer, sha) = tokio::task::spawn_blocking(move || {
                let sha = writer.sha256();
                (writer, sha)
            })
            .await
            .expect("hashing does not panic");
            archive.writer = Some(writer);
            Some(sha.map_err(|e| archive.error(e))?)
        }
    };
    // Not worth failing a purge that was done: the counts stay exact, only dearer to read.
    super::dlq::compact_tally(pool).await.ok();
    let receipt = PurgeReceipt {
        previewed: token.count,
        purged: archive.purged,
        skipped: if token.snapshot().is_some() {
            (token.count - archive.purged as i64).max(0)
        } else {
            0
        },
        archive: archive.writer.as_ref().map(|w| w.path.clone()),
        sha256,
        filter: token.filter.describe(),
    };
    audit(
        pool,
        "dlq.purge",
        actor,
        serde_json::json!({
            "filter": token.filter,
            "cut": token.cut,
            "count": receipt.purged,
            "previewed": receipt.previewed,
            "skipped": receipt.skipped,
            "archive": receipt.archive,
            "sha256": receipt.sha256,
        }),
    )
    .await?;
    Ok(receipt)
}

/// A token without a cut of its own gets one now, so every batch reaches as far as the first.
async fn fix_cut(pool: &PgPool, token: &PurgeToken) -> sqlx::Result<PurgeToken> {
    let mut token = token.clone();
    if token.cut.is_none()
        && let Some(secs) = token.filter.older_than_secs
    {
        token.cut = Some(
            sqlx::query_scalar("SELECT now() - make_interval(secs => $1::float8)")
                .bind(secs as f64)
                .fetch_one(pool)
                .await?,
        );
    }
    Ok(token)
}

/// Drops the days that lie wholly before `cut` and hold only events of the token's set,
/// archiving each first under a lock that keeps its rows where they are.
async fn drop_days(
    pool: &PgPool,
    token: &PurgeToken,
    cut: DateTime<Utc>,
    archive: &mut Archive,
) -> Result<(), ArchiveError> {
    let days: Vec<NaiveDate> = sqlx::query_scalar(
        "SELECT day FROM hookd_dead_days() AS day
         WHERE (day + 1)::timestamp AT TIME ZONE 'UTC' <= $1 ORDER BY day",
    )
    .bind(cut)
    .fetch_all(pool)
    .await?;
    for day in days {
        let mut tries = 0;
        loop {
            match drop_day(pool, token, day, archive).await {
                Err(ArchiveError::Database(e)) if tries < 10 && is_lock_conflict(&e) => {
                    tries += 1;
                    // Long enough for the statement in the way to finish.
                    tokio::time::sleep(std::time::Duration::from_millis(10 << tries.min(6))).await;
                }
                done => {
                    done?;
                    break;
                }
            }
        }
    }
    Ok(())
}

fn is_lock_conflict(e: &sqlx::Error) -> bool {
    const LOCK_NOT_AVAILABLE: &str = "55P03";
    const DEADLOCK_DETECTED: &str = "40P01";
    matches!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some(LOCK_NOT_AVAILABLE | DEADLOCK_DETECTED)
    )
}

/// One day: archived and dropped in one transaction, or left for the row-by-row pass when
/// it holds an event the preview did not see die.
async fn drop_day(
    pool: &PgPool,
    token: &PurgeToken,
    day: NaiveDate,
    archive: &mut Archive,
) -> Result<(), ArchiveError> {
    let suffix = day.format("%Y%m%d");
    let (events_day, attempts_day) = (
        format!("events_dead_{suffix}"),
        format!("event_attempts_dead_{suffix}"),
    );
    let mut tx = pool.begin().await?;
    // As `dlq::drop_day`: a short wait, so deaths and dashboard reads never queue for long.
    sqlx::query("SET LOCAL lock_timeout = '1s'")
        .execute(&mut *tx)
        .await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&events_day)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Ok(());
    }
    // SHARE: readers go on, but no row of the day can be retried (moved out) or deleted
    // until it is archived and dropped.
    sqlx::query(&format!("LOCK TABLE {events_day} IN SHARE MODE"))
        .execute(&mut *tx)
        .await?;
    if let Some(snapshot) = token.snapshot() {
        let unseen: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT FROM {events_day} WHERE dead_xid IS NOT NULL
                            AND NOT pg_visible_in_snapshot(dead_xid, $1::pg_snapshot))"
        ))
        .bind(snapshot)
        .fetch_one(&mut *tx)
        .await?;
        if unseen {
            return Ok(());
        }
    }
    let has_attempts: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&attempts_day)
        .fetch_one(&mut *tx)
        .await?;
    let attempts_table = if has_attempts {
        attempts_day.as_str()
    } else {
        "event_attempts"
    };
    let mut first: Option<u64> = None;
    let archived = archive_day(&mut tx, &events_day, attempts_table, archive, &mut first).await;
    let dropped = match archived {
        Ok(held) => drop_locked_day(&mut tx, day).await.map(|()| held),
        Err(e) => Err(e),
    };
    let committed = match dropped {
        Ok(held) => tx.commit().await.map(|()| held).map_err(ArchiveError::from),
        Err(e) => Err(e),
    };
    match committed {
        Ok(held) => {
            archive.purged += held;
            Ok(())
        }
        Err(e) => Err(archive.cut(first, e).await),
    }
}

/// Drops a day this transaction holds locked. The drop needs the dead side's parent, which
/// writers take before the day: waiting for it while holding the day could close a cycle with
/// a dying or retried event, and the deadlock detector might end the writer's transaction
/// instead of this one. So it does not wait: a busy parent is a lock conflict, and the day is
/// tried again from the start.
async fn drop_locked_day(tx: &mut PgConnection, day: NaiveDate) -> Result<(), ArchiveError> {
    sqlx::query("LOCK TABLE ONLY events_dead IN ACCESS EXCLUSIVE MODE NOWAIT")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT hookd_drop_dead_day($1, false)")
        .bind(day)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Writes one locked day's events to the archive (only counts them when archiving is off);
/// how many it holds. `first` is where the day's part of the archive begins.
async fn archive_day(
    tx: &mut PgConnection,
    events_day: &str,
    attempts_table: &str,
    archive: &mut Archive,
    first: &mut Option<u64>,
) -> Result<u64, ArchiveError> {
    if archive.writer.is_none() {
        // Nothing to write: the count is all that is needed, and the drop stays fast.
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {events_day}"))
            .fetch_one(&mut *tx)
            .await?;
        return Ok(n.unsigned_abs());
    }
    let mut held = 0;
    let mut after = i64::MIN;
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM {events_day} WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(dlq::BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let Some(&last) = ids.last() else {
            return Ok(held);
        };
        after = last;
        held += ids.len() as u64;
        let events = fetch(&mut *tx, &ids, events_day, attempts_table).await?;
        let start = archive.append(events).await?;
        *first = first.or(start);
    }
}

/// Archives and deletes one batch of the token's set row by row; how many it deleted.
async fn purge_batch(
    pool: &PgPool,
    token: &PurgeToken,
    archive: &mut Archive,
) -> Result<u64, ArchiveError> {
    let mut tries = 0;
    loop {
        match purge_batch_once(pool, token, archive).await {
            Err(ArchiveError::Database(e)) if tries < 5 && super::is_row_moved(&e) => tries += 1,
            done => return done,
        }
    }
}

async fn purge_batch_once(
    pool: &PgPool,
    token: &PurgeToken,
    archive: &mut Archive,
) -> Result<u64, ArchiveError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT e.id FROM events e {} WHERE {} ORDER BY e.id LIMIT $4 FOR UPDATE OF e SKIP LOCKED",
        dlq::superseded_join("e"),
        dlq::purge_predicate(),
    ))
    .bind(token.cut)
    .bind(token.filter.superseded)
    .bind(token.snapshot())
    .bind(dlq::BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let start = if archive.writer.is_some() {
        let events = fetch(&mut tx, &ids, "events", "event_attempts").await?;
        archive.append(events).await?
    } else {
        None
    };
    let deleted = async {
        let done = sqlx::query("DELETE FROM events WHERE id = ANY($1) AND state = 'dead'")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(done.rows_affected())
    }
    .await;
    match deleted {
        Ok(n) => {
            archive.purged += n;
            Ok(n)
        }
        Err(e) => Err(archive.cut(start, e.into()).await),
    }
}

/// Writes an `audit_logs` row for a DLQ action. The runbook names `action`, `details` and
/// `created_at`; `source` is written where the application's table has it.
async fn audit(
    pool: &PgPool,
    action: &str,
    actor: &Actor,
    mut details: serde_json::Value,
) -> sqlx::Result<()> {
    details["who"] = actor.who.clone().into();
    details["via"] = actor.via.clone().into();
    let has_source: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_attribute
                        WHERE attrelid = 'audit_logs'::regclass AND attname = 'source'
                          AND NOT attisdropped)",
    )
    .fetch_one(pool)
    .await?;
    let sql = if has_source {
        "INSERT INTO audit_logs (action, details, created_at, source) VALUES ($1, $2, now(), 'hookd')"
    } else {
        "INSERT INTO audit_logs (action, details, created_at) VALUES ($1, $2, now())"
    };
    details["at"] = serde_json::to_value(Utc::now()).unwrap_or_default();
    sqlx::query(sql)
        .bind(action)
        .bind(&details)
        .execute(pool)
        .await?;
    Ok(())
}

/// An archived event that was not restored because its event is stored already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub id: i64,
    pub source: String,
    pub event_id: String,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub archive: PathBuf,
    /// Events put back as dead, with their attempts.
    pub restored: u64,
    /// Events whose key already has an event: left as they are.
    pub skipped: Vec<Skipped>,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored {} dead events from {}",
            self.restored,
            self.archive.display()
        )?;
        if !self.skipped.is_empty() {
            write!(f, "; skipped {} already stored:", self.skipped.len())?;
            for s in &self.skipped {
                write!(f, "\n  {} {} ({})", s.id, s.event_id, s.source)?;
            }
        }
        Ok(())
    }
}

/// Lines restored per transaction.
const RESTORE_BATCH: usize = 1_000;

/// Brings the events of an archive back as dead events with their attempts, under their
/// former ids. Idempotent: an event whose key already has a stored event (restored before, or
/// received again) is skipped and reported. Records an `audit_logs` row `dlq.restore`.
pub async fn restore(pool: &PgPool, path: &Path, actor: &Actor) -> Result<Restored, ArchiveError> {
    let owned = path.to_owned();
    let events = tokio::task::spawn_blocking(move || read(&owned))
        .await
        .expect("reading does not panic")?;
    let mut done = Restored {
        archive: path.to_owned(),
        restored: 0,
        skipped: Vec::new(),
    };
    for chunk in events.chunks(RESTORE_BATCH) {
        restore_batch(pool, chunk, &mut done).await?;
    }
    super::dlq::compact_tally(pool).await.ok();
    audit(
        pool,
        "dlq.restore",
        actor,
        serde_json::json!({
            "archive": path,
            "count": done.restored,
            "skipped": done.skipped.len(),
        }),
    )
    .await?;
    Ok(done)
}

/// Every event of an archive, in order.
pub fn read(path: &Path) -> Result<Vec<ArchivedEvent>, ArchiveError> {
    let read_error = |cause| ArchiveError::Read {
        path: path.to_owned(),
        cause,
    };
    let file = File::open(path).map_err(read_error)?;
    let lines = BufReader::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))).lines();
    let mut events = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.map_err(read_error)?;
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            serde_json::from_str(&line).map_err(|e| ArchiveError::Malformed {
                path: path.to_owned(),
                line: n + 1,
                reason: e.to_string(),
            })?,
        );
    }
    Ok(events)
}

async fn restore_batch(
    pool: &PgPool,
    events: &[ArchivedEvent],
    done: &mut Restored,
) -> sqlx::Result<()> {
    let mut days: Vec<NaiveDate> = events
        .iter()
        .filter_map(|e| e.dead_at)
        .map(|at| at.date_naive())
        .collect();
    days.sort_unstable();
    days.dedup();
    // As a hookd that saw them die would have: their day's partition, dropped since.
    sqlx::query("SELECT hookd_create_dead_day(day) FROM unnest($1::date[]) AS day")
        .bind(&days)
        .execute(pool)
        .await?;
    let mut tx = pool.begin().await?;
    let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    // Keys outlive their events, so a key alone does not mean the event is stored.
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT k.source, k.event_id
         FROM unnest($1::text[], $2::text[]) AS u(source, event_id)
         JOIN event_keys k ON k.source = u.source AND k.event_id = u.event_id
         JOIN events e ON e.id = k.id
         FOR KEY SHARE OF k",
    )
    .bind(&sources)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    let mut taken: std::collections::HashSet<(String, String)> = stored.into_iter().collect();
    let mut fresh = Vec::new();
    for e in events {
        if taken.insert((e.source.clone(), e.event_id.clone())) {
            fresh.push(e);
        } else {
            done.skipped.push(Skipped {
                id: e.id,
                source: e.source.clone(),
                event_id: e.event_id.clone(),
            });
        }
    }
    if fresh.is_empty() {
        return tx.commit().await;
    }
    let col = |f: fn(&ArchivedEvent) -> String| fresh.iter().map(|e| f(e)).collect::<Vec<_>>();
    let ids: Vec<i64> = fresh.iter().map(|e| e.id).collect();
    let attempts: Vec<i32> = fresh.iter().map(|e| e.attempts).collect();
    let errors: Vec<Option<&str>> = fresh.iter().map(|e| e.last_error.as_deref()).collect();
    let received: Vec<DateTime<Utc>> = fresh.iter().map(|e| e.received_at).collect();
    let processed: Vec<Option<DateTime<Utc>>> = fresh.iter().map(|e| e.processed_at).collect();
    let dead: Vec<Option<DateTime<Utc>>> = fresh.iter().map(|e| e.dead_at).collect();
    let bodies: Vec<&[u8]> = fresh.iter().map(|e| e.body.as_slice()).collect();
    let payloads: Vec<&serde_json::Value> = fresh.iter().map(|e| &e.payload).collect();
    sqlx::query(
        "INSERT INTO events (id, source, event_id, event_type, state, attempts, next_attempt_at,
                             last_error, received_at, processed_at, dead_at, body, payload)
         OVERRIDING SYSTEM VALUE
         SELECT u.id, u.source, u.event_id, u.event_type, 'dead', u.attempts,
                coalesce(u.dead_at, now()), u.last_error, u.received_at, u.processed_at,
                u.dead_at, u.body, u.payload
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::bytea[],
                     $11::jsonb[])
              AS u(id, source, event_id, event_type, attempts, last_error, received_at,
                   processed_at, dead_at, body, payload)",
    )
    .bind(&ids)
    .bind(col(|e| e.source.clone()))
    .bind(col(|e| e.event_id.clone()))
    .bind(col(|e| e.event_type.clone()))
    .bind(&attempts)
    .bind(&errors)
    .bind(&received)
    .bind(&processed)
    .bind(&dead)
    .bind(&bodies)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    // A key kept after its event was purged points at the former id, which the event has
    // again; one that pointed elsewhere (its event gone too) now names the restored event.
    super::events::reclaim_keys(
        &mut tx,
        &col(|e| e.source.clone()),
        &col(|e| e.event_id.clone()),
        &ids,
    )
    .await?;
    let history: Vec<(&ArchivedEvent, &ArchivedAttempt)> = fresh
        .iter()
        .flat_map(|e| e.history.iter().map(move |a| (*e, a)))
        .collect();
    if !history.is_empty() {
        let of = |f: fn(&ArchivedEvent, &ArchivedAttempt) -> Option<String>| {
            history.iter().map(|(e, a)| f(e, a)).collect::<Vec<_>>()
        };
        let event_ids: Vec<i64> = history.iter().map(|(e, _)| e.id).collect();
        let numbers: Vec<i32> = history.iter().map(|(_, a)| a.attempt).collect();
        let started: Vec<DateTime<Utc>> = history.iter().map(|(_, a)| a.started_at).collect();
        let durations: Vec<i32> = history.iter().map(|(_, a)| a.duration_ms).collect();
        let statuses: Vec<Option<i32>> = history.iter().map(|(_, a)| a.http_status).collect();
        let dead_at: Vec<Option<DateTime<Utc>>> = history.iter().map(|(e, _)| e.dead_at).collect();
        sqlx::query(
            "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome,
                                         error, http_status, response_body, dead_at)
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[],
                                  $5::text[], $6::text[], $7::int[], $8::text[],
                                  $9::timestamptz[])",
        )
        .bind(&event_ids)
        .bind(&numbers)
        .bind(&started)
        .bind(&durations)
        .bind(of(|_, a| Some(a.outcome.clone())))
        .bind(of(|_, a| a.error.clone()))
        .bind(&statuses)
        .bind(of(|_, a| a.response_body.clone()))
        .bind(&dead_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    done.restored += fresh.len() as u64;
    Ok(())
}
