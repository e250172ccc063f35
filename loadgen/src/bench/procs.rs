//! The real binaries the benchmark starts: `hookd serve` in the background, `hookd dlq purge`,
//! and hooktop's own refresh timing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::{Bench, machine};

/// A running `hookd serve`; killed if dropped while running (an error or Ctrl-C).
pub struct Hookd {
    child: Child,
    pid: u32,
    pub port: u16,
    pub log: PathBuf,
}

impl Hookd {
    /// hookd on `database` with the run's secrets, `HOOKD_RATE_LIMIT=off` (loadgen is one client
    /// sending everything) and `extra`; returns once it listens.
    pub async fn start(
        bench: &Bench,
        database: &str,
        log_name: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Hookd> {
        let port = free_port()?;
        let log = bench.file(log_name);
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(&bench.hookd);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(bench.hookd_env.iter().map(|(k, v)| (k, v)))
            .env("DATABASE_URL", bench.pg.url(database))
            .env("HOOKD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKD_RATE_LIMIT", "off")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", bench.hookd.display()))?;
        let pid = child.id().context("hookd has no pid")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "hookd exited during start-up ({status}):\n{}",
                    tail(&log, 20)
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "hookd did not listen on 127.0.0.1:{port} within 30 s (log: {})",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Hookd {
            child,
            pid,
            port,
            log,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cpu_secs(&self) -> f64 {
        machine::cpu_secs(self.pid).unwrap_or(0.0)
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        machine::peak_rss_kib(self.pid)
    }

    /// SIGTERM, as systemd stops it; killed if it takes over 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(i32::try_from(self.pid)?);
        let _ = kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("  (hookd did not stop within 10 s of SIGTERM; killed)");
            self.child.kill().await?;
        }
        Ok(())
    }

    /// How many lines of its log contain `needle`.
    pub fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// `hookd ARGS` on `database` to completion: its standard output.
pub async fn hookd_cli(bench: &Bench, database: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(&bench.hookd)
        .args(args)
        .env_clear()
        .env("DATABASE_URL", bench.pg.url(database))
        .kill_on_drop(true)
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "hookd {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// `hooktop --bench-refresh RUNS`, the dashboard's own refresh code: its output and the
/// median it reports, in ms.
pub async fn hooktop_refresh(
    hooktop: &Path,
    url: &str,
    runs: usize,
) -> anyhow::Result<(String, f64)> {
    let output = Command::new(hooktop)
        .arg("--database-url")
        .arg(url)
        .arg("--bench-refresh")
        .arg(runs.to_string())
        .kill_on_drop(true)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "hooktop --bench-refresh failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let median = median_ms(&text).with_context(|| format!("no median in hooktop's {text:?}"))?;
    Ok((text, median))
}

/// "refresh x30: median 25.10 ms, ..." -> 25.1
fn median_ms(text: &str) -> Option<f64> {
    let after = text.split("median ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_median_hooktop_prints() {
        let line = "refresh x30: median 25.10 ms, min 20.00 ms, p90 30.00 ms, max 40.00 ms\n";
        assert_eq!(super::median_ms(line), Some(25.1));
    }
}
