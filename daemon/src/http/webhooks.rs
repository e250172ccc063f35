//! The three webhook routes: verify the raw bytes, pick out the idempotency key, store, answer.
//! No business logic runs here; workers do that after the event is durable.

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
use crate::verify::{self, standard, stripe, telnyx};

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

fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(state.inner.body_limit)
        } else {
            ApiError::BadRequest(format!("cannot read body: {}", rejection.body_text()))
        }
    })
}

fn rejected(source: Source, err: verify::VerifyError) -> ApiError {
    tracing::info!(%source, reason = %err, "webhook rejected");
    ApiError::BadRequest(err.to_string())
}

fn disabled(source: Source) -> ApiError {
    ApiError::NotFound(format!(
        "{source} webhooks are not configured on this server"
    ))
}

/// Parses a verified body; it must be a JSON object.
fn parse(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(ApiError::BadRequest("body is not a JSON object".into())),
        Err(e) => Err(ApiError::BadRequest(format!("body is not valid JSON: {e}"))),
    }
}

fn string_at<'a>(payload: &'a Value, pointer: &str) -> Result<&'a str, ApiError> {
    payload
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest(format!("payload has no string at {pointer}")))
}

fn identifier<T, E: std::fmt::Display>(parsed: Result<T, E>) -> Result<T, ApiError> {
    parsed.map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn store(
    state: &AppState,
    source: Source,
    event_id: &str,
    event_type: &str,
    body: Bytes,
) -> Reply {
    let event = NewEvent {
        source,
        event_id: identifier(ProviderEventId::parse(event_id))?,
        event_type: identifier(EventType::parse(event_type))?,
        body: body.into(),
    };
    match events::insert(state.pool(), &event).await {
        Ok(inserted) => {
            let duplicate = inserted == Inserted::Duplicate;
            tracing::info!(%source, event_id, event_type, duplicate, "webhook accepted");
            Ok(Json(Ack {
                received: true,
                duplicate,
            }))
        }
        Err(e) if events::is_payload_rejected(&e) => Err(ApiError::BadRequest(format!(
            "payload cannot be stored: {}",
            e.as_database_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        ))),
        Err(e) => Err(ApiError::Unavailable(e)),
    }
}

pub async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let source = Source::Stripe;
    let secret = state
        .inner
        .stripe_secret
        .as_ref()
        .ok_or_else(|| disabled(source))?;
    let body = body_bytes(&state, body)?;
    stripe::verify(
        secret.expose_secret().as_bytes(),
        header(&headers, stripe::HEADER),
        &body,
        now(),
    )
    .map_err(|e| rejected(source, e))?;
    let payload = parse(&body)?;
    let (id, kind) = (string_at(&payload, "/id")?, string_at(&payload, "/type")?);
    store(&state, source, id, kind, body).await
}

pub async fn telnyx(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let source = Source::Telnyx;
    let key = state
        .inner
        .telnyx_public_key
        .as_ref()
        .ok_or_else(|| disabled(source))?;
    let body = body_bytes(&state, body)?;
    telnyx::verify(
        key,
        header(&headers, telnyx::SIGNATURE_HEADER),
        header(&headers, telnyx::TIMESTAMP_HEADER),
        &body,
        now(),
    )
    .map_err(|e| rejected(source, e))?;
    let payload = parse(&body)?;
    let (id, kind) = (
        string_at(&payload, "/data/id")?,
        string_at(&payload, "/data/event_type")?,
    );
    store(&state, source, id, kind, body).await
}

pub async fn custom(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let source = Source::Custom;
    let secret = state
        .inner
        .custom_secret
        .as_ref()
        .ok_or_else(|| disabled(source))?;
    let body = body_bytes(&state, body)?;
    let id = header(&headers, standard::ID_HEADER);
    standard::verify(
        secret,
        id,
        header(&headers, standard::TIMESTAMP_HEADER),
        header(&headers, standard::SIGNATURE_HEADER),
        &body,
        now(),
    )
    .map_err(|e| rejected(source, e))?;
    // Verification succeeded, so the id header is present.
    let id = id.unwrap_or_default();
    let payload = parse(&body)?;
    let kind = string_at(&payload, "/type")?;
    store(&state, source, id, kind, body).await
}
