//! Dead events grouped by why they died, over a real PostgreSQL: the fingerprint is stored
//! when hookd's own workers dead-letter an event, and it groups errors that differ only in
//! ids, numbers, timestamps and quoted values.

use std::time::Duration;

use common::MIGRATOR;
use common::db::clusters;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::{Hookd, Process, backlog, config, count, now, stripe_event, wait_for};
use crate::processes::hookd_cli;

#[sqlx::test(migrator = "MIGRATOR")]
async fn fingerprints_keep_the_cause_and_drop_what_varies(pool: PgPool) {
    let same = [
        (
            "no business is linked to Stripe customer cus_A",
            "no business is linked to Stripe customer cus_B",
        ),
        (
            "forward to https://app.example/hooks answered 503 Service Unavailable after 12 ms",
            "forward to https://app.example/hooks answered 504 Service Unavailable after 9 ms",
        ),
        (
            "call v3:abcDEF123 not found at 2026-12-02T18:27:46Z",
            "call v3:XYZ987 not found at 2026-11-30 01:02:03+00",
        ),
        (
            "payload has no value for 'customer' in event 9f0c7a1e-4b7c-4c53-9c1e-0a1b2c3d4e5f",
            "payload has no value for 'subscription' in event 0d7a4c1b-aaaa-4bbb-8ccc-123456789abc",
        ),
    ];
    for (a, b) in same {
        let (fa, fb) = (
            clusters::fingerprint(&pool, a).await.unwrap(),
            clusters::fingerprint(&pool, b).await.unwrap(),
        );
        assert_eq!(fa, fb, "{a:?} and {b:?}");
    }
    assert_eq!(
        clusters::fingerprint(&pool, "no business is linked to Stripe customer cus_A")
            .await
            .unwrap(),
        "no business is linked to Stripe customer <id>"
    );
    let different = [
        (
            "database error: deadlock detected",
            "database error: connection refused",
        ),
        ("handler not_configured", "handler not_found"),
    ];
    for (a, b) in different {
        assert_ne!(
            clusters::fingerprint(&pool, a).await.unwrap(),
            clusters::fingerprint(&pool, b).await.unwrap(),
            "{a:?} and {b:?} are different causes"
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn events_that_die_under_hookd_are_grouped_by_cause(pool: PgPool) {
    let hookd = Hookd::start(&pool, config(&[("HOOKD_MAX_ATTEMPTS", "1")])).await;
    let deliveries = [
        ("invoice.payment_succeeded", "cus_A"),
        ("invoice.payment_succeeded", "cus_B"),
        ("invoice.payment_succeeded", "cus_C"),
        ("customer.subscription.updated", "cus_D"),
        ("customer.subscription.updated", "cus_E"),
    ];
    for (n, (kind, customer)) in deliveries.iter().enumerate() {
        let object = json!({
            "id": format!("obj_{n}"), "customer": customer, "status": "active",
            "subscription": format!("sub_{n}"), "amount_paid": 4900,
        });
        let body = stripe_event(&format!("evt_cluster_{n}"), kind, now(), object);
        assert_eq!(hookd.stripe(&body).await.0, 200);
    }
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'dead'",
        5,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE error_fingerprint IS NULL AND state = 'dead'"
        )
        .await,
        0,
        "stored when they died"
    );
    let found = clusters::list(&pool, 10).await.unwrap();
    let summary: Vec<(&str, &str, i64)> = found
        .iter()
        .map(|c| (c.event_type.as_str(), c.fingerprint.as_str(), c.count))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "invoice.payment_succeeded",
                "no business is linked to Stripe customer <id>",
                3
            ),
            (
                "customer.subscription.updated",
                "no business is linked to Stripe customer <id>",
                2
            ),
        ]
    );
    let invoices = &found[0];
    assert!(invoices.first_death <= invoices.last_death);
    assert!(
        invoices
            .sample_error
            .as_deref()
            .is_some_and(|e| e.starts_with("no business is linked to Stripe customer cus_")),
        "{invoices:?}"
    );
    hookd.stop().await;
}

/// Eight events: 1 to 4 are one cluster (2 dead before fingerprints were stored), the others
/// differ from it in one way each.
async fn one_cluster_and_its_neighbours(pool: &PgPool) {
    backlog(pool, 8).await;
    sqlx::query(
        "UPDATE events SET
             state = CASE WHEN id = 8 THEN 'retrying' ELSE 'dead' END,
             dead_at = CASE WHEN id = 8 THEN NULL ELSE now() - make_interval(hours => id::int) END,
             attempts = 4,
             source = CASE WHEN id = 6 THEN 'custom' ELSE 'stripe' END,
             event_type = CASE WHEN id = 5 THEN 'invoice.payment_failed' ELSE 'invoice.paid' END,
             last_error = CASE WHEN id = 7 THEN 'database error: deadlock detected'
                               ELSE 'no business is linked to Stripe customer cus_' || id END",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE events SET error_fingerprint = hookd_error_fingerprint(last_error)
         WHERE state = 'dead' AND id <> 2",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_cluster_lists_its_own_dead_events_newest_first(pool: PgPool) {
    one_cluster_and_its_neighbours(&pool).await;
    let found = clusters::list(&pool, 10).await.unwrap();
    let cluster = found
        .iter()
        .find(|c| c.event_type == "invoice.paid" && c.source == "stripe" && c.count > 1)
        .expect("the cluster of 1 to 4");
    let key = cluster.key();
    let ids = |events: Vec<common::db::dlq::DeadEvent>| {
        events.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let listed = clusters::events(&pool, &key, 10).await.unwrap();
    assert_eq!(listed.len() as i64, cluster.count, "what the count says");
    assert_eq!(
        ids(listed),
        [1, 2, 3, 4],
        "newest first, with the one whose fingerprint was never stored in its place"
    );
    assert_eq!(ids(clusters::events(&pool, &key, 2).await.unwrap()), [1, 2]);
    assert!(clusters::events(&pool, &key, 0).await.unwrap().is_empty());
    let elsewhere = clusters::ClusterKey {
        source: "telnyx".into(),
        ..key.clone()
    };
    assert!(
        clusters::events(&pool, &elsewhere, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The same events once retried are no longer the cluster's.
    common::db::dlq::retry(&pool, 1).await.unwrap();
    assert_eq!(
        ids(clusters::events(&pool, &key, 10).await.unwrap()),
        [2, 3, 4]
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn hookd_dlq_clusters_prints_a_table_or_json(pool: PgPool) {
    let (ok, out, err) = hookd_cli(&pool, &["dlq", "clusters"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "the dead-letter queue is empty");
    one_cluster_and_its_neighbours(&pool).await;

    let (ok, out, err) = hookd_cli(&pool, &["dlq", "clusters", "--json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let listed = listed.as_array().expect("an array of clusters");
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(
        listed[0],
        json!({
            "source": "stripe",
            "event_type": "invoice.paid",
            "fingerprint": "no business is linked to Stripe customer <id>",
            "count": 4,
            "superseded": 0,
            "first_death": listed[0]["first_death"],
            "last_death": listed[0]["last_death"],
            "sample_id": 1,
            "sample_error": "no business is linked to Stripe customer cus_1",
        })
    );
    let died = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(listed[0][field].as_str().unwrap()).unwrap()
    };
    let span = died("last_death") - died("first_death");
    assert_eq!(
        span.num_minutes(),
        3 * 60,
        "events 4 to 1 died an hour apart"
    );
    assert!(
        listed[1..].iter().all(|c| c["count"] == 1),
        "each neighbour is a cluster of its own: {listed:?}"
    );

    let (ok, out, err) = hookd_cli(&pool, &["dlq", "clusters", "--limit", "1"]);
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(lines.len(), 2, "a header and one cluster:\n{out}");
    assert_eq!(
        lines[0],
        [
            "count",
            "superseded",
            "source",
            "type",
            "first death",
            "last death",
            "sample",
            "cause"
        ]
    );
    assert_eq!(
        [lines[1][..4].to_vec(), lines[1][6..].to_vec()].concat(),
        [
            "4",
            "0",
            "stripe",
            "invoice.paid",
            "1",
            "no business is linked to Stripe customer <id>"
        ],
        "{out}"
    );

    let (ok, _, err) = hookd_cli(&pool, &["dlq", "clusters", "--limit", "0"]);
    assert!(!ok);
    assert!(err.contains("0 is not in 1..=500"), "{err}");
}

const TOKEN: &str = "clusters-tests-admin-token-of-at-least-32-bytes";

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_admin_api_lists_the_clusters_to_token_holders(pool: PgPool) {
    one_cluster_and_its_neighbours(&pool).await;
    let hookd = Process::spawn(
        &pool,
        &[("HOOKD_ADMIN_TOKEN", TOKEN), ("HOOKD_WORKERS", "0")],
    )
    .ready()
    .await;
    let client = reqwest::Client::new();
    let get = |query: &'static str, token: Option<&'static str>| {
        let mut request = client.get(format!(
            "http://127.0.0.1:{}/api/webhooks/dlq/clusters{query}",
            hookd.port
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = get("", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = get("", Some("a-wrong-token-that-is-also-long-enough")).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains("no business"), "{body}");

    let (status, body) = get("", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (ok, out, err) = hookd_cli(&pool, &["dlq", "clusters", "--json"]);
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        body,
        json!({ "clusters": cli }),
        "the CLI prints what the API answers"
    );

    let (status, body) = get("?limit=2", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["clusters"].as_array().unwrap().len(), 2);
    assert_eq!(body["clusters"][0]["count"], 4, "the largest first");
    for bad in ["?limit=0", "?limit=501", "?limit=many"] {
        let (status, body) = get(bad, Some(TOKEN)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}
