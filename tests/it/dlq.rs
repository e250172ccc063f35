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
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error,
                                     dead_at)
                 SELECT id, 4, now(), 1, 'dead', last_error, dead_at FROM events",
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
    assert_eq!(retry_every_dead(&pool).await, 5);
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
    assert_eq!(retry_every_dead(&pool).await, 5);
    assert_eq!(retry_every_dead(&pool).await, 0);
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

/// Creates the dead-letter partitions of the last `days` days, as a hookd that saw events die
/// on each of them would have left them.
async fn past_days(pool: &PgPool, days: i32) {
    sqlx::query(
        "SELECT hookd_create_dead_day((now() AT TIME ZONE 'UTC')::date - ago)
         FROM generate_series(1, $1) AS ago",
    )
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

/// The partition holding `table`'s row matched by `filter`.
async fn partition_of(pool: &PgPool, table: &str, filter: &str) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {filter}"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn purging_drops_whole_days_with_their_history(pool: PgPool) {
    past_days(&pool, 12).await;
    backlog(&pool, 12).await;
    // Event n died n days ago less an hour, so event 7 is just short of a week old.
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 2, last_error = 'boom',
                dead_at = now() - make_interval(days => id::int) + interval '1 hour'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, dead_at)
         SELECT id, a, dead_at, 1, CASE a WHEN 2 THEN 'dead' ELSE 'failed' END, dead_at
         FROM events, generate_series(1, 2) AS a",
    )
    .execute(&pool)
    .await
    .unwrap();
    let day_of = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT to_char(dead_at AT TIME ZONE 'UTC', 'YYYYMMDD') FROM events WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let day10 = day_of(10).await;
    assert_eq!(
        partition_of(&pool, "events", "id = 10").await,
        [format!("events_dead_{day10}")],
        "a dead event sits in the partition of its day"
    );
    assert_eq!(
        partition_of(&pool, "event_attempts", "event_id = 10").await,
        [format!("event_attempts_dead_{day10}")],
        "and its history with it"
    );
    let (source, event_id): (String, String) =
        sqlx::query_as("SELECT source, event_id FROM events WHERE id = 10")
            .fetch_one(&pool)
            .await
            .unwrap();

    let week = chrono::Duration::days(7);
    assert_eq!(dlq::count_older_than(&pool, week).await.unwrap(), 5);
    assert_eq!(dlq::purge_older_than(&pool, week).await.unwrap(), 5);

    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        14,
        "the history of the purged events went with them, the rest stayed"
    );
    // Days wholly past the cut are gone as tables, not just emptied; the day the cut falls
    // in was emptied row by row and stays.
    let gone: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("events_dead_{day10}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gone, None, "the day was dropped");
    let gone: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("event_attempts_dead_{day10}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gone, None, "its history's partition too");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM hookd_dead_days() AS day
             WHERE (day + 1)::timestamp AT TIME ZONE 'UTC' <= now() - interval '7 days'"
        )
        .await,
        0
    );

    // The purged event's key stays: a late redelivery is still a duplicate.
    let redelivered = common::db::events::NewEvent {
        source: source.parse().unwrap(),
        event_id: common::ProviderEventId::parse(&event_id).unwrap(),
        event_type: common::EventType::parse("load.test").unwrap(),
        body: b"{}".to_vec(),
        jsonb_checked: false,
    };
    assert_eq!(
        common::db::events::insert(&pool, &redelivered)
            .await
            .unwrap(),
        common::db::events::Inserted::Duplicate
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn dying_and_retrying_move_the_event_and_its_history_together(pool: PgPool) {
    backlog(&pool, 3).await;
    // Nothing handles this type from this source: every attempt fails until the event dies.
    sqlx::query("UPDATE events SET payload = '{}', event_type = 'x', source = 'stripe'")
        .execute(&pool)
        .await
        .unwrap();
    let worker = worker(&pool, &[]);
    drain(&worker, &pool, std::time::Duration::from_secs(5)).await;
    assert_eq!(dlq::count(&pool).await.unwrap(), 3);
    let attempts = count(&pool, "SELECT count(*) FROM event_attempts").await;
    assert!(attempts >= 3, "{attempts} attempts");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events
             WHERE tableoid::regclass::text
                   <> 'events_dead_' || to_char(dead_at AT TIME ZONE 'UTC', 'YYYYMMDD')"
        )
        .await,
        0,
        "each dead event sits in the partition of the day it died"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts a JOIN events e ON e.id = a.event_id
             WHERE a.tableoid::regclass::text
                   <> 'event_attempts_dead_' || to_char(e.dead_at AT TIME ZONE 'UTC', 'YYYYMMDD')"
        )
        .await,
        0,
        "every attempt, not just the last, follows its event"
    );

    assert_eq!(retry_every_dead(&pool).await, 3);
    assert_eq!(partition_of(&pool, "events", "true").await, ["events_live"]);
    assert_eq!(
        partition_of(&pool, "event_attempts", "true").await,
        ["event_attempts_live"]
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        attempts,
        "history kept"
    );
    // A purge now finds nothing: the history of revived events is not dead any more.
    assert_eq!(
        dlq::purge_older_than(&pool, chrono::Duration::zero())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        attempts
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn days_are_prepared_ahead_and_empty_past_days_dropped(pool: PgPool) {
    past_days(&pool, 3).await;
    // One event died two days ago; the other past days saw no deaths.
    backlog(&pool, 1).await;
    sqlx::query("UPDATE events SET state = 'dead', dead_at = now() - interval '2 days'")
        .execute(&pool)
        .await
        .unwrap();
    dlq::prepare_days(&pool, 2).await.unwrap();
    let offsets = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT day - (now() AT TIME ZONE 'UTC')::date FROM hookd_dead_days() AS day",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // Today and two days ahead are ready (the migration prepared a third, unless it ran
    // yesterday); of the past days only the one with a death is left.
    let prepared = offsets().await;
    assert!(
        [[-2, 0, 1, 2, 3].as_slice(), &[-2, 0, 1, 2]].contains(&prepared.as_slice()),
        "{prepared:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events WHERE state = 'dead'").await,
        1
    );
    // Two processes at once, with empty past days to drop again: neither fails, and they agree.
    past_days(&pool, 3).await;
    let (a, b) = tokio::join!(dlq::prepare_days(&pool, 2), dlq::prepare_days(&pool, 2));
    a.unwrap();
    b.unwrap();
    assert_eq!(offsets().await, prepared);
}

/// A retry waiting on an event that another session moves out of the dead partitions gets
/// PostgreSQL's serialization failure; it looks again and sees the event is no longer dead.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_retry_racing_a_move_looks_again(pool: PgPool) {
    five_dead(&pool).await;
    let mut other = pool.begin().await.unwrap();
    sqlx::query("UPDATE events SET state = 'pending', dead_at = NULL WHERE id = 3")
        .execute(&mut *other)
        .await
        .unwrap();
    let retry = tokio::spawn({
        let pool = pool.clone();
        async move { dlq::retry(&pool, 3).await }
    });
    // The retry's row lock waits for the move to commit.
    wait_for(
        &pool,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE 'SELECT state FROM events%'",
        1,
        std::time::Duration::from_secs(10),
    )
    .await;
    other.commit().await.unwrap();
    assert!(matches!(
        retry.await.unwrap(),
        Err(DlqError::NotDead { id: 3, ref state }) if state == "pending"
    ));
}

/// A day another session keeps busy is waited for, given up on after the lock timeout, and
/// dropped on a later try: the purge still removes it all.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_purge_waits_out_a_busy_day(pool: PgPool) {
    past_days(&pool, 12).await;
    backlog(&pool, 3).await;
    sqlx::query("UPDATE events SET state = 'dead', dead_at = now() - interval '10 days'")
        .execute(&pool)
        .await
        .unwrap();
    // A long dashboard read holding the dead side for longer than one lock timeout (1 s).
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events_dead IN ACCESS SHARE MODE")
        .execute(&mut *reader)
        .await
        .unwrap();
    let purge = tokio::spawn({
        let pool = pool.clone();
        async move { dlq::purge_older_than(&pool, chrono::Duration::days(7)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert!(!purge.is_finished(), "the purge waited for the reader");
    reader.commit().await.unwrap();
    assert_eq!(purge.await.unwrap().unwrap(), 3);
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
}
