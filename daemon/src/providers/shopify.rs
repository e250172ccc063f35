//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>` keyed by the app's
//! client secret (`SHOPIFY_WEBHOOK_SECRET`); the idempotency key is `X-Shopify-Webhook-Id`
//! (or `X-Shopify-Event-Id`), the type `X-Shopify-Topic` (`orders/create`, ...).

use std::sync::Arc;

use common::Source;
use serde_json::{Value, json};

use super::hmac::{Algorithm, Encoding, Hmac, Spec};
use super::{Field, Provider, SampleArgs};
use crate::config::{ConfigError, Sources};

pub fn load(sources: &Sources) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let Some(secret) = sources.secret("SHOPIFY_WEBHOOK_SECRET")? else {
        return Ok(None);
    };
    Ok(Some(Arc::new(Hmac::new(spec(), secret.into()))))
}

pub fn spec() -> Spec {
    Spec {
        source: Source::register("shopify").expect("a valid name"),
        header: "x-shopify-hmac-sha256",
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Base64,
        prefix: "",
        key: Field::Header(&["x-shopify-webhook-id", "x-shopify-event-id"]),
        event_type: Field::Header(&["x-shopify-topic"]),
        timestamp: None,
        signed: "{body}",
        sample,
    }
}

fn sample(_: &str, _: &SampleArgs) -> Value {
    json!({
        "id": 820982911946154508_u64,
        "email": "jon@example.com",
        "total_price": "49.00",
        "currency": "USD",
        "financial_status": "paid",
        "line_items": [{"title": "Pro plan", "quantity": 1, "price": "49.00"}],
    })
}

#[cfg(test)]
mod tests {
    use super::super::header_map;
    use super::*;

    /// Computed independently: `printf '{"id":1}' | openssl dgst -sha256 -hmac secret -binary | base64`.
    #[test]
    fn an_independently_computed_signature_verifies() {
        let shopify = Hmac::new(spec(), "secret".to_owned().into());
        let headers = header_map(&[(
            "x-shopify-hmac-sha256".into(),
            "A971iWIMgT8Zj9A9eWfikrFj7wQ16/Qwcc4OlRl2PLc=".into(),
        )]);
        let verdict = shopify.verify(&headers, br#"{"id":1}"#, 0);
        assert_eq!(verdict, Ok(()));
    }
}
