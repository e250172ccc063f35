//! Settings, from the environment, an optional TOML file (`HOOKD_CONFIG`) and, for secrets,
//! files (`NAME_FILE`, or systemd credentials in `$CREDENTIALS_DIRECTORY`). The environment
//! wins over the file. Anything missing or malformed stops start-up with one line naming it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Source;
use common::db::schema::Schema;
use secrecy::SecretString;

use crate::verify::standard;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
    #[error("cannot read {name} from {path}: {source}")]
    Unreadable {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn trimmed(value: &str) -> Option<String> {
    Some(value.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The Standard Webhooks specification asks for keys of 24 to 64 bytes.
const STANDARD_KEY_MIN_BYTES: usize = 24;

/// The admin token can retry and purge the dead-letter queue: this rules out the short,
/// memorable tokens typed by hand; docs/INSTALL.md's `head -c 32 /dev/urandom | base64` gives 44.
const ADMIN_TOKEN_MIN_BYTES: usize = 32;

/// A Standard Webhooks secret, refused when its key is too short to be worth verifying with.
pub(crate) fn standard_secret(
    sources: &Sources,
    name: &str,
) -> Result<Option<standard::Secret>, ConfigError> {
    let Some(text) = sources.secret(name)? else {
        return Ok(None);
    };
    let secret: standard::Secret = text.parse().map_err(|e: String| invalid(name, e))?;
    if secret.key_len() < STANDARD_KEY_MIN_BYTES {
        return Err(invalid(
            name,
            format!(
                "the key is shorter than {STANDARD_KEY_MIN_BYTES} bytes, the Standard Webhooks \
                 minimum (`hookd dev-secrets` prints a 32-byte one)"
            ),
        ));
    }
    Ok(Some(secret))
}

/// Everything `hookd serve` needs. Secrets are wrapped so `Debug` and logs never show them.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: SecretString,
    pub schema: Schema,
    pub listen: SocketAddr,
    /// The webhook sources this hookd receives, and the ones it knows but has no settings for.
    pub providers: crate::providers::Registry,
    pub admin_token: Option<SecretString>,
    pub forward_urls: HashMap<Source, reqwest::Url>,
    /// Signs forwarded events (Standard Webhooks); required when any forward URL is set.
    pub forward_secret: Option<standard::Secret>,
    pub forward_timeout: Duration,
    /// Every forward URL must be https, and the client refuses anything else.
    pub forward_https_only: bool,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub body_limit: usize,
    pub workers: usize,
    pub batch_size: i64,
    /// How long a new event may wait for others to share its batch (0: claim at once).
    pub batch_wait: Duration,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub shutdown_timeout: Duration,
    /// Requests per second per client that fail verification (or hit no route, or fail the
    /// admin token), and the burst above it; `None` when turned off.
    pub rate_limit: Option<u32>,
    pub rate_burst: u32,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Verified deliveries per second per source, for operators who want a ceiling.
    pub source_rate_limit: Option<u32>,
    /// What request bodies may take in memory at once, in bytes; see `http::body`.
    pub memory_budget: usize,
    /// Webhook requests whose body is being read or held at once.
    pub max_bodies: usize,
    pub max_connections: usize,
    /// From the end of a request's head to its answer.
    pub request_timeout: Duration,
    /// PostgreSQL's `statement_timeout` and `lock_timeout` on hookd's connections; zero is off.
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub db_max_connections: u32,
    pub log_json: bool,
    /// Where purges archive what they delete; `None`: `HOOKD_ARCHIVE_DIR=off`.
    pub archive_dir: Option<PathBuf>,
    /// How long processed events, keys and (optionally) dead events are kept.
    pub retention: crate::retention::Settings,
}

/// Where settings are looked up, in order: the environment, then the TOML file.
pub struct Sources {
    env: HashMap<String, String>,
    file: toml::Table,
}

impl Sources {
    /// The process environment and the file `HOOKD_CONFIG` names, if any.
    pub fn from_process() -> Result<Self, ConfigError> {
        Self::new(std::env::vars().collect())
    }

    pub fn new(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let file = match env.get("HOOKD_CONFIG").filter(|p| !p.is_empty()) {
            None => toml::Table::new(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                        name: "HOOKD_CONFIG".into(),
                        path: path.into(),
                        source,
                    })?;
                text.parse::<toml::Table>()
                    .map_err(|e| invalid("HOOKD_CONFIG", format!("{path}: {}", e.message())))?
            }
        };
        Ok(Sources { env, file })
    }

    /// The TOML key of a setting: its variable name in lower case without `HOOKD_`, so
    /// `HOOKD_MAX_ATTEMPTS` is `max_attempts` and `STRIPE_WEBHOOK_SECRET` is
    /// `stripe_webhook_secret`.
    fn file_key(name: &str) -> String {
        name.strip_prefix("HOOKD_")
            .unwrap_or(name)
            .to_ascii_lowercase()
    }

    /// The tables under `[key]` of the TOML file (`[sources.acme]` for `sources`), by name.
    pub fn tables(&self, key: &str) -> Result<Vec<(String, toml::Table)>, ConfigError> {
        match self.file.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Table(tables)) => tables
                .iter()
                .map(|(name, value)| match value {
                    toml::Value::Table(table) => Ok((name.clone(), table.clone())),
                    _ => Err(invalid(&format!("{key}.{name}"), "expected a table")),
                })
                .collect(),
            Some(_) => Err(invalid(key, "expected tables such as [sources.acme]")),
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<String>, ConfigError> {
        if let Some(value) = self.env.get(name).filter(|v| !v.is_empty()) {
            return Ok(Some(value.clone()));
        }
        self.in_file(name)
    }

    /// The setting as the TOML file has it, if at all.
    fn in_file(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.file.get(&Self::file_key(name)) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(invalid(
                name,
                format!(
                    "expected a string or number in the config file, got {}",
                    other.type_str()
                ),
            )),
        }
    }

    /// A secret: the variable, `NAME_FILE`, then the systemd credential named like the TOML
    /// key, then the TOML file. Surrounding whitespace is not part of the secret: pasting
    /// picks up a stray space or newline, and no secret hookd reads has one at either end. A
    /// secret that is empty once trimmed is unset.
    pub fn secret(&self, name: &str) -> Result<Option<String>, ConfigError> {
        if let Some(value) = self.env.get(name).and_then(|v| trimmed(v)) {
            return Ok(Some(value));
        }
        let file_var = format!("{name}_FILE");
        let path = if let Some(path) = self.env.get(&file_var).filter(|v| !v.is_empty()) {
            Some(PathBuf::from(path))
        } else {
            self.env
                .get("CREDENTIALS_DIRECTORY")
                .map(|dir| Path::new(dir).join(Self::file_key(name)))
                .filter(|p| p.exists())
        };
        if let Some(path) = path {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Unreadable {
                    name: name.to_owned(),
                    path: path.clone(),
                    source,
                })?;
            return Ok(trimmed(&text));
        }
        Ok(self.in_file(name)?.and_then(|v| trimmed(&v)))
    }

    fn parsed<T: std::str::FromStr>(
        &self,
        name: &str,
        default: T,
        expect: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name)? {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| invalid(name, format!("expected {expect}, got {raw:?}"))),
        }
    }

    fn positive<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default,
    {
        let value = self.parsed(name, default, "a whole number above 0")?;
        if value <= T::default() {
            return Err(invalid(name, "must be above 0"));
        }
        Ok(value)
    }

    fn millis(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        self.positive(name, default).map(Duration::from_millis)
    }

    /// Milliseconds where 0 (as in PostgreSQL) turns the limit off.
    fn millis_or_off(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        self.parsed(name, default, "a whole number of milliseconds (0: off)")
            .map(Duration::from_millis)
    }

    /// A rate per second, or `off` / `0`.
    fn rate(&self, name: &str, default: Option<u32>) -> Result<Option<u32>, ConfigError> {
        match self.get(name)?.as_deref().map(str::trim) {
            Some("off" | "0") => Ok(None),
            None => Ok(default),
            Some(_) => self.positive(name, 1u32).map(Some),
        }
    }
}

/// `HOOKD_TRUSTED_PROXIES`: addresses and CIDR ranges, separated by commas or spaces.
fn trusted_proxies(raw: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.split([',', ' ', '\n', '\t'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<ipnet::IpNet>()
                .or_else(|_| part.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        "HOOKD_TRUSTED_PROXIES",
                        format!("expected addresses or CIDR ranges, got {part:?}"),
                    )
                })
        })
        .collect()
}

/// The URL the database is reached at; `migrate`, `dlq` and `serve` all need it.
pub fn database_url(sources: &Sources) -> Result<SecretString, ConfigError> {
    sources
        .secret("DATABASE_URL")?
        .map(SecretString::from)
        .ok_or(ConfigError::Missing("DATABASE_URL"))
}

/// hookd's own schema in the database (`HOOKD_SCHEMA`, default `hookd`).
pub fn schema(sources: &Sources) -> Result<Schema, ConfigError> {
    match sources.get("HOOKD_SCHEMA")? {
        None => Ok(Schema::default()),
        Some(raw) => raw.trim().parse().map_err(|e| invalid("HOOKD_SCHEMA", e)),
    }
}

/// Where a purge writes its archive before deleting anything (`HOOKD_ARCHIVE_DIR`; `None`
/// when set to `off`). The default is under hookd's state directory: systemd's
/// `$STATE_DIRECTORY` (`StateDirectory=hookd`), so the sandboxed unit can write there, else
/// `/var/lib/hookd`. The CLI reads it too, so `hookd dlq purge` archives where the daemon does.
pub fn archive_dir(sources: &Sources) -> Result<Option<PathBuf>, ConfigError> {
    match sources.get("HOOKD_ARCHIVE_DIR")?.as_deref().map(str::trim) {
        Some("off") => Ok(None),
        Some(dir) => Ok(Some(PathBuf::from(dir))),
        None => {
            // systemd lists one path per StateDirectory= entry, colon-separated.
            let state = sources
                .env
                .get("STATE_DIRECTORY")
                .and_then(|dirs| dirs.split(':').find(|d| !d.is_empty()))
                .unwrap_or("/var/lib/hookd");
            Ok(Some(Path::new(state).join("archive")))
        }
    }
}

impl Config {
    pub fn pool_settings(&self) -> crate::PoolSettings {
        crate::PoolSettings {
            schema: self.schema.clone(),
            max_connections: self.db_max_connections,
            statement_timeout: self.statement_timeout,
            lock_timeout: self.lock_timeout,
        }
    }

    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let listen = sources.parsed(
            "HOOKD_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            "an address such as 127.0.0.1:8080",
        )?;
        let providers = crate::providers::Registry::load(sources)?;
        let forward_https_only =
            sources.parsed("HOOKD_FORWARD_HTTPS_ONLY", false, "true or false")?;
        let mut forward_urls = HashMap::new();
        for &source in providers.known() {
            let name = format!("HOOKD_FORWARD_URL_{}", source.as_str().to_ascii_uppercase());
            if let Some(raw) = sources.get(&name)? {
                let url = reqwest::Url::parse(raw.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        invalid(&name, format!("expected an http(s) URL, got {raw:?}"))
                    })?;
                if forward_https_only && url.scheme() != "https" {
                    return Err(invalid(
                        &name,
                        format!(
                            "expected an https URL because HOOKD_FORWARD_HTTPS_ONLY is true, got {}://",
                            url.scheme()
                        ),
                    ));
                }
                forward_urls.insert(source, url);
            }
        }
        let forward_secret = standard_secret(sources, "HOOKD_FORWARD_SECRET")?;
        if forward_secret.is_none() && !forward_urls.is_empty() {
            return Err(invalid(
                "HOOKD_FORWARD_SECRET",
                "must be set (a whsec_ secret) to sign forwarded events",
            ));
        }
        let rate_limit = sources.rate("HOOKD_RATE_LIMIT", Some(20))?;
        let source_rate_limit = sources.rate("HOOKD_SOURCE_RATE_LIMIT", None)?;
        let trusted_proxies = match sources.get("HOOKD_TRUSTED_PROXIES")? {
            None => Vec::new(),
            Some(raw) => trusted_proxies(&raw)?,
        };
        let log_format = sources
            .get("HOOKD_LOG_FORMAT")?
            .unwrap_or_else(|| "text".into());
        let log_json = match log_format.as_str() {
            "json" => true,
            "text" => false,
            other => {
                return Err(invalid(
                    "HOOKD_LOG_FORMAT",
                    format!("expected text or json, got {other:?}"),
                ));
            }
        };
        let admin_token = sources.secret("HOOKD_ADMIN_TOKEN")?;
        if admin_token
            .as_ref()
            .is_some_and(|t| t.len() < ADMIN_TOKEN_MIN_BYTES)
        {
            return Err(invalid(
                "HOOKD_ADMIN_TOKEN",
                format!(
                    "must be at least {ADMIN_TOKEN_MIN_BYTES} bytes, \
                     e.g. `head -c 32 /dev/urandom | base64`"
                ),
            ));
        }
        // 0 makes a receive-only instance: it stores events, other instances process them.
        let workers: usize = sources.parsed("HOOKD_WORKERS", 4, "a whole number")?;
        let config = Config {
            database_url: database_url(sources)?,
            schema: schema(sources)?,
            listen,
            providers,
            admin_token: admin_token.map(SecretString::from),
            forward_urls,
            forward_secret,
            forward_timeout: sources.millis("HOOKD_FORWARD_TIMEOUT_MS", 10_000)?,
            forward_https_only,
            max_attempts: sources.positive("HOOKD_MAX_ATTEMPTS", 4)?,
            retry_base: sources.millis("HOOKD_RETRY_BASE_MS", 1_000)?,
            retry_max: sources.millis("HOOKD_RETRY_MAX_MS", 3_600_000)?,
            body_limit: sources.positive("HOOKD_BODY_LIMIT", 1024 * 1024)?,
            workers,
            batch_size: sources.positive("HOOKD_BATCH_SIZE", 100)?,
            batch_wait: sources
                .parsed(
                    "HOOKD_BATCH_WAIT_MS",
                    50,
                    "a whole number of milliseconds (0: claim at once)",
                )
                .map(Duration::from_millis)?,
            lease: Duration::from_secs(sources.positive("HOOKD_LEASE_SECS", 60)?),
            poll_interval: sources.millis("HOOKD_POLL_INTERVAL_MS", 5_000)?,
            shutdown_timeout: Duration::from_secs(
                sources.positive("HOOKD_SHUTDOWN_TIMEOUT_SECS", 20)?,
            ),
            rate_limit,
            rate_burst: sources.positive("HOOKD_RATE_BURST", 100)?,
            trusted_proxies,
            source_rate_limit,
            memory_budget: sources.positive("HOOKD_MEMORY_BUDGET", 256 << 20)?,
            max_bodies: sources.positive("HOOKD_MAX_BODIES", 1024)?,
            max_connections: sources.positive("HOOKD_MAX_CONNECTIONS", 1024)?,
            request_timeout: sources.millis("HOOKD_REQUEST_TIMEOUT_MS", 10_000)?,
            statement_timeout: sources.millis_or_off("HOOKD_STATEMENT_TIMEOUT_MS", 5_000)?,
            lock_timeout: sources.millis_or_off("HOOKD_LOCK_TIMEOUT_MS", 2_000)?,
            // Ingest, the listener and every worker each want a connection.
            db_max_connections: sources
                .positive("HOOKD_DB_MAX_CONNECTIONS", 16 + workers as u32)?,
            log_json,
            archive_dir: archive_dir(sources)?,
            retention: crate::retention::settings(sources)?,
        };
        if config.retry_max < config.retry_base {
            return Err(invalid(
                "HOOKD_RETRY_MAX_MS",
                "must not be below HOOKD_RETRY_BASE_MS",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn sources(pairs: &[(&str, &str)]) -> Sources {
        Sources::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    const DB: (&str, &str) = ("DATABASE_URL", "postgres://hookd:pw@localhost/hookd");

    /// What the configured provider of `source` signs `{}` with at time 0.
    fn signature(config: &Config, source: Source, header: &str) -> String {
        let event = crate::providers::Outgoing {
            key: "msg_1".into(),
            event_type: "x.y".into(),
            body: b"{}".to_vec(),
        };
        let signed = config
            .providers
            .get(source)
            .unwrap()
            .sign(&event, 0)
            .unwrap();
        signed
            .into_iter()
            .find(|(name, _)| name == header)
            .unwrap()
            .1
    }

    fn stripe_secret_is(config: &Config, secret: &str) -> bool {
        signature(config, Source::Stripe, crate::verify::stripe::HEADER)
            == crate::verify::stripe::sign(secret.as_bytes(), 0, b"{}")
    }

    fn custom_secret_is(config: &Config, whsec: &str) -> bool {
        let secret: standard::Secret = whsec.parse().unwrap();
        signature(config, Source::Custom, standard::SIGNATURE_HEADER)
            == standard::sign(&secret, "msg_1", 0, b"{}")
    }

    #[test]
    fn defaults_need_only_the_database() {
        let config = Config::load(&sources(&[DB])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.max_attempts, 4);
        assert_eq!(config.retry_base, Duration::from_secs(1));
        assert_eq!(config.body_limit, 1 << 20);
        assert!(config.providers.get(Source::Stripe).is_none() && config.forward_urls.is_empty());
        assert_eq!(config.batch_wait, Duration::from_millis(50));
    }

    #[test]
    fn the_batch_wait_may_be_zero_but_not_negative() {
        let config = Config::load(&sources(&[DB, ("HOOKD_BATCH_WAIT_MS", "0")])).unwrap();
        assert_eq!(config.batch_wait, Duration::ZERO);
        let err = Config::load(&sources(&[DB, ("HOOKD_BATCH_WAIT_MS", "-5")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOKD_BATCH_WAIT_MS is invalid: expected a whole number of milliseconds (0: claim at once), got \"-5\""
        );
    }

    #[test]
    fn edge_settings_have_safe_defaults_and_are_named_when_wrong() {
        let config = Config::load(&sources(&[DB])).unwrap();
        assert_eq!(
            (config.rate_limit, config.source_rate_limit),
            (Some(20), None)
        );
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.statement_timeout, Duration::from_secs(5));
        assert_eq!(config.lock_timeout, Duration::from_secs(2));
        let config = Config::load(&sources(&[
            DB,
            (
                "HOOKD_TRUSTED_PROXIES",
                "10.0.0.0/8, 127.0.0.1 ::1,fd00::/8",
            ),
            ("HOOKD_RATE_LIMIT", "off"),
            ("HOOKD_SOURCE_RATE_LIMIT", "50"),
            ("HOOKD_LOCK_TIMEOUT_MS", "0"),
        ]))
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 4);
        assert_eq!(config.trusted_proxies[1].to_string(), "127.0.0.1/32");
        assert_eq!(
            (config.rate_limit, config.source_rate_limit),
            (None, Some(50))
        );
        assert_eq!(config.lock_timeout, Duration::ZERO, "0 turns it off");
        let err = Config::load(&sources(&[DB, ("HOOKD_TRUSTED_PROXIES", "10.0.0.0/33")]));
        assert_eq!(
            err.unwrap_err().to_string(),
            "HOOKD_TRUSTED_PROXIES is invalid: expected addresses or CIDR ranges, got \"10.0.0.0/33\""
        );
        let err = Config::load(&sources(&[DB, ("HOOKD_MAX_CONNECTIONS", "0")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("HOOKD_MAX_CONNECTIONS is invalid")
        );
    }

    #[test]
    fn missing_and_malformed_settings_are_named() {
        let err = Config::load(&sources(&[])).unwrap_err().to_string();
        assert_eq!(err, "DATABASE_URL is not set");
        let err = Config::load(&sources(&[DB, ("HOOKD_MAX_ATTEMPTS", "four")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOKD_MAX_ATTEMPTS is invalid: expected a whole number above 0, got \"four\""
        );
        let err = Config::load(&sources(&[DB, ("HOOKD_MAX_ATTEMPTS", "0")])).unwrap_err();
        assert!(err.to_string().starts_with("HOOKD_MAX_ATTEMPTS is invalid"));
        let err = Config::load(&sources(&[DB, ("HOOKD_LISTEN", "localhost")])).unwrap_err();
        assert!(err.to_string().starts_with("HOOKD_LISTEN is invalid"));
        let err = Config::load(&sources(&[DB, ("TELNYX_PUBLIC_KEY", "not-base64!")])).unwrap_err();
        assert!(err.to_string().starts_with("TELNYX_PUBLIC_KEY is invalid"));
        let err =
            Config::load(&sources(&[DB, ("HOOKD_FORWARD_URL_STRIPE", "ftp://x")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("HOOKD_FORWARD_URL_STRIPE is invalid")
        );
        let err =
            Config::load(&sources(&[DB, ("STRIPE_WEBHOOK_SECRET", "sk_live_oops")])).unwrap_err();
        assert!(
            !err.to_string().contains("sk_live_oops"),
            "a secret must not be echoed"
        );
    }

    #[test]
    fn https_only_forwarding_refuses_plain_http_urls() {
        const SECRET: (&str, &str) = (
            "HOOKD_FORWARD_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        let plain = (
            "HOOKD_FORWARD_URL_TELNYX",
            "http://user:pw@voice.example/hooks",
        );
        let tls = ("HOOKD_FORWARD_URL_STRIPE", "https://billing.example/hooks");
        let config = Config::load(&sources(&[DB, SECRET, plain])).unwrap();
        assert!(!config.forward_https_only, "off by default");
        let err = Config::load(&sources(&[
            DB,
            SECRET,
            tls,
            plain,
            ("HOOKD_FORWARD_HTTPS_ONLY", "true"),
        ]))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "HOOKD_FORWARD_URL_TELNYX is invalid: expected an https URL because \
             HOOKD_FORWARD_HTTPS_ONLY is true, got http://"
        );
        assert!(!err.contains("pw"), "credentials in the URL are not echoed");
        let config = Config::load(&sources(&[
            DB,
            SECRET,
            tls,
            ("HOOKD_FORWARD_HTTPS_ONLY", "true"),
        ]))
        .unwrap();
        assert!(config.forward_https_only);
        let path =
            std::env::temp_dir().join(format!("hookd-https-only-{}.toml", std::process::id()));
        std::fs::write(&path, "forward_https_only = true\n").unwrap();
        let err = Config::load(&sources(&[
            DB,
            SECRET,
            plain,
            ("HOOKD_CONFIG", path.to_str().unwrap()),
        ]))
        .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            err.to_string()
                .starts_with("HOOKD_FORWARD_URL_TELNYX is invalid")
        );
        let err = Config::load(&sources(&[DB, ("HOOKD_FORWARD_HTTPS_ONLY", "yes")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOKD_FORWARD_HTTPS_ONLY is invalid: expected true or false, got \"yes\""
        );
    }

    #[test]
    fn file_settings_yield_to_the_environment() {
        let dir = std::env::temp_dir().join(format!("hookd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hookd.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nmax_attempts = 7\n\
             forward_url_custom = \"http://127.0.0.1:9/x\"\n\
             forward_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        )
        .unwrap();
        let config = Config::load(&sources(&[
            DB,
            ("HOOKD_CONFIG", path.to_str().unwrap()),
            ("HOOKD_MAX_ATTEMPTS", "3"),
        ]))
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.max_attempts, 3);
        assert!(config.forward_urls.contains_key(&Source::Custom));
        std::fs::write(&path, "listen = [").unwrap();
        let env = [("HOOKD_CONFIG".to_owned(), path.to_str().unwrap().to_owned())];
        let err = Sources::new(env.into_iter().collect()).err().unwrap();
        assert!(err.to_string().starts_with("HOOKD_CONFIG is invalid"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_come_from_files_and_credentials_and_never_from_debug() {
        let dir = std::env::temp_dir().join(format!("hookd-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stripe_webhook_secret"),
            format!("{STRIPE_FROM_CREDENTIAL}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("token"), format!("{ADMIN_FROM_FILE}\n")).unwrap();
        let config = Config::load(&sources(&[
            DB,
            ("CREDENTIALS_DIRECTORY", dir.to_str().unwrap()),
            (
                "HOOKD_ADMIN_TOKEN_FILE",
                dir.join("token").to_str().unwrap(),
            ),
        ]))
        .unwrap();
        assert!(stripe_secret_is(&config, STRIPE_FROM_CREDENTIAL));
        assert_eq!(
            config.admin_token.as_ref().unwrap().expose_secret(),
            ADMIN_FROM_FILE
        );
        let debug = format!("{config:?}");
        for secret in [STRIPE_FROM_CREDENTIAL, ADMIN_FROM_FILE, "pw@localhost"] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const STRIPE_FROM_CREDENTIAL: &str = "whsec_fromCredential0123456789abcdefXYZ";
    const ADMIN_FROM_FILE: &str = "admin-from-file-0123456789abcdefghij";

    /// A Standard Webhooks secret whose key has `len` bytes.
    fn standard_of(len: usize) -> String {
        use base64::Engine as _;
        let key: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    #[test]
    fn weak_secrets_and_tokens_are_refused_by_name_without_echoing_them() {
        let stripe_31 = format!("whsec_{}", "Q7".repeat(15) + "x");
        let custom_23 = standard_of(23);
        let admin_31 = "0123456789abcdef0123456789abcde".to_owned();
        let cases = [
            (
                "STRIPE_WEBHOOK_SECRET",
                "whsec_".to_owned(),
                "whsec_ prefix",
            ),
            ("STRIPE_WEBHOOK_SECRET", stripe_31, "at least 32 characters"),
            ("CUSTOM_WEBHOOK_SECRET", custom_23.clone(), "24 bytes"),
            ("HOOKD_FORWARD_SECRET", custom_23, "24 bytes"),
            ("HOOKD_ADMIN_TOKEN", admin_31, "at least 32 bytes"),
        ];
        for (name, value, why) in cases {
            let err = Config::load(&sources(&[DB, (name, &value)])).unwrap_err();
            let ConfigError::Invalid { name: named, .. } = &err else {
                panic!("{name}: {err:?}");
            };
            assert_eq!(named, name);
            let line = err.to_string();
            assert!(line.starts_with(&format!("{name} is invalid: ")), "{line}");
            assert!(line.contains(why), "{line}");
            assert_eq!(line.lines().count(), 1, "{line}");
            let body = value.strip_prefix("whsec_").unwrap_or(&value);
            assert!(
                body.is_empty() || !line.contains(body),
                "{name} echoed: {line}"
            );
        }
    }

    #[test]
    fn secrets_at_the_minimums_are_accepted() {
        let stripe = format!("whsec_{}", "Q7".repeat(16));
        let standard = standard_of(24);
        let admin = "0123456789abcdef0123456789abcdef";
        let config = Config::load(&sources(&[
            DB,
            ("STRIPE_WEBHOOK_SECRET", &stripe),
            ("CUSTOM_WEBHOOK_SECRET", &standard),
            ("HOOKD_FORWARD_SECRET", &standard),
            ("HOOKD_ADMIN_TOKEN", admin),
        ]))
        .unwrap();
        assert!(stripe_secret_is(&config, &stripe));
        assert!(custom_secret_is(&config, &standard));
        assert_eq!(config.forward_secret.unwrap().key_len(), 24);
        assert_eq!(config.admin_token.unwrap().expose_secret(), admin);
    }

    #[test]
    fn secrets_are_trimmed_wherever_they_come_from() {
        let dir = std::env::temp_dir().join(format!("hookd-trim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stripe = STRIPE_FROM_CREDENTIAL;
        let standard = standard_of(32);
        let admin = ADMIN_FROM_FILE;
        std::fs::write(
            dir.join("stripe_webhook_secret"),
            format!(" \t{stripe} \r\n"),
        )
        .unwrap();
        std::fs::write(dir.join("admin"), format!("\n{admin}\n\n")).unwrap();
        let toml = dir.join("hookd.toml");
        std::fs::write(&toml, format!("forward_secret = \"  {standard}\\n\"\n")).unwrap();
        let pasted = format!("  {standard} \n");
        let config = Config::load(&sources(&[
            DB,
            ("CREDENTIALS_DIRECTORY", dir.to_str().unwrap()),
            (
                "HOOKD_ADMIN_TOKEN_FILE",
                dir.join("admin").to_str().unwrap(),
            ),
            ("HOOKD_CONFIG", toml.to_str().unwrap()),
            ("CUSTOM_WEBHOOK_SECRET", &pasted),
        ]))
        .unwrap();
        assert!(stripe_secret_is(&config, stripe));
        assert!(custom_secret_is(&config, &standard));
        assert_eq!(config.admin_token.unwrap().expose_secret(), admin);
        assert_eq!(config.forward_secret.unwrap().to_whsec(), standard);

        // Only whitespace is as good as empty: unset, so the next place is looked at.
        let config = Config::load(&sources(&[
            DB,
            ("HOOKD_ADMIN_TOKEN", " \n"),
            ("STRIPE_WEBHOOK_SECRET", "\t"),
            ("HOOKD_CONFIG", toml.to_str().unwrap()),
            ("HOOKD_FORWARD_SECRET", "  "),
        ]))
        .unwrap();
        assert!(config.admin_token.is_none() && config.providers.get(Source::Stripe).is_none());
        assert_eq!(config.forward_secret.unwrap().to_whsec(), standard);
        std::fs::write(dir.join("admin"), " \n").unwrap();
        let config = Config::load(&sources(&[
            DB,
            (
                "HOOKD_ADMIN_TOKEN_FILE",
                dir.join("admin").to_str().unwrap(),
            ),
        ]))
        .unwrap();
        assert!(config.admin_token.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dev_secrets_pass_the_start_up_checks() {
        let printed = crate::send::dev_secrets();
        let mut env: Vec<(&str, &str)> = printed
            .lines()
            .map(|line| {
                line.strip_prefix("export ")
                    .and_then(|l| l.split_once('='))
                    .unwrap_or_else(|| panic!("not an export line: {line}"))
            })
            .collect();
        env.push(DB);
        let config = Config::load(&sources(&env)).unwrap();
        for source in Source::ALL {
            assert!(config.providers.get(source).is_some(), "{source}");
        }
        assert!(config.forward_secret.is_some());
        assert!(config.admin_token.is_some());
    }
}
