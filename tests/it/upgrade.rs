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
        "SELECT to_char(coalesce(dead_at, processed_at) AT TIME ZONE 'UTC', 'YYYYMMDD')
         FROM events WHERE id <= 3 ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut want = vec![
        (1, format!("event_attempts_dead_{}", days[0])),
        (2, format!("event_attempts_dead_{}", days[1])),
        // Processed, so in its day since migration 0012.
        (3, format!("event_attempts_done_{}", days[2])),
        (1, format!("events_dead_{}", days[0])),
        (2, format!("events_dead_{}", days[1])),
        (3, format!("events_done_{}", days[2])),
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

/// Migration 0006: an install made before hookd had a schema of its own (every table in
/// `public`, the business tables under hookd's former names) keeps every row, under the
/// runbook's names, and hookd's own tables and history move into its schema.
#[sqlx::test(migrations = false)]
async fn the_runbook_names_keep_every_row(pool: PgPool) {
    let before = Migrator {
        migrations: Cow::Owned(MIGRATOR.migrations[..5].to_vec()),
        ..Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO businesses (name, phone_number, stripe_customer_id, stripe_subscription_id,
                                 subscription_status, plan_id, subscription_started_at,
                                 last_payment_at, stripe_state_at)
         VALUES ('Acme', '+15550100001', 'cus_1', 'sub_1', 'active', 'price_pro',
                 '2026-01-01T00:00:00Z', '2026-11-01T00:00:00Z', '2026-11-02T00:00:00Z');
         INSERT INTO call_logs (call_control_id, business_id, direction, from_number, to_number,
                                stage, status, started_at)
         VALUES ('cc-in', 1, 'incoming', '+15557654321', '+15550100001', 1, 'initiated',
                 '2026-11-29T03:00:00Z'),
                ('cc-out', 1, 'outgoing', '+15550100001', '+15557654321', 3, 'completed',
                 '2026-11-29T04:00:00Z');
         INSERT INTO sms_logs (message_id, business_id, direction, from_number, to_number, body,
                               stage, status, sent_at)
         VALUES ('m-in', 1, 'inbound', '+15557654321', '+15550100001', 'hi', 1, 'received',
                 '2026-11-29T03:00:00Z'),
                ('m-out', 1, 'outbound', '+15550100001', '+15557654321', 'hello', 2, 'delivered',
                 '2026-11-29T03:01:00Z');
         INSERT INTO audit_logs (business_id, webhook_id, source, action, details)
         VALUES (1, 7, 'stripe', 'customer.subscription.updated',
                 '{\"object_id\": \"sub_1\", \"status\": \"active\"}'),
                (1, 8, 'stripe', 'invoice.payment_succeeded', '{\"object_id\": \"in_1\"}'),
                (1, 9, 'custom', 'plan.changed', '{\"data\": {}}');",
    )
    .execute(&pool)
    .await
    .unwrap();
    backlog(&pool, 3).await;
    sqlx::query(
        "UPDATE events SET state = 'dead', dead_at = now(), last_error = 'boom' WHERE id = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error)
         VALUES (1, 1, now() - interval '1 minute', 250, 'dead', 'boom'),
                (2, 1, now() - interval '1 minute', 10, 'succeeded', NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let events = "SELECT string_agg(concat_ws(',', id, source, event_id, state, body), ';'
                                    ORDER BY id) FROM events";
    let events_before: String = sqlx::query_scalar(events).fetch_one(&pool).await.unwrap();

    let tables = hookd::migrate(&pool, &hookd::Schema::default())
        .await
        .unwrap();
    assert_eq!(tables, hookd::AppTables::full(), "hookd's own tables fit");

    let events_after: String = sqlx::query_scalar(events).fetch_one(&pool).await.unwrap();
    assert_eq!(events_after, events_before);
    let homes: Vec<(String, String)> = sqlx::query_as(
        "SELECT relname::text, relnamespace::regnamespace::text FROM pg_class
         WHERE relname IN ('events', 'events_live', 'event_keys', 'event_attempts', 'stats_minute',
                           '_sqlx_migrations', 'businesses', 'call_logs', 'webhook_logs')
         ORDER BY relname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let homes: Vec<(&str, &str)> = homes
        .iter()
        .map(|(r, n)| (r.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        homes,
        [
            ("_sqlx_migrations", "hookd"),
            ("businesses", "public"),
            ("call_logs", "public"),
            ("event_attempts", "hookd"),
            ("event_keys", "hookd"),
            ("events", "hookd"),
            ("events_live", "hookd"),
            ("stats_minute", "hookd"),
            ("webhook_logs", "public"),
        ]
    );
    let business: (String, String, String, String) = sqlx::query_as(
        "SELECT subscription_plan, subscription_start_date::text, last_payment_date::text,
                (SELECT state_at::text FROM stripe_state WHERE customer_id = 'cus_1')
         FROM businesses",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        business,
        (
            "price_pro".into(),
            "2026-01-01 00:00:00+00".into(),
            "2026-11-01 00:00:00+00".into(),
            "2026-11-02 00:00:00+00".into(),
        )
    );
    let calls: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT call_id, call_type, customer_phone, business_phone, status FROM call_logs
         ORDER BY call_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let customer = "+15557654321".to_owned();
    let ours = "+15550100001".to_owned();
    assert_eq!(
        calls,
        [
            (
                "cc-in".into(),
                "inbound".into(),
                customer.clone(),
                ours.clone(),
                "initiated".into()
            ),
            (
                "cc-out".into(),
                "outbound".into(),
                customer.clone(),
                ours.clone(),
                "completed".into()
            ),
        ]
    );
    let messages: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT message_id, message_type, customer_phone, business_phone, content,
                received_at::text
         FROM sms_logs ORDER BY message_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        messages,
        [
            (
                "m-in".into(),
                "inbound".into(),
                customer.clone(),
                ours.clone(),
                "hi".into(),
                "2026-11-29 03:00:00+00".into()
            ),
            (
                "m-out".into(),
                "outbound".into(),
                customer,
                ours,
                "hello".into(),
                "2026-11-29 03:01:00+00".into()
            ),
        ]
    );
    let audit: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT action, details->>'subscription_id', details->>'invoice_id' FROM audit_logs
         ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            ("subscription_updated".into(), Some("sub_1".into()), None),
            ("payment_succeeded".into(), None, Some("in_1".into())),
            ("plan.changed".into(), None, None),
        ]
    );
    let logs: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
        "SELECT webhook_id, event_id, status, error_message FROM webhook_logs ORDER BY webhook_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(
        (logs[0].2.as_str(), logs[0].3.as_deref()),
        ("failure", Some("boom"))
    );
    assert_eq!(logs[1].2, "success");
    let failed: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, error_message FROM failed_webhooks")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(failed, [(1, "boom".to_owned())]);

    // A second start finds everything in place, and ingest carries on.
    hookd::migrate(&pool, &hookd::Schema::default())
        .await
        .unwrap();
    let next = store(
        &pool,
        common::Source::Custom,
        "msg_after",
        "load.test",
        "{}",
    )
    .await;
    assert_eq!(next, 4);
}

/// Migration 0012 moves processed events and their attempts into days of their own and the
/// keys into generation 0: every row of every state comes through unchanged, each where its
/// state and day put it, and keys held before it are still duplicates.
#[sqlx::test(migrations = false)]
async fn retention_by_days_keeps_every_row(pool: PgPool) {
    let before = Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < 12)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    backlog(&pool, 8).await;
    // Every state, processed events over several days (one without a time, as very old
    // installs may have), attempts for each, and one event purged, whose key stays.
    sqlx::raw_sql(
        "SELECT hookd_create_dead_day((now() - interval '5 days')::date);
         UPDATE events SET
             state = (ARRAY['pending', 'processing', 'retrying', 'succeeded', 'succeeded',
                            'skipped', 'dead', 'succeeded'])[id],
             processed_at = CASE id WHEN 4 THEN now() - interval '40 days'
                                    WHEN 5 THEN now() - interval '1 day' END,
             dead_at = CASE id WHEN 7 THEN now() - interval '5 days' END,
             locked_until = CASE id WHEN 2 THEN now() + interval '1 minute' END,
             attempts = id % 3;
         INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome,
                                     dead_at)
         SELECT e.id, n, now() - interval '1 hour', 5, CASE WHEN n = 2 THEN 'failed'
                                                          ELSE 'succeeded' END, e.dead_at
         FROM events e, generate_series(1, 2) n;
         DELETE FROM events WHERE id = 8;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let events = "SELECT string_agg(concat_ws(',', id, source, event_id, event_type, state,
                      attempts, next_attempt_at, locked_until, last_error, received_at,
                      processed_at, dead_at, body, payload), ';' ORDER BY id) FROM events";
    let attempts = "SELECT string_agg(concat_ws(',', id, event_id, attempt, started_at,
                        duration_ms, outcome, error, processed_at, dead_at), ';' ORDER BY id)
                    FROM event_attempts";
    let keys = "SELECT string_agg(concat_ws(',', source, event_id, id), ';'
                    ORDER BY source, event_id) FROM event_keys";
    let mut snapshot = Vec::new();
    for sql in [events, attempts, keys] {
        let rows: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        snapshot.push(rows);
    }

    MIGRATOR.run(&pool).await.unwrap();

    for (sql, before) in [events, attempts, keys].into_iter().zip(snapshot) {
        let after: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        assert_eq!(after, before, "{sql}");
    }
    let homes: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, tableoid::regclass::text FROM events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let day = |ago: i64| {
        (chrono::Utc::now() - chrono::TimeDelta::days(ago))
            .format("%Y%m%d")
            .to_string()
    };
    assert_eq!(
        homes,
        [
            (1, "events_live".to_owned()),
            (2, "events_live".to_owned()),
            (3, "events_live".to_owned()),
            (4, format!("events_done_{}", day(40))),
            (5, format!("events_done_{}", day(1))),
            // Processed before processing times were kept: no day, retention deletes it by
            // its received time.
            (6, "events_done_undated".to_owned()),
            (7, format!("events_dead_{}", day(5))),
        ]
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts a JOIN events e ON e.id = a.event_id
             WHERE a.tableoid::regclass::text <> CASE
                 WHEN e.processed_at IS NULL AND e.dead_at IS NULL THEN 'event_attempts_live'
                 WHEN e.state = 'dead'
                     THEN 'event_attempts_dead_' || to_char(e.dead_at AT TIME ZONE 'UTC', 'YYYYMMDD')
                 WHEN e.state IN ('succeeded', 'skipped')
                     THEN 'event_attempts_done_' || to_char(e.processed_at AT TIME ZONE 'UTC', 'YYYYMMDD')
                 ELSE 'event_attempts_live' END"
        )
        .await,
        0,
        "every attempt is with its event"
    );
    // Keys held before the upgrade are still duplicates, the purged event's too.
    for id in ["msg_1", "msg_8"] {
        let event = common::db::events::NewEvent {
            source: common::Source::Custom,
            event_id: common::ProviderEventId::parse(id).unwrap(),
            event_type: common::EventType::parse("load.test").unwrap(),
            body: b"{}".to_vec(),
            jsonb_checked: false,
        };
        assert_eq!(
            common::db::events::insert(&pool, &event).await.unwrap(),
            common::db::events::Inserted::Duplicate,
            "{id}"
        );
    }
    // The 40-day-old day goes at the first retention run, with its attempts.
    let dropped = common::db::retention::drop_expired(&pool, &Default::default())
        .await
        .unwrap();
    assert_eq!((dropped.events, dropped.days.len()), (1, 1));
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 6);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        12
    );
}
