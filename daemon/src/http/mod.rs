//! HTTP transport: routes, the state they share, and the server with its limits. Verification
//! lives in `verify`, storage in `common::db`; handlers here only connect them.

mod admin;
mod body;
mod client;
mod error;
pub mod openapi;
mod rate_limit;
mod server;
mod webhooks;

use crate::reachability::Reachability;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use secrecy::SecretString;
use sqlx::PgPool;

pub use error::ApiError;
pub use server::serve;

use axum::http::StatusCode;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::announce::Announcer;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::worker::Heartbeat;

/// What every request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    ingest: Ingest,
    reachability: Arc<Reachability>,
    /// Stops the reachability monitor with the state.
    _monitor: tokio_util::sync::DropGuard,
    providers: crate::providers::Registry,
    admin_token: Option<SecretString>,
    budget: body::Budget,
    limits: rate_limit::Limits,
    metrics: Arc<Metrics>,
    heartbeat: Option<Heartbeat>,
    /// Where admin purges archive what they delete.
    archive: common::db::archive::ArchiveTarget,
}

impl AppState {
    /// `heartbeat` is the workers' (none when this process runs no workers); `announcer`
    /// hears of every stored event.
    pub fn new(
        pool: PgPool,
        config: &crate::Config,
        metrics: Arc<Metrics>,
        heartbeat: Option<Heartbeat>,
        announcer: Arc<Announcer>,
    ) -> Self {
        let reachability = Arc::new(Reachability::default());
        let monitor = tokio_util::sync::CancellationToken::new();
        tokio::spawn(reachability.clone().run(pool.clone(), monitor.clone()));
        AppState {
            inner: Arc::new(Inner {
                ingest: Ingest::start(pool.clone(), announcer, reachability.clone()),
                reachability,
                _monitor: monitor.drop_guard(),
                pool,
                providers: config.providers.clone(),
                admin_token: config.admin_token.clone(),
                budget: body::Budget::new(config),
                limits: rate_limit::Limits::new(config),
                metrics,
                heartbeat,
                archive: config.archive_dir.clone().into(),
            }),
        }
    }

    /// Whether the database answers, known ahead of the requests that need it.
    pub fn reachability(&self) -> &Reachability {
        &self.inner.reachability
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// The source a webhook path names, for metrics of requests refused before their route ran.
fn source_of(path: &str) -> Option<common::Source> {
    path.strip_prefix("/api/")?
        .strip_suffix("/webhook")?
        .parse()
        .ok()
}

/// The routes behind the admin token. `openapi::document` documents them from the same list.
fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin::list_dead, admin::retry, admin::purge))
        .routes(routes!(admin::list_clusters))
        .routes(routes!(admin::preview))
        .routes(routes!(admin::purge_preview))
        .routes(routes!(admin::analytics))
        .routes(routes!(admin::retention))
        .routes(routes!(admin::metrics))
        .routes(routes!(openapi::serve))
}

/// The admin API's routes that answer anyone.
fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(admin::health))
}

pub fn app(state: AppState) -> Router {
    let body_limit = state.inner.budget.limit;
    let deadline = state.inner.budget.deadline;
    let webhooks = Router::new()
        .route("/api/{source}/webhook", post(webhooks::receive))
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::read_whole,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            webhooks::resolve,
        ));
    let admin = Router::from(admin_routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ))
        // Admin requests are small JSON documents.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            deadline,
        ));
    // Webhook routes log each delivery themselves, with the event's id (rejected, rate
    // limited or unavailable at info, accepted at debug); a generic line and span for each
    // would only double the cost of logging on the hot path.
    Router::new()
        .merge(admin)
        .merge(Router::from(open_routes()))
        .fallback(|| async { rate_limit::unverified(ApiError::NotFound("no such route".into())) })
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .merge(webhooks)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ))
        .with_state(state)
}
