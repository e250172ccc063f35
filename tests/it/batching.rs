//! Set-based processing: a batch's effects written with one statement per kind end exactly
//! where applying its events one at a time ends, a failing event fails alone, and workers that
//! share businesses apply every event once.

use std::collections::HashMap;

use common::db::events::ClaimedEvent;
use common::{MIGRATOR, Source};
use hookd::handlers::Event;
use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

fn subscription(id: &str, customer: &str, status: &str, plan: Option<&str>) -> serde_json::Value {
    let mut object = json!({
        "id": id, "object": "subscription", "customer": customer, "status": status,
        "start_date": 1_700_000_000,
    });
    if let Some(plan) = plan {
        object["items"] = json!({"data": [{"price": {"id": plan}}]});
    }
    object
}

/// An invoice naming its customer, or only its subscription (the newer `parent` shape).
fn invoice(customer: Option<&str>, subscription: &str, paid_at: i64) -> serde_json::Value {
    let mut object = json!({
        "id": format!("in_{paid_at}"), "object": "invoice", "amount_paid": 4900,
        "amount_due": 4900, "currency": "usd",
        "status_transitions": {"paid_at": paid_at},
        "parent": {"subscription_details": {"subscription": subscription}},
    });
    if let Some(customer) = customer {
        object["customer"] = json!(customer);
    }
    object
}

fn call(id: &str, business: i64) -> serde_json::Value {
    json!({
        "call_control_id": id, "direction": "incoming", "from": "+15557654321",
        "to": "+15550000001", "business_id": business,
        "start_time": "2026-11-29T03:00:00.000Z", "end_time": "2026-11-29T03:02:00.000Z",
        "hangup_cause": "normal_clearing",
    })
}

fn message(id: &str, status: &str) -> serde_json::Value {
    json!({
        "id": id, "direction": "inbound", "text": "hello",
        "from": {"phone_number": "+15557654321"},
        "to": [{"phone_number": "+15550000001", "status": status}],
        "received_at": "2026-11-29T03:00:00.000Z",
    })
}

/// Everything the handlers write, in an order that does not depend on how it was written.
#[derive(Debug, PartialEq)]
struct Tables {
    businesses: Vec<serde_json::Value>,
    stripe_state: Vec<serde_json::Value>,
    audit_logs: Vec<serde_json::Value>,
    call_logs: Vec<serde_json::Value>,
    sms_logs: Vec<serde_json::Value>,
}

async fn rows(pool: &PgPool, sql: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar(&format!(
        "SELECT COALESCE(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]') FROM ({sql}) t"
    ))
    .fetch_one(pool)
    .await
    .map(|v: serde_json::Value| v.as_array().cloned().unwrap_or_default())
    .unwrap()
}

async fn tables(pool: &PgPool) -> Tables {
    Tables {
        businesses: rows(
            pool,
            "SELECT id, stripe_customer_id, stripe_subscription_id, subscription_status,
                    subscription_plan, subscription_start_date, last_payment_date FROM businesses",
        )
        .await,
        stripe_state: rows(pool, "SELECT customer_id, state_at FROM stripe_state").await,
        audit_logs: rows(
            pool,
            "SELECT action, details, business_id, webhook_id, source FROM audit_logs",
        )
        .await,
        call_logs: rows(
            pool,
            "SELECT call_id, business_id, customer_phone, business_phone, call_type, status,
                    started_at, answered_at, ended_at, hangup_cause FROM call_logs",
        )
        .await,
        sms_logs: rows(
            pool,
            "SELECT message_id, business_id, customer_phone, business_phone, message_type,
                    content, status, received_at, completed_at FROM sms_logs",
        )
        .await,
    }
}

/// The batch's events as a worker holds them, in the order it applies them.
async fn claimed(pool: &PgPool) -> Vec<Event> {
    let mut events: Vec<Event> = sqlx::query_as::<_, ClaimedEvent>(
        "SELECT id, source, event_id, event_type, attempts, body, received_at
         FROM events ORDER BY next_attempt_at, id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(Event::read)
    .collect();
    events.sort_by(|a, b| hookd::handlers::batch_order(a).cmp(&hookd::handlers::batch_order(b)));
    events
}

/// A batch holding one customer's whole history out of order (ties in `created` included),
/// invoices that name only their subscription, a customer with no business, a call and a
/// message whose events arrive together, custom events and a payload missing a field: one
/// set-based batch leaves the tables exactly as applying the events one at a time, each
/// under its own savepoint, does.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_batch_ends_where_one_event_at_a_time_ends(pool: PgPool) {
    let a = insert_business(&pool, "A", Some("cus_a"), Some("+15550000001")).await;
    let b = insert_business(&pool, "B", Some("cus_b"), None).await;
    insert_business(&pool, "C", Some("cus_c"), None).await;
    sqlx::query("UPDATE businesses SET stripe_subscription_id = 'sub_b' WHERE id = $1")
        .bind(b)
        .execute(&pool)
        .await
        .unwrap();
    let t = 1_700_000_000;
    let stripe = [
        (
            "customer.subscription.updated",
            200,
            subscription("sub_a", "cus_a", "past_due", Some("p2")),
        ),
        (
            "customer.subscription.deleted",
            300,
            subscription("sub_a", "cus_a", "canceled", None),
        ),
        (
            "customer.subscription.created",
            100,
            subscription("sub_a", "cus_a", "active", Some("p1")),
        ),
        (
            "invoice.payment_failed",
            250,
            invoice(Some("cus_a"), "sub_a", t + 250),
        ),
        (
            "invoice.payment_succeeded",
            400,
            invoice(Some("cus_a"), "sub_a", t + 400),
        ),
        (
            "invoice.payment_succeeded",
            350,
            invoice(Some("cus_a"), "sub_a", t + 350),
        ),
        (
            "invoice.payment_succeeded",
            500,
            invoice(None, "sub_b", t + 500),
        ),
        (
            "invoice.payment_failed",
            600,
            invoice(None, "sub_b", t + 600),
        ),
        (
            "customer.subscription.updated",
            550,
            subscription("sub_b", "cus_b", "active", None),
        ),
        (
            "customer.subscription.created",
            100,
            subscription("sub_c", "cus_c", "trialing", Some("p1")),
        ),
        (
            "customer.subscription.updated",
            100,
            subscription("sub_c", "cus_c", "active", Some("p3")),
        ),
        (
            "customer.subscription.updated",
            100,
            subscription("sub_x", "cus_nobody", "active", None),
        ),
        (
            "invoice.payment_succeeded",
            100,
            invoice(None, "sub_nobody", t + 100),
        ),
        (
            "customer.subscription.updated",
            100,
            json!({"id": "sub_a", "customer": "cus_a"}),
        ),
    ];
    for (i, (kind, created, object)) in stripe.into_iter().enumerate() {
        let id = format!("evt_{i}");
        store(
            &pool,
            Source::Stripe,
            &id,
            kind,
            &stripe_event(&id, kind, t + created, object),
        )
        .await;
    }
    let telnyx = [
        ("call.hangup", call("v3:call_1", a)),
        ("call.initiated", call("v3:call_1", a)),
        ("call.answered", call("v3:call_1", a)),
        ("call.initiated", call("v3:call_2", a)),
        ("message.finalized", message("msg_1", "delivered")),
        ("message.received", message("msg_1", "received")),
    ];
    for (i, (kind, payload)) in telnyx.into_iter().enumerate() {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        store(
            &pool,
            Source::Telnyx,
            &id,
            kind,
            &telnyx_event(&id, kind, payload),
        )
        .await;
    }
    for (i, business) in [Some(a), Some(b), None].into_iter().enumerate() {
        let body = json!({"type": "plan.changed", "data": {"business_id": business, "n": i}});
        let id = format!("msg_{i}");
        store(
            &pool,
            Source::Custom,
            &id,
            "plan.changed",
            &body.to_string(),
        )
        .await;
    }
    let initial = tables(&pool).await;
    let events = claimed(&pool).await;

    // The shared statements, as the worker runs them; they must not fail here, or the
    // worker would fall back to the very path this is compared with.
    let statements = common::db::business::Statements::default();
    let verdict = |outcome: &Result<_, hookd::handlers::HandlerError>| match outcome {
        Ok(_) => "succeeded",
        Err(hookd::handlers::HandlerError::Permanent(_)) => "dead",
        Err(_) => "retrying",
    };
    let mut tx = pool.begin().await.unwrap();
    let batch: Vec<&Event> = events.iter().collect();
    let outcomes = hookd::handlers::apply_batch(&mut tx, &statements, &batch)
        .await
        .expect("the shared statements succeed");
    tx.commit().await.unwrap();
    let states: HashMap<i64, &str> = events
        .iter()
        .zip(&outcomes)
        .map(|(event, outcome)| (event.id, verdict(outcome)))
        .collect();
    let together = tables(&pool).await;

    // Back to the start, then one event at a time, as the worker does after a failed statement.
    sqlx::raw_sql("TRUNCATE audit_logs, call_logs, sms_logs, stripe_state")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE businesses b SET stripe_subscription_id = i.sub, subscription_status = NULL,
                subscription_plan = NULL, subscription_start_date = NULL, last_payment_date = NULL
         FROM (SELECT x->>'stripe_customer_id' AS customer, x->>'stripe_subscription_id' AS sub
               FROM jsonb_array_elements($1) x) i
         WHERE b.stripe_customer_id = i.customer",
    )
    .bind(json!(initial.businesses))
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(tables(&pool).await, initial);
    let mut tx = pool.begin().await.unwrap();
    let mut alone = HashMap::new();
    for event in &events {
        let mut savepoint = sqlx::Acquire::begin(&mut *tx).await.unwrap();
        let outcome = hookd::handlers::apply(&mut savepoint, &statements, event).await;
        if outcome.is_ok() {
            savepoint.commit().await.unwrap();
        }
        alone.insert(event.id, verdict(&outcome));
    }
    tx.commit().await.unwrap();

    assert_eq!(tables(&pool).await, together);
    assert_eq!(alone, states);
    // What the history says, so the comparison is not of two empty results.
    assert_eq!(
        business_where(&pool, &format!("id = {a}"))
            .await
            .subscription_status
            .as_deref(),
        Some("canceled")
    );
    let dead_or_retrying = states.values().filter(|s| **s != "succeeded").count();
    assert_eq!(dead_or_retrying, 3, "{states:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM call_logs").await, 2);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_logs WHERE (details->>'stale')::bool"
        )
        .await,
        3
    );
}

/// A statement that fails (here a trigger of the application's refuses one audit entry)
/// sends the batch back to be run event by event: only the refused event fails, the others
/// are applied and recorded once.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_failing_statement_fails_only_its_event(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.action = 'boom' THEN RAISE EXCEPTION 'the application refuses boom'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_boom BEFORE INSERT ON audit_logs
             FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let biz = insert_business(&pool, "Acme", Some("cus_1"), None).await;
    let ok = store(
        &pool,
        Source::Custom,
        "msg_ok",
        "plan.changed",
        &custom_event("plan.changed"),
    )
    .await;
    let boom = store(
        &pool,
        Source::Custom,
        "msg_boom",
        "boom",
        &custom_event("boom"),
    )
    .await;
    let paid = stripe_event(
        "evt_paid",
        "invoice.payment_succeeded",
        1_700_000_000,
        invoice(Some("cus_1"), "sub_1", 1_700_000_000),
    );
    let paid = store(
        &pool,
        Source::Stripe,
        "evt_paid",
        "invoice.payment_succeeded",
        &paid,
    )
    .await;

    assert_eq!(worker(&pool, &[]).process_batch().await.unwrap(), 3);

    for id in [ok, paid] {
        assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 1, None));
        let audits = format!("SELECT count(*) FROM audit_logs WHERE webhook_id = {id}");
        assert_eq!(count(&pool, &audits).await, 1);
    }
    let (state, attempts, error) = state_of(&pool, boom).await;
    assert_eq!((state.as_str(), attempts), ("retrying", 1));
    assert!(error.unwrap().contains("the application refuses boom"));
    assert_eq!(count(&pool, "SELECT count(*) FROM event_attempts").await, 3);
    assert!(
        business_where(&pool, &format!("id = {biz}"))
            .await
            .last_payment_date
            .is_some()
    );
}

/// Batches of one business's events in a later batch than newer state still lose to it,
/// and an orphan in a batch fails alone without the batch being run again.
#[sqlx::test(migrator = "MIGRATOR")]
async fn an_older_event_in_a_later_batch_does_not_win(pool: PgPool) {
    let biz = insert_business(&pool, "Acme", Some("cus_1"), None).await;
    let t = 1_700_000_000;
    let worker = worker(&pool, &[]);
    let batches = [
        vec![
            ("evt_1", "customer.subscription.deleted", 300, "canceled"),
            ("evt_2", "customer.subscription.created", 100, "active"),
        ],
        vec![
            ("evt_3", "customer.subscription.updated", 200, "past_due"),
            ("evt_4", "customer.subscription.updated", 250, "unpaid"),
            ("evt_5", "customer.subscription.updated", 250, "orphaned"),
        ],
    ];
    for batch in batches {
        for (id, kind, created, status) in batch {
            let customer = if status == "orphaned" {
                "cus_nobody"
            } else {
                "cus_1"
            };
            let object = subscription("sub_1", customer, status, None);
            store(
                &pool,
                Source::Stripe,
                id,
                kind,
                &stripe_event(id, kind, t + created, object),
            )
            .await;
        }
        worker.process_batch().await.unwrap();
    }
    assert_eq!(
        business_where(&pool, &format!("id = {biz}"))
            .await
            .subscription_status
            .as_deref(),
        Some("canceled")
    );
    let audits: Vec<(String, bool)> = sqlx::query_as(
        "SELECT details->>'stripe_event_id', COALESCE((details->>'stale')::bool, false)
         FROM audit_logs ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audits,
        vec![
            ("evt_1".into(), false),
            ("evt_2".into(), true),
            ("evt_3".into(), true),
            ("evt_4".into(), true),
        ]
    );
    let orphan: i64 = sqlx::query_scalar("SELECT id FROM events WHERE event_id = 'evt_5'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (state, _, error) = state_of(&pool, orphan).await;
    assert_eq!(state, "retrying");
    assert!(error.unwrap().contains("cus_nobody"));
}

/// Two workers whose batches keep meeting on the same few businesses: every event is applied
/// exactly once at its first attempt (no deadlock, no lost update), and each business ends
/// with the newest payment.
#[sqlx::test(migrator = "MIGRATOR")]
async fn two_workers_on_the_same_businesses_apply_every_event_once(pool: PgPool) {
    const BUSINESSES: i64 = 5;
    const EVENTS: i64 = 600;
    for k in 0..BUSINESSES {
        insert_business(&pool, &format!("B{k}"), Some(&format!("cus_{k}")), None).await;
    }
    let t = 1_700_000_000;
    for i in 0..EVENTS {
        let k = i % BUSINESSES;
        let customer = format!("cus_{k}");
        let id = format!("evt_{i}");
        let (kind, object) = if i % 3 == 0 {
            let status = format!("status_{i}");
            (
                "customer.subscription.updated",
                subscription(&format!("sub_{k}"), &customer, &status, None),
            )
        } else {
            (
                "invoice.payment_succeeded",
                invoice(Some(&customer), &format!("sub_{k}"), t + i),
            )
        };
        // Created times run backwards every few events, as Stripe's deliveries do.
        let created = t + i - 10 * (i % 4);
        store(
            &pool,
            Source::Stripe,
            &id,
            kind,
            &stripe_event(&id, kind, created, object),
        )
        .await;
    }
    let settings = [("HOOKD_BATCH_SIZE", "25")];
    let run = |worker: hookd::worker::Worker| {
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                match worker.process_batch().await.unwrap() {
                    0 => return n,
                    claimed => n += claimed,
                }
            }
        })
    };
    let (one, two) = (run(worker(&pool, &settings)), run(worker(&pool, &settings)));
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    assert_eq!(one + two, EVENTS as usize);
    assert!(
        one > 0 && two > 0,
        "both workers took part: {one} and {two}"
    );

    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'succeeded' AND attempts = 1"
        )
        .await,
        EVENTS
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        EVENTS
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM (SELECT webhook_id FROM audit_logs GROUP BY 1
                                   HAVING count(*) = 1) once"
        )
        .await,
        EVENTS
    );
    for k in 0..BUSINESSES {
        let newest_paid = (0..EVENTS)
            .filter(|i| i % BUSINESSES == k && i % 3 != 0)
            .max();
        let business = business_where(&pool, &format!("stripe_customer_id = 'cus_{k}'")).await;
        assert_eq!(
            business.last_payment_date.map(|d| d.timestamp()),
            newest_paid.map(|i| t + i)
        );
        // The subscription state is the newest by `created` (no two tie here).
        let newest_state = (0..EVENTS)
            .filter(|i| i % BUSINESSES == k && i % 3 == 0)
            .max_by_key(|i| (t + i - 10 * (i % 4), *i));
        assert_eq!(
            business.subscription_status,
            newest_state.map(|i| format!("status_{i}"))
        );
    }
}
