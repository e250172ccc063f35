//! hookd's project commands, run as `cargo xtask <command>` (an alias in .cargo/config.toml):
//!
//! - `cargo xtask test [CARGO TEST ARGS] [-- HARNESS ARGS]`: the whole suite as CI runs it.
//! - `cargo xtask dev [HOOKD SERVE ARGS]`: hookd against a local development cluster.
//! - `cargo xtask bench [LOADGEN BENCH ARGS]`: the performance targets, on release binaries.
//!
//! They are Rust, not bash, so that the cluster handling is the one the tests and the
//! benchmark use (the `pgcluster` crate).

mod bench;
mod dev;
mod test;

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "hookd's project commands")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Formatting, lints and every test against a private, throwaway PostgreSQL cluster
    /// (PostgreSQL and the test tools are apt-get installed when missing). With DATABASE_URL
    /// set, that database is used instead. This is what CI runs.
    Test {
        /// Arguments for `cargo test`; after `--`, for the test harness.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Builds hookd and runs it against a persistent development cluster in .hookd-dev/pg
    /// (port HOOKD_DEV_PG_PORT, default 54329; trust auth on loopback: development only), with
    /// development secrets generated once into .hookd-dev/secrets.env. With DATABASE_URL set,
    /// that database is used instead.
    Dev {
        /// Arguments for `hookd serve`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Builds the release binaries and runs `loadgen bench` with them: DESIGN.md's performance
    /// targets side by side with pgbench on a private, durable cluster (docs/BENCHMARKS.md).
    Bench {
        /// Arguments for `loadgen bench` (`--quick`, `--only`, `--runs`, `--help`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgcluster::clean_up_on_signal();
    let done = match cli.command {
        Task::Test { args } => test::run(&args),
        Task::Dev { args } => dev::run(&args),
        Task::Bench { args } => bench::run(&args),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: xtask lives in its top-level `xtask/` directory.
fn repo() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("xtask/ has a parent").to_owned()
}

fn heading(text: &str) {
    eprintln!("\n==> {text}");
}

/// Runs `command` in the repository, failing with what it was when it fails.
fn step(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .current_dir(repo())
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The workspace's target directory, wherever CARGO_TARGET_DIR or a config puts it.
fn target_dir() -> anyhow::Result<std::path::PathBuf> {
    let output = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(repo())
        .output()
        .context("cannot run cargo metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(Into::into)
        .context("cargo metadata names no target directory")
}
