//! Webhook bodies are read whole before the handler runs, under two limits that hold however
//! the client sends: a declared length over the limit is refused at once (413), and the whole
//! body must arrive within a deadline (408), so a client trickling a byte at a time cannot
//! hold a connection and a task for long.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::Source;
use futures::StreamExt;

use super::{ApiError, AppState};

/// The whole body must arrive within this once the headers have.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn read_whole(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.inner.body_limit;
    let source: Option<Source> = request
        .uri()
        .path()
        .split('/')
        .nth(2)
        .and_then(|s| s.parse().ok());
    let refuse = |reason, error: ApiError| {
        if let Some(source) = source {
            state.metrics().rejected(source, reason);
        }
        tracing::info!(?source, reason, "webhook rejected");
        error.into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return refuse("too_large", ApiError::TooLarge(limit));
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
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e @ ApiError::TooLarge(_))) => refuse("too_large", e),
        Ok(Err(e)) => refuse("body", e),
        Err(_) => refuse("timeout", ApiError::Timeout(BODY_READ_TIMEOUT.as_secs())),
    }
}
