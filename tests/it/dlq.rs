//! The dead-letter queue's storage functions and the runbook's SQL.

use common::db::dlq::{self, DeadFilter, DlqError};
use common::{MIGRATOR, Source};
use sqlx::PgPool;

use crate::harness::*;

/// Five dead events: ids 1..=5, died `id` days ago, two Stripe and three custom.
async fn five_dead(pool: &PgPool) {
    backlog(pool, 5).await;
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 4, dead_at = now() - make_interval(days => id::int),
                last_error = CASE WHEN id = 2 THEN 'fails 100%_of the time' ELSE 'timeout' END,
                source = CASE WHEN id <= 2 THEN 'stripe' ELSE 'custom' END",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error)
                 SELECT id, 4, now(), 1, 'dead', last_error FROM events",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn listing_filters_pages_and_matches_text_literally(pool: PgPool) {
    five_dead(&pool).await;
    let ids = |events: Vec<dlq::DeadEvent>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let all = DeadFilter {
        limit: 50,
        ..DeadFilter::default()
    };
    assert_eq!(
        ids(dlq::list(&pool, &all).await.unwrap()),
        [1, 2, 3, 4, 5],
        "newest first"
    );
    let stripe = DeadFilter {
        source: Some(Source::Stripe),
        ..all.clone()
    };
    assert_eq!(ids(dlq::list(&pool, &stripe).await.unwrap()), [1, 2]);
    // `%` and `_` are literal characters in the search text, not wildcards.
    let text = DeadFilter {
        text: Some("100%_".into()),
        ..all.clone()
    };
    assert_eq!(ids(dlq::list(&pool, &text).await.unwrap()), [2]);
    let wildcard = DeadFilter {
        text: Some("%".into()),
        ..all.clone()
    };
    assert_eq!(ids(dlq::list(&pool, &wildcard).await.unwrap()), [2]);
    let page = DeadFilter {
        before_id: Some(3),
        limit: 1,
        ..all.clone()
    };
    assert_eq!(ids(dlq::list(&pool, &page).await.unwrap()), [4]);
    let hostile = DeadFilter {
        event_type: Some("'; DROP TABLE events; --".into()),
        limit: i64::MAX,
        ..all
    };
    assert!(dlq::list(&pool, &hostile).await.unwrap().is_empty());
    assert_eq!(dlq::count(&pool).await.unwrap(), 5);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn retry_gives_a_fresh_budget_and_keeps_history(pool: PgPool) {
    five_dead(&pool).await;
    dlq::retry(&pool, 3).await.unwrap();
    assert_eq!(
        state_of(&pool, 3).await,
        ("pending".into(), 0, Some("timeout".into()))
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts WHERE event_id = 3"
        )
        .await,
        1
    );
    assert!(matches!(
        dlq::retry(&pool, 3).await,
        Err(DlqError::NotDead { id: 3, .. })
    ));
    assert!(matches!(
        dlq::retry(&pool, 99).await,
        Err(DlqError::NotFound(99))
    ));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn retry_all_works_on_a_snapshot(pool: PgPool) {
    five_dead(&pool).await;
    assert_eq!(dlq::retry_all(&pool).await.unwrap(), 5);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events WHERE state = 'pending'").await,
        5
    );
    // Every retried event dies again at once: a second run sees them as new deaths, and the
    // first run, being over, cannot loop on them.
    let worker = worker(&pool, &[]);
    sqlx::query("UPDATE events SET payload = '{}'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET event_type = 'x', source = 'stripe'")
        .execute(&pool)
        .await
        .unwrap();
    drain(&worker, &pool, std::time::Duration::from_secs(5)).await;
    assert_eq!(dlq::count(&pool).await.unwrap(), 5);
    assert_eq!(dlq::retry_all(&pool).await.unwrap(), 5);
    assert_eq!(dlq::retry_all(&pool).await.unwrap(), 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn purge_removes_only_dead_events_older_than_the_age(pool: PgPool) {
    five_dead(&pool).await;
    // An old event that succeeded is history, not DLQ: it stays.
    sqlx::query("UPDATE events SET state = 'succeeded', dead_at = NULL, processed_at = now() - interval '30 days' WHERE id = 5")
        .execute(&pool)
        .await
        .unwrap();
    let age = chrono::Duration::hours(60);
    assert_eq!(dlq::count_older_than(&pool, age).await.unwrap(), 2);
    assert_eq!(dlq::purge_older_than(&pool, age).await.unwrap(), 2);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [1, 2, 5]);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        3,
        "history goes with them"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_runbook_sql_keeps_working(pool: PgPool) {
    five_dead(&pool).await;
    sqlx::query(
        "UPDATE events SET state = 'succeeded', dead_at = NULL, processed_at = now() WHERE id = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    let logs: Vec<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, error FROM webhook_logs ORDER BY processed_at DESC NULLS LAST, id LIMIT 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(logs[0], (1, "succeeded".into(), Some("timeout".into())));
    let failed: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM failed_webhooks ORDER BY failed_at DESC")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(failed, [2, 3, 4, 5]);
    // Dead 2..5 days ago: none is older than 7 days yet, then two are.
    let purge = "DELETE FROM failed_webhooks WHERE failed_at < NOW() - INTERVAL '7 days'";
    assert_eq!(
        sqlx::query(purge)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected(),
        0
    );
    sqlx::query("UPDATE events SET dead_at = dead_at - interval '3 days'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        sqlx::query(purge)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected(),
        2
    );
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        [1, 2, 3],
        "the succeeded event is not in the DLQ view and stays"
    );
    let attempts: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT event_id FROM event_attempts ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, [1, 2, 3], "history goes with the events");
}
