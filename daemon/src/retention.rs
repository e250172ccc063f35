//! Bounded storage, run by every hookd in the background: the day partitions of processed
//! events are made ready ahead and dropped once past `HOOKD_RETENTION`, keys are kept for
//! `HOOKD_DEDUP_WINDOW`, and dead events past `HOOKD_DLQ_RETENTION`, when set, are purged by
//! whole days, archived first like every purge (`common::db::archive`). The storage is `common::db::retention` (see migration 0012); any number of
//! processes may run this at once.

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use common::db::archive::{self, Actor, ArchiveError, ArchiveTarget};
use common::db::dlq::{self, PurgeFilter, PurgeToken};
use common::db::retention::{self, Dropped, Policy, Prepared};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Sources, invalid};

/// Days ahead whose partitions are kept ready, so events keep landing in a day of their own
/// while retention cannot run for a while.
pub const DAYS_AHEAD: u32 = 3;

/// How often the partitions ahead are checked; dropping is looked at every [`DROP_EVERY`].
const PREPARE_EVERY: Duration = Duration::from_secs(300);
const DROP_EVERY: u32 = 12;

/// The retention settings of `hookd serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub policy: Policy,
    /// Where dead events past `HOOKD_DLQ_RETENTION` are archived before they are dropped
    /// (`HOOKD_ARCHIVE_DIR`; `Off` keeps no copy), as every purge does.
    pub archive: ArchiveTarget,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: Policy::default(),
            archive: ArchiveTarget::Off,
        }
    }
}

fn duration(sources: &Sources, name: &str) -> Result<Option<Duration>, ConfigError> {
    let Some(raw) = sources.get(name)? else {
        return Ok(None);
    };
    humantime::parse_duration(raw.trim())
        .map(Some)
        .map_err(|_| {
            invalid(
                name,
                format!("expected a duration such as 30d or 72h, got {raw:?}"),
            )
        })
}

/// `HOOKD_RETENTION` (default 30d), `HOOKD_DEDUP_WINDOW` (default the retention, at least 3
/// days) and `HOOKD_DLQ_RETENTION` (default off).
pub fn settings(sources: &Sources) -> Result<Settings, ConfigError> {
    let retention = duration(sources, "HOOKD_RETENTION")?.unwrap_or(retention::DEFAULT_RETENTION);
    let dedup_window = duration(sources, "HOOKD_DEDUP_WINDOW")?;
    let dlq_retention = match sources
        .get("HOOKD_DLQ_RETENTION")?
        .as_deref()
        .map(str::trim)
    {
        None | Some("off") => None,
        Some(_) => duration(sources, "HOOKD_DLQ_RETENTION")?,
    };
    let policy = Policy::new(retention, dedup_window, dlq_retention)
        .map_err(|(name, e)| invalid(name, e.to_string()))?;
    Ok(Settings {
        policy,
        archive: crate::config::archive_dir(sources)?.into(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("retention: {0}")]
    Database(#[from] sqlx::Error),
    /// Dead events past `HOOKD_DLQ_RETENTION` could not all be archived, so not all went.
    #[error("retention of dead events: {0}")]
    Archive(#[from] ArchiveError),
}

/// What one run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub dry_run: bool,
    pub prepared: Prepared,
    pub dropped: Dropped,
    /// Dead events purged past `HOOKD_DLQ_RETENTION` (or that would be).
    pub dead: u64,
    /// Where they were archived, when they were.
    pub archive: Option<std::path::PathBuf>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would drop"
        } else {
            "dropped"
        };
        let days: Vec<String> = self.dropped.days.iter().map(|d| d.to_string()).collect();
        writeln!(
            f,
            "{verb} {} processed events ({} days{}{})",
            self.dropped.events,
            days.len(),
            if days.is_empty() { "" } else { ": " },
            days.join(", ")
        )?;
        writeln!(
            f,
            "{verb} {} generations of idempotency keys",
            self.dropped.key_generations.len()
        )?;
        write!(f, "{verb} {} dead events", self.dead)?;
        if let Some(path) = &self.archive {
            write!(f, " (archived in {})", path.display())?;
        }
        Ok(())
    }
}

/// The dead events' age cut for `keep`, moved back to the start of its UTC day, so the
/// dead-letter queue too loses whole days and no day's partition is deleted row by row.
fn whole_days(keep: Duration) -> chrono::Duration {
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let Some(cut) = now.checked_sub_signed(keep) else {
        return keep;
    };
    let midnight = cut
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|m| m.and_utc())
        .unwrap_or(cut);
    now - midnight
}

/// One run: partitions ahead, then what has expired. `hookd retention run [--dry-run]` is this.
pub async fn run_once(
    pool: &PgPool,
    settings: &Settings,
    dry_run: bool,
) -> Result<Report, RetentionError> {
    let policy = &settings.policy;
    if dry_run {
        let dead = match policy.dlq_retention {
            Some(keep) => dlq::count_older_than(pool, whole_days(keep))
                .await?
                .unsigned_abs(),
            None => 0,
        };
        return Ok(Report {
            dry_run,
            dropped: retention::expired(pool, policy).await?,
            dead,
            ..Report::default()
        });
    }
    let prepared = retention::prepare(pool, policy, DAYS_AHEAD).await?;
    let dropped = retention::drop_expired(pool, policy).await?;
    // Dead events go the way every purge goes: archived first (unless HOOKD_ARCHIVE_DIR=off),
    // whole days dropped, and an audit row with the receipt.
    let receipt = match policy.dlq_retention {
        Some(keep) => Some(
            archive::purge(
                pool,
                &PurgeToken::unbounded(PurgeFilter::older_than(whole_days(keep))),
                &settings.archive,
                &Actor::new("retention", "hookd"),
            )
            .await?,
        ),
        None => None,
    };
    Ok(Report {
        dry_run,
        prepared,
        dropped,
        dead: receipt.as_ref().map_or(0, |r| r.purged),
        archive: receipt.and_then(|r| r.archive),
    })
}

/// Runs in the background until `shutdown`: partitions ahead every few minutes, drops every
/// hour, both at start.
pub async fn run(pool: PgPool, settings: Settings, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(PREPARE_EVERY);
    let mut rounds = 0u32;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let outcome = if rounds.is_multiple_of(DROP_EVERY) {
            run_once(&pool, &settings, false).await
        } else {
            retention::prepare(&pool, &settings.policy, DAYS_AHEAD)
                .await
                .map(|prepared| Report {
                    prepared,
                    ..Report::default()
                })
                .map_err(RetentionError::from)
        };
        match outcome {
            Ok(report) => {
                let d = &report.dropped;
                if !d.days.is_empty() || !d.key_generations.is_empty() || d.events > 0 {
                    tracing::info!(
                        days = d.days.len(),
                        events = d.events,
                        key_generations = d.key_generations.len(),
                        "dropped processed events past the retention"
                    );
                }
                if report.dead > 0 {
                    tracing::info!(
                        events = report.dead,
                        archive = ?report.archive,
                        "dropped dead events past HOOKD_DLQ_RETENTION"
                    );
                }
                if let Some(generation) = report.prepared.key_generation {
                    tracing::info!(generation, "started a new generation of idempotency keys");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention could not run; trying again later"),
        }
        rounds = rounds.wrapping_add(1);
    }
}
