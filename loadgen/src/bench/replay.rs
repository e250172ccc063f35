//! Stage 2e: receive-only hookd under wrk, replaying requests signed before the run
//! (`loadgen presign`, `loadgen/wrk/replay.lua`). The client is off-the-shelf and spends no
//! CPU on signatures, so hookd and PostgreSQL get the cores loadgen's signing would take.
//! Each run is paired with the pgbench run just before it, as the receive stage is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::ingest::workers_meanwhile;
use super::pgbench::Baseline;
use super::procs::Hookd;
use super::summary::{Closed, Summary, median};
use super::{Bench, Stage, heading, pg};
use crate::{drive, presign};

const DATABASE: &str = "bench_wrk";
/// Requests signed per second of a run: more than hookd answers on two cores, so wrk does not
/// run out (a thread that does stops, and the run fails rather than repeat a request).
const PER_SECOND: u64 = 25_000;
const PER_SECOND_QUICK: u64 = 8_000;

/// What replay.lua writes when wrk is done.
#[derive(Debug, Deserialize)]
struct WrkReport {
    /// Completed requests, whatever their status.
    requests: u64,
    duration_us: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    /// Answers with a status of 400 or above.
    non_2xx: u64,
    timeouts: u64,
    exhausted_threads: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

struct Measured {
    rate: f64,
    acked: u64,
    missing: u64,
    failures: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    hookd_cpu_us_per_ack: f64,
    /// Attempts that did not succeed, deadlocks, events still queued: no workers run here, so
    /// anything but zero attempts means something processed behind the benchmark's back.
    meanwhile: (u64, u64, i64),
}

pub async fn stage(
    bench: &Bench,
    baseline: &mut Baseline,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let o = &bench.options;
    if !o.runs_stage(Stage::Wrk) {
        return Ok(());
    }
    heading(&format!(
        "2e. receive-only hookd under wrk replaying pre-signed requests: {} connections, \
         closed loop, mix {}",
        o.concurrency, o.mix_label
    ));
    let wrk = wrk()?;
    let script = bench.file("replay.lua");
    std::fs::write(&script, presign::REPLAY_LUA)?;
    let (runs, ratios) = baseline
        .paired(
            bench,
            "wrk",
            async |r| one(bench, &wrk, &script, r).await,
            |m| m.rate,
        )
        .await?;
    let each = |f: fn(&Measured) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let total = |f: fn(&Measured) -> u64| Some(runs.iter().map(f).sum());
    summary.wrk = Closed {
        rate: each(|m| m.rate),
        ratio: median(&ratios),
        ratios,
        p50_ms: each(|m| m.p50_ms),
        p99_ms: each(|m| m.p99_ms),
        max_ms: each(|m| m.max_ms),
        acked: total(|m| m.acked),
        missing: total(|m| m.missing),
        non_2xx_and_errors: total(|m| m.failures),
        failed_attempts: total(|m| m.meanwhile.0),
        deadlocks: total(|m| m.meanwhile.1),
        still_queued: runs.iter().map(|m| m.meanwhile.2).max(),
        hookd_cpu_us_per_ack: each(|m| m.hookd_cpu_us_per_ack),
    };
    bench.pg.drop_database(DATABASE).await
}

async fn one(bench: &Bench, wrk: &Path, script: &Path, r: usize) -> anyhow::Result<Measured> {
    let o = &bench.options;
    let pool = bench.pg.fresh(DATABASE).await?;
    bench.pg.checkpoint().await?;
    let since = pg::now(&pool).await?;
    let hookd = Hookd::start(
        bench,
        DATABASE,
        &format!("hookd-wrk-{r}.log"),
        &[("HOOKD_WORKERS", "0")],
    )
    .await?;
    let secs = (o.duration + o.warmup).as_secs().max(1);
    let count = secs
        * if o.quick {
            PER_SECOND_QUICK
        } else {
            PER_SECOND
        };
    let generator = drive::generator(&bench.secrets, &o.mix, 100, Some(&pool)).await?;
    let (_, host) = drive::target(&hookd.url())?;
    let requests = bench.file(&format!("wrk-{r}.requests"));
    let bytes = presign::write(&generator, &o.mix, &host, count, &requests)?;
    eprintln!(
        "  signed {count} requests ({:.0} MiB) before the run",
        bytes as f64 / (1 << 20) as f64
    );

    let report_path = bench.file(&format!("wrk-{r}.json"));
    let cpu0 = hookd.cpu_secs();
    let output = tokio::process::Command::new(wrk)
        .arg("-t1")
        .arg(format!("-c{}", o.concurrency))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(script)
        .arg(hookd.url())
        .arg("--")
        .arg(&requests)
        .arg(&report_path)
        .output()
        .await
        .context("running wrk")?;
    let hookd_cpu_secs = hookd.cpu_secs() - cpu0;
    std::fs::remove_file(&requests)?;
    std::fs::write(bench.file(&format!("wrk-{r}.txt")), &output.stdout)?;
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = std::fs::read_to_string(&report_path)
        .with_context(|| format!("wrk wrote no {}", report_path.display()))?;
    let w: WrkReport = serde_json::from_str(&text).context("reading replay.lua's report")?;
    if w.exhausted_threads > 0 {
        bail!(
            "wrk sent all {count} pre-signed requests before its {secs} s were up: hookd \
             answered more than {} a second; raise PER_SECOND in {}",
            count / secs,
            file!()
        );
    }
    let stored = pg::count(&pool, "SELECT count(*) FROM events").await?;
    let meanwhile = workers_meanwhile(bench, &pool, "wrk", r, since).await?;
    hookd.stop().await?;
    pool.close().await;

    // Every request is a new event, so every 2xx answer must be a stored row.
    let acked = w.requests - w.non_2xx;
    let measured = Measured {
        rate: acked as f64 / Duration::from_micros(w.duration_us).as_secs_f64(),
        acked,
        missing: acked.saturating_sub(stored.unsigned_abs()),
        failures: w.non_2xx + w.connect_errors + w.read_errors + w.write_errors + w.timeouts,
        p50_ms: w.p50_us as f64 / 1e3,
        p99_ms: w.p99_us as f64 / 1e3,
        max_ms: w.max_us as f64 / 1e3,
        hookd_cpu_us_per_ack: hookd_cpu_secs * 1e6 / acked.max(1) as f64,
        meanwhile,
    };
    eprintln!(
        "  run {r}: {:8.1} acks/s  p50 {:6.2}  p99 {:7.2}  max {:7.2} ms  acked {} stored {} \
         failures {}; hookd CPU {:.0} µs per ack",
        measured.rate,
        measured.p50_ms,
        measured.p99_ms,
        measured.max_ms,
        acked,
        stored,
        measured.failures,
        measured.hookd_cpu_us_per_ack
    );
    if measured.missing > 0 {
        eprintln!(
            "  WARNING: {} acknowledged events missing from the database",
            measured.missing
        );
    }
    Ok(measured)
}

/// wrk from PATH, or Debian's package installed now.
fn wrk() -> anyhow::Result<PathBuf> {
    if let Ok(path) = which::which("wrk") {
        return Ok(path);
    }
    eprintln!("  wrk is not installed: apt-get install wrk");
    pgcluster::apt_install(&["wrk"])?;
    which::which("wrk").context("wrk is still not on PATH after apt-get install wrk")
}
