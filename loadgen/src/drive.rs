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
    let keys = payload::Keys::new(
        load.secrets.stripe.as_deref(),
        load.secrets.telnyx_seed.as_deref(),
        load.secrets.custom.as_deref(),
    )?;
    keys.check(&load.mix)?;
    let (addr, host) = target(&load.url)?;
    let pool = match &load.database_url {
        Some(url) => Some(db::pool(url, 2).await?),
        None => None,
    };
    let business_ids = match &pool {
        Some(pool) => db::ensure_businesses(pool, load.businesses).await?,
        None => Vec::new(),
    };
    let ids = payload::Ids::new();
    let generator = payload::Generator {
        keys,
        ids: ids.clone(),
        businesses: load.businesses,
        business_ids,
    };
    let plan = run::Plan {
        addr,
        host,
        connections: load.connections,
        duration: load.duration,
        requests: load.requests,
        rate: load.rate,
        warmup: load.warmup,
        timeout: load.timeout,
        mix: load.mix,
    };
    let mut report = run::run(plan, generator, stop).await?;
    if let (Some(pool), true) = (&pool, load.check) {
        report.found = db::count_stored(pool, &ids, &report.acked_ids).await?;
        report.missing = report.acked.saturating_sub(report.found);
        report.checked = true;
    }
    Ok(report)
}

/// `http://host:port` -> the address to connect to and the Host header.
fn target(url: &str) -> anyhow::Result<(std::net::SocketAddr, String)> {
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
