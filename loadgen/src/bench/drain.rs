//! Stage 3: a backlog of pending events, stored through ingest's own statement with the bodies
//! ingest sends, drained by a freshly started hookd whose built-in handlers do real work; timed
//! from hookd's start to the last event's `processed_at`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::pgbench::Baseline;
use super::procs::Hookd;
use super::summary::{Summary, median, mib};
use super::{Bench, Stage, heading, pg};
use crate::{db, payload};

const DATABASE: &str = "bench_drain";
const BUSINESSES: u64 = 100;

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
    let mut runs = Vec::new();
    let mut ratios = Vec::new();
    for r in 1..=o.runs {
        let before = baseline
            .once(bench, &format!("before drain run {r}"))
            .await?;
        let run = one(bench, r).await?;
        if let Some(tps) = before {
            ratios.push(run.rate / tps);
            eprintln!(
                "         ratio to the baseline run just before: {:.2}",
                run.rate / tps
            );
        }
        runs.push(run);
    }
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
    bench.pg.checkpoint().await?;

    let t0 = epoch_secs();
    let hookd = Hookd::start(bench, DATABASE, &format!("hookd-drain-{r}.log"), &[]).await?;
    let limit = if o.quick { 180.0 } else { 600.0 };
    let mut peak = None;
    while common::db::stats::queue(&pool).await?.depth() > 0 {
        peak = hookd.peak_rss_kib().or(peak);
        if epoch_secs() - t0 > limit {
            eprintln!("  (backlog not drained after {limit} s; giving up)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let peak_rss_kib = hookd.peak_rss_kib().or(peak);
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

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
