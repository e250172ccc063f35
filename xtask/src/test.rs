//! `cargo xtask test`: rustfmt, clippy, then `cargo test --workspace` against a private,
//! throwaway cluster (removed afterwards, also on Ctrl-C).

use std::process::Command;

use anyhow::Context;
use pgcluster::{Binaries, Cluster};

use crate::{cargo, heading, step};

/// The real tools the end-to-end tests drive, by the Debian package that has them: tmux
/// (hooktop in a real terminal), a D-Bus session bus (desktop notifications), systemd-analyze
/// (the unit files), promtool (the dashboard and alert rules) and wrk (the benchmark's
/// off-the-shelf client).
const TOOLS: [(&str, &str); 5] = [
    ("tmux", "tmux"),
    ("dbus-daemon", "dbus"),
    ("systemd-analyze", "systemd"),
    ("promtool", "prometheus"),
    ("wrk", "wrk"),
];

/// The package test builds a .deb from the debug binaries the suite builds anyway; pinned
/// because cargo-deb means to refuse the dev profile some day.
const CARGO_DEB: &str = "3.8.0";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (cargo_args, harness_args) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], &args[at..]),
        None => (args, &[][..]),
    };
    let lint = std::env::var("HOOKD_TEST_SKIP_LINT").as_deref() != Ok("1");
    let own_database = std::env::var_os("DATABASE_URL").is_none_or(|u| u.is_empty());

    heading("Toolchain, test tools and PostgreSQL");
    step(cargo().arg("--version"))?;
    if lint {
        for component in ["fmt", "clippy"] {
            step(cargo().args([component, "--version"])).with_context(|| {
                format!("cargo {component} is missing: rustup component add rustfmt clippy")
            })?;
        }
    }
    install_tools()?;
    let binaries = if own_database {
        let binaries = Binaries::find_or_install()?;
        eprintln!(
            "PostgreSQL {} in {}",
            binaries.major(),
            binaries.dir().display()
        );
        Some(binaries)
    } else {
        eprintln!("DATABASE_URL is set: using that database, no private cluster");
        None
    };

    if lint {
        heading("cargo fmt --all -- --check");
        step(cargo().args(["fmt", "--all", "--", "--check"]))?;
        heading("cargo clippy --workspace --all-targets --locked -- -D warnings");
        step(
            cargo()
                .args(["clippy", "--workspace", "--all-targets", "--locked"])
                .args(["--", "-D", "warnings"]),
        )?;
    }

    // Compiled before the database exists, so no compile-time tooling ever looks at it; the
    // executables the process tests spawn are built here, not on both cores mid-suite.
    heading("Build");
    let test = || {
        let mut test = cargo();
        test.args(["test", "--workspace", "--locked"])
            .args(cargo_args);
        test
    };
    step(test().arg("--no-run").env_remove("DATABASE_URL"))?;
    step(
        cargo()
            .args(["build", "--workspace", "--bins", "--locked"])
            .env_remove("DATABASE_URL"),
    )?;

    let mut run = test();
    run.args(harness_args);
    // Kept until the tests are done: dropping it stops and deletes the cluster.
    let (_cluster, url) = match binaries {
        Some(binaries) => {
            heading("Throwaway PostgreSQL cluster");
            // Tests run in parallel and every #[sqlx::test] makes its own database and pool.
            let cluster = Cluster::temporary()
                .binaries(binaries.clone())
                .setting("max_connections", "300")
                .setting("shared_buffers", "128MB")
                .database("hookd")
                .start()?;
            eprintln!(
                "{} (data {})",
                cluster.url("hookd"),
                cluster.data_dir().display()
            );
            // The fault tests make clusters of their own from the same binaries.
            run.env("HOOKD_PG_BIN", binaries.dir());
            let url = cluster.url("hookd");
            (Some(cluster), url)
        }
        None => (
            None,
            std::env::var("DATABASE_URL").context("DATABASE_URL is not Unicode")?,
        ),
    };
    // hookd's tables live in its own schema; the tests' own connections find them as hookd's do.
    let joiner = if url.contains('?') { '&' } else { '?' };
    run.env(
        "DATABASE_URL",
        format!("{url}{joiner}options=-csearch_path%3Dhookd%2Cpublic"),
    );

    heading("Tests");
    step(&mut run)?;
    eprintln!("\n==> cargo xtask test: all checks passed");
    Ok(())
}

fn install_tools() -> anyhow::Result<()> {
    let on_path = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("installing test tools: {}", missing.join(" "));
        pgcluster::apt_install(&missing)?;
    }
    if !cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("installing cargo-deb {CARGO_DEB} (about a minute of compiling, once)");
        step(cargo().args([
            "install",
            "--locked",
            "--quiet",
            "cargo-deb",
            "--version",
            CARGO_DEB,
        ]))?;
    }
    Ok(())
}
