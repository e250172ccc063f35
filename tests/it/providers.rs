//! The generic suite: every registered provider (the built-in ones and one declared only in
//! this test's TOML) gets the same checks over real HTTP, with requests signed by the
//! provider's own `sign`: accepted once, a redelivery is a duplicate, a tampered body, a
//! missing signature and (where the scheme has one) a stale timestamp are refused, and the
//! event is stored under the provider's name and processed (or skipped) like any other.

use std::sync::Arc;
use std::time::Duration;

use common::{MIGRATOR, Source};
use hookd::providers::{Outgoing, Provider, SampleArgs};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::{Hookd, TELNYX_SEED, b64, config, count, now, wait_for};

const ACME_SECRET: &str = "acme-signing-secret-0123456789";

/// A TOML file declaring a Slack-style source: `v0=<hex>` over `v0:{timestamp}:{body}`.
fn acme_toml() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("hookd-acme-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
[sources.acme]
secret = "ACME_WEBHOOK_SECRET"
header = "X-Acme-Signature"
algorithm = "sha256"
encoding = "hex"
prefix = "v0="
key = "pointer:/event_id"
type = "header:X-Acme-Event"
timestamp_header = "X-Acme-Request-Timestamp"
tolerance_secs = 300
signed = "v0:{timestamp}:{body}"
"#,
    )
    .unwrap();
    path
}

fn every_provider(extra: &[(&str, &str)]) -> hookd::Config {
    let toml = acme_toml();
    let seed = b64(&TELNYX_SEED);
    let mut env = vec![
        ("GITHUB_WEBHOOK_SECRET", "It's a Secret to Everybody"),
        (
            "SHOPIFY_WEBHOOK_SECRET",
            "shpss_0123456789abcdef0123456789abcdef",
        ),
        ("ACME_WEBHOOK_SECRET", ACME_SECRET),
        ("TELNYX_SIGNING_KEY", seed.as_str()),
        ("HOOKD_CONFIG", toml.to_str().unwrap()),
        ("HOOKD_RATE_LIMIT", "off"),
    ];
    env.extend_from_slice(extra);
    config(&env)
}

/// Posts `event` with `headers`; the status and the answer.
async fn post(
    hookd: &Hookd,
    source: Source,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, Value) {
    let headers: Vec<(&str, String)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    hookd
        .post(&format!("/api/{source}/webhook"), &headers, body)
        .await
}

fn sample(provider: &Arc<dyn Provider>, n: usize) -> Outgoing {
    let event_type = provider.sample_types().first().copied().unwrap_or("ping");
    provider.sample(
        event_type,
        &SampleArgs {
            id: format!("{}-generic-{n}", provider.source()),
            customer: "cus_generic".into(),
            call_id: format!("v3:generic-{n}"),
            business_number: "+15550100000".into(),
        },
    )
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_provider_accepts_its_own_signature_once_and_refuses_tampering(pool: PgPool) {
    let config = every_provider(&[]);
    let registry = config.providers.clone();
    let names: Vec<&str> = registry.configured().map(|p| p.source().as_str()).collect();
    assert_eq!(
        names,
        ["acme", "custom", "github", "shopify", "stripe", "telnyx"]
    );
    let hookd = Hookd::start(&pool, config).await;
    for provider in registry.configured() {
        let source = provider.source();
        let event = sample(provider, 1);
        let signed = provider.sign(&event, now()).unwrap();
        let (status, reply) = post(&hookd, source, &signed, event.body.clone()).await;
        assert_eq!(
            (status, &reply),
            (200, &json!({"received": true})),
            "{source}"
        );
        let (status, reply) = post(&hookd, source, &signed, event.body.clone()).await;
        assert_eq!(
            (status, &reply),
            (200, &json!({"received": true, "duplicate": true})),
            "{source} redelivered"
        );

        let mut tampered = event.body.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 0x01;
        let (status, reply) = post(&hookd, source, &signed, tampered).await;
        assert_eq!(status, 400, "{source} tampered: {reply}");

        // Without the header that carries the signature: every scheme's first header is it
        // or its timestamp, and either missing is a 400 naming what is missing.
        let fresh = sample(provider, 2);
        let signed = provider.sign(&fresh, now()).unwrap();
        for dropped in 0..signed.len() {
            let mut headers = signed.clone();
            let (name, _) = headers.remove(dropped);
            let (status, reply) = post(&hookd, source, &headers, fresh.body.clone()).await;
            assert_eq!(status, 400, "{source} without {name}: {reply}");
            assert!(
                reply["error"].as_str().unwrap().contains("missing"),
                "{reply}"
            );
        }

        let stale = provider.sign(&fresh, now() - 3_600).unwrap();
        let (status, reply) = post(&hookd, source, &stale, fresh.body.clone()).await;
        if ["github", "shopify"].contains(&source.as_str()) {
            // These schemes sign no timestamp: the same bytes are the same signature.
            assert_eq!(status, 200, "{source}: {reply}");
        } else {
            assert_eq!(status, 400, "{source} stale: {reply}");
            assert!(
                reply["error"].as_str().unwrap().contains("timestamp"),
                "{reply}"
            );
        }
    }
    let stored = count(&pool, "SELECT count(DISTINCT source) FROM events").await;
    assert_eq!(stored, 6);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_provider_refuses_bad_bodies_and_limits_unsigned_floods(pool: PgPool) {
    let config = every_provider(&[("HOOKD_RATE_LIMIT", "1"), ("HOOKD_RATE_BURST", "5")]);
    let registry = config.providers.clone();
    let hookd = Hookd::start(&pool, config).await;
    for (n, provider) in registry.configured().enumerate() {
        let source = provider.source();
        // Correctly signed, but not a JSON object: refused with the reason, nothing stored.
        for (body, reason) in [
            ("[1, 2]", "not a JSON object"),
            ("{\"id\": ", "not valid JSON"),
        ] {
            let mut event = sample(provider, 10 + n);
            event.body = body.as_bytes().to_vec();
            let signed = provider.sign(&event, now()).unwrap();
            let (status, reply) = post(&hookd, source, &signed, event.body).await;
            assert_eq!(status, 400, "{source} {body}: {reply}");
            assert!(reply["error"].as_str().unwrap().contains(reason), "{reply}");
        }
        // Unsigned junk from one client of its own is barred after the burst.
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 1, n as u8 + 1]))
            .build()
            .unwrap();
        let url = hookd.url(&format!("/api/{source}/webhook"));
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let status = client.post(&url).body("{}").send().await.unwrap().status();
            statuses.push(status.as_u16());
            if status == 429 {
                break;
            }
        }
        assert_eq!(statuses.last(), Some(&429), "{source}: {statuses:?}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_source_declared_in_toml_verifies_a_signature_computed_with_openssl(pool: PgPool) {
    let config = every_provider(&[(
        "HOOKD_ADMIN_TOKEN",
        "providers-admin-token-0123456789abcdef",
    )]);
    let hookd = Hookd::start(&pool, config).await;
    let body = r#"{"event_id":"Ev0PV52K7M","team_id":"T1","event":{"type":"app_mention"}}"#;
    let t = now().to_string();
    // Independently of hookd: openssl's HMAC of exactly what the spec says is signed.
    let output = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", ACME_SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("v0:{t}:{body}").as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl is installed");
    let digest = String::from_utf8(output.stdout).unwrap();
    let hex = digest.trim().rsplit(' ').next().unwrap();
    let headers = [
        ("X-Acme-Signature", format!("v0={hex}")),
        ("X-Acme-Request-Timestamp", t.clone()),
        ("X-Acme-Event", "app_mention".to_owned()),
    ];
    let (status, reply) = hookd
        .post("/api/acme/webhook", &headers, body.to_owned())
        .await;
    assert_eq!((status, reply), (200, json!({"received": true})));
    let (source, key, kind): (String, String, String) =
        sqlx::query_as("SELECT source, event_id, event_type FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (source.as_str(), key.as_str(), kind.as_str()),
        ("acme", "Ev0PV52K7M", "app_mention")
    );
    // No built-in handler: it is skipped, as unhandled events are.
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'skipped'",
        1,
        Duration::from_secs(30),
    )
    .await;

    // A wrong secret, and a signature over the body alone, are refused.
    let wrong = [
        ("X-Acme-Signature", format!("v0={}", "0".repeat(64))),
        ("X-Acme-Request-Timestamp", t),
        ("X-Acme-Event", "app_mention".to_owned()),
    ];
    let (status, _) = hookd
        .post("/api/acme/webhook", &wrong, body.to_owned())
        .await;
    assert_eq!(status, 400);

    // The admin API and the metrics know it without being told.
    let client = reqwest::Client::new();
    let response = client
        .get(hookd.url("/api/webhooks/dlq?source=acme"))
        .bearer_auth("providers-admin-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = client
        .get(hookd.url("/metrics"))
        .bearer_auth("providers-admin-token-0123456789abcdef")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "hookd_webhooks_received_total{source=\"acme\",event_type=\"app_mention\"} 1"
        ),
        "{metrics}"
    );
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn github_s_ping_and_shopify_s_topics_are_stored_by_their_headers(pool: PgPool) {
    let config = every_provider(&[]);
    let registry = config.providers.clone();
    let hookd = Hookd::start(&pool, config).await;
    // GitHub's published vector, as a delivery: its signature is GitHub's, not ours.
    let headers = [
        (
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned(),
        ),
        ("X-GitHub-Event", "ping".to_owned()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
        ),
    ];
    let (status, reply) = hookd
        .post("/api/github/webhook", &headers, "Hello, World!")
        .await;
    // Verified, but not JSON: hookd stores JSON objects only, and says so.
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("not valid JSON"),
        "{reply}"
    );

    let shopify = registry.get("shopify".parse().unwrap()).unwrap();
    let event = shopify.sample(
        "orders/create",
        &SampleArgs {
            id: String::new(),
            customer: String::new(),
            call_id: String::new(),
            business_number: String::new(),
        },
    );
    let mut signed = shopify.sign(&event, now()).unwrap();
    // Without X-Shopify-Webhook-Id, X-Shopify-Event-Id is the key.
    signed.retain(|(name, _)| name != "x-shopify-webhook-id");
    signed.push((
        "X-Shopify-Event-Id".into(),
        "98880550-7158-44d4-b7cd-2c97c8a091b5".into(),
    ));
    let (status, reply) = post(&hookd, shopify.source(), &signed, event.body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let key: String = sqlx::query_scalar("SELECT event_id FROM events WHERE source = 'shopify'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(key, "98880550-7158-44d4-b7cd-2c97c8a091b5");
    hookd.stop().await;
}
