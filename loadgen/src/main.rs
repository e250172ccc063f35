//! `loadgen`: drives a running hookd with signed webhooks and measures it.
//!
//! ```text
//! loadgen run --url http://127.0.0.1:8080 -c 32 -d 20s              # closed loop: max rate
//! loadgen run --url ... -c 32 -d 20s --rate 1500                     # open loop, fixed rate
//! loadgen run --url ... -n 10000 --mix stripe=1,telnyx=2 --json      # a count, JSON report
//! loadgen presign -n 300000 --out requests.bin                      # for wrk (wrk/replay.lua)
//! loadgen refresh-bench --runs 20                                    # hooktop's refresh, timed
//! loadgen bench --quick                                              # every target, side by side
//! ```
//! Secrets come from the same variables hookd reads (`TELNYX_SIGNING_KEY` is the private seed
//! whose public half hookd has as `TELNYX_PUBLIC_KEY`). With `DATABASE_URL`, the bench
//! businesses are created first and every acknowledged event is looked up afterwards.

mod bench;
mod db;
mod drive;
mod payload;
mod presign;
mod run;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator and benchmarks for hookd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send signed webhooks over N keep-alive connections and report throughput, latency
    /// percentiles, every non-2xx by status, and whether every acknowledged event was stored.
    Run(Box<RunArgs>),
    /// Sign requests ahead of time for a client that does not sign, such as wrk with
    /// loadgen/wrk/replay.lua; hookd accepts them for five minutes.
    Presign(Box<PresignArgs>),
    /// Time hooktop's refresh: the same `common::db::stats` and `dlq` calls, query by query.
    RefreshBench(RefreshArgs),
    /// Store a backlog of pending events (the bodies `run` sends) for the workers to drain.
    SeedBacklog(SeedArgs),
    /// DESIGN.md's performance targets side by side on a private, durable PostgreSQL cluster:
    /// pgbench baseline, ingest, half load, receive-only, drain, hooktop refresh, purge, memory.
    Bench(Box<bench::Args>),
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("expected e.g. 20s or 1m: {e}"))
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Base URL of hookd.
    #[arg(long, env = "HOOKD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent connections, each one task sending one request at a time.
    #[arg(short = 'c', long, default_value_t = 32)]
    connections: usize,
    /// How long to send (default 10s unless --requests is given).
    #[arg(short = 'd', long, value_parser = duration)]
    duration: Option<Duration>,
    /// How many requests to send in all.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Open loop: schedule request i at start + i/RATE and measure latency from the schedule.
    #[arg(long)]
    rate: Option<f64>,
    /// Leave the first part out of throughput and latency (requests are still checked).
    #[arg(long, value_parser = duration, default_value = "0s")]
    warmup: Duration,
    /// Relative weights of the sources, e.g. stripe=1,telnyx=1,custom=1.
    #[arg(long, default_value = "stripe=1,telnyx=1,custom=1")]
    mix: String,
    /// How many businesses the payloads are spread over (cus_loadgen_K, +1555030KKKK).
    #[arg(long, default_value_t = 100)]
    businesses: u64,
    /// A request not answered within this counts as an error.
    #[arg(long, value_parser = duration, default_value = "10s")]
    timeout: Duration,
    /// hookd's database: creates the bench businesses and checks every acknowledged event.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Skip the check that every acknowledged event is in the database.
    #[arg(long)]
    no_check: bool,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    secrets: SecretArgs,
}

/// The secrets to sign with, from the variables hookd reads.
#[derive(Debug, clap::Args)]
struct SecretArgs {
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    stripe_secret: Option<String>,
    /// Base64 32-byte Ed25519 seed (the private half of hookd's TELNYX_PUBLIC_KEY).
    #[arg(long, env = "TELNYX_SIGNING_KEY", hide_env_values = true)]
    telnyx_signing_key: Option<String>,
    #[arg(long, env = "CUSTOM_WEBHOOK_SECRET", hide_env_values = true)]
    custom_secret: Option<String>,
}

impl From<SecretArgs> for drive::Secrets {
    fn from(s: SecretArgs) -> Self {
        drive::Secrets {
            stripe: s.stripe_secret,
            telnyx_seed: s.telnyx_signing_key,
            custom: s.custom_secret,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PresignArgs {
    /// Base URL of hookd (its host goes into the Host header).
    #[arg(long, env = "HOOKD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How many requests, each with its own event id.
    #[arg(short = 'n', long)]
    count: u64,
    /// Relative weights of the sources, as for `run`.
    #[arg(long, default_value = "stripe=1,telnyx=1,custom=1")]
    mix: String,
    /// How many businesses the payloads are spread over.
    #[arg(long, default_value_t = 100)]
    businesses: u64,
    /// hookd's database: creates the bench businesses, which custom events then name.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The file to write: raw HTTP/1.1 requests, each after a line with its length.
    #[arg(long)]
    out: std::path::PathBuf,
    #[command(flatten)]
    secrets: SecretArgs,
}

#[derive(Debug, clap::Args)]
struct RefreshArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Timed refreshes (after one untimed).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SeedArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Events to store.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    count: u64,
    /// Relative weights of the sources, as for `run`.
    #[arg(long, default_value = "telnyx=1,custom=1")]
    mix: String,
    /// How many businesses the payloads are spread over.
    #[arg(long, default_value_t = 100)]
    businesses: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run(*args).await,
        Command::Bench(args) => bench::main(*args).await,
        Command::Presign(args) => {
            let mix = payload::parse_mix(&args.mix)?;
            let (_, host) = drive::target(&args.url)?;
            let pool = match &args.database_url {
                Some(url) => Some(db::pool(url, 2).await?),
                None => None,
            };
            let secrets = args.secrets.into();
            let generator =
                drive::generator(&secrets, &mix, args.businesses, pool.as_ref()).await?;
            let bytes = presign::write(&generator, &mix, &host, args.count, &args.out)?;
            println!(
                "{} requests ({:.1} MiB) in {}; replay within five minutes",
                args.count,
                bytes as f64 / (1 << 20) as f64,
                args.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::RefreshBench(args) => {
            let pool = db::pool(&args.database_url, 4).await?;
            let report = db::refresh_bench(&pool, args.runs).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.human());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SeedBacklog(args) => {
            let mix = payload::parse_mix(&args.mix)?;
            let pool = db::pool(&args.database_url, 2).await?;
            let business_ids = db::ensure_businesses(&pool, args.businesses).await?;
            let generator = payload::Generator {
                keys: payload::Keys::new(None, None, None)?,
                ids: payload::Ids::new(),
                businesses: args.businesses,
                business_ids,
            };
            let started = std::time::Instant::now();
            let stored = db::seed_backlog(&pool, &generator, &mix, args.count).await?;
            println!(
                "stored {stored} pending events in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let load = drive::Load {
        url: args.url,
        connections: args.connections,
        duration,
        requests: args.requests,
        rate: args.rate,
        warmup: args.warmup,
        timeout: args.timeout,
        mix: payload::parse_mix(&args.mix)?,
        businesses: args.businesses,
        secrets: args.secrets.into(),
        database_url: args.database_url,
        check: !args.no_check,
    };

    // Ctrl-C or SIGTERM stop sending; what was sent is still reported and checked.
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.cancel();
        });
    }

    let report = drive::load(load, stop).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(if report.missing > 0 {
        eprintln!(
            "loadgen: {} acknowledged events are missing from the database",
            report.missing
        );
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
