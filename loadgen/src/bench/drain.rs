//! Stage 3: a backlog of pending events, stored through ingest's own statement with the bodies
//! ingest sends, drained by a freshly started hookd whose built-in handlers do real work; timed
//! from hookd's start to the last event's `processed_at`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::PgPool;

use super::pgbench::Baseline;
use super::procs::Hookd;
use super::summary::{Summary, median, mib};
use super::{Bench, Stage, heading, pg};
use crate::{db, payload};

const DATABASE: &str = "bench_drain";
/// As the measurement: Stripe events for 1,000 linked businesses, so batches of
/// different workers meet on the same business rows as in production.
const BUSINESSES: u64 = 1_000;

struct Drained {
    rate: f64,
    failed_attempts: u64,
    not_succeeded: i64,
    peak_rss_kib: Option<u64>,
}

pub async fn stage(
    bench: &Bench,
    baseline: &mut Baseline,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let o = &bench.options;
    if !o.runs_stage(Stage::Drain) {
        return Ok(());
    }
    heading(&format!(
        "3. drain of a {}-event backlog through the built-in handlers",
        o.backlog
    ));
    let (runs, ratios) = baseline
        .paired(
            bench,
            "drain",
            async |r| one(bench, r).await,
            |run| run.rate,
        )
        .await?;
    let d = &mut summary.drain;
    d.rate = median(&runs.iter().map(|r| r.rate).collect::<Vec<_>>());
    d.ratio = median(&ratios);
    d.ratios = ratios;
    d.failed_attempts = Some(runs.iter().map(|r| r.failed_attempts).sum());
    d.not_succeeded = Some(runs.iter().map(|r| r.not_succeeded).sum());
    summary.memory.drain_mib = mib(runs.iter().filter_map(|r| r.peak_rss_kib).max());
    bench.pg.drop_database(DATABASE).await
}

async fn one(bench: &Bench, r: usize) -> anyhow::Result<Drained> {
    let o = &bench.options;
    let pool = bench.pg.fresh(DATABASE).await?;
    let generator = payload::Generator {
        keys: payload::Keys::new(None, None, None)?,
        ids: payload::Ids::new(),
        businesses: BUSINESSES,
        business_ids: db::ensure_businesses(&pool, BUSINESSES).await?,
    };
    let stored = db::seed_backlog(&pool, &generator, &o.drain_mix, o.backlog).await?;
    pg::exec(&pool, "VACUUM ANALYZE").await?;
    let diagnose = o.diagnose && r == 1;
    if diagnose {
        pg::exec(&pool, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await?;
        pg::exec(&pool, "SELECT pg_stat_statements_reset()").await?;
    }
    bench.pg.checkpoint().await?;

    let t0 = epoch_secs();
    let hookd = Hookd::start(bench, DATABASE, &format!("hookd-drain-{r}.log"), &[]).await?;
    let cpu0 = hookd.cpu_secs();
    let limit = if o.quick { 180.0 } else { 600.0 };
    let mut peak = None;
    let mut waits = BTreeMap::new();
    while pg::backlog_left(&pool).await? {
        peak = hookd.peak_rss_kib().or(peak);
        if epoch_secs() - t0 > limit {
            eprintln!("  (backlog not drained after {limit} s; giving up)");
            break;
        }
        if diagnose {
            sample_waits(&pool, &mut waits).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let peak_rss_kib = hookd.peak_rss_kib().or(peak);
    let hookd_cpu_secs = hookd.cpu_secs() - cpu0;
    let failed_batches = hookd.log_lines("batch failed");
    hookd.stop().await?;

    // The end as PostgreSQL saw it, not when the poll noticed.
    let (t1, done): (Option<f64>, i64) = sqlx::query_as(
        "SELECT extract(epoch FROM max(processed_at))::float8, count(processed_at) FROM events",
    )
    .fetch_one(&pool)
    .await?;
    let secs = t1.context("nothing was processed")? - t0;
    let rate = done as f64 / secs;
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM events GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await?;
    let not_succeeded = states
        .iter()
        .filter(|(s, _)| s != "succeeded")
        .map(|(_, n)| n)
        .sum();
    let failed = pg::count(
        &pool,
        "SELECT count(*) FROM event_attempts WHERE outcome <> 'succeeded'",
    )
    .await?;
    if diagnose {
        diagnostics(bench, &pool, done, hookd_cpu_secs, &waits).await?;
    }
    pool.close().await;
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{s}={n}")).collect();
    eprintln!(
        "  run {r}: {stored} stored, drained in {secs:.2} s  {rate:.1} events/s  ({}; failed attempts {failed}; \
         failed batches {failed_batches}; hookd peak RSS {:.1} MiB)",
        states.join(" "),
        mib(peak_rss_kib).unwrap_or(0.0)
    );
    Ok(Drained {
        rate,
        failed_attempts: failed.unsigned_abs(),
        not_succeeded,
        peak_rss_kib,
    })
}

/// What hookd's backends are doing right now, added to `seen`.
async fn sample_waits(pool: &PgPool, seen: &mut BTreeMap<String, u64>) -> anyhow::Result<()> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU') || ' ' || state
         FROM pg_stat_activity WHERE application_name = 'hookd' AND state <> 'idle'",
    )
    .fetch_all(pool)
    .await
    .context("sampling wait events")?;
    for row in rows {
        *seen.entry(row).or_insert(0) += 1;
    }
    Ok(())
}

/// `--diagnose`: the drain's budget per processed event (statements, which are round trips
/// since hookd does not pipeline, PostgreSQL's execution time, WAL, hookd's CPU) and what
/// hookd's backends waited on, into the run directory.
async fn diagnostics(
    bench: &Bench,
    pool: &PgPool,
    done: i64,
    hookd_cpu_secs: f64,
    waits: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let per = |x: f64| x / done.max(1) as f64;
    let statements: Vec<(i64, i64, f64, f64, f64, String)> = sqlx::query_as(
        "SELECT calls, rows, round(total_exec_time::numeric, 1)::float8,
                round(mean_exec_time::numeric, 3)::float8, wal_bytes::float8,
                left(regexp_replace(query, '\\s+', ' ', 'g'), 140)
         FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_activity%' AND query NOT LIKE '%pg_stat_statements%'
         ORDER BY total_exec_time DESC",
    )
    .fetch_all(pool)
    .await
    .context("reading pg_stat_statements")?;
    let calls: i64 = statements.iter().map(|s| s.0).sum();
    let exec_ms: f64 = statements.iter().map(|s| s.2).sum();
    let wal: f64 = statements.iter().map(|s| s.4).sum();
    let mut text = format!(
        "{done} events processed; per event: {:.2} statements, {:.1} us of PostgreSQL execution, \
         {:.0} WAL bytes, {:.1} us of hookd CPU\n\n    calls/event     calls      rows   total ms   mean ms  query\n",
        per(calls as f64),
        per(exec_ms * 1000.0),
        per(wal),
        per(hookd_cpu_secs * 1e6),
    );
    for (calls, rows, total, mean, _, q) in &statements {
        text.push_str(&format!(
            "{:>15.3} {calls:>9} {rows:>9} {total:>10.1} {mean:>9.3}  {q}\n",
            per(*calls as f64)
        ));
    }
    let mut by_count: Vec<(&String, &u64)> = waits.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    text.push_str("\nhookd's backends, sampled every 100 ms:\n");
    for (w, n) in by_count {
        text.push_str(&format!("{n:7} {w}\n"));
    }
    std::fs::write(bench.file("drain-profile.txt"), &text)?;
    eprintln!(
        "  diagnostics: drain-profile.txt ({:.2} statements, {:.1} us of hookd CPU per event)",
        per(calls as f64),
        per(hookd_cpu_secs * 1e6)
    );
    Ok(())
}

pub(super) fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
