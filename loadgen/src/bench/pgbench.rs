//! Stage 1, the baseline: pgbench's single-row autocommit `INSERT .. ON CONFLICT DO NOTHING` of
//! the body hookd receives, with the same unique key, at the same concurrency, on the same
//! cluster (DESIGN.md §4). The ingest and drain runs each come right after a baseline run of
//! their own, and their ratio is to that run.

use std::path::Path;

use anyhow::{Context, bail};

use common::db::schema;

use super::summary::{Summary, median};
use super::{Bench, Stage, heading, pg};
use crate::run;

const DATABASE: &str = "bench_pgbench";

/// A realistic ~1 KB custom event: the body every transaction stores.
const BODY: &str = r#"{"type":"order.created","timestamp":"2026-11-29T03:00:00.000Z","data":{"business_id":42,"order_id":"ord_000000123456","channel":"web","currency":"usd","total_cents":5623,"customer":{"id":"cust_0000123456","email":"customer123456@example.com","name":"Bench Customer","phone":"+15557654321","marketing_opt_in":false},"items":[{"sku":"SKU-CUT-001","name":"Haircut","quantity":1,"unit_cents":3500},{"sku":"SKU-WASH-002","name":"Wash and style","quantity":1,"unit_cents":2000},{"sku":"SKU-TIP-000","name":"Tip","quantity":1,"unit_cents":123}],"shipping":{"method":"in_store","address":{"line1":"1 Bench Street","city":"Springfield","postal_code":"12345","country":"US"}},"notes":"Customer asked for the 3 pm slot; confirm by SMS the day before.","staff":{"id":"stf_0042","name":"Alex Example","role":"stylist"},"location":{"id":"loc_main","timezone":"America/New_York"},"tags":["returning","sms-reminder","web-booking"],"metadata":{"source":"pgbench","request_index":123456,"schema":"v2"}}}"#;

/// Same columns, defaults and constraints as hookd's `events`, unpartitioned, with the unique
/// key and indexes it had as one table before migration 0005; none of its triggers.
const TABLE: &str = "
CREATE TABLE bench_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
                           PRIMARY KEY (id), UNIQUE (source, event_id));
CREATE INDEX ON bench_events (next_attempt_at) WHERE state IN ('pending', 'retrying', 'processing');
CREATE INDEX ON bench_events (dead_at DESC) WHERE state = 'dead';
CREATE INDEX ON bench_events (source, event_type) INCLUDE (state) WHERE state IN ('retrying', 'dead');
CREATE SEQUENCE bench_key;";

/// One pgbench run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The baseline runs so far; `None` when the stage is not run.
pub struct Baseline {
    runs: Vec<Run>,
    /// The same INSERT into hookd's own `events`, for information.
    events: Option<Run>,
    on: bool,
}

impl Baseline {
    /// The baseline's database and table, and the one informative run into hookd's own table.
    pub async fn prepare(bench: &Bench) -> anyhow::Result<Baseline> {
        let on = bench.options.runs_stage(Stage::Pgbench);
        if !on {
            return Ok(Baseline {
                runs: vec![],
                events: None,
                on,
            });
        }
        let o = &bench.options;
        heading(&format!(
            "1. pgbench baseline: single-row autocommit INSERT, -c {} -j 2 -T {}",
            o.concurrency,
            (o.duration + o.warmup).as_secs()
        ));
        let pool = bench.pg.fresh(DATABASE).await?;
        pg::exec(&pool, TABLE).await?;
        pool.close().await;
        let paired = [
            Stage::Ingest,
            Stage::Receive,
            Stage::Wrk,
            Stage::EndToEnd,
            Stage::Drain,
            Stage::Refresh,
        ];
        if paired.iter().any(|&stage| o.runs_stage(stage)) {
            eprintln!("  (baseline runs are interleaved with the ingest and drain runs below)");
        }
        Ok(Baseline {
            runs: vec![],
            events: Some(into_events(bench).await?),
            on,
        })
    }

    /// One baseline run on an emptied table: its throughput, for the run after it.
    pub async fn once(&mut self, bench: &Bench, label: &str) -> anyhow::Result<Option<f64>> {
        if !self.on {
            return Ok(None);
        }
        let pool = bench.pg.pool(DATABASE, 1).await?;
        pg::exec(&pool, "TRUNCATE bench_events").await?;
        pool.close().await;
        let run = pgbench(bench, DATABASE, "bench_events", "plain").await?;
        eprintln!(
            "  pgbench baseline ({label}): {:.1} tps  p50 {:.2} ms  p99 {:.2} ms",
            run.tps, run.p50_ms, run.p99_ms
        );
        self.runs.push(run);
        Ok(Some(run.tps))
    }

    /// The baseline's INSERT at `rate`, open loop, sent by the same tasks and schedule that
    /// loadgen sends hookd's requests with (pgbench's own `--rate` would time it differently).
    pub async fn open_loop(&self, bench: &Bench, rate: f64) -> anyhow::Result<run::Report> {
        let o = &bench.options;
        let pool = bench.pg.pool(DATABASE, 1).await?;
        pg::exec(&pool, "TRUNCATE bench_events").await?;
        pool.close().await;
        bench.pg.checkpoint().await?;
        let options = bench
            .pg
            .url(DATABASE)
            .parse()
            .context("the cluster's URL")?;
        let plan = run::Plan {
            target: run::Target::Postgres {
                options: Box::new(schema::connect_options(options, &schema::Schema::default())),
                statement: insert(
                    "bench_events",
                    "$1::text",
                    "ON CONFLICT (source, event_id) DO NOTHING",
                ),
                body: BODY.to_owned(),
            },
            connections: o.concurrency,
            duration: Some(o.duration + o.warmup),
            requests: None,
            rate: Some(rate),
            warmup: o.warmup,
            timeout: std::time::Duration::from_secs(10),
            mix: vec![common::Source::Custom],
        };
        run::run(plan, tokio_util::sync::CancellationToken::new()).await
    }

    /// `--runs` runs of `one`, each just after a baseline run: the runs, and each one's
    /// `rate` over its baseline's.
    pub async fn paired<T>(
        &mut self,
        bench: &Bench,
        what: &str,
        mut one: impl AsyncFnMut(usize) -> anyhow::Result<T>,
        rate: impl Fn(&T) -> f64,
    ) -> anyhow::Result<(Vec<T>, Vec<f64>)> {
        let mut runs = Vec::new();
        let mut ratios = Vec::new();
        for r in 1..=bench.options.runs {
            let before = self.once(bench, &format!("before {what} run {r}")).await?;
            let run = one(r).await?;
            if let Some(tps) = before {
                let ratio = rate(&run) / tps;
                eprintln!("         ratio to the baseline run just before: {ratio:.2}");
                ratios.push(ratio);
            }
            runs.push(run);
        }
        Ok((runs, ratios))
    }

    /// Runs the baseline alone when no hookd run was paired with it; the medians go into the
    /// summary.
    pub async fn finish(&mut self, bench: &Bench, summary: &mut Summary) -> anyhow::Result<()> {
        if !self.on {
            return Ok(());
        }
        if self.runs.is_empty() {
            for r in 1..=bench.options.runs {
                self.once(bench, &format!("run {r}")).await?;
            }
        }
        let tps: Vec<f64> = self.runs.iter().map(|r| r.tps).collect();
        summary.pgbench.events_tps = self.events.map(|r| r.tps);
        summary.pgbench.runs = self.runs.len();
        summary.pgbench.tps = median(&tps);
        summary.pgbench.p50_ms = median(&self.runs.iter().map(|r| r.p50_ms).collect::<Vec<_>>());
        summary.pgbench.p99_ms = median(&self.runs.iter().map(|r| r.p99_ms).collect::<Vec<_>>());
        bench.pg.drop_database(DATABASE).await
    }
}

/// For information: the same INSERT into hookd's own table, whose triggers add the key and
/// count the event.
async fn into_events(bench: &Bench) -> anyhow::Result<Run> {
    let events_db = "bench_pgbench_events";
    let pool = bench.pg.fresh(events_db).await?;
    pg::exec(&pool, "CREATE SEQUENCE bench_key").await?;
    pool.close().await;
    let run = pgbench(bench, events_db, "events", "events").await?;
    eprintln!(
        "  into hookd's events table (with its triggers), 1 run: {:.1} tps  p50 {:.2} ms  p99 {:.2} ms",
        run.tps, run.p50_ms, run.p99_ms
    );
    bench.pg.drop_database(events_db).await?;
    Ok(run)
}

/// The baseline's statement into `table`, with `body` standing for the body parameter.
fn insert(table: &str, body: &str, on_conflict: &str) -> String {
    format!(
        "INSERT INTO {table} (source, event_id, event_type, body)\n\
         SELECT 'custom', 'msg_pgb' || lpad(nextval('bench_key')::text, 12, '0'), 'order.created',\n\
         convert_to({body}, 'UTF8')\nWHERE {body}::jsonb IS NOT NULL\n{on_conflict}\nRETURNING id"
    )
}

/// One pgbench run into `table`: throughput, and latency percentiles from its per-transaction
/// log (warm-up included).
async fn pgbench(bench: &Bench, database: &str, table: &str, tag: &str) -> anyhow::Result<Run> {
    let o = &bench.options;
    // The key is unique and increasing (like loadgen's ids); the body is a bind parameter
    // (-M prepared), stored once and cast to jsonb on every insert, exactly as hookd's INSERT
    // does (migration 0014). hookd's own table keeps its keys in event_keys, through a
    // trigger, so it has no ON CONFLICT.
    let on_conflict = if table == "events" {
        ""
    } else {
        "ON CONFLICT (source, event_id) DO NOTHING"
    };
    let script = bench.file(&format!("pgbench-{tag}.sql"));
    std::fs::write(
        &script,
        format!("{};\n", insert(table, ":body", on_conflict)),
    )?;
    let logs = bench.file(&format!("pgbench-{tag}-log"));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    bench.pg.checkpoint().await?;
    let cluster = bench.pg.cluster();
    // A client: it runs as whoever we are, and writes its log here.
    let output = tokio::process::Command::new(cluster.binaries().tool("pgbench"))
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &cluster.port().to_string()])
        .args(["-c", &o.concurrency.to_string(), "-j", "2"])
        .args(["-T", &(o.duration + o.warmup).as_secs().to_string()])
        .arg("-f")
        .arg(&script)
        .args([
            "-D",
            &format!("body={BODY}"),
            "-l",
            "--log-prefix=tx",
            database,
        ])
        // hookd's tables are in its own schema, found as hookd finds them.
        .env("PGOPTIONS", "-c search_path=hookd,public")
        .current_dir(&logs)
        .kill_on_drop(true)
        .output()
        .await
        .context("running pgbench (Debian: postgresql-contrib or postgresql-client)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    std::fs::write(bench.file(&format!("pgbench-{tag}.txt")), &text)?;
    if !output.status.success() {
        bail!(
            "pgbench failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {text}"))?;
    let mut micros = latencies(&logs)?;
    let _ = std::fs::remove_dir_all(&logs);
    micros.sort_unstable();
    let at = |q: f64| {
        micros
            .get((micros.len() as f64 * q) as usize)
            .map_or(0.0, |us| *us as f64 / 1_000.0)
    };
    Ok(Run {
        tps,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    })
}

/// Every transaction's latency (the third column of pgbench's log, microseconds).
fn latencies(logs: &Path) -> anyhow::Result<Vec<u64>> {
    let mut micros = Vec::new();
    for entry in std::fs::read_dir(logs)? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("tx"))
        {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line.split_whitespace().nth(2).and_then(|f| f.parse().ok()) {
                micros.push(us);
            }
        }
    }
    Ok(micros)
}
