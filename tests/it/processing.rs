//! Workers and handlers: effects applied once, in any arrival order, with retries and the DLQ.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::db::events;
use common::{MIGRATOR, Source};
use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

const SOON: Duration = Duration::from_secs(5);
/// How long to poll for something that should happen at once: generous, since polling ends
/// as soon as it holds.
const PATIENCE: Duration = Duration::from_secs(30);

fn subscription(customer: &str, status: &str) -> serde_json::Value {
    json!({
        "id": "sub_1", "object": "subscription", "customer": customer, "status": status,
        "start_date": 1_700_000_000,
        "items": {"data": [{"price": {"id": "price_pro"}}]},
    })
}

async fn business(pool: &PgPool, id: i64) -> Business {
    business_where(pool, &format!("id = {id}")).await
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn stripe_subscription_events_update_the_business_and_the_audit_log(pool: PgPool) {
    let biz = insert_business(&pool, "Acme Plumbing", Some("cus_1"), None).await;
    let body = stripe_event(
        "evt_1",
        "customer.subscription.created",
        1_700_000_100,
        subscription("cus_1", "active"),
    );
    let id = store(
        &pool,
        Source::Stripe,
        "evt_1",
        "customer.subscription.created",
        &body,
    )
    .await;
    drain(&worker(&pool, &[]), &pool, SOON).await;

    assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 1, None));
    assert_eq!(
        business(&pool, biz).await,
        Business {
            stripe_subscription_id: Some("sub_1".into()),
            subscription_status: Some("active".into()),
            subscription_plan: Some("price_pro".into()),
            subscription_start_date: Some(at(1_700_000_000)),
            last_payment_date: None,
        }
    );
    let audit: (Option<i64>, i64, String, String, serde_json::Value) = sqlx::query_as(
        "SELECT business_id, webhook_id, source, action, details - 'stripe_event_id' FROM audit_logs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        (
            Some(biz),
            id,
            "stripe".into(),
            "subscription_created".into(),
            json!({"subscription_id": "sub_1", "customer_id": "cus_1", "plan_id": "price_pro"}),
        )
    );
    let attempts = events::attempts(&pool, id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "succeeded");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn stripe_out_of_order_deliveries_keep_the_newest_state(pool: PgPool) {
    let biz = insert_business(&pool, "Acme", Some("cus_1"), None).await;
    // Stripe sent created (t=100), then updated (t=200), then deleted (t=300); they arrive
    // as updated, deleted, created.
    let events = [
        ("evt_b", "customer.subscription.updated", 200, "past_due"),
        ("evt_c", "customer.subscription.deleted", 300, "canceled"),
        ("evt_a", "customer.subscription.created", 100, "active"),
    ];
    let worker = worker(&pool, &[]);
    for (id, kind, created, status) in events {
        let body = stripe_event(
            id,
            kind,
            1_700_000_000 + created,
            subscription("cus_1", status),
        );
        store(&pool, Source::Stripe, id, kind, &body).await;
        drain(&worker, &pool, SOON).await;
    }
    assert_eq!(
        business(&pool, biz).await.subscription_status.as_deref(),
        Some("canceled")
    );
    let stale: Vec<(String, bool)> = sqlx::query_as(
        "SELECT action, coalesce((details->>'stale')::bool, false) FROM audit_logs ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        stale,
        vec![
            ("subscription_updated".into(), false),
            ("subscription_deleted".into(), false),
            ("subscription_created".into(), true),
        ]
    );
    // A late payment failure older than the cancellation does not resurrect "past_due".
    let late = stripe_event(
        "evt_d",
        "invoice.payment_failed",
        1_700_000_250,
        json!({"customer": "cus_1"}),
    );
    store(
        &pool,
        Source::Stripe,
        "evt_d",
        "invoice.payment_failed",
        &late,
    )
    .await;
    drain(&worker, &pool, SOON).await;
    assert_eq!(
        business(&pool, biz).await.subscription_status.as_deref(),
        Some("canceled")
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn both_invoice_shapes_record_payments_and_never_move_them_back(pool: PgPool) {
    let biz = insert_business(&pool, "Acme", Some("cus_1"), None).await;
    sqlx::query("UPDATE businesses SET stripe_subscription_id = 'sub_9' WHERE id = $1")
        .bind(biz)
        .execute(&pool)
        .await
        .unwrap();
    let worker = worker(&pool, &[]);
    // Older API versions: `subscription` at the top level; newer: under `parent`.
    let old_shape = json!({"customer": "cus_1", "subscription": "sub_9",
                           "status_transitions": {"paid_at": 1_700_000_500}});
    let new_shape = json!({"parent": {"subscription_details": {"subscription": "sub_9"}},
                           "status_transitions": {"paid_at": 1_700_000_900}});
    let late_shape = json!({"customer": "cus_1", "status_transitions": {"paid_at": 1_700_000_100}});
    for (id, object) in [
        ("evt_1", old_shape),
        ("evt_2", new_shape),
        ("evt_3", late_shape),
    ] {
        let body = stripe_event(id, "invoice.payment_succeeded", 1_700_001_000, object);
        store(
            &pool,
            Source::Stripe,
            id,
            "invoice.payment_succeeded",
            &body,
        )
        .await;
        drain(&worker, &pool, SOON).await;
    }
    assert_eq!(
        business(&pool, biz).await.last_payment_date,
        Some(at(1_700_000_900))
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'succeeded'"
        )
        .await,
        3
    );

    let failed = stripe_event(
        "evt_4",
        "invoice.payment_failed",
        1_700_002_000,
        json!({"parent": {"subscription_details": {"subscription": "sub_9"}}}),
    );
    store(
        &pool,
        Source::Stripe,
        "evt_4",
        "invoice.payment_failed",
        &failed,
    )
    .await;
    drain(&worker, &pool, SOON).await;
    assert_eq!(
        business(&pool, biz).await.subscription_status.as_deref(),
        Some("past_due")
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_failing_handler_backs_off_then_dead_letters_after_max_attempts(pool: PgPool) {
    let body = stripe_event(
        "evt_x",
        "customer.subscription.updated",
        1_700_000_000,
        subscription("cus_nobody", "active"),
    );
    let id = store(
        &pool,
        Source::Stripe,
        "evt_x",
        "customer.subscription.updated",
        &body,
    )
    .await;
    let worker = worker(
        &pool,
        &[("HOOKD_MAX_ATTEMPTS", "4"), ("HOOKD_RETRY_BASE_MS", "200")],
    );
    drain(&worker, &pool, Duration::from_secs(10)).await;

    let (state, attempts, error) = state_of(&pool, id).await;
    assert_eq!((state.as_str(), attempts), ("dead", 4));
    assert_eq!(
        error.as_deref(),
        Some("no business is linked to Stripe customer cus_nobody")
    );
    let history = events::attempts(&pool, id).await.unwrap();
    let outcomes: Vec<_> = history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "failed", "dead"]);
    // Delays double from 200 ms, each drawn from the upper half of its nominal value.
    let gaps: Vec<i64> = history
        .windows(2)
        .map(|w| (w[1].started_at - w[0].started_at).num_milliseconds())
        .collect();
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = 200 << i;
        assert!(
            *gap >= nominal / 2,
            "gap {i} was {gap} ms, nominal {nominal} ms: {gaps:?}"
        );
    }
    let dead: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT dead_at FROM events WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(dead.is_some());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_payload_missing_required_fields_dead_letters_at_once(pool: PgPool) {
    insert_business(&pool, "Acme", Some("cus_1"), None).await;
    let body = stripe_event(
        "evt_m",
        "customer.subscription.updated",
        1_700_000_000,
        json!({"id": "sub_1", "status": "active"}),
    );
    let id = store(
        &pool,
        Source::Stripe,
        "evt_m",
        "customer.subscription.updated",
        &body,
    )
    .await;
    let no_created =
        json!({"id": "evt_n", "type": "invoice.payment_failed", "data": {"object": {}}})
            .to_string();
    let id2 = store(
        &pool,
        Source::Stripe,
        "evt_n",
        "invoice.payment_failed",
        &no_created,
    )
    .await;
    let call = telnyx_event("tx-1", "call.answered", json!({"to": "+1555"}));
    let id3 = store(&pool, Source::Telnyx, "tx-1", "call.answered", &call).await;
    drain(&worker(&pool, &[]), &pool, SOON).await;
    assert_eq!(
        state_of(&pool, id).await,
        (
            "dead".into(),
            1,
            Some("payload has no string at /data/object/customer".into())
        )
    );
    assert_eq!(
        state_of(&pool, id2).await,
        (
            "dead".into(),
            1,
            Some("payload has no unix timestamp at /created".into())
        )
    );
    assert_eq!(
        state_of(&pool, id3).await,
        (
            "dead".into(),
            1,
            Some("payload has no string at /data/payload/call_control_id".into())
        )
    );
}

/// The queue and the days of processed events keep the signed bytes alone; a dead event also
/// gets their parse, for the SQL that reads it (the runbook's `failed_webhooks.webhook_data`).
#[sqlx::test(migrator = "MIGRATOR")]
async fn each_body_is_stored_once_and_parsed_where_sql_reads_it(pool: PgPool) {
    let done = stripe_event("evt_ok", "charge.refunded", 1_700_000_000, json!({}));
    let ok = store(&pool, Source::Stripe, "evt_ok", "charge.refunded", &done).await;
    // Spacing and key order that jsonb does not keep: the body stays byte for byte.
    let dying = r#"{"type": "invoice.payment_failed",   "id": "evt_bad", "data": {"object": {}}}"#;
    let bad = store(
        &pool,
        Source::Stripe,
        "evt_bad",
        "invoice.payment_failed",
        dying,
    )
    .await;
    let stored = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Vec<u8>, Option<serde_json::Value>)>(
                "SELECT body, payload FROM events WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(stored(ok).await, (done.clone().into_bytes(), None));
    drain(&worker(&pool, &[]), &pool, SOON).await;
    assert_eq!(state_of(&pool, ok).await.0, "skipped");
    assert_eq!(stored(ok).await, (done.clone().into_bytes(), None));
    assert_eq!(state_of(&pool, bad).await.0, "dead");
    let parsed: serde_json::Value = serde_json::from_str(dying).unwrap();
    assert_eq!(
        stored(bad).await,
        (dying.as_bytes().to_vec(), Some(parsed.clone()))
    );
    let webhook_data: serde_json::Value =
        sqlx::query_scalar("SELECT webhook_data FROM failed_webhooks WHERE id = $1")
            .bind(bad)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(webhook_data, parsed);
    // Readers of any state see the payload, parsed where it is not kept.
    for (id, body) in [(ok, done.as_str()), (bad, dying)] {
        let detail = events::get(&pool, id).await.unwrap().unwrap();
        assert_eq!(
            detail.payload,
            serde_json::from_str::<serde_json::Value>(body).unwrap()
        );
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_body_written_by_hand_that_is_not_json_dies_alone_and_is_kept_as_text(pool: PgPool) {
    let fine = stripe_event("evt_fine", "charge.refunded", 1_700_000_000, json!({}));
    let ok = store(&pool, Source::Stripe, "evt_fine", "charge.refunded", &fine).await;
    // Ingest refuses such bodies; an INSERT by hand does not. Invalid UTF-8 too.
    let hand: i64 = sqlx::query_scalar(
        "INSERT INTO events (source, event_id, event_type, body)
         VALUES ('stripe', 'evt_hand', 'invoice.payment_failed', '\\x6e6f74206a736f6eff'::bytea)
         RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Until it dies, readers see it as text rather than an error.
    let detail = events::get(&pool, hand).await.unwrap().unwrap();
    assert_eq!(detail.payload, json!("not json\\377"));

    drain(&worker(&pool, &[]), &pool, SOON).await;
    assert_eq!(state_of(&pool, ok).await.0, "skipped");
    assert_eq!(state_of(&pool, hand).await.0, "dead");
    let (payload, webhook_data): (serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT e.payload, f.webhook_data FROM events e JOIN failed_webhooks f USING (id)
         WHERE e.id = $1",
    )
    .bind(hand)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (payload.clone(), webhook_data),
        (json!("not json\\377"), payload)
    );
    // Both ways in are counted once: ingest's statement and the trigger on `events`.
    let totals = common::db::stats::totals(&pool, chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!((totals.received, totals.skipped, totals.dead), (2, 1, 1));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn unhandled_types_are_skipped_and_counted(pool: PgPool) {
    let body = stripe_event("evt_s", "charge.refunded", 1_700_000_000, json!({}));
    let id = store(&pool, Source::Stripe, "evt_s", "charge.refunded", &body).await;
    let tx = telnyx_event("tx-s", "call.bridged", json!({"call_control_id": "c"}));
    store(&pool, Source::Telnyx, "tx-s", "call.bridged", &tx).await;
    drain(&worker(&pool, &[]), &pool, SOON).await;
    assert_eq!(state_of(&pool, id).await, ("skipped".into(), 1, None));
    let totals = common::db::stats::totals(&pool, chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        (
            totals.received,
            totals.skipped,
            totals.succeeded,
            totals.dead
        ),
        (2, 2, 0, 0)
    );
}

fn call(kind: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut payload = json!({
        "call_control_id": "v3:call-1", "direction": "incoming",
        "from": "+15557654321", "to": "+15550100000",
    });
    for (k, v) in extra.as_object().unwrap() {
        payload[k] = v.clone();
    }
    let mut event: serde_json::Value =
        serde_json::from_str(&telnyx_event(&format!("id-{kind}"), kind, payload)).unwrap();
    event["data"]["occurred_at"] = json!(match kind {
        "call.initiated" => "2026-11-29T03:00:00Z",
        "call.answered" => "2026-11-29T03:00:05Z",
        _ => "2026-11-29T03:01:35Z",
    });
    event
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct CallLog {
    business_id: Option<i64>,
    customer_phone: Option<String>,
    business_phone: Option<String>,
    call_type: Option<String>,
    status: String,
    started_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    hangup_cause: Option<String>,
    duration_secs: Option<i32>,
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn telnyx_calls_converge_whatever_the_arrival_order(pool: PgPool) {
    let biz = insert_business(&pool, "Acme", None, Some("+15550100000")).await;
    let initiated = call("call.initiated", json!({"state": "parked"}));
    let answered = call("call.answered", json!({"state": "answered"}));
    let hangup = call(
        "call.hangup",
        json!({"hangup_cause": "normal_clearing",
        "start_time": "2026-11-29T03:00:00Z", "end_time": "2026-11-29T03:01:35Z"}),
    );
    let orders = [
        [&initiated, &answered, &hangup],
        [&hangup, &initiated, &answered],
        [&answered, &hangup, &initiated],
        [&hangup, &answered, &initiated],
    ];
    let worker = worker(&pool, &[]);
    for (round, order) in orders.iter().enumerate() {
        sqlx::query("TRUNCATE events, event_keys, event_attempts, call_logs")
            .execute(&pool)
            .await
            .unwrap();
        for event in order {
            let kind = event["data"]["event_type"].as_str().unwrap();
            store(
                &pool,
                Source::Telnyx,
                &format!("{round}-{kind}"),
                kind,
                &event.to_string(),
            )
            .await;
            drain(&worker, &pool, SOON).await;
        }
        let row: CallLog = sqlx::query_as(
            "SELECT business_id, customer_phone, business_phone, call_type, status, started_at,
                    answered_at, ended_at, hangup_cause, duration_secs
             FROM call_logs WHERE call_id = 'v3:call-1'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            row,
            CallLog {
                business_id: Some(biz),
                customer_phone: Some("+15557654321".into()),
                business_phone: Some("+15550100000".into()),
                call_type: Some("inbound".into()),
                status: "completed".into(),
                started_at: Some("2026-11-29T03:00:00Z".parse().unwrap()),
                answered_at: Some("2026-11-29T03:00:05Z".parse().unwrap()),
                ended_at: Some("2026-11-29T03:01:35Z".parse().unwrap()),
                hangup_cause: Some("normal_clearing".into()),
                duration_secs: Some(90),
            },
            "arrival order {round}"
        );
    }
}

fn message(kind: &str, status: &str) -> String {
    let (direction, from, to) = if kind == "message.received" {
        ("inbound", "+15557654321", "+15550100000")
    } else {
        ("outbound", "+15550100000", "+15557654321")
    };
    let id = if kind == "message.received" {
        "msg-in"
    } else {
        "msg-out"
    };
    telnyx_event(
        &format!("{id}-{kind}"),
        kind,
        json!({
            "id": id, "direction": direction, "text": "Open on Sunday?",
            "from": {"phone_number": from}, "to": [{"phone_number": to, "status": status}],
            "sent_at": "2026-11-29T03:00:00Z",
            "completed_at": if kind == "message.finalized" { json!("2026-11-29T03:00:03Z") } else { json!(null) },
        }),
    )
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn telnyx_messages_are_logged_with_or_without_a_business(pool: PgPool) {
    let biz = insert_business(&pool, "Acme", None, Some("+15550100000")).await;
    let worker = worker(&pool, &[]);
    // The delivery report overtakes the "sent" event.
    for (kind, status) in [
        ("message.finalized", "delivered"),
        ("message.sent", "sent"),
        ("message.received", "webhook_delivered"),
    ] {
        let body = message(kind, status);
        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        store(&pool, Source::Telnyx, &id, kind, &body).await;
        drain(&worker, &pool, SOON).await;
    }
    type SmsRow = (
        String,
        Option<i64>,
        String,
        String,
        String,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<SmsRow> = sqlx::query_as(
        "SELECT message_id, business_id, message_type, customer_phone, status, completed_at
         FROM sms_logs ORDER BY message_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                "msg-in".into(),
                Some(biz),
                "inbound".into(),
                "+15557654321".into(),
                "received".into(),
                None
            ),
            (
                "msg-out".into(),
                Some(biz),
                "outbound".into(),
                "+15557654321".into(),
                "delivered".into(),
                Some("2026-11-29T03:00:03Z".parse().unwrap())
            ),
        ]
    );
    // A number no business owns: logged, not failed.
    let stranger = telnyx_event(
        "tx-x",
        "message.received",
        json!({
        "id": "msg-x", "direction": "inbound",
        "from": {"phone_number": "+1999"}, "to": [{"phone_number": "+1888"}]}),
    );
    let id = store(&pool, Source::Telnyx, "tx-x", "message.received", &stranger).await;
    drain(&worker, &pool, SOON).await;
    assert_eq!(state_of(&pool, id).await.0, "succeeded");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM sms_logs WHERE message_id = 'msg-x' AND business_id IS NULL"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_redelivered_event_applies_once(pool: PgPool) {
    let hookd = Hookd::start(&pool, config(&[])).await;
    let body = custom_event("user.signed_up");
    assert_eq!(hookd.custom("msg_once", &body).await.0, 200);
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        1,
        PATIENCE,
    )
    .await;
    assert_eq!(hookd.custom("msg_once", &body).await.1["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_logs").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM event_attempts").await, 1);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_worker_whose_lease_expired_cannot_complete(pool: PgPool) {
    let id = store(&pool, Source::Custom, "msg_l", "x.y", &custom_event("x.y")).await;
    // Worker A's lease is zero seconds long: expired as soon as it is granted.
    let a = claim(&pool, 10, Duration::ZERO).await;
    let b = claim(&pool, 10, Duration::from_secs(60)).await;
    assert_eq!(
        (a[0].id, a[0].attempt, b[0].id, b[0].attempt),
        (id, 1, id, 2)
    );
    let record = |attempt, outcome| events::AttemptRecord {
        event_id: id,
        attempt,
        started_at: chrono::Utc::now(),
        duration: Duration::ZERO,
        outcome,
        error: None,
        retry_at: None,
        http_status: None,
        response_body: None,
    };
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        events::complete(&mut tx, &[record(1, events::AttemptOutcome::Dead)])
            .await
            .unwrap(),
        [id],
        "A lost its lease"
    );
    // A worker rolls back then; even committed, A's completion changed nothing.
    tx.commit().await.unwrap();
    assert_eq!(state_of(&pool, id).await.0, "processing");
    assert_eq!(count(&pool, "SELECT count(*) FROM event_attempts").await, 0);

    // B's lease runs out too, but no one takes it over: B still completes, and until it
    // commits, no other worker can claim the event.
    sqlx::query("UPDATE events SET next_attempt_at = now() - interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(
        events::complete(&mut tx, &[record(2, events::AttemptOutcome::Succeeded)])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(claim(&pool, 10, Duration::from_secs(60)).await.is_empty());
    tx.commit().await.unwrap();
    assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 2, None));
    assert_eq!(count(&pool, "SELECT count(*) FROM event_attempts").await, 1);
}

fn succeeded(event: &events::ClaimedEvent) -> events::AttemptRecord<'static> {
    events::AttemptRecord {
        event_id: event.id,
        attempt: event.attempt,
        started_at: chrono::Utc::now(),
        duration: Duration::ZERO,
        outcome: events::AttemptOutcome::Succeeded,
        error: None,
        retry_at: None,
        http_status: None,
        response_body: None,
    }
}

/// A completion settles only the rows still `processing` under the batch's attempt, and a
/// batch with one that is not writes no history: the worker runs it again without that one.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_batch_settles_only_the_rows_still_processing_under_its_attempt(pool: PgPool) {
    for id in ["msg_k1", "msg_k2", "msg_k3"] {
        store(&pool, Source::Custom, id, "x.y", &custom_event("x.y")).await;
    }
    let mut claimed = claim(&pool, 10, Duration::from_secs(60)).await;
    claimed.sort_by_key(|e| e.id);
    let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
    // The second is sent back to wait under the same attempt number, as if another hand had.
    sqlx::query("UPDATE events SET state = 'retrying' WHERE id = $1")
        .bind(ids[1])
        .execute(&pool)
        .await
        .unwrap();
    let all: Vec<_> = claimed.iter().map(succeeded).collect();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(events::complete(&mut tx, &all).await.unwrap(), [ids[1]]);
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM event_attempts")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(history, 0, "no history for a batch that must roll back");
    tx.rollback().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    let kept = [succeeded(&claimed[0]), succeeded(&claimed[2])];
    assert!(events::complete(&mut tx, &kept).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    assert_eq!(state_of(&pool, ids[0]).await.0, "succeeded");
    assert_eq!(state_of(&pool, ids[1]).await.0, "retrying");
    assert_eq!(state_of(&pool, ids[2]).await.0, "succeeded");
    assert_eq!(count(&pool, "SELECT count(*) FROM event_attempts").await, 2);
}

/// A worker checks its leases only when it settles the batch. One taken over while the
/// batch's handlers waited is left out then: the batch is run again without it, so its effect
/// is not written by both workers.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_batch_whose_lease_is_taken_over_midway_settles_the_rest_without_it(pool: PgPool) {
    let biz = insert_business(&pool, "Slow Ltd", None, None).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body =
            json!({"type": "plan.changed", "data": {"business_id": biz, "n": n}}).to_string();
        ids.push(
            store(
                &pool,
                Source::Custom,
                &format!("msg_t{n}"),
                "plan.changed",
                &body,
            )
            .await,
        );
    }
    // The audit inserts wait for this lock, longer than the worker's lease.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM businesses WHERE id = $1 FOR UPDATE")
        .bind(biz)
        .execute(&mut *lock)
        .await
        .unwrap();
    let worker = worker(&pool, &[("HOOKD_LEASE_SECS", "1")]);
    let batch = tokio::spawn(async move { worker.process_batch().await });
    wait_for(
        &pool,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
        1,
        PATIENCE,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let taken = claim(&pool, 1, Duration::from_secs(60)).await;
    let lost = taken[0].id;
    assert_eq!(taken[0].attempt, 2, "taken over");
    lock.rollback().await.unwrap();

    assert_eq!(batch.await.unwrap().unwrap(), 3);
    assert_eq!(state_of(&pool, lost).await, ("processing".into(), 2, None));
    for &id in ids.iter().filter(|&&id| id != lost) {
        assert_eq!(state_of(&pool, id).await.0, "succeeded");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_logs").await, 2);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        2,
        "no attempt recorded for the event taken over"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn custom_events_are_audited_with_their_business(pool: PgPool) {
    let biz = insert_business(&pool, "Acme", None, None).await;
    let body =
        json!({"type": "plan.changed", "data": {"business_id": biz, "plan": "pro"}}).to_string();
    let id = store(&pool, Source::Custom, "msg_c", "plan.changed", &body).await;
    let ghost = json!({"type": "plan.changed", "data": {"business_id": 999_999}}).to_string();
    store(&pool, Source::Custom, "msg_g", "plan.changed", &ghost).await;
    drain(&worker(&pool, &[]), &pool, SOON).await;
    let rows: Vec<(Option<i64>, i64, String)> = sqlx::query_as(
        "SELECT business_id, webhook_id, details->'data'->>'plan' FROM audit_logs WHERE webhook_id = $1",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![(Some(biz), id, "pro".into())]);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_logs WHERE business_id IS NULL"
        )
        .await,
        1
    );
}

/// Handlers run without savepoints until one fails; then the batch is rolled back and run again
/// with one savepoint per event. Either way each event's effects and attempt are there once.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_handler_failing_mid_batch_leaves_the_others_applied_once(pool: PgPool) {
    let biz = insert_business(&pool, "Acme", None, None).await;
    let audited = |n: i64| {
        json!({"type": "plan.changed", "data": {"business_id": biz, "plan": format!("p{n}")}})
            .to_string()
    };
    let first = store(&pool, Source::Custom, "msg_1", "plan.changed", &audited(1)).await;
    let orphan = stripe_event(
        "evt_orphan",
        "customer.subscription.updated",
        1_700_000_000,
        subscription("cus_nobody", "active"),
    );
    let failing = store(
        &pool,
        Source::Stripe,
        "evt_orphan",
        "customer.subscription.updated",
        &orphan,
    )
    .await;
    let last = store(&pool, Source::Custom, "msg_2", "plan.changed", &audited(2)).await;

    assert_eq!(worker(&pool, &[]).process_batch().await.unwrap(), 3);

    for id in [first, last] {
        assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 1, None));
        let audits = format!("SELECT count(*) FROM audit_logs WHERE webhook_id = {id}");
        assert_eq!(count(&pool, &audits).await, 1);
    }
    let (state, attempts, error) = state_of(&pool, failing).await;
    assert_eq!((state.as_str(), attempts), ("retrying", 1));
    assert!(error.unwrap().contains("cus_nobody"));
    assert_eq!(count(&pool, "SELECT count(*) FROM event_attempts").await, 3);
    let outcomes: (i64, i64) =
        sqlx::query_as("SELECT sum(succeeded)::bigint, sum(failed)::bigint FROM stats_minute")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(outcomes, (2, 1));
}

/// A batch takes its rows' locks in key order, not arrival order: a batch that holds one
/// business can never wait for a second while someone holding the second waits for the first.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_batch_locks_businesses_in_key_order_so_batches_cannot_deadlock(pool: PgPool) {
    let a = insert_business(&pool, "A", Some("cus_a"), None).await;
    let b = insert_business(&pool, "B", Some("cus_b"), None).await;
    // B's event arrives first.
    for (id, customer) in [("evt_b", "cus_b"), ("evt_a", "cus_a")] {
        let body = stripe_event(
            id,
            "customer.subscription.updated",
            1_700_000_000,
            subscription(customer, "active"),
        );
        store(
            &pool,
            Source::Stripe,
            id,
            "customer.subscription.updated",
            &body,
        )
        .await;
    }
    // Someone else holds A, as another batch would.
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM businesses WHERE id = $1 FOR NO KEY UPDATE")
        .bind(a)
        .execute(&mut *other)
        .await
        .unwrap();
    let worker = worker(&pool, &[]);
    let batch = tokio::spawn(async move { worker.process_batch().await });
    wait_for(
        &pool,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE '%businesses%'",
        1,
        PATIENCE,
    )
    .await;
    // The worker waits for A without holding B, so the other side can take B at once.
    sqlx::query("SELECT 1 FROM businesses WHERE id = $1 FOR NO KEY UPDATE NOWAIT")
        .bind(b)
        .execute(&mut *other)
        .await
        .expect("B is free while the batch waits for A");
    other.commit().await.unwrap();
    assert_eq!(batch.await.unwrap().unwrap(), 2);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'succeeded'"
        )
        .await,
        2
    );
}

/// A vacuum of the emptied queue keeps its pages for the next burst's inserts (migration 0016)
/// instead of handing them back to the file system, which would make those inserts extend
/// the file again, a page at a time.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_emptied_queue_keeps_its_pages_through_a_vacuum(pool: PgPool) {
    for i in 0..300 {
        let id = format!("evt_page_{i}");
        let body = stripe_event(&id, "charge.refunded", 1_700_000_000, json!({}));
        store(&pool, Source::Stripe, &id, "charge.refunded", &body).await;
    }
    drain(&worker(&pool, &[]), &pool, SOON).await;
    let size = || async { count(&pool, "SELECT pg_relation_size('events_live')").await };
    let before = size().await;
    assert!(before > 8192 * 10, "{before} bytes");
    sqlx::query("VACUUM events_live")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(count(&pool, "SELECT count(*) FROM events_live").await, 0);
    assert_eq!(size().await, before);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_queue_is_vacuumed_of_what_settled_events_left_once_there_is_enough(pool: PgPool) {
    const SETTLED: i64 = 40;
    for i in 0..SETTLED {
        let id = format!("evt_settled_{i}");
        let body = stripe_event(&id, "charge.refunded", 1_700_000_000, json!({}));
        store(&pool, Source::Stripe, &id, "charge.refunded", &body).await;
    }
    drain(&worker(&pool, &[]), &pool, SOON).await;
    let waiting = stripe_event("evt_waiting", "charge.refunded", 0, json!({}));
    let waiting = store(
        &pool,
        Source::Stripe,
        "evt_waiting",
        "charge.refunded",
        &waiting,
    )
    .await;

    assert_eq!(
        events::vacuum_queue(&pool, i64::MAX).await.unwrap(),
        None,
        "below the threshold nothing runs"
    );
    // Each connection reports its dead rows to the statistics within seconds, not at once.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let dead = loop {
        if let Some(dead) = events::vacuum_queue(&pool, SETTLED).await.unwrap() {
            break dead;
        }
        assert!(tokio::time::Instant::now() < deadline, "never vacuumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(dead >= SETTLED, "{dead} dead rows");
    // The vacuum cleared them, unless autovacuum's analyze of the same table held its lock
    // (the vacuum skips it then) or a snapshot older than the rows: the daemon's next round
    // vacuums again, and so does this loop.
    while events::vacuum_queue(&pool, 1).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never cleared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state_of(&pool, waiting).await.0, "pending");
    let settled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE state IN ('succeeded', 'skipped')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(settled, SETTLED);
}
