//! Stripe: subscription lifecycle and invoice payments, onto `businesses`.

use common::Source;
use common::db::business::{self, Applied, InvoiceOutcome, SubscriptionChange};
use common::db::events::ClaimedEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::{Fields, HandlerError, Outcome};

pub async fn apply(conn: &mut PgConnection, event: &ClaimedEvent) -> Result<Outcome, HandlerError> {
    let fields = Fields(&event.payload);
    let created = fields.unix_time("/created")?;
    let applied = match event.event_type.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            let change = SubscriptionChange {
                customer_id: fields.str("/data/object/customer")?,
                subscription_id: fields.str("/data/object/id")?,
                status: fields.str("/data/object/status")?,
                plan_id: fields
                    .opt_str("/data/object/items/data/0/price/id")
                    .or_else(|| fields.opt_str("/data/object/plan/id")),
                started_at: fields.opt_unix_time("/data/object/start_date"),
                event_created: created,
            };
            business::apply_subscription(conn, &change).await?
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
            business::apply_invoice(conn, &invoice).await?
        }
        _ => return Ok(Outcome::Unhandled),
    };
    let (business_id, stale) = match applied {
        Applied::Updated { business_id } => (business_id, false),
        Applied::Stale { business_id } => (business_id, true),
        Applied::NoBusiness => {
            let who = fields
                .opt_str("/data/object/customer")
                .map(|c| format!("customer {c}"))
                .unwrap_or_else(|| "its subscription".into());
            return Err(HandlerError::Retryable(format!(
                "no business is linked to Stripe {who}"
            )));
        }
    };
    let details = json!({
        "stripe_event_id": event.event_id,
        "object_id": fields.opt_str("/data/object/id"),
        "status": fields.opt_str("/data/object/status"),
        "stale": stale,
    });
    business::insert_audit(
        conn,
        Some(business_id),
        event.id,
        Source::Stripe,
        &event.event_type,
        &details,
    )
    .await?;
    Ok(Outcome::Applied)
}
