//! Providers that sign with an HMAC of the body (GitHub, Shopify, Slack- or Twilio-style
//! senders, most SaaS tools): one implementation, described by a [`Spec`]. The built-in ones
//! are specs in their own modules; an operator declares more in the TOML file, no code:
//!
//! ```toml
//! [sources.acme]
//! secret = "ACME_WEBHOOK_SECRET"   # the setting holding the secret (env, _FILE, credential)
//! header = "X-Acme-Signature"      # where the signature is
//! algorithm = "sha256"             # or "sha1"
//! encoding = "hex"                 # or "base64"
//! prefix = "sha256="               # before the signature in the header, if any
//! key = "header:X-Acme-Delivery"   # the idempotency key: a header, or "pointer:/id"
//! type = "pointer:/type"           # the event type, likewise
//! timestamp_header = "X-Acme-Timestamp"   # optional, checked within tolerance_secs
//! tolerance_secs = 300
//! signed = "{timestamp}.{body}"    # what the HMAC covers; default "{body}"
//! ```

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::Source;
use hmac::{Hmac as HmacOf, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{Field, Outgoing, Provider, SampleArgs, SignError, header, token};
use crate::config::{ConfigError, Sources, invalid};
use crate::verify::{TOLERANCE_SECS, VerifyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// How a provider signs.
#[derive(Debug, Clone)]
pub struct Spec {
    pub source: Source,
    pub header: &'static str,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub prefix: &'static str,
    pub key: Field,
    pub event_type: Field,
    /// The timestamp header and the tolerance around the server clock, in seconds.
    pub timestamp: Option<(&'static str, i64)>,
    /// What the HMAC covers: `{body}` and `{timestamp}` are replaced.
    pub signed: &'static str,
    /// The sample body `hookd send` posts, given the event type.
    pub sample: fn(&str, &SampleArgs) -> Value,
}

#[derive(Debug)]
pub struct Hmac {
    spec: Spec,
    secret: SecretString,
}

impl Hmac {
    pub fn new(spec: Spec, secret: SecretString) -> Self {
        Hmac { spec, secret }
    }

    fn tag(&self, timestamp: &str, body: &[u8]) -> Vec<u8> {
        let (head, tail) = self
            .spec
            .signed
            .split_once("{body}")
            .unwrap_or((self.spec.signed, ""));
        let key = self.secret.expose_secret().as_bytes();
        let parts = [
            head.replace("{timestamp}", timestamp).into_bytes(),
            body.to_vec(),
            tail.replace("{timestamp}", timestamp).into_bytes(),
        ];
        match self.spec.algorithm {
            Algorithm::Sha256 => mac::<HmacOf<sha2::Sha256>>(key, &parts),
            Algorithm::Sha1 => mac::<HmacOf<sha1::Sha1>>(key, &parts),
        }
    }

    fn encode(&self, tag: &[u8]) -> String {
        let encoded = match self.spec.encoding {
            Encoding::Hex => hex::encode(tag),
            Encoding::Base64 => BASE64.encode(tag),
        };
        format!("{}{encoded}", self.spec.prefix)
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[Vec<u8>]) -> Vec<u8> {
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

impl Provider for Hmac {
    fn source(&self) -> Source {
        self.spec.source
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let name = self.spec.header;
        let signature = required(headers, name)?;
        let timestamp = match self.spec.timestamp {
            None => String::new(),
            Some((ts_header, tolerance)) => {
                let ts = required(headers, ts_header)?;
                let seconds: i64 = ts
                    .parse()
                    .ok()
                    .filter(|_| ts.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(VerifyError::MalformedHeader {
                        header: ts_header,
                        reason: "timestamp is not a number of seconds",
                    })?;
                if now.abs_diff(seconds) > tolerance.unsigned_abs() {
                    return Err(VerifyError::StaleTimestamp);
                }
                ts.to_owned()
            }
        };
        let malformed = |reason| VerifyError::MalformedHeader {
            header: name,
            reason,
        };
        let encoded = signature
            .strip_prefix(self.spec.prefix)
            .ok_or(malformed("the signature lacks its prefix"))?;
        let presented = match self.spec.encoding {
            Encoding::Hex => hex::decode(encoded).map_err(|_| malformed("signature is not hex"))?,
            Encoding::Base64 => BASE64
                .decode(encoded)
                .map_err(|_| malformed("signature is not base64"))?,
        };
        let expected = self.tag(&timestamp, body);
        if subtle::ConstantTimeEq::ct_eq(expected.as_slice(), presented.as_slice()).into() {
            Ok(())
        } else {
            Err(VerifyError::NoMatch)
        }
    }

    fn fields(&self) -> (Field, Field) {
        (self.spec.key.clone(), self.spec.event_type.clone())
    }

    fn sign(&self, event: &Outgoing, now: i64) -> Result<Vec<(String, String)>, SignError> {
        let timestamp = now.to_string();
        let mut headers = Vec::new();
        if let Some((ts_header, _)) = self.spec.timestamp {
            headers.push((ts_header.to_owned(), timestamp.clone()));
        }
        let tag = self.tag(
            if self.spec.timestamp.is_some() {
                &timestamp
            } else {
                ""
            },
            &event.body,
        );
        headers.push((self.spec.header.to_owned(), self.encode(&tag)));
        for (field, value) in [
            (&self.spec.key, &event.key),
            (&self.spec.event_type, &event.event_type),
        ] {
            if let Field::Header(names) = field
                && let Some(name) = names.first()
            {
                headers.push(((*name).to_owned(), value.clone()));
            }
        }
        Ok(headers)
    }

    fn sample(&self, event_type: &str, args: &SampleArgs) -> Outgoing {
        let key = if args.id.is_empty() {
            format!("{}_{}", self.spec.source, token(20))
        } else {
            args.id.clone()
        };
        let mut body = (self.spec.sample)(event_type, args);
        for (field, value) in [
            (&self.spec.key, &key),
            (&self.spec.event_type, &event_type.to_owned()),
        ] {
            if let Field::Pointer(pointer) = field {
                set_pointer(&mut body, pointer, value);
            }
        }
        Outgoing {
            key,
            event_type: event_type.to_owned(),
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    match header(headers, name).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(VerifyError::MissingHeader(name)),
    }
}

/// Writes `value` at `pointer`, making the objects on the way.
fn set_pointer(body: &mut Value, pointer: &str, value: &str) {
    let mut at = body;
    let mut segments = pointer.trim_start_matches('/').split('/').peekable();
    while let Some(segment) = segments.next() {
        if !at.is_object() {
            *at = json!({});
        }
        let Value::Object(map) = at else { return };
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segments.peek().is_none() {
            map.insert(segment, Value::from(value));
            return;
        }
        at = map.entry(segment).or_insert_with(|| json!({}));
    }
}

/// A name read from the configuration, kept for the life of the process.
fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

/// `header:<name>` (one or more names separated by `|`, the first present wins) or
/// `pointer:<JSON pointer>`.
fn field(setting: &str, text: &str) -> Result<Field, ConfigError> {
    match text.split_once(':') {
        Some(("header", names)) if !names.trim().is_empty() => {
            let names: Vec<&'static str> = names
                .split('|')
                .map(|n| leak(&n.trim().to_ascii_lowercase()))
                .collect();
            Ok(Field::Header(Box::leak(names.into_boxed_slice())))
        }
        Some(("pointer", pointer)) if pointer.starts_with('/') => {
            Ok(Field::Pointer(pointer.to_owned()))
        }
        _ => Err(invalid(
            setting,
            format!("expected header:<name> or pointer:/<path>, got {text:?}"),
        )),
    }
}

/// The operator's sources: every `[sources.<name>]` table of the TOML file.
pub fn load_all(sources: &Sources) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for (name, table) in sources.tables("sources")? {
        let at = |key: &str| format!("sources.{name}.{key}");
        let text = |key: &str| -> Result<Option<String>, ConfigError> {
            match table.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(&at(key), "expected a string")),
            }
        };
        let need = |key: &str| -> Result<String, ConfigError> {
            text(key)?.ok_or_else(|| invalid(&at(key), "is required"))
        };
        let source = Source::register(&name)
            .map_err(|e| invalid(&format!("sources.{name}"), e.to_string()))?;
        let secret_setting = need("secret")?;
        let secret = sources.secret(&secret_setting)?.ok_or_else(|| {
            invalid(
                &secret_setting,
                format!("is not set (the secret of source {name})"),
            )
        })?;
        let algorithm = match text("algorithm")?.as_deref().unwrap_or("sha256") {
            "sha256" => Algorithm::Sha256,
            "sha1" => Algorithm::Sha1,
            other => {
                return Err(invalid(
                    &at("algorithm"),
                    format!("expected sha256 or sha1, got {other:?}"),
                ));
            }
        };
        let encoding = match text("encoding")?.as_deref().unwrap_or("hex") {
            "hex" => Encoding::Hex,
            "base64" => Encoding::Base64,
            other => {
                return Err(invalid(
                    &at("encoding"),
                    format!("expected hex or base64, got {other:?}"),
                ));
            }
        };
        let tolerance = match table.get("tolerance_secs") {
            None => TOLERANCE_SECS,
            Some(toml::Value::Integer(n)) if *n > 0 => *n,
            Some(_) => {
                return Err(invalid(
                    &at("tolerance_secs"),
                    "expected a number of seconds above 0",
                ));
            }
        };
        let timestamp =
            text("timestamp_header")?.map(|h| (leak(&h.to_ascii_lowercase()), tolerance));
        let signed = text("signed")?.unwrap_or_else(|| "{body}".into());
        if !signed.contains("{body}") || (signed.contains("{timestamp}") && timestamp.is_none()) {
            return Err(invalid(
                &at("signed"),
                "must contain {body}, and {timestamp} only with a timestamp_header",
            ));
        }
        let spec = Spec {
            source,
            header: leak(&need("header")?.to_ascii_lowercase()),
            algorithm,
            encoding,
            prefix: leak(&text("prefix")?.unwrap_or_default()),
            key: field(&at("key"), &need("key")?)?,
            event_type: field(&at("type"), &need("type")?)?,
            timestamp,
            signed: leak(&signed),
            sample: |_, _| json!({}),
        };
        providers.push(Arc::new(Hmac::new(spec, secret.into())));
    }
    Ok(providers)
}
