//! The three webhook routes: verify the raw bytes, pick out the idempotency key, store, answer.
//! No business logic runs here; workers do that after the event is durable.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use common::db::events::{self, Inserted, NewEvent};
use common::{EventType, ProviderEventId, Source};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::verify::{VerifyError, standard, stripe, telnyx};

#[derive(Debug, Serialize)]
pub struct Ack {
    received: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

type Reply = Result<Json<Ack>, ApiError>;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One delivery on its way in; every way out of it is counted in the metrics.
struct Delivery<'a> {
    state: &'a AppState,
    source: Source,
    started: Instant,
}

impl<'a> Delivery<'a> {
    fn new(state: &'a AppState, source: Source) -> Self {
        Delivery {
            state,
            source,
            started: Instant::now(),
        }
    }

    fn reject(&self, reason: &'static str, error: ApiError) -> ApiError {
        self.state.metrics().rejected(self.source, reason);
        if !matches!(error, ApiError::Unavailable(_)) {
            tracing::info!(source = %self.source, reason, error = %error, "webhook rejected");
        }
        error
    }

    fn enabled<T>(&self, setting: Option<T>) -> Result<T, ApiError> {
        setting.ok_or_else(|| {
            let message = format!("{} webhooks are not configured on this server", self.source);
            self.reject("disabled", ApiError::NotFound(message))
        })
    }

    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                self.reject("too_large", ApiError::TooLarge(self.state.inner.body_limit))
            } else {
                let message = format!("cannot read body: {}", rejection.body_text());
                self.reject("body", ApiError::BadRequest(message))
            }
        })
    }

    fn verified(&self, result: Result<(), VerifyError>) -> Result<(), ApiError> {
        result.map_err(|e| {
            let reason = match e {
                VerifyError::StaleTimestamp => "timestamp",
                VerifyError::MissingHeader(_) => "missing_header",
                _ => "signature",
            };
            self.reject(reason, ApiError::BadRequest(e.to_string()))
        })
    }

    fn bad_body(&self, message: String) -> ApiError {
        self.reject("body", ApiError::BadRequest(message))
    }

    /// Parses a verified body; it must be a JSON object.
    fn parse(&self, body: &[u8]) -> Result<Value, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(value @ Value::Object(_)) => Ok(value),
            Ok(_) => Err(self.bad_body("body is not a JSON object".into())),
            Err(e) => Err(self.bad_body(format!("body is not valid JSON: {e}"))),
        }
    }

    fn field<'v>(&self, payload: &'v Value, pointer: &str) -> Result<&'v str, ApiError> {
        payload
            .pointer(pointer)
            .and_then(Value::as_str)
            .ok_or_else(|| self.bad_body(format!("payload has no string at {pointer}")))
    }

    async fn store(&self, event_id: &str, event_type: &str, body: Bytes) -> Reply {
        let event = NewEvent {
            source: self.source,
            event_id: ProviderEventId::parse(event_id).map_err(|e| self.bad_body(e.to_string()))?,
            event_type: EventType::parse(event_type).map_err(|e| self.bad_body(e.to_string()))?,
            body: body.into(),
        };
        let inserted = match self.state.inner.ingest.insert(event).await {
            Ok(inserted) => inserted,
            Err(e) if events::is_payload_rejected(&e) => {
                let detail = e
                    .as_database_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned());
                return Err(self.bad_body(format!("payload cannot be stored: {detail}")));
            }
            Err(e) => return Err(self.reject("unavailable", ApiError::Unavailable(e))),
        };
        let duplicate = inserted == Inserted::Duplicate;
        let metrics = self.state.metrics();
        if duplicate {
            metrics.duplicate(self.source);
        } else {
            metrics.received(self.source, event_type);
        }
        let latency = self.started.elapsed();
        metrics.ingest_latency(self.source, latency);
        tracing::info!(
            source = %self.source, event_id, event_type, duplicate,
            latency_ms = latency.as_secs_f64() * 1e3, "webhook accepted"
        );
        Ok(Json(Ack {
            received: true,
            duplicate,
        }))
    }
}

pub async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let delivery = Delivery::new(&state, Source::Stripe);
    let secret = delivery.enabled(state.inner.stripe_secret.as_ref())?;
    let body = delivery.body(body)?;
    delivery.verified(stripe::verify(
        secret.expose_secret().as_bytes(),
        header(&headers, stripe::HEADER),
        &body,
        now(),
    ))?;
    let payload = delivery.parse(&body)?;
    let id = delivery.field(&payload, "/id")?;
    let kind = delivery.field(&payload, "/type")?;
    delivery.store(id, kind, body).await
}

pub async fn telnyx(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let delivery = Delivery::new(&state, Source::Telnyx);
    let key = delivery.enabled(state.inner.telnyx_public_key.as_ref())?;
    let body = delivery.body(body)?;
    delivery.verified(telnyx::verify(
        key,
        header(&headers, telnyx::SIGNATURE_HEADER),
        header(&headers, telnyx::TIMESTAMP_HEADER),
        &body,
        now(),
    ))?;
    let payload = delivery.parse(&body)?;
    let id = delivery.field(&payload, "/data/id")?;
    let kind = delivery.field(&payload, "/data/event_type")?;
    delivery.store(id, kind, body).await
}

pub async fn custom(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let delivery = Delivery::new(&state, Source::Custom);
    let secret = delivery.enabled(state.inner.custom_secret.as_ref())?;
    let body = delivery.body(body)?;
    let id = header(&headers, standard::ID_HEADER);
    delivery.verified(standard::verify(
        secret,
        id,
        header(&headers, standard::TIMESTAMP_HEADER),
        header(&headers, standard::SIGNATURE_HEADER),
        &body,
        now(),
    ))?;
    let payload = delivery.parse(&body)?;
    let kind = delivery.field(&payload, "/type")?;
    // Verification succeeded, so the id header is present.
    delivery.store(id.unwrap_or_default(), kind, body).await
}
