//! Stage 4: hooktop's refresh at each history size, and hooktop's memory as the real dashboard.
//!
//! History is loaded through `common::db::bulk` (hookd's own tables, triggers and counters at
//! each row's time), spread over the last 30 days, 16 event types over three sources, mostly
//! succeeded, the unhandled type skipped. Only the first size brings dead and retrying events;
//! later sizes add settled history only, so what grows between sizes is history alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use common::Source;
use common::db::bulk::{self, Fate, PastEvent};
use common::db::events::NewEvent;
use sqlx::PgPool;

use super::pgbench::Baseline;
use super::summary::{Refresh, Summary, median, mib};
use super::{Bench, Stage, heading, ingest, machine, pg, procs};
use crate::db;

const DATABASE: &str = "bench_history";
/// Rows per load transaction, and loads in flight.
const CHUNK: u64 = 5_000;
const LOADERS: u64 = 4;

/// Source, type and whether a handler takes it: row g has `TYPES[g % 16]`.
const TYPES: [(Source, &str, bool); 16] = [
    (Source::Stripe, "invoice.payment_succeeded", true),
    (Source::Stripe, "invoice.payment_failed", true),
    (Source::Stripe, "customer.subscription.created", true),
    (Source::Stripe, "customer.subscription.updated", true),
    (Source::Stripe, "customer.subscription.deleted", true),
    (Source::Telnyx, "call.initiated", true),
    (Source::Telnyx, "call.answered", true),
    (Source::Telnyx, "call.hangup", true),
    (Source::Telnyx, "message.received", true),
    (Source::Telnyx, "message.sent", true),
    (Source::Telnyx, "message.finalized", true),
    (Source::Custom, "order.created", true),
    (Source::Custom, "order.fulfilled", true),
    (Source::Custom, "appointment.booked", true),
    (Source::Custom, "review.posted", true),
    (Source::Stripe, "charge.refunded", false),
];

/// One in `dead_every` rows is dead and one in `retry_every` retrying (`None`: none).
#[derive(Clone, Copy)]
struct Mix {
    dead_every: Option<u64>,
    retry_every: Option<u64>,
}

pub async fn stage(
    bench: &Bench,
    baseline: &mut Baseline,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    if !bench.options.runs_stage(Stage::Refresh) {
        return Ok(());
    }
    let pool = bench.pg.fresh(DATABASE).await?;
    let mut loaded = 0;
    for (i, &size) in bench.options.history.iter().enumerate() {
        heading(&format!("4. hooktop refresh at {size} stored events"));
        let mix = if i == 0 {
            Mix {
                dead_every: Some(400),
                retry_every: Some(100_003),
            }
        } else {
            Mix {
                dead_every: None,
                retry_every: None,
            }
        };
        let started = Instant::now();
        load_history(&pool, loaded + 1, size, mix).await?;
        loaded = size;
        settle(bench, &pool).await?;
        eprintln!(
            "  loaded in {:.1} s: {} events, {} dead, {} counter rows, {}",
            started.elapsed().as_secs_f64(),
            pg::count(&pool, "SELECT count(*) FROM events").await?,
            pg::count(&pool, "SELECT count(*) FROM events WHERE state = 'dead'").await?,
            pg::count(&pool, "SELECT count(*) FROM stats_minute").await?,
            sqlx::query_scalar::<_, String>(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            )
            .fetch_one(&pool)
            .await?
        );
        summary.refresh.push(measure(bench, size).await?);
        if i == 0 {
            summary.memory.hooktop_mib = mib(hooktop_peak_rss(bench).await?);
        }
    }
    heading(&format!(
        "4b. receive-only hookd on top of those {loaded} events: {} connections, closed loop",
        bench.options.concurrency
    ));
    summary.receive_history = ingest::receive_on_history(bench, baseline, DATABASE).await?;
    summary.history_events = Some(loaded);
    pool.close().await;
    if let (Some(first), Some(last)) = (summary.refresh.first(), summary.refresh.last()) {
        summary.refresh_growth = last.ms.zip(first.ms).map(|(l, f)| l / f);
    }
    bench.pg.drop_database(DATABASE).await
}

/// Rows `from..=to`, in chunks, a few transactions at a time.
async fn load_history(pool: &PgPool, from: u64, to: u64, mix: Mix) -> anyhow::Result<()> {
    let now = Utc::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(from));
    let mut loaders = tokio::task::JoinSet::new();
    for _ in 0..LOADERS {
        let (pool, next) = (pool.clone(), next.clone());
        loaders.spawn(async move {
            loop {
                let lo = next.fetch_add(CHUNK, std::sync::atomic::Ordering::Relaxed);
                if lo > to {
                    return anyhow::Ok(());
                }
                let rows: Vec<PastEvent> = (lo..=(lo + CHUNK - 1).min(to))
                    .map(|g| history_row(g, mix, now))
                    .collect::<anyhow::Result<_>>()?;
                bulk::load(&pool, &rows).await.context("loading history")?;
            }
        });
    }
    while let Some(done) = loaders.join_next().await {
        done??;
    }
    Ok(())
}

/// Row g as hookd would have left it. Times follow a golden-ratio sequence over 30 days, so
/// every load covers the whole span and a top-up makes history denser, as more traffic would.
fn history_row(g: u64, mix: Mix, now: chrono::DateTime<Utc>) -> anyhow::Result<PastEvent> {
    let (source, kind, handled) = TYPES[(g % 16) as usize];
    let spread = (g as f64 * 0.618_033_988_7).fract();
    let received_at = now - TimeDelta::seconds((30.0 * 86_400.0 * (1.0 - spread)) as i64);
    let is = |every: Option<u64>, at: u64| every.is_some_and(|n| g % n == at);
    let error = "no business is linked to customer cus_unknown";
    let (fate, attempts, last_error) = if is(mix.dead_every, 7) {
        let at = received_at + TimeDelta::minutes(15);
        (Fate::Dead { at }, 4, Some(error))
    } else if is(mix.retry_every, 11) {
        let at = received_at + TimeDelta::minutes(1);
        let next = now + TimeDelta::minutes(10);
        (Fate::Retrying { at, next }, 2, Some(error))
    } else {
        let at = received_at + TimeDelta::milliseconds(40);
        let fate = if handled {
            Fate::Succeeded { at }
        } else {
            Fate::Skipped { at }
        };
        (fate, 1, None)
    };
    let id = format!("hist_{g:010}");
    let body = format!(
        r#"{{"id":"{id}","type":"{kind}","data":{{"object":{{"id":"obj_{g}","livemode":false}}}}}}"#
    );
    Ok(PastEvent {
        event: NewEvent {
            source,
            event_id: common::ProviderEventId::parse(id).context("history event id")?,
            event_type: common::EventType::parse(kind).context("history event type")?,
            body: body.into_bytes(),
            jsonb_checked: false,
        },
        received_at,
        fate,
        attempts,
        last_error: last_error.map(str::to_owned),
    })
}

/// The steady state of a hookd that wrote this history over a month: counter shards folded
/// (hookd's own compaction), counters in time order on disk as hookd appends them, statistics
/// current, no dirty buffers.
async fn settle(bench: &Bench, pool: &PgPool) -> anyhow::Result<()> {
    common::db::stats::compact(pool, TimeDelta::zero()).await?;
    pg::exec(pool, "CLUSTER stats_minute USING stats_minute_pkey").await?;
    pg::exec(pool, "VACUUM ANALYZE events").await?;
    pg::exec(pool, "VACUUM ANALYZE stats_minute").await?;
    bench.pg.checkpoint().await
}

/// hooktop's own refresh, median of 30, `--runs` times; loadgen's per-query reading beside it.
async fn measure(bench: &Bench, size: u64) -> anyhow::Result<Refresh> {
    let url = bench.pg.url(DATABASE);
    let mut medians = Vec::new();
    if let Some(hooktop) = &bench.hooktop {
        for r in 1..=bench.options.runs {
            let (text, ms) = procs::hooktop_refresh(hooktop, &url, 30).await?;
            std::fs::write(
                bench.file(&format!("refresh-hooktop-{size}-{r}.txt")),
                &text,
            )?;
            eprintln!("  run {r}: hooktop --bench-refresh 30: median {ms:.2} ms");
            medians.push(ms);
        }
    }
    let pool = db::pool(&url, 4).await?;
    let report = db::refresh_bench(&pool, 30).await?;
    pool.close().await;
    let text = report.human();
    std::fs::write(bench.file(&format!("refresh-loadgen-{size}.txt")), &text)?;
    for line in text.lines() {
        eprintln!("  {line}");
    }
    if medians.is_empty() {
        medians.push(report.median_ms);
    }
    Ok(Refresh {
        events: size,
        ms: median(&medians),
        queries: report.queries,
    })
}

/// The real dashboard in a detached tmux session for a few seconds: its peak RSS in KiB.
/// `None` without tmux or hooktop.
async fn hooktop_peak_rss(bench: &Bench) -> anyhow::Result<Option<u64>> {
    let Some(hooktop) = &bench.hooktop else {
        return Ok(None);
    };
    let socket = format!("hookd-bench-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let mut command = tokio::process::Command::new("tmux");
        command
            .arg("-L")
            .arg(&socket)
            .args(args)
            .stderr(std::process::Stdio::null());
        command
    };
    let url = format!("DATABASE_URL={}", bench.pg.url(DATABASE));
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "bench",
        "-x",
        "160",
        "-y",
        "48",
        "env",
        &url,
    ])
    .arg(hooktop)
    .arg("--no-notify")
    .status()
    .await;
    if !started.is_ok_and(|s| s.success()) {
        eprintln!("  (no tmux: hooktop's memory is not measured)");
        return Ok(None);
    }
    let watch = if bench.options.quick { 4 } else { 6 };
    tokio::time::sleep(Duration::from_secs(watch)).await;
    let panes = tmux(&["list-panes", "-t", "bench", "-F", "#{pane_pid}"])
        .output()
        .await?;
    let pid: Option<u32> = String::from_utf8_lossy(&panes.stdout).trim().parse().ok();
    let peak = pid.and_then(machine::peak_rss_kib);
    let screen = tmux(&["capture-pane", "-p", "-t", "bench"])
        .output()
        .await?;
    std::fs::write(bench.file("hooktop-screen.txt"), &screen.stdout)?;
    let _ = tmux(&["send-keys", "-t", "bench", "q"]).status().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = tmux(&["kill-server"]).status().await;
    eprintln!(
        "  hooktop dashboard in tmux for {watch} s: peak RSS {:.1} MiB",
        mib(peak).unwrap_or(0.0)
    );
    Ok(peak)
}
