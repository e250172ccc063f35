//! Stripe: subscription lifecycle and invoice payments, onto `businesses`.

use common::Source;
use common::db::batch::{Audit, StripeEffect, StripeKind};
use common::db::business::{
    self, Applied, AuditEntry, InvoiceOutcome, Statements, SubscriptionChange,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::PgConnection;

use super::fields::{First, Int, Obj, Text};
use super::{Effect, Event, HandlerError, Outcome, required, unix_time};

/// What the handlers read of a Stripe event.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    created: Int,
    data: Obj<Data>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Data {
    object: Obj<Object>,
}

/// The subscription or invoice.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Object {
    id: Text,
    customer: Text,
    subscription: Text,
    status: Text,
    currency: Text,
    items: Obj<Items>,
    plan: Obj<Id>,
    start_date: Int,
    created: Int,
    status_transitions: Obj<Transitions>,
    /// Copied into the audit entry as they are, whatever their type.
    amount_paid: Option<serde_json::Value>,
    amount_due: Option<serde_json::Value>,
    parent: Obj<Parent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Items {
    data: First<Item>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item {
    price: Obj<Id>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Id {
    id: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Transitions {
    paid_at: Int,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Parent {
    subscription_details: Obj<SubscriptionDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SubscriptionDetails {
    subscription: Text,
}

impl Payload {
    fn object(&self) -> &Object {
        &self.data.0.object.0
    }

    /// The business row the event locks: its customer's, else its subscription's.
    pub fn row_key(&self) -> Option<&str> {
        let object = self.object();
        object
            .customer
            .0
            .as_deref()
            .or(object.subscription.0.as_deref())
    }
}

/// An audit entry's `details`, by action, as the runbook's handlers write them.
#[derive(Serialize)]
#[serde(untagged)]
enum Details<'a> {
    SubscriptionCreated {
        subscription_id: &'a str,
        customer_id: &'a str,
        plan_id: Option<&'a str>,
        stripe_event_id: &'a str,
    },
    SubscriptionUpdated {
        subscription_id: &'a str,
        status: &'a str,
        plan_id: Option<&'a str>,
        stripe_event_id: &'a str,
    },
    SubscriptionDeleted {
        subscription_id: &'a str,
        customer_id: &'a str,
        status: &'a str,
        stripe_event_id: &'a str,
    },
    Invoice {
        invoice_id: Option<&'a str>,
        subscription_id: Option<&'a str>,
        amount: Option<&'a serde_json::Value>,
        currency: Option<&'a str>,
        stripe_event_id: &'a str,
    },
}

pub fn plan<'e>(event: &'e Event, payload: &'e Payload) -> Result<Effect<'e>, HandlerError> {
    let created = unix_time(payload.created.0).ok_or_else(|| {
        HandlerError::Permanent("payload has no unix timestamp at /created".into())
    })?;
    let object = payload.object();
    let text = |field: &'e Text| field.0.as_deref();
    let plan = text(&object.items.0.data.0.price.0.id).or(text(&object.plan.0.id));
    let stripe_event_id = event.event_id.as_str();
    let effect = match event.event_type.as_str() {
        kind @ ("customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted") => {
            let customer_id = required(text(&object.customer), "/data/object/customer")?;
            let subscription_id = required(text(&object.id), "/data/object/id")?;
            let status = required(text(&object.status), "/data/object/status")?;
            let (action, details) = match kind {
                "customer.subscription.created" => (
                    "subscription_created",
                    Details::SubscriptionCreated {
                        subscription_id,
                        customer_id,
                        plan_id: plan,
                        stripe_event_id,
                    },
                ),
                "customer.subscription.updated" => (
                    "subscription_updated",
                    Details::SubscriptionUpdated {
                        subscription_id,
                        status,
                        plan_id: plan,
                        stripe_event_id,
                    },
                ),
                _ => (
                    "subscription_deleted",
                    Details::SubscriptionDeleted {
                        subscription_id,
                        customer_id,
                        status,
                        stripe_event_id,
                    },
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
                start_date: unix_time(object.start_date.0).or(unix_time(object.created.0)),
                paid_at: None,
                created,
                audit: audit(event, action, &details, Some(customer_id), None),
            }
        }
        kind @ ("invoice.payment_succeeded" | "invoice.payment_failed") => {
            // Newer API versions moved the subscription under `parent`.
            let subscription_id = text(&object.subscription)
                .or(text(&object.parent.0.subscription_details.0.subscription));
            let customer_id = text(&object.customer);
            if customer_id.is_none() && subscription_id.is_none() {
                return Err(HandlerError::Permanent(
                    "invoice has neither a customer nor a subscription".into(),
                ));
            }
            let paid = kind == "invoice.payment_succeeded";
            let paid_at =
                paid.then(|| unix_time(object.status_transitions.0.paid_at.0).unwrap_or(created));
            let details = Details::Invoice {
                invoice_id: text(&object.id),
                subscription_id,
                amount: if paid {
                    object.amount_paid.as_ref()
                } else {
                    object.amount_due.as_ref()
                },
                currency: text(&object.currency),
                stripe_event_id,
            };
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
                audit: audit(event, action, &details, audit_customer, audit_subscription),
            }
        }
        _ => return Ok(Effect::Unhandled),
    };
    Ok(Effect::Stripe(effect))
}

fn audit<'e>(
    event: &'e Event,
    action: &'e str,
    details: &Details<'_>,
    customer: Option<&'e str>,
    subscription: Option<&'e str>,
) -> Audit<'e> {
    Audit {
        action,
        details: serde_json::value::to_raw_value(details)
            .expect("a struct of strings and JSON values serializes"),
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
    let stale: Box<RawValue>;
    let details = match applied {
        Applied::Updated => &*effect.audit.details,
        Applied::Stale => {
            stale = marked_stale(&effect.audit.details);
            &*stale
        }
        Applied::NoBusiness => return Err(no_business(effect)),
    };
    business::insert_audit(
        conn,
        statements,
        &AuditEntry {
            action: effect.audit.action,
            details,
            business: effect.audit.business(),
            webhook_id: effect.audit.webhook_id,
            source: Source::Stripe,
        },
    )
    .await?;
    Ok(Outcome::Applied)
}

/// `details` with `"stale": true`, as the batch statement marks an entry whose newer state won.
fn marked_stale(details: &RawValue) -> Box<RawValue> {
    let mut details: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(details.get()).expect("the handler wrote an object");
    details.insert("stale".into(), true.into());
    serde_json::value::to_raw_value(&details).expect("a JSON object serializes")
}
