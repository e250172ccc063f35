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

/// A downstream answering every forward with `status` and a `Location` pointing at `target`.
async fn redirector(status: StatusCode, target: &str) -> String {
    let target = target.to_owned();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move || {
            let target = target.clone();
            async move { (status, [(axum::http::header::LOCATION, target)], "moved") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn redirects_fail_the_delivery_and_are_not_followed(pool: PgPool) {
    // Where a redirect would lead: it must never hear from hookd.
    let (target, elsewhere) = downstream(0, Duration::ZERO).await;
    for status in [
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::MOVED_PERMANENTLY,
    ] {
        sqlx::query("TRUNCATE events, event_keys, event_attempts")
            .execute(&pool)
            .await
            .unwrap();
        let url = redirector(status, &target).await;
        let id = store(
            &pool,
            Source::Custom,
            "msg_redirect",
            "invoice.sent",
            &custom_event("invoice.sent"),
        )
        .await;
        let worker = worker(
            &pool,
            &[
                ("HOOKD_FORWARD_URL_CUSTOM", &url),
                ("HOOKD_FORWARD_SECRET", FORWARD_SECRET),
                ("HOOKD_FORWARD_TIMEOUT_MS", "5000"),
                ("HOOKD_MAX_ATTEMPTS", "1"),
            ],
        );
        worker.process_batch().await.unwrap();

        let (state, attempts, error) = state_of(&pool, id).await;
        assert_eq!((state.as_str(), attempts), ("dead", 1));
        let error = error.unwrap();
        assert!(
            error.contains(&format!("answered {status}")),
            "{status}: {error}"
        );
        let history = common::db::events::attempts(&pool, id).await.unwrap();
        assert_eq!(history.len(), 1);
        // The only attempt was the last one allowed.
        assert_eq!(history[0].outcome.as_str(), "dead");
        assert_eq!(history[0].http_status, Some(i32::from(status.as_u16())));
        assert_eq!(history[0].response_body.as_deref(), Some("moved"));
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_logs").await, 0);
    assert!(
        elsewhere.seen.lock().unwrap().is_empty(),
        "the redirect target was reached"
    );
}

/// What the endless downstream managed to send before it stopped, and why it stopped.
#[derive(Debug)]
struct Streamed {
    bytes: u64,
    hung_up: bool,
}

/// A downstream that answers 200 and then streams a body that never ends: `x`, then `€` after
/// `€` in 48 KiB chunks, until hookd hangs up, `limit` bytes are out, a write stalls for 5 s
/// (hookd stopped reading without closing), or 60 s have passed.
async fn endless_downstream(limit: u64) -> (String, tokio::task::JoinHandle<Streamed>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        assert!(head.starts_with(b"POST /hooks "), "not a forward");
        socket
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
                  transfer-encoding: chunked\r\n\r\n1\r\nx\r\n",
            )
            .await
            .unwrap();
        let data = "€".repeat(16 * 1024);
        let frame = format!("{:x}\r\n{data}\r\n", data.len());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut bytes = 0;
        while bytes < limit && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), socket.write_all(frame.as_bytes()))
                .await
            {
                Ok(Ok(())) => bytes += frame.len() as u64,
                Ok(Err(_)) => {
                    return Streamed {
                        bytes,
                        hung_up: true,
                    };
                }
                Err(_) => break,
            }
        }
        Streamed {
            bytes,
            hung_up: false,
        }
    });
    (url, task)
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_endless_response_body_is_cut_at_the_snippet_and_not_read_further(pool: PgPool) {
    let (url, streamed) = endless_downstream(4 << 30).await;
    let id = store(
        &pool,
        Source::Custom,
        "msg_endless",
        "invoice.sent",
        &custom_event("invoice.sent"),
    )
    .await;
    let worker = worker(
        &pool,
        &[
            ("HOOKD_FORWARD_URL_CUSTOM", &url),
            ("HOOKD_FORWARD_SECRET", FORWARD_SECRET),
            // Far above what the test allows: the body must end the read, not the timeout.
            ("HOOKD_FORWARD_TIMEOUT_MS", "30000"),
            ("HOOKD_MAX_ATTEMPTS", "1"),
        ],
    );
    let started = std::time::Instant::now();
    worker.process_batch().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // The status is the downstream's verdict; how much body follows it is not.
    assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 1, None));
    let history = common::db::events::attempts(&pool, id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].http_status, Some(200));
    let recorded = history[0].response_body.as_deref().unwrap();
    // 512 bytes would end inside the 171st `€`: the cut falls before it.
    assert_eq!(recorded, format!("x{}", "€".repeat(170)));
    assert!(recorded.len() <= 512);

    let streamed = tokio::time::timeout(Duration::from_secs(30), streamed)
        .await
        .expect("the downstream notices within 30 s")
        .unwrap();
    assert!(
        streamed.hung_up,
        "hookd kept the connection open: {streamed:?}"
    );
    // What loopback socket buffers and one read of the client hold, not the body.
    assert!(streamed.bytes < 64 << 20, "{streamed:?}");
}

#[tokio::test]
async fn https_only_refuses_a_plain_http_forward_url_at_start_up() {
    let port = free_port();
    let mut command = tokio::process::Command::new(hookd_bin());
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Never reached: the configuration is refused first.
        .env("DATABASE_URL", "postgres://hookd@127.0.0.1:1/hookd")
        .env("HOOKD_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKD_FORWARD_SECRET", FORWARD_SECRET)
        .env("HOOKD_FORWARD_URL_STRIPE", "https://127.0.0.1:9/hooks")
        .env("HOOKD_FORWARD_URL_CUSTOM", "http://127.0.0.1:9/hooks")
        .env("HOOKD_FORWARD_HTTPS_ONLY", "true")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("hookd exits at once")
        .unwrap();
    assert_eq!(output.status.code(), Some(78), "EX_CONFIG: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        "hookd: HOOKD_FORWARD_URL_CUSTOM is invalid: expected an https URL because \
         HOOKD_FORWARD_HTTPS_ONLY is true, got http://"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "hookd must not have listened"
    );
}
