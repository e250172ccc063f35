//! The CloudGreet webhooks runbook, read as a spec: its handlers' rows under its own column
//! names, its SQL run verbatim, and hookd moving into an application database that already
//! has its tables.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{MIGRATOR, Source};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

use crate::harness::*;

const PATIENCE: Duration = Duration::from_secs(30);

/// A connection as an on-call engineer's psql has it: the application's default search path,
/// none of hookd's settings.
async fn psql(pool: &PgPool) -> PgConnection {
    let mut conn = PgConnection::connect_with(&pool.connect_options())
        .await
        .unwrap();
    sqlx::query("SET search_path = \"$user\", public")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// The subscription object the runbook's handlers read: `id`, `customer`, `status`,
/// `items.data[0].price.id`, `created`.
fn subscription(status: &str, price: &str) -> Value {
    json!({
        "id": "sub_42", "object": "subscription", "customer": "cus_42", "status": status,
        "created": 1_764_000_000,
        "items": {"object": "list", "data": [{"price": {"id": price}}]},
    })
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn stripe_handlers_write_the_runbook_columns(pool: PgPool) {
    sqlx::query(
        "INSERT INTO businesses (name, stripe_customer_id, phone_number)
         VALUES ('CloudGreet Demo', 'cus_42', '+15550100042')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let token = "runbook-admin-token-0123456789abcdef";
    let hookd = Hookd::start(&pool, config(&[("HOOKD_ADMIN_TOKEN", token)])).await;
    let deliveries = [
        stripe_event(
            "evt_created",
            "customer.subscription.created",
            1_764_000_001,
            subscription("active", "price_basic"),
        ),
        stripe_event(
            "evt_updated",
            "customer.subscription.updated",
            1_764_000_002,
            subscription("active", "price_pro"),
        ),
        stripe_event(
            "evt_paid",
            "invoice.payment_succeeded",
            1_764_000_003,
            json!({"id": "in_7", "object": "invoice", "customer": "cus_42",
                   "subscription": "sub_42", "amount_paid": 4900, "currency": "usd",
                   "created": 1_764_000_003}),
        ),
    ];
    for body in &deliveries {
        // One at a time: the runbook's handlers are order-sensitive and so is this test.
        assert_eq!(hookd.stripe(body).await.0, 200);
        wait_for(
            &pool,
            "SELECT count(*) FROM events WHERE state <> 'succeeded'",
            0,
            PATIENCE,
        )
        .await;
    }
    let business = business_where(&pool, "stripe_customer_id = 'cus_42'").await;
    assert_eq!(
        business,
        Business {
            stripe_subscription_id: Some("sub_42".into()),
            subscription_status: Some("active".into()),
            subscription_plan: Some("price_pro".into()),
            subscription_start_date: Some(at(1_764_000_000)),
            last_payment_date: Some(at(1_764_000_003)),
        }
    );
    let audit: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, details - 'stripe_event_id' FROM audit_logs ORDER BY created_at, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            (
                "subscription_created".to_owned(),
                json!({"subscription_id": "sub_42", "customer_id": "cus_42",
                       "plan_id": "price_basic"})
            ),
            (
                "subscription_updated".to_owned(),
                json!({"subscription_id": "sub_42", "status": "active", "plan_id": "price_pro"})
            ),
            (
                "payment_succeeded".to_owned(),
                json!({"invoice_id": "in_7", "subscription_id": "sub_42", "amount": 4900,
                       "currency": "usd"})
            ),
        ]
    );
    // The runbook's analytics route: its `stats`, total and success rate.
    let analytics: Value = hookd
        .client
        .get(hookd.url("/api/webhooks/analytics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut stats = analytics["stats"].as_array().unwrap().clone();
    stats.sort_by_key(|s| s["event_type"].as_str().unwrap().to_owned());
    assert_eq!(
        Value::Array(stats),
        json!([
            {"event_type": "customer.subscription.created", "status": "success", "count": 1},
            {"event_type": "customer.subscription.updated", "status": "success", "count": 1},
            {"event_type": "invoice.payment_succeeded", "status": "success", "count": 1},
        ])
    );
    assert_eq!(analytics["total_processed"], 3);
    assert_eq!(analytics["success_rate"], 100.0);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn telnyx_handlers_write_the_runbook_columns(pool: PgPool) {
    let business: i64 = sqlx::query_scalar(
        "INSERT INTO businesses (name, phone_number) VALUES ('CloudGreet Demo', '+15550100042')
         RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let hookd = Hookd::start(&pool, config(&[])).await;
    let call = |id: &str, kind: &str, at: &str| {
        let mut event: Value = serde_json::from_str(&telnyx_event(
            id,
            kind,
            json!({"call_control_id": "v3:cc-1", "direction": "incoming",
                   "from": "+15557654321", "to": "+15550100042"}),
        ))
        .unwrap();
        event["data"]["occurred_at"] = json!(at);
        event.to_string()
    };
    let received = telnyx_event(
        "ev-sms",
        "message.received",
        json!({"id": "msg-1", "direction": "inbound", "text": "Are you open on Sunday?",
               "from": {"phone_number": "+15557654321"},
               "to": [{"phone_number": "+15550100042"}],
               "received_at": "2026-11-29T03:02:00Z"}),
    );
    // The runbook's handler reads `payload.business_id`; a sender that sets it is believed
    // over the number.
    let named = telnyx_event(
        "ev-named",
        "call.initiated",
        json!({"call_control_id": "v3:cc-2", "direction": "outgoing", "business_id": business,
               "from": "+15550199999", "to": "+15557654321"}),
    );
    for body in [
        call("ev-1", "call.initiated", "2026-11-29T03:00:00Z"),
        call("ev-2", "call.answered", "2026-11-29T03:00:04Z"),
        received,
        named,
    ] {
        assert_eq!(hookd.telnyx(&body).await.0, 200);
    }
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        4,
        PATIENCE,
    )
    .await;
    let named: (Option<i64>, String, String, String) = sqlx::query_as(
        "SELECT business_id, call_type, customer_phone, business_phone FROM call_logs
         WHERE call_id = 'v3:cc-2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        named,
        (
            Some(business),
            "outbound".into(),
            "+15557654321".into(),
            "+15550199999".into()
        )
    );
    type Call = (
        Option<i64>,
        String,
        String,
        String,
        String,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let row: Call = sqlx::query_as(
        "SELECT business_id, customer_phone, business_phone, call_type, status, started_at,
                answered_at
         FROM call_logs WHERE call_id = 'v3:cc-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            Some(business),
            "+15557654321".into(),
            "+15550100042".into(),
            "inbound".into(),
            "answered".into(),
            "2026-11-29T03:00:00Z".parse().unwrap(),
            "2026-11-29T03:00:04Z".parse().unwrap(),
        )
    );
    type Sms = (
        Option<i64>,
        String,
        String,
        String,
        String,
        String,
        DateTime<Utc>,
    );
    let row: Sms = sqlx::query_as(
        "SELECT business_id, customer_phone, business_phone, message_type, content, status,
                received_at
         FROM sms_logs WHERE message_id = 'msg-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            Some(business),
            "+15557654321".into(),
            "+15550100042".into(),
            "inbound".into(),
            "Are you open on Sunday?".into(),
            "received".into(),
            "2026-11-29T03:02:00Z".parse().unwrap(),
        )
    );
    hookd.stop().await;
}

/// `webhook_logs` has one row per processing, as `WebhookMonitor.logWebhookEvent` wrote; the
/// runbook's statements run verbatim from a psql with the application's search path.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_runbook_sql_runs_verbatim(pool: PgPool) {
    // A known mix: two Stripe events that succeeded, a Telnyx event that failed twice and then
    // succeeded, a custom event that died after two failures, and one success from two days
    // ago that the 24-hour stats must leave out.
    let mix = [
        (
            Source::Stripe,
            "evt_1",
            "invoice.payment_succeeded",
            &["succeeded"][..],
            0,
        ),
        (
            Source::Stripe,
            "evt_2",
            "invoice.payment_succeeded",
            &["succeeded"],
            0,
        ),
        (
            Source::Telnyx,
            "tx_1",
            "call.hangup",
            &["failed", "failed", "succeeded"],
            0,
        ),
        (
            Source::Custom,
            "msg_1",
            "user.signed_up",
            &["failed", "dead"],
            0,
        ),
        (
            Source::Stripe,
            "evt_old",
            "invoice.payment_succeeded",
            &["succeeded"],
            48,
        ),
    ];
    for (source, event_id, kind, outcomes, hours_ago) in mix {
        let id = store(&pool, source, event_id, kind, "{}").await;
        for (n, outcome) in outcomes.iter().enumerate() {
            sqlx::query(
                "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome,
                                             error, processed_at)
                 VALUES ($1, $2, now() - make_interval(hours => $3, mins => 10 - $2), 5, $4,
                         CASE WHEN $4 IN ('failed', 'dead') THEN 'timeout after 10 s' END,
                         now() - make_interval(hours => $3, mins => 10 - $2))",
            )
            .bind(id)
            .bind(n as i32 + 1)
            .bind(hours_ago)
            .bind(outcome)
            .execute(&pool)
            .await
            .unwrap();
        }
        let last = outcomes.last().unwrap();
        let state = if *last == "dead" { "dead" } else { "succeeded" };
        sqlx::query(
            "UPDATE events SET state = $2, attempts = $3,
                    dead_at = CASE WHEN $2 = 'dead' THEN now() - interval '8 days' END,
                    last_error = CASE WHEN $2 = 'dead' THEN 'timeout after 10 s' END
             WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(outcomes.len() as i32)
        .execute(&pool)
        .await
        .unwrap();
    }
    let mut psql = psql(&pool).await;

    // getWebhookStats: counts by event_type and status over the last 24 hours.
    let stats: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_type, status, count(*) FROM webhook_logs
         WHERE processed_at >= NOW() - INTERVAL '24 hours'
         GROUP BY event_type, status ORDER BY event_type, status",
    )
    .fetch_all(&mut psql)
    .await
    .unwrap();
    let stats: Vec<(&str, &str, i64)> = stats
        .iter()
        .map(|(t, s, n)| (t.as_str(), s.as_str(), *n))
        .collect();
    assert_eq!(
        stats,
        [
            ("call.hangup", "failure", 2),
            ("call.hangup", "success", 1),
            ("invoice.payment_succeeded", "success", 2),
            ("user.signed_up", "failure", 2),
        ]
    );

    let latest: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT event_type, event_id, status, error_message FROM (
             SELECT * FROM webhook_logs ORDER BY processed_at DESC LIMIT 10
         ) runbook",
    )
    .fetch_all(&mut psql)
    .await
    .unwrap();
    assert_eq!(latest.len(), 8);
    assert_eq!(
        latest[latest.len() - 1].1,
        "evt_old",
        "newest first, the two-day-old one last"
    );
    assert!(latest.contains(&(
        "user.signed_up".into(),
        "msg_1".into(),
        "failure".into(),
        Some("timeout after 10 s".into())
    )));

    let failed: Vec<(i64, Value, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, webhook_data, error_message, failed_at FROM (
             SELECT * FROM failed_webhooks ORDER BY failed_at DESC LIMIT 10
         ) runbook",
    )
    .fetch_all(&mut psql)
    .await
    .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1, json!({}), "the event as received");
    assert_eq!(failed[0].2, "timeout after 10 s");

    // As the application's own role, which may delete from the view and sees nothing of
    // hookd's schema.
    let role = format!(
        "app_{}",
        pool.connect_options()
            .get_database()
            .unwrap()
            .replace('-', "_")
    );
    sqlx::raw_sql(&format!(
        "CREATE ROLE {role}; GRANT SELECT, DELETE ON failed_webhooks TO {role}; SET ROLE {role}"
    ))
    .execute(&mut psql)
    .await
    .unwrap();
    let cleared =
        sqlx::query("DELETE FROM failed_webhooks WHERE failed_at < NOW() - INTERVAL '7 days'")
            .execute(&mut psql)
            .await
            .unwrap();
    sqlx::raw_sql(&format!(
        "RESET ROLE; REVOKE ALL ON failed_webhooks FROM {role}; DROP ROLE {role}"
    ))
    .execute(&mut psql)
    .await
    .unwrap();
    assert_eq!(cleared.rows_affected(), 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts WHERE outcome = 'dead'"
        )
        .await,
        0,
        "the dead event's history went with it"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 4);
}

/// The application had `businesses` (a uuid key, columns and rows of its own) and
/// `audit_logs` before hookd was ever migrated.
#[sqlx::test(migrations = false)]
async fn hookd_moves_into_an_application_database(pool: PgPool) {
    sqlx::raw_sql(
        r#"
        CREATE TABLE businesses (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            business_name text NOT NULL,
            owner_email text NOT NULL,
            phone_number text,
            stripe_customer_id text,
            stripe_subscription_id text,
            subscription_status text DEFAULT 'trialing',
            subscription_plan text,
            subscription_start_date timestamptz,
            last_payment_date timestamptz,
            onboarding_completed boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE audit_logs (
            id bigserial PRIMARY KEY,
            user_id uuid,
            action text NOT NULL,
            details jsonb,
            ip_address inet,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO businesses (id, business_name, owner_email, phone_number, stripe_customer_id,
                                onboarding_completed)
        VALUES ('6f1c1d1e-0000-4000-8000-000000000001', 'Acme Plumbing', 'a@acme.test',
                '+15550100001', 'cus_acme', true),
               ('6f1c1d1e-0000-4000-8000-000000000002', 'Bolt Electric', 'b@bolt.test',
                '+15550100002', 'cus_bolt', false);
        INSERT INTO audit_logs (action, details) VALUES ('user_login', '{"by": "app"}');
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let before: String = sqlx::query_scalar(
        "SELECT string_agg(concat_ws(',', id, business_name, owner_email, onboarding_completed),
                           ';' ORDER BY id) FROM businesses",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    let hookd = Hookd::start(&pool, config(&[])).await;
    let body = stripe_event(
        "evt_acme",
        "customer.subscription.created",
        1_764_000_001,
        json!({"id": "sub_acme", "customer": "cus_acme", "status": "active",
               "created": 1_764_000_000, "items": {"data": [{"price": {"id": "price_pro"}}]}}),
    );
    assert_eq!(hookd.stripe(&body).await.0, 200);
    let call = telnyx_event(
        "ev-acme",
        "call.initiated",
        json!({"call_control_id": "v3:acme", "direction": "incoming",
               "from": "+15557654321", "to": "+15550100001"}),
    );
    assert_eq!(hookd.telnyx(&call).await.0, 200);
    wait_for(
        &pool,
        "SELECT count(*) FROM hookd.events WHERE state = 'succeeded'",
        2,
        PATIENCE,
    )
    .await;
    hookd.stop().await;

    let after: String = sqlx::query_scalar(
        "SELECT string_agg(concat_ws(',', id, business_name, owner_email, onboarding_completed),
                           ';' ORDER BY id) FROM businesses",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        after, before,
        "the application's columns and rows are its own"
    );
    let plans: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT stripe_customer_id, subscription_status, subscription_plan FROM businesses
         ORDER BY stripe_customer_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        plans,
        [
            (
                "cus_acme".into(),
                Some("active".into()),
                Some("price_pro".into())
            ),
            ("cus_bolt".into(), Some("trialing".into()), None),
        ]
    );
    let audit: Vec<(String, Option<Value>)> =
        sqlx::query_as("SELECT action, details->'subscription_id' FROM audit_logs ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        audit,
        [
            ("user_login".into(), None),
            ("subscription_created".into(), Some(json!("sub_acme"))),
        ]
    );
    // call_logs did not exist: hookd made it, keyed to the application's uuid businesses.
    let (key_type, business): (String, String) = sqlx::query_as(
        "SELECT format_type(a.atttypid, a.atttypmod), c.business_id::text
         FROM pg_attribute a, call_logs c
         WHERE a.attrelid = 'public.call_logs'::regclass AND a.attname = 'business_id'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (key_type.as_str(), business.as_str()),
        ("uuid", "6f1c1d1e-0000-4000-8000-000000000001")
    );
    let hookd_tables: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
         WHERE relnamespace = 'hookd'::regnamespace AND relname IN ('events', '_sqlx_migrations')
         ORDER BY relname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(hookd_tables, ["_sqlx_migrations", "events"]);
}

/// An application table without a column hookd writes: `hookd migrate` and `hookd serve` say
/// which, exit 78, and leave the database as it was.
#[sqlx::test(migrations = false)]
async fn a_table_that_lacks_a_column_stops_hookd_and_changes_nothing(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE businesses (id bigserial PRIMARY KEY, stripe_customer_id text,
                                  stripe_subscription_id text, subscription_status text,
                                  subscription_plan text, subscription_start_date timestamptz,
                                  updated_at timestamptz);
         CREATE TABLE call_logs (id bigserial PRIMARY KEY, call_id text, business_id bigint,
                                 customer_phone text, business_phone text, call_type text,
                                 status text, started_at timestamptz, answered_at timestamptz,
                                 ended_at timestamptz, hangup_cause integer,
                                 created_at timestamptz, updated_at timestamptz)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let schema = "SELECT string_agg(format('%s.%s', n.nspname, c.relname), ' ' ORDER BY 1)
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')";
    let before: String = sqlx::query_scalar(schema).fetch_one(&pool).await.unwrap();
    for command in ["migrate", "serve"] {
        let out = std::process::Command::new(hookd_bin())
            .arg(command)
            .env_clear()
            .env("DATABASE_URL", database_url(&pool))
            .env("HOOKD_LISTEN", format!("127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{command}: {stderr}");
        let lines: Vec<&str> = stderr.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "businesses.last_payment_date: missing (expected timestamptz)",
                "call_logs.hangup_cause: is integer (expected text)",
                "call_logs.call_id: has no unique index of its own (hookd upserts on it: \
                 CREATE UNIQUE INDEX ON call_logs (call_id))",
            ],
            "{command}: {stderr}"
        );
        assert!(
            stderr.starts_with("hookd: the application's tables in schema public lack"),
            "{stderr}"
        );
    }
    let after: String = sqlx::query_scalar(schema).fetch_one(&pool).await.unwrap();
    assert_eq!(after, before, "nothing was created or changed");
}

/// What would break the migration half-way is refused before it starts: a view of the
/// application's own under a runbook name, and a business key of another type than the
/// `businesses` hookd would create.
#[sqlx::test(migrations = false)]
async fn a_view_of_the_application_s_or_a_foreign_key_type_is_refused_up_front(pool: PgPool) {
    sqlx::raw_sql(
        "CREATE VIEW webhook_logs AS SELECT 1 AS id;
         CREATE TABLE call_logs (id bigserial PRIMARY KEY, call_id text UNIQUE, business_id uuid,
                                 customer_phone text, business_phone text, call_type text,
                                 status text, started_at timestamptz, answered_at timestamptz,
                                 ended_at timestamptz, hangup_cause text,
                                 created_at timestamptz, updated_at timestamptz)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let out = std::process::Command::new(hookd_bin())
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", database_url(&pool))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let lines: Vec<&str> = stderr.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "webhook_logs.*: is the application's own; hookd provides webhook_logs as a view of \
             its events (rename yours first: ALTER TABLE webhook_logs RENAME TO \
             webhook_logs_before_hookd)",
            "call_logs.business_id: is uuid (expected bigint)",
        ],
        "{stderr}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'hookd'"
        )
        .await,
        0,
        "nothing was created"
    );
}
