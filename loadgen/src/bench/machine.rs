//! The machine the figures come from, and what /proc says about the processes on it: a reader
//! judging a figure needs to know what else was busy.

use std::fmt::Write as _;

use super::Bench;

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// User plus system CPU seconds `pid` has used (clock ticks of 1/100 s, as on every
/// mainstream Linux).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Peak resident set of `pid` so far (VmHWM), KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Busy and total jiffies of the whole machine since boot.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return CpuTimes::default();
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = v.iter().sum();
        // idle and iowait are the idle columns.
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        CpuTimes {
            busy: total - idle,
            total,
        }
    }

    /// Cores busy on average since `earlier`.
    pub fn busy_cores_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        cores() as f64 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// Date, CPU, memory, kernel, PostgreSQL, its settings, the disk's fsync speed and the commit.
pub async fn describe(bench: &Bench) -> anyhow::Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("?", |(_, name)| name.trim());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let (version, _) = bench.pg.version().await?;
    let o = &bench.options;
    let mut out = String::new();
    writeln!(
        out,
        "date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )?;
    writeln!(
        out,
        "nproc: {}  cpu: {cpu}  memory: {:.1} GiB",
        cores(),
        mem_kib as f64 / 1_048_576.0
    )?;
    writeln!(out, "kernel: {}", command_line("uname", &["-sr"]).await)?;
    writeln!(out, "postgres: {version}")?;
    writeln!(out, "settings: {}", bench.pg.settings().await?)?;
    writeln!(out, "pg_test_fsync -s 2 (one 8kB write):")?;
    for line in fsync_speed(bench).await.lines() {
        writeln!(out, "  {line}")?;
    }
    let dirty = !command_line("git", &["status", "--porcelain"])
        .await
        .is_empty();
    writeln!(
        out,
        "git: {}{}",
        command_line("git", &["rev-parse", "--short", "HEAD"]).await,
        if dirty { " + uncommitted changes" } else { "" }
    )?;
    writeln!(
        out,
        "runs per figure: {}, concurrency {}, {} s per throughput run (+{} s warm-up){}",
        o.runs,
        o.concurrency,
        o.duration.as_secs(),
        o.warmup.as_secs(),
        if o.quick { " (--quick)" } else { "" }
    )?;
    Ok(out)
}

/// pg_test_fsync's single 8 kB write, on the cluster's file system. Skipped by --quick: it
/// takes half a minute.
async fn fsync_speed(bench: &Bench) -> String {
    if bench.options.quick {
        return "(skipped by --quick)".into();
    }
    let cluster = bench.pg.cluster();
    let Some(root) = cluster.data_dir().parent() else {
        return "(no cluster directory)".into();
    };
    let scratch = root.join("pg_test_fsync.tmp");
    // As the server's user, who owns the cluster directory.
    let mut command = tokio::process::Command::from(cluster.command("pg_test_fsync"));
    let output = command
        .arg("-s")
        .arg("2")
        .arg("-f")
        .arg(&scratch)
        .output()
        .await;
    let _ = std::fs::remove_file(&scratch);
    let Ok(output) = output else {
        return "(pg_test_fsync not available)".into();
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut on = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.contains("one 8kB write") {
            on = true;
        } else if line.contains("two 8kB writes") {
            break;
        } else if on && line.contains("ops/sec") {
            lines.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    if lines.is_empty() {
        "(pg_test_fsync said nothing usable)".into()
    } else {
        lines.join("\n")
    }
}

/// The first line a command prints, or "?".
async fn command_line(program: &str, args: &[&str]) -> String {
    match tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        _ => "?".into(),
    }
}
