//! The database side: the businesses the payloads refer to, the check that every acknowledged
//! event was stored, and `refresh-bench` (hooktop's refresh, through the same `common` calls).

use std::time::{Duration, Instant};

use anyhow::Context;
use common::Source;
use common::db::clusters;
use common::db::dlq::{self, DeadFilter, PurgeFilter};
use common::db::schema::{self, Schema};
use common::db::selection::{self, Selection};
use common::db::stats;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::payload::{Ids, SEED_BUSINESSES_SQL};

/// A pool on hookd's database; `HOOKD_SCHEMA` names hookd's schema as it does for hookd.
pub async fn pool(url: &str, max: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse().context("DATABASE_URL is invalid")?;
    let schema: Schema = match std::env::var("HOOKD_SCHEMA") {
        Ok(name) => name
            .parse()
            .map_err(anyhow::Error::msg)
            .context("HOOKD_SCHEMA")?,
        Err(_) => Schema::default(),
    };
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(schema::connect_options(options, &schema))
        .await
        .context("connecting to DATABASE_URL")
}

/// Creates the bench businesses if missing; returns their database ids by K.
pub async fn ensure_businesses(pool: &PgPool, count: u64) -> anyhow::Result<Vec<i64>> {
    let count = i32::try_from(count).context("--businesses is too large")?;
    sqlx::query(SEED_BUSINESSES_SQL)
        .bind(count)
        .execute(pool)
        .await
        .context("creating the bench businesses (is the schema migrated?)")?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT substr(stripe_customer_id, 13)::int AS k, id FROM businesses
         WHERE stripe_customer_id LIKE 'cus\\_loadgen\\_%' AND substr(stripe_customer_id, 13)::int < $1",
    )
    .bind(count)
    .fetch_all(pool)
    .await?;
    let mut ids = vec![0; count as usize];
    for (k, id) in rows {
        ids[k as usize] = id;
    }
    Ok(ids)
}

/// How many of the acknowledged events are in `events`, looked up by the unique key in chunks.
pub async fn count_stored(
    pool: &PgPool,
    ids: &Ids,
    acked: &[(Source, u64)],
) -> anyhow::Result<u64> {
    const CHUNK: usize = 5_000;
    let mut found = 0u64;
    for source in Source::ALL {
        let keys: Vec<String> = acked
            .iter()
            .filter(|(s, _)| *s == source)
            .map(|(s, i)| ids.event_id(*s, *i))
            .collect();
        for chunk in keys.chunks(CHUNK) {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM event_keys k JOIN events e ON e.id = k.id
                 WHERE k.source = $1 AND k.event_id = ANY($2)",
            )
            .bind(source.as_str())
            .bind(chunk)
            .fetch_one(pool)
            .await
            .context("looking up acknowledged events")?;
            found += n as u64;
        }
    }
    Ok(found)
}

#[derive(Debug, Serialize)]
pub struct RefreshReport {
    pub runs: usize,
    /// One refresh: every query below, one after the other.
    pub median_ms: f64,
    pub min_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
    /// Median per query.
    pub queries: Vec<(String, f64)>,
    /// Median of what the DLQ's recovery reads, apart from the refresh: the clusters pane's
    /// query and the previews its keys ask for first.
    pub recovery: Vec<(String, f64)>,
    pub events_estimate: i64,
    pub dead: i64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// hooktop's refresh, query by query: `stats::queue`, `stats::totals` (5 min, 1 h, 24 h),
/// `stats::throughput(60)`, `stats::by_type(24 h)` and `dlq::list(limit 200)`; and, timed
/// apart, the clusters and the retry and purge previews.
pub async fn refresh_bench(pool: &PgPool, runs: usize) -> anyhow::Result<RefreshReport> {
    const NAMES: [&str; 7] = [
        "stats::queue",
        "stats::totals(5m)",
        "stats::totals(1h)",
        "stats::totals(24h)",
        "stats::throughput(60)",
        "stats::by_type(24h)",
        "dlq::list(200)",
    ];
    let filter = DeadFilter {
        limit: 200,
        ..DeadFilter::default()
    };
    let runs = runs.max(1);
    let mut per_query: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); NAMES.len()];
    let mut totals = Vec::with_capacity(runs);
    const RECOVERY: [&str; 3] = [
        "clusters::list(50)",
        "selection::preview(all)",
        "dlq::purge_preview(7d)",
    ];
    let mut recovery: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); RECOVERY.len()];
    let mut dead = 0;
    // One untimed round first, as hooktop's first screen would be.
    for round in 0..=runs {
        let mut t = [Duration::ZERO; NAMES.len()];
        let all = Instant::now();
        let started = Instant::now();
        let queue = stats::queue(pool).await?;
        t[0] = started.elapsed();
        let started = Instant::now();
        stats::totals(pool, chrono::TimeDelta::minutes(5)).await?;
        t[1] = started.elapsed();
        let started = Instant::now();
        stats::totals(pool, chrono::TimeDelta::hours(1)).await?;
        t[2] = started.elapsed();
        let started = Instant::now();
        stats::totals(pool, chrono::TimeDelta::hours(24)).await?;
        t[3] = started.elapsed();
        let started = Instant::now();
        stats::throughput(pool, 60).await?;
        t[4] = started.elapsed();
        let started = Instant::now();
        stats::by_type(pool, chrono::TimeDelta::hours(24)).await?;
        t[5] = started.elapsed();
        let started = Instant::now();
        dlq::list(pool, &filter).await?;
        t[6] = started.elapsed();
        let total = all.elapsed();
        dead = queue.dead;
        if round == 0 {
            continue;
        }
        totals.push(ms(total));
        for (q, d) in t.iter().enumerate() {
            per_query[q].push(ms(*d));
        }
        let started = Instant::now();
        clusters::list(pool, 50).await?;
        recovery[0].push(ms(started.elapsed()));
        let started = Instant::now();
        selection::preview(pool, &Selection::All).await?;
        recovery[1].push(ms(started.elapsed()));
        let started = Instant::now();
        dlq::purge_preview(pool, &PurgeFilter::older_than(chrono::TimeDelta::days(7))).await?;
        recovery[2].push(ms(started.elapsed()));
    }
    totals.sort_by(f64::total_cmp);
    let queries = medians(&NAMES, per_query);
    let recovery = medians(&RECOVERY, recovery);
    let events_estimate: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'events'")
            .fetch_one(pool)
            .await?;
    Ok(RefreshReport {
        runs,
        median_ms: quantile(&totals, 0.5),
        min_ms: totals[0],
        p90_ms: quantile(&totals, 0.9),
        max_ms: totals[totals.len() - 1],
        queries,
        recovery,
        events_estimate: events_estimate.max(0.0) as i64,
        dead,
    })
}

impl RefreshReport {
    pub fn human(&self) -> String {
        let mut out = format!(
            "refresh x{} (~{} events, {} dead): median {:.2} ms, min {:.2}, p90 {:.2}, max {:.2}\n",
            self.runs,
            self.events_estimate,
            self.dead,
            self.median_ms,
            self.min_ms,
            self.p90_ms,
            self.max_ms
        );
        let lines = |medians: &[(String, f64)]| -> String {
            medians
                .iter()
                .map(|(name, median)| format!("  {name:<24} median {median:>8.2} ms\n"))
                .collect()
        };
        out += &lines(&self.queries);
        out += "DLQ recovery, apart from the refresh:\n";
        out += &lines(&self.recovery);
        out
    }
}

/// Each name with the median of its samples.
fn medians(names: &[&str], samples: Vec<Vec<f64>>) -> Vec<(String, f64)> {
    names
        .iter()
        .zip(samples)
        .map(|(name, mut v)| {
            v.sort_by(f64::total_cmp);
            ((*name).to_owned(), quantile(&v, 0.5))
        })
        .collect()
}

/// Stores `count` pending events through ingest's own statement, with the bodies `run` sends:
/// a backlog for the workers to drain.
pub async fn seed_backlog(
    pool: &PgPool,
    generator: &crate::payload::Generator,
    mix: &[Source],
    count: u64,
) -> anyhow::Result<u64> {
    use common::db::events::{Inserted, NewEvent, insert_many};
    const CHUNK: u64 = 2_000;
    let now = chrono::Utc::now().timestamp();
    let mut stored = 0;
    let mut i = 0;
    while i < count {
        let end = (i + CHUNK).min(count);
        let mut batch = Vec::with_capacity(CHUNK as usize);
        for j in i..end {
            let source = mix[(j % mix.len() as u64) as usize];
            let (id, kind, body) = generator.body(source, j, now);
            batch.push(NewEvent {
                source,
                event_id: common::ProviderEventId::parse(id).context("generated event id")?,
                event_type: common::EventType::parse(kind).context("generated event type")?,
                body: body.into_bytes(),
                jsonb_checked: false,
            });
        }
        let answers = insert_many(pool, &batch)
            .await
            .context("storing the backlog")?;
        stored += answers
            .iter()
            .filter(|a| matches!(a, Inserted::New(_)))
            .count() as u64;
        i = end;
    }
    Ok(stored)
}
