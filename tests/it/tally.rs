//! The dead-letter tally (migration 0013): whatever moves events into, within or out of the
//! dead-letter queue, and however many do it at once, the counts hooktop, the clusters and
//! the previews read from `dead_tally` are the counts of the rows.

use std::time::Duration;

use common::MIGRATOR;
use common::db::archive::{self, Actor, ArchiveTarget};
use common::db::dlq::{self, PurgeFilter, PurgeToken};
use common::db::selection::{self, Selection};
use sqlx::PgPool;

use crate::harness::*;

type Counted = Vec<(
    String,
    Option<chrono::NaiveDate>,
    String,
    String,
    String,
    i64,
)>;

/// What the tally says, by partition, day and cluster.
async fn tallied(pool: &PgPool) -> Counted {
    sqlx::query_as(
        "SELECT part, day, source, event_type, fingerprint, sum(n)::bigint FROM dead_tally
         GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// What the rows say, the same way.
async fn counted(pool: &PgPool) -> Counted {
    sqlx::query_as(
        "SELECT tableoid::regclass::text, (dead_at AT TIME ZONE 'UTC')::date, source,
                event_type, error_fingerprint, count(*)
         FROM events_dead GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn assert_true(pool: &PgPool, after: &str) {
    assert_eq!(tallied(pool).await, counted(pool).await, "after {after}");
    assert_eq!(
        dlq::count(pool).await.unwrap(),
        count(pool, "SELECT count(*) FROM events WHERE state = 'dead'").await,
        "after {after}"
    );
}

async fn sql(pool: &PgPool, statement: &str) {
    sqlx::query(statement).execute(pool).await.unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_way_in_and_out_of_the_dead_letter_queue_is_counted(pool: PgPool) {
    sql(
        &pool,
        "SELECT hookd_create_dead_day((now() AT TIME ZONE 'UTC')::date - d)
         FROM generate_series(0, 12) AS d",
    )
    .await;
    backlog(&pool, 30).await;
    assert_true(&pool, "nothing died").await;

    // Dying as the runbook's SQL or a repair would write it, across days, with errors of
    // two causes; the fingerprint is the database's, whatever the writer stored.
    sql(
        &pool,
        "UPDATE events SET state = 'dead', dead_at = now() - make_interval(days => id::int % 10),
                last_error = CASE WHEN id % 3 = 0 THEN 'timeout after ' || id || ' s'
                                  ELSE 'no business is linked to customer cus_' || id END,
                error_fingerprint = 'written by hand'
         WHERE id <= 20",
    )
    .await;
    assert_true(&pool, "twenty died").await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT error_fingerprint) FROM events WHERE state = 'dead'"
        )
        .await,
        2
    );
    // Dying under a worker.
    sql(
        &pool,
        "UPDATE events SET source = 'stripe', event_type = 'x', payload = '{}' WHERE id > 20",
    )
    .await;
    let worker = worker(&pool, &[("HOOKD_MAX_ATTEMPTS", "1")]);
    drain(&worker, &pool, Duration::from_secs(5)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events WHERE state = 'dead'").await,
        30
    );
    assert_true(&pool, "a worker killed ten").await;

    // Changed in place: a new error is a new cause, a new type a new cluster.
    sql(
        &pool,
        "UPDATE events SET last_error = 'forward: 503' WHERE id IN (1, 2)",
    )
    .await;
    sql(&pool, "UPDATE events SET event_type = 'x.y' WHERE id = 4").await;
    // Moved to another day.
    sql(
        &pool,
        "UPDATE events SET dead_at = dead_at - interval '1 day' WHERE id = 5",
    )
    .await;
    assert_true(&pool, "changes in place and a move between days").await;

    // Retried one by one and in bulk through a preview; the preview counted what the rows hold.
    dlq::retry(&pool, 1).await.unwrap();
    assert_true(&pool, "a retry").await;
    let all = selection::preview(&pool, &Selection::All).await.unwrap();
    assert_eq!(all.token.count, 29);
    let timeouts = selection::preview(
        &pool,
        &Selection::Cluster {
            source: "custom".into(),
            event_type: "load.test".into(),
            fingerprint: "timeout after <n> s".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        timeouts.token.count,
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'dead' AND source = 'custom'
               AND event_type = 'load.test' AND error_fingerprint = 'timeout after <n> s'"
        )
        .await
    );
    selection::retry(&pool, &timeouts.token).await.unwrap();
    assert_true(&pool, "a cluster's bulk retry").await;
    // They die again under the worker (each has one attempt).
    drain(&worker, &pool, Duration::from_secs(5)).await;
    assert_true(&pool, "dying again").await;

    // Purged: whole days dropped and the cut's day row by row, archived and restored.
    let dir = std::env::temp_dir().join(format!("hookd-tally-{}", std::process::id()));
    let preview = dlq::purge_preview(
        &pool,
        &PurgeFilter::older_than(chrono::Duration::hours(4 * 24 + 12)),
    )
    .await
    .unwrap();
    assert_eq!(
        preview.token.count,
        count(
            &pool,
            "SELECT count(*) FROM events
             WHERE state = 'dead' AND dead_at < now() - interval '4 days 12 hours'"
        )
        .await,
        "the purge preview's count: whole days from the tally, the cut's day from its rows"
    );
    let receipt = archive::purge(
        &pool,
        &preview.token,
        &ArchiveTarget::Dir(dir.clone()),
        &Actor::new("test", "tally"),
    )
    .await
    .unwrap();
    assert_eq!(receipt.purged as i64, preview.token.count);
    assert_true(&pool, "a purge").await;
    archive::restore(
        &pool,
        receipt.archive.as_deref().unwrap(),
        &Actor::new("test", "tally"),
    )
    .await
    .unwrap();
    assert_true(&pool, "a restore").await;
    std::fs::remove_dir_all(&dir).unwrap();

    // Compaction folds the rows and changes no count (bulk changes such as the restore fold
    // when they are done; these do not).
    sql(
        &pool,
        "UPDATE events SET last_error = 'boom' WHERE state = 'dead' AND id % 2 = 0",
    )
    .await;
    assert_true(&pool, "a new cause for half").await;
    let before = tallied(&pool).await;
    assert!(dlq::compact_tally(&pool).await.unwrap() > 0);
    assert_eq!(tallied(&pool).await, before);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM dead_tally").await,
        before.len() as i64,
        "one row per partition, day and cluster"
    );
    assert_eq!(
        dlq::compact_tally(&pool).await.unwrap(),
        0,
        "nothing to fold"
    );

    // The runbook's DELETE, and a TRUNCATE, which no row trigger sees.
    sql(
        &pool,
        "DELETE FROM failed_webhooks WHERE failed_at < NOW() - INTERVAL '7 days'",
    )
    .await;
    assert_true(&pool, "the runbook's DELETE").await;
    sql(&pool, "TRUNCATE events, event_keys, event_attempts").await;
    assert_true(&pool, "a TRUNCATE").await;
    assert!(tallied(&pool).await.is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_deaths_retries_purges_and_folds_keep_the_counts_exact(pool: PgPool) {
    sql(
        &pool,
        "SELECT hookd_create_dead_day((now() AT TIME ZONE 'UTC')::date - d)
         FROM generate_series(0, 3) AS d",
    )
    .await;
    backlog(&pool, 2_000).await;
    let kill = |range: (i64, i64), days: i32| {
        let pool = pool.clone();
        async move {
            for start in (range.0..range.1).step_by(50) {
                sqlx::query(
                    "UPDATE events SET state = 'dead', dead_at = now() - make_interval(days => $3),
                            last_error = 'boom ' || id
                     WHERE id >= $1 AND id < $2 AND state <> 'dead'",
                )
                .bind(start)
                .bind(start + 50)
                .bind(days)
                .execute(&pool)
                .await
                .unwrap();
            }
        }
    };
    let retry = {
        let pool = pool.clone();
        async move {
            for _ in 0..10 {
                let preview = selection::preview(&pool, &Selection::All).await.unwrap();
                selection::retry(&pool, &preview.token).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let fold = {
        let pool = pool.clone();
        async move {
            for _ in 0..40 {
                dlq::compact_tally(&pool).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let purge = {
        let pool = pool.clone();
        async move {
            for _ in 0..5 {
                let token =
                    PurgeToken::unbounded(PurgeFilter::older_than(chrono::Duration::hours(60)));
                archive::purge(&pool, &token, &ArchiveTarget::Off, &Actor::new("test", "t"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::join!(
        kill((1, 700), 0),
        kill((700, 1_400), 1),
        kill((1_400, 2_001), 3),
        retry,
        fold,
        purge
    );
    assert_true(&pool, "all of it at once").await;
    dlq::compact_tally(&pool).await.unwrap();
    assert_true(&pool, "a last fold").await;
}
