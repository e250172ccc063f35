//! Stripe: subscription lifecycle and invoice payments, onto `businesses`.

use common::Source;
use common::db::business::{
    self, Applied, AuditEntry, BusinessRef, InvoiceOutcome, Statements, SubscriptionChange,
};
use common::db::events::ClaimedEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::{Fields, HandlerError, Outcome};

pub async fn apply(
    conn: &mut PgConnection,
    statements: &Statements,
    event: &ClaimedEvent,
) -> Result<Outcome, HandlerError> {
    let fields = Fields(&event.payload);
    let created = fields.unix_time("/created")?;
    let plan = fields
        .opt_str("/data/object/items/data/0/price/id")
        .or_else(|| fields.opt_str("/data/object/plan/id"));
    let (applied, business, action, mut details) = match event.event_type.as_str() {
        kind @ ("customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted") => {
            let change = SubscriptionChange {
                customer_id: fields.str("/data/object/customer")?,
                subscription_id: fields.str("/data/object/id")?,
                status: fields.str("/data/object/status")?,
                plan,
                // The runbook takes the subscription's `created`; `start_date` is when billing
                // began, where the event has it.
                start_date: fields
                    .opt_unix_time("/data/object/start_date")
                    .or_else(|| fields.opt_unix_time("/data/object/created")),
                event_created: created,
            };
            let applied = business::apply_subscription(conn, &change).await?;
            let (action, details) = match kind {
                "customer.subscription.created" => (
                    "subscription_created",
                    json!({
                        "subscription_id": change.subscription_id,
                        "customer_id": change.customer_id,
                        "plan_id": plan,
                    }),
                ),
                "customer.subscription.updated" => (
                    "subscription_updated",
                    json!({
                        "subscription_id": change.subscription_id,
                        "status": change.status,
                        "plan_id": plan,
                    }),
                ),
                _ => (
                    "subscription_deleted",
                    json!({
                        "subscription_id": change.subscription_id,
                        "customer_id": change.customer_id,
                        "status": change.status,
                    }),
                ),
            };
            (
                applied,
                BusinessRef::Customer(change.customer_id),
                action,
                details,
            )
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
            let paid_at = (kind == "invoice.payment_succeeded").then(|| {
                fields
                    .opt_unix_time("/data/object/status_transitions/paid_at")
                    .unwrap_or(created)
            });
            let invoice = InvoiceOutcome {
                customer_id,
                subscription_id,
                paid_at,
                event_created: created,
            };
            let applied = business::apply_invoice(conn, &invoice).await?;
            let paid = kind == "invoice.payment_succeeded";
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
            (applied, invoice.business(), action, details)
        }
        _ => return Ok(Outcome::Unhandled),
    };
    match applied {
        Applied::Updated => {}
        Applied::Stale => details["stale"] = json!(true),
        Applied::NoBusiness => {
            let who = fields
                .opt_str("/data/object/customer")
                .map(|c| format!("customer {c}"))
                .unwrap_or_else(|| "its subscription".into());
            return Err(HandlerError::Retryable(format!(
                "no business is linked to Stripe {who}"
            )));
        }
    }
    details["stripe_event_id"] = json!(event.event_id);
    business::insert_audit(
        conn,
        statements,
        &AuditEntry {
            action,
            details: &details,
            business,
            webhook_id: event.id,
            source: Source::Stripe,
        },
    )
    .await?;
    Ok(Outcome::Applied)
}
