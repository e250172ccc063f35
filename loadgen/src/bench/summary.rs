//! The figures, medians of runs, and the table docs/BENCHMARKS.md records. A figure a stage
//! did not measure stays `None` (null in JSON, "-" in the table).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::Options;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub quick: bool,
    pub runs: usize,
    pub concurrency: usize,
    pub pgbench: Pgbench,
    pub ingest: Closed,
    pub half: Open,
    pub open: AtHalfBaseline,
    pub receive: Closed,
    /// Receive-only, under wrk replaying pre-signed requests.
    pub wrk: Closed,
    pub end_to_end: EndToEnd,
    pub drain: Drain,
    pub refresh: Vec<Refresh>,
    /// Receive-only on top of the last history size (`history_events` events).
    pub receive_history: Closed,
    pub history_events: Option<u64>,
    /// Refresh time at the last history size over the first: flat is ~1.
    pub refresh_growth: Option<f64>,
    pub purge: Purge,
    pub memory: Memory,
}

#[derive(Debug, Default, Serialize)]
pub struct Pgbench {
    pub runs: usize,
    pub tps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The same INSERT into hookd's `events`, triggers included (one run, for information).
    pub events_tps: Option<f64>,
}

/// A closed-loop stage: hookd at full load.
#[derive(Debug, Default, Serialize)]
pub struct Closed {
    pub rate: Option<f64>,
    /// Median of the paired ratios (each run against the pgbench run just before it).
    pub ratio: Option<f64>,
    pub ratios: Vec<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Over all runs.
    pub acked: Option<u64>,
    pub missing: Option<u64>,
    pub non_2xx_and_errors: Option<u64>,
    pub failed_attempts: Option<u64>,
    pub deadlocks: Option<u64>,
    /// Events still waiting when the run ended (workers on).
    pub still_queued: Option<i64>,
    /// hookd's own CPU (user + system) per acknowledged event, median of runs.
    pub hookd_cpu_us_per_ack: Option<f64>,
}

/// The open-loop stage at half the closed-loop rate.
#[derive(Debug, Default, Serialize)]
pub struct Open {
    pub target_rate: Option<f64>,
    pub rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub send_lag_p99_ms: Option<f64>,
    pub missing: Option<u64>,
    pub non_2xx_and_errors: Option<u64>,
}

/// hookd and the baseline's INSERT at half of pgbench's closed-loop rate, both sent by the
/// same open-loop generator.
#[derive(Debug, Default, Serialize)]
pub struct AtHalfBaseline {
    pub target_rate: Option<f64>,
    pub insert_p99_ms: Option<f64>,
    /// Workers on, as in production.
    pub hookd_p99_ms: Option<f64>,
    pub hookd_rate: Option<f64>,
    pub receive_p99_ms: Option<f64>,
    /// hookd's p99 over the INSERT's in the same run, median of runs.
    pub ratio: Option<f64>,
    pub receive_ratio: Option<f64>,
    pub missing: Option<u64>,
    pub non_2xx_and_errors: Option<u64>,
}

/// A burst with the workers on, until its backlog is empty.
#[derive(Debug, Default, Serialize)]
pub struct EndToEnd {
    pub burst_secs: Option<u64>,
    /// Events processed ÷ seconds from the burst's start until the backlog was empty.
    pub rate: Option<f64>,
    pub ratio: Option<f64>,
    pub ratios: Vec<f64>,
    /// Over all runs.
    pub acked: Option<u64>,
    pub missing: Option<u64>,
    pub non_2xx_and_errors: Option<u64>,
    /// Median seconds from the burst's end until the backlog was empty.
    pub tail_secs: Option<f64>,
    /// Events that did not end `succeeded`, over all runs.
    pub not_succeeded: Option<i64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Drain {
    pub backlog: u64,
    pub rate: Option<f64>,
    pub ratio: Option<f64>,
    pub ratios: Vec<f64>,
    pub failed_attempts: Option<u64>,
    /// Events that did not end `succeeded`, over all runs.
    pub not_succeeded: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Refresh {
    pub events: u64,
    /// hooktop's own refresh (or loadgen's reading of the same queries without hooktop).
    pub ms: Option<f64>,
    /// Median per query, from loadgen's reading.
    pub queries: Vec<(String, f64)>,
}

#[derive(Debug, Default, Serialize)]
pub struct Purge {
    pub dead: u64,
    pub rate: f64,
    pub secs: Option<f64>,
    pub purged: Option<u64>,
    /// Dead events older than 7 days left after the purge (all runs), and recent ones kept.
    pub old_left: Option<i64>,
    pub recent_kept: Option<i64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub non_2xx_and_errors: Option<u64>,
    pub missing: Option<u64>,
    /// The same purge with its archive written first (hookd's default), and the archive's size.
    pub archived_secs: Option<f64>,
    pub archive_mib: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    pub hookd_mib: Option<f64>,
    pub drain_mib: Option<f64>,
    pub hooktop_mib: Option<f64>,
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn int<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

fn verdict(value: Option<f64>, met: impl Fn(f64) -> bool) -> &'static str {
    match value {
        None => "-",
        Some(v) if met(v) => "met",
        Some(_) => "NOT met",
    }
}

fn sum(values: &[Option<u64>]) -> Option<u64> {
    values.iter().copied().sum()
}

impl Summary {
    pub fn new(options: &Options) -> Summary {
        Summary {
            quick: options.quick,
            runs: options.runs,
            concurrency: options.concurrency,
            drain: Drain {
                backlog: options.backlog,
                ..Drain::default()
            },
            purge: Purge {
                dead: options.purge,
                rate: options.purge_rate,
                ..Purge::default()
            },
            ..Summary::default()
        }
    }

    /// The table, row for row as docs/BENCHMARKS.md records it.
    pub fn markdown(&self, out: &Path) -> String {
        let mut t = String::new();
        let _ = self.write(&mut t, out);
        t
    }

    fn write(&self, t: &mut String, out: &Path) -> std::fmt::Result {
        let (p, i, h, r, d, u, m) = (
            &self.pgbench,
            &self.ingest,
            &self.half,
            &self.receive,
            &self.drain,
            &self.purge,
            &self.memory,
        );
        writeln!(
            t,
            "==> results (median of {} run(s); concurrency {}{})\n",
            self.runs,
            self.concurrency,
            if self.quick {
                "; --quick: sizes too small for the targets"
            } else {
                ""
            }
        )?;
        writeln!(
            t,
            "| figure | measured | target | verdict |\n|---|---|---|---|"
        )?;
        writeln!(
            t,
            "| pgbench single-row INSERT (baseline = 1; median of {} runs) | {} tps (p50 {} ms, p99 {} ms) | — | — |",
            p.runs,
            num(p.tps, 1),
            num(p.p50_ms, 2),
            num(p.p99_ms, 2)
        )?;
        writeln!(
            t,
            "| pgbench INSERT into hookd's events table (its triggers; 1 run, for information) | {} tps | — | — |",
            num(p.events_tps, 1)
        )?;
        writeln!(
            t,
            "| hookd ingest, closed loop (ratio: median of paired runs) | {} acks/s = **{} x** baseline (p50 {} ms, p99 {} ms, max {} ms) | >= 1.2 x | {} |",
            num(i.rate, 1),
            num(i.ratio, 2),
            num(i.p50_ms, 2),
            num(i.p99_ms, 2),
            num(i.max_ms, 1),
            verdict(i.ratio, |v| v >= 1.2)
        )?;
        writeln!(
            t,
            "| hookd ingest at half that rate, open loop | p99 **{} ms** (p50 {} ms, max {} ms; client send lag p99 {} ms) at {} acks/s | p99 <= 20 ms | {} |",
            num(h.p99_ms, 2),
            num(h.p50_ms, 2),
            num(h.max_ms, 1),
            num(h.send_lag_p99_ms, 1),
            num(h.rate, 1),
            verdict(h.p99_ms, |v| v <= 20.0)
        )?;
        let a = &self.open;
        writeln!(
            t,
            "| hookd at half of pgbench's rate ({} req/s), open loop; one generator sends hookd's requests and the INSERT | p99 **{} ms** = **{} x** the INSERT's {} ms at {} acks/s (receive-only: {} ms = {} x) | <= 1.5 x | {} |",
            num(a.target_rate, 0),
            num(a.hookd_p99_ms, 2),
            num(a.ratio, 2),
            num(a.insert_p99_ms, 2),
            num(a.hookd_rate, 1),
            num(a.receive_p99_ms, 2),
            num(a.receive_ratio, 2),
            verdict(a.ratio, |v| v <= 1.5)
        )?;
        let w = &self.wrk;
        for (client, c) in [
            ("(HOOKD_WORKERS=0), closed loop", r),
            ("under wrk, replaying pre-signed requests", w),
        ] {
            writeln!(
                t,
                "| receive-only hookd {client} | {} acks/s = **{} x** baseline (p99 {} ms; missing {}) | >= 1.2 x | {} |",
                num(c.rate, 1),
                num(c.ratio, 2),
                num(c.p99_ms, 2),
                int(c.missing),
                verdict(c.ratio, |v| v >= 1.2)
            )?;
        }
        let e = &self.end_to_end;
        writeln!(
            t,
            "| end to end: a {} s burst, workers on, received and processed ÷ time until the backlog is empty | {} events/s = **{} x** baseline (empty {} s after the burst; not succeeded {}) | >= 0.5 x | {} |",
            int(e.burst_secs),
            num(e.rate, 1),
            num(e.ratio, 2),
            num(e.tail_secs, 1),
            int(e.not_succeeded),
            verdict(e.ratio, |v| v >= 0.5)
        )?;
        let non_2xx = sum(&[
            i.non_2xx_and_errors,
            r.non_2xx_and_errors,
            w.non_2xx_and_errors,
            e.non_2xx_and_errors,
        ]);
        writeln!(
            t,
            "| non-2xx answers + errors at full load (all runs) | {} | 0 | {} |",
            int(non_2xx),
            verdict(non_2xx.map(|n| n as f64), |v| v == 0.0)
        )?;
        let missing = sum(&[
            i.missing,
            h.missing,
            r.missing,
            w.missing,
            e.missing,
            self.receive_history.missing,
        ]);
        writeln!(
            t,
            "| acknowledged but not stored (all ingest runs) | {} | 0 | {} |",
            int(missing),
            verdict(missing.map(|n| n as f64), |v| v == 0.0)
        )?;
        writeln!(
            t,
            "| failed processing attempts while ingest ran (deadlocks) | {} ({}) | 0 | {} |",
            int(i.failed_attempts),
            int(i.deadlocks),
            verdict(i.failed_attempts.map(|n| n as f64), |v| v == 0.0)
        )?;
        writeln!(
            t,
            "| hookd CPU per acknowledged event (full load; receive-only; under wrk) | **{} µs** ({} µs; {} µs) | <= 60 µs | {} |",
            num(i.hookd_cpu_us_per_ack, 0),
            num(r.hookd_cpu_us_per_ack, 0),
            num(w.hookd_cpu_us_per_ack, 0),
            verdict(i.hookd_cpu_us_per_ack, |v| v <= 60.0)
        )?;
        writeln!(
            t,
            "| drain of {} backlog (ratio: median of paired runs) | {} events/s = **{} x** baseline (failed attempts: {}) | >= 0.6 x | {} |",
            d.backlog,
            num(d.rate, 1),
            num(d.ratio, 2),
            int(d.failed_attempts),
            verdict(d.ratio, |v| v >= 0.6)
        )?;
        for size in &self.refresh {
            writeln!(
                t,
                "| hooktop refresh at {} events | **{} ms** | <= 50 ms | {} |",
                size.events,
                num(size.ms, 2),
                verdict(size.ms, |v| v <= 50.0)
            )?;
        }
        if let (Some(first), Some(last)) = (self.refresh.first(), self.refresh.last()) {
            writeln!(
                t,
                "| refresh cost growth {} -> {} events | {} x | flat (~1 x) | {} |",
                first.events,
                last.events,
                num(self.refresh_growth, 2),
                verdict(self.refresh_growth, |v| v <= 1.5)
            )?;
        }
        let with_history = self
            .receive_history
            .ratio
            .zip(r.ratio)
            .map(|(history, empty)| history / empty);
        writeln!(
            t,
            "| receive-only hookd on top of {} events of history | {} acks/s = {} x baseline: **{} x** the empty database's ratio (p99 {} ms; missing {}) | >= 0.9 x | {} |",
            int(self.history_events),
            num(self.receive_history.rate, 1),
            num(self.receive_history.ratio, 2),
            num(with_history, 2),
            num(self.receive_history.p99_ms, 2),
            int(self.receive_history.missing),
            verdict(with_history, |v| v >= 0.9)
        )?;
        writeln!(
            t,
            "| purge of {} dead events > 7 days | **{} s** | <= 2 s | {} |",
            u.dead,
            num(u.secs, 2),
            verdict(u.secs, |v| v <= 2.0)
        )?;
        writeln!(
            t,
            "| the same purge, archived first (HOOKD_ARCHIVE_DIR) | {} s, archive {} MiB | reported | - |",
            num(u.archived_secs, 2),
            num(u.archive_mib, 1)
        )?;
        writeln!(
            t,
            "| ingest at {} req/s during the purge | p99 {} ms, max {} ms, non-2xx+errors {} | keeps answering | {} |",
            u.rate,
            num(u.p99_ms, 2),
            num(u.max_ms, 1),
            int(u.non_2xx_and_errors),
            verdict(u.non_2xx_and_errors.map(|n| n as f64), |v| v == 0.0)
        )?;
        writeln!(
            t,
            "| hookd peak RSS under full load | **{} MiB** (drain: {} MiB) | <= 64 MiB | {} |",
            num(m.hookd_mib, 1),
            num(m.drain_mib, 1),
            verdict(m.hookd_mib, |v| v <= 64.0)
        )?;
        writeln!(
            t,
            "| hooktop peak RSS (dashboard, {} events) | **{} MiB** | <= 32 MiB | {} |",
            int(self.refresh.first().map(|r| r.events)),
            num(m.hooktop_mib, 1),
            verdict(m.hooktop_mib, |v| v <= 32.0)
        )?;
        writeln!(t, "\nlogs and raw results: {}", out.display())
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
