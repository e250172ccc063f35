//! The benchmark's seeding and the benchmark itself: `common::db::bulk` leaves events as hookd
//! would have (so a schema change that breaks the benchmark's loads fails here), and
//! `loadgen bench --quick` measures every stage end to end.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::db::bulk::{self, Fate, PastEvent};
use common::db::events::NewEvent;
use common::db::{dlq, stats};
use common::{EventType, MIGRATOR, ProviderEventId, Source};

use crate::harness::claim;
use sqlx::PgPool;

fn past(
    id: &str,
    source: Source,
    received_at: DateTime<Utc>,
    fate: Fate,
    attempts: i32,
) -> PastEvent {
    PastEvent {
        event: NewEvent {
            source,
            event_id: ProviderEventId::parse(id).unwrap(),
            event_type: EventType::parse("order.created").unwrap(),
            body: format!(r#"{{"id":"{id}","type":"order.created"}}"#).into_bytes(),
            jsonb_checked: false,
        },
        received_at,
        fate,
        attempts,
        last_error: (attempts > 1).then(|| format!("downstream answered 500 for {id}")),
    }
}

/// What the per-minute counters hold for the minute of `at`.
async fn minute(pool: &PgPool, at: DateTime<Utc>) -> (i64, i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(received), 0)::bigint, COALESCE(sum(succeeded), 0)::bigint,
                COALESCE(sum(skipped), 0)::bigint, COALESCE(sum(failed), 0)::bigint,
                COALESCE(sum(dead), 0)::bigint
         FROM stats_minute WHERE bucket = date_trunc('minute', $1::timestamptz)",
    )
    .bind(at)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_bulk_load_leaves_events_as_hookd_would_have(pool: PgPool) {
    let now = Utc::now();
    // Well inside their minutes, so each attempt counts in the minute the test looks at.
    let minute_start = now.duration_trunc(TimeDelta::minutes(1)).unwrap();
    let received = minute_start - TimeDelta::days(2) + TimeDelta::seconds(20);
    let done = received + TimeDelta::milliseconds(40);
    let died = minute_start - TimeDelta::days(10) + TimeDelta::seconds(30);
    let retry_at = now + TimeDelta::minutes(10);
    let rows = vec![
        past(
            "ok_1",
            Source::Custom,
            received,
            Fate::Succeeded { at: done },
            1,
        ),
        past(
            "skip_1",
            Source::Stripe,
            received,
            Fate::Skipped { at: done },
            1,
        ),
        past(
            "again_1",
            Source::Custom,
            received,
            Fate::Retrying {
                at: done,
                next: retry_at,
            },
            2,
        ),
        past(
            "dead_1",
            Source::Custom,
            died - TimeDelta::minutes(15),
            Fate::Dead { at: died },
            4,
        ),
        past("new_1", Source::Telnyx, now, Fate::Pending, 0),
        // A redelivery within the load: the first one is kept, as ingest would keep it.
        past("ok_1", Source::Custom, now, Fate::Succeeded { at: now }, 1),
    ];
    assert_eq!(bulk::load(&pool, &rows).await.unwrap(), 5);

    let states: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT event_id, state, attempts FROM events ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected = [
        ("again_1", "retrying", 2),
        ("dead_1", "dead", 4),
        ("new_1", "pending", 0),
        ("ok_1", "succeeded", 1),
        ("skip_1", "skipped", 1),
    ];
    let states: Vec<(&str, &str, i32)> = states
        .iter()
        .map(|(id, state, n)| (id.as_str(), state.as_str(), *n))
        .collect();
    assert_eq!(states, expected);
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_keys k JOIN events e USING (id)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(keys, 5, "every event owns its key");

    // The counters: received in the minute it came in, outcomes in the minute of each attempt.
    assert_eq!(minute(&pool, received).await, (3, 1, 1, 2, 0));
    assert_eq!(minute(&pool, died - TimeDelta::minutes(15)).await.0, 1);
    assert_eq!(minute(&pool, died).await, (0, 0, 0, 0, 1));
    let three_failed: i64 = sqlx::query_scalar("SELECT sum(failed)::bigint FROM stats_minute")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        three_failed,
        2 + 3,
        "retrying: 2 failed; dead: 3 failed, then died"
    );

    // The dead event sits in its day, with its four attempts and a cause to cluster by.
    let (partition, fingerprint): (String, Option<String>) = sqlx::query_as(
        "SELECT tableoid::regclass::text, error_fingerprint FROM events WHERE event_id = 'dead_1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(partition, format!("events_dead_{}", died.format("%Y%m%d")));
    assert!(fingerprint.is_some());
    let attempts: Vec<(i32, String, bool)> = sqlx::query_as(
        "SELECT a.attempt, a.outcome, a.dead_at = e.dead_at FROM event_attempts a
         JOIN events e ON e.id = a.event_id WHERE e.event_id = 'dead_1' ORDER BY a.attempt",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|(_, o, _)| o.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "failed", "dead"]);
    assert!(attempts.iter().all(|(_, _, same_day)| *same_day));

    // hookd's own functions see the load as they would see their own work.
    let queue = stats::queue(&pool).await.unwrap();
    assert_eq!((queue.pending, queue.retrying, queue.dead), (1, 1, 1));
    let claimed = claim(&pool, 10, Duration::from_secs(30)).await;
    let claimed: Vec<&str> = claimed.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(claimed, ["new_1"], "the retry is not due yet");
    assert_eq!(
        dlq::count_older_than(&pool, TimeDelta::days(7))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        dlq::purge_older_than(&pool, TimeDelta::days(7))
            .await
            .unwrap(),
        1
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_attempts WHERE attempt = 4")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the purge took the attempts along");
    // Its key outlives it: loading it again is a duplicate.
    assert_eq!(bulk::load(&pool, &rows[3..4]).await.unwrap(), 0);
}

/// The built `loadgen` (with `hookd` and `hooktop` beside it), built on first use.
fn loadgen_bin() -> std::path::PathBuf {
    // This test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "hookd-loadgen",
        "-p",
        "hookd",
        "-p",
        "hooktop",
        "--bins",
    ]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().expect("run cargo build").success());
    profile_dir.join("loadgen")
}

/// Every figure of the summary was measured: no null anywhere in it.
fn nulls(value: &serde_json::Value, at: &str, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Null => found.push(at.to_owned()),
        serde_json::Value::Object(fields) => {
            for (k, v) in fields {
                nulls(v, &format!("{at}.{k}"), found);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                nulls(v, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// CI runs the whole benchmark small, on the debug binaries: a schema or binary change that
/// breaks a stage fails here, not in a benchmark weeks later.
#[tokio::test]
async fn the_quick_benchmark_measures_every_stage() {
    let loadgen = loadgen_bin();
    let out = std::env::temp_dir().join(format!("hookd-bench-it-{}", std::process::id()));
    let run = tokio::process::Command::new(&loadgen)
        .args(["bench", "--quick", "--json", "--out"])
        .arg(&out)
        // Its own private cluster, whatever database the suite uses.
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(420), run)
        .await
        .expect("loadgen bench --quick finishes within 7 minutes")
        .expect("loadgen runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen bench --quick failed:\n{said}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON summary");

    let mut missing = Vec::new();
    nulls(&summary, "summary", &mut missing);
    assert!(
        missing.is_empty(),
        "figures not measured: {missing:?}\n{said}"
    );
    assert_eq!(summary["refresh"].as_array().map(Vec::len), Some(2));
    for stage in [
        "ingest",
        "half",
        "receive",
        "wrk",
        "receive_history",
        "end_to_end",
        "purge",
    ] {
        assert_eq!(
            summary[stage]["missing"], 0,
            "{stage}: acknowledged but not stored"
        );
    }
    assert!(summary["ingest"]["acked"].as_u64() > Some(0));
    assert_eq!(summary["ingest"]["non_2xx_and_errors"], 0);
    assert!(summary["wrk"]["acked"].as_u64() > Some(0));
    assert_eq!(summary["wrk"]["non_2xx_and_errors"], 0);
    assert_eq!(summary["drain"]["not_succeeded"], 0);
    assert!(summary["end_to_end"]["acked"].as_u64() > Some(0));
    assert_eq!(summary["end_to_end"]["not_succeeded"], 0);
    assert_eq!(summary["purge"]["old_left"], 0);
    assert_eq!(summary["purge"]["recent_kept"], 10_000);
    assert!(
        std::fs::read_to_string(out.join("summary.md"))
            .unwrap()
            .contains("| figure |")
    );
    let _ = std::fs::remove_dir_all(&out);
}
