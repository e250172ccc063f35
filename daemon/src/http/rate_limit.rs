//! Rate limits that protect hookd without refusing genuine deliveries.
//!
//! Only failures are charged to a client: requests that fail verification, hit no route or
//! fail the admin token. A client over its limit is turned away with 429 before its body is
//! read, so a flood of junk costs hookd almost nothing, and everyone else, a provider sending
//! 64 deliveries at once after an outage included, is untouched. Verified deliveries are
//! charged to nothing per client; hookd protects itself with global caps instead (`body`,
//! `server`). Operators who want one may set a ceiling per source.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::Source;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::client::{ClientKey, TrustedProxies};
use super::{ApiError, AppState};

/// Marks a response that charges its client: the request failed before it proved itself.
#[derive(Debug, Clone, Copy)]
pub struct Unverified;

/// `error` as a response that is charged to the client's failure budget.
pub fn unverified(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.extensions_mut().insert(Unverified);
    response
}

pub struct Limits {
    proxies: TrustedProxies,
    failures: Option<Failures>,
    sources: Option<Arc<DefaultKeyedRateLimiter<Source>>>,
}

struct Failures {
    limiter: Arc<DefaultKeyedRateLimiter<ClientKey>>,
    /// Clients over their limit and until when: turned away before their body is read.
    barred: Arc<Mutex<HashMap<ClientKey, Instant>>>,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(per_second).max(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

/// Whole seconds until `not_until`, at least one.
fn seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Limits {
    pub fn new(config: &crate::Config) -> Self {
        let failures = config.rate_limit.map(|per_second| {
            let failures = Failures {
                limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                    per_second,
                    config.rate_burst,
                ))),
                barred: Arc::default(),
            };
            tokio::spawn(forget_idle(
                Arc::downgrade(&failures.limiter),
                Arc::downgrade(&failures.barred),
            ));
            failures
        });
        let sources = config
            .source_rate_limit
            .map(|per_second| Arc::new(DefaultKeyedRateLimiter::keyed(quota(per_second, 0))));
        Limits {
            proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            failures,
            sources,
        }
    }

    /// Seconds a barred client must wait, or `None` if it may send now.
    fn barred(&self, client: ClientKey) -> Option<u64> {
        let failures = self.failures.as_ref()?;
        let mut barred = failures.barred.lock().unwrap_or_else(|e| e.into_inner());
        let until = *barred.get(&client)?;
        match until.checked_duration_since(Instant::now()) {
            Some(wait) if !wait.is_zero() => Some(seconds(wait)),
            _ => {
                barred.remove(&client);
                None
            }
        }
    }

    /// Counts one failure of `client`; past its limit it is barred for as long as the
    /// limiter says.
    fn charge(&self, client: ClientKey) {
        let Some(failures) = &self.failures else {
            return;
        };
        if let Err(not_until) = failures.limiter.check_key(&client) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::info!(%client, wait_ms = wait.as_millis() as u64, "client barred after repeated failures");
            failures
                .barred
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(client, Instant::now() + wait);
        }
    }

    /// Seconds to wait if `source` is over the operator's ceiling.
    pub fn source_over(&self, source: Source) -> Option<u64> {
        let limiter = self.sources.as_ref()?;
        limiter
            .check_key(&source)
            .err()
            .map(|not_until| seconds(not_until.wait_time_from(DefaultClock::default().now())))
    }
}

/// Forgets idle clients now and then, so the tables stay as small as the active set.
async fn forget_idle(
    limiter: Weak<DefaultKeyedRateLimiter<ClientKey>>,
    barred: Weak<Mutex<HashMap<ClientKey, Instant>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let (Some(limiter), Some(barred)) = (limiter.upgrade(), barred.upgrade()) else {
            return;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
        let now = Instant::now();
        let mut barred = barred.lock().unwrap_or_else(|e| e.into_inner());
        barred.retain(|_, until| *until > now);
        barred.shrink_to_fit();
    }
}

/// Turns barred clients away first, and charges the failures of everyone else.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.inner.limits;
    let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return next.run(request).await;
    };
    let client = limits.proxies.client(peer, request.headers());
    if let Some(wait) = limits.barred(client) {
        tracing::debug!(%client, path = request.uri().path(), "rate limited");
        if let Some(source) = super::source_of(request.uri().path()) {
            state.metrics().rejected(source, "rate_limited");
        }
        return ApiError::TooManyRequests(wait).into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<Unverified>().is_some() {
        limits.charge(client);
    }
    response
}
