//! Bulk actions on the dead-letter queue that act on exactly what their preview showed.
//!
//! A [`preview`] counts a [`Selection`] of dead events, breaks it down by type and records the
//! database snapshot it counted in, as a [`Token`]. The action takes the token and touches only
//! events that were dead in that snapshot and have not changed since (migration 0010): one
//! that died after the preview is left dead, and one that someone retried meanwhile is
//! skipped and reported, never retried twice. hooktop, `hookd dlq retry-all` and the admin API
//! all go through here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool};

use super::clusters::ClusterKey;
use crate::Source;

/// Which dead events a bulk action is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Selection {
    /// Every dead event.
    All,
    /// What the dead-letter list's filter matches.
    Matching {
        /// A source name as stored (a string, so a token names operator-declared sources too).
        source: Option<String>,
        event_type: Option<String>,
        /// Case-insensitive substring of the event type, provider event id or last error.
        text: Option<String>,
    },
    /// One error cluster: a source, an event type and a fingerprint of the last error.
    Cluster {
        source: String,
        event_type: String,
        fingerprint: String,
    },
}

impl Selection {
    pub fn cluster(key: &ClusterKey) -> Selection {
        Selection::Cluster {
            source: key.source.clone(),
            event_type: key.event_type.clone(),
            fingerprint: key.fingerprint.clone(),
        }
    }

    /// A filter that matches everything is no filter.
    pub fn matching(
        source: Option<Source>,
        event_type: Option<String>,
        text: Option<String>,
    ) -> Selection {
        let text = text.filter(|t| !t.is_empty());
        if source.is_none() && event_type.is_none() && text.is_none() {
            return Selection::All;
        }
        Selection::Matching {
            source: source.map(|s| s.as_str().to_owned()),
            event_type,
            text,
        }
    }

    /// How a confirmation names the set: "all dead events", "dead events matching ...".
    pub fn describe(&self) -> String {
        match self {
            Selection::All => "all dead events".to_owned(),
            Selection::Matching {
                source,
                event_type,
                text,
            } => {
                let mut parts = Vec::new();
                if let Some(source) = source {
                    parts.push(format!("source {source}"));
                }
                if let Some(event_type) = event_type {
                    parts.push(format!("type {event_type}"));
                }
                if let Some(text) = text {
                    parts.push(format!("{text:?}"));
                }
                format!("dead events matching {}", parts.join(", "))
            }
            Selection::Cluster {
                source,
                event_type,
                fingerprint,
            } => format!("dead {source} {event_type} events that died of \"{fingerprint}\""),
        }
    }

    /// The selection as the bind parameters of [`PREDICATE`].
    fn binds(&self) -> Binds<'_> {
        match self {
            Selection::All => Binds::default(),
            Selection::Matching {
                source,
                event_type,
                text,
            } => Binds {
                source: source.as_deref(),
                event_type: event_type.as_deref(),
                pattern: text.as_deref().map(like_pattern),
                fingerprint: None,
            },
            Selection::Cluster {
                source,
                event_type,
                fingerprint,
            } => Binds {
                source: Some(source),
                event_type: Some(event_type),
                pattern: None,
                fingerprint: Some(fingerprint),
            },
        }
    }
}

#[derive(Default)]
struct Binds<'a> {
    source: Option<&'a str>,
    event_type: Option<&'a str>,
    pattern: Option<String>,
    fingerprint: Option<&'a str>,
}

/// A selection in SQL over `events`, with its binds at $1 – $4 (see [`Selection::binds`]).
const PREDICATE: &str = "state = 'dead'
    AND ($1::text IS NULL OR source = $1)
    AND ($2::text IS NULL OR event_type = $2)
    AND ($3::text IS NULL OR event_type ILIKE $3 OR event_id ILIKE $3 OR last_error ILIKE $3)
    AND ($4::text IS NULL OR error_fingerprint = $4)";

/// [`PREDICATE`]'s count by type, for a selection without text, from `dead_tally`
/// (migration 0013) instead of the events: its binds at $1, $2 and $4, $3 unused.
const TALLIED: &str = "SELECT source, event_type, sum(n)::bigint AS count FROM dead_tally
    WHERE ($1::text IS NULL OR source = $1)
      AND ($2::text IS NULL OR event_type = $2)
      AND $3::text IS NULL
      AND ($4::text IS NULL OR fingerprint = $4)
    GROUP BY 1, 2 HAVING sum(n) > 0 ORDER BY 3 DESC, 1, 2";

/// `text` as a case-insensitive substring pattern, its LIKE metacharacters matched literally.
pub fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// What a preview saw: the selection and the snapshot it counted in. It travels as an opaque
/// string (`hookd dlq retry-all --token`, the admin API), so an action may come minutes after
/// its preview, from another process, and still act on the same set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub selection: Selection,
    /// `pg_current_snapshot()` of the preview, as text.
    snapshot: String,
    /// How many events the preview counted: what "skipped" is reckoned from.
    pub count: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("not a preview token (take one with --dry-run or the preview): {0}")]
pub struct BadToken(String);

impl Token {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token serialises");
        URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str) -> Result<Token, BadToken> {
        let json = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|e| BadToken(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| BadToken(e.to_string()))
    }
}

/// Dead events of one source and type in a preview.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct TypeCount {
    pub source: String,
    pub event_type: String,
    pub count: i64,
}

/// How many dead events a bulk action would touch, and of which types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub token: Token,
    /// The largest first.
    pub by_type: Vec<TypeCount>,
}

impl Preview {
    pub fn count(&self) -> i64 {
        self.token.count
    }
}

/// Counts `selection` now, by type, and remembers the snapshot the count was taken in.
pub async fn preview(pool: &PgPool, selection: &Selection) -> sqlx::Result<Preview> {
    let mut tx = pool.begin().await?;
    // One snapshot for the count and the token, so the token names the set counted.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
        .fetch_one(&mut *tx)
        .await?;
    let b = selection.binds();
    // The tally holds exactly what the events hold in this snapshot: it is written in the
    // transactions that change them. Text is matched against the events themselves.
    let counted = match b.pattern {
        None => TALLIED.to_owned(),
        Some(_) => format!(
            "SELECT source, event_type, count(*) AS count FROM events WHERE {PREDICATE}
             GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
        ),
    };
    let by_type: Vec<TypeCount> = sqlx::query_as(&counted)
        .bind(b.source)
        .bind(b.event_type)
        .bind(b.pattern.as_deref())
        .bind(b.fingerprint)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Preview {
        token: Token {
            selection: selection.clone(),
            snapshot,
            count: by_type.iter().map(|t| t.count).sum(),
        },
        by_type,
    })
}

/// What a bulk retry did with the previewed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Retried {
    /// How many the preview counted.
    pub previewed: i64,
    /// Sent back to the queue now.
    pub retried: i64,
    /// Previewed, but retried, purged or dead again by the time the action came.
    pub skipped: i64,
}

impl std::fmt::Display for Retried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "retried {}", self.retried)?;
        match self.skipped {
            0 => Ok(()),
            1 => write!(
                f,
                ", 1 had changed since the preview (already retried or purged)"
            ),
            n => write!(
                f,
                ", {n} had changed since the preview (already retried or purged)"
            ),
        }
    }
}

/// The rows of the token's set that are still as the preview saw them.
fn in_token(extra: &str) -> String {
    format!(
        "SELECT id FROM events
         WHERE {PREDICATE}
           AND (dead_xid IS NULL OR pg_visible_in_snapshot(dead_xid, $5::pg_snapshot))
         {extra}"
    )
}

/// Sends every event of the preview that is still dead as it was back to the queue, in
/// batches so no lock is held long.
pub async fn retry(pool: &PgPool, token: &Token) -> sqlx::Result<Retried> {
    let mut retried = 0;
    loop {
        let n = retry_batch(pool, token, super::dlq::BATCH).await?.len() as i64;
        if n == 0 {
            break;
        }
        retried += n;
    }
    // Not worth failing a retry that was done: the counts stay exact, only dearer to read.
    super::dlq::compact_tally(pool).await.ok();
    Ok(Retried {
        previewed: token.count,
        retried,
        skipped: (token.count - retried).max(0),
    })
}

/// A canary: retries at most `n` events of the preview (the most recent deaths, which show
/// the cause as it is now) and returns their ids, to watch with [`states`] before the rest.
pub async fn canary(pool: &PgPool, token: &Token, n: i64) -> sqlx::Result<Vec<i64>> {
    retry_batch(pool, token, n).await
}

async fn retry_batch(pool: &PgPool, token: &Token, limit: i64) -> sqlx::Result<Vec<i64>> {
    let b = token.selection.binds();
    let sql = in_token("ORDER BY dead_at DESC, id DESC LIMIT $6 FOR UPDATE SKIP LOCKED");
    super::retry_moved(|| async {
        let mut tx = pool.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(&sql)
            .bind(b.source)
            .bind(b.event_type)
            .bind(b.pattern.as_deref())
            .bind(b.fingerprint)
            .bind(&token.snapshot)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        super::dlq::revive(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(ids)
    })
    .await
}

/// Where a retried event has got to.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub id: i64,
    pub event_type: String,
    /// `pending`, `processing`, `succeeded`, `skipped`, `retrying` or `dead`.
    pub state: String,
    #[schema(required = true)]
    pub last_error: Option<String>,
}

impl Progress {
    /// Processed: it got through, or was deliberately not handled.
    pub fn succeeded(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "skipped")
    }

    /// It failed again: retrying with backoff, or dead once more. Purged counts too (absent).
    pub fn failed(&self) -> bool {
        matches!(self.state.as_str(), "retrying" | "dead")
    }
}

/// The states of `ids` (a canary's), in the order given; purged ones are left out.
pub async fn states(pool: &PgPool, ids: &[i64]) -> sqlx::Result<Vec<Progress>> {
    sqlx::query_as(
        "SELECT e.id, e.event_type, e.state, e.last_error
         FROM unnest($1::bigint[]) WITH ORDINALITY AS w(id, n)
         JOIN events e ON e.id = w.id
         ORDER BY w.n",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// How a canary went: all through, some failed again, or still being processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Running,
    Succeeded,
    Failed,
}

pub fn verdict(canaries: &[i64], progress: &[Progress]) -> Verdict {
    // A canary that is gone (purged meanwhile) did not prove anything: that is a failure.
    if progress.iter().any(Progress::failed) || progress.len() < canaries.len() {
        Verdict::Failed
    } else if progress.iter().all(Progress::succeeded) {
        Verdict::Succeeded
    } else {
        Verdict::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_survives_the_round_trip_and_garbage_is_refused() {
        let token = Token {
            selection: Selection::matching(Some(Source::Stripe), None, Some("cus_".into())),
            snapshot: "100:104:101,102".into(),
            count: 42,
        };
        assert_eq!(Token::decode(&token.encode()).unwrap(), token);
        assert!(Token::decode("not a token").is_err());
        assert!(Token::decode(&URL_SAFE_NO_PAD.encode(b"{}")).is_err());
    }

    #[test]
    fn an_empty_filter_is_all() {
        assert_eq!(
            Selection::matching(None, None, Some(String::new())),
            Selection::All
        );
        assert_eq!(Selection::All.describe(), "all dead events");
        assert_eq!(
            Selection::matching(None, Some("call.hangup".into()), Some("busy".into())).describe(),
            "dead events matching type call.hangup, \"busy\""
        );
    }

    #[test]
    fn like_metacharacters_match_literally() {
        assert_eq!(like_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }

    #[test]
    fn a_canary_fails_on_any_failure_and_succeeds_only_when_all_did() {
        let p = |id, state: &str| Progress {
            id,
            event_type: "t".into(),
            state: state.into(),
            last_error: None,
        };
        let ids = [1, 2];
        assert_eq!(
            verdict(&ids, &[p(1, "succeeded"), p(2, "pending")]),
            Verdict::Running
        );
        assert_eq!(
            verdict(&ids, &[p(1, "succeeded"), p(2, "skipped")]),
            Verdict::Succeeded
        );
        assert_eq!(
            verdict(&ids, &[p(1, "retrying"), p(2, "pending")]),
            Verdict::Failed
        );
        assert_eq!(verdict(&ids, &[p(1, "succeeded")]), Verdict::Failed);
    }
}
