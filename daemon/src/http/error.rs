//! The one error type of the HTTP boundary. Senders get a short JSON reason; internal detail
//! goes to the log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad signature, stale timestamp, unparsable or unusable body: the sender must fix it.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("body exceeds the {0}-byte limit")]
    TooLarge(usize),
    #[error("request body not received within {0} s")]
    Timeout(u64),
    #[error("missing bearer token")]
    Unauthorized,
    #[error("invalid token")]
    Forbidden,
    /// A DLQ action on an event in the wrong state.
    #[error("{0}")]
    Conflict(String),
    #[error("rate limit exceeded, retry in {0} s")]
    TooManyRequests(u64),
    /// hookd is at one of its caps (bodies in memory, requests in progress, the ingest queue,
    /// the request deadline): the sender should retry shortly.
    #[error("{0}; retry later")]
    Busy(&'static str),
    /// The database failed: an event could not be stored durably (the sender should retry),
    /// or an operator's request could not be served.
    #[error("database unavailable")]
    Unavailable(#[from] sqlx::Error),
}

/// What every refusal of hookd's says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in a few words.
    pub error: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Unavailable(e) = &self {
            tracing::error!(error = %e, "database unavailable");
        }
        let message = match &self {
            ApiError::Unavailable(_) => "database unavailable, retry later".to_owned(),
            other => other.to_string(),
        };
        let mut response = (self.status(), Json(ErrorBody { error: message })).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::Busy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(5));
            }
            _ => {}
        }
        response
    }
}
