//! Webhook providers. A provider is one module implementing [`Provider`]: its settings, how it
//! verifies a request from the raw headers and bytes, how it signs one (for `hookd send`,
//! loadgen and the tests: the one implementation everyone uses), where its idempotency key and
//! event type are, and the samples `hookd send` knows. [`BUILT_IN`] lists them; an operator
//! declares more in the TOML file ([`hmac`]). Nothing else in hookd names a provider: its
//! route is `POST /api/{source}/webhook`, its events carry its name as their source.

pub mod github;
pub mod hmac;
pub mod pointer;
pub mod shopify;
pub mod standard;
pub mod stripe;
pub mod telnyx;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use common::Source;

use crate::config::{ConfigError, Sources};
use crate::verify::VerifyError;

/// Where a verified request's idempotency key or event type is.
#[derive(Debug, Clone)]
pub enum Field {
    /// A JSON pointer into the body.
    Pointer(String),
    /// A request header: the first of these names that is present.
    Header(&'static [&'static str]),
}

/// One event as its provider would send it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The idempotency key hookd will find (the provider's event or delivery id).
    pub key: String,
    pub event_type: String,
    pub body: Vec<u8>,
}

/// What a sample is about, for providers whose samples refer to the application's data.
#[derive(Debug, Clone)]
pub struct SampleArgs {
    pub id: String,
    pub customer: String,
    pub call_id: String,
    pub business_number: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0} is not set, so hookd cannot sign as {1}")]
    NoKey(&'static str, Source),
}

pub trait Provider: Send + Sync + std::fmt::Debug {
    fn source(&self) -> Source;

    /// Whether the request is the provider's: signature, timestamp, required headers.
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError>;

    /// Where the idempotency key is, and where the event type is.
    fn fields(&self) -> (Field, Field);

    /// The headers that sign `event` at `now`, as the provider sends them.
    fn sign(&self, event: &Outgoing, now: i64) -> Result<Vec<(String, String)>, SignError>;

    /// A realistic event of `event_type` for `hookd send`.
    fn sample(&self, event_type: &str, args: &SampleArgs) -> Outgoing;

    /// The event types `hookd send` suggests.
    fn sample_types(&self) -> &[&'static str] {
        &[]
    }
}

/// How a built-in provider comes to be: from its settings, or `None` when they are absent
/// (its route then answers 404).
pub type Load = fn(&Sources) -> Result<Option<Arc<dyn Provider>>, ConfigError>;

/// Every built-in provider, by name. Adding one is a module and a line here.
pub const BUILT_IN: &[(&str, Load)] = &[
    ("stripe", stripe::load),
    ("telnyx", telnyx::load),
    ("custom", standard::load),
    ("github", github::load),
    ("shopify", shopify::load),
];

/// The providers this hookd knows, configured or not.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    configured: BTreeMap<Source, Arc<dyn Provider>>,
    known: Vec<Source>,
}

impl Registry {
    /// The built-in providers whose settings are present, and the operator's own.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut registry = Registry::default();
        for (name, load) in BUILT_IN {
            let source = Source::register(name).expect("built-in names are valid");
            registry.known.push(source);
            if let Some(provider) = load(sources)? {
                registry.configured.insert(source, provider);
            }
        }
        for provider in hmac::load_all(sources)? {
            let source = provider.source();
            if registry.known.contains(&source) {
                return Err(ConfigError::Invalid {
                    name: format!("sources.{source}"),
                    reason: "a built-in provider has this name".into(),
                });
            }
            registry.known.push(source);
            registry.configured.insert(source, provider);
        }
        Ok(registry)
    }

    pub fn get(&self, source: Source) -> Option<&Arc<dyn Provider>> {
        self.configured.get(&source)
    }

    /// Every provider hookd knows (its route exists), configured or not.
    pub fn known(&self) -> &[Source] {
        &self.known
    }

    pub fn configured(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.configured.values()
    }

    /// Turns a source off, as if its settings were absent.
    pub fn remove(&mut self, source: Source) {
        self.configured.remove(&source);
    }
}

/// The value of header `name`, if it is there and readable.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A short random token, for sample ids.
pub fn token(len: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Builds `headers` into a map, for callers that verify what they signed.
pub fn header_map(headers: &[(String, String)]) -> HeaderMap {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                axum::http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                value.parse().ok()?,
            ))
        })
        .collect()
}
