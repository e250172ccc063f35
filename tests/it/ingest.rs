//! Verified, idempotent ingest: what senders see and what is stored.

use common::MIGRATOR;
use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

fn ack() -> serde_json::Value {
    json!({"received": true})
}

fn duplicate() -> serde_json::Value {
    json!({"received": true, "duplicate": true})
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn each_route_stores_the_exact_body_before_acknowledging(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let stripe = stripe_event("evt_1", "customer.subscription.created", now(), json!({}));
    let telnyx = telnyx_event("tx-1", "call.hangup", json!({"call_control_id": "c1"}));
    let custom = custom_event("user.signed_up");
    assert_eq!(hookd.stripe(&stripe).await, (200, ack()));
    assert_eq!(hookd.telnyx(&telnyx).await, (200, ack()));
    assert_eq!(hookd.custom("msg_1", &custom).await, (200, ack()));

    let rows: Vec<(String, String, String, String, Vec<u8>)> =
        sqlx::query_as("SELECT source, event_id, event_type, state, body FROM events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                "stripe".into(),
                "evt_1".into(),
                "customer.subscription.created".into(),
                "pending".into(),
                stripe.into_bytes()
            ),
            (
                "telnyx".into(),
                "tx-1".into(),
                "call.hangup".into(),
                "pending".into(),
                telnyx.into_bytes()
            ),
            (
                "custom".into(),
                "msg_1".into(),
                "user.signed_up".into(),
                "pending".into(),
                custom.into_bytes()
            ),
        ]
    );
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn redeliveries_are_acknowledged_and_create_nothing(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let stripe = stripe_event("evt_dup", "invoice.payment_succeeded", now(), json!({}));
    let telnyx = telnyx_event("tx-dup", "message.sent", json!({"id": "m1"}));
    let custom = custom_event("order.placed");
    for _ in 0..2 {
        hookd.stripe(&stripe).await;
        hookd.telnyx(&telnyx).await;
        hookd.custom("msg_dup", &custom).await;
    }
    assert_eq!(hookd.stripe(&stripe).await, (200, duplicate()));
    assert_eq!(hookd.telnyx(&telnyx).await, (200, duplicate()));
    assert_eq!(hookd.custom("msg_dup", &custom).await, (200, duplicate()));
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 3);
    // The same id from another source is another event.
    assert_eq!(hookd.custom("evt_dup", &custom).await, (200, ack()));
    hookd.stop().await;
}

/// Batches from different connections (as from several hookd instances) that share keys: each
/// key is stored once, by whichever batch commits it first, and the others answer duplicate.
#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_batches_sharing_keys_store_each_event_once(pool: PgPool) {
    use common::db::events::{Inserted, NewEvent, insert_many};
    let events: Vec<NewEvent> = (0..50)
        .map(|i| NewEvent {
            source: common::Source::Custom,
            event_id: common::ProviderEventId::parse(format!("msg_race_{i}")).unwrap(),
            event_type: common::EventType::parse("race.test").unwrap(),
            body: custom_event("race.test").into_bytes(),
            jsonb_checked: false,
        })
        .collect();
    let pool = pool_like(&pool, 8);
    for round in 0..3 {
        let batches = (0..8).map(|t| {
            let mut batch = events.clone();
            batch.rotate_left(t * 7);
            if t % 2 == 1 {
                batch.reverse();
            }
            // Each batch also carries one key no other batch has.
            batch.push(NewEvent {
                event_id: common::ProviderEventId::parse(format!("msg_own_{round}_{t}")).unwrap(),
                ..events[0].clone()
            });
            let pool = pool.clone();
            async move {
                let answers = insert_many(&pool, &batch).await.unwrap();
                batch
                    .into_iter()
                    .zip(answers)
                    .map(|(e, a)| (e.event_id.as_str().to_owned(), a))
                    .collect::<Vec<_>>()
            }
        });
        let answers: Vec<_> = futures::future::join_all(batches)
            .await
            .into_iter()
            .flatten()
            .collect();
        for event in &events {
            let new = answers
                .iter()
                .filter(|(id, a)| id == event.event_id.as_str() && matches!(a, Inserted::New(_)))
                .count();
            assert_eq!(
                new,
                usize::from(round == 0),
                "{} in round {round}",
                event.event_id.as_str()
            );
        }
        let own = answers
            .iter()
            .filter(|(id, a)| id.starts_with("msg_own_") && matches!(a, Inserted::New(_)))
            .count();
        assert_eq!(own, 8, "a batch that lost keys still stores its own");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events").await,
        50 + 3 * 8
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_keys").await,
        50 + 3 * 8
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events e JOIN event_keys k USING (id, source, event_id)"
        )
        .await,
        50 + 3 * 8,
        "every event has its key"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_hundred_concurrent_deliveries_of_one_event_make_one_row(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let body = stripe_event(
        "evt_race",
        "customer.subscription.updated",
        now(),
        json!({}),
    );
    let headers = stripe_headers(&body, now());
    let replies = futures::future::join_all(
        (0..100).map(|_| hookd.post(STRIPE_PATH, &headers, body.clone())),
    )
    .await;
    assert!(
        replies.iter().all(|(status, _)| *status == 200),
        "{replies:?}"
    );
    let fresh = replies.iter().filter(|(_, body)| *body == ack()).count();
    assert_eq!(fresh, 1, "exactly one delivery creates the event");
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 1);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn stripe_accepts_a_rotated_secret_in_any_position(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let body = stripe_event("evt_rot", "invoice.payment_failed", now(), json!({}));
    let t = now();
    let good = stripe_headers(&body, t)[0].1.clone();
    let v1 = good.split(",v1=").nth(1).unwrap();
    let old = "0".repeat(64);
    for header in [
        format!("t={t},v1={old},v1={v1}"),
        format!("t={t},v0={old},v1={v1},v1={old}"),
    ] {
        let (status, _) = hookd
            .post(STRIPE_PATH, &[("Stripe-Signature", header)], body.clone())
            .await;
        assert_eq!(status, 200);
    }
    hookd.stop().await;
}

async fn assert_rejected(
    hookd: &Hookd,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
    reason: &str,
) {
    let (status, reply) = hookd.post(path, headers, body.to_owned()).await;
    assert_eq!(status, 400, "{path} {headers:?}: {reply}");
    let error = reply["error"].as_str().expect("an error message");
    assert!(error.contains(reason), "expected {reason:?} in {error:?}");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn stale_and_future_timestamps_are_rejected(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let stripe = stripe_event("evt_old", "x.y", now(), json!({}));
    let telnyx = telnyx_event("tx-old", "x.y", json!({}));
    let custom = custom_event("x.y");
    // Past the 300 s tolerance by a margin: the server reads its clock later than the test.
    for offset in [-330, 330, -86_400] {
        let t = now() + offset;
        assert_rejected(
            &hookd,
            STRIPE_PATH,
            &stripe_headers(&stripe, t),
            &stripe,
            "timestamp",
        )
        .await;
        assert_rejected(
            &hookd,
            TELNYX_PATH,
            &telnyx_headers(&telnyx, t),
            &telnyx,
            "timestamp",
        )
        .await;
        assert_rejected(
            &hookd,
            CUSTOM_PATH,
            &custom_headers("m", &custom, t),
            &custom,
            "timestamp",
        )
        .await;
    }
    // Just inside the window is fine.
    let t = now() - 290;
    assert_eq!(
        hookd
            .post(STRIPE_PATH, &stripe_headers(&stripe, t), stripe.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        hookd
            .post(TELNYX_PATH, &telnyx_headers(&telnyx, t), telnyx.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        hookd
            .post(
                CUSTOM_PATH,
                &custom_headers("m", &custom, t),
                custom.clone()
            )
            .await
            .0,
        200
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 3);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn missing_headers_are_named(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let body = custom_event("x.y");
    assert_rejected(&hookd, STRIPE_PATH, &[], &body, "stripe-signature").await;
    let telnyx = telnyx_headers(&body, now());
    assert_rejected(&hookd, TELNYX_PATH, &telnyx[..1], &body, "telnyx-timestamp").await;
    assert_rejected(
        &hookd,
        TELNYX_PATH,
        &telnyx[1..],
        &body,
        "telnyx-signature-ed25519",
    )
    .await;
    let custom = custom_headers("m", &body, now());
    for missing in 0..3 {
        let mut headers = custom.clone();
        let (name, _) = headers.remove(missing);
        assert_rejected(&hookd, CUSTOM_PATH, &headers, &body, name).await;
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn tampered_bodies_and_empty_signatures_are_rejected(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let body = stripe_event("evt_t", "x.y", now(), json!({"amount": 100}));
    let forged = body.replace("100", "999");
    assert_rejected(
        &hookd,
        STRIPE_PATH,
        &stripe_headers(&body, now()),
        &forged,
        "signature",
    )
    .await;
    assert_rejected(
        &hookd,
        TELNYX_PATH,
        &telnyx_headers(&body, now()),
        &forged,
        "signature",
    )
    .await;
    assert_rejected(
        &hookd,
        CUSTOM_PATH,
        &custom_headers("m", &body, now()),
        &forged,
        "signature",
    )
    .await;

    let mut empty = custom_headers("m", &body, now());
    empty[2].1 = "v1,".into();
    assert_rejected(&hookd, CUSTOM_PATH, &empty, &body, "signature").await;
    // The Telnyx signature covers "{timestamp}|{body}", not "{timestamp}.{body}".
    let t = now();
    let dotted = format!("{t}.{body}");
    let sig = ed25519_dalek::Signer::sign(&telnyx_key(), dotted.as_bytes());
    let headers = [
        ("telnyx-signature-ed25519", b64(&sig.to_bytes())),
        ("telnyx-timestamp", t.to_string()),
    ];
    assert_rejected(&hookd, TELNYX_PATH, &headers, &body, "signature").await;
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn published_header_vectors_are_rejected_over_http(pool: PgPool) {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../vectors/signatures.json")).unwrap();
    let hookd = Hookd::ingest_only(&pool).await;
    let body = vectors["stripe"][0]["body"].as_str().unwrap().to_owned();
    for case in vectors["stripe_header_cases"].as_array().unwrap() {
        let header = case["header"].as_str().unwrap().to_owned();
        // Every case is either malformed or signed 2017: none may be stored today.
        let (status, reply) = hookd
            .post(STRIPE_PATH, &[("Stripe-Signature", header)], body.clone())
            .await;
        assert_eq!(status, 400, "{case}: {reply}");
    }
    let sw = &vectors["standard_webhooks_v1"][0];
    let headers = [
        ("webhook-id", sw["id"].as_str().unwrap().to_owned()),
        ("webhook-timestamp", sw["timestamp"].to_string()),
        (
            "webhook-signature",
            sw["signature"].as_str().unwrap().to_owned(),
        ),
    ];
    assert_rejected(
        &hookd,
        CUSTOM_PATH,
        &headers,
        sw["body"].as_str().unwrap(),
        "timestamp",
    )
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn signed_bodies_that_are_not_usable_json_say_why(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    for (body, reason) in [
        ("{\"id\": \"evt_1\", ", "not valid JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        ("{\"type\": \"x.y\"}", "/id"),
        ("{\"id\": 42, \"type\": \"x.y\"}", "/id"),
        ("{\"id\": \"\", \"type\": \"x.y\"}", "event id is empty"),
        (
            "{\"id\": \"evt_nul\", \"type\": \"x.y\", \"note\": \"a\\u0000b\"}",
            "cannot be stored",
        ),
        // Valid JSON that serde_json reads as 0.0, but beyond any numeric jsonb can hold.
        (
            "{\"id\": \"evt_tiny\", \"type\": \"x.y\", \"n\": 1e-20000}",
            "cannot be stored",
        ),
    ] {
        assert_rejected(
            &hookd,
            STRIPE_PATH,
            &stripe_headers(body, now()),
            body,
            reason,
        )
        .await;
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_rejected(
        &hookd,
        CUSTOM_PATH,
        &custom_headers("m", &deep, now()),
        &deep,
        "not valid JSON",
    )
    .await;
    let no_type = "{\"data\": {\"id\": \"x\"}}";
    assert_rejected(
        &hookd,
        TELNYX_PATH,
        &telnyx_headers(no_type, now()),
        no_type,
        "/data/event_type",
    )
    .await;
    assert_rejected(
        &hookd,
        CUSTOM_PATH,
        &custom_headers("m", "{}", now()),
        "{}",
        "/type",
    )
    .await;
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn bodies_over_the_limit_get_413(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let big = format!(
        "{{\"type\":\"x.y\",\"pad\":\"{}\"}}",
        "a".repeat(1024 * 1024)
    );
    let (status, reply) = hookd
        .post(CUSTOM_PATH, &custom_headers("m", &big, now()), big.clone())
        .await;
    assert_eq!(status, 413, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("limit"));
    // Without a Content-Length the limit still holds while streaming.
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _) = hookd
        .post(
            CUSTOM_PATH,
            &custom_headers("m", "x", now()),
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn unconfigured_sources_are_not_found(pool: PgPool) {
    let mut config = config(&[]);
    config.providers.remove(common::Source::Stripe);
    config.workers = 0;
    let hookd = Hookd::start(&pool, config).await;
    let body = stripe_event("evt_1", "x.y", now(), json!({}));
    let (status, reply) = hookd
        .post(STRIPE_PATH, &stripe_headers(&body, now()), body)
        .await;
    assert_eq!(status, 404);
    assert!(reply["error"].as_str().unwrap().contains("not configured"));
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn one_unstorable_payload_in_a_batch_fails_alone(pool: PgPool) {
    let hookd = Hookd::ingest_only(&pool).await;
    let replies = futures::future::join_all((0..40).map(|i| {
        let body = match i {
            17 => r#"{"type": "x.y", "note": "nul \u0000 byte"}"#.to_owned(),
            29 => r#"{"type": "x.y", "n": 1e-20000}"#.to_owned(),
            _ => custom_event("x.y"),
        };
        let headers = custom_headers(&format!("m{i}"), &body, now());
        let hookd = &hookd;
        async move { hookd.post(CUSTOM_PATH, &headers, body).await.0 }
    }))
    .await;
    let refused: Vec<usize> = (0..40).filter(|&i| replies[i] != 200).collect();
    assert_eq!(refused, [17, 29]);
    assert_eq!((replies[17], replies[29]), (400, 400));
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 38);
    // Ingest's statement claims the keys and counts what it stored itself.
    assert_eq!(count(&pool, "SELECT count(*) FROM event_keys").await, 38);
    let totals = common::db::stats::totals(&pool, chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(totals.received, 38);
    hookd.stop().await;
}

/// A commit can fail after its statement succeeded (here a check deferred to the commit):
/// every request in that batch fails and none of its events is stored, while a batch that ran
/// its statement meanwhile is answered by its own commit. Sent again, each is stored once.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_batch_whose_commit_fails_fails_every_request_in_it(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
         CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON events_live
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
             WHEN (NEW.event_id = 'm_poison') EXECUTE FUNCTION refuse_at_commit();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let hookd = Hookd::ingest_only(&pool).await;
    let ids: Vec<String> = (0..60)
        .map(|i| {
            if i == 23 {
                "m_poison".into()
            } else {
                format!("m{i}")
            }
        })
        .collect();
    let send = |ids: Vec<String>| {
        let hookd = &hookd;
        futures::future::join_all(ids.into_iter().map(move |id| async move {
            let body = custom_event("x.y");
            let headers = custom_headers(&id, &body, now());
            (id, hookd.post(CUSTOM_PATH, &headers, body).await.0)
        }))
    };
    let first = send(ids.clone()).await;
    let stored: std::collections::HashSet<String> =
        sqlx::query_scalar("SELECT event_id FROM events")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (id, status) in &first {
        match status {
            200 => assert!(stored.contains(id), "{id} was acknowledged but not stored"),
            503 => assert!(!stored.contains(id), "{id} was refused but stored"),
            other => panic!("{id}: {other}"),
        }
    }
    assert!(first.iter().any(|(id, s)| id == "m_poison" && *s == 503));

    sqlx::query("DROP TRIGGER refuse_at_commit ON events_live")
        .execute(&pool)
        .await
        .unwrap();
    let refused = first
        .into_iter()
        .filter(|(_, s)| *s != 200)
        .map(|(id, _)| id)
        .collect();
    assert!(send(refused).await.iter().all(|(_, s)| *s == 200));
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 60);
    assert_eq!(count(&pool, "SELECT count(*) FROM event_keys").await, 60);
    hookd.stop().await;
}

/// Ends every session hookd holds on the test's database; returns how many.
async fn terminate_hookd_sessions(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'hookd' AND datname = current_database()",
    )
    .await
}

/// The server ends the writer's session in the middle of a batch (an administrator, a
/// failover) and again while it keeps its connection between batches: each batch is written
/// again on a new connection, so every request is acknowledged and stored once, none refused.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_writer_session_ended_by_the_server_refuses_nothing(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE SEQUENCE slow_once;
         CREATE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('slow_once') = 1 THEN PERFORM pg_sleep(60); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER slow_once BEFORE INSERT ON events_live FOR EACH ROW
             WHEN (NEW.event_id = 'm_slow') EXECUTE FUNCTION slow_once();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let hookd = Hookd::ingest_only(&pool).await;
    let body = custom_event("x.y");
    let (slow, behind) = tokio::join!(hookd.custom("m_slow", &body), async {
        while count(
            &pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event = 'PgSleep' AND datname = current_database()",
        )
        .await
            == 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // These wait for the sleeping batch and go in the next one.
        let behind = futures::future::join_all((0..30).map(|i| {
            let (hookd, body) = (&hookd, &body);
            async move { hookd.custom(&format!("m{i}"), body).await }
        }));
        let (behind, terminated) = tokio::join!(behind, async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            terminate_hookd_sessions(&pool).await
        });
        assert!(terminated >= 1);
        behind
    });
    assert_eq!(slow, (200, ack()));
    assert!(
        behind.iter().all(|reply| *reply == (200, ack())),
        "{behind:?}"
    );
    // Within the writer's linger its connection is kept, untested, for the next batch.
    assert!(terminate_hookd_sessions(&pool).await >= 1);
    assert_eq!(hookd.custom("m_after", &body).await, (200, ack()));
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 32);
    assert_eq!(count(&pool, "SELECT count(*) FROM event_keys").await, 32);
    hookd.stop().await;
}

/// With the database unreachable, a valid webhook must get 503, never a 2xx.
#[tokio::test]
async fn an_unreachable_database_answers_503() {
    // Nothing listens on port 1; connections are refused at once.
    let options: sqlx::postgres::PgConnectOptions =
        "postgres://hookd@127.0.0.1:1/hookd".parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy_with(options);
    let state = hookd::AppState::new(
        pool,
        &config(&[]),
        Default::default(),
        None,
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = hookd::app(state);
    tokio::spawn(hookd::http::serve(listener, app, 64, Default::default()));
    // Concurrent deliveries share failed batches: every one of them must fail.
    let client = reqwest::Client::new();
    let replies = futures::future::join_all((0..20).map(|i| {
        let body = stripe_event(&format!("evt_down_{i}"), "x.y", now(), json!({}));
        client
            .post(format!("http://{addr}{STRIPE_PATH}"))
            .header(
                "Stripe-Signature",
                stripe_headers(&body, now())[0].1.clone(),
            )
            .body(body)
            .send()
    }))
    .await;
    for response in replies {
        let response = response.unwrap();
        assert_eq!(response.status().as_u16(), 503);
        let reply: serde_json::Value = response.json().await.unwrap();
        assert_eq!(reply, json!({"error": "database unavailable, retry later"}));
    }
}

/// hooktop and other hookd processes LISTEN: a stored event and a processed batch are each
/// announced after their commit.
#[sqlx::test(migrator = "MIGRATOR")]
async fn stored_and_processed_events_are_announced_to_listeners(pool: PgPool) {
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener
        .listen_all([common::EVENTS_CHANNEL, common::PROGRESS_CHANNEL])
        .await
        .unwrap();
    let hookd = Hookd::start(&pool, config(&[])).await;
    assert_eq!(
        hookd.custom("msg_announced", &custom_event("x.y")).await,
        (200, ack())
    );
    let mut heard = std::collections::BTreeSet::new();
    let deadline = std::time::Duration::from_secs(30);
    while heard.len() < 2 {
        let note = tokio::time::timeout(deadline, listener.recv())
            .await
            .expect("announcements within 30 s")
            .unwrap();
        heard.insert(note.channel().to_owned());
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'succeeded'"
        )
        .await,
        1,
        "progress is announced after the batch committed"
    );
    hookd.stop().await;
}

/// Ingest skips PostgreSQL's own parse of a body only when the pass that reads its id and
/// type says jsonb takes it as it is: every such body, of tricky numbers and escapes in values
/// and names, at the top and nested, must be one jsonb takes.
#[sqlx::test(migrator = "MIGRATOR")]
async fn bodies_read_as_jsonb_ready_are_ones_jsonb_takes(pool: PgPool) {
    let numbers = [
        "0",
        "-0",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1.5",
        "-0.0",
        "1e2",
        "1E+2",
        "1e-2",
        "1e308",
        "5e-324",
        "1e-400",
        "1e-1000",
        "1e-1001",
        "1e-20000",
        "0.12345678901234567890123456789",
    ];
    let strings = [
        r#""plain""#,
        r#""""#,
        "\"caf\u{e9} \u{1f600}\"",
        r#""caf\u00e9""#,
        r#""\u0000""#,
        r#""a\u0000b""#,
        r#""\u0041""#,
        r#""\n\t\r\b\f\\\/\"""#,
        r#""\ud83d\ude00""#,
        r#""\u007f""#,
        r#""\u0080""#,
        r#""\uffff""#,
        r#""\u2028""#,
        r#""\u001f""#,
        "\"\u{e9}\\n\"",
    ];
    let mut bodies = Vec::new();
    for value in numbers.iter().chain(&strings) {
        bodies.push(format!(r#"{{"id":"evt_1","v":{value}}}"#));
        bodies.push(format!(r#"{{"a":[{{"b":[{value}, {{"c":{value}}}]}}]}}"#));
        bodies.push(format!("[{value}]"));
    }
    for name in &strings {
        bodies.push(format!(r#"{{{name}:1,"n":{{{name}:{name}}}}}"#));
        for value in &numbers {
            bodies.push(format!(r#"{{{name}:{value}}}"#));
        }
    }
    let (mut as_is, mut refused) = (0, 0);
    for body in &bodies {
        let Ok(found) = hookd::providers::pointer::strings_at(body.as_bytes(), &["/id"]) else {
            continue;
        };
        let taken = sqlx::query("SELECT $1::jsonb")
            .bind(body)
            .execute(&pool)
            .await
            .is_ok();
        if found.jsonb_as_is {
            as_is += 1;
            assert!(taken, "read as jsonb-ready, refused by jsonb: {body}");
        }
        refused += usize::from(!taken);
    }
    assert!(
        as_is > 50 && refused > 10,
        "{as_is} as is, {refused} refused"
    );
}
