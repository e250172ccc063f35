//! Property tests of hookd's untrusted-input boundary: the three signature-header parsers
//! (arbitrary headers never panic and never verify; whatever is signed verifies), and the
//! payload field extraction behind the real HTTP routes (any signed body gets 200 or 400,
//! never a 5xx or a dropped connection).
//!
//! Case counts are modest so CI stays fast; raise them locally with `PROPTEST_CASES=10000`.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hookd::verify::{TOLERANCE_SECS, VerifyError, standard, stripe, telnyx};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::Value;

/// A fixed "now" near today's clock, so generated timestamps are inside the window.
const NOW: i64 = 1_790_000_000;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary text: any Unicode, any bytes made text, and the characters the parsers split on.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(any::<u8>(), 0..128).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[tv01=, a-f0-9\\t|.-]{0,120}",
    ]
}

fn hex64() -> impl Strategy<Value = String> {
    any::<[u8; 32]>().prop_map(hex::encode)
}

/// One item of a hostile `Stripe-Signature` header.
fn stripe_item() -> impl Strategy<Value = String> {
    prop_oneof![
        (NOW - 400..NOW + 400).prop_map(|t| format!("t={t}")),
        hex64().prop_map(|h| format!("v1={h}")),
        hex64().prop_map(|h| format!("v0={h}")),
        "[0-9a-fA-F]{0,70}".prop_map(|h| format!("v1={h}")),
        Just("t=".to_owned()),
        Just("v1=".to_owned()),
        Just("=".to_owned()),
        Just(String::new()),
        "[ -~]{0,20}",
        any::<String>(),
    ]
}

/// One entry of a hostile `webhook-signature` header.
fn standard_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|b| format!("v1,{}", BASE64.encode(b))),
        any::<[u8; 32]>().prop_map(|b| format!("v1a,{}", BASE64.encode(b))),
        "[A-Za-z0-9+/=]{0,50}".prop_map(|s| format!("v1,{s}")),
        Just("v1,".to_owned()),
        Just(",".to_owned()),
        "[ -~]{0,20}",
        any::<String>(),
    ]
}

fn flip_bit(bytes: &mut [u8], at: usize, bit: u8) {
    let i = at % bytes.len();
    bytes[i] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(cases(256))]

    // ---------------------------------------------------------------- Stripe ----

    #[test]
    fn stripe_arbitrary_headers_never_panic_nor_verify(
        header in text(),
        body in vec(any::<u8>(), 0..256),
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        prop_assert!(stripe::verify(b"whsec_prop", Some(&header), &body, now).is_err());
    }

    /// Whatever the other items, the header verifies exactly when it carries the right
    /// timestamp and the right v1 (rotation: any position among wrong ones).
    #[test]
    fn stripe_verifies_iff_the_right_signature_is_present(
        secret in vec(any::<u8>(), 0..64),
        body in vec(any::<u8>(), 0..512),
        t in NOW - 10_000..NOW + 10_000,
        skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
        noise in vec(stripe_item(), 0..6),
        include in any::<bool>(),
        position in any::<prop::sample::Index>(),
    ) {
        let signed = stripe::sign(&secret, t, &body);
        let v1 = signed.split_once(',').unwrap().1.to_owned();
        // Noise may carry its own `t=` (even inside an item with commas); keep it out, a
        // second timestamp is malformed.
        let joined = noise.join(",");
        let mut items: Vec<String> = joined
            .split(',')
            .filter(|i| i.split_once('=').is_none_or(|(k, _)| k.trim() != "t"))
            .map(str::to_owned)
            .collect();
        if include {
            items.insert(position.index(items.len() + 1), v1);
        }
        items.insert(0, format!("t={t}"));
        let header = items.join(",");
        let result = stripe::verify(&secret, Some(&header), &body, t + skew);
        prop_assert_eq!(result.is_ok(), include, "{}: {:?}", header, result);
    }

    #[test]
    fn stripe_round_trip_and_tampering(
        secret in vec(any::<u8>(), 1..64),
        body in vec(any::<u8>(), 1..512),
        t in 0..i64::MAX / 2,
        skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let header = stripe::sign(&secret, t, &body);
        prop_assert_eq!(stripe::verify(&secret, Some(&header), &body, t + skew), Ok(()));
        let mut forged = body.clone();
        flip_bit(&mut forged, at, bit);
        prop_assert_eq!(
            stripe::verify(&secret, Some(&header), &forged, t + skew),
            Err(VerifyError::NoMatch)
        );
        let mut other = secret.clone();
        flip_bit(&mut other, at, bit);
        prop_assert_eq!(
            stripe::verify(&other, Some(&header), &body, t + skew),
            Err(VerifyError::NoMatch)
        );
        // The same signature under a moved timestamp (a replay with a fresh `t`).
        let moved = header.replacen(&format!("t={t}"), &format!("t={}", t + 1), 1);
        prop_assert_eq!(
            stripe::verify(&secret, Some(&moved), &body, t + 1),
            Err(VerifyError::NoMatch)
        );
        // Outside the window the right signature is refused too.
        prop_assert_eq!(
            stripe::verify(&secret, Some(&header), &body, t + TOLERANCE_SECS + 1),
            Err(VerifyError::StaleTimestamp)
        );
    }

    // ---------------------------------------------------------------- Telnyx ----

    #[test]
    fn telnyx_arbitrary_headers_never_panic_nor_verify(
        signature in prop_oneof![
            text(),
            any::<[u8; 32]>().prop_map(|a| BASE64.encode([a, a].concat())),
            vec(any::<u8>(), 0..100).prop_map(|b| BASE64.encode(b)),
        ],
        timestamp in prop_oneof![text(), (NOW - 400..NOW + 400).prop_map(|t| t.to_string())],
        body in vec(any::<u8>(), 0..256),
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        let key = telnyx::PublicKey::from_signing_key(
            &ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        );
        prop_assert!(
            telnyx::verify(&key, Some(&signature), Some(&timestamp), &body, now).is_err()
        );
    }

}

proptest! {
    // Ed25519 is slow in debug builds: fewer cases than the HMAC schemes.
    #![proptest_config(cases(48))]

    #[test]
    fn telnyx_round_trip_and_tampering(
        seed in any::<[u8; 32]>(),
        other_seed in any::<[u8; 32]>(),
        body in vec(any::<u8>(), 1..512),
        t in 0..i64::MAX / 2,
        skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let key = telnyx::PublicKey::from_signing_key(&signing);
        let signature = telnyx::sign(&signing, t, &body);
        let ts = t.to_string();
        prop_assert_eq!(
            telnyx::verify(&key, Some(&signature), Some(&ts), &body, t + skew),
            Ok(())
        );
        let mut forged = body.clone();
        flip_bit(&mut forged, at, bit);
        prop_assert!(telnyx::verify(&key, Some(&signature), Some(&ts), &forged, t).is_err());
        let mut sig_bytes = BASE64.decode(&signature).unwrap();
        flip_bit(&mut sig_bytes, at, bit);
        let bent = BASE64.encode(&sig_bytes);
        prop_assert!(telnyx::verify(&key, Some(&bent), Some(&ts), &body, t).is_err());
        // The timestamp is signed as sent: the same number written differently is not it.
        let padded = format!("0{ts}");
        prop_assert!(telnyx::verify(&key, Some(&signature), Some(&padded), &body, t).is_err());
        if other_seed != seed {
            let other = telnyx::PublicKey::from_signing_key(
                &ed25519_dalek::SigningKey::from_bytes(&other_seed),
            );
            prop_assert!(telnyx::verify(&other, Some(&signature), Some(&ts), &body, t).is_err());
        }
    }

}

proptest! {
    #![proptest_config(cases(256))]

    // ------------------------------------------------------- Standard Webhooks ----

    #[test]
    fn standard_arbitrary_headers_never_panic_nor_verify(
        id in text(),
        timestamp in prop_oneof![text(), (NOW - 400..NOW + 400).prop_map(|t| t.to_string())],
        signature in prop_oneof![text(), vec(standard_entry(), 0..6).prop_map(|e| e.join(" "))],
        body in vec(any::<u8>(), 0..256),
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        let secret: standard::Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        prop_assert!(
            standard::verify(&secret, Some(&id), Some(&timestamp), Some(&signature), &body, now)
                .is_err()
        );
    }

    #[test]
    fn standard_verifies_iff_the_right_signature_is_present(
        key in vec(any::<u8>(), 1..64),
        // Header values carry no surrounding whitespace (HTTP strips it).
        id in any::<String>().prop_filter("trimmed, non-empty", |s| !s.is_empty() && s.trim() == s),
        body in vec(any::<u8>(), 0..512),
        t in 0..i64::MAX / 2,
        skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
        noise in vec(standard_entry(), 0..6),
        include in any::<bool>(),
        position in any::<prop::sample::Index>(),
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let secret: standard::Secret = format!("whsec_{}", BASE64.encode(&key)).parse().unwrap();
        let right = standard::sign(&secret, &id, t, &body);
        // Noise entries are whitespace-separated tokens; split them like the parser does.
        let mut entries: Vec<String> =
            noise.iter().flat_map(|e| e.split_ascii_whitespace()).map(str::to_owned).collect();
        if include {
            entries.insert(position.index(entries.len() + 1), right.clone());
        }
        let header = entries.join(" ");
        let ts = t.to_string();
        let result =
            standard::verify(&secret, Some(&id), Some(&ts), Some(&header), &body, t + skew);
        prop_assert_eq!(result.is_ok(), include, "{}: {:?}", header, result);

        let mut forged = body.clone();
        if !forged.is_empty() {
            flip_bit(&mut forged, at, bit);
            prop_assert!(
                standard::verify(&secret, Some(&id), Some(&ts), Some(&right), &forged, t).is_err()
            );
        }
        let other_id = format!("{id}x");
        prop_assert!(
            standard::verify(&secret, Some(&other_id), Some(&ts), Some(&right), &body, t).is_err()
        );
        let mut other_key = key.clone();
        flip_bit(&mut other_key, at, bit);
        let other: standard::Secret =
            format!("whsec_{}", BASE64.encode(&other_key)).parse().unwrap();
        prop_assert!(
            standard::verify(&other, Some(&id), Some(&ts), Some(&right), &body, t).is_err()
        );
    }
}

// --------------------------------------------------- payloads over real HTTP ----

/// Strings that stress the field extraction and storage: any Unicode, NUL and other control
/// characters (PostgreSQL's jsonb refuses `\u0000`), identifiers around the 255-byte bound.
fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,8}(\\.[a-z_]{1,8}){0,3}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("\u{0}".to_owned()),
        1 => "[a-z]{0,4}[\\x00-\\x1f\\x7f][a-z]{0,4}",
        1 => (250usize..260).prop_map(|n| "x".repeat(n)),
        1 => (60usize..70).prop_map(|n| "é".repeat(n) + "ü"),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        json_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(json_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field that is usually a plausible string and sometimes anything at all.
fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[a-z]{1,8}(\\.[a-z_]{1,8}){0,3}".prop_map(Value::from),
        2 => json_string().prop_map(Value::from),
        1 => json_value(),
    ]
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

/// A body for `route`: shaped like that provider's events (fields of any type), any JSON
/// value at all, or bytes that may not be JSON.
fn body_for(route: usize) -> BoxedStrategy<Body> {
    let shaped = match route {
        0 => (field(), field(), json_value())
            .prop_map(|(id, kind, object)| {
                serde_json::json!({"id": id, "type": kind, "created": NOW, "data": {"object": object}})
            })
            .boxed(),
        1 => (field(), field(), json_value())
            .prop_map(|(id, kind, payload)| {
                serde_json::json!({"data": {"id": id, "event_type": kind, "payload": payload}})
            })
            .boxed(),
        _ => (field(), json_value())
            .prop_map(|(kind, data)| serde_json::json!({"type": kind, "data": data}))
            .boxed(),
    };
    prop_oneof![
        4 => shaped.prop_map(Body::Json),
        2 => json_value().prop_map(Body::Json),
        1 => vec(any::<u8>(), 0..200).prop_map(Body::Raw),
        1 => json_value().prop_map(|v| {
            // Valid JSON text with a lone surrogate escape spliced into it.
            let text = serde_json::to_string(&serde_json::json!({"type": "x.y", "v": v})).unwrap();
            Body::Raw(text.replacen("\"x.y\"", "\"x.y\\ud800\"", 1).into_bytes())
        }),
    ]
    .boxed()
}

const STRIPE_SECRET: &str = "whsec_propStripe9Xc3Rt6Yp8Km1Zd5Gh0Lw2Vb4N";
const CUSTOM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TELNYX_SEED: [u8; 32] = [9; 32];

/// A private database on the server named by DATABASE_URL, dropped again at the end.
struct Scratch {
    admin: sqlx::PgPool,
    name: String,
    pool: sqlx::PgPool,
}

impl Scratch {
    async fn create(url: &str) -> Scratch {
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("DATABASE_URL");
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("connect to DATABASE_URL");
        let name = format!(
            "hookd_props_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&admin)
            .await
            .expect("create database");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.database(&name))
            .await
            .expect("connect to the scratch database");
        common::MIGRATOR.run(&pool).await.expect("migrations");
        Scratch { admin, name, pool }
    }

    async fn drop_database(self) {
        self.pool.close().await;
        let _ = sqlx::query(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await;
    }
}

/// Any body, signed correctly and posted to any webhook route of a real hookd (ingest on
/// loopback HTTP against PostgreSQL): the answer is 200 (stored) or 400 (refused, with a
/// reason), and a 200 means the event is in the database under the extracted id.
#[test]
fn signed_arbitrary_payloads_get_200_or_400_over_real_http() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL is not set (needs PostgreSQL)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scratch = rt.block_on(Scratch::create(&url));
    let signing = ed25519_dalek::SigningKey::from_bytes(&TELNYX_SEED);
    let env: HashMap<String, String> = [
        ("DATABASE_URL", url.as_str()),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        (
            "TELNYX_PUBLIC_KEY",
            &telnyx::PublicKey::from_signing_key(&signing).to_base64(),
        ),
        ("CUSTOM_WEBHOOK_SECRET", CUSTOM_SECRET),
        ("HOOKD_RATE_LIMIT", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = hookd::Config::load(&hookd::config::Sources::new(env).unwrap()).expect("config");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = rt.block_on(async {
        let state = hookd::AppState::new(
            scratch.pool.clone(),
            &config,
            Arc::default(),
            None,
            Arc::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(hookd::http::serve(
            listener,
            hookd::app(state),
            config.max_connections,
            shutdown.clone(),
        ));
        addr
    });
    let client = reqwest::Client::new();
    let custom_secret: standard::Secret = CUSTOM_SECRET.parse().unwrap();
    let counter = std::cell::Cell::new(0u64);
    let seen = std::cell::Cell::new([[0u32; 2]; 3]);
    let count = |route: usize, outcome: usize| {
        let mut s = seen.get();
        s[route][outcome] += 1;
        seen.set(s);
    };

    let strategy = (0usize..3).prop_flat_map(|route| (Just(route), body_for(route)));
    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases(192).cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&strategy, |(route, body)| {
        counter.set(counter.get() + 1);
        let bytes = match &body {
            Body::Json(v) => serde_json::to_vec(v).unwrap(),
            Body::Raw(b) => b.clone(),
        };
        let t = chrono::Utc::now().timestamp();
        let (path, headers): (&str, Vec<(&str, String)>) = match route {
            0 => (
                "/api/stripe/webhook",
                vec![(
                    "stripe-signature",
                    stripe::sign(STRIPE_SECRET.as_bytes(), t, &bytes),
                )],
            ),
            1 => (
                "/api/telnyx/webhook",
                vec![
                    (
                        "telnyx-signature-ed25519",
                        telnyx::sign(&signing, t, &bytes),
                    ),
                    ("telnyx-timestamp", t.to_string()),
                ],
            ),
            _ => {
                let id = format!("prop_{}", counter.get());
                let sig = standard::sign(&custom_secret, &id, t, &bytes);
                (
                    "/api/custom/webhook",
                    vec![
                        ("webhook-id", id),
                        ("webhook-timestamp", t.to_string()),
                        ("webhook-signature", sig),
                    ],
                )
            }
        };
        let (status, reply) = rt.block_on(async {
            let mut request = client
                .post(format!("http://{addr}{path}"))
                .body(bytes.clone());
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("no answer (panic?): {e}")))?;
            let status = response.status().as_u16();
            let reply: Value = response.json().await.unwrap_or(Value::Null);
            Ok::<_, TestCaseError>((status, reply))
        })?;
        match status {
            200 if reply["duplicate"] == Value::Bool(true) => count(route, 0),
            200 => {
                count(route, 0);
                prop_assert_eq!(&reply["received"], &Value::Bool(true));
                // What was stored is the exact signed body, under the id the route extracts.
                let stored: Option<(Vec<u8>, String)> = rt
                    .block_on(
                        sqlx::query_as("SELECT body, event_id FROM events WHERE body = $1 LIMIT 1")
                            .bind(&bytes)
                            .fetch_optional(&scratch.pool),
                    )
                    .unwrap();
                prop_assert!(stored.is_some(), "acknowledged but not stored");
            }
            400 => {
                count(route, 1);
                prop_assert!(
                    reply["error"].is_string(),
                    "400 without a reason: {}",
                    reply
                );
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "route {path} answered {other} {reply} to {:?}",
                    String::from_utf8_lossy(&bytes)
                )));
            }
        }
        Ok(())
    });
    shutdown.cancel();
    rt.block_on(scratch.drop_database());
    let seen = seen.get();
    eprintln!("payload properties: [200, 400] per route stripe/telnyx/custom = {seen:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    for (route, [ok, refused]) in seen.iter().enumerate() {
        assert!(
            *ok > 0 && *refused > 0,
            "route {route} exercised both outcomes"
        );
    }
}
