//! Internal senders (`custom`): Standard Webhooks v1. `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (`v1,<base64>` list), HMAC-SHA256 over `"{id}.{ts}.{body}"` keyed by
//! the decoded `CUSTOM_WEBHOOK_SECRET`. The idempotency key is `webhook-id`, the type `type`.

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{SecondsFormat, Utc};
use common::Source;
use serde_json::json;

use super::{Field, Outgoing, Provider, SampleArgs, SignError, header, token};
use crate::config::{ConfigError, Sources, standard_secret};
use crate::verify::{VerifyError, standard};

#[derive(Debug)]
pub struct Standard {
    secret: standard::Secret,
}

impl Standard {
    pub fn new(secret: standard::Secret) -> Self {
        Standard { secret }
    }
}

pub fn load(sources: &Sources) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    Ok(standard_secret(sources, "CUSTOM_WEBHOOK_SECRET")?
        .map(|secret| Arc::new(Standard { secret }) as Arc<dyn Provider>))
}

impl Provider for Standard {
    fn source(&self) -> Source {
        Source::Custom
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        standard::verify(
            &self.secret,
            header(headers, standard::ID_HEADER),
            header(headers, standard::TIMESTAMP_HEADER),
            header(headers, standard::SIGNATURE_HEADER),
            body,
            now,
        )
    }

    fn fields(&self) -> (Field, Field) {
        (
            Field::Header(&[standard::ID_HEADER]),
            Field::Pointer("/type".into()),
        )
    }

    fn sign(&self, event: &Outgoing, now: i64) -> Result<Vec<(String, String)>, SignError> {
        Ok(vec![
            (standard::ID_HEADER.into(), event.key.clone()),
            (standard::TIMESTAMP_HEADER.into(), now.to_string()),
            (
                standard::SIGNATURE_HEADER.into(),
                standard::sign(&self.secret, &event.key, now, &event.body),
            ),
        ])
    }

    fn sample(&self, event_type: &str, args: &SampleArgs) -> Outgoing {
        let body = json!({
            "type": event_type,
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "data": {"actor": "hookd send", "note": "sample internal event"},
        });
        Outgoing {
            key: if args.id.is_empty() {
                format!("msg_{}", token(24))
            } else {
                args.id.clone()
            },
            event_type: event_type.to_owned(),
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }
}
