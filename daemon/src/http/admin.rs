//! The admin API: DLQ recovery, analytics, health and metrics, behind a bearer token.

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::Source;
use common::db::dlq::{self, DeadFilter, DlqError};
use common::db::stats;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// 401 without credentials, 403 with wrong ones, 404 when no token is configured at all (the
/// admin API is off).
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match check_token(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            if matches!(e, ApiError::Forbidden) {
                tracing::warn!(
                    path = request.uri().path(),
                    "admin request with a wrong token"
                );
            }
            super::rate_limit::unverified(e)
        }
    }
}

fn check_token(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.inner.admin_token else {
        return Err(ApiError::NotFound(
            "the admin API is disabled (HOOKD_ADMIN_TOKEN is not set)".into(),
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    // `ct_eq` on the tokens themselves returns at once when the lengths differ, which tells a
    // prober how long the token is; digests always have the same length.
    use sha2::{Digest, Sha256};
    let presented = Sha256::digest(presented.trim().as_bytes());
    let expected = Sha256::digest(expected.expose_secret().as_bytes());
    if bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// The largest page of the DLQ one request may ask for.
const MAX_PAGE: i64 = 500;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    source: Option<String>,
    event_type: Option<String>,
    q: Option<String>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

pub async fn list_dead(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // PostgreSQL text cannot hold NUL; such a filter can match nothing anyway.
    for text in [&query.source, &query.event_type, &query.q]
        .into_iter()
        .flatten()
    {
        if text.contains('\0') {
            return Err(ApiError::BadRequest(
                "filters must not contain NUL characters".into(),
            ));
        }
    }
    let source = query
        .source
        .as_deref()
        .map(str::parse::<Source>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let filter = DeadFilter {
        source,
        event_type: query.event_type,
        text: query.q,
        before_id: query.before_id,
        limit,
    };
    let events = dlq::list(state.pool(), &filter).await?;
    let next = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(
        json!({ "failed_webhooks": events, "next_before_id": next }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    webhook_id: Option<i64>,
    #[serde(default)]
    retry_all: bool,
}

pub async fn retry(
    State(state): State<AppState>,
    body: Result<Json<RetryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match request {
        RetryRequest {
            webhook_id: Some(id),
            retry_all: false,
        } => match dlq::retry(state.pool(), id).await {
            Ok(()) => Ok(Json(json!({ "retried": 1, "webhook_id": id }))),
            Err(DlqError::NotFound(_)) => {
                Err(ApiError::NotFound(format!("event {id} does not exist")))
            }
            Err(e @ DlqError::NotDead { .. }) => Err(ApiError::Conflict(e.to_string())),
            Err(DlqError::Database(e)) => Err(e.into()),
        },
        RetryRequest {
            webhook_id: None,
            retry_all: true,
        } => {
            let retried = dlq::retry_all(state.pool()).await?;
            Ok(Json(json!({ "retried": retried })))
        }
        _ => Err(ApiError::BadRequest(
            "send {\"webhook_id\": N} or {\"retry_all\": true}".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
pub struct PurgeQuery {
    older_than: Option<String>,
    #[serde(default)]
    force: bool,
}

pub async fn purge(
    State(state): State<AppState>,
    Query(query): Query<PurgeQuery>,
) -> Result<Json<Value>, ApiError> {
    let text = query.older_than.ok_or_else(|| {
        ApiError::BadRequest("older_than is required, e.g. ?older_than=7d".into())
    })?;
    let std_age = crate::cli::parse_age(&text).ok();
    let age = std_age
        .and_then(|age| chrono::Duration::from_std(age).ok())
        .ok_or_else(|| {
            ApiError::BadRequest("older_than must be an age such as 7d or 12h".into())
        })?;
    if std_age.is_some_and(crate::cli::purge_needs_force) && !query.force {
        return Err(ApiError::BadRequest(format!(
            "refusing to purge with older_than under {}: purged events are gone for good, and \
             the providers' resends of them would be dropped as duplicates; add force=true to \
             purge anyway",
            humantime::format_duration(crate::cli::PURGE_FORCE_BELOW)
        )));
    }
    let purged = dlq::purge_older_than(state.pool(), age).await?;
    Ok(Json(json!({ "purged": purged, "older_than": text })))
}

fn rates(totals: &stats::Totals) -> Value {
    json!({
        "totals": totals,
        "event_success_rate": totals.event_success_rate(),
        "attempt_success_rate": totals.attempt_success_rate(),
    })
}

pub async fn analytics(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let pool = state.pool();
    let hour = stats::totals(pool, chrono::Duration::hours(1)).await?;
    let day = stats::totals(pool, chrono::Duration::hours(24)).await?;
    let types = stats::by_type(pool, chrono::Duration::hours(24)).await?;
    // The runbook's `getWebhookStats`: processings in the last 24 hours by event type and
    // status, from the counters instead of a scan of `webhook_logs`.
    let mut runbook_stats = Vec::new();
    let (mut processed, mut succeeded) = (0, 0);
    for t in &types {
        let success = t.succeeded + t.skipped;
        let failure = t.failed + t.dead;
        processed += success + failure;
        succeeded += success;
        for (status, count) in [("success", success), ("failure", failure)] {
            if count > 0 {
                runbook_stats.push(json!({
                    "event_type": t.event_type, "status": status, "count": count,
                }));
            }
        }
    }
    let by_type: Vec<Value> = types
        .into_iter()
        .map(|t| {
            let totals = t.totals();
            json!({
                "source": t.source,
                "event_type": t.event_type,
                "received": t.received,
                "succeeded": t.succeeded,
                "skipped": t.skipped,
                "failed_attempts": t.failed,
                "dead": t.dead,
                "retrying_now": t.retrying_now,
                "dead_now": t.dead_now,
                "event_success_rate": totals.event_success_rate(),
                "attempt_success_rate": totals.attempt_success_rate(),
            })
        })
        .collect();
    Ok(Json(json!({
        "last_hour": rates(&hour),
        "last_24h": rates(&day),
        "by_type_24h": by_type,
        "stats": runbook_stats,
        "total_processed": processed,
        "success_rate": (processed > 0).then(|| 100.0 * succeeded as f64 / processed as f64),
    })))
}

/// Healthy means: the database answers and the workers, if this process runs any, are
/// looping. Anyone may ask (load balancers do, often): they get the word, from what the
/// reachability monitor and the workers' heartbeat already know, with no query per call.
/// Token holders also get the queue's counts, which take one.
pub async fn health(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // None on a receive-only instance.
    let workers = state.inner.heartbeat.as_ref().map(|h| h.alive());
    let verdict = |database: bool| {
        let healthy = database && workers != Some(false);
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, if healthy { "ok" } else { "unhealthy" })
    };
    if check_token(&state, &headers).is_err() {
        let (status, word) = verdict(state.reachability().is_up());
        return (status, Json(json!({ "status": word }))).into_response();
    }
    let queue = state.reachability().guard(stats::queue(state.pool())).await;
    let (status, word) = verdict(queue.is_ok());
    let database = queue.is_ok();
    let queue = queue.ok();
    let body = json!({
        "status": word,
        "database": database,
        "workers_alive": workers,
        "queue_depth": queue.map(|q| q.depth()),
        "retrying": queue.map(|q| q.retrying),
        "dead": queue.map(|q| q.dead),
        "oldest_pending_secs": queue.and_then(|q| q.oldest_pending_secs),
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let queue = stats::queue(state.pool()).await?;
    let text = state.metrics().render(&queue);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
