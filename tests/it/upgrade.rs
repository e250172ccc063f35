//! Upgrading a database that already holds events.

use std::borrow::Cow;

use common::MIGRATOR;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::harness::*;

/// Migration 0005 rebuilds `events` and `event_attempts` as partitioned tables: every row, id,
/// key and attempt must come through, dead events must land in their day, and new ids must not
/// reuse old ones.
#[sqlx::test(migrations = false)]
async fn partitioning_the_dead_letter_queue_keeps_everything(pool: PgPool) {
    let before = Migrator {
        migrations: Cow::Owned(MIGRATOR.migrations[..4].to_vec()),
        ..Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    backlog(&pool, 6).await;
    // One event purged before the upgrade: its id must never come back.
    sqlx::query("DELETE FROM events WHERE id = 6")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET state = CASE WHEN id <= 2 THEN 'dead' ELSE 'succeeded' END,
                dead_at = CASE id WHEN 1 THEN now() - interval '3 days'
                                  WHEN 2 THEN now() - interval '90 days' END,
                processed_at = CASE WHEN id > 2 THEN now() END",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome)
         SELECT id, 1, now(), 1, CASE WHEN id <= 2 THEN 'dead' ELSE 'succeeded' END FROM events",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rows = "SELECT string_agg(concat_ws(',', id, source, event_id, state, dead_at, body), ';'
                                  ORDER BY id) FROM events";
    let events_before: String = sqlx::query_scalar(rows).fetch_one(&pool).await.unwrap();

    MIGRATOR.run(&pool).await.unwrap();

    let events_after: String = sqlx::query_scalar(rows).fetch_one(&pool).await.unwrap();
    assert_eq!(events_after, events_before);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events e JOIN event_keys k USING (id, source, event_id)"
        )
        .await,
        5,
        "every event has its key"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts a JOIN events e ON e.id = a.event_id"
        )
        .await,
        5
    );
    let homes: Vec<(i64, String)> = sqlx::query_as(
        "SELECT * FROM (
             SELECT event_id AS id, tableoid::regclass::text AS home FROM event_attempts
             UNION ALL
             SELECT id, tableoid::regclass::text FROM events
         ) h
         WHERE id <= 3
         ORDER BY home COLLATE \"C\"",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let days: Vec<String> = sqlx::query_scalar(
        "SELECT to_char(dead_at AT TIME ZONE 'UTC', 'YYYYMMDD') FROM events WHERE id <= 2 ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut want = vec![
        (1, format!("event_attempts_dead_{}", days[0])),
        (2, format!("event_attempts_dead_{}", days[1])),
        (3, "event_attempts_live".to_owned()),
        (1, format!("events_dead_{}", days[0])),
        (2, format!("events_dead_{}", days[1])),
        (3, "events_live".to_owned()),
    ];
    want.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        homes, want,
        "each dead event is in the partition of its day, with its history"
    );
    let next = store(
        &pool,
        common::Source::Custom,
        "msg_after",
        "load.test",
        "{}",
    )
    .await;
    assert_eq!(next, 7, "ids continue where they were, past the purged one");
    assert_eq!(
        common::db::dlq::purge_older_than(&pool, chrono::Duration::days(7))
            .await
            .unwrap(),
        1,
        "the 90-day-old event's day is dropped"
    );
}
