//! Optional forwarding of each event's original body to a downstream URL per source, signed
//! with Standard Webhooks headers so the receiver can verify it and deduplicate on
//! `webhook-id` (a crash between delivery and commit means the delivery is repeated).
//!
//! The downstream is trusted with events, not with hookd itself. Redirects are not followed:
//! a 3xx is a failed delivery, because following one would let whoever controls (or spoofs)
//! the downstream steer hookd's signed requests at internal addresses it never configured.
//! For the same reason no `Referer` is sent. Of the response only the first
//! [`RESPONSE_SNIPPET`] bytes are read, then the connection is dropped, so a hostile or broken
//! downstream streaming an endless body can neither make hookd buffer it nor hold a worker
//! past the forward timeout. `HOOKD_FORWARD_HTTPS_ONLY` additionally keeps event bodies and
//! signatures off cleartext links.

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
        https_only: bool,
    ) -> reqwest::Result<Self> {
        // The total timeout also bounds reading the body, however slowly it trickles.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .https_only(https_only)
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
        let text = snippet(response).await;
        Some(Delivery {
            status: Some(status.as_u16()),
            error: (!status.is_success())
                .then(|| format!("forward to {} answered {status}", redact(url))),
            response: Some(text),
        })
    }
}

/// The start of the response body, at most [`RESPONSE_SNIPPET`] bytes of text; the rest is
/// never read. The status has already decided the outcome, so a body that breaks off or
/// times out still yields what arrived.
async fn snippet(mut response: reqwest::Response) -> String {
    let mut kept = Vec::with_capacity(RESPONSE_SNIPPET);
    while kept.len() < RESPONSE_SNIPPET {
        let Ok(Some(chunk)) = response.chunk().await else {
            break;
        };
        let room = RESPONSE_SNIPPET - kept.len();
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    // Dropping the response closes the connection instead of draining it for reuse.
    drop(response);
    if kept.len() == RESPONSE_SNIPPET {
        kept.truncate(complete_prefix(&kept));
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    // Replacement characters are wider than the invalid bytes they stand for.
    if text.len() > RESPONSE_SNIPPET {
        let mut end = RESPONSE_SNIPPET;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The length of `bytes` without a multi-byte UTF-8 sequence that the cut left unfinished, so
/// the snippet does not end in a replacement character the downstream never sent.
fn complete_prefix(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(4) {
        let byte = bytes[len - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue;
        }
        let width = match byte {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if width > back { len - back } else { len };
    }
    len
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_never_leaves_half_a_character() {
        let euro = "€".as_bytes();
        for keep in 0..=euro.len() {
            let mut bytes = b"ab".to_vec();
            bytes.extend_from_slice(&euro[..keep]);
            let want = if keep == euro.len() { 5 } else { 2 };
            assert_eq!(complete_prefix(&bytes), want, "{keep} of 3 bytes kept");
        }
        assert_eq!(complete_prefix(b""), 0);
        assert_eq!(complete_prefix("ab\u{1F600}".as_bytes()), 6);
        // Invalid bytes the downstream sent are left to lossy decoding.
        assert_eq!(complete_prefix(&[b'a', 0x80, 0x80, 0x80, 0x80]), 5);
    }
}
