//! The application's tables the built-in handlers write, under the runbook's column names.
//! Every function takes the caller's connection, so the effect commits in the same
//! transaction that marks the event succeeded.
//!
//! The tables may be the application's own ([`super::schema`]): business keys of any type
//! never leave the database (every statement finds the business in SQL), and the optional
//! columns are written only where a table has them, so the statements are made once per
//! process from what [`super::schema::migrate`] found: [`Statements`].

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::batch::BatchStatements;
use super::schema::AppTables;

/// How an event names its business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusinessRef<'a> {
    /// `businesses.stripe_customer_id`.
    Customer(&'a str),
    /// `businesses.stripe_subscription_id`.
    Subscription(&'a str),
    /// `businesses.id`, as text: the key may be any type.
    Key(&'a str),
    None,
}

impl<'a> BusinessRef<'a> {
    fn parts(self) -> [Option<&'a str>; 3] {
        match self {
            BusinessRef::Customer(c) => [Some(c), None, None],
            BusinessRef::Subscription(s) => [None, Some(s), None],
            BusinessRef::Key(k) => [None, None, Some(k)],
            BusinessRef::None => [None, None, None],
        }
    }
}

/// The business a [`BusinessRef`] names, as an SQL expression over parameters `$a`, `$b`,
/// `$c` (customer, subscription, key); each lookup runs only when its parameter is set.
fn business_of(a: u8, b: u8, c: u8) -> String {
    format!(
        "COALESCE(
            (SELECT id FROM businesses WHERE ${a}::text IS NOT NULL AND stripe_customer_id = ${a} LIMIT 1),
            (SELECT id FROM businesses WHERE ${b}::text IS NOT NULL AND stripe_subscription_id = ${b} LIMIT 1),
            (SELECT id FROM businesses WHERE ${c}::text IS NOT NULL AND id::text = ${c} LIMIT 1))"
    )
}

/// The statements whose shape depends on the application's tables.
#[derive(Debug, Clone)]
pub struct Statements {
    audit: String,
    call: String,
    message: String,
    /// The same effects for a whole batch at once.
    pub(crate) batch: BatchStatements,
}

impl Statements {
    pub fn new(tables: &AppTables) -> Self {
        // (column, value) pairs of optional columns, appended where present.
        fn optional<'a>(
            tables: &AppTables,
            table: &str,
            pairs: &[(&'a str, &'a str)],
        ) -> (String, String) {
            pairs
                .iter()
                .filter(|(column, _)| tables.has(table, column))
                .fold((String::new(), String::new()), |(cols, vals), (c, v)| {
                    (format!("{cols}, {c}"), format!("{vals}, {v}"))
                })
        }
        let business = business_of(6, 7, 8);
        let (audit_cols, audit_vals) = optional(
            tables,
            "audit_logs",
            &[
                ("business_id", business.as_str()),
                ("webhook_id", "$4"),
                ("source", "$5"),
            ],
        );
        let audit = format!(
            "INSERT INTO audit_logs (action, details, created_at{audit_cols})
             VALUES ($1, $2, $3{audit_vals})"
        );

        // The business the payload names by its key (as the runbook's handlers read
        // `payload.business_id`), else the one whose number the call or message reached.
        let by_phone = |phone: &str| {
            if tables.has("businesses", "phone_number") {
                format!("(SELECT id FROM businesses WHERE phone_number = {phone} LIMIT 1)")
            } else {
                "NULL".to_owned()
            }
        };
        let business_of = |key: &str, phone: &str| {
            format!(
                "COALESCE((SELECT id FROM businesses WHERE {key}::text IS NOT NULL AND id::text = {key} LIMIT 1),
                          {})",
                by_phone(phone)
            )
        };
        // A batch looks its keys up once (see `batch::keyed`).
        let batch_business_of = |phone: &str| {
            format!(
                "COALESCE((SELECT k.id FROM keyed k WHERE k.key = u.business_key LIMIT 1), {})",
                by_phone(phone)
            )
        };
        // A call moves forward only: initiated, answered, completed; events arrive in any order,
        // so each fills its own columns and the furthest status wins.
        let call_rank = |t: &str| {
            format!(
                "CASE {t}.status WHEN 'initiated' THEN 1 WHEN 'answered' THEN 2
                                 WHEN 'completed' THEN 3 ELSE 0 END"
            )
        };
        let call_merge = format!(
            "ON CONFLICT (call_id) DO UPDATE SET
                 business_id    = COALESCE(call_logs.business_id, EXCLUDED.business_id),
                 customer_phone = COALESCE(call_logs.customer_phone, EXCLUDED.customer_phone),
                 business_phone = COALESCE(call_logs.business_phone, EXCLUDED.business_phone),
                 call_type      = COALESCE(call_logs.call_type, EXCLUDED.call_type),
                 started_at     = COALESCE(call_logs.started_at, EXCLUDED.started_at),
                 answered_at    = COALESCE(call_logs.answered_at, EXCLUDED.answered_at),
                 ended_at       = COALESCE(call_logs.ended_at, EXCLUDED.ended_at),
                 hangup_cause   = COALESCE(call_logs.hangup_cause, EXCLUDED.hangup_cause),
                 status = CASE WHEN {} > {} THEN EXCLUDED.status ELSE call_logs.status END,
                 updated_at = now()",
            call_rank("EXCLUDED"),
            call_rank("call_logs"),
        );
        let call_columns =
            "INSERT INTO call_logs (call_id, business_id, customer_phone, business_phone,
                                    call_type, status, started_at, answered_at, ended_at,
                                    hangup_cause, created_at, updated_at)";
        let call = format!(
            "{call_columns}
             VALUES ($1, {}, $2, $3, $4, $5, $6, $7, $8, $9, now(), now())
             {call_merge}",
            business_of("$10", "$3"),
        );
        // Rows in call id order, so two batches upserting the same calls take them in one order.
        let call_many = format!(
            "WITH {}
             {call_columns}
             SELECT u.call_id, {}, u.customer_phone, u.business_phone, u.call_type, u.status,
                    u.started_at, u.answered_at, u.ended_at, u.hangup_cause, now(), now()
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[],
                         $10::text[])
                  AS u(call_id, customer_phone, business_phone, call_type, status, started_at,
                       answered_at, ended_at, hangup_cause, business_key)
             ORDER BY u.call_id
             {call_merge}",
            super::batch::keyed("$10::text[]"),
            batch_business_of("u.business_phone"),
        );

        // A message is received or sent first, then finalized with the carrier's word.
        let message_rank = |t: &str| {
            format!(
                "CASE WHEN {t}.status IS NULL THEN 0 WHEN {t}.status IN ('received', 'sent') THEN 1
                      ELSE 2 END"
            )
        };
        let (message_cols, message_vals) = optional(
            tables,
            "sms_logs",
            &[("completed_at", "$8"), ("updated_at", "now()")],
        );
        let (_, message_many_vals) = optional(
            tables,
            "sms_logs",
            &[("completed_at", "u.completed_at"), ("updated_at", "now()")],
        );
        let mut message_merge = String::new();
        if tables.has("sms_logs", "completed_at") {
            message_merge.push_str(
                ",\n completed_at = COALESCE(sms_logs.completed_at, EXCLUDED.completed_at)",
            );
        }
        if tables.has("sms_logs", "updated_at") {
            message_merge.push_str(",\n updated_at = now()");
        }
        let message_merge = format!(
            "ON CONFLICT (message_id) DO UPDATE SET
                 business_id    = COALESCE(sms_logs.business_id, EXCLUDED.business_id),
                 customer_phone = COALESCE(sms_logs.customer_phone, EXCLUDED.customer_phone),
                 business_phone = COALESCE(sms_logs.business_phone, EXCLUDED.business_phone),
                 message_type   = COALESCE(sms_logs.message_type, EXCLUDED.message_type),
                 content        = COALESCE(sms_logs.content, EXCLUDED.content),
                 received_at    = COALESCE(sms_logs.received_at, EXCLUDED.received_at),
                 status = CASE WHEN {} > {} THEN EXCLUDED.status ELSE sms_logs.status END
                 {message_merge}",
            message_rank("EXCLUDED"),
            message_rank("sms_logs"),
        );
        let message_columns = format!(
            "INSERT INTO sms_logs (message_id, business_id, customer_phone, business_phone,
                                   message_type, content, status, received_at,
                                   created_at{message_cols})"
        );
        let message = format!(
            "{message_columns}
             VALUES ($1, {}, $2, $3, $4, $5, $6, $7, now(){message_vals})
             {message_merge}",
            business_of("$9", "$3"),
        );
        let message_many = format!(
            "WITH {}
             {message_columns}
             SELECT u.message_id, {}, u.customer_phone, u.business_phone, u.message_type,
                    u.content, u.status, u.received_at, now(){message_many_vals}
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::text[])
                  AS u(message_id, customer_phone, business_phone, message_type, content,
                       status, received_at, completed_at, business_key)
             ORDER BY u.message_id
             {message_merge}",
            super::batch::keyed("$9::text[]"),
            batch_business_of("u.business_phone"),
        );
        let batch = BatchStatements::new(tables, &call_many, &message_many);
        Statements {
            audit,
            call,
            message,
            batch,
        }
    }
}

impl Default for Statements {
    /// For the tables as hookd creates them.
    fn default() -> Self {
        Statements::new(&AppTables::full())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The business row now reflects the event.
    Updated,
    /// The business already holds newer state; the event was recorded but changed nothing.
    Stale,
    /// No business is linked to the customer (or subscription) yet.
    NoBusiness,
}

/// What an `UPDATE businesses` did: nothing means no business matched.
fn applied(update: &sqlx::postgres::PgQueryResult) -> Applied {
    if update.rows_affected() == 0 {
        Applied::NoBusiness
    } else {
        Applied::Updated
    }
}

/// Whether an event created at `created` carries the newest Stripe state of `customer_id`,
/// and if so records it as the newest. Callers hold the customer's business rows
/// ([`lock_customer`]), so two events about one customer are judged one after the other.
async fn newest_state(
    conn: &mut PgConnection,
    customer_id: &str,
    created: DateTime<Utc>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "WITH fresh AS (
             INSERT INTO stripe_state AS s (customer_id, state_at) VALUES ($1, $2)
             ON CONFLICT (customer_id) DO UPDATE SET state_at = EXCLUDED.state_at
             WHERE s.state_at <= EXCLUDED.state_at
             RETURNING 1
         )
         SELECT EXISTS (SELECT FROM fresh)",
    )
    .bind(customer_id)
    .bind(created)
    .fetch_one(conn)
    .await
}

/// Locks the businesses of a Stripe customer, before anything else an event touches: every
/// Stripe path takes the business row first and the customer's `stripe_state` row after it,
/// so two batches about one customer cannot deadlock. `NO KEY UPDATE` because no key changes:
/// a plain `FOR UPDATE` conflicts with the `KEY SHARE` locks that inserts into `audit_logs`
/// and `call_logs` take through their foreign keys. False when the customer has no business.
async fn lock_customer(conn: &mut PgConnection, customer_id: &str) -> sqlx::Result<bool> {
    let locked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT FROM businesses WHERE stripe_customer_id = $1 FOR NO KEY UPDATE
         ) b",
    )
    .bind(customer_id)
    .fetch_one(conn)
    .await?;
    Ok(locked > 0)
}

/// The Stripe subscription state an event carries.
#[derive(Debug, Clone)]
pub struct SubscriptionChange<'a> {
    pub customer_id: &'a str,
    pub subscription_id: &'a str,
    pub status: &'a str,
    pub plan: Option<&'a str>,
    pub start_date: Option<DateTime<Utc>>,
    /// The event's `created`: what orders Stripe's out-of-order deliveries.
    pub event_created: DateTime<Utc>,
}

/// As the runbook's subscription handlers: the business of the customer takes the
/// subscription's id, status and plan (and its start date, where the event has one).
pub async fn apply_subscription(
    conn: &mut PgConnection,
    change: &SubscriptionChange<'_>,
) -> sqlx::Result<Applied> {
    if !lock_customer(conn, change.customer_id).await? {
        return Ok(Applied::NoBusiness);
    }
    if !newest_state(conn, change.customer_id, change.event_created).await? {
        return Ok(Applied::Stale);
    }
    let updated = sqlx::query(
        "UPDATE businesses
         SET stripe_subscription_id = $2, subscription_status = $3,
             subscription_plan = COALESCE($4, subscription_plan),
             subscription_start_date = COALESCE($5, subscription_start_date),
             updated_at = now()
         WHERE stripe_customer_id = $1",
    )
    .bind(change.customer_id)
    .bind(change.subscription_id)
    .bind(change.status)
    .bind(change.plan)
    .bind(change.start_date)
    .execute(conn)
    .await?;
    Ok(applied(&updated))
}

/// The state an invoice event carries.
#[derive(Debug, Clone)]
pub struct InvoiceOutcome<'a> {
    pub customer_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    /// When the payment went through; `None` for a failed payment.
    pub paid_at: Option<DateTime<Utc>>,
    pub event_created: DateTime<Utc>,
}

impl<'a> InvoiceOutcome<'a> {
    /// The customer where the invoice names one, else its subscription.
    pub fn business(&self) -> BusinessRef<'a> {
        match (self.customer_id, self.subscription_id) {
            (Some(c), _) => BusinessRef::Customer(c),
            (None, Some(s)) => BusinessRef::Subscription(s),
            (None, None) => BusinessRef::None,
        }
    }
}

/// A paid invoice moves `last_payment_date` forward (never back); a failed one marks the
/// subscription `past_due` unless newer state has already been applied.
pub async fn apply_invoice(
    conn: &mut PgConnection,
    invoice: &InvoiceOutcome<'_>,
) -> sqlx::Result<Applied> {
    let by_customer = "stripe_customer_id = $1";
    let by_subscription = "stripe_subscription_id = $1";
    let (key, filter) = match invoice.business() {
        BusinessRef::Customer(c) => (c, by_customer),
        BusinessRef::Subscription(s) => (s, by_subscription),
        BusinessRef::Key(_) | BusinessRef::None => return Ok(Applied::NoBusiness),
    };
    if let Some(paid_at) = invoice.paid_at {
        let updated = sqlx::query(&format!(
            "UPDATE businesses
             SET last_payment_date = GREATEST(last_payment_date, $2),
                 stripe_subscription_id = COALESCE(stripe_subscription_id, $3),
                 updated_at = now()
             WHERE {filter}"
        ))
        .bind(key)
        .bind(paid_at)
        .bind(invoice.subscription_id)
        .execute(conn)
        .await?;
        return Ok(applied(&updated));
    }
    // Staleness is judged per customer, as for subscription events.
    let customer = match invoice.customer_id {
        Some(c) => c.to_owned(),
        None => {
            let found: Option<Option<String>> = sqlx::query_scalar(
                "SELECT stripe_customer_id FROM businesses WHERE stripe_subscription_id = $1 LIMIT 1",
            )
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
            match found.flatten() {
                Some(c) => c,
                None => return Ok(Applied::NoBusiness),
            }
        }
    };
    if !lock_customer(conn, &customer).await? {
        return Ok(Applied::NoBusiness);
    }
    if !newest_state(conn, &customer, invoice.event_created).await? {
        return Ok(Applied::Stale);
    }
    let updated = sqlx::query(
        "UPDATE businesses SET subscription_status = 'past_due', updated_at = now()
         WHERE stripe_customer_id = $1",
    )
    .bind(&customer)
    .execute(conn)
    .await?;
    Ok(applied(&updated))
}

/// An `audit_logs` entry, as the runbook's handlers write them.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub action: &'a str,
    /// A JSON object.
    pub details: &'a serde_json::value::RawValue,
    /// The business it concerns; the entry is kept without one if none matches.
    pub business: BusinessRef<'a>,
    /// The event in hookd's `events`.
    pub webhook_id: i64,
    pub source: crate::Source,
}

pub async fn insert_audit(
    conn: &mut PgConnection,
    statements: &Statements,
    entry: &AuditEntry<'_>,
) -> sqlx::Result<()> {
    let [customer, subscription, key] = entry.business.parts();
    sqlx::query(&statements.audit)
        .bind(entry.action)
        .bind(sqlx::types::Json(entry.details))
        .bind(Utc::now())
        .bind(entry.webhook_id)
        .bind(entry.source.as_str())
        .bind(customer)
        .bind(subscription)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// One Telnyx call event. Each fills only its own columns and the furthest status wins, so
/// any arrival order converges to the same row.
#[derive(Debug, Clone)]
pub struct CallEvent<'a> {
    /// Telnyx's `call_control_id`.
    pub call_id: &'a str,
    pub customer_phone: Option<&'a str>,
    /// The number of the business the call belongs to: how the row finds its business.
    pub business_phone: Option<&'a str>,
    /// `inbound` or `outbound`.
    pub call_type: Option<&'a str>,
    pub status: &'a str,
    pub started_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hangup_cause: Option<&'a str>,
    /// `businesses.id` as text, where the payload names it.
    pub business_key: Option<Cow<'a, str>>,
}

pub async fn upsert_call(
    conn: &mut PgConnection,
    statements: &Statements,
    call: &CallEvent<'_>,
) -> sqlx::Result<()> {
    sqlx::query(&statements.call)
        .bind(call.call_id)
        .bind(call.customer_phone)
        .bind(call.business_phone)
        .bind(call.call_type)
        .bind(call.status)
        .bind(call.started_at)
        .bind(call.answered_at)
        .bind(call.ended_at)
        .bind(call.hangup_cause)
        .bind(call.business_key.as_deref())
        .execute(conn)
        .await?;
    Ok(())
}

/// One Telnyx message event; converges like [`CallEvent`].
#[derive(Debug, Clone)]
pub struct MessageEvent<'a> {
    pub message_id: &'a str,
    pub customer_phone: Option<&'a str>,
    /// The number of the business the message belongs to: how the row finds its business.
    pub business_phone: Option<&'a str>,
    /// `inbound` or `outbound`.
    pub message_type: Option<&'a str>,
    pub content: Option<&'a str>,
    pub status: &'a str,
    /// When it was received (inbound) or sent (outbound).
    pub received_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `businesses.id` as text, where the payload names it.
    pub business_key: Option<Cow<'a, str>>,
}

pub async fn upsert_message(
    conn: &mut PgConnection,
    statements: &Statements,
    msg: &MessageEvent<'_>,
) -> sqlx::Result<()> {
    sqlx::query(&statements.message)
        .bind(msg.message_id)
        .bind(msg.customer_phone)
        .bind(msg.business_phone)
        .bind(msg.message_type)
        .bind(msg.content)
        .bind(msg.status)
        .bind(msg.received_at)
        .bind(msg.completed_at)
        .bind(msg.business_key.as_deref())
        .execute(conn)
        .await?;
    Ok(())
}
