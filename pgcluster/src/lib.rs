//! Private PostgreSQL clusters for hookd's test suite, fault tests, benchmark and development
//! setup: find (or install) the server binaries, `initdb` a throwaway or persistent cluster,
//! start, stop, restart, and clean up when dropped or interrupted.
//!
//! Hand-written rather than `pgtemp` because what the callers need is beyond it: PostgreSQL
//! refuses to run as root (CI runs as root), so the server runs as the `postgres` user; the
//! fault tests stop and restart the same cluster mid-test, some inside a network namespace;
//! the development cluster outlives the process that started it. Nothing is ever downloaded:
//! the binaries are Debian's (`apt-get install postgresql` when missing).
//!
//! Every cluster has its own data directory, listens on its own port (loopback unless told
//! otherwise) and keeps its Unix socket beside its data, so it never meets the system cluster
//! Debian's package starts on 5432.

mod binaries;
mod cleanup;
mod cluster;

pub use binaries::Binaries;
pub use cleanup::clean_up_on_signal;
pub use cluster::{Builder, Cluster, Stop};

/// What went wrong while finding, creating or driving a cluster, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PostgreSQL server binaries not found: {0}")]
    NotFound(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A tool (initdb, pg_ctl, psql, apt-get) ran and failed; `output` is what it said.
    #[error("`{command}` failed ({status}){output}")]
    Tool {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("{0}")]
    Setup(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `apt-get install` of Debian packages, through sudo when not root: the server when it is
/// missing, and whatever else the caller's tests drive.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| {
        let mut command = if nix::unistd::geteuid().is_root() {
            std::process::Command::new("apt-get")
        } else {
            let mut sudo = std::process::Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        let status = command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(io(format!(
                "cannot run apt-get to install {} (not Debian? install them yourself)",
                packages.join(" ")
            )))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| Error::Setup(format!("`apt-get {}` failed ({status})", args.join(" "))))
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(packages);
    apt(&install)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Runs `command` to completion; its output is the error when it fails.
fn run(command: &mut std::process::Command) -> Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io(format!("cannot run {shown}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    Err(Error::Tool {
        command: shown,
        status: output.status,
        output: if said.trim().is_empty() {
            String::new()
        } else {
            format!(":\n{}", said.trim_end())
        },
    })
}
