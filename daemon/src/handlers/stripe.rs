//! Stripe: subscription lifecycle and invoice payments, onto `businesses`.

use common::Source;
use common::db::batch::{Audit, StripeEffect, StripeKind};
use common::db::business::{
    self, Applied, AuditEntry, InvoiceOutcome, Statements, SubscriptionChange,
};
use common::db::events::ClaimedEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::{Effect, Fields, HandlerError, Outcome};

pub fn plan(event: &ClaimedEvent) -> Result<Effect<'_>, HandlerError> {
    let fields = Fields(&event.payload);
    let created = fields.unix_time("/created")?;
    let plan = fields
        .opt_str("/data/object/items/data/0/price/id")
        .or_else(|| fields.opt_str("/data/object/plan/id"));
    let effect = match event.event_type.as_str() {
        kind @ ("customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted") => {
            let customer_id = fields.str("/data/object/customer")?;
            let subscription_id = fields.str("/data/object/id")?;
            let status = fields.str("/data/object/status")?;
            let (action, details) = match kind {
                "customer.subscription.created" => (
                    "subscription_created",
                    json!({
                        "subscription_id": subscription_id,
                        "customer_id": customer_id,
                        "plan_id": plan,
                    }),
                ),
                "customer.subscription.updated" => (
                    "subscription_updated",
                    json!({
                        "subscription_id": subscription_id,
                        "status": status,
                        "plan_id": plan,
                    }),
                ),
                _ => (
                    "subscription_deleted",
                    json!({
                        "subscription_id": subscription_id,
                        "customer_id": customer_id,
                        "status": status,
                    }),
                ),
            };
            StripeEffect {
                kind: StripeKind::Subscription,
                customer_id: Some(customer_id),
                subscription_id: Some(subscription_id),
                status: Some(status),
                plan,
                // The runbook takes the subscription's `created`; `start_date` is when billing
                // began, where the event has it.
                start_date: fields
                    .opt_unix_time("/data/object/start_date")
                    .or_else(|| fields.opt_unix_time("/data/object/created")),
                paid_at: None,
                created,
                audit: audit(event, action, details, Some(customer_id), None),
            }
        }
        kind @ ("invoice.payment_succeeded" | "invoice.payment_failed") => {
            // Newer API versions moved the subscription under `parent`.
            let subscription_id = fields.opt_str("/data/object/subscription").or_else(|| {
                fields.opt_str("/data/object/parent/subscription_details/subscription")
            });
            let customer_id = fields.opt_str("/data/object/customer");
            if customer_id.is_none() && subscription_id.is_none() {
                return Err(HandlerError::Permanent(
                    "invoice has neither a customer nor a subscription".into(),
                ));
            }
            let paid = kind == "invoice.payment_succeeded";
            let paid_at = paid.then(|| {
                fields
                    .opt_unix_time("/data/object/status_transitions/paid_at")
                    .unwrap_or(created)
            });
            let amount = if paid { "amount_paid" } else { "amount_due" };
            let details = json!({
                "invoice_id": fields.opt_str("/data/object/id"),
                "subscription_id": subscription_id,
                "amount": event.payload.pointer(&format!("/data/object/{amount}")),
                "currency": fields.opt_str("/data/object/currency"),
            });
            let action = if paid {
                "payment_succeeded"
            } else {
                "payment_failed"
            };
            // The entry names the customer where the invoice does, else its subscription.
            let (audit_customer, audit_subscription) = match customer_id {
                Some(c) => (Some(c), None),
                None => (None, subscription_id),
            };
            StripeEffect {
                kind: if paid {
                    StripeKind::Paid
                } else {
                    StripeKind::Failed
                },
                customer_id,
                subscription_id,
                status: None,
                plan: None,
                start_date: None,
                paid_at,
                created,
                audit: audit(event, action, details, audit_customer, audit_subscription),
            }
        }
        _ => return Ok(Effect::Unhandled),
    };
    Ok(Effect::Stripe(effect))
}

fn audit<'e>(
    event: &'e ClaimedEvent,
    action: &'e str,
    mut details: serde_json::Value,
    customer: Option<&'e str>,
    subscription: Option<&'e str>,
) -> Audit<'e> {
    details["stripe_event_id"] = json!(event.event_id);
    Audit {
        action,
        details,
        customer,
        subscription,
        key: None,
        webhook_id: event.id,
        source: Source::Stripe,
    }
}

/// Why an event whose business is not linked yet is tried again later.
pub fn no_business(effect: &StripeEffect<'_>) -> HandlerError {
    let who = effect
        .customer_id
        .map(|c| format!("customer {c}"))
        .unwrap_or_else(|| "its subscription".into());
    HandlerError::Retryable(format!("no business is linked to Stripe {who}"))
}

/// Applies one event on its own: the business first, then its audit entry.
pub async fn apply_one(
    conn: &mut PgConnection,
    statements: &Statements,
    effect: &StripeEffect<'_>,
) -> Result<Outcome, HandlerError> {
    let applied = match (
        effect.kind,
        effect.customer_id,
        effect.subscription_id,
        effect.status,
    ) {
        (StripeKind::Subscription, Some(customer_id), Some(subscription_id), Some(status)) => {
            let change = SubscriptionChange {
                customer_id,
                subscription_id,
                status,
                plan: effect.plan,
                start_date: effect.start_date,
                event_created: effect.created,
            };
            business::apply_subscription(conn, &change).await?
        }
        (StripeKind::Subscription, ..) => {
            return Err(HandlerError::Permanent(
                "subscription event without its customer, id or status".into(),
            ));
        }
        (StripeKind::Paid | StripeKind::Failed, ..) => {
            let invoice = InvoiceOutcome {
                customer_id: effect.customer_id,
                subscription_id: effect.subscription_id,
                paid_at: effect.paid_at,
                event_created: effect.created,
            };
            business::apply_invoice(conn, &invoice).await?
        }
    };
    let mut details = effect.audit.details.clone();
    match applied {
        Applied::Updated => {}
        Applied::Stale => details["stale"] = json!(true),
        Applied::NoBusiness => return Err(no_business(effect)),
    }
    business::insert_audit(
        conn,
        statements,
        &AuditEntry {
            action: effect.audit.action,
            details: &details,
            business: effect.audit.business(),
            webhook_id: effect.audit.webhook_id,
            source: Source::Stripe,
        },
    )
    .await?;
    Ok(Outcome::Applied)
}
