//! The benchmark's PostgreSQL: a private cluster with durable settings, and the fresh,
//! migrated database each run gets.

use anyhow::{Context, bail};
use pgcluster::{Binaries, Cluster};
use sqlx::PgPool;

use super::Options;
use crate::db;

pub struct Pg {
    // Dropped last (fields drop in order): the pools close before the server goes.
    admin: PgPool,
    cluster: Cluster,
}

/// The settings the figures are measured with, shown in machine.txt.
const SHOWN: &str = "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name)
    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes',
    'wal_sync_method', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'max_connections')";

impl Pg {
    pub async fn start(options: &Options) -> anyhow::Result<Pg> {
        let shared_buffers = if options.quick { "128MB" } else { "512MB" };
        let connections = (2 * options.concurrency + 60).max(100).to_string();
        let diagnose = options.diagnose;
        let cluster = tokio::task::spawn_blocking(move || {
            let mut builder = Cluster::temporary()
                .binaries(Binaries::find_or_install()?)
                // A benchmark pays for durability, as production does.
                .throwaway(false)
                .setting("fsync", "on")
                .setting("synchronous_commit", "on")
                .setting("full_page_writes", "on")
                .setting("shared_buffers", shared_buffers)
                .setting("max_wal_size", "4GB")
                .setting("checkpoint_timeout", "15min")
                .setting("max_connections", &connections);
            if diagnose {
                builder = builder
                    .setting("shared_preload_libraries", "pg_stat_statements")
                    .setting("track_io_timing", "on");
            }
            builder.start()
        })
        .await?
        .context("starting the benchmark's PostgreSQL cluster")?;
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&cluster.url("postgres"))
            .await
            .context("connecting to the benchmark's cluster")?;
        let pg = Pg { admin, cluster };
        let settings = pg.settings().await?;
        if !settings.contains("fsync=on") || !settings.contains("synchronous_commit=on") {
            bail!("PostgreSQL is not durable: {settings}");
        }
        Ok(pg)
    }

    pub async fn settings(&self) -> anyhow::Result<String> {
        Ok(sqlx::query_scalar(SHOWN).fetch_one(&self.admin).await?)
    }

    pub async fn version(&self) -> anyhow::Result<(String, i32)> {
        let text = sqlx::query_scalar("SELECT version()")
            .fetch_one(&self.admin)
            .await?;
        let num: String = sqlx::query_scalar("SHOW server_version_num")
            .fetch_one(&self.admin)
            .await?;
        Ok((text, num.parse().context("server_version_num")?))
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn url(&self, database: &str) -> String {
        self.cluster.url(database)
    }

    /// A pool on `database` that finds hookd's tables as hookd does.
    pub async fn pool(&self, database: &str, max: u32) -> anyhow::Result<PgPool> {
        db::pool(&self.url(database), max).await
    }

    /// `database`, dropped if it existed, created and migrated by hookd's own migrations.
    pub async fn fresh(&self, database: &str) -> anyhow::Result<PgPool> {
        self.drop_database(database).await?;
        self.admin(&format!("CREATE DATABASE \"{database}\""))
            .await?;
        let pool = self.pool(database, 4).await?;
        hookd::migrate(&pool, &common::db::schema::Schema::default())
            .await
            .with_context(|| format!("migrating {database}"))?;
        Ok(pool)
    }

    /// A copy of `template` (which nobody may be connected to), file by file where the
    /// server can: far faster than the WAL-logged copy for a large template.
    pub async fn copy(&self, template: &str, database: &str) -> anyhow::Result<()> {
        self.drop_database(database).await?;
        let strategy = if self.version().await?.1 >= 150_000 {
            " STRATEGY = FILE_COPY"
        } else {
            ""
        };
        self.admin(&format!(
            "CREATE DATABASE \"{database}\" TEMPLATE \"{template}\"{strategy}"
        ))
        .await
    }

    pub async fn drop_database(&self, database: &str) -> anyhow::Result<()> {
        self.admin(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .await
    }

    /// Starts each run from a clean slate of dirty buffers.
    pub async fn checkpoint(&self) -> anyhow::Result<()> {
        self.admin("CHECKPOINT").await
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::query(sql)
            .execute(&self.admin)
            .await
            .with_context(|| sql.to_owned())?;
        Ok(())
    }
}

/// Runs `sql` (one statement, no result) on `pool`, with the statement in the error.
pub async fn exec(pool: &PgPool, sql: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .with_context(|| sql.to_owned())?;
    Ok(())
}

/// One number from `sql`.
pub async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .with_context(|| sql.to_owned())
}

/// The database server's clock, to compare with the times it records.
pub async fn now(pool: &PgPool) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(pool).await?)
}

/// Whether hookd's queue holds anything, from the queue's index: counting it (`stats::queue`,
/// as hooktop does) scans the backlog, 55 ms a time at 100,000, which PostgreSQL would take
/// from the hookd being measured.
pub async fn backlog_left(pool: &PgPool) -> anyhow::Result<bool> {
    Ok(common::db::events::next_due_at(pool).await?.is_some())
}
