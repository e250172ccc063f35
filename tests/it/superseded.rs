//! Superseded dead events: a dead Stripe event whose customer already has newer state applied
//! is marked so in the list, the detail and the clusters, flips when newer state arrives,
//! changes nothing when retried, and `hookd dlq purge --superseded` drops only those.

use common::db::clusters;
use common::db::dlq::{self, DeadFilter, PurgeFilter};
use common::{MIGRATOR, Source};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::archive::{cli, scratch};
use crate::harness::*;

async fn kill(pool: &PgPool, ids: &[i64]) {
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 4, dead_at = now(),
                last_error = 'downstream timeout'
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(pool)
    .await
    .unwrap();
}

async fn subscription(pool: &PgPool, id: &str, customer: &str, status: &str, created: i64) -> i64 {
    let body = stripe_event(
        id,
        "customer.subscription.updated",
        created,
        json!({"id": "sub_1", "customer": customer, "status": status}),
    );
    store(
        pool,
        Source::Stripe,
        id,
        "customer.subscription.updated",
        &body,
    )
    .await
}

async fn superseded_by_id(pool: &PgPool) -> Vec<(i64, bool)> {
    let filter = DeadFilter {
        limit: 50,
        ..DeadFilter::default()
    };
    let mut flags: Vec<(i64, bool)> = dlq::list(pool, &filter)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.superseded))
        .collect();
    flags.sort_unstable();
    flags
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_older_dead_event_is_superseded_once_newer_state_is_applied(pool: PgPool) {
    insert_business(&pool, "Acme", Some("cus_1"), None).await;
    insert_business(&pool, "Other", Some("cus_2"), None).await;
    let t = now() - 1_000;
    let old = subscription(&pool, "evt_old", "cus_1", "past_due", t - 100).await;
    let older = subscription(&pool, "evt_older", "cus_1", "unpaid", t - 200).await;
    let later = subscription(&pool, "evt_later", "cus_1", "canceled", t + 100).await;
    let other = subscription(&pool, "evt_other", "cus_2", "past_due", t - 100).await;
    // Not a subscription: a custom event is never superseded, whatever its payload says.
    let custom = store(
        &pool,
        Source::Custom,
        "msg_1",
        "order.created",
        &json!({"created": 1, "data": {"object": {"customer": "cus_1"}}}).to_string(),
    )
    .await;
    kill(&pool, &[old, older, later, other, custom]).await;
    assert!(
        superseded_by_id(&pool).await.iter().all(|(_, s)| !s),
        "no state is applied yet"
    );

    // A newer update for cus_1 succeeds.
    subscription(&pool, "evt_new", "cus_1", "active", t).await;
    let worker = worker(&pool, &[]);
    drain(&worker, &pool, std::time::Duration::from_secs(1)).await;
    assert_eq!(
        business_where(&pool, "stripe_customer_id = 'cus_1'")
            .await
            .subscription_status
            .as_deref(),
        Some("active")
    );
    assert_eq!(
        superseded_by_id(&pool).await,
        [
            (old, true),
            (older, true),
            (later, false),
            (other, false),
            (custom, false)
        ]
    );
    assert_eq!(dlq::superseded(&pool, old).await.unwrap(), Some(true));
    assert_eq!(dlq::superseded(&pool, later).await.unwrap(), Some(false));
    let found = clusters::list(&pool, 10).await.unwrap();
    let stripe = found
        .iter()
        .find(|c| c.source == "stripe")
        .expect("the Stripe cluster");
    assert_eq!((stripe.count, stripe.superseded), (4, 2));

    // State applied later flips it: nothing is stored.
    sqlx::query("INSERT INTO stripe_state VALUES ('cus_2', to_timestamp($1))")
        .bind((t + 10) as f64)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(dlq::superseded(&pool, other).await.unwrap(), Some(true));

    // Retrying a superseded event changes nothing: the handler's out-of-order rule.
    dlq::retry(&pool, older).await.unwrap();
    drain(&worker, &pool, std::time::Duration::from_secs(1)).await;
    assert_ne!(state_of(&pool, older).await.0, "dead");
    assert_eq!(
        business_where(&pool, "stripe_customer_id = 'cus_1'")
            .await
            .subscription_status
            .as_deref(),
        Some("active")
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_cli_shows_superseded_events_and_purges_only_those(pool: PgPool) {
    insert_business(&pool, "Acme", Some("cus_1"), None).await;
    let t = now() - 1_000;
    let old = subscription(&pool, "evt_old", "cus_1", "past_due", t - 100).await;
    let later = subscription(&pool, "evt_later", "cus_1", "canceled", t + 100).await;
    kill(&pool, &[old, later]).await;
    subscription(&pool, "evt_new", "cus_1", "active", t).await;
    drain(
        &worker(&pool, &[]),
        &pool,
        std::time::Duration::from_secs(1),
    )
    .await;

    let (ok, out, err) = cli(&pool, &[], &["dlq", "list", "--json"]);
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    let flag = |id: i64| {
        listed
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| e["superseded"].clone())
    };
    assert_eq!(
        (flag(old), flag(later)),
        (Some(json!(true)), Some(json!(false)))
    );
    let (ok, out, _) = cli(&pool, &[], &["dlq", "list"]);
    assert!(
        ok && out.lines().next().unwrap().contains("superseded"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with(&old.to_string()))
        .unwrap();
    assert!(row.contains("yes"), "{row}");
    let (ok, out, _) = cli(&pool, &[], &["events", "show", "evt_old"]);
    assert!(ok && out.contains("superseded newer state"), "{out}");
    let (ok, out, _) = cli(&pool, &[], &["events", "show", "evt_later", "--json"]);
    assert!(ok, "{out}");
    let shown: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(shown[0]["superseded"], false);
    let (ok, out, _) = cli(&pool, &[], &["dlq", "clusters", "--json"]);
    let found: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(ok && found[0]["superseded"] == 1, "{out}");

    // The purge preview counts the superseded apart; --superseded drops only them.
    let dir = scratch("superseded");
    let env = [("HOOKD_ARCHIVE_DIR", dir.to_str().unwrap())];
    let (ok, out, err) = cli(
        &pool,
        &env,
        &["dlq", "purge", "--older-than", "0s", "--dry-run", "--json"],
    );
    assert!(ok, "{err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&all["count"], &all["superseded"]), (&json!(2), &json!(1)));
    let (ok, out, err) = cli(&pool, &env, &["dlq", "purge", "--superseded", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("1 is to purge: superseded dead events (1 superseded)"),
        "{out}"
    );
    let token = out
        .lines()
        .last()
        .unwrap()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap();
    let (ok, out, err) = cli(&pool, &env, &["dlq", "purge", "--token", token, "--json"]);
    assert!(ok, "{err}");
    let receipt: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(receipt["purged"], 1, "{receipt}");
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM events WHERE state = 'dead'")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [later], "only the superseded one went");

    let preview = dlq::purge_preview(
        &pool,
        &PurgeFilter {
            older_than_secs: None,
            superseded: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(preview.count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
