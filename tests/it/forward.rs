//! Forwarding to a downstream URL: signed, bounded by a timeout, retried until it answers 2xx.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::{MIGRATOR, Source};
use hookd::verify::standard;
use sqlx::PgPool;

use crate::harness::*;

const FORWARD_SECRET: &str = "whsec_dGhpcyBpcyB0aGUgZG93bnN0cmVhbSBrZXk=";

#[derive(Default)]
struct Downstream {
    seen: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
    failures_left: Mutex<u32>,
}

/// A downstream on loopback that fails `failures` times with 500, then answers 200.
async fn downstream(failures: u32, delay: Duration) -> (String, Arc<Downstream>) {
    let state = Arc::new(Downstream {
        failures_left: Mutex::new(failures),
        ..Downstream::default()
    });
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = shared.clone();
            async move {
                tokio::time::sleep(delay).await;
                state.seen.lock().unwrap().push((headers, body.to_vec()));
                let mut left = state.failures_left.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "boom: downstream is deploying",
                    )
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_failing_downstream_is_retried_until_it_recovers(pool: PgPool) {
    let (url, downstream) = downstream(2, Duration::ZERO).await;
    let body = custom_event("invoice.sent");
    let id = store(&pool, Source::Custom, "msg_fw", "invoice.sent", &body).await;
    let worker = worker(
        &pool,
        &[
            ("HOOKD_FORWARD_URL_CUSTOM", &url),
            ("HOOKD_FORWARD_SECRET", FORWARD_SECRET),
        ],
    );
    drain(&worker, &pool, Duration::from_secs(5)).await;

    assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 3, None));
    let history = common::db::events::attempts(&pool, id).await.unwrap();
    let statuses: Vec<_> = history
        .iter()
        .map(|a| (a.outcome.as_str(), a.http_status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("failed", Some(500)),
            ("failed", Some(500)),
            ("succeeded", Some(200))
        ]
    );
    assert_eq!(
        history[0].response_body.as_deref(),
        Some("boom: downstream is deploying")
    );
    assert!(
        history[0]
            .error
            .as_deref()
            .unwrap()
            .contains("answered 500")
    );
    // The built-in handler ran once, on the attempt that succeeded.
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_logs").await, 1);

    let secret: standard::Secret = FORWARD_SECRET.parse().unwrap();
    let seen = downstream.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (headers, received) in seen.iter() {
        assert_eq!(
            received,
            body.as_bytes(),
            "the original body, byte for byte"
        );
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(
            h("webhook-id"),
            Some(format!("hookd_{id}").as_str()),
            "stable across retries"
        );
        standard::verify(
            &secret,
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            received,
            now(),
        )
        .expect("forwarded events verify with the forward secret");
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn slow_or_absent_downstreams_fail_within_the_timeout(pool: PgPool) {
    let (slow, _) = downstream(0, Duration::from_secs(30)).await;
    let absent = format!("http://127.0.0.1:{}/hooks", free_port());
    for (url, reason) in [(slow, "timed out"), (absent, "could not connect")] {
        sqlx::query("TRUNCATE events, event_keys, event_attempts")
            .execute(&pool)
            .await
            .unwrap();
        let id = store(
            &pool,
            Source::Stripe,
            "evt_fw",
            "charge.refunded",
            &stripe_event("evt_fw", "charge.refunded", now(), serde_json::json!({})),
        )
        .await;
        let worker = worker(
            &pool,
            &[
                ("HOOKD_FORWARD_URL_STRIPE", &url),
                ("HOOKD_FORWARD_SECRET", FORWARD_SECRET),
                ("HOOKD_FORWARD_TIMEOUT_MS", "300"),
                ("HOOKD_MAX_ATTEMPTS", "1"),
            ],
        );
        let started = std::time::Instant::now();
        worker.process_batch().await.unwrap();
        // The 300 ms timeout, not the downstream's 30 s; room for a slow machine.
        assert!(started.elapsed() < Duration::from_secs(10));
        let (state, _, error) = state_of(&pool, id).await;
        assert_eq!(state, "dead");
        assert!(error.as_deref().unwrap().contains(reason), "{error:?}");
        assert!(!error.unwrap().contains("?"), "no query string in errors");
    }
}
