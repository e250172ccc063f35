//! HTTP transport: routes and the state they share. Verification lives in `verify`, storage in
//! `common::db`; handlers here only connect them.

mod error;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use secrecy::SecretString;
use sqlx::PgPool;

pub use error::ApiError;

use crate::verify::{standard, telnyx};

/// What every request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    stripe_secret: Option<SecretString>,
    telnyx_public_key: Option<telnyx::PublicKey>,
    custom_secret: Option<standard::Secret>,
    body_limit: usize,
}

impl AppState {
    pub fn new(pool: PgPool, config: &crate::Config) -> Self {
        AppState {
            inner: Arc::new(Inner {
                pool,
                stripe_secret: config.stripe_secret.clone(),
                telnyx_public_key: config.telnyx_public_key.clone(),
                custom_secret: config.custom_secret.clone(),
                body_limit: config.body_limit,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
}

pub fn app(state: AppState) -> Router {
    let body_limit = state.inner.body_limit;
    Router::new()
        .route("/api/stripe/webhook", post(webhooks::stripe))
        .route("/api/telnyx/webhook", post(webhooks::telnyx))
        .route("/api/custom/webhook", post(webhooks::custom))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
