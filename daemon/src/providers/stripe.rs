//! Stripe (payments): `Stripe-Signature: t=..,v1=..` over `"{t}.{body}"`, keyed by the whole
//! endpoint secret (`STRIPE_WEBHOOK_SECRET`); the event's `id` and `type` are in the body.

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::Utc;
use common::Source;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{Field, Outgoing, Provider, SampleArgs, SignError, header, token};
use crate::config::{ConfigError, Sources, invalid};
use crate::verify::{VerifyError, stripe};

const SECRET: &str = "STRIPE_WEBHOOK_SECRET";

/// Characters after `whsec_` in the shortest Stripe endpoint secret. Stripe's documentation
/// shows only `whsec_...` and states no length; the secrets it issues carry 32 characters
/// after the prefix (the dashboard's) or more (`stripe listen` prints 64 hex digits), so a
/// shorter one is a truncated paste or a made-up value that Stripe will never sign with.
const SECRET_MIN_CHARS: usize = 32;

#[derive(Debug)]
pub struct Stripe {
    secret: SecretString,
}

pub fn load(sources: &Sources) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let Some(secret) = sources.secret(SECRET)? else {
        return Ok(None);
    };
    let Some(rest) = secret.strip_prefix("whsec_") else {
        return Err(invalid(SECRET, "expected a secret starting with whsec_"));
    };
    if rest.is_empty() {
        return Err(invalid(
            SECRET,
            "the secret is only the whsec_ prefix; copy the endpoint's whole signing secret",
        ));
    }
    if rest.chars().count() < SECRET_MIN_CHARS {
        return Err(invalid(
            SECRET,
            format!(
                "shorter than Stripe's endpoint secrets (whsec_ and at least \
                 {SECRET_MIN_CHARS} characters); copy the endpoint's whole signing secret"
            ),
        ));
    }
    Ok(Some(Arc::new(Stripe {
        secret: secret.into(),
    })))
}

impl Provider for Stripe {
    fn source(&self) -> Source {
        Source::Stripe
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let secret = self.secret.expose_secret().as_bytes();
        stripe::verify(secret, header(headers, stripe::HEADER), body, now)
    }

    fn fields(&self) -> (Field, Field) {
        (Field::Pointer("/id".into()), Field::Pointer("/type".into()))
    }

    fn sign(&self, event: &Outgoing, now: i64) -> Result<Vec<(String, String)>, SignError> {
        let secret = self.secret.expose_secret().as_bytes();
        Ok(vec![(
            stripe::HEADER.into(),
            stripe::sign(secret, now, &event.body),
        )])
    }

    fn sample_types(&self) -> &[&'static str] {
        &[
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "invoice.payment_succeeded",
            "invoice.payment_failed",
        ]
    }

    fn sample(&self, event_type: &str, args: &SampleArgs) -> Outgoing {
        let id = if args.id.is_empty() {
            format!("evt_{}", token(24))
        } else {
            args.id.clone()
        };
        let body = serde_json::to_vec(&event(event_type, &id, &args.customer)).unwrap_or_default();
        Outgoing {
            key: id,
            event_type: event_type.to_owned(),
            body,
        }
    }
}

fn event(event_type: &str, id: &str, customer: &str) -> Value {
    let now = Utc::now().timestamp();
    let object = if event_type.starts_with("customer.subscription.") {
        let status = if event_type.ends_with(".deleted") {
            "canceled"
        } else {
            "active"
        };
        json!({
            "id": "sub_1QhookdDemo",
            "object": "subscription",
            "customer": customer,
            "status": status,
            "start_date": now - 86_400,
            "current_period_start": now - 86_400,
            "current_period_end": now + 29 * 86_400,
            "cancel_at_period_end": false,
            "items": {"object": "list", "data": [{
                "id": "si_hookdDemo",
                "object": "subscription_item",
                "price": {"id": "price_hookd_pro_monthly", "object": "price", "currency": "usd",
                          "unit_amount": 4900, "recurring": {"interval": "month"},
                          "product": "prod_hookdPro"}
            }]},
            "livemode": false
        })
    } else if event_type.starts_with("invoice.") {
        let paid = event_type == "invoice.payment_succeeded";
        json!({
            "id": format!("in_{}", token(14)),
            "object": "invoice",
            "customer": customer,
            "amount_due": 4900,
            "amount_paid": if paid { 4900 } else { 0 },
            "currency": "usd",
            "status": if paid { "paid" } else { "open" },
            "billing_reason": "subscription_cycle",
            "attempt_count": 1,
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": "sub_1QhookdDemo"}},
            "status_transitions": {"paid_at": if paid { Value::from(now) } else { Value::Null }},
            "livemode": false
        })
    } else {
        json!({"id": format!("obj_{}", token(14)), "object": "unknown"})
    };
    json!({
        "id": id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": now,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
    })
}
