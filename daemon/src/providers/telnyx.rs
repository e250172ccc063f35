//! Telnyx (calls and SMS): `telnyx-signature-ed25519` over `"{telnyx-timestamp}|{body}"`,
//! checked with `TELNYX_PUBLIC_KEY`; signing (`hookd send`, tests) needs the private seed
//! `TELNYX_SIGNING_KEY`, which only a development setup has. The event's id and type are
//! `data.id` and `data.event_type`.

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use common::Source;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use super::{Field, Outgoing, Provider, SampleArgs, SignError, header, token};
use crate::config::{ConfigError, Sources, invalid};
use crate::verify::{VerifyError, telnyx};

const PUBLIC_KEY: &str = "TELNYX_PUBLIC_KEY";
const SIGNING_KEY: &str = "TELNYX_SIGNING_KEY";

pub struct Telnyx {
    key: telnyx::PublicKey,
    signing: Option<SigningKey>,
}

impl std::fmt::Debug for Telnyx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telnyx")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Telnyx {
    /// Verifies with `key`'s public half and signs with it.
    pub fn with_signing_key(key: SigningKey) -> Self {
        Telnyx {
            key: telnyx::PublicKey::from_signing_key(&key),
            signing: Some(key),
        }
    }
}

pub fn load(sources: &Sources) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let signing = sources
        .secret(SIGNING_KEY)?
        .map(|seed| {
            BASE64
                .decode(seed.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(|seed| SigningKey::from_bytes(&seed))
                .ok_or_else(|| invalid(SIGNING_KEY, "expected a base64 32-byte Ed25519 seed"))
        })
        .transpose()?;
    // A development setup that holds the private seed (`hookd dev-secrets`) can sign without
    // the public key; Telnyx's own key is only ever the public one.
    let key = match (sources.secret(PUBLIC_KEY)?, &signing) {
        (Some(k), _) => k
            .trim()
            .parse()
            .map_err(|e: String| invalid(PUBLIC_KEY, e))?,
        (None, Some(signing)) => telnyx::PublicKey::from_signing_key(signing),
        (None, None) => return Ok(None),
    };
    Ok(Some(Arc::new(Telnyx { key, signing })))
}

impl Provider for Telnyx {
    fn source(&self) -> Source {
        Source::Telnyx
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        telnyx::verify(
            &self.key,
            header(headers, telnyx::SIGNATURE_HEADER),
            header(headers, telnyx::TIMESTAMP_HEADER),
            body,
            now,
        )
    }

    fn fields(&self) -> (Field, Field) {
        (
            Field::Pointer("/data/id".into()),
            Field::Pointer("/data/event_type".into()),
        )
    }

    fn sign(&self, event: &Outgoing, now: i64) -> Result<Vec<(String, String)>, SignError> {
        let key = self
            .signing
            .as_ref()
            .ok_or(SignError::NoKey(SIGNING_KEY, Source::Telnyx))?;
        Ok(vec![
            (
                telnyx::SIGNATURE_HEADER.into(),
                telnyx::sign(key, now, &event.body),
            ),
            (telnyx::TIMESTAMP_HEADER.into(), now.to_string()),
        ])
    }

    fn sample_types(&self) -> &[&'static str] {
        &[
            "call.initiated",
            "call.answered",
            "call.hangup",
            "message.received",
            "message.sent",
            "message.finalized",
        ]
    }

    fn sample(&self, event_type: &str, args: &SampleArgs) -> Outgoing {
        let id = if args.id.is_empty() {
            uuid_like()
        } else {
            args.id.clone()
        };
        let body = serde_json::to_vec(&event(event_type, &id, args)).unwrap_or_default();
        Outgoing {
            key: id,
            event_type: event_type.to_owned(),
            body,
        }
    }
}

fn uuid_like() -> String {
    let hex = hex::encode(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn event(event_type: &str, id: &str, args: &SampleArgs) -> Value {
    let now = Utc::now();
    let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let caller = "+15557654321";
    let payload = if event_type.starts_with("call.") {
        let call_id = if args.call_id.is_empty() {
            format!("v3:{}", token(22))
        } else {
            args.call_id.clone()
        };
        let mut payload = json!({
            "call_control_id": call_id,
            "call_leg_id": uuid_like(),
            "call_session_id": uuid_like(),
            "connection_id": "1494404757140276705",
            "client_state": null,
            "direction": "incoming",
            "from": caller,
            "to": args.business_number,
            "state": match event_type {
                "call.initiated" => "parked",
                "call.answered" => "answered",
                _ => "hangup",
            },
        });
        if event_type == "call.hangup" {
            let start =
                (now - chrono::Duration::seconds(95)).to_rfc3339_opts(SecondsFormat::Millis, true);
            payload["start_time"] = json!(start);
            payload["end_time"] = json!(at);
            payload["hangup_cause"] = json!("normal_clearing");
            payload["hangup_source"] = json!("caller");
        }
        payload
    } else {
        let inbound = event_type == "message.received";
        let (from, to) = if inbound {
            (caller, args.business_number.as_str())
        } else {
            (args.business_number.as_str(), caller)
        };
        let status = match event_type {
            "message.received" => "webhook_delivered",
            "message.sent" => "sent",
            _ => "delivered",
        };
        json!({
            "id": uuid_like(),
            "record_type": "message",
            "direction": if inbound { "inbound" } else { "outbound" },
            "type": "SMS",
            "messaging_profile_id": uuid_like(),
            "from": {"phone_number": from, "carrier": "Telnyx", "line_type": "Wireless"},
            "to": [{"phone_number": to, "status": status, "carrier": "T-Mobile USA",
                    "line_type": "Wireless"}],
            "text": "Hi! Is the shop open on Sunday?",
            "parts": 1,
            "encoding": "GSM-7",
            "sent_at": at,
            "completed_at": if event_type == "message.finalized" { json!(at) } else { Value::Null },
            "errors": [],
        })
    };
    json!({
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": id,
            "occurred_at": at,
            "payload": payload,
        },
        "meta": {"attempt": 1, "delivered_to": "http://127.0.0.1/api/telnyx/webhook"},
    })
}
