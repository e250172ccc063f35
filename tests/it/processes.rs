//! Real hookd processes: several sharing one database, killed mid-work, stopped by signal, and
//! the command line operators script against.

use std::time::Duration;

use common::MIGRATOR;
use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

const EXACTLY_ONCE: &str = "SELECT count(*) FROM (
    SELECT e.id FROM events e
    JOIN audit_logs a ON a.webhook_id = e.id
    GROUP BY e.id HAVING count(*) = 1) once";

#[sqlx::test(migrator = "MIGRATOR")]
async fn two_processes_share_ten_thousand_events_each_applied_once(pool: PgPool) {
    backlog(&pool, 10_000).await;
    let a = Process::spawn(&pool, &[("HOOKD_WORKERS", "2"), ("HOOKD_BATCH_SIZE", "50")]);
    let b = Process::spawn(&pool, &[("HOOKD_WORKERS", "2"), ("HOOKD_BATCH_SIZE", "50")]);
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        10_000,
        Duration::from_secs(240),
    )
    .await;

    assert_eq!(
        count(&pool, "SELECT count(*) FROM audit_logs").await,
        10_000
    );
    assert_eq!(count(&pool, EXACTLY_ONCE).await, 10_000);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        10_000
    );
    // Workers log after their commit: the last lines may trail the rows a little.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (by_a, by_b) = loop {
        let seen = (
            a.log_lines("event processed"),
            b.log_lines("event processed"),
        );
        if seen.0 + seen.1 >= 10_000 || tokio::time::Instant::now() >= deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(by_a + by_b, 10_000);
    assert!(
        by_a > 0 && by_b > 0,
        "both processes worked: {by_a} and {by_b}"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_process_killed_mid_batch_leaves_work_a_fresh_one_finishes_once(pool: PgPool) {
    backlog(&pool, 5_000).await;
    let lease = [("HOOKD_LEASE_SECS", "2"), ("HOOKD_BATCH_SIZE", "100")];
    let mut victim = Process::spawn(&pool, &lease);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while count(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
    )
    .await
        < 500
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    victim.child.kill().unwrap(); // SIGKILL: no drain, no lease release.
    victim.child.wait().unwrap();
    let done_at_kill = count(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
    )
    .await;
    assert!(
        done_at_kill < 5_000,
        "the kill came too late to interrupt anything"
    );
    let leased = count(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'processing'",
    )
    .await;
    assert!(leased > 0, "the kill interrupted a batch in flight");

    let _fresh = Process::spawn(&pool, &lease);
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        5_000,
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_logs").await, 5_000);
    assert_eq!(count(&pool, EXACTLY_ONCE).await, 5_000);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts WHERE outcome = 'succeeded'"
        )
        .await,
        5_000
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn sigterm_drains_and_exits_cleanly(pool: PgPool) {
    backlog(&pool, 3_000).await;
    let mut hookd = Process::spawn(&pool, &[("HOOKD_SHUTDOWN_TIMEOUT_SECS", "10")])
        .ready()
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while count(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
    )
    .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing processed within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hookd.signal("TERM");
    let status = hookd.exit_within(Duration::from_secs(12)).await;
    assert!(status.success(), "{status}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'processing'"
        )
        .await,
        0
    );
    assert_eq!(hookd.log_lines("hookd stopped"), 1);
    // Everything that finished was applied exactly once; the rest waits, untouched.
    let done = count(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
    )
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_logs").await, done);
}

fn hookd_cli(pool: &PgPool, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(hookd_bin())
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url(pool))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_on_call_story_unknown_customer_dies_then_retry_succeeds(pool: PgPool) {
    let body = stripe_event(
        "evt_new_customer",
        "customer.subscription.created",
        now(),
        json!({"id": "sub_7", "customer": "cus_new", "status": "active"}),
    );
    let id = store(
        &pool,
        common::Source::Stripe,
        "evt_new_customer",
        "customer.subscription.created",
        &body,
    )
    .await;
    let worker = worker(
        &pool,
        &[("HOOKD_MAX_ATTEMPTS", "2"), ("HOOKD_RETRY_BASE_MS", "20")],
    );
    drain(&worker, &pool, Duration::from_secs(5)).await;
    assert_eq!(state_of(&pool, id).await.0, "dead");

    let (ok, out, _) = hookd_cli(&pool, &["dlq", "list", "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], id);
    assert_eq!(
        listed[0]["error_message"],
        "no business is linked to Stripe customer cus_new"
    );

    let biz = insert_business(&pool, "New Customer Inc", Some("cus_new"), None).await;
    let (ok, out, err) = hookd_cli(&pool, &["dlq", "retry", &id.to_string(), "--json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!({"retried": 1, "id": id})
    );
    drain(&worker, &pool, Duration::from_secs(5)).await;
    assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 1, None));
    let status: Option<String> =
        sqlx::query_scalar("SELECT subscription_status FROM businesses WHERE id = $1")
            .bind(biz)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status.as_deref(), Some("active"));
    // The history keeps both deaths and the success.
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM event_attempts WHERE event_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["failed", "dead", "succeeded"]);

    let (ok, _, err) = hookd_cli(&pool, &["dlq", "retry", &id.to_string()]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!("hookd: event {id} is succeeded, not dead")
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_dlq_commands_retry_all_and_purge(pool: PgPool) {
    backlog(&pool, 5).await;
    sqlx::query("UPDATE events SET state = 'dead', dead_at = now() - make_interval(days => id::int), last_error = 'boom'")
        .execute(&pool)
        .await
        .unwrap();
    // Dead 1..5 days ago; nothing is older than 7 days yet.
    let (ok, out, _) = hookd_cli(&pool, &["dlq", "purge", "--older-than", "7d", "--json"]);
    assert!(ok);
    assert_eq!(out.trim(), r#"{"purged":0}"#);
    let (ok, out, _) = hookd_cli(&pool, &["dlq", "purge", "--older-than", "60h"]);
    assert!(ok);
    assert_eq!(out.trim(), "purged 3 dead events older than 2days 12h");
    let (ok, out, _) = hookd_cli(&pool, &["dlq", "retry-all"]);
    assert!(ok);
    assert_eq!(out.trim(), "retried 2 events");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'pending' AND attempts = 0"
        )
        .await,
        2
    );
    let (ok, out, _) = hookd_cli(&pool, &["dlq", "list"]);
    assert!(ok);
    assert_eq!(out.trim(), "the dead-letter queue is empty");
    let (ok, _, err) = hookd_cli(&pool, &["dlq", "purge", "--older-than", "soon"]);
    assert!(!ok);
    assert!(err.contains("expected an age such as 7d or 12h"), "{err}");
}

#[tokio::test]
async fn bad_configuration_stops_start_up_with_one_line_naming_it() {
    for (env, expected) in [
        (vec![], "hookd: DATABASE_URL is not set"),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
                ("HOOKD_MAX_ATTEMPTS", "many"),
            ],
            "hookd: HOOKD_MAX_ATTEMPTS is invalid: expected a whole number above 0, got \"many\"",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
                ("CUSTOM_WEBHOOK_SECRET", "whsec_!!!"),
            ],
            "hookd: CUSTOM_WEBHOOK_SECRET is invalid",
        ),
    ] {
        let output = std::process::Command::new(hookd_bin())
            .arg("serve")
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(78),
            "EX_CONFIG, so systemd does not restart"
        );
        let err = String::from_utf8(output.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(expected), "{err}");
        assert!(!err.contains("!!!"), "the secret is not echoed: {err}");
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn hookd_send_delivers_signed_samples_a_running_hookd_accepts(pool: PgPool) {
    let hookd = Process::spawn(&pool, &[]).ready().await;
    let samples = [
        ("stripe", "customer.subscription.created"),
        ("stripe", "invoice.payment_succeeded"),
        ("telnyx", "call.initiated"),
        ("telnyx", "message.finalized"),
        ("custom", "user.signed_up"),
    ];
    for (source, kind) in samples {
        let output = std::process::Command::new(hookd_bin())
            .args([
                "send",
                source,
                kind,
                "--url",
                &format!("http://127.0.0.1:{}", hookd.port),
            ])
            .env_clear()
            .env("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
            .env("TELNYX_SIGNING_KEY", b64(&TELNYX_SEED))
            .env("CUSTOM_WEBHOOK_SECRET", CUSTOM_SECRET)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{source} {kind}: {out} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(out.trim(), r#"200 OK {"received":true}"#);
    }
    wait_for(
        &pool,
        "SELECT count(*) FROM events",
        5,
        Duration::from_secs(30),
    )
    .await;
    // The Telnyx and custom samples are complete enough for their handlers.
    wait_for(
        &pool,
        "SELECT count(*) FROM call_logs",
        1,
        Duration::from_secs(30),
    )
    .await;
    wait_for(
        &pool,
        "SELECT count(*) FROM sms_logs",
        1,
        Duration::from_secs(30),
    )
    .await;
    wait_for(
        &pool,
        "SELECT count(*) FROM audit_logs WHERE source = 'custom'",
        1,
        Duration::from_secs(30),
    )
    .await;
}

/// `HOOKD_WORKERS=0` makes a receive-only instance: it verifies, stores and acknowledges, is
/// healthy, and leaves the processing to instances with workers.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_receive_only_instance_stores_and_another_processes(pool: PgPool) {
    let mut receiver = Process::spawn(&pool, &[("HOOKD_WORKERS", "0")])
        .ready()
        .await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let id = format!("recv-{i}");
        let body = custom_event("user.signed_up");
        let mut request = client
            .post(format!("http://127.0.0.1:{}{CUSTOM_PATH}", receiver.port))
            .body(body.clone());
        for (name, value) in custom_headers(&id, &body, now()) {
            request = request.header(name, value);
        }
        assert_eq!(request.send().await.unwrap().status(), 200);
    }
    let health = client
        .get(format!(
            "http://127.0.0.1:{}/api/webhooks/health",
            receiver.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "a receive-only instance is healthy");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events WHERE state = 'pending'").await,
        20,
        "nothing was processed by the receiver"
    );

    let mut processor = Process::spawn(&pool, &[]).ready().await;
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        20,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(count(&pool, EXACTLY_ONCE).await, 20);
    for process in [&mut receiver, &mut processor] {
        process.signal("TERM");
        assert!(process.exit_within(Duration::from_secs(30)).await.success());
    }
}
