//! The business tables the built-in handlers write. Every function takes the caller's
//! connection, so the effect commits in the same transaction that marks the event succeeded.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// The Stripe subscription state an event carries.
#[derive(Debug, Clone)]
pub struct SubscriptionChange<'a> {
    pub customer_id: &'a str,
    pub subscription_id: &'a str,
    pub status: &'a str,
    pub plan_id: Option<&'a str>,
    pub started_at: Option<DateTime<Utc>>,
    /// The event's `created`: what orders Stripe's out-of-order deliveries.
    pub event_created: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The business row now reflects the event.
    Updated { business_id: i64 },
    /// The business already holds newer state; the event was recorded but changed nothing.
    Stale { business_id: i64 },
    /// No business is linked to the customer (or subscription) yet.
    NoBusiness,
}

/// Locks the business a Stripe event is about and returns its id and the `created` of the
/// newest state applied to it. `NO KEY UPDATE` because no key changes: a plain `FOR UPDATE`
/// conflicts with the `KEY SHARE` locks that other workers' inserts into `audit_logs` and
/// `call_logs` take through their foreign keys, and the two deadlocked under mixed load.
async fn lock_stripe_business(
    conn: &mut PgConnection,
    customer_id: Option<&str>,
    subscription_id: Option<&str>,
) -> sqlx::Result<Option<(i64, Option<DateTime<Utc>>)>> {
    sqlx::query_as(
        "SELECT id, stripe_state_at FROM businesses
         WHERE stripe_customer_id = $1
            OR ($1::text IS NULL AND stripe_subscription_id = $2)
         ORDER BY stripe_customer_id = $1 DESC NULLS LAST
         LIMIT 1
         FOR NO KEY UPDATE",
    )
    .bind(customer_id)
    .bind(subscription_id)
    .fetch_optional(conn)
    .await
}

pub async fn apply_subscription(
    conn: &mut PgConnection,
    change: &SubscriptionChange<'_>,
) -> sqlx::Result<Applied> {
    let Some((business_id, state_at)) =
        lock_stripe_business(conn, Some(change.customer_id), None).await?
    else {
        return Ok(Applied::NoBusiness);
    };
    if state_at.is_some_and(|at| at > change.event_created) {
        return Ok(Applied::Stale { business_id });
    }
    sqlx::query(
        "UPDATE businesses
         SET stripe_subscription_id = $2, subscription_status = $3,
             plan_id = COALESCE($4, plan_id),
             subscription_started_at = COALESCE($5, subscription_started_at),
             stripe_state_at = $6, updated_at = now()
         WHERE id = $1",
    )
    .bind(business_id)
    .bind(change.subscription_id)
    .bind(change.status)
    .bind(change.plan_id)
    .bind(change.started_at)
    .bind(change.event_created)
    .execute(conn)
    .await?;
    Ok(Applied::Updated { business_id })
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

/// A paid invoice moves `last_payment_at` forward (never back); a failed one marks the
/// subscription `past_due` unless newer state has already been applied.
pub async fn apply_invoice(
    conn: &mut PgConnection,
    invoice: &InvoiceOutcome<'_>,
) -> sqlx::Result<Applied> {
    let Some((business_id, state_at)) =
        lock_stripe_business(conn, invoice.customer_id, invoice.subscription_id).await?
    else {
        return Ok(Applied::NoBusiness);
    };
    if let Some(paid_at) = invoice.paid_at {
        sqlx::query(
            "UPDATE businesses
             SET last_payment_at = GREATEST(last_payment_at, $2),
                 stripe_subscription_id = COALESCE(stripe_subscription_id, $3),
                 updated_at = now()
             WHERE id = $1",
        )
        .bind(business_id)
        .bind(paid_at)
        .bind(invoice.subscription_id)
        .execute(conn)
        .await?;
        return Ok(Applied::Updated { business_id });
    }
    if state_at.is_some_and(|at| at > invoice.event_created) {
        return Ok(Applied::Stale { business_id });
    }
    sqlx::query(
        "UPDATE businesses
         SET subscription_status = 'past_due', stripe_state_at = $2, updated_at = now()
         WHERE id = $1",
    )
    .bind(business_id)
    .bind(invoice.event_created)
    .execute(conn)
    .await?;
    Ok(Applied::Updated { business_id })
}

/// Adds an audit entry. `business_id` is kept only if that business exists: a sender may
/// name one that is gone, and the entry is worth keeping anyway.
pub async fn insert_audit(
    conn: &mut PgConnection,
    business_id: Option<i64>,
    webhook_id: i64,
    source: crate::Source,
    action: &str,
    details: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_logs (business_id, webhook_id, source, action, details)
         VALUES ((SELECT id FROM businesses WHERE id = $1), $2, $3, $4, $5)",
    )
    .bind(business_id)
    .bind(webhook_id)
    .bind(source.as_str())
    .bind(action)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// One Telnyx call event. Each stage fills only its own columns and the furthest stage decides
/// the status, so any arrival order converges to the same row.
#[derive(Debug, Clone)]
pub struct CallEvent<'a> {
    pub call_control_id: &'a str,
    /// The number of the business the call belongs to, if it is one of ours.
    pub business_phone: Option<&'a str>,
    pub direction: Option<&'a str>,
    pub from_number: Option<&'a str>,
    pub to_number: Option<&'a str>,
    pub stage: i16,
    pub status: &'a str,
    pub started_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hangup_cause: Option<&'a str>,
}

pub async fn upsert_call(conn: &mut PgConnection, call: &CallEvent<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO call_logs (call_control_id, business_id, direction, from_number, to_number,
                                stage, status, started_at, answered_at, ended_at, hangup_cause)
         VALUES ($1, (SELECT id FROM businesses WHERE phone_number = $2),
                 $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (call_control_id) DO UPDATE SET
             business_id  = COALESCE(call_logs.business_id, EXCLUDED.business_id),
             direction    = COALESCE(call_logs.direction, EXCLUDED.direction),
             from_number  = COALESCE(call_logs.from_number, EXCLUDED.from_number),
             to_number    = COALESCE(call_logs.to_number, EXCLUDED.to_number),
             started_at   = COALESCE(call_logs.started_at, EXCLUDED.started_at),
             answered_at  = COALESCE(call_logs.answered_at, EXCLUDED.answered_at),
             ended_at     = COALESCE(call_logs.ended_at, EXCLUDED.ended_at),
             hangup_cause = COALESCE(call_logs.hangup_cause, EXCLUDED.hangup_cause),
             status = CASE WHEN EXCLUDED.stage > call_logs.stage
                           THEN EXCLUDED.status ELSE call_logs.status END,
             stage  = GREATEST(call_logs.stage, EXCLUDED.stage),
             updated_at = now()",
    )
    .bind(call.call_control_id)
    .bind(call.business_phone)
    .bind(call.direction)
    .bind(call.from_number)
    .bind(call.to_number)
    .bind(call.stage)
    .bind(call.status)
    .bind(call.started_at)
    .bind(call.answered_at)
    .bind(call.ended_at)
    .bind(call.hangup_cause)
    .execute(conn)
    .await?;
    Ok(())
}

/// One Telnyx message event; converges like [`CallEvent`].
#[derive(Debug, Clone)]
pub struct MessageEvent<'a> {
    pub message_id: &'a str,
    /// The number of the business the message belongs to, if it is one of ours.
    pub business_phone: Option<&'a str>,
    pub direction: Option<&'a str>,
    pub from_number: Option<&'a str>,
    pub to_number: Option<&'a str>,
    pub body: Option<&'a str>,
    pub stage: i16,
    pub status: &'a str,
    pub sent_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

pub async fn upsert_message(conn: &mut PgConnection, msg: &MessageEvent<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sms_logs (message_id, business_id, direction, from_number, to_number, body,
                               stage, status, sent_at, completed_at)
         VALUES ($1, (SELECT id FROM businesses WHERE phone_number = $2),
                 $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (message_id) DO UPDATE SET
             business_id  = COALESCE(sms_logs.business_id, EXCLUDED.business_id),
             direction    = COALESCE(sms_logs.direction, EXCLUDED.direction),
             from_number  = COALESCE(sms_logs.from_number, EXCLUDED.from_number),
             to_number    = COALESCE(sms_logs.to_number, EXCLUDED.to_number),
             body         = COALESCE(sms_logs.body, EXCLUDED.body),
             sent_at      = COALESCE(sms_logs.sent_at, EXCLUDED.sent_at),
             completed_at = COALESCE(sms_logs.completed_at, EXCLUDED.completed_at),
             status = CASE WHEN EXCLUDED.stage > sms_logs.stage
                           THEN EXCLUDED.status ELSE sms_logs.status END,
             stage  = GREATEST(sms_logs.stage, EXCLUDED.stage),
             updated_at = now()",
    )
    .bind(msg.message_id)
    .bind(msg.business_phone)
    .bind(msg.direction)
    .bind(msg.from_number)
    .bind(msg.to_number)
    .bind(msg.body)
    .bind(msg.stage)
    .bind(msg.status)
    .bind(msg.sent_at)
    .bind(msg.completed_at)
    .execute(conn)
    .await?;
    Ok(())
}
