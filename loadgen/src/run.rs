//! `loadgen run`: N tasks, each owning one keep-alive HTTP/1.1 connection, send signed
//! webhooks for a duration or a count, closed loop (as fast as answers come back) or open loop
//! at a fixed rate. The benchmark also points the same tasks and schedule at PostgreSQL itself
//! (one connection each, one INSERT per request), so both sides of a comparison are timed by
//! the same generator.
//!
//! Open loop: request i is scheduled at `start + i / rate` whatever happened before it, and its
//! latency runs from that scheduled time, so a stall shows up as the latency of every request
//! that should have been sent during it (no coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use common::Source;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::payload::Generator;

pub struct Plan {
    pub target: Target,
    pub connections: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub mix: Vec<Source>,
}

/// Where the requests go.
pub enum Target {
    /// hookd, over HTTP: `addr` to connect to, `host` for the Host header.
    Hookd {
        addr: SocketAddr,
        host: String,
        generator: Generator,
    },
    /// PostgreSQL: `statement`, prepared, run with `body` as its one parameter.
    Postgres {
        options: Box<sqlx::postgres::PgConnectOptions>,
        statement: String,
        body: String,
    },
}

/// One task's connection to the target.
enum Conn {
    Http(Sender),
    Pg(sqlx::PgConnection),
}

/// What one task saw.
struct TaskResult {
    hist: Histogram<u64>,
    /// Open loop: how late each send started against its schedule (client-side delay, part of
    /// the latency measured from the schedule).
    lag: Histogram<u64>,
    /// Index of every acknowledged (2xx) request, by source.
    acked: Vec<(Source, u64)>,
    measured_ok: u64,
    sent: u64,
    duplicates: u64,
    status: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    /// Send started more than 2 ms after its schedule (open loop; the timer ticks in 1 ms):
    /// every connection was busy, or the client itself fell behind.
    late: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub connections: usize,
    pub target_rate: Option<f64>,
    pub mix: String,
    /// Seconds over which throughput and latency were measured (after the warm-up).
    pub measured_secs: f64,
    pub sent: u64,
    /// Requests answered 2xx (duplicates included).
    pub ok: u64,
    pub duplicates: u64,
    pub non_2xx: u64,
    pub errors: u64,
    pub status: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Acknowledged requests per second, after the warm-up.
    pub throughput: f64,
    pub late_sends: u64,
    /// Open loop: how late sends started against the schedule (included in the latency).
    pub send_lag_p50_ms: f64,
    pub send_lag_p99_ms: f64,
    pub send_lag_max_ms: f64,
    /// CPU seconds this load generator used while sending (it shares the machine with hookd
    /// and PostgreSQL); null where /proc is not available.
    pub client_cpu_secs: Option<f64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub acked: u64,
    /// Whether the acknowledged events were looked up in the database.
    pub checked: bool,
    pub found: u64,
    pub missing: u64,
    #[serde(skip)]
    pub acked_ids: Vec<(Source, u64)>,
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(plan: &Plan) -> anyhow::Result<Conn> {
    match &plan.target {
        Target::Hookd { addr, .. } => {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Conn::Http(sender))
        }
        Target::Postgres { options, .. } => {
            use sqlx::Connection as _;
            Ok(Conn::Pg(sqlx::PgConnection::connect_with(options).await?))
        }
    }
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::Http(sender) => sender.is_closed(),
            Conn::Pg(_) => false,
        }
    }
}

enum Outcome {
    Answer { status: u16, duplicate: bool },
    Failed(&'static str),
}

async fn send_one(plan: &Plan, conn: &mut Option<Conn>, source: Source, i: u64) -> Outcome {
    if conn.as_ref().is_none_or(Conn::is_closed) {
        *conn = match tokio::time::timeout(plan.timeout, connect(plan)).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(_)) => return Outcome::Failed("connect"),
            Err(_) => return Outcome::Failed("connect_timeout"),
        };
    }
    let outcome = match (&plan.target, conn.as_mut().expect("connected")) {
        (
            Target::Hookd {
                host, generator, ..
            },
            Conn::Http(sender),
        ) => post(plan, sender, host, generator, source, i).await,
        (
            Target::Postgres {
                statement, body, ..
            },
            Conn::Pg(pg),
        ) => insert(plan, pg, statement, body).await,
        _ => unreachable!("a task's connection is to its plan's target"),
    };
    if matches!(outcome, Outcome::Failed(_)) {
        // The answer may still come on this connection, or it is gone: start a fresh one.
        *conn = None;
    }
    outcome
}

/// One INSERT: stored (200), or already there (a duplicate, as hookd would answer it).
async fn insert(plan: &Plan, pg: &mut sqlx::PgConnection, statement: &str, body: &str) -> Outcome {
    let stored = sqlx::query(statement).bind(body).fetch_optional(pg);
    match tokio::time::timeout(plan.timeout, stored).await {
        Ok(Ok(row)) => Outcome::Answer {
            status: 200,
            duplicate: row.is_none(),
        },
        Ok(Err(_)) => Outcome::Failed("database"),
        Err(_) => Outcome::Failed("timeout"),
    }
}

async fn post(
    plan: &Plan,
    conn: &mut Sender,
    host: &str,
    generator: &Generator,
    source: Source,
    i: u64,
) -> Outcome {
    if conn.ready().await.is_err() {
        return Outcome::Failed("connection_closed");
    }
    let signed = generator.request(source, i, chrono::Utc::now().timestamp());
    let mut request = hyper::Request::post(signed.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "hookd-loadgen");
    for (name, value) in &signed.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = match request.body(Full::new(Bytes::from(signed.body))) {
        Ok(r) => r,
        Err(_) => return Outcome::Failed("build"),
    };
    let exchange = async {
        let response = conn.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    match tokio::time::timeout(plan.timeout, exchange).await {
        Ok(Ok((status, body))) => Outcome::Answer {
            status,
            duplicate: (200..300).contains(&status)
                && body.windows(16).any(|w| w == b"\"duplicate\":true"),
        },
        Ok(Err(_)) => Outcome::Failed("io"),
        Err(_) => Outcome::Failed("timeout"),
    }
}

fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

async fn task(
    plan: Arc<Plan>,
    next: Arc<AtomicU64>,
    start: Instant,
    stop: CancellationToken,
) -> TaskResult {
    let mut result = TaskResult {
        hist: new_hist(),
        lag: new_hist(),
        acked: Vec::new(),
        measured_ok: 0,
        sent: 0,
        duplicates: 0,
        status: BTreeMap::new(),
        errors: BTreeMap::new(),
        late: 0,
    };
    let end = plan.duration.map(|d| start + d);
    let measure_from = start + plan.warmup;
    let mut conn: Option<Conn> = None;
    // Every task starts together, with its connection already open.
    if let Ok(Ok(c)) = tokio::time::timeout(plan.timeout, connect(&plan)).await {
        conn = Some(c);
    }
    tokio::time::sleep_until(start).await;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        if plan.requests.is_some_and(|n| i >= n) {
            break;
        }
        // When the request is due: now (closed loop) or on the open-loop schedule.
        let scheduled = match plan.rate {
            Some(rate) => start + Duration::from_secs_f64(i as f64 / rate),
            None => Instant::now(),
        };
        if end.is_some_and(|end| scheduled >= end) {
            break;
        }
        if plan.rate.is_some() {
            tokio::select! {
                () = tokio::time::sleep_until(scheduled) => {}
                () = stop.cancelled() => break,
            }
            let lag = Instant::now().duration_since(scheduled);
            if lag > Duration::from_millis(2) {
                result.late += 1;
            }
            if scheduled >= measure_from {
                result.lag.saturating_record(lag.as_micros().max(1) as u64);
            }
        }
        let source = plan.mix[(i % plan.mix.len() as u64) as usize];
        let outcome = send_one(&plan, &mut conn, source, i).await;
        let done = Instant::now();
        result.sent += 1;
        let measured = scheduled >= measure_from;
        match outcome {
            Outcome::Answer { status, duplicate } => {
                *result.status.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    result.acked.push((source, i));
                    if duplicate {
                        result.duplicates += 1;
                    }
                    if measured {
                        result.measured_ok += 1;
                    }
                }
            }
            Outcome::Failed(kind) => {
                *result.errors.entry(kind).or_default() += 1;
                if matches!(kind, "connect" | "connect_timeout") {
                    // Don't spin on a server that is not there.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if measured {
            let micros = done.duration_since(scheduled).as_micros().max(1) as u64;
            result.hist.saturating_record(micros);
        }
    }
    result
}

pub async fn run(plan: Plan, stop: CancellationToken) -> anyhow::Result<Report> {
    if plan.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if plan.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be above 0");
    }
    // Fail early and clearly when the target is not there.
    connect(&plan).await.with_context(|| match &plan.target {
        Target::Hookd { addr, .. } => format!("cannot connect to hookd at {addr}"),
        Target::Postgres { .. } => "cannot connect to PostgreSQL".to_owned(),
    })?;

    let cpu_before = cpu_secs();
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    // Time for every task to connect before the clock starts.
    let start = Instant::now() + Duration::from_millis(200);
    let tasks: Vec<_> = (0..plan.connections)
        .map(|_| tokio::spawn(task(plan.clone(), next.clone(), start, stop.clone())))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.context("load task panicked")?);
    }
    let finished = Instant::now();
    let client_cpu_secs = cpu_secs()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let measure_from = start + plan.warmup;
    let measured_secs = finished
        .checked_duration_since(measure_from)
        .unwrap_or_default()
        .as_secs_f64();

    let mut hist = new_hist();
    let mut lag = new_hist();
    let mut report = Report {
        mode: if plan.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        connections: plan.connections,
        target_rate: plan.rate,
        mix: mix_label(&plan.mix),
        measured_secs,
        sent: 0,
        ok: 0,
        duplicates: 0,
        non_2xx: 0,
        errors: 0,
        status: BTreeMap::new(),
        error_kinds: BTreeMap::new(),
        throughput: 0.0,
        late_sends: 0,
        send_lag_p50_ms: 0.0,
        send_lag_p99_ms: 0.0,
        send_lag_max_ms: 0.0,
        client_cpu_secs,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        mean_ms: 0.0,
        acked: 0,
        checked: false,
        found: 0,
        missing: 0,
        acked_ids: Vec::new(),
    };
    let mut measured_ok = 0;
    for r in results {
        hist.add(&r.hist).expect("same bounds");
        lag.add(&r.lag).expect("same bounds");
        report.sent += r.sent;
        report.duplicates += r.duplicates;
        report.late_sends += r.late;
        measured_ok += r.measured_ok;
        for (status, n) in r.status {
            if (200..300).contains(&status) {
                report.ok += n;
            } else {
                report.non_2xx += n;
            }
            *report.status.entry(status.to_string()).or_default() += n;
        }
        for (kind, n) in r.errors {
            report.errors += n;
            *report.error_kinds.entry(kind.to_owned()).or_default() += n;
        }
        report.acked_ids.extend(r.acked);
    }
    report.acked = report.acked_ids.len() as u64;
    report.throughput = if measured_secs > 0.0 {
        measured_ok as f64 / measured_secs
    } else {
        0.0
    };
    let ms = |us: u64| us as f64 / 1_000.0;
    if !hist.is_empty() {
        report.p50_ms = ms(hist.value_at_quantile(0.50));
        report.p90_ms = ms(hist.value_at_quantile(0.90));
        report.p99_ms = ms(hist.value_at_quantile(0.99));
        report.p999_ms = ms(hist.value_at_quantile(0.999));
        report.max_ms = ms(hist.max());
        report.mean_ms = hist.mean() / 1_000.0;
    }
    if !lag.is_empty() {
        report.send_lag_p50_ms = ms(lag.value_at_quantile(0.50));
        report.send_lag_p99_ms = ms(lag.value_at_quantile(0.99));
        report.send_lag_max_ms = ms(lag.max());
    }
    Ok(report)
}

/// User plus system CPU time of this process so far (Linux: /proc/self/stat, in clock ticks of
/// 1/100 s, the value on every mainstream Linux platform).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn mix_label(mix: &[Source]) -> String {
    Source::ALL
        .iter()
        .filter_map(|s| {
            let n = mix.iter().filter(|m| *m == s).count();
            (n > 0).then(|| format!("{s}={n}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Report {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let rate = self.target_rate.map_or_else(
            || "closed loop".to_owned(),
            |r| format!("open loop at {r:.0}/s"),
        );
        out.push_str(&format!(
            "{} connections, {rate}, mix {}\n",
            self.connections, self.mix
        ));
        out.push_str(&format!(
            "sent {}  acknowledged {}  duplicates {}  non-2xx {}  errors {}\n",
            self.sent, self.ok, self.duplicates, self.non_2xx, self.errors
        ));
        if self.non_2xx > 0 {
            let by: Vec<String> = self
                .status
                .iter()
                .filter(|(s, _)| !s.starts_with('2'))
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            out.push_str(&format!("  non-2xx by status: {}\n", by.join(", ")));
        }
        if self.errors > 0 {
            let by: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            out.push_str(&format!("  errors by kind: {}\n", by.join(", ")));
        }
        out.push_str(&format!(
            "throughput {:.1} acks/s over {:.2} s\n",
            self.throughput, self.measured_secs
        ));
        out.push_str(&format!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}\n",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        ));
        if let Some(cpu) = self.client_cpu_secs {
            out.push_str(&format!(
                "load generator CPU: {cpu:.1} s ({:.2} cores)\n",
                cpu / self.measured_secs.max(0.001)
            ));
        }
        if self.target_rate.is_some() {
            out.push_str(&format!(
                "send lag behind schedule ms: p50 {:.2}  p99 {:.2}  max {:.2}  (late > 2 ms: {})\n",
                self.send_lag_p50_ms, self.send_lag_p99_ms, self.send_lag_max_ms, self.late_sends
            ));
        }
        if self.checked {
            out.push_str(&format!(
                "durability: {} acknowledged, {} found in events, missing = {}\n",
                self.acked, self.found, self.missing
            ));
        } else {
            out.push_str("durability: not checked (no DATABASE_URL)\n");
        }
        out
    }
}
