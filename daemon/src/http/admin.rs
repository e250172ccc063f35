//! The admin API: DLQ recovery, analytics, health and metrics, behind a bearer token. Each
//! handler's `utoipa::path` annotation is its part of the OpenAPI document (`openapi`).

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::Source;
use common::db::archive::{self, Actor, ArchiveError};
use common::db::clusters::{self, Cluster};
use common::db::dlq::{
    self, DeadEvent, DeadFilter, DlqError, PurgeFilter, PurgeToken, PurgeTypeCount,
};
use common::db::retention;
use common::db::selection::{self, Selection, Token, TypeCount};
use common::db::stats;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// A JSON body sent with its keys in alphabetical order at every level, whatever order its
/// structs declare: hookd built these bodies as `serde_json::Value`s, which sort their keys,
/// and scripts that compare the bytes keep working.
pub struct Sorted<T>(T);

impl<T: Serialize> IntoResponse for Sorted<T> {
    fn into_response(self) -> Response {
        match serde_json::to_value(self.0) {
            Ok(value) => Json(value).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a response");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only events of this source (`stripe`, `telnyx`, `custom` or a configured one).
    source: Option<String>,
    /// Only events of exactly this type.
    event_type: Option<String>,
    /// Only events whose type, provider event id or last error contains this text, in any
    /// case.
    q: Option<String>,
    /// The next page: the `next_before_id` of the previous one.
    before_id: Option<i64>,
    /// Events per page.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
}

/// One page of the dead-letter queue, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadPage {
    failed_webhooks: Vec<DeadEvent>,
    /// The `before_id` of the next page; null on the last one.
    #[schema(required = true)]
    next_before_id: Option<i64>,
}

/// List dead events
///
/// Newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/webhooks/dlq",
    tag = "dlq",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of dead events", body = DeadPage),
        (status = 400, description = "A filter or the limit is invalid", body = ErrorBody),
    )
)]
pub async fn list_dead(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sorted<DeadPage>, ApiError> {
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
    let limit = page_limit(query.limit)?;
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
    Ok(Sorted(DeadPage {
        failed_webhooks: events,
        next_before_id: next,
    }))
}

/// The `limit` of a listing: 50 unless asked, at most [`MAX_PAGE`].
fn page_limit(asked: Option<i64>) -> Result<i64, ApiError> {
    let limit = asked.unwrap_or(50);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClustersQuery {
    /// Clusters in the answer, the largest first.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
}

/// The dead events grouped by why they died.
#[derive(Debug, Serialize, ToSchema)]
pub struct Clusters {
    /// The largest first, then the most recent.
    clusters: Vec<Cluster>,
}

/// List error clusters
///
/// The dead events grouped by source, event type and the fingerprint of their last error
/// (ids, numbers, timestamps and quoted values normalised away), each with its count, first
/// and last death, and one event as a sample.
#[utoipa::path(
    get,
    path = "/api/webhooks/dlq/clusters",
    tag = "dlq",
    params(ClustersQuery),
    responses(
        (status = 200, description = "The clusters", body = Clusters,
            example = json!({"clusters": [{
                "source": "stripe", "event_type": "invoice.payment_succeeded",
                "fingerprint": "no business is linked to Stripe customer <id>", "count": 41,
                "superseded": 0,
                "first_death": "2026-12-02T01:12:09Z", "last_death": "2026-12-02T03:04:51Z",
                "sample_id": 5082,
                "sample_error": "no business is linked to Stripe customer cus_Q1",
            }]})),
        (status = 400, description = "The limit is invalid", body = ErrorBody),
    )
)]
pub async fn list_clusters(
    State(state): State<AppState>,
    query: Result<Query<ClustersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sorted<Clusters>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let clusters = clusters::list(state.pool(), limit).await?;
    Ok(Sorted(Clusters { clusters }))
}

/// What a bulk retry will be for: the same selection hooktop and `hookd dlq retry-all` take.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    selection: Selection,
}

/// The count and breakdown of a bulk retry, and the token that acts on exactly this set.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewBody {
    selection: Selection,
    /// How many dead events the selection holds now.
    count: i64,
    /// The largest first.
    by_type: Vec<TypeCount>,
    /// Send as `{"token": ...}` to `POST /api/webhooks/dlq` to retry exactly these events.
    token: String,
}

/// Preview a bulk retry
///
/// Counts the dead events a selection holds, by type, and returns a token naming exactly that
/// set: a retry with it leaves alone events that die later, and reports those that were
/// retried meanwhile as skipped.
#[utoipa::path(
    post,
    path = "/api/webhooks/dlq/preview",
    tag = "dlq",
    request_body(
        content = PreviewRequest,
        examples(
            ("all" = (value = json!({"selection": {"kind": "all"}}))),
            ("matching" = (value = json!({"selection": {"kind": "matching", "source": "stripe",
                "event_type": null, "text": "cus_"}}))),
            ("cluster" = (value = json!({"selection": {"kind": "cluster", "source": "stripe",
                "event_type": "invoice.payment_succeeded",
                "fingerprint": "no business is linked to Stripe customer <id>"}}))),
        ),
    ),
    responses(
        (status = 200, description = "The preview", body = PreviewBody,
            example = json!({"selection": {"kind": "all"}, "count": 3,
                "by_type": [{"source": "stripe", "event_type": "invoice.payment_succeeded",
                             "count": 3}],
                "token": "eyJzZWxlY3Rpb24iOnsia2luZCI6ImFsbCJ9LCJzbmFwc2hvdCI6IjEwMDA6MTAwMDoiLCJjb3VudCI6M30"})),
        (status = 400, description = "The body is not a selection", body = ErrorBody),
    )
)]
pub async fn preview(
    State(state): State<AppState>,
    body: Result<Json<PreviewRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Sorted<PreviewBody>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let preview = selection::preview(state.pool(), &request.selection).await?;
    Ok(Sorted(PreviewBody {
        count: preview.count(),
        token: preview.token.encode(),
        selection: preview.token.selection,
        by_type: preview.by_type,
    }))
}

/// `{"webhook_id": N}`, `{"token": "..."}` (from a preview) or `{"retry_all": true}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// The dead event to send back to the queue.
    webhook_id: Option<i64>,
    /// Send back exactly the dead events a preview counted.
    token: Option<String>,
    /// Send every dead event back to the queue (previewed and retried at once).
    #[serde(default)]
    #[schema(default = false)]
    retry_all: bool,
}

/// What a retry sent back to the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    /// How many dead events went back to the queue.
    retried: u64,
    /// The event retried, when one was asked for by its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    webhook_id: Option<i64>,
    /// A bulk retry: how many the preview counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    previewed: Option<i64>,
    /// A bulk retry: previewed, but retried, purged or dead again by the time it came.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    skipped: Option<i64>,
}

impl Retried {
    fn bulk(done: selection::Retried) -> Retried {
        Retried {
            retried: done.retried.unsigned_abs(),
            webhook_id: None,
            previewed: Some(done.previewed),
            skipped: Some(done.skipped),
        }
    }
}

/// Retry dead events
///
/// Sends one dead event, exactly the set a preview counted, or all of them, back to the queue
/// with a fresh attempt budget; their attempt history is kept.
#[utoipa::path(
    post,
    path = "/api/webhooks/dlq",
    tag = "dlq",
    request_body(
        content = RetryRequest,
        examples(
            ("one" = (summary = "Retry one dead event", value = json!({"webhook_id": 42}))),
            ("previewed" = (summary = "Retry what a preview counted",
                value = json!({"token": "eyJzZWxlY3Rpb24iOnsia2luZCI6ImFsbCJ9LCJzbmFwc2hvdCI6IjEwMDA6MTAwMDoiLCJjb3VudCI6M30"}))),
            ("all" = (summary = "Retry every dead event", value = json!({"retry_all": true}))),
        ),
    ),
    responses(
        (status = 200, description = "The events went back to the queue", body = Retried,
            examples(
                ("one" = (value = json!({"retried": 1, "webhook_id": 42}))),
                ("previewed" = (value = json!({"retried": 41, "previewed": 42, "skipped": 1}))),
                ("all" = (value = json!({"retried": 17, "previewed": 17, "skipped": 0}))),
            )),
        (status = 400, description = "The body is none of the three forms, or the token is \
            not one", body = ErrorBody),
        (status = 404, description = "No event has that id, or the admin API is off \
            (`HOOKD_ADMIN_TOKEN` is not set)", body = ErrorBody),
        (status = 409, description = "The event exists but is not dead", body = ErrorBody),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    body: Result<Json<RetryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Sorted<Retried>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match request {
        RetryRequest {
            webhook_id: Some(id),
            token: None,
            retry_all: false,
        } => match dlq::retry(state.pool(), id).await {
            Ok(()) => Ok(Sorted(Retried {
                retried: 1,
                webhook_id: Some(id),
                previewed: None,
                skipped: None,
            })),
            Err(DlqError::NotFound(_)) => {
                Err(ApiError::NotFound(format!("event {id} does not exist")))
            }
            Err(e @ DlqError::NotDead { .. }) => Err(ApiError::Conflict(e.to_string())),
            Err(DlqError::Database(e)) => Err(e.into()),
        },
        RetryRequest {
            webhook_id: None,
            token: Some(token),
            retry_all: false,
        } => {
            let token = Token::decode(&token).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let done = selection::retry(state.pool(), &token).await?;
            Ok(Sorted(Retried::bulk(done)))
        }
        RetryRequest {
            webhook_id: None,
            token: None,
            retry_all: true,
        } => {
            let preview = selection::preview(state.pool(), &Selection::All).await?;
            let done = selection::retry(state.pool(), &preview.token).await?;
            Ok(Sorted(Retried::bulk(done)))
        }
        _ => Err(ApiError::BadRequest(
            "send {\"webhook_id\": N}, {\"token\": \"...\"} or {\"retry_all\": true}".into(),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeQuery {
    /// Purge the events that died longer ago than this age, such as `7d` or `12h`; required
    /// unless `superseded` or `token` is given.
    #[param(value_type = String, example = "7d")]
    older_than: Option<String>,
    /// Purge only superseded dead events (Stripe events whose customer already has newer
    /// state applied).
    #[serde(default)]
    #[param(default = false)]
    superseded: bool,
    /// Purge exactly what a purge preview counted (its `token`), instead of `older_than` and
    /// `superseded`.
    token: Option<String>,
    /// Needed for an age under 1h.
    #[serde(default)]
    #[param(default = false)]
    force: bool,
}

/// The admin token's name in `audit_logs`: hookd has one token, so one label.
const ADMIN_LABEL: &str = "admin-token";

/// The filter `older_than` and `superseded` give, refusing a missing or bad age.
fn purge_filter(older_than: Option<&str>, superseded: bool) -> Result<PurgeFilter, ApiError> {
    let secs = match older_than {
        None if superseded => None,
        None => {
            return Err(ApiError::BadRequest(
                "older_than is required, e.g. ?older_than=7d (or superseded=true)".into(),
            ));
        }
        Some(text) => Some(
            crate::cli::parse_age(text)
                .ok()
                .and_then(|age| chrono::Duration::from_std(age).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("older_than must be an age such as 7d or 12h".into())
                })?
                .num_seconds(),
        ),
    };
    Ok(PurgeFilter {
        older_than_secs: secs,
        superseded,
    })
}

/// What a purge deleted, and where it archived them first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    /// How many dead events were deleted (and archived).
    purged: u64,
    /// The age as given; null for a purge by token or of superseded events of any age.
    #[schema(required = true)]
    older_than: Option<String>,
    /// How many the preview counted (0 without a token).
    previewed: i64,
    /// Previewed, but retried or purged meanwhile: left alone.
    skipped: i64,
    /// The archive on the hookd host, null when archiving is off (`HOOKD_ARCHIVE_DIR=off`).
    #[schema(required = true)]
    archive: Option<String>,
    /// SHA-256 of the archive file, hex; also in the `audit_logs` row of the purge.
    #[schema(required = true)]
    sha256: Option<String>,
    /// What was purged, in words.
    filter: String,
}

/// Purge dead events
///
/// Deletes the dead events that died longer ago than `older_than` (or the superseded ones, or
/// exactly those a purge preview counted), after writing them with their attempts to a gzip
/// NDJSON archive on the hookd host (`HOOKD_ARCHIVE_DIR`); the purge is recorded in
/// `audit_logs` with the archive's path and SHA-256. `hookd dlq restore` brings them back.
#[utoipa::path(
    delete,
    path = "/api/webhooks/dlq",
    tag = "dlq",
    params(PurgeQuery),
    responses(
        (status = 200, description = "The events were archived and deleted", body = Purged,
            example = json!({"purged": 12, "older_than": "7d", "previewed": 0, "skipped": 0,
                "archive": "/var/lib/hookd/archive/dlq-purge-20261203T061500.123Z-812.ndjson.gz",
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "filter": "dead events that died more than 7d ago"})),
        (status = 400, description = "`older_than` is missing or not an age, or under 1h \
            without `force=true`, or the token is not one", body = ErrorBody),
        (status = 409, description = "The archive cannot be written: nothing was deleted",
            body = ErrorBody),
    )
)]
pub async fn purge(
    State(state): State<AppState>,
    query: Result<Query<PurgeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sorted<Purged>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let token = match &query.token {
        Some(text) => PurgeToken::decode(text).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => PurgeToken::unbounded(purge_filter(query.older_than.as_deref(), query.superseded)?),
    };
    let age = token
        .filter
        .older_than_secs
        .map(|s| std::time::Duration::from_secs(s.max(0).unsigned_abs()));
    if age.is_some_and(crate::cli::purge_needs_force) && !query.force {
        return Err(ApiError::BadRequest(format!(
            "refusing to purge with older_than under {}: purged events are gone for good, and \
             the providers' resends of them would be dropped as duplicates; add force=true to \
             purge anyway",
            humantime::format_duration(crate::cli::PURGE_FORCE_BELOW)
        )));
    }
    let actor = Actor::new(ADMIN_LABEL, "admin-api");
    let receipt = match archive::purge(state.pool(), &token, &state.inner.archive, &actor).await {
        Ok(receipt) => receipt,
        Err(e @ ArchiveError::Write { .. }) => {
            tracing::error!(error = %e, "purge refused");
            return Err(ApiError::Conflict(e.to_string()));
        }
        Err(ArchiveError::Database(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::Conflict(e.to_string())),
    };
    Ok(Sorted(Purged {
        purged: receipt.purged,
        older_than: query.older_than.filter(|_| query.token.is_none()),
        previewed: receipt.previewed,
        skipped: receipt.skipped,
        archive: receipt.archive.map(|p| p.display().to_string()),
        sha256: receipt.sha256,
        filter: receipt.filter,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgePreviewQuery {
    /// Count the events that died longer ago than this age, such as `7d`; required unless
    /// `superseded` is given.
    #[param(value_type = String, example = "7d")]
    older_than: Option<String>,
    /// Count only superseded dead events.
    #[serde(default)]
    #[param(default = false)]
    superseded: bool,
}

/// What a purge would delete, and the token that deletes exactly that.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurgePreviewBody {
    /// What the purge is for, in words.
    filter: String,
    /// How many dead events it would delete.
    count: i64,
    /// How many of them are superseded (a retry would change nothing).
    superseded: i64,
    /// The largest first.
    by_type: Vec<PurgeTypeCount>,
    /// Pass as `token` to `DELETE /api/webhooks/dlq` to purge exactly these events.
    token: String,
}

/// Preview a purge
///
/// Counts the dead events a purge would delete, by type and how many are superseded, and
/// returns a token naming exactly that set: a purge with it keeps events that die later, and
/// reports those retried meanwhile as skipped.
#[utoipa::path(
    get,
    path = "/api/webhooks/dlq/purge-preview",
    tag = "dlq",
    params(PurgePreviewQuery),
    responses(
        (status = 200, description = "The preview", body = PurgePreviewBody,
            example = json!({"filter": "dead events that died more than 7d ago", "count": 3,
                "superseded": 1,
                "by_type": [{"source": "stripe", "event_type": "customer.subscription.updated",
                             "count": 3, "superseded": 1}],
                "token": "eyJmaWx0ZXIiOnsib2xkZXJfdGhhbl9zZWNzIjo2MDQ4MDAsInN1cGVyc2VkZWQiOmZhbHNlfX0"})),
        (status = 400, description = "`older_than` is missing or not an age", body = ErrorBody),
    )
)]
pub async fn purge_preview(
    State(state): State<AppState>,
    query: Result<Query<PurgePreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sorted<PurgePreviewBody>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = purge_filter(query.older_than.as_deref(), query.superseded)?;
    let preview = dlq::purge_preview(state.pool(), &filter).await?;
    Ok(Sorted(PurgePreviewBody {
        filter: filter.describe(),
        count: preview.count(),
        superseded: preview.superseded,
        token: preview.token.encode(),
        by_type: preview.by_type,
    }))
}

/// Totals over a window, and the success rates they give.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rates {
    totals: stats::Totals,
    /// Succeeded over succeeded plus dead, from 0 to 1; null when no event finished.
    #[schema(required = true)]
    event_success_rate: Option<f64>,
    /// Successful attempts over all attempts, from 0 to 1; null when there was none.
    #[schema(required = true)]
    attempt_success_rate: Option<f64>,
}

impl Rates {
    fn of(totals: stats::Totals) -> Self {
        Rates {
            event_success_rate: totals.event_success_rate(),
            attempt_success_rate: totals.attempt_success_rate(),
            totals,
        }
    }
}

/// One source and event type over the last 24 hours.
#[derive(Debug, Serialize, ToSchema)]
pub struct TypeRates {
    source: String,
    event_type: String,
    received: i64,
    succeeded: i64,
    skipped: i64,
    /// Attempts that failed and left their event to be retried.
    failed_attempts: i64,
    /// Events dead-lettered in the window.
    dead: i64,
    /// Events waiting for a retry now.
    retrying_now: i64,
    /// Events in the dead-letter queue now.
    dead_now: i64,
    /// From 0 to 1; null when no event finished.
    #[schema(required = true)]
    event_success_rate: Option<f64>,
    /// From 0 to 1; null when there was no attempt.
    #[schema(required = true)]
    attempt_success_rate: Option<f64>,
}

/// How processings ended, in the runbook's words.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Success,
    Failure,
}

/// The runbook's `getWebhookStats` row: processings of one event type that ended one way.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunbookStat {
    event_type: String,
    status: Verdict,
    count: i64,
}

/// Processing over the last hour and day, by event type.
#[derive(Debug, Serialize, ToSchema)]
pub struct Analytics {
    last_hour: Rates,
    last_24h: Rates,
    by_type_24h: Vec<TypeRates>,
    /// Processings in the last 24 hours by event type and verdict (no rows of count 0).
    stats: Vec<RunbookStat>,
    /// Processings in the last 24 hours.
    total_processed: i64,
    /// Percentage (0 to 100) of `total_processed` that succeeded; null when it is 0.
    #[schema(required = true)]
    success_rate: Option<f64>,
}

/// Processing statistics
///
/// Per-type counts and success rates, from counters kept with the writes (no scan of the
/// history).
#[utoipa::path(
    get,
    path = "/api/webhooks/analytics",
    tag = "monitoring",
    responses(
        (status = 200, description = "The statistics", body = Analytics),
    )
)]
pub async fn analytics(State(state): State<AppState>) -> Result<Sorted<Analytics>, ApiError> {
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
        for (status, count) in [(Verdict::Success, success), (Verdict::Failure, failure)] {
            if count > 0 {
                runbook_stats.push(RunbookStat {
                    event_type: t.event_type.clone(),
                    status,
                    count,
                });
            }
        }
    }
    let by_type = types
        .into_iter()
        .map(|t| {
            let totals = t.totals();
            TypeRates {
                event_success_rate: totals.event_success_rate(),
                attempt_success_rate: totals.attempt_success_rate(),
                source: t.source,
                event_type: t.event_type,
                received: t.received,
                succeeded: t.succeeded,
                skipped: t.skipped,
                failed_attempts: t.failed,
                dead: t.dead,
                retrying_now: t.retrying_now,
                dead_now: t.dead_now,
            }
        })
        .collect();
    Ok(Sorted(Analytics {
        last_hour: Rates::of(hour),
        last_24h: Rates::of(day),
        by_type_24h: by_type,
        stats: runbook_stats,
        total_processed: processed,
        success_rate: (processed > 0).then(|| 100.0 * succeeded as f64 / processed as f64),
    }))
}

/// What is retained
///
/// The retention in force (`HOOKD_RETENTION`, `HOOKD_DEDUP_WINDOW`, `HOOKD_DLQ_RETENTION`)
/// and what it keeps: the days of processed events and the generations of idempotency keys.
/// Read from the catalog, so it costs the same whatever the history holds.
#[utoipa::path(
    get,
    path = "/api/webhooks/retention",
    tag = "monitoring",
    responses(
        (status = 200, description = "The retention", body = retention::Status,
            example = json!({"retention_secs": 2592000, "dedup_window_secs": 2592000,
                "dlq_retention_secs": null, "oldest_processed_day": "2026-11-04",
                "days_kept": 30, "days_ahead": 3, "next_drop_at": "2026-12-04T00:00:00Z",
                "undated_processed": 0, "key_generations": 2,
                "keys_generation_started_at": "2026-11-20T09:12:44Z",
                "policy_updated_at": "2026-12-03T06:00:01Z"})),
    )
)]
pub async fn retention(
    State(state): State<AppState>,
) -> Result<Sorted<retention::Status>, ApiError> {
    Ok(Sorted(retention::status(state.pool()).await?))
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Unhealthy,
}

/// The health of hookd as token holders see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    status: HealthStatus,
    /// Whether the database answered the queue's counts just now.
    database: bool,
    /// Whether this process's workers are coming round their loop; null on a receive-only
    /// instance.
    #[schema(required = true)]
    workers_alive: Option<bool>,
    /// Events pending, retrying or being processed; null when the database did not answer.
    #[schema(required = true)]
    queue_depth: Option<i64>,
    /// Events waiting for a retry; null when the database did not answer.
    #[schema(required = true)]
    retrying: Option<i64>,
    /// Events in the dead-letter queue; null when the database did not answer.
    #[schema(required = true)]
    dead: Option<i64>,
    /// Seconds since the oldest waiting event was received; null when none waits or the
    /// database did not answer.
    #[schema(required = true)]
    oldest_pending_secs: Option<f64>,
}

/// The health of hookd as anyone else sees it: the word alone.
#[derive(Debug, Serialize, ToSchema)]
// Never deserialised: this only closes the schema, so a report matches one branch of `Health`.
#[serde(deny_unknown_fields)]
pub struct HealthWord {
    status: HealthStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Health {
    Report(HealthReport),
    Word(HealthWord),
}

// Anyone may ask (load balancers do, often), so the word comes from what the reachability
// monitor and the workers' heartbeat already know, with no query per call; only the token
// holders' details take one.
/// Health
///
/// Healthy: the database answers and this process's workers, if it runs any, are looping.
/// Anyone may ask and gets the word; with the admin token the answer has the details and the
/// queue's counts. A wrong token is not refused: it gets the word.
#[utoipa::path(
    get,
    path = "/api/webhooks/health",
    tag = "monitoring",
    // `openapi::TOKEN_SCHEME`; the macro takes only a literal.
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "Healthy", body = Health,
            examples(
                ("anyone" = (value = json!({"status": "ok"}))),
                ("token holder" = (value = json!({
                    "status": "ok", "database": true, "workers_alive": true, "queue_depth": 3,
                    "retrying": 1, "dead": 0, "oldest_pending_secs": 0.8,
                }))),
            )),
        (status = 503, description = "Unhealthy: the database does not answer or the workers \
            stopped", body = Health,
            example = json!({"status": "unhealthy"})),
    )
)]
pub async fn health(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // None on a receive-only instance.
    let workers = state.inner.heartbeat.as_ref().map(|h| h.alive());
    let verdict = |database: bool| {
        let healthy = database && workers != Some(false);
        if healthy {
            (StatusCode::OK, HealthStatus::Ok)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, HealthStatus::Unhealthy)
        }
    };
    if check_token(&state, &headers).is_err() {
        let (status, word) = verdict(state.reachability().is_up());
        return (status, Sorted(Health::Word(HealthWord { status: word }))).into_response();
    }
    let queue = state.reachability().guard(stats::queue(state.pool())).await;
    let (status, word) = verdict(queue.is_ok());
    let database = queue.is_ok();
    let queue = queue.ok();
    let body = HealthReport {
        status: word,
        database,
        workers_alive: workers,
        queue_depth: queue.map(|q| q.depth()),
        retrying: queue.map(|q| q.retrying),
        dead: queue.map(|q| q.dead),
        oldest_pending_secs: queue.and_then(|q| q.oldest_pending_secs),
    };
    (status, Sorted(Health::Report(body))).into_response()
}

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Metrics
///
/// hookd's metrics for Prometheus, in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "monitoring",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = OPENMETRICS),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let queue = stats::queue(state.pool()).await?;
    let text = state.metrics().render(&queue);
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}
