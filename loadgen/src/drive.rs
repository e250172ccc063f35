//! One whole load against a running hookd, as `loadgen run` and the benchmark both make it:
//! the businesses the payloads refer to, the requests, then the check that every acknowledged
//! event was stored.

use std::time::Duration;

use anyhow::{Context, bail};
use common::Source;
use tokio_util::sync::CancellationToken;

use crate::{db, payload, run};

/// The secrets loadgen signs with, as hookd's environment names them (Telnyx: the seed).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub stripe: Option<String>,
    pub telnyx_seed: Option<String>,
    pub custom: Option<String>,
}

pub struct Load {
    /// `http://host:port` of hookd.
    pub url: String,
    pub connections: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub mix: Vec<Source>,
    pub businesses: u64,
    pub secrets: Secrets,
    /// hookd's database: with it, the businesses are created and every ack is looked up.
    pub database_url: Option<String>,
    pub check: bool,
}

pub async fn load(load: Load, stop: CancellationToken) -> anyhow::Result<run::Report> {
    let (addr, host) = target(&load.url)?;
    let pool = match &load.database_url {
        Some(url) => Some(db::pool(url, 2).await?),
        None => None,
    };
    let generator = generator(&load.secrets, &load.mix, load.businesses, pool.as_ref()).await?;
    let ids = generator.ids.clone();
    let plan = run::Plan {
        target: run::Target::Hookd {
            addr,
            host,
            generator,
        },
        connections: load.connections,
        duration: load.duration,
        requests: load.requests,
        rate: load.rate,
        warmup: load.warmup,
        timeout: load.timeout,
        mix: load.mix,
    };
    let mut report = run::run(plan, stop).await?;
    if let (Some(pool), true) = (&pool, load.check) {
        report.found = db::count_stored(pool, &ids, &report.acked_ids).await?;
        report.missing = report.acked.saturating_sub(report.found);
        report.checked = true;
    }
    Ok(report)
}

/// Requests for `mix` with fresh ids; with hookd's database, its businesses are created first
/// and custom events name them.
pub async fn generator(
    secrets: &Secrets,
    mix: &[Source],
    businesses: u64,
    pool: Option<&sqlx::PgPool>,
) -> anyhow::Result<payload::Generator> {
    let keys = payload::Keys::new(
        secrets.stripe.as_deref(),
        secrets.telnyx_seed.as_deref(),
        secrets.custom.as_deref(),
    )?;
    keys.check(mix)?;
    let business_ids = match pool {
        Some(pool) => db::ensure_businesses(pool, businesses).await?,
        None => Vec::new(),
    };
    Ok(payload::Generator {
        keys,
        ids: payload::Ids::new(),
        businesses,
        business_ids,
    })
}

/// `http://host:port` -> the address to connect to and the Host header.
pub fn target(url: &str) -> anyhow::Result<(std::net::SocketAddr, String)> {
    use std::net::ToSocketAddrs;
    let uri: hyper::Uri = url.parse().with_context(|| format!("--url {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://host:port (hookd serves plain HTTP behind a proxy)");
    }
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    Ok((addr, format!("{host}:{port}")))
}
