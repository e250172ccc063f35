//! Stage 2: hookd under load. Closed loop with the workers on (as in production), then open
//! loop at half that rate; closed loop against a receive-only hookd (`HOOKD_WORKERS=0`),
//! which only verifies and stores, as pgbench only inserts; then open loop at half of
//! pgbench's rate, the baseline's INSERT and hookd sent by the same generator. Each run gets a
//! fresh database and a fresh hookd, so no run inherits the previous one's backlog. The refresh stage also runs
//! the receive-only runs on its history (`receive_on_history`), each from an emptied queue.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::machine::CpuTimes;
use super::pgbench::Baseline;
use super::procs::Hookd;
use super::summary::{Closed, Summary, median, mib};
use super::{Bench, Stage, heading, pg};
use crate::drive;
use crate::run::Report;

const DATABASE: &str = "bench_ingest";

/// One measured run and what hookd and its workers did meanwhile.
struct Measured {
    report: Report,
    /// Against the pgbench run just before, when paired.
    ratio: Option<f64>,
    hookd_cpu_secs: f64,
    peak_rss_kib: Option<u64>,
    failed_attempts: u64,
    deadlocks: u64,
    still_queued: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Full,
    Half,
    /// At half of pgbench's rate, with the workers on and without.
    Open,
    OpenReceiveOnly,
    ReceiveOnly,
    /// Receive-only on top of the refresh stage's history.
    ReceiveOnHistory,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Full => "ingest",
            Kind::Half => "half",
            Kind::Open => "open",
            Kind::OpenReceiveOnly => "open-receive",
            Kind::ReceiveOnly => "receive",
            Kind::ReceiveOnHistory => "receive-history",
        }
    }
}

pub async fn stages(
    bench: &Bench,
    baseline: &mut Baseline,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let o = &bench.options;
    if o.runs_stage(Stage::Ingest) {
        heading(&format!(
            "2. hookd ingest: {} connections, mix {}, workers on (default), rate limit off",
            o.concurrency, o.mix_label
        ));
        let runs = runs(bench, baseline, Kind::Full, None, None).await?;
        summary.ingest = closed(&runs);
        summary.memory.hookd_mib = mib(runs.iter().filter_map(|r| r.peak_rss_kib).max());
        eprintln!(
            "  median: {:.1} acks/s, p99 {:.2} ms; hookd peak RSS {:.1} MiB",
            summary.ingest.rate.unwrap_or(0.0),
            summary.ingest.p99_ms.unwrap_or(0.0),
            summary.memory.hookd_mib.unwrap_or(0.0)
        );
    }
    if o.runs_stage(Stage::Half)
        && let Some(rate) = summary.ingest.rate
    {
        let target = rate / 2.0;
        heading(&format!(
            "2b. hookd at half that rate, open loop: {target:.0} req/s over {} connections",
            o.concurrency
        ));
        let runs = runs(bench, baseline, Kind::Half, Some(target), None).await?;
        let h = &mut summary.half;
        let each =
            |f: fn(&Report) -> f64| median(&runs.iter().map(|r| f(&r.report)).collect::<Vec<_>>());
        h.target_rate = Some(target);
        h.rate = each(|r| r.throughput);
        h.p50_ms = each(|r| r.p50_ms);
        h.p99_ms = each(|r| r.p99_ms);
        h.max_ms = each(|r| r.max_ms);
        h.send_lag_p99_ms = each(|r| r.send_lag_p99_ms);
        h.missing = Some(runs.iter().map(|r| r.report.missing).sum());
        h.non_2xx_and_errors = Some(
            runs.iter()
                .map(|r| r.report.non_2xx + r.report.errors)
                .sum(),
        );
        eprintln!("  median p99 {:.2} ms", h.p99_ms.unwrap_or(0.0));
    }
    if o.runs_stage(Stage::Receive) {
        heading(&format!(
            "2c. receive-only hookd (HOOKD_WORKERS=0): {} connections, closed loop, mix {}",
            o.concurrency, o.mix_label
        ));
        let runs = runs(bench, baseline, Kind::ReceiveOnly, None, None).await?;
        summary.receive = closed(&runs);
    }
    if o.runs_stage(Stage::Open) {
        open(bench, baseline, summary).await?;
    }
    bench.pg.drop_database(DATABASE).await
}

/// The receive stage's runs on `database`, which holds history already: each run starts from
/// an empty queue, as the receive stage's start from an empty database, so what differs is
/// the history (its keys above all, which every claim probes).
pub async fn receive_on_history(
    bench: &Bench,
    baseline: &mut Baseline,
    database: &str,
) -> anyhow::Result<Closed> {
    let runs = runs(
        bench,
        baseline,
        Kind::ReceiveOnHistory,
        None,
        Some(database),
    )
    .await?;
    Ok(closed(&runs))
}

/// Each run: a baseline run for the rate, the baseline's INSERT at half of it, then hookd at
/// the same rate with its workers on (as in production) and receive-only. The same tasks and
/// schedule send all three, so each latency is measured the same way, from the schedule.
async fn open(bench: &Bench, baseline: &mut Baseline, summary: &mut Summary) -> anyhow::Result<()> {
    heading(&format!(
        "2f. open loop at half of pgbench's rate, one generator for the INSERT and for hookd: \
         {} connections",
        bench.options.concurrency
    ));
    let (mut rates, mut insert, mut full, mut receive) = (vec![], vec![], vec![], vec![]);
    for r in 1..=bench.options.runs {
        let tps = baseline
            .once(bench, &format!("for open-loop run {r}"))
            .await?
            .context("the open stage needs the pgbench stage")?;
        let rate = tps / 2.0;
        let pg = baseline.open_loop(bench, rate).await?;
        eprintln!("  run {r}, the INSERT at {rate:.0}/s: {}", describe(&pg));
        std::fs::write(
            bench.file(&format!("open-insert-{r}.json")),
            serde_json::to_string(&pg)?,
        )?;
        rates.push(rate);
        insert.push(pg);
        full.push(one(bench, Kind::Open, r, Some(rate), None).await?);
        receive.push(one(bench, Kind::OpenReceiveOnly, r, Some(rate), None).await?);
    }
    fn p99<'a>(reports: impl Iterator<Item = &'a Report>) -> Option<f64> {
        median(&reports.map(|r| r.p99_ms).collect::<Vec<_>>())
    }
    let ratio = |hookd: &[Measured]| {
        median(
            &hookd
                .iter()
                .zip(&insert)
                .map(|(h, pg)| h.report.p99_ms / pg.p99_ms)
                .collect::<Vec<_>>(),
        )
    };
    let o = &mut summary.open;
    o.target_rate = median(&rates);
    o.insert_p99_ms = p99(insert.iter());
    o.hookd_p99_ms = p99(full.iter().map(|r| &r.report));
    o.receive_p99_ms = p99(receive.iter().map(|r| &r.report));
    o.hookd_rate = median(&full.iter().map(|r| r.report.throughput).collect::<Vec<_>>());
    o.ratio = ratio(&full);
    o.receive_ratio = ratio(&receive);
    let all = || {
        insert
            .iter()
            .chain(full.iter().chain(&receive).map(|r| &r.report))
    };
    o.missing = Some(all().map(|r| r.missing).sum());
    o.non_2xx_and_errors = Some(all().map(|r| r.non_2xx + r.errors).sum());
    eprintln!(
        "  median p99: hookd {:.2} ms, receive-only {:.2} ms, the INSERT {:.2} ms",
        o.hookd_p99_ms.unwrap_or(0.0),
        o.receive_p99_ms.unwrap_or(0.0),
        o.insert_p99_ms.unwrap_or(0.0)
    );
    Ok(())
}

fn closed(runs: &[Measured]) -> Closed {
    let each = |f: &dyn Fn(&Measured) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let total = |f: &dyn Fn(&Measured) -> u64| Some(runs.iter().map(f).sum());
    let ratios: Vec<f64> = runs.iter().filter_map(|r| r.ratio).collect();
    Closed {
        rate: each(&|r| r.report.throughput),
        ratio: median(&ratios),
        ratios,
        p50_ms: each(&|r| r.report.p50_ms),
        p99_ms: each(&|r| r.report.p99_ms),
        max_ms: each(&|r| r.report.max_ms),
        acked: total(&|r| r.report.acked),
        missing: total(&|r| r.report.missing),
        non_2xx_and_errors: total(&|r| r.report.non_2xx + r.report.errors),
        failed_attempts: total(&|r| r.failed_attempts),
        deadlocks: total(&|r| r.deadlocks),
        still_queued: runs.iter().map(|r| r.still_queued).max(),
        hookd_cpu_us_per_ack: each(&|r| r.hookd_cpu_secs * 1e6 / r.report.acked.max(1) as f64),
    }
}

async fn runs(
    bench: &Bench,
    baseline: &mut Baseline,
    kind: Kind,
    rate: Option<f64>,
    history: Option<&str>,
) -> anyhow::Result<Vec<Measured>> {
    let paired = kind != Kind::Half;
    let mut runs = Vec::new();
    for r in 1..=bench.options.runs {
        let before = if paired {
            baseline
                .once(bench, &format!("before {} run {r}", kind.name()))
                .await?
        } else {
            None
        };
        let mut run = one(bench, kind, r, rate, history).await?;
        run.ratio = before.map(|tps| run.report.throughput / tps);
        if let Some(ratio) = run.ratio {
            eprintln!("         ratio to the baseline run just before: {ratio:.2}");
        }
        runs.push(run);
    }
    Ok(runs)
}

async fn one(
    bench: &Bench,
    kind: Kind,
    r: usize,
    rate: Option<f64>,
    history: Option<&str>,
) -> anyhow::Result<Measured> {
    let o = &bench.options;
    let name = kind.name();
    let database = history.unwrap_or(DATABASE);
    let pool = match history {
        Some(database) => {
            let pool = bench.pg.pool(database, 2).await?;
            // The queue: the previous run's events (and the history's hundred retrying
            // ones), which are not history; the settled and dead days stay.
            pg::exec(&pool, "TRUNCATE events_live").await?;
            pool
        }
        None => bench.pg.fresh(DATABASE).await?,
    };
    let diagnose = o.diagnose && r == 1;
    if diagnose {
        pg::exec(&pool, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await?;
    }
    bench.pg.checkpoint().await?;
    let since = pg::now(&pool).await?;
    let workers: &[(&str, &str)] = if matches!(
        kind,
        Kind::ReceiveOnly | Kind::OpenReceiveOnly | Kind::ReceiveOnHistory
    ) {
        &[("HOOKD_WORKERS", "0")]
    } else {
        &[]
    };
    let hookd = Hookd::start(bench, database, &format!("hookd-{name}-{r}.log"), workers).await?;
    let sampling = CancellationToken::new();
    let waits = diagnose.then(|| tokio::spawn(sample_waits(pool.clone(), sampling.clone())));

    let (cpu0, machine0, started) = (hookd.cpu_secs(), CpuTimes::now(), Instant::now());
    let load = drive::Load {
        url: hookd.url(),
        connections: o.concurrency,
        duration: Some(o.duration + o.warmup),
        requests: None,
        rate,
        // The first seconds (connections, prepared statements) are sent but not measured.
        warmup: o.warmup,
        timeout: Duration::from_secs(10),
        mix: o.mix.clone(),
        businesses: 100,
        secrets: bench.secrets.clone(),
        database_url: Some(bench.pg.url(database)),
        check: true,
    };
    let report = drive::load(load, CancellationToken::new()).await?;
    let secs = started.elapsed().as_secs_f64();
    let hookd_cpu_secs = hookd.cpu_secs() - cpu0;
    let busy = CpuTimes::now().busy_cores_since(machine0);
    if let Some(waits) = waits {
        sampling.cancel();
        let waits = waits.await?;
        diagnostics(bench, &pool, name, &waits?).await?;
    }
    std::fs::write(
        bench.file(&format!("{name}-{r}.json")),
        serde_json::to_string(&report)?,
    )?;
    let peak_rss_kib = hookd.peak_rss_kib();
    let measured = workers_meanwhile(bench, &pool, name, r, since).await?;
    hookd.stop().await?;
    pool.close().await;

    eprintln!("  run {r}: {}", describe(&report));
    eprintln!(
        "         CPU (cores): hookd {:.2}, loadgen {:.2}, whole machine {busy:.2} of {} busy; \
         workers: {} failed attempts ({} deadlocks), {} events still queued",
        hookd_cpu_secs / secs,
        report.client_cpu_secs.unwrap_or(0.0) / secs,
        super::machine::cores(),
        measured.0,
        measured.1,
        measured.2
    );
    if report.missing > 0 {
        eprintln!(
            "  WARNING: {} acknowledged events missing from the database",
            report.missing
        );
    }
    Ok(Measured {
        report,
        ratio: None,
        hookd_cpu_secs,
        peak_rss_kib,
        failed_attempts: measured.0,
        deadlocks: measured.1,
        still_queued: measured.2,
    })
}

/// Failed attempts, of which deadlocks, and the events still queued; the failures' causes go
/// into the run directory.
/// Only attempts since `since` count: a database with history holds older ones.
pub(super) async fn workers_meanwhile(
    bench: &Bench,
    pool: &PgPool,
    name: &str,
    r: usize,
    since: DateTime<Utc>,
) -> anyhow::Result<(u64, u64, i64)> {
    let (failed, deadlocks): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome <> 'succeeded'),
                count(*) FILTER (WHERE error LIKE '%deadlock%')
         FROM event_attempts WHERE processed_at >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await?;
    let queued = common::db::stats::queue(pool).await?.depth();
    let causes: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT count(*), left(error, 120) FROM event_attempts
         WHERE outcome <> 'succeeded' AND processed_at >= $1
         GROUP BY 2 ORDER BY 1 DESC LIMIT 10",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let text: String = causes
        .iter()
        .map(|(n, e)| format!("{n}\t{}\n", e.as_deref().unwrap_or("")))
        .collect();
    std::fs::write(bench.file(&format!("{name}-{r}-failed-attempts.txt")), text)?;
    Ok((failed.unsigned_abs(), deadlocks.unsigned_abs(), queued))
}

/// One line about a run.
pub fn describe(r: &Report) -> String {
    let mut extra = String::new();
    if r.non_2xx > 0 {
        extra += &format!(" non-2xx {:?}", r.status);
    }
    if r.errors > 0 {
        extra += &format!(" errors {:?}", r.error_kinds);
    }
    if r.target_rate.is_some() {
        // Open loop: the part of the latency spent before the request left the client.
        extra += &format!(" (client send lag p99 {:.1} ms)", r.send_lag_p99_ms);
    }
    format!(
        "{:8.1} acks/s  p50 {:6.2}  p90 {:6.2}  p99 {:7.2}  max {:7.2} ms  acked {} missing {}{extra}",
        r.throughput, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.acked, r.missing
    )
}

/// What hookd's backends wait on, sampled every 100 ms until `stop`.
async fn sample_waits(
    pool: PgPool,
    stop: CancellationToken,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut seen = BTreeMap::new();
    while !stop.is_cancelled() {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU') || ' ' || state
             FROM pg_stat_activity WHERE application_name = 'hookd' AND state <> 'idle'",
        )
        .fetch_all(&pool)
        .await
        .context("sampling wait events")?;
        for row in rows {
            *seen.entry(row).or_insert(0) += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(seen)
}

/// `--diagnose`: the wait samples and the costliest statements, into the run directory.
async fn diagnostics(
    bench: &Bench,
    pool: &PgPool,
    name: &str,
    waits: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let mut by_count: Vec<(&String, &u64)> = waits.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    let text: String = by_count
        .iter()
        .map(|(w, n)| format!("{n:7} {w}\n"))
        .collect();
    std::fs::write(bench.file(&format!("{name}-waits-summary.txt")), text)?;
    let statements: Vec<(i64, f64, f64, String)> = sqlx::query_as(
        "SELECT calls, round(total_exec_time::numeric, 1)::float8,
                round(mean_exec_time::numeric, 3)::float8,
                left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
         FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
    )
    .fetch_all(pool)
    .await
    .context("reading pg_stat_statements")?;
    let text: String = statements
        .iter()
        .map(|(calls, total, mean, q)| format!("{calls:>9} {total:>11.1} ms {mean:>9.3} ms  {q}\n"))
        .collect();
    std::fs::write(bench.file(&format!("{name}-statements.txt")), text)?;
    eprintln!("  diagnostics: {name}-waits-summary.txt, {name}-statements.txt");
    Ok(())
}
