//! Optional forwarding of each event's original body to a downstream URL per source, signed
//! with Standard Webhooks headers so the receiver can verify it and deduplicate on
//! `webhook-id` (a crash between delivery and commit means the delivery is repeated).

use std::collections::HashMap;
use std::time::Duration;

use common::Source;
use common::db::events::ClaimedEvent;

use crate::verify::standard;

/// How much of a downstream response is kept in the attempt history.
const RESPONSE_SNIPPET: usize = 512;

#[derive(Debug, Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    urls: HashMap<Source, reqwest::Url>,
    secret: Option<standard::Secret>,
}

/// What the downstream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub status: Option<u16>,
    pub response: Option<String>,
    /// Set when the delivery failed: a non-2xx status, a timeout, a refused connection.
    pub error: Option<String>,
}

impl Forwarder {
    pub fn new(
        urls: HashMap<Source, reqwest::Url>,
        secret: Option<standard::Secret>,
        timeout: Duration,
    ) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("hookd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Forwarder {
            client,
            urls,
            secret,
        })
    }

    pub fn forwards(&self, source: Source) -> bool {
        self.urls.contains_key(&source)
    }

    /// Delivers the event, or returns `None` when its source is not forwarded.
    pub async fn deliver(&self, event: &ClaimedEvent) -> Option<Delivery> {
        let url = self.urls.get(&event.source())?;
        let id = format!("hookd_{}", event.id);
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(url.clone())
            .header("content-type", "application/json")
            .header(standard::ID_HEADER, &id)
            .header(standard::TIMESTAMP_HEADER, timestamp.to_string())
            .header("hookd-source", event.source().as_str())
            .header("hookd-event-type", &event.event_type);
        if let Some(secret) = &self.secret {
            request = request.header(
                standard::SIGNATURE_HEADER,
                standard::sign(secret, &id, timestamp, &event.body),
            );
        }
        let response = match request.body(event.body.clone()).send().await {
            Ok(response) => response,
            Err(e) => {
                return Some(Delivery {
                    status: None,
                    response: None,
                    error: Some(format!(
                        "forward to {} failed: {}",
                        redact(url),
                        describe(&e)
                    )),
                });
            }
        };
        let status = response.status();
        let mut text = response.text().await.unwrap_or_default();
        if text.len() > RESPONSE_SNIPPET {
            let mut end = RESPONSE_SNIPPET;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        Some(Delivery {
            status: Some(status.as_u16()),
            error: (!status.is_success())
                .then(|| format!("forward to {} answered {status}", redact(url))),
            response: Some(text),
        })
    }
}

/// The URL without credentials or query, which may carry tokens.
fn redact(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    )
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request error"
    }
}
