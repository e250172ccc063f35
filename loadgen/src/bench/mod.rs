//! `loadgen bench`: hookd's performance targets (DESIGN.md §4) measured side by side in one
//! run, on a fresh, private, durable PostgreSQL cluster (fsync and synchronous_commit on).
//!
//! The real `hookd` (and `hooktop`) binaries beside this one are started as processes, as an
//! operator runs them; the load is this crate's own `run` module, whose typed reports the
//! stages read. Every figure is the median of `--runs` runs, and each hookd run's ratio is
//! taken against the pgbench run just before it, because the machine is shared and its speed
//! drifts within minutes. Everything started here is stopped on exit, Ctrl-C included.

mod drain;
mod endtoend;
mod ingest;
mod machine;
mod pg;
mod pgbench;
mod procs;
mod purge;
mod refresh;
mod replay;
mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use common::Source;

use crate::drive::Secrets;
use crate::payload;

pub use summary::Summary;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs per figure; each figure is the median (default 3; --quick: 1).
    #[arg(long)]
    runs: Option<usize>,
    /// A smoke run of every stage with tiny sizes (about two minutes on debug binaries).
    #[arg(long)]
    quick: bool,
    /// Connections for pgbench and loadgen.
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of each throughput run, after a warm-up (default 20 s + 2 s; --quick: 3 + 1).
    #[arg(short = 'T', long)]
    duration: Option<u64>,
    /// Events in the drain backlog (default 100000).
    #[arg(long)]
    backlog: Option<u64>,
    /// Stored events for the hooktop refresh, ascending (default 1000000,10000000).
    #[arg(long, value_delimiter = ',')]
    history: Option<Vec<u64>>,
    /// Dead events older than 7 days to purge (default 1000000).
    #[arg(long)]
    purge: Option<u64>,
    /// Open-loop ingest rate while purging, requests per second.
    #[arg(long, default_value_t = 200.0)]
    purge_rate: f64,
    /// Source mix of the ingest load.
    #[arg(long, default_value = "stripe=1,telnyx=1,custom=1")]
    mix: String,
    /// Source mix of the drain backlog.
    #[arg(long, default_value = "telnyx=1,custom=1")]
    drain_mix: String,
    /// Stages to run: pgbench,ingest,half,open,receive,wrk,e2e,drain,refresh,purge (default
    /// all).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Stage>,
    /// Also load pg_stat_statements and sample hookd's wait events during ingest (small
    /// overhead; the output goes into the run directory).
    #[arg(long)]
    diagnose: bool,
    /// A hookd setting for every hookd started, as NAME=VALUE (repeatable), e.g.
    /// `--hookd-set HOOKD_BATCH_SIZE=250`; a stage's own settings (HOOKD_WORKERS=0 for
    /// receive-only) still win.
    #[arg(long = "hookd-set", value_name = "NAME=VALUE", value_parser = setting)]
    hookd_set: Vec<(String, String)>,
    /// Where hookd and hooktop are (default: beside this loadgen, so a release loadgen runs
    /// the release binaries).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where logs and results go (default <target>/bench/<UTC time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout (the table still goes to stderr).
    #[arg(long)]
    json: bool,
}

fn setting(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if name.starts_with("HOOKD_") => Ok((name.into(), value.into())),
        _ => Err(format!("expected HOOKD_<NAME>=VALUE, got {raw:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    Pgbench,
    Ingest,
    Half,
    /// hookd and the baseline's INSERT at half of pgbench's rate, timed by one open-loop
    /// generator.
    Open,
    Receive,
    /// Receive-only hookd under wrk, replaying requests signed before the run.
    Wrk,
    /// A burst, then until its backlog is processed.
    #[value(name = "e2e")]
    EndToEnd,
    Drain,
    Refresh,
    Purge,
}

/// The options with `--quick`'s sizes or the full run's filled in.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub runs: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub backlog: u64,
    pub history: Vec<u64>,
    pub purge: u64,
    pub purge_rate: f64,
    pub mix: Vec<Source>,
    pub mix_label: String,
    pub drain_mix: Vec<Source>,
    pub stages: Vec<Stage>,
    pub diagnose: bool,
}

impl Options {
    fn from_args(args: &Args) -> anyhow::Result<Options> {
        let quick = args.quick;
        let pick = |given: Option<u64>, quick_value: u64, full: u64| {
            given.unwrap_or(if quick { quick_value } else { full })
        };
        let options = Options {
            quick,
            runs: args.runs.unwrap_or(if quick { 1 } else { 3 }),
            concurrency: args.concurrency,
            duration: Duration::from_secs(pick(args.duration, 3, 20)),
            warmup: Duration::from_secs(if quick { 1 } else { 2 }),
            backlog: pick(args.backlog, 3_000, 100_000),
            history: args.history.clone().unwrap_or(if quick {
                vec![10_000, 40_000]
            } else {
                vec![1_000_000, 10_000_000]
            }),
            purge: pick(args.purge, 10_000, 1_000_000),
            purge_rate: args.purge_rate,
            mix: payload::parse_mix(&args.mix)?,
            mix_label: args.mix.clone(),
            drain_mix: payload::parse_mix(&args.drain_mix)?,
            stages: args.only.clone(),
            diagnose: args.diagnose,
        };
        if options.runs == 0 || options.concurrency == 0 || options.duration.is_zero() {
            bail!("--runs, --concurrency and --duration must be above 0");
        }
        if options.backlog == 0 || options.purge == 0 || options.history.contains(&0) {
            bail!("--backlog, --purge and the --history sizes must be above 0");
        }
        if options.history.is_empty() || !options.history.is_sorted() {
            bail!("--history takes ascending sizes such as 1000000,10000000");
        }
        if !(options.purge_rate > 0.0 && options.purge_rate.is_finite()) {
            bail!("--purge-rate must be above 0");
        }
        if options.runs_stage(Stage::Half) && !options.runs_stage(Stage::Ingest) {
            bail!("--only half needs the ingest stage too (its rate is half of ingest's)");
        }
        if options.runs_stage(Stage::Open) && !options.runs_stage(Stage::Pgbench) {
            bail!("--only open needs the pgbench stage too (its rate is half of pgbench's)");
        }
        Ok(options)
    }

    pub fn runs_stage(&self, stage: Stage) -> bool {
        self.stages.is_empty() || self.stages.contains(&stage)
    }
}

/// What every stage shares: the options, the cluster, the binaries, the secrets, the output.
pub struct Bench {
    pub options: Options,
    pub pg: pg::Pg,
    pub hookd: PathBuf,
    pub hooktop: Option<PathBuf>,
    /// hookd's environment for the secrets (`hookd dev-secrets`, made for this run).
    pub hookd_env: Vec<(String, String)>,
    /// The same secrets as loadgen signs with them.
    pub secrets: Secrets,
    pub out: PathBuf,
}

impl Bench {
    /// A file in the run directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

/// Prints a stage's heading with the load average, which says how busy the machine is.
pub fn heading(text: &str) {
    eprintln!("\n==> {text}  (load average {})", machine::load_average());
}

pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    let options = Options::from_args(&args)?;
    // Interrupted, the whole benchmark is dropped: the processes it started are killed and
    // the cluster is stopped and removed by their destructors.
    let summary = tokio::select! {
        summary = run(&args, options) => summary?,
        signal = interrupted() => {
            eprintln!("loadgen bench: interrupted; stopped everything it started");
            return Ok(ExitCode::from(128 + signal));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn interrupted() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
        _ = hup.recv() => 1,
    }
}

async fn run(args: &Args, options: Options) -> anyhow::Result<Summary> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => own_dir()?,
    };
    let hookd = bin_dir.join("hookd");
    if !hookd.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release -p hookd -p hooktop) or \
             pass --bin-dir",
            hookd.display()
        );
    }
    let hooktop = Some(bin_dir.join("hooktop")).filter(|p| p.is_file());
    if hooktop.is_none() {
        eprintln!(
            "NOTE: no hooktop in {}: refresh figures come from loadgen's own reading",
            bin_dir.display()
        );
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => default_out(&bin_dir),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    heading("starting a private, durable PostgreSQL cluster");
    let pg = pg::Pg::start(&options).await?;
    let (mut hookd_env, secrets) = dev_secrets(&hookd).await?;
    for (name, value) in &args.hookd_set {
        eprintln!("every hookd runs with {name}={value}");
        hookd_env.push((name.clone(), value.clone()));
    }
    let bench = Bench {
        options,
        pg,
        hookd,
        hooktop,
        hookd_env,
        secrets,
        out,
    };
    heading("machine");
    let machine = machine::describe(&bench).await?;
    eprint!("{machine}");
    std::fs::write(bench.file("machine.txt"), &machine)?;

    let mut summary = Summary::new(&bench.options);
    let mut baseline = pgbench::Baseline::prepare(&bench).await?;
    ingest::stages(&bench, &mut baseline, &mut summary).await?;
    replay::stage(&bench, &mut baseline, &mut summary).await?;
    endtoend::stage(&bench, &mut baseline, &mut summary).await?;
    drain::stage(&bench, &mut baseline, &mut summary).await?;
    refresh::stage(&bench, &mut baseline, &mut summary).await?;
    baseline.finish(&bench, &mut summary).await?;
    purge::stage(&bench, &mut summary).await?;

    let table = summary.markdown(&bench.out);
    eprint!("\n{table}");
    std::fs::write(bench.file("summary.md"), &table)?;
    std::fs::write(
        bench.file("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(summary)
}

/// The directory this executable is in.
fn own_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("where is this loadgen?")?;
    Ok(exe.parent().context("loadgen has no directory")?.to_owned())
}

/// `<target>/bench/<UTC time>` for binaries in `<target>/<profile>`.
fn default_out(bin_dir: &Path) -> PathBuf {
    let target = bin_dir.parent().unwrap_or(bin_dir);
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    target.join("bench").join(stamp.to_string())
}

/// Secrets for this run only, from hookd's own generator: hookd's environment, and the same
/// values as loadgen signs with them.
async fn dev_secrets(hookd: &Path) -> anyhow::Result<(Vec<(String, String)>, Secrets)> {
    let output = tokio::process::Command::new(hookd)
        .arg("dev-secrets")
        .output()
        .await
        .context("running hookd dev-secrets")?;
    if !output.status.success() {
        bail!("hookd dev-secrets failed ({})", output.status);
    }
    let env: Vec<(String, String)> = String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let secrets = Secrets {
        stripe: get("STRIPE_WEBHOOK_SECRET"),
        telnyx_seed: get("TELNYX_SIGNING_KEY"),
        custom: get("CUSTOM_WEBHOOK_SECRET"),
    };
    // hookd gets the public half of the Telnyx key, as in production.
    let hookd_env = [
        "STRIPE_WEBHOOK_SECRET",
        "TELNYX_PUBLIC_KEY",
        "CUSTOM_WEBHOOK_SECRET",
    ]
    .into_iter()
    .map(|name| {
        let value = get(name).with_context(|| format!("hookd dev-secrets printed no {name}"))?;
        Ok((name.to_owned(), value))
    })
    .collect::<anyhow::Result<_>>()?;
    Ok((hookd_env, secrets))
}
