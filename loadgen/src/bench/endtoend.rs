//! Stage 2d: end to end. A full-speed burst against hookd with its workers on, for 1,000
//! linked businesses; every event it acknowledged is then processed, and the figure is all of
//! them divided by the time from the first one stored until the backlog is empty, as
//! PostgreSQL's `received_at` and `processed_at` say. Paired with the pgbench run just before, as ingest is.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::drain::epoch_secs;
use super::ingest::describe;
use super::pgbench::Baseline;
use super::procs::Hookd;
use super::summary::{Summary, median};
use super::{Bench, Stage, heading, pg};
use crate::drive;

const DATABASE: &str = "bench_e2e";
/// As the measurement, so batches of different workers meet on the same businesses.
const BUSINESSES: u64 = 1_000;
/// The burst; `--quick` and a shorter `-T` make it shorter.
const BURST: Duration = Duration::from_secs(10);

struct Burst {
    rate: f64,
    acked: u64,
    missing: u64,
    non_2xx_and_errors: u64,
    /// From the burst's end until the backlog was empty.
    tail_secs: f64,
    not_succeeded: i64,
}

pub async fn stage(
    bench: &Bench,
    baseline: &mut Baseline,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let o = &bench.options;
    if !o.runs_stage(Stage::EndToEnd) {
        return Ok(());
    }
    let burst = o.duration.min(BURST);
    heading(&format!(
        "2d. end to end: a {} s burst over {} connections, mix {}, {BUSINESSES} businesses, \
         then until the backlog is empty",
        burst.as_secs(),
        o.concurrency,
        o.mix_label
    ));
    let (runs, ratios) = baseline
        .paired(
            bench,
            "end-to-end",
            async |r| one(bench, r, burst).await,
            |run| run.rate,
        )
        .await?;
    let e = &mut summary.end_to_end;
    e.burst_secs = Some(burst.as_secs());
    e.rate = median(&runs.iter().map(|r| r.rate).collect::<Vec<_>>());
    e.ratio = median(&ratios);
    e.ratios = ratios;
    e.acked = Some(runs.iter().map(|r| r.acked).sum());
    e.missing = Some(runs.iter().map(|r| r.missing).sum());
    e.non_2xx_and_errors = Some(runs.iter().map(|r| r.non_2xx_and_errors).sum());
    e.tail_secs = median(&runs.iter().map(|r| r.tail_secs).collect::<Vec<_>>());
    e.not_succeeded = Some(runs.iter().map(|r| r.not_succeeded).sum());
    bench.pg.drop_database(DATABASE).await
}

async fn one(bench: &Bench, r: usize, burst: Duration) -> anyhow::Result<Burst> {
    let o = &bench.options;
    let pool = bench.pg.fresh(DATABASE).await?;
    bench.pg.checkpoint().await?;
    let hookd = Hookd::start(bench, DATABASE, &format!("hookd-e2e-{r}.log"), &[]).await?;
    let load = drive::Load {
        url: hookd.url(),
        connections: o.concurrency,
        duration: Some(burst),
        requests: None,
        rate: None,
        // Every request counts: the figure is events, not the latency of a steady state.
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(10),
        mix: o.mix.clone(),
        businesses: BUSINESSES,
        secrets: bench.secrets.clone(),
        database_url: Some(bench.pg.url(DATABASE)),
        check: true,
    };
    let report = drive::load(load, CancellationToken::new()).await?;
    let waiting = epoch_secs();
    let limit = if o.quick { 180.0 } else { 600.0 };
    while pg::backlog_left(&pool).await? {
        if epoch_secs() - waiting > limit {
            eprintln!("  (backlog not empty {limit} s after the burst; giving up)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hookd.stop().await?;
    std::fs::write(
        bench.file(&format!("e2e-{r}.json")),
        serde_json::to_string(&report)?,
    )?;
    // From the first event stored to the last one processed, as PostgreSQL saw them: the
    // businesses loadgen creates before its first request are not part of it.
    let (t0, t1, processed, not_succeeded): (Option<f64>, Option<f64>, i64, i64) = sqlx::query_as(
        "SELECT extract(epoch FROM min(received_at))::float8,
                extract(epoch FROM max(processed_at))::float8, count(processed_at),
                count(*) FILTER (WHERE state <> 'succeeded')
         FROM events",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    let (t0, t1) = t0.zip(t1).context("nothing was processed")?;
    // An event acknowledged during the load was stored; one that was not is not counted.
    let rate = processed as f64 / (t1 - t0);
    let tail_secs = (t1 - t0 - burst.as_secs_f64()).max(0.0);
    eprintln!("  run {r}: burst {}", describe(&report));
    eprintln!(
        "         {processed} processed in {:.2} s = {rate:.1} events/s; backlog empty {tail_secs:.2} s \
         after the burst; {not_succeeded} not succeeded",
        t1 - t0
    );
    Ok(Burst {
        rate,
        acked: report.acked,
        missing: report.missing,
        non_2xx_and_errors: report.non_2xx + report.errors,
        tail_secs,
        not_succeeded,
    })
}
