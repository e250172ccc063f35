//! The webhook route, `POST /api/{source}/webhook`, for every provider: verify the raw bytes,
//! pick out the idempotency key and type, store, answer. No business logic runs here; workers
//! do that after the event is durable.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::db::events::{self, Inserted, NewEvent};
use common::{EventType, ProviderEventId, Source};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};

use super::rate_limit::unverified;
use super::{ApiError, AppState};
use crate::ingest::IngestError;
use crate::providers::{Field, Provider, pointer};
use crate::verify::VerifyError;

#[derive(Debug, Serialize)]
pub struct Ack {
    received: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// Why a delivery was refused, and whether it failed before it proved itself (those are
/// charged to the client's failure budget; a verified sender's mistakes are not).
#[derive(Debug)]
pub struct Refusal {
    error: ApiError,
    unverified: bool,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.unverified {
            unverified(self.error)
        } else {
            self.error.into_response()
        }
    }
}

type Reply = Result<Json<Ack>, Refusal>;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One delivery on its way in; every way out of it is counted in the metrics.
struct Delivery<'a> {
    state: &'a AppState,
    source: Source,
    started: Instant,
    verified: AtomicBool,
}

/// What a verified body says it is.
struct Identity {
    event_id: String,
    event_type: String,
    /// See [`pointer::Found::jsonb_as_is`].
    jsonb_as_is: bool,
}

impl<'a> Delivery<'a> {
    fn new(state: &'a AppState, source: Source) -> Self {
        Delivery {
            state,
            source,
            started: Instant::now(),
            verified: AtomicBool::new(false),
        }
    }

    fn reject(&self, reason: &'static str, error: ApiError) -> Refusal {
        self.state.metrics().rejected(self.source, reason);
        if !matches!(error, ApiError::Unavailable(_)) {
            tracing::info!(source = %self.source, reason, error = %error, "webhook rejected");
        }
        Refusal {
            error,
            unverified: !self.verified.load(Ordering::Relaxed),
        }
    }

    fn not_configured(&self) -> Refusal {
        let message = format!("{} webhooks are not configured on this server", self.source);
        self.reject("disabled", ApiError::NotFound(message))
    }

    fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Refusal> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                self.reject(
                    "too_large",
                    ApiError::TooLarge(self.state.inner.budget.limit),
                )
            } else {
                let message = format!("cannot read body: {}", rejection.body_text());
                self.reject("body", ApiError::BadRequest(message))
            }
        })
    }

    fn verified(&self, result: Result<(), VerifyError>) -> Result<(), Refusal> {
        result.map_err(|e| {
            let reason = match e {
                VerifyError::StaleTimestamp => "timestamp",
                VerifyError::MissingHeader(_) => "missing_header",
                _ => "signature",
            };
            self.reject(reason, ApiError::BadRequest(e.to_string()))
        })?;
        self.verified.store(true, Ordering::Relaxed);
        // The operator's ceiling, if any, applies to verified deliveries of the source.
        match self.state.inner.limits.source_over(self.source) {
            Some(wait) => Err(self.reject("source_limit", ApiError::TooManyRequests(wait))),
            None => Ok(()),
        }
    }

    fn bad_body(&self, message: String) -> Refusal {
        self.reject("body", ApiError::BadRequest(message))
    }

    /// The idempotency key and the type of a verified request, and whether jsonb takes its
    /// body as it is; the body must be a JSON object. Read in one pass that builds no tree
    /// ([`pointer::strings_at`]).
    fn identify(
        &self,
        (key, kind): (Field, Field),
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Identity, Refusal> {
        let pointers: Vec<&str> = [&key, &kind]
            .into_iter()
            .filter_map(|field| match field {
                Field::Pointer(pointer) => Some(pointer.as_str()),
                Field::Header(_) => None,
            })
            .collect();
        let found = match pointer::strings_at(body, &pointers) {
            Ok(found) if found.object => found,
            Ok(_) => return Err(self.bad_body("body is not a JSON object".into())),
            Err(e) => return Err(self.bad_body(format!("body is not valid JSON: {e}"))),
        };
        let jsonb_as_is = found.jsonb_as_is;
        let mut strings = found.strings.into_iter();
        let mut read = |field: Field| match field {
            Field::Pointer(pointer) => strings
                .next()
                .flatten()
                .ok_or_else(|| self.bad_body(format!("payload has no string at {pointer}"))),
            Field::Header(names) => names
                .iter()
                .find_map(|name| crate::providers::header(headers, name))
                .map(str::to_owned)
                .ok_or_else(|| {
                    let name = names.first().copied().unwrap_or_default();
                    self.bad_body(format!("missing {name} header"))
                }),
        };
        Ok(Identity {
            event_id: read(key)?,
            event_type: read(kind)?,
            jsonb_as_is,
        })
    }

    async fn store(&self, identity: Identity, body: Bytes) -> Reply {
        let (event_id, event_type) = (identity.event_id.as_str(), identity.event_type.as_str());
        let event = NewEvent {
            source: self.source,
            event_id: ProviderEventId::parse(event_id).map_err(|e| self.bad_body(e.to_string()))?,
            event_type: EventType::parse(event_type).map_err(|e| self.bad_body(e.to_string()))?,
            body: body.into(),
            jsonb_checked: identity.jsonb_as_is,
        };
        let inserted = match self.state.inner.ingest.insert(event).await {
            Ok(inserted) => inserted,
            Err(IngestError::Full) => {
                return Err(self.reject("busy", ApiError::Busy("the ingest queue is full")));
            }
            Err(IngestError::Database(e)) if events::is_payload_rejected(&e) => {
                let detail = e
                    .as_database_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned());
                return Err(self.bad_body(format!("payload cannot be stored: {detail}")));
            }
            Err(IngestError::Database(e)) => {
                return Err(self.reject("unavailable", ApiError::Unavailable(e)));
            }
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
        // At debug, as the worker's line per event is; the event itself is the record.
        tracing::debug!(
            source = %self.source, event_id, event_type, duplicate,
            latency_ms = latency.as_secs_f64() * 1e3, "webhook accepted"
        );
        Ok(Json(Ack {
            received: true,
            duplicate,
        }))
    }
}

/// Finds the route's provider before anything of the request is read: an unknown source is
/// no route at all, a known one without settings is turned off.
pub async fn resolve(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut request: Request,
    next: Next,
) -> Response {
    let Ok(source) = name.parse::<Source>() else {
        return unverified(ApiError::NotFound("no such route".into()));
    };
    match state.inner.providers.get(source) {
        Some(provider) => {
            request.extensions_mut().insert(provider.clone());
            next.run(request).await
        }
        None if state.inner.providers.known().contains(&source) => Delivery::new(&state, source)
            .not_configured()
            .into_response(),
        None => unverified(ApiError::NotFound("no such route".into())),
    }
}

pub async fn receive(
    State(state): State<AppState>,
    axum::Extension(provider): axum::Extension<std::sync::Arc<dyn Provider>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let delivery = Delivery::new(&state, provider.source());
    let body = delivery.body(body)?;
    delivery.verified(provider.verify(&headers, &body, now()))?;
    let identity = delivery.identify(provider.fields(), &headers, &body)?;
    delivery.store(identity, body).await
}
