//! The admin API, metrics and rate limiting, over real HTTP.

use common::{MIGRATOR, Source};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;

use crate::harness::*;

const TOKEN: &str = "s3cret-admin-token-for-the-admin-tests";

/// Where this file's purges archive: a directory of the test run's own, not the host's
/// `/var/lib/hookd`.
fn archive_dir() -> String {
    let dir = std::env::temp_dir().join(format!("hookd-admin-archive-{}", std::process::id()));
    dir.to_str().unwrap().to_owned()
}

async fn admin_hookd(pool: &PgPool, extra: &[(&str, &str)]) -> Hookd {
    let dir = archive_dir();
    let mut env = vec![("HOOKD_ADMIN_TOKEN", TOKEN), ("HOOKD_ARCHIVE_DIR", &dir)];
    env.extend_from_slice(extra);
    Hookd::start(pool, config(&env)).await
}

/// The purge answer's receipt fields checked against the file and the audit row; the rest
/// of the answer.
async fn receipt(pool: &PgPool, mut reply: Value) -> Value {
    let path = reply["archive"].as_str().expect("an archive").to_owned();
    let sha = reply["sha256"].as_str().unwrap().to_owned();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap())),
        sha
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'dlq.purge'
           AND details ->> 'sha256' = $1 AND details ->> 'archive' = $2
           AND details ->> 'who' = 'admin-token' AND details ->> 'via' = 'admin-api'",
    )
    .bind(&sha)
    .bind(&path)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(audited, 1, "the audit row names the archive");
    std::fs::remove_file(&path).unwrap();
    let fields = reply.as_object_mut().unwrap();
    for key in ["archive", "sha256", "filter", "previewed", "skipped"] {
        fields.remove(key);
    }
    reply
}

async fn call(
    hookd: &Hookd,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = hookd.client.request(method, hookd.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const ROUTES: [(&str, &str); 11] = [
    ("GET", "/api/webhooks/dlq"),
    ("GET", "/api/webhooks/dlq/clusters"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/webhooks/dlq"),
    ("POST", "/api/webhooks/dlq/preview"),
    ("DELETE", "/api/webhooks/dlq?older_than=7d"),
    ("GET", "/api/webhooks/dlq/purge-preview?older_than=7d"),
    ("GET", "/api/webhooks/analytics"),
    ("GET", "/api/webhooks/retention"),
    ("GET", "/metrics"),
    ("GET", "/api/webhooks/health"),
];

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_admin_route_needs_the_token(pool: PgPool) {
    let hookd = admin_hookd(&pool, &[]).await;
    for (method, path) in ROUTES {
        let body = match path {
            "/api/webhooks/dlq/preview" => Some(json!({"selection": {"kind": "all"}})),
            _ => (method == "POST").then(|| json!({"retry_all": true})),
        };
        let (none, reply) = call(&hookd, method, path, None, body.clone()).await;
        let (wrong, _) = call(&hookd, method, path, Some("not-the-token"), body.clone()).await;
        let (right, _) = call(&hookd, method, path, Some(TOKEN), body).await;
        if path.ends_with("health") {
            // Health answers anyone, but only token holders see details.
            assert_eq!((none, wrong, right), (200, 200, 200));
            assert_eq!(reply, json!({"status": "ok"}));
        } else {
            assert_eq!((none, wrong, right), (401, 403, 200), "{method} {path}");
            assert!(!reply.to_string().contains(TOKEN));
        }
    }
    let response = hookd
        .client
        .get(hookd.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    // A token that is a prefix of the right one, or carries it with extra bytes, is wrong.
    for almost in [&TOKEN[..10], &format!("{TOKEN}x")] {
        assert_eq!(
            call(&hookd, "GET", "/metrics", Some(almost), None).await.0,
            403
        );
    }
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn without_a_configured_token_the_admin_api_is_off(pool: PgPool) {
    let hookd = Hookd::start(&pool, config(&[])).await;
    for (method, path) in ROUTES {
        let (status, reply) = call(&hookd, method, path, Some(""), None).await;
        if path.ends_with("health") {
            assert_eq!(reply, json!({"status": "ok"}), "no details without a token");
        } else {
            assert_eq!(status, 404, "{method} {path}");
        }
    }
    hookd.stop().await;
}

async fn kill(pool: &PgPool, ids: &[i64]) {
    sqlx::query("UPDATE events SET state = 'dead', attempts = 4, dead_at = now() - interval '1 day', last_error = 'boom' WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_dlq_can_be_listed_retried_and_purged(pool: PgPool) {
    let mut ids = vec![];
    for i in 0..4 {
        let source = if i < 3 {
            Source::Custom
        } else {
            Source::Stripe
        };
        let body = json!({"type": "order.placed", "id": format!("e{i}"), "created": 0}).to_string();
        ids.push(store(&pool, source, &format!("e{i}"), "order.placed", &body).await);
    }
    kill(&pool, &ids).await;
    let dir = archive_dir();
    let mut config = config(&[("HOOKD_ADMIN_TOKEN", TOKEN), ("HOOKD_ARCHIVE_DIR", &dir)]);
    config.workers = 0;
    let hookd = Hookd::start(&pool, config).await;
    let get = |path: &'static str| call(&hookd, "GET", path, Some(TOKEN), None);

    let (status, page) = get("/api/webhooks/dlq?source=custom&limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["failed_webhooks"].as_array().unwrap().len(), 2);
    let next = page["next_before_id"].as_i64().unwrap();
    let (_, rest) = call(
        &hookd,
        "GET",
        &format!("/api/webhooks/dlq?source=custom&limit=2&before_id={next}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(rest["failed_webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_before_id"], Value::Null);
    // Hostile filters are values, never SQL; absurd limits are refused.
    let (status, none) =
        get("/api/webhooks/dlq?event_type=x%27%3B%20DROP%20TABLE%20events%3B--").await;
    assert_eq!(
        (status, none["failed_webhooks"].as_array().unwrap().len()),
        (200, 0)
    );
    assert_eq!(get("/api/webhooks/dlq?limit=100000000").await.0, 400);
    assert_eq!(get("/api/webhooks/dlq?limit=-1").await.0, 400);
    assert_eq!(get("/api/webhooks/dlq?source=paypal").await.0, 400);
    assert_eq!(get("/api/webhooks/dlq?before_id=abc").await.0, 400);

    let retry = |body: Value| call(&hookd, "POST", "/api/webhooks/dlq", Some(TOKEN), Some(body));
    assert_eq!(
        retry(json!({"webhook_id": ids[0]})).await,
        (200, json!({"retried": 1, "webhook_id": ids[0]}))
    );
    assert_eq!(
        retry(json!({"webhook_id": ids[0]})).await.0,
        409,
        "no longer dead"
    );
    assert_eq!(retry(json!({"webhook_id": 987654})).await.0, 404);
    assert_eq!(retry(json!({"retry_all": false})).await.0, 400);
    assert_eq!(
        retry(json!({"webhook_id": 1, "retry_all": true})).await.0,
        400
    );
    assert_eq!(retry(json!({"drop": "table"})).await.0, 400);
    assert_eq!(
        retry(json!({"retry_all": true})).await,
        (200, json!({"previewed": 3, "retried": 3, "skipped": 0}))
    );

    kill(&pool, &ids[1..]).await;
    sqlx::query("UPDATE events SET dead_at = now() - interval '8 days' WHERE id = $1")
        .bind(ids[1])
        .execute(&pool)
        .await
        .unwrap();
    let purge = |path: &'static str| call(&hookd, "DELETE", path, Some(TOKEN), None);
    assert_eq!(purge("/api/webhooks/dlq").await.0, 400);
    assert_eq!(purge("/api/webhooks/dlq?older_than=soon").await.0, 400);
    let (status, reply) = purge("/api/webhooks/dlq?older_than=7d").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        receipt(&pool, reply).await,
        json!({"purged": 1, "older_than": "7d"})
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 3);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_purge_under_an_hour_needs_force_true(pool: PgPool) {
    let mut ids = vec![];
    for i in 0..3 {
        let body = json!({"type": "order.placed", "id": format!("r{i}"), "created": 0}).to_string();
        ids.push(
            store(
                &pool,
                Source::Custom,
                &format!("r{i}"),
                "order.placed",
                &body,
            )
            .await,
        );
    }
    kill(&pool, &ids).await;
    // Died 10, 20 and 30 minutes ago: what a purge right after an incident would find.
    sqlx::query(
        "UPDATE events SET dead_at = now() - make_interval(mins => 10 * (array_position($1, id))) \
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&pool)
    .await
    .unwrap();
    let dir = archive_dir();
    let mut config = config(&[("HOOKD_ADMIN_TOKEN", TOKEN), ("HOOKD_ARCHIVE_DIR", &dir)]);
    config.workers = 0;
    let hookd = Hookd::start(&pool, config).await;
    let purge = |path: &'static str| call(&hookd, "DELETE", path, Some(TOKEN), None);
    let dead = "SELECT count(*) FROM events WHERE state = 'dead'";

    for path in [
        "/api/webhooks/dlq?older_than=0s",
        "/api/webhooks/dlq?older_than=5m",
        "/api/webhooks/dlq?older_than=59m",
        "/api/webhooks/dlq?older_than=5m&force=false",
    ] {
        let (status, reply) = purge(path).await;
        assert_eq!(status, 400, "{path}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains("under 1h") && error.contains("force=true"),
            "{path}: {error}"
        );
    }
    assert_eq!(count(&pool, dead).await, 3, "nothing was purged");
    let (status, reply) = purge("/api/webhooks/dlq?older_than=1h").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        receipt(&pool, reply).await,
        json!({"purged": 0, "older_than": "1h"})
    );
    let (status, reply) = purge("/api/webhooks/dlq?older_than=15m&force=true").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        receipt(&pool, reply).await,
        json!({"purged": 2, "older_than": "15m"})
    );
    assert_eq!(count(&pool, dead).await, 1);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_purge_preview_binds_the_purge_and_an_unwritable_archive_deletes_nothing(pool: PgPool) {
    let mut ids = vec![];
    for i in 0..3 {
        let body = json!({"type": "order.placed", "id": format!("p{i}"), "created": 0}).to_string();
        ids.push(
            store(
                &pool,
                Source::Custom,
                &format!("p{i}"),
                "order.placed",
                &body,
            )
            .await,
        );
    }
    kill(&pool, &ids[..2]).await;
    // No workers: the third event is still pending when it is killed below.
    let quiet = |dir: &str| {
        let mut config = config(&[("HOOKD_ADMIN_TOKEN", TOKEN), ("HOOKD_ARCHIVE_DIR", dir)]);
        config.workers = 0;
        config
    };
    let hookd = Hookd::start(&pool, quiet(&archive_dir())).await;
    let get = |path: &'static str| call(&hookd, "GET", path, Some(TOKEN), None);
    assert_eq!(get("/api/webhooks/dlq/purge-preview").await.0, 400);
    assert_eq!(
        get("/api/webhooks/dlq/purge-preview?older_than=soon")
            .await
            .0,
        400
    );
    let (status, preview) = get("/api/webhooks/dlq/purge-preview?older_than=1h").await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["count"], 2);
    assert_eq!(preview["superseded"], 0);
    assert_eq!(
        preview["by_type"],
        json!([{"source": "custom", "event_type": "order.placed", "count": 2, "superseded": 0}])
    );
    // After the preview the third event dies a day ago too, and the first is retried.
    kill(&pool, &ids[2..]).await;
    common::db::dlq::retry(&pool, ids[0]).await.unwrap();
    let token = preview["token"].as_str().unwrap();
    let (status, reply) = call(
        &hookd,
        "DELETE",
        &format!("/api/webhooks/dlq?token={token}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["previewed"], &reply["skipped"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(
        receipt(&pool, reply).await,
        json!({"purged": 1, "older_than": null})
    );
    let dead: Vec<i64> = sqlx::query_scalar("SELECT id FROM events WHERE state = 'dead'")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(dead, [ids[2]], "the death after the preview was kept");
    let (status, _) = call(
        &hookd,
        "DELETE",
        "/api/webhooks/dlq?token=xyz",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);
    hookd.stop().await;

    // An archive directory that is a file: 409, the path and the OS error, nothing deleted.
    let blocked = std::env::temp_dir().join(format!("hookd-admin-blocked-{}", std::process::id()));
    std::fs::write(&blocked, b"a file").unwrap();
    let hookd = Hookd::start(&pool, quiet(blocked.to_str().unwrap())).await;
    let (status, reply) = call(
        &hookd,
        "DELETE",
        "/api/webhooks/dlq?older_than=1h",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 409, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.contains(blocked.to_str().unwrap()) && error.contains("nothing was deleted"),
        "{error}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events WHERE state = 'dead'").await,
        1
    );
    hookd.stop().await;
    std::fs::remove_file(&blocked).unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn analytics_and_health_report_what_the_database_holds(pool: PgPool) {
    // In the last hour: 3 invoice.paid succeeded, 1 died after 3 failed tries; 1 type skipped.
    sqlx::query(
        "INSERT INTO stats_minute (bucket, source, event_type, received, succeeded, skipped, failed, dead) VALUES
            (date_trunc('minute', now()), 'stripe', 'invoice.paid', 4, 3, 0, 3, 1),
            (date_trunc('minute', now()) - interval '10 minutes', 'stripe', 'charge.refunded', 2, 0, 2, 0, 0),
            (date_trunc('minute', now()) - interval '5 hours', 'telnyx', 'call.hangup', 10, 5, 0, 0, 5),
            (date_trunc('minute', now()) - interval '3 days', 'telnyx', 'call.hangup', 99, 99, 0, 0, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut config = config(&[("HOOKD_ADMIN_TOKEN", TOKEN)]);
    config.workers = 0;
    let hookd = Hookd::start(&pool, config).await;
    let (status, body) = call(&hookd, "GET", "/api/webhooks/analytics", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["last_hour"]["totals"],
        json!({"received": 6, "succeeded": 3, "skipped": 2, "failed": 3, "dead": 1})
    );
    assert_eq!(body["last_hour"]["event_success_rate"], 0.75);
    assert_eq!(body["last_hour"]["attempt_success_rate"], 3.0 / 7.0);
    assert_eq!(body["last_24h"]["totals"]["received"], 16);
    assert_eq!(body["last_24h"]["event_success_rate"], 8.0 / 14.0);
    let types = body["by_type_24h"].as_array().unwrap();
    let hangup = types
        .iter()
        .find(|t| t["event_type"] == "call.hangup")
        .unwrap();
    assert_eq!(
        (
            hangup["received"].as_i64(),
            hangup["event_success_rate"].as_f64()
        ),
        (Some(10), Some(0.5))
    );
    let refunded = types
        .iter()
        .find(|t| t["event_type"] == "charge.refunded")
        .unwrap();
    assert_eq!(
        refunded["event_success_rate"],
        Value::Null,
        "nothing reached a verdict"
    );

    // No workers in this process: a receive-only instance is healthy; others process.
    backlog(&pool, 3).await;
    let (status, health) = call(&hookd, "GET", "/api/webhooks/health", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["database"], true);
    assert_eq!(health["workers_alive"], Value::Null);
    assert_eq!(health["queue_depth"], 3);
    assert!(health["oldest_pending_secs"].as_f64().unwrap() >= 0.0);
    hookd.stop().await;

    let hookd = admin_hookd(&pool, &[]).await;
    let (status, health) = call(&hookd, "GET", "/api/webhooks/health", Some(TOKEN), None).await;
    assert_eq!((status, &health["workers_alive"]), (200, &json!(true)));
    hookd.stop().await;

    // Workers that stopped coming round their loop: unhealthy, and the details say why.
    let stale = hookd::worker::Heartbeat::new(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let state = hookd::AppState::new(
        pool.clone(),
        &crate::harness::config(&[("HOOKD_ADMIN_TOKEN", TOKEN)]),
        Default::default(),
        Some(stale),
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hookd::http::serve(
        listener,
        hookd::app(state),
        64,
        Default::default(),
    ));
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/api/webhooks/health"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let health: Value = response.json().await.unwrap();
    assert_eq!(
        (health["database"].clone(), health["workers_alive"].clone()),
        (json!(true), json!(false))
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn metrics_move_with_real_deliveries(pool: PgPool) {
    let hookd = admin_hookd(&pool, &[]).await;
    let body = custom_event("order.placed");
    hookd.custom("m1", &body).await;
    hookd.custom("m1", &body).await;
    hookd.custom("m2", &body).await;
    let stale = custom_headers("m3", &body, now() - 3600);
    hookd.post(CUSTOM_PATH, &stale, body.clone()).await;
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        2,
        std::time::Duration::from_secs(30),
    )
    .await;
    let (_, text) = call(&hookd, "GET", "/metrics", Some(TOKEN), None).await;
    let text = text.as_str().unwrap().to_owned();
    assert_eq!(
        metric(
            &text,
            "hookd_webhooks_received_total{source=\"custom\",event_type=\"order.placed\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&text, "hookd_webhooks_duplicate_total{source=\"custom\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "hookd_webhooks_rejected_total{source=\"custom\",reason=\"timestamp\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "hookd_events_processed_total{source=\"custom\",outcome=\"succeeded\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "hookd_ingest_duration_seconds_count{source=\"custom\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "hookd_attempt_duration_seconds_count{source=\"custom\"}"
        ),
        2.0
    );
    assert_eq!(metric(&text, "hookd_queue_depth"), 0.0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn old_dashboard_counters_are_pruned(pool: PgPool) {
    sqlx::query(
        "INSERT INTO stats_minute (bucket, source, event_type, received) VALUES
            (date_trunc('minute', now()), 'stripe', 'a', 1),
            (date_trunc('minute', now()) - interval '34 days', 'stripe', 'a', 1),
            (date_trunc('minute', now()) - interval '36 days', 'stripe', 'a', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let pruned = common::db::stats::prune(&pool, chrono::Duration::days(35))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM stats_minute").await, 2);
}

/// Concurrent writers count into their own shard of a counter row; compaction folds settled
/// minutes back into one row each without changing any total.
#[sqlx::test(migrator = "MIGRATOR")]
async fn counter_shards_fold_into_one_row_per_minute_without_changing_totals(pool: PgPool) {
    // Events stored over several connections land in several shards of this minute's row.
    let mut stored = 0;
    for round in 0..4 {
        let mut connections = Vec::new();
        for _ in 0..4 {
            connections.push(pool.acquire().await.unwrap());
        }
        for (n, conn) in connections.iter_mut().enumerate() {
            let body = custom_event("shard.test");
            let id = format!("msg_{round}_{n}");
            let event = common::db::events::NewEvent {
                source: Source::Custom,
                event_id: common::ProviderEventId::parse(&id).unwrap(),
                event_type: common::EventType::parse("shard.test").unwrap(),
                body: body.into_bytes(),
                jsonb_checked: false,
            };
            common::db::events::insert(&mut **conn, &event)
                .await
                .unwrap();
            stored += 1;
        }
    }
    sqlx::query(
        "INSERT INTO stats_minute (bucket, source, event_type, shard, received, succeeded, dead)
         VALUES (date_trunc('minute', now()) - interval '10 minutes', 'stripe', 'a', 0, 1, 1, 0),
                (date_trunc('minute', now()) - interval '10 minutes', 'stripe', 'a', 3, 2, 0, 1),
                (date_trunc('minute', now()) - interval '10 minutes', 'stripe', 'a', 5, 4, 3, 0),
                (date_trunc('minute', now()) - interval '20 minutes', 'stripe', 'a', 7, 8, 0, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let day = chrono::Duration::days(1);
    let before = common::db::stats::totals(&pool, day).await.unwrap();
    assert_eq!(before.received, stored + 15);

    let moved = common::db::stats::compact(&pool, chrono::Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(moved, 2, "one row per settled minute and type");
    assert_eq!(common::db::stats::totals(&pool, day).await.unwrap(), before);
    let settled: Vec<(i16, i64, i64, i64)> = sqlx::query_as(
        "SELECT shard, received, succeeded, dead FROM stats_minute
         WHERE source = 'stripe' ORDER BY bucket",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(settled, [(0, 8, 0, 0), (0, 7, 4, 1)]);
    // This minute is still being written: its shards stay where they are.
    let live = count(
        &pool,
        "SELECT count(*) FROM stats_minute WHERE source = 'custom' AND shard <> 0",
    )
    .await;
    assert!(live >= 1);
    let by_type = common::db::stats::by_type(&pool, day).await.unwrap();
    let custom = by_type
        .iter()
        .find(|t| t.event_type == "shard.test")
        .unwrap();
    assert_eq!(custom.received, stored);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_retention_route_says_what_is_kept(pool: PgPool) {
    let hookd = admin_hookd(
        &pool,
        &[("HOOKD_RETENTION", "14d"), ("HOOKD_DLQ_RETENTION", "90d")],
    )
    .await;
    let (status, body) = call(&hookd, "GET", "/api/webhooks/retention", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    // The windows hookd started with, stored before it answered anything.
    assert_eq!(body["retention_secs"], 14 * 86_400);
    assert_eq!(
        body["dedup_window_secs"],
        14 * 86_400,
        "the retention by default"
    );
    assert_eq!(body["dlq_retention_secs"], 90 * 86_400);
    // The migration made today and the days ahead, and the first generation of keys.
    assert!(body["days_ahead"].as_u64().unwrap() >= 3, "{body}");
    assert!(body["days_kept"].as_u64().unwrap() >= 1, "{body}");
    assert!(body["key_generations"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(body["undated_processed"], 0);
    hookd.stop().await;
}
