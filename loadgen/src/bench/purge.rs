//! Stage 5: `hookd dlq purge --older-than 7d` of N dead events, 8 to 30 days old with the four
//! attempts hookd leaves each, plus 10,000 recent dead events that must survive, while loadgen
//! sends at a fixed rate: the purge is timed, and ingest must keep answering meanwhile.
//!
//! The dead-letter queue is loaded once through `common::db::bulk` into a template, and each run
//! purges a file-level copy of it. The timed runs purge with `HOOKD_ARCHIVE_DIR=off`: the
//! target is about dropping the days. One more purge of a fresh copy writes the archive first,
//! as hookd does by default, and its time is reported beside the target.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use common::Source;
use common::db::bulk::{self, Fate, PastEvent};
use common::db::events::NewEvent;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::ingest::describe;
use super::procs::{self, Hookd};
use super::summary::{Summary, median};
use super::{Bench, Stage, heading, pg};
use crate::drive;

const TEMPLATE: &str = "bench_purge_tpl";
const DATABASE: &str = "bench_purge";
const RECENT: u64 = 10_000;
const CHUNK: u64 = 5_000;

pub async fn stage(bench: &Bench, summary: &mut Summary) -> anyhow::Result<()> {
    let o = &bench.options;
    if !o.runs_stage(Stage::Purge) {
        return Ok(());
    }
    heading(&format!(
        "5. purge of {} dead events older than 7 days, with ingest at {} req/s",
        o.purge, o.purge_rate
    ));
    seed_template(bench).await?;
    let (mut secs, mut p99, mut max) = (vec![], vec![], vec![]);
    let (mut failures, mut missing, mut purged, mut old_left, mut recent) = (0, 0, 0, 0, 0);
    for r in 1..=o.runs {
        bench.pg.copy(TEMPLATE, DATABASE).await?;
        bench.pg.checkpoint().await?;
        let run = one(bench, r).await?;
        secs.push(run.secs);
        p99.push(run.load.p99_ms);
        max.push(run.load.max_ms);
        failures += run.load.non_2xx + run.load.errors;
        missing += run.load.missing;
        purged += run.purged;
        old_left += run.old_left;
        recent += run.recent_kept;
    }
    let p = &mut summary.purge;
    p.secs = median(&secs);
    p.p99_ms = median(&p99);
    p.max_ms = median(&max);
    p.non_2xx_and_errors = Some(failures);
    p.missing = Some(missing);
    p.purged = Some(purged);
    p.old_left = Some(old_left);
    p.recent_kept = Some(recent);
    let (archived_secs, archive_mib) = archived(bench).await?;
    p.archived_secs = Some(archived_secs);
    p.archive_mib = Some(archive_mib);
    bench.pg.drop_database(DATABASE).await?;
    bench.pg.drop_database(TEMPLATE).await
}

struct Purged {
    secs: f64,
    purged: u64,
    old_left: i64,
    recent_kept: i64,
    load: crate::run::Report,
}

async fn one(bench: &Bench, r: usize) -> anyhow::Result<Purged> {
    let o = &bench.options;
    let hookd = Hookd::start(bench, DATABASE, &format!("hookd-purge-{r}.log"), &[]).await?;
    let stop = CancellationToken::new();
    let load = drive::Load {
        url: hookd.url(),
        connections: 8,
        duration: Some(Duration::from_secs(600)),
        requests: None,
        rate: Some(o.purge_rate),
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(10),
        mix: o.mix.clone(),
        businesses: 100,
        secrets: bench.secrets.clone(),
        database_url: Some(bench.pg.url(DATABASE)),
        check: true,
    };
    let sending = tokio::spawn(drive::load(load, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let answer = purge_cli(bench, "off").await;
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let load = sending.await?.context("the load during the purge")?;
    hookd.stop().await?;
    let answer: serde_json::Value = serde_json::from_str(&answer?)?;
    let purged = answer["purged"]
        .as_u64()
        .context("hookd dlq purge --json said no purged")?;
    std::fs::write(
        bench.file(&format!("purge-load-{r}.json")),
        serde_json::to_string(&load)?,
    )?;

    let pool = bench.pg.pool(DATABASE, 1).await?;
    let old_left = pg::count(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'dead' AND dead_at < now() - interval '7 days'",
    )
    .await?;
    let recent_kept = pg::count(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'dead' AND dead_at >= now() - interval '7 days'",
    )
    .await?;
    pool.close().await;
    eprintln!(
        "  run {r}: purged {purged} in {secs:.2} s (old dead left {old_left}, recent dead kept {recent_kept})"
    );
    eprintln!("         ingest meanwhile: {}", describe(&load));
    Ok(Purged {
        secs,
        purged,
        old_left,
        recent_kept,
        load,
    })
}

/// `hookd dlq purge --older-than 7d --json` with `HOOKD_ARCHIVE_DIR` set to `archive_dir`.
async fn purge_cli(bench: &Bench, archive_dir: &str) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(&bench.hookd)
        .args(["dlq", "purge", "--older-than", "7d", "--json"])
        .env_clear()
        .env("DATABASE_URL", bench.pg.url(DATABASE))
        .env("HOOKD_ARCHIVE_DIR", archive_dir)
        .kill_on_drop(true)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "hookd dlq purge failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The same purge of a fresh copy with the archive written first: its time in seconds and the
/// archive's size in MiB. The archive is removed afterwards.
async fn archived(bench: &Bench) -> anyhow::Result<(f64, f64)> {
    bench.pg.copy(TEMPLATE, DATABASE).await?;
    bench.pg.checkpoint().await?;
    recovery_reads(bench).await?;
    // The preview an operator takes first (`--dry-run`), timed too: it counts every candidate.
    let started = Instant::now();
    let preview = procs::hookd_cli(
        bench,
        DATABASE,
        &["dlq", "purge", "--older-than", "7d", "--dry-run", "--json"],
    )
    .await?;
    let preview: serde_json::Value = serde_json::from_str(&preview)?;
    eprintln!(
        "  purge preview: {} counted ({} superseded) in {:.2} s",
        preview["count"],
        preview["superseded"],
        started.elapsed().as_secs_f64()
    );
    let dir = bench.file("purge-archive");
    let started = Instant::now();
    let answer = purge_cli(bench, dir.to_str().context("archive dir")?).await?;
    let secs = started.elapsed().as_secs_f64();
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    let path = answer["archive"]
        .as_str()
        .context("hookd dlq purge --json named no archive")?;
    let mib = std::fs::metadata(path)?.len() as f64 / (1024.0 * 1024.0);
    eprintln!(
        "  archived purge: {} in {secs:.2} s, archive {mib:.1} MiB",
        answer["purged"]
    );
    std::fs::remove_dir_all(&dir)?;
    Ok((secs, mib))
}

/// What an on-call engineer reads first at a million dead events, each the median of three
/// runs of the command, hookd's own start and connection included: the clusters, and the
/// previews of a retry of them all and of the purge.
async fn recovery_reads(bench: &Bench) -> anyhow::Result<()> {
    let reads: [(&str, &[&str]); 3] = [
        ("dlq clusters", &["dlq", "clusters", "--json"]),
        (
            "retry-all preview",
            &["dlq", "retry-all", "--dry-run", "--json"],
        ),
        (
            "purge preview",
            &["dlq", "purge", "--older-than", "7d", "--dry-run", "--json"],
        ),
    ];
    for (what, args) in reads {
        let mut secs = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            procs::hookd_cli(bench, DATABASE, args).await?;
            secs.push(started.elapsed().as_secs_f64());
        }
        secs.sort_by(f64::total_cmp);
        eprintln!("  {what}: {:.0} ms (median of 3)", secs[1] * 1_000.0);
    }
    Ok(())
}

async fn seed_template(bench: &Bench) -> anyhow::Result<()> {
    let started = Instant::now();
    let pool = bench.pg.fresh(TEMPLATE).await?;
    let now = Utc::now();
    let n = bench.options.purge;
    let mut g = 1;
    while g <= n {
        let rows: Vec<PastEvent> = (g..=(g + CHUNK - 1).min(n))
            .map(|g| old_dead(g, now))
            .collect::<anyhow::Result<_>>()?;
        bulk::load(&pool, &rows)
            .await
            .context("loading dead events")?;
        g += CHUNK;
    }
    let recent: Vec<PastEvent> = (1..=RECENT)
        .map(|g| recent_dead(g, now))
        .collect::<anyhow::Result<_>>()?;
    for rows in recent.chunks(CHUNK as usize) {
        bulk::load(&pool, rows)
            .await
            .context("loading recent dead events")?;
    }
    pg::exec(&pool, "VACUUM ANALYZE").await?;
    report_seed(&pool, started).await?;
    // A template nobody is connected to can be copied.
    pool.close().await;
    Ok(())
}

async fn report_seed(pool: &PgPool, started: Instant) -> anyhow::Result<()> {
    eprintln!(
        "  seeded in {:.1} s: {} dead, {} attempts, {}",
        started.elapsed().as_secs_f64(),
        pg::count(pool, "SELECT count(*) FROM events WHERE state = 'dead'").await?,
        pg::count(pool, "SELECT count(*) FROM event_attempts").await?,
        sqlx::query_scalar::<_, String>(
            "SELECT pg_size_pretty(pg_database_size(current_database()))"
        )
        .fetch_one(pool)
        .await?
    );
    Ok(())
}

/// A Stripe invoice that died 8 to 30 days ago for want of its customer.
fn old_dead(g: u64, now: chrono::DateTime<Utc>) -> anyhow::Result<PastEvent> {
    let spread = (g as f64 * 0.618_033_988_7).fract();
    let dead_at = now - TimeDelta::days(8) - TimeDelta::seconds((22.0 * 86_400.0 * spread) as i64);
    let id = format!("old_dead_{g}");
    let customer = format!("cus_gone_{}", g % 977);
    let body = format!(
        r#"{{"id":"{id}","object":"event","type":"invoice.payment_failed","data":{{"object":{{"id":"in_{g}","object":"invoice","customer":"{customer}","amount_due":4900,"status":"open"}}}}}}"#
    );
    dead(
        Source::Stripe,
        id,
        "invoice.payment_failed",
        body,
        dead_at,
        format!("no business is linked to customer {customer}"),
    )
}

/// A custom event that died three days ago: younger than the cut, so it stays.
fn recent_dead(g: u64, now: chrono::DateTime<Utc>) -> anyhow::Result<PastEvent> {
    dead(
        Source::Custom,
        format!("recent_dead_{g}"),
        "order.created",
        "{}".into(),
        now - TimeDelta::days(3),
        "downstream answered 500".into(),
    )
}

/// Died at `dead_at` after four attempts over the 15 minutes since it was received.
fn dead(
    source: Source,
    id: String,
    kind: &str,
    body: String,
    dead_at: chrono::DateTime<Utc>,
    error: String,
) -> anyhow::Result<PastEvent> {
    Ok(PastEvent {
        event: NewEvent {
            source,
            event_id: common::ProviderEventId::parse(id).context("dead event id")?,
            event_type: common::EventType::parse(kind).context("dead event type")?,
            body: body.into_bytes(),
            jsonb_checked: false,
        },
        received_at: dead_at - TimeDelta::minutes(15),
        fate: Fate::Dead { at: dead_at },
        attempts: 4,
        last_error: Some(error),
    })
}
