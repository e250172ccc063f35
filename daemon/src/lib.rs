//! hookd: receives webhooks, verifies them, stores them durably in PostgreSQL before answering,
//! then processes them with retries and a dead-letter queue.
//!
//! `main.rs` only parses the command line and configuration; everything else is here so tests
//! can run the real server in-process.

pub mod announce;
pub mod cli;
pub mod config;
pub mod handlers;
pub mod http;
pub mod ingest;
pub mod liveness;
pub mod metrics;
pub mod providers;
pub mod reachability;
pub mod retention;
pub mod send;
pub mod systemd;
pub mod verify;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use common::db::schema::{self, AppTables, Schema, SchemaError};
pub use config::Config;
pub use http::{AppState, app};

use crate::announce::Announcer;
use crate::handlers::forward::Forwarder;
use crate::metrics::Metrics;
use crate::worker::{RetryPolicy, Worker, WorkerConfig};
use common::db::business::Statements;

/// How long a request waits for a database connection before hookd answers 503: a sender
/// retries sooner than it would wait.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How hookd's connections to the database are made.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub schema: Schema,
    pub max_connections: u32,
    /// PostgreSQL's `statement_timeout` and `lock_timeout` for every session; zero is off.
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

impl PoolSettings {
    /// For the command-line tools: no timeouts, since an operator's purge may take its time.
    pub fn tool(schema: Schema, max_connections: u32) -> Self {
        PoolSettings {
            schema,
            max_connections,
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::ZERO,
        }
    }
}

/// A pool for `database_url` whose connections find hookd's tables in `schema`. Connections
/// are made lazily, so hookd starts (and answers 503) even while the database is down, and
/// recovers by itself when it returns.
pub fn pool(
    database_url: &secrecy::SecretString,
    settings: &PoolSettings,
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .expose_secret()
        .parse()
        .context("DATABASE_URL is invalid")?;
    Ok(pool_with(options, settings))
}

/// A pool like [`pool`]'s with the connection options of `like`, for callers that already
/// hold one (tests bring the pool of their private database).
pub fn pool_like(like: &PgPool, settings: &PoolSettings) -> PgPool {
    pool_with((*like.connect_options()).clone(), settings)
}

fn pool_with(options: PgConnectOptions, settings: &PoolSettings) -> PgPool {
    // The server probes every connection and gives up on data a peer does not acknowledge,
    // so the session of a host that vanished mid-batch ends within seconds and the row locks
    // its transaction held go with it. The statement and lock timeouts keep one stuck
    // statement (or a lock someone else holds) from freezing ingest behind it.
    let options = options.application_name("hookd").options([
        ("tcp_keepalives_idle", "5".to_owned()),
        ("tcp_keepalives_interval", "2".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
        ("tcp_user_timeout", "10000".to_owned()),
        (
            "statement_timeout",
            settings.statement_timeout.as_millis().to_string(),
        ),
        (
            "lock_timeout",
            settings.lock_timeout.as_millis().to_string(),
        ),
    ]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(schema::connect_options(options, &settings.schema))
}

/// Applies the schema, after checking that the application's tables fit hookd's handlers.
pub async fn migrate(pool: &PgPool, schema: &Schema) -> Result<AppTables, SchemaError> {
    schema::migrate(pool, schema).await
}

/// Longest pause between attempts to reach the database at start-up.
const MAX_START_BACKOFF: Duration = Duration::from_secs(5);

/// Applies the schema, waiting for the database while it cannot be reached: after a reboot
/// or an outage hookd comes up when PostgreSQL does, instead of failing its start. Returns
/// false if `shutdown` came first.
async fn migrate_when_reachable(
    pool: &PgPool,
    schema: &Schema,
    shutdown: &CancellationToken,
) -> Result<Option<AppTables>, SchemaError> {
    let mut pause = Duration::from_millis(100);
    loop {
        match schema::migrate(pool, schema).await {
            Ok(tables) => return Ok(Some(tables)),
            Err(e) if e.database().is_some_and(unreachable) => {
                tracing::warn!(error = %e, "database unreachable; waiting for it");
                systemd::status(&format!("waiting for the database: {e}"));
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => pause = (pause * 2).min(MAX_START_BACKOFF),
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Per-minute counters older than this are deleted.
const KEEP_COUNTERS: chrono::Duration = chrono::Duration::days(35);
/// Counter shards of minutes older than this are folded together; nothing writes to them.
const SETTLED_COUNTERS: chrono::Duration = chrono::Duration::minutes(2);

/// Days ahead whose dead-letter partitions are kept ready, so events keep dying into a day of
/// their own while maintenance cannot run for a while.
const DEAD_DAYS_AHEAD: u32 = 2;

/// Housekeeping every few minutes, from the start: folds the counter shards of past minutes,
/// deletes old minutes every hour, and keeps the dead-letter days ready. Any number of hookd
/// processes may run this at once.
async fn maintain(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(300));
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = common::db::dlq::prepare_days(&pool, DEAD_DAYS_AHEAD).await {
            tracing::warn!(error = %e, "cannot prepare the dead-letter partitions");
        }
        if let Err(e) = common::db::stats::compact(&pool, SETTLED_COUNTERS).await {
            tracing::warn!(error = %e, "cannot compact dashboard counters");
        }
        if rounds.is_multiple_of(12) {
            match common::db::stats::prune(&pool, KEEP_COUNTERS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "pruned old dashboard counters"),
                Err(e) => tracing::warn!(error = %e, "cannot prune dashboard counters"),
            }
        }
        rounds += 1;
    }
}

/// Keeps the queue's partition clear of the rows settled events left behind (see
/// [`common::db::events::vacuum_queue`]), looking once a second.
async fn vacuum_queue(pool: PgPool, shutdown: CancellationToken) {
    const MIN_DEAD: i64 = 5_000;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match common::db::events::vacuum_queue(&pool, MIN_DEAD).await {
            Ok(Some(dead)) => tracing::debug!(dead, "vacuumed the queue"),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot vacuum the queue; autovacuum will"),
        }
    }
}

/// Folds the dead-letter tally (migration 0013) every few seconds, so however fast events die
/// in an incident, what hooktop and the previews sum stays a few seconds of deaths.
async fn fold_dead_tally(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = common::db::dlq::compact_tally(&pool).await {
            tracing::debug!(error = %e, "cannot fold the dead-letter tally; counts stay exact");
        }
    }
}

/// The database could not be reached at all (as opposed to refusing what we sent).
pub(crate) fn unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| {
            // cannot_connect_now (starting up or shutting down), too_many_connections.
            code == "57P03" || code == "53300"
        })
}

/// The connection in hand is gone: its socket, or the server ending its session (a restart,
/// an administrator). Unlike [`unreachable`], a pool that timed out is not among these: a new
/// connection may serve at once after one of these, not after that.
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_))
        || e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code.starts_with("57P"))
}

/// The workers of `config`, for the application's `tables`.
pub fn worker(
    pool: PgPool,
    config: &Config,
    tables: &AppTables,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Worker> {
    let forwarder = Forwarder::new(
        config.forward_urls.clone(),
        config.forward_secret.clone(),
        config.forward_timeout,
        config.forward_https_only,
    )
    .context("building the HTTP client for forwarding")?;
    Ok(Worker::new(
        pool,
        WorkerConfig {
            policy: RetryPolicy {
                max_attempts: config.max_attempts,
                base: config.retry_base,
                cap: config.retry_max,
            },
            batch_size: config.batch_size,
            batch_wait: config.batch_wait,
            lease: config.lease,
            poll_interval: config.poll_interval,
            forward_timeout: config.forward_timeout,
            statements: Statements::new(tables),
        },
        Arc::new(forwarder),
        metrics,
    ))
}

/// Runs the receiver and the workers until `shutdown` is cancelled, then drains: requests in
/// progress finish, workers complete their batch within `shutdown_timeout`, and leases of work
/// abandoned past that bound are handed back.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = pool(&config.database_url, &config.pool_settings())?;
    run_with_pool(config, pool, listener, shutdown).await
}

/// [`run`] on a pool the caller made (tests bring the pool of their private database).
pub async fn run_with_pool(
    config: Config,
    pool: PgPool,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    systemd::status("applying migrations");
    let Some(tables) = migrate_when_reachable(&pool, &config.schema, &shutdown).await? else {
        return Ok(());
    };
    let metrics = Arc::new(Metrics::default());
    let worker = worker(pool.clone(), &config, &tables, metrics.clone())?;
    let heartbeat = (config.workers > 0).then(|| worker.heartbeat());

    let announcer = Arc::new(Announcer::default());
    tokio::spawn(announcer.clone().run(pool.clone(), shutdown.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    if config.workers > 0 {
        tasks.spawn(worker::listen(
            pool.clone(),
            announcer.workers(),
            shutdown.clone(),
        ));
    }
    // Held past the drain, so the claims of workers still finishing are not rescued away.
    let alive = CancellationToken::new();
    let liveness = (config.workers > 0).then(|| {
        tokio::spawn(liveness::run(
            pool.clone(),
            worker.owner(),
            announcer.clone(),
            alive.clone(),
        ))
    });
    if liveness.is_some() && !worker.owner().held_within(Duration::from_secs(3)).await {
        tracing::warn!("claiming without a liveness lock for now: only leases return those claims");
    }
    for _ in 0..config.workers {
        tasks.spawn(worker.clone().run(announcer.clone(), shutdown.clone()));
    }
    tokio::spawn(maintain(pool.clone(), shutdown.clone()));
    if config.workers > 0 {
        tokio::spawn(vacuum_queue(pool.clone(), shutdown.clone()));
    }
    tokio::spawn(fold_dead_tally(pool.clone(), shutdown.clone()));
    // Before the first request: ingest claims keys with the dedup window the database holds.
    if let Err(e) = common::db::retention::store_policy(&pool, &config.retention.policy).await {
        tracing::warn!(error = %e, "cannot store the retention policy yet; the retention job will");
    }
    tokio::spawn(retention::run(
        pool.clone(),
        config.retention.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(systemd::watchdog(
        pool.clone(),
        heartbeat.clone(),
        shutdown.clone(),
    ));

    let app = app(AppState::new(
        pool.clone(),
        &config,
        metrics,
        heartbeat,
        announcer,
    ));
    let address = listener.local_addr()?;
    tracing::info!(%address, workers = config.workers, "hookd listening");
    systemd::ready(&address.to_string());
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        systemd::stopping();
    });
    http::serve(listener, app, config.max_connections, shutdown.clone()).await;

    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?config.shutdown_timeout, "workers did not finish in time");
        tasks.abort_all();
        worker.release_in_flight().await;
    }
    alive.cancel();
    if let Some(liveness) = liveness {
        let _ = liveness.await;
    }
    pool.close().await;
    tracing::info!("hookd stopped");
    Ok(())
}
