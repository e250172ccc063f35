//! Per-client rate limiting of the webhook routes. The burst is generous on purpose: after an
//! outage Stripe and Telnyx retry everything they hold at once, and those must get through.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::{ApiError, AppState};

#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_second).max(per_second);
        let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ));
        // Forget idle clients now and then, so the table stays as small as the active set.
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
        RateLimit { limiter }
    }

    /// Whole seconds to wait before `client` may send again, or `None` if it may now.
    fn check(&self, client: IpAddr) -> Option<u64> {
        self.limiter.check_key(&client).err().map(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(limit) = &state.inner.rate_limit {
        // The peer address: X-Forwarded-For is the client's to forge, so it is not trusted.
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let Some(wait) = client.and_then(|ip| limit.check(ip)) {
            tracing::info!(client = ?client, path = request.uri().path(), "rate limited");
            let source = request
                .uri()
                .path()
                .split('/')
                .nth(2)
                .and_then(|s| s.parse().ok());
            if let Some(source) = source {
                state.metrics().rejected(source, "rate_limited");
            }
            return ApiError::TooManyRequests(wait.max(1)).into_response();
        }
    }
    next.run(request).await
}
