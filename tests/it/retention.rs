//! Bounded storage (migration 0012, `common::db::retention`): processed events are dropped by
//! whole days past the retention with their attempts, nothing else is, and keys are
//! duplicates exactly while they are inside the dedup window, across generations and under
//! concurrency.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::db::archive::ArchiveTarget;
use common::db::bulk::{self, Fate, PastEvent};
use common::db::events::{self, Inserted, NewEvent};
use common::db::retention::{self, Policy};
use common::{EventType, MIGRATOR, ProviderEventId, Source};
use hookd::config::{Config, Sources};
use sqlx::PgPool;

use crate::harness::*;

fn new_event(id: &str) -> NewEvent {
    NewEvent {
        source: Source::Custom,
        event_id: ProviderEventId::parse(id).unwrap(),
        event_type: EventType::parse("order.created").unwrap(),
        body: format!(r#"{{"id":"{id}","type":"order.created"}}"#).into_bytes(),
        jsonb_checked: false,
    }
}

fn past(id: &str, received_at: DateTime<Utc>, fate: Fate, attempts: i32) -> PastEvent {
    PastEvent {
        event: new_event(id),
        received_at,
        fate,
        attempts,
        last_error: (attempts > 1).then(|| format!("downstream answered 500 for {id}")),
    }
}

async fn event_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM events ORDER BY event_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

const DAY: TimeDelta = TimeDelta::days(1);

#[sqlx::test(migrator = "MIGRATOR")]
async fn retention_drops_whole_days_past_the_window_with_their_attempts_and_nothing_else(
    pool: PgPool,
) {
    let now = Utc::now();
    let old = now - DAY * 40;
    // The day that holds the cut (now - 30 days) is kept whole: only days entirely past it go.
    let at_the_cut = now - DAY * 30 + TimeDelta::minutes(1);
    let rows = vec![
        past(
            "ok_old",
            old - TimeDelta::hours(1),
            Fate::Succeeded { at: old },
            3,
        ),
        past("skip_old", old, Fate::Skipped { at: old }, 1),
        past("ok_cut", at_the_cut, Fate::Succeeded { at: at_the_cut }, 1),
        past(
            "ok_recent",
            now - DAY * 2,
            Fate::Succeeded { at: now - DAY * 2 },
            1,
        ),
        past("ok_now", now, Fate::Succeeded { at: now }, 1),
        past("pending_old", old, Fate::Pending, 0),
        past(
            "retrying_old",
            old,
            Fate::Retrying {
                at: old,
                next: now + TimeDelta::hours(1),
            },
            2,
        ),
        past("dead_old", old, Fate::Dead { at: old }, 4),
    ];
    assert_eq!(bulk::load(&pool, &rows).await.unwrap(), 8);
    let homes: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, tableoid::regclass::text FROM events ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let day = |at: DateTime<Utc>| at.format("%Y%m%d").to_string();
    let homes: HashMap<String, String> = homes.into_iter().collect();
    assert_eq!(homes["ok_old"], format!("events_done_{}", day(old)));
    assert_eq!(homes["ok_now"], format!("events_done_{}", day(now)));
    assert_eq!(homes["pending_old"], "events_live");
    assert_eq!(homes["dead_old"], format!("events_dead_{}", day(old)));
    let attempts_before = count(&pool, "SELECT count(*) FROM event_attempts").await;

    let policy = Policy::default();
    let would = retention::expired(&pool, &policy).await.unwrap();
    assert_eq!(would.events, 2, "{would:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events").await,
        8,
        "a dry run drops nothing"
    );

    let dropped = retention::drop_expired(&pool, &policy).await.unwrap();
    assert_eq!(dropped.events, 2);
    assert_eq!(dropped.days, [old.date_naive()]);
    assert_eq!(dropped, would, "the dry run said what would go");
    assert_eq!(
        event_ids(&pool).await,
        [
            "dead_old",
            "ok_cut",
            "ok_now",
            "ok_recent",
            "pending_old",
            "retrying_old"
        ]
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts a
             WHERE NOT EXISTS (SELECT FROM events e WHERE e.id = a.event_id)"
        )
        .await,
        0,
        "the dropped events' attempts went with them"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        attempts_before - 4
    );
    assert_eq!(
        retention::drop_expired(&pool, &policy).await.unwrap(),
        retention::Dropped::default(),
        "a second run finds nothing"
    );

    // A shorter retention drops more, still by whole days; dead, pending and retrying events
    // stay whatever the retention.
    let short = Policy::new(Duration::from_secs(86_400), None, None).unwrap();
    let dropped = retention::drop_expired(&pool, &short).await.unwrap();
    assert_eq!(dropped.events, 2, "{dropped:?}");
    assert_eq!(
        event_ids(&pool).await,
        ["dead_old", "ok_now", "pending_old", "retrying_old"]
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn processed_events_of_a_day_without_partition_are_deleted_once_past(pool: PgPool) {
    let old = Utc::now() - DAY * 40;
    // No day partition: the event lands in the undated one.
    sqlx::query(
        "INSERT INTO events (source, event_id, event_type, state, processed_at, received_at,
                             body, payload)
         VALUES ('custom', 'msg_undated', 'order.created', 'succeeded', $1, $1, '\\x7b7d', '{}'),
                ('custom', 'msg_legacy', 'order.created', 'succeeded', NULL, $1, '\\x7b7d', '{}'),
                ('custom', 'msg_fresh', 'order.created', 'skipped', NULL, now(), '\\x7b7d', '{}')",
    )
    .bind(old)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events_done_undated").await,
        3
    );
    let status = retention::status(&pool).await.unwrap();
    assert_eq!(status.undated_processed, 3);
    let dropped = retention::drop_expired(&pool, &Policy::default())
        .await
        .unwrap();
    assert_eq!(dropped.events, 2);
    assert_eq!(event_ids(&pool).await, ["msg_fresh"]);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_key_inside_the_window_is_a_duplicate_and_one_past_it_is_a_new_event(pool: PgPool) {
    // hookd stores the window it is configured with, and every claim reads it from there.
    let mut config = config(&[("HOOKD_DEDUP_WINDOW", "5d")]);
    config.workers = 0;
    let hookd = Hookd::start(&pool, config).await;
    wait_for(
        &pool,
        "SELECT count(*) FROM retention_policy WHERE dedup_window = interval '5 days'",
        1,
        Duration::from_secs(10),
    )
    .await;
    let body = custom_event("order.created");
    let (status, answer) = hookd.custom("msg_window", &body).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &serde_json::Value::Null)
    );
    let (status, answer) = hookd.custom("msg_window", &body).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)));

    // Five days of window: four days on, the key still holds.
    sqlx::query("UPDATE event_keys SET claimed_at = claimed_at - interval '4 days'")
        .execute(&pool)
        .await
        .unwrap();
    let (_, answer) = hookd.custom("msg_window", &body).await;
    assert_eq!(
        answer["duplicate"].as_bool(),
        Some(true),
        "inside the window"
    );

    // Past it, the delivery is a new event, and the key is the new event's from then on.
    sqlx::query("UPDATE event_keys SET claimed_at = claimed_at - interval '2 days'")
        .execute(&pool)
        .await
        .unwrap();
    let (status, answer) = hookd.custom("msg_window", &body).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &serde_json::Value::Null)
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_id = 'msg_window'"
        )
        .await,
        2
    );
    let (_, answer) = hookd.custom("msg_window", &body).await;
    assert_eq!(answer["duplicate"].as_bool(), Some(true));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_keys k JOIN events e USING (id)
             WHERE k.event_id = 'msg_window'"
        )
        .await,
        1,
        "the key names the newest event"
    );
    hookd.stop().await;
}

/// Ages the newest generation of keys by `by`, as if it had started that much earlier.
async fn age_generation(pool: &PgPool, by: &str) {
    sqlx::query(&format!(
        "UPDATE event_key_generations SET started_at = started_at - interval '{by}'
         WHERE gen = (SELECT max(gen) FROM event_key_generations)"
    ))
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn keys_stay_duplicates_across_generations_until_the_window_passes(pool: PgPool) {
    let policy = Policy::default();
    assert!(matches!(
        events::insert(&pool, &new_event("msg_gen")).await.unwrap(),
        Inserted::New(_)
    ));
    let first: i32 =
        count(&pool, "SELECT max(gen)::bigint FROM event_key_generations").await as i32;
    // Not due yet: the newest generation is younger than the window.
    assert_eq!(
        retention::prepare(&pool, &policy, 3)
            .await
            .unwrap()
            .key_generation,
        None
    );
    age_generation(&pool, "31 days").await;
    let next = retention::prepare(&pool, &policy, 3).await.unwrap();
    assert_eq!(next.key_generation, Some(first + 1));
    // The key sits in the previous generation and is still inside the window.
    assert_eq!(
        events::insert(&pool, &new_event("msg_gen")).await.unwrap(),
        Inserted::Duplicate
    );
    // The previous generation is kept while the newest is younger than the window.
    assert!(
        retention::drop_expired(&pool, &policy)
            .await
            .unwrap()
            .key_generations
            .iter()
            .all(|&g| g < first),
        "the generation holding msg_gen is kept"
    );
    assert_eq!(
        events::insert(&pool, &new_event("msg_gen")).await.unwrap(),
        Inserted::Duplicate
    );
    // The window passes for msg_gen: a new event, claimed in the newest generation.
    sqlx::query("UPDATE event_keys SET claimed_at = claimed_at - interval '31 days'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(matches!(
        events::insert(&pool, &new_event("msg_gen")).await.unwrap(),
        Inserted::New(_)
    ));
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT count(*) FROM event_keys WHERE event_id = 'msg_gen' AND gen = {}",
                first + 1
            )
        )
        .await,
        1
    );
    // Once the newest generation is a window old, the previous one goes whole.
    age_generation(&pool, "31 days").await;
    let dropped = retention::drop_expired(&pool, &policy).await.unwrap();
    assert!(dropped.key_generations.contains(&first), "{dropped:?}");
    assert_eq!(
        events::insert(&pool, &new_event("msg_gen")).await.unwrap(),
        Inserted::Duplicate,
        "the newest claim is in the generation kept"
    );
    let status = retention::status(&pool).await.unwrap();
    assert_eq!(status.dedup_window_secs, 30 * 86_400);
    assert!(status.key_generations >= 1);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_inserts_of_one_key_store_one_row_even_while_a_generation_starts(pool: PgPool) {
    let policy = Policy::default();
    let writers = pool_like(&pool, 20);
    for round in 0..12 {
        let id = format!("msg_race_{round}");
        // Every other round a new generation starts among the inserts.
        if round % 2 == 1 {
            age_generation(&pool, "31 days").await;
        }
        let inserts = (0..16).map(|_| {
            let writers = writers.clone();
            let event = new_event(&id);
            tokio::spawn(async move { events::insert(&writers, &event).await.unwrap() })
        });
        let rotate = {
            let pool = pool.clone();
            tokio::spawn(async move { retention::prepare(&pool, &policy, 1).await.unwrap() })
        };
        let mut new = 0;
        for insert in inserts.collect::<Vec<_>>() {
            if matches!(insert.await.unwrap(), Inserted::New(_)) {
                new += 1;
            }
        }
        rotate.await.unwrap();
        assert_eq!(new, 1, "round {round}: one delivery is the event");
        assert_eq!(
            count(
                &pool,
                &format!("SELECT count(*) FROM events WHERE event_id = '{id}'")
            )
            .await,
            1
        );
    }
    assert!(
        count(&pool, "SELECT count(*) FROM event_key_generations").await > 2,
        "generations did start during the rounds"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn ingest_and_processing_land_in_the_days_prepared_ahead(pool: PgPool) {
    let prepared = retention::prepare(&pool, &Policy::default(), 3)
        .await
        .unwrap();
    // The migration made today and the next days already.
    assert!(prepared.days.len() <= 4, "{prepared:?}");
    let today = Utc::now().date_naive();
    let days: Vec<chrono::NaiveDate> =
        sqlx::query_scalar("SELECT day FROM hookd_done_days() AS day WHERE day >= $1")
            .bind(today)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        days,
        (0..4)
            .map(|n| today + chrono::Days::new(n))
            .collect::<Vec<_>>(),
        "today and three days ahead"
    );
    let status = retention::status(&pool).await.unwrap();
    assert_eq!((status.days_ahead, status.retention_secs), (3, 30 * 86_400));

    // Received over HTTP, processed by a worker: the event is in today's partition, with its
    // attempts; one finishing just after midnight would be in tomorrow's, which exists.
    let hookd = Hookd::ingest_only(&pool).await;
    let (status, _) = hookd
        .custom("msg_today", &custom_event("order.created"))
        .await;
    assert_eq!(status, 200);
    hookd.stop().await;
    drain(&worker(&pool, &[]), &pool, Duration::from_secs(1)).await;
    let homes: Vec<String> = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM events WHERE event_id = 'msg_today'
         UNION ALL
         SELECT a.tableoid::regclass::text FROM event_attempts a
         JOIN events e ON e.id = a.event_id WHERE e.event_id = 'msg_today'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let suffix = today.format("%Y%m%d");
    assert_eq!(
        homes,
        [
            format!("events_done_{suffix}"),
            format!("event_attempts_done_{suffix}")
        ]
    );
    let tomorrow = (today + chrono::Days::new(1))
        .and_hms_opt(0, 0, 1)
        .unwrap()
        .and_utc();
    bulk::load(
        &pool,
        &[past(
            "msg_tomorrow",
            tomorrow - TimeDelta::seconds(2),
            Fate::Succeeded { at: tomorrow },
            1,
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &pool,
            &format!(
                "SELECT count(*) FROM events_done_{} WHERE event_id = 'msg_tomorrow'",
                tomorrow.format("%Y%m%d")
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events_done_undated").await,
        0
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_failed_then_succeeded_event_takes_all_its_attempts_to_its_day(pool: PgPool) {
    store(&pool, Source::Custom, "msg_flaky", "order.created", "{}").await;
    // The first attempt fails and stays with the queued event; the second succeeds.
    let id: i64 = count(&pool, "SELECT id FROM events WHERE event_id = 'msg_flaky'").await;
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome)
         VALUES ($1, 1, now(), 1, 'failed')",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts_live").await,
        1
    );
    drain(&worker(&pool, &[]), &pool, Duration::from_secs(1)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts_live").await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts a JOIN events e ON e.id = a.event_id
             WHERE e.state = 'succeeded'
               AND a.tableoid::regclass::text
                   = 'event_attempts_done_' || to_char(e.processed_at AT TIME ZONE 'UTC', 'YYYYMMDD')"
        )
        .await,
        2
    );
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, hookd::config::ConfigError> {
    let mut env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("DATABASE_URL".into(), "postgres://unused".into());
    Config::load(&Sources::new(env).unwrap())
}

#[test]
fn a_dedup_window_under_three_days_is_refused_with_the_reason() {
    let err = load(&[("HOOKD_DEDUP_WINDOW", "2d")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "HOOKD_DEDUP_WINDOW is invalid: must be at least 3 days (2d given): providers \
         redeliver for days (Stripe for up to 3), and a redelivery whose key has expired would \
         be processed again"
    );
    let err = load(&[("HOOKD_RETENTION", "soon")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "HOOKD_RETENTION is invalid: expected a duration such as 30d or 72h, got \"soon\""
    );
    let err = load(&[("HOOKD_DLQ_RETENTION", "0s")])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "HOOKD_DLQ_RETENTION is invalid: must be above 0");

    let config = load(&[]).unwrap();
    assert_eq!(config.retention.policy, Policy::default());
    // A short retention keeps keys for the 3 days providers redeliver within.
    let config = load(&[("HOOKD_RETENTION", "1d")]).unwrap();
    assert_eq!(
        config.retention.policy.dedup_window,
        Duration::from_secs(3 * 86_400)
    );
    let config = load(&[
        ("HOOKD_RETENTION", "7d"),
        ("HOOKD_DEDUP_WINDOW", "72h"),
        ("HOOKD_DLQ_RETENTION", "90d"),
        ("HOOKD_ARCHIVE_DIR", "off"),
    ])
    .unwrap();
    assert_eq!(
        config.retention.policy,
        Policy::new(
            Duration::from_secs(7 * 86_400),
            Some(Duration::from_secs(3 * 86_400)),
            Some(Duration::from_secs(90 * 86_400))
        )
        .unwrap()
    );
    assert_eq!(config.retention.archive, ArchiveTarget::Off);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn dead_events_past_the_dlq_retention_are_archived_then_dropped_by_whole_days(pool: PgPool) {
    let now = Utc::now();
    let rows = vec![
        past(
            "dead_old",
            now - DAY * 10,
            Fate::Dead { at: now - DAY * 10 },
            4,
        ),
        past("dead_recent", now - DAY, Fate::Dead { at: now - DAY }, 4),
        past(
            "ok_old",
            now - DAY * 10,
            Fate::Succeeded { at: now - DAY * 10 },
            1,
        ),
    ];
    bulk::load(&pool, &rows).await.unwrap();
    let dir = std::env::temp_dir().join(format!("hookd-retention-{}", std::process::id()));
    let settings = hookd::retention::Settings {
        policy: Policy::new(
            Duration::from_secs(30 * 86_400),
            None,
            Some(Duration::from_secs(7 * 86_400)),
        )
        .unwrap(),
        archive: ArchiveTarget::Dir(dir.clone()),
    };
    let dry = hookd::retention::run_once(&pool, &settings, true)
        .await
        .unwrap();
    assert_eq!((dry.dead, dry.dropped.events), (1, 0), "{dry}");
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 3);

    let report = hookd::retention::run_once(&pool, &settings, false)
        .await
        .unwrap();
    assert_eq!(report.dead, 1, "{report}");
    let archive = report.archive.clone().expect("archived");
    assert!(archive.starts_with(&dir) && archive.exists(), "{report}");
    assert_eq!(event_ids(&pool).await, ["dead_recent", "ok_old"]);
    assert!(
        report.to_string().contains("1 dead events (archived in"),
        "{report}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_command_line_says_what_is_retained_and_runs_retention_once(pool: PgPool) {
    let now = Utc::now();
    let rows = [
        past(
            "ok_old",
            now - DAY * 10,
            Fate::Succeeded { at: now - DAY * 10 },
            1,
        ),
        past("ok_new", now - DAY, Fate::Succeeded { at: now - DAY }, 1),
    ];
    bulk::load(&pool, &rows).await.unwrap();
    let env = [
        ("HOOKD_RETENTION", "7d"),
        ("HOOKD_DEDUP_WINDOW", "3d"),
        ("HOOKD_ARCHIVE_DIR", "off"),
    ];
    let (ok, out, err) = crate::archive::cli(&pool, &env, &["retention", "run", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("would drop 1 processed events ("), "{out}");
    assert_eq!(
        event_ids(&pool).await,
        ["ok_new", "ok_old"],
        "a dry run drops nothing"
    );

    let (ok, out, err) = crate::archive::cli(&pool, &env, &["retention", "run"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("dropped 1 processed events ("), "{out}");
    assert!(out.contains("dropped 0 dead events"), "{out}");
    assert_eq!(event_ids(&pool).await, ["ok_new"]);

    let (ok, out, err) = crate::archive::cli(&pool, &env, &["retention", "status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["retention_secs"], 7 * 86_400);
    assert_eq!(status["dedup_window_secs"], 3 * 86_400);
    assert_eq!(status["dlq_retention_secs"], serde_json::Value::Null);
    assert_eq!(status["days_ahead"], 3);
    let (ok, out, err) = crate::archive::cli(&pool, &env, &["retention", "status"]);
    assert!(ok, "{err}");
    for words in [
        "processed events (HOOKD_RETENTION 7d): ",
        "idempotency keys (HOOKD_DEDUP_WINDOW 3d): ",
        "dead events (HOOKD_DLQ_RETENTION off): kept until purged",
    ] {
        assert!(out.contains(words), "{words:?} in {out}");
    }
}
