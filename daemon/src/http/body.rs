//! Webhook bodies are read whole before the handler runs, within bounds that hold however
//! clients send:
//!
//! - a declared length over the limit is refused at once (413), before a byte of it is read;
//! - bodies being read or held share a budget of bytes (a quarter of `HOOKD_MEMORY_BUDGET`:
//!   each body also lives on as the stored copy and in the statement that writes it) and of
//!   count (`HOOKD_MAX_BODIES`); a request that would exceed either is answered 503 with
//!   `Retry-After` at once, so a thousand clients trickling large bodies fill the budget, not
//!   the memory. Large bodies get only half of it, so deliveries of the usual few KiB still
//!   get in meanwhile;
//! - the whole request has a deadline (`HOOKD_REQUEST_TIMEOUT_MS`): a body not received by
//!   then is the client's fault (408); an event not stored by then is hookd's (503), so a
//!   stuck database answers the provider in bounded time and the provider retries.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::rate_limit::unverified;
use super::{ApiError, AppState};

/// The share of the memory budget request bodies may take.
const BODY_SHARE: usize = 4;
/// Providers' events are a few KiB. Bytes of bodies beyond this come out of half the budget
/// too, so large bodies alone (a flood of them) cannot crowd out the typical delivery.
const SMALL_BODY: usize = 64 * 1024;

pub struct Budget {
    bytes: Arc<Semaphore>,
    large: Arc<Semaphore>,
    bodies: Arc<Semaphore>,
    pub limit: usize,
    pub deadline: Duration,
}

impl Budget {
    pub fn new(config: &crate::Config) -> Self {
        // Never so small that one body of the largest size cannot be read.
        let bytes = (config.memory_budget / BODY_SHARE).max(config.body_limit);
        Budget {
            bytes: Arc::new(Semaphore::new(bytes)),
            large: Arc::new(Semaphore::new((bytes / 2).max(config.body_limit))),
            bodies: Arc::new(Semaphore::new(config.max_bodies)),
            limit: config.body_limit,
            deadline: config.request_timeout,
        }
    }

    /// Reserves bytes `from..to` of a body, or `None` if the budget cannot hold them.
    fn reserve(&self, from: usize, to: usize) -> Option<Vec<OwnedSemaphorePermit>> {
        let take = |pool: &Arc<Semaphore>, n: usize| {
            pool.clone()
                .try_acquire_many_owned(u32::try_from(n).ok()?)
                .ok()
        };
        let mut permits = vec![take(&self.bytes, to - from)?];
        let beyond_small = to.saturating_sub(from.max(SMALL_BODY));
        if beyond_small > 0 {
            permits.push(take(&self.large, beyond_small)?);
        }
        Some(permits)
    }
}

pub async fn read_whole(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let budget = &state.inner.budget;
    let limit = budget.limit;
    // Put there by `webhooks::resolve`, which runs first.
    let source = request
        .extensions()
        .get::<Arc<dyn crate::providers::Provider>>()
        .map(|provider| provider.source());
    let refuse = |reason, error: ApiError| {
        if let Some(source) = source {
            state.metrics().rejected(source, reason);
        }
        tracing::info!(?source, reason, "webhook rejected");
        error
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return unverified(refuse("too_large", ApiError::TooLarge(limit)));
    }
    let Ok(_body_slot) = budget.bodies.clone().try_acquire_owned() else {
        return refuse("busy", ApiError::Busy("too many requests in progress")).into_response();
    };
    let full = || ApiError::Busy("request bodies fill hookd's memory budget");
    let mut held = Vec::new();
    if let Some(n) = declared {
        match budget.reserve(0, n as usize) {
            Some(permits) => held.extend(permits),
            None => return refuse("busy", full()).into_response(),
        }
    }
    let (parts, body) = request.into_parts();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("cannot read body: {e}")))?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge(limit));
            }
            // A body of undeclared length is budgeted as it arrives.
            if declared.is_none() {
                let reserved = budget.reserve(bytes.len(), bytes.len() + chunk.len());
                held.extend(reserved.ok_or_else(full)?);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let deadline = started + budget.deadline;
    let bytes = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e @ ApiError::Busy(_))) => return refuse("busy", e).into_response(),
        Ok(Err(e @ ApiError::TooLarge(_))) => return unverified(refuse("too_large", e)),
        Ok(Err(e)) => return unverified(refuse("body", e)),
        Err(_) => {
            let seconds = budget.deadline.as_secs_f64().ceil() as u64;
            return unverified(refuse("timeout", ApiError::Timeout(seconds)));
        }
    };
    let handled = next.run(Request::from_parts(parts, Body::from(bytes)));
    match tokio::time::timeout_at(deadline, handled).await {
        Ok(response) => response,
        // The event may still be committed; the provider's retry is then a duplicate.
        Err(_) => refuse(
            "deadline",
            ApiError::Busy("the event was not stored within the request deadline"),
        )
        .into_response(),
    }
}
