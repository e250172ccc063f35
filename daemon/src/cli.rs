//! The command line: `hookd [serve]`, `migrate`, `send`, `dlq ...`.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::Source;
use common::db::archive::{self, Actor, ArchiveTarget};
use common::db::dlq::{self, DeadFilter, PurgeFilter, PurgePreview, PurgeToken};
use common::db::selection::{self, Preview, Selection, Token, Verdict};
use common::db::{clusters, events};
use serde_json::json;
use sqlx::PgPool;

use crate::send::SendArgs;

#[derive(Debug, Parser)]
#[command(
    name = "hookd",
    version,
    about = "Receives, verifies, stores and processes webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook receiver and the workers (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Sign and send a realistic sample event to a running hookd.
    Send(SendArgs),
    /// Inspect and recover the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Look up stored events, in any state.
    #[command(subcommand)]
    Events(EventsCommand),
    /// What is retained, and dropping what is past it now.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Print fresh random development secrets as shell `export` lines.
    #[command(hide = true)]
    DevSecrets,
    /// Print the completion script for a shell, from this very command line.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (hookd.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Man { dir: std::path::PathBuf },
    /// Print the admin API's OpenAPI document, as docs/openapi.json holds it.
    #[command(hide = true)]
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead events, newest first.
    List {
        #[arg(long)]
        source: Option<Source>,
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Dead events grouped by source, type and cause, the largest groups first.
    Clusters {
        /// At most this many groups.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=500))]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send one dead event back to the queue with a fresh attempt budget.
    Retry {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send dead events back to the queue: all of them, or those a filter or a cluster
    /// selects. What is retried is exactly what the preview counted: events that die after
    /// it are left dead, and those retried meanwhile are skipped and reported.
    RetryAll {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Print the preview (count, breakdown by type, token) and change nothing.
        #[arg(long, conflicts_with = "token")]
        dry_run: bool,
        /// Act on exactly the set a `--dry-run` previewed.
        #[arg(long, conflicts_with_all = ["source", "event_type", "matching", "cluster"])]
        token: Option<String>,
        /// Retry only this many of the newest first, watch them until hookd has processed
        /// them, and print the token for the rest when they all succeeded.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1000),
              conflicts_with = "dry_run")]
        canary: Option<i64>,
        /// How long to watch a canary before giving up.
        #[arg(long, value_parser = parse_age, default_value = "2m")]
        canary_timeout: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Delete dead events that died longer ago than the given age (e.g. 7d, 12h), or the
    /// superseded ones. They are first written with their attempts to an archive in
    /// HOOKD_ARCHIVE_DIR (a purge whose archive cannot be written deletes nothing), and the
    /// purge is recorded in audit_logs with the archive's path and SHA-256.
    Purge {
        #[arg(long, value_parser = parse_age,
              required_unless_present_any = ["superseded", "token"])]
        older_than: Option<Duration>,
        /// Only superseded dead events: Stripe events whose customer already has newer state
        /// applied, which a retry would not change.
        #[arg(long)]
        superseded: bool,
        /// Print the preview (count, breakdown by type, superseded, token) and delete nothing.
        #[arg(long, conflicts_with = "token")]
        dry_run: bool,
        /// Purge exactly the set a `--dry-run` previewed: events that died after it are kept,
        /// those retried meanwhile are skipped and reported.
        #[arg(long, conflicts_with_all = ["older_than", "superseded"])]
        token: Option<String>,
        /// Purge even with an age under 1h.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Bring the events of a purge archive back as dead events, with their attempts. An event
    /// that is stored already is skipped and reported, so restoring twice is harmless.
    Restore {
        /// The archive a purge wrote (`dlq-purge-*.ndjson.gz`).
        archive: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Which dead events a bulk retry is for; none of them: all.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SelectionArgs {
    #[arg(long)]
    source: Option<Source>,
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Case-insensitive text in the event type, provider event id or last error.
    #[arg(long = "match", value_name = "TEXT")]
    matching: Option<String>,
    /// The error cluster of this dead event (a `sample` of `hookd dlq clusters`).
    #[arg(long, value_name = "ID", conflicts_with_all = ["source", "event_type", "matching"])]
    cluster: Option<i64>,
}

impl SelectionArgs {
    async fn resolve(self, pool: &PgPool) -> anyhow::Result<Selection> {
        if let Some(id) = self.cluster {
            let key = clusters::key_of(pool, id)
                .await?
                .with_context(|| format!("event {id} is not dead, so it names no cluster"))?;
            return Ok(Selection::cluster(&key));
        }
        Ok(Selection::matching(
            self.source,
            self.event_type,
            self.matching,
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// One event with its attempt history, by hookd's id or the provider's event id.
    Show {
        /// hookd's numeric id, or the provider's event id (evt_..., a Telnyx UUID, msg_...).
        key: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// The retention in force: windows, days of processed events kept, key generations.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// What the background job does once: days made ready ahead, what is past the windows
    /// dropped (dead events past HOOKD_DLQ_RETENTION archived first).
    Run {
        /// Only say what would be dropped.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The oldest age accepted: older than anything hookd has stored, and well inside what
/// PostgreSQL can subtract from `now()`.
const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Ages such as `7d`, `36h`, `90m`, as the admin API and the CLI accept them.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text.trim())
        .map_err(|e| format!("expected an age such as 7d or 12h: {e}"))?;
    if age > MAX_AGE {
        return Err("expected an age such as 7d or 12h, of at most 100 years".into());
    }
    Ok(age)
}

/// A purge of events that died less than this long ago needs `--force` (`force=true` in the
/// admin API). It empties the dead-letter queue for good, and the idempotency keys outlive
/// the events, so what the providers resend of them is answered as a duplicate and never
/// processed: with a recent age that is likely a typo or a panic, not a cleanup.
pub const PURGE_FORCE_BELOW: Duration = Duration::from_secs(3_600);

/// Whether purging events older than `age` needs to be forced.
pub fn purge_needs_force(age: Duration) -> bool {
    age < PURGE_FORCE_BELOW
}

fn chrono_age(age: Duration) -> anyhow::Result<chrono::Duration> {
    chrono::Duration::from_std(age).context("age is too large")
}

/// Runs a `dlq` subcommand and returns what to print.
pub async fn dlq(pool: &PgPool, command: DlqCommand) -> anyhow::Result<String> {
    Ok(match command {
        DlqCommand::List {
            source,
            event_type,
            limit,
            json,
        } => {
            let filter = DeadFilter {
                source,
                event_type,
                limit,
                ..DeadFilter::default()
            };
            let dead = dlq::list(pool, &filter).await?;
            if json {
                serde_json::to_string_pretty(&dead)?
            } else if dead.is_empty() {
                "the dead-letter queue is empty".to_owned()
            } else {
                // `superseded`: newer state of its object is applied, a retry changes nothing.
                let mut out = format!(
                    "{:>8}  {:<6}  {:<32}  {:>8}  {:<20}  {:<10}  last error\n",
                    "id", "source", "type", "attempts", "died", "superseded"
                );
                for e in dead {
                    out.push_str(&format!(
                        "{:>8}  {:<6}  {:<32}  {:>8}  {:<20}  {:<10}  {}\n",
                        e.id,
                        e.source,
                        e.event_type,
                        e.attempts,
                        e.dead_at.format("%Y-%m-%d %H:%M:%S"),
                        if e.superseded { "yes" } else { "" },
                        e.last_error.unwrap_or_default().replace('\n', " "),
                    ));
                }
                out.trim_end().to_owned()
            }
        }
        DlqCommand::Clusters { limit, json } => {
            let found = clusters::list(pool, limit).await?;
            if json {
                serde_json::to_string_pretty(&found)?
            } else if found.is_empty() {
                "the dead-letter queue is empty".to_owned()
            } else {
                // The sample is an event to `dlq retry` or look up; the cause is what its
                // error has in common with the rest.
                let mut out = format!(
                    "{:>8}  {:>10}  {:<6}  {:<32}  {:<20}  {:<20}  {:>8}  cause\n",
                    "count", "superseded", "source", "type", "first death", "last death", "sample"
                );
                for c in found {
                    out.push_str(&format!(
                        "{:>8}  {:>10}  {:<6}  {:<32}  {:<20}  {:<20}  {:>8}  {}\n",
                        c.count,
                        c.superseded,
                        c.source,
                        c.event_type,
                        c.first_death.format("%Y-%m-%d %H:%M:%S"),
                        c.last_death.format("%Y-%m-%d %H:%M:%S"),
                        c.sample_id,
                        c.fingerprint.replace('\n', " "),
                    ));
                }
                out.trim_end().to_owned()
            }
        }
        DlqCommand::Retry { id, json } => {
            dlq::retry(pool, id).await?;
            if json {
                json!({ "retried": 1, "id": id }).to_string()
            } else {
                format!("event {id} sent back to the queue")
            }
        }
        DlqCommand::RetryAll {
            selection: chosen,
            dry_run,
            token,
            canary,
            canary_timeout,
            json,
        } => {
            let token = match token {
                Some(text) => Token::decode(&text)?,
                None => {
                    let preview = selection::preview(pool, &chosen.resolve(pool).await?).await?;
                    if dry_run {
                        return show_preview(&preview, json);
                    }
                    preview.token
                }
            };
            if let Some(n) = canary {
                return canary_run(pool, &token, n, canary_timeout, json).await;
            }
            let done = selection::retry(pool, &token).await?;
            if json {
                serde_json::to_string(&done)?
            } else {
                format!("{done} ({})", token.selection.describe())
            }
        }
        DlqCommand::Purge {
            older_than,
            superseded,
            dry_run,
            token,
            force,
            json,
        } => {
            let token = match token {
                Some(text) => PurgeToken::decode(&text)?,
                None => {
                    let filter = PurgeFilter {
                        older_than_secs: older_than
                            .map(|age| chrono_age(age).map(|a| a.num_seconds()))
                            .transpose()?,
                        superseded,
                    };
                    if dry_run {
                        let preview = dlq::purge_preview(pool, &filter).await?;
                        return show_purge_preview(&preview, json);
                    }
                    PurgeToken::unbounded(filter)
                }
            };
            let age = token
                .filter
                .older_than_secs
                .map(|s| Duration::from_secs(s.max(0).unsigned_abs()));
            if age.is_some_and(purge_needs_force) && !force {
                anyhow::bail!(
                    "refusing to purge with an age under {}: purged events are gone for good, \
                     and the providers' resends of them would be dropped as duplicates; \
                     pass --force to purge anyway",
                    humantime::format_duration(PURGE_FORCE_BELOW)
                );
            }
            let sources = crate::config::Sources::from_process()?;
            let target = ArchiveTarget::from(crate::config::archive_dir(&sources)?);
            let receipt = archive::purge(pool, &token, &target, &Actor::os_user("cli")).await?;
            if json {
                return Ok(serde_json::to_string(&receipt)?);
            }
            // The first line as it was before purges archived, for scripts that read it.
            let what = if token.filter.superseded {
                "superseded dead events"
            } else {
                "dead events"
            };
            let mut out = format!("purged {} {what}", receipt.purged);
            if let Some(age) = age {
                out.push_str(&format!(" older than {}", humantime::format_duration(age)));
            }
            match receipt.skipped {
                0 => {}
                1 => out.push_str("; 1 had changed since the preview (retried or purged)"),
                n => out.push_str(&format!(
                    "; {n} had changed since the preview (retried or purged)"
                )),
            }
            match (&receipt.archive, &receipt.sha256) {
                (Some(path), Some(sha)) => {
                    out.push_str(&format!("\narchive {} (sha256 {sha})", path.display()));
                }
                _ => out.push_str("\nno archive (HOOKD_ARCHIVE_DIR=off)"),
            }
            out
        }
        DlqCommand::Restore {
            archive: path,
            json,
        } => {
            let done = archive::restore(pool, &path, &Actor::os_user("cli")).await?;
            if json {
                serde_json::to_string(&done)?
            } else {
                done.to_string()
            }
        }
    })
}

fn show_purge_preview(preview: &PurgePreview, json: bool) -> anyhow::Result<String> {
    let token = preview.token.encode();
    if json {
        return Ok(json!({
            "filter": preview.token.filter,
            "count": preview.count(),
            "superseded": preview.superseded,
            "by_type": preview.by_type,
            "token": token,
        })
        .to_string());
    }
    let mut out = format!(
        "{} {} to purge: {} ({} superseded)\n",
        preview.count(),
        if preview.count() == 1 { "is" } else { "are" },
        preview.token.filter.describe(),
        preview.superseded,
    );
    for t in &preview.by_type {
        out.push_str(&format!(
            "{:>8}  {:<6}  {:<32}  {} superseded\n",
            t.count, t.source, t.event_type, t.superseded
        ));
    }
    out.push_str(&format!(
        "nothing was deleted; to purge exactly these (archived first):\n  \
         hookd dlq purge --token {token}"
    ));
    Ok(out)
}

fn show_preview(preview: &Preview, json: bool) -> anyhow::Result<String> {
    let token = preview.token.encode();
    if json {
        return Ok(json!({
            "selection": preview.token.selection,
            "count": preview.count(),
            "by_type": preview.by_type,
            "token": token,
        })
        .to_string());
    }
    let mut out = format!(
        "{} {}: {}\n",
        preview.count(),
        if preview.count() == 1 { "is" } else { "are" },
        preview.token.selection.describe()
    );
    for t in &preview.by_type {
        out.push_str(&format!(
            "{:>8}  {:<6}  {}\n",
            t.count, t.source, t.event_type
        ));
    }
    out.push_str(&format!(
        "nothing was changed; to retry exactly these:\n  hookd dlq retry-all --token {token}"
    ));
    Ok(out)
}

/// Retries `n` of the token's events, follows them until hookd has processed each (progress
/// on stderr), and stops there: the rest only when every canary succeeded.
async fn canary_run(
    pool: &PgPool,
    token: &Token,
    n: i64,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<String> {
    let ids = selection::canary(pool, token, n).await?;
    if ids.is_empty() {
        anyhow::bail!("no event of the preview is still dead: nothing to try");
    }
    eprintln!(
        "canary: retried {} of the {} previewed ({:?}); waiting for hookd to process them",
        ids.len(),
        token.count,
        ids
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown = String::new();
    let (verdict, progress) = loop {
        let progress = selection::states(pool, &ids).await?;
        let verdict = selection::verdict(&ids, &progress);
        let line: Vec<String> = progress
            .iter()
            .map(|p| format!("{} {}", p.id, p.state))
            .collect();
        let line = line.join(", ");
        if line != shown {
            eprintln!("canary: {line}");
            shown = line;
        }
        if verdict != Verdict::Running || tokio::time::Instant::now() >= deadline {
            break (verdict, progress);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rest = token.encode();
    if json {
        return Ok(json!({
            "canary": progress,
            "verdict": verdict,
            "token": (verdict == Verdict::Succeeded).then_some(rest),
        })
        .to_string());
    }
    match verdict {
        Verdict::Succeeded => Ok(format!(
            "canary succeeded: all {} were processed; to retry the other {} of the preview:\n  \
             hookd dlq retry-all --token {rest}",
            ids.len(),
            (token.count - ids.len() as i64).max(0)
        )),
        Verdict::Failed => {
            let failed: Vec<String> = progress
                .iter()
                .filter(|p| p.failed())
                .map(|p| {
                    format!(
                        "  {} {}: {}",
                        p.id,
                        p.state,
                        p.last_error.as_deref().unwrap_or("").replace('\n', " ")
                    )
                })
                .collect();
            anyhow::bail!(
                "canary failed again; the rest was not retried:\n{}",
                failed.join("\n")
            )
        }
        Verdict::Running => anyhow::bail!(
            "canary still not processed after {}; the rest was not retried (is hookd running?)",
            humantime::format_duration(timeout)
        ),
    }
}

/// Runs an `events` subcommand and returns what to print; an unknown key is an error.
pub async fn events(pool: &PgPool, command: EventsCommand) -> anyhow::Result<String> {
    let EventsCommand::Show { key, json } = command;
    let found = events::find(pool, &key).await?;
    if found.is_empty() {
        anyhow::bail!("no stored event has the id or provider event id {key:?}");
    }
    let mut shown = Vec::with_capacity(found.len());
    for event in found {
        let attempts = events::attempts(pool, event.id).await?;
        // None unless dead: only a dead event can be superseded.
        let superseded = dlq::superseded(pool, event.id).await?;
        shown.push((event, attempts, superseded));
    }
    if json {
        let all: Vec<_> = shown
            .iter()
            .map(|(event, attempts, superseded)| {
                json!({
                    "event": event,
                    "attempts": attempts,
                    "superseded": superseded.unwrap_or(false),
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&all)?);
    }
    let mut out = String::new();
    for (e, attempts, superseded) in shown {
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or("-".to_owned(), |t| {
                t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
            })
        };
        out.push_str(&format!(
            "event {}: {} {} ({})\n  state      {} after {} attempt(s)\n  received   {}\n  \
             processed  {}\n  died       {}\n",
            e.id,
            e.source,
            e.event_type,
            e.event_id,
            e.state,
            e.attempts,
            time(Some(e.received_at)),
            time(e.processed_at),
            time(e.dead_at),
        ));
        if let Some(error) = &e.last_error {
            out.push_str(&format!("  last error {}\n", error.replace('\n', " ")));
        }
        if superseded == Some(true) {
            out.push_str(
                "  superseded newer state of its customer is applied: a retry changes nothing\n",
            );
        }
        for a in &attempts {
            out.push_str(&format!(
                "  attempt {:>2}  {}  {:>6} ms  {:<9}  {}\n",
                a.attempt,
                a.started_at.format("%Y-%m-%d %H:%M:%S"),
                a.duration_ms,
                a.outcome,
                a.error.as_deref().unwrap_or("").replace('\n', " "),
            ));
        }
        out.push_str(&format!(
            "  payload\n{}\n\n",
            serde_json::to_string_pretty(&e.payload)?
        ));
    }
    Ok(out.trim_end().to_owned())
}

/// Runs a `retention` subcommand and returns what to print.
pub async fn retention(
    pool: &PgPool,
    settings: &crate::retention::Settings,
    command: RetentionCommand,
) -> anyhow::Result<String> {
    match command {
        RetentionCommand::Status { json } => {
            let status = common::db::retention::status(pool).await?;
            Ok(if json {
                serde_json::to_string_pretty(&status)?
            } else {
                status.to_string()
            })
        }
        RetentionCommand::Run { dry_run } => {
            Ok(crate::retention::run_once(pool, settings, dry_run)
                .await?
                .to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_like_operators_write_them() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert!(parse_age("seven days").is_err());
        assert!(parse_age("").is_err());
        assert!(parse_age("300000y").is_err());
    }

    #[test]
    fn only_purges_of_an_hour_or_more_go_unforced() {
        for age in ["0s", "5m", "59m", "59m 59s"] {
            assert!(purge_needs_force(parse_age(age).unwrap()), "{age}");
        }
        for age in ["1h", "60m", "7d"] {
            assert!(!purge_needs_force(parse_age(age).unwrap()), "{age}");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
