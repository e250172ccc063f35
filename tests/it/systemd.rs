//! hookd under systemd: the shipped unit passes `systemd-analyze verify`, its sandbox keeps a low
//! exposure score, the example settings files say what hookd really does, and the real hookd
//! speaks the notify protocol (status, readiness, watchdog, stopping) over a real socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use crate::harness::*;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/hookd.service");
const ENV_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/hookd.env.example");
const TOML_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/hookd.toml.example");

/// `systemd-analyze security` exposure measured for systemd/hookd.service (0 best, 10 worst).
/// What remains is what a network daemon needs: the host network (0.5), AF_INET/AF_INET6 (0.3),
/// no IP allow list (0.2), AF_UNIX for PostgreSQL's socket and sd_notify (0.1), the host's root
/// directory (0.1) and the char-rtc read ACL that ProtectClock= itself adds (0.1).
const MAX_EXPOSURE: f64 = 1.1;

/// `systemd-analyze`, when installed.
fn systemd_analyze() -> Option<&'static str> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => Some("systemd-analyze"),
        Ok(out) => panic!(
            "systemd-analyze --version failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

fn systemd_version() -> u32 {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "systemd 252 (252.38-1~deb12u1)"
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected systemd-analyze --version output: {text}"))
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hookd-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shipped unit, made verifiable on a machine where hookd is not installed: ExecStart points
/// at the freshly built binary and absolute credential sources at files that exist. (Credentials
/// named without a path are searched for in /etc/credstore and are optional.)
fn installable_copy(unit: &str, scratch: &Path) -> PathBuf {
    let binary = hookd_bin().to_str().expect("UTF-8 path").to_owned();
    let mut text = String::new();
    for line in unit.lines() {
        if let Some(rest) = line.strip_prefix("ExecStart=") {
            let args = rest
                .strip_prefix("/usr/bin/hookd")
                .expect("ExecStart runs /usr/bin/hookd");
            text += &format!("ExecStart={binary}{args}\n");
        } else if let Some((id, _)) = line
            .strip_prefix("LoadCredential=")
            .and_then(|c| c.split_once(':'))
            .filter(|(_, source)| source.starts_with('/'))
        {
            let file = scratch.join(format!("credential-{id}"));
            std::fs::write(&file, "placeholder\n").unwrap();
            text += &format!("LoadCredential={id}:{}\n", file.display());
        } else {
            text += line;
            text += "\n";
        }
    }
    let path = scratch.join("hookd.service");
    std::fs::write(&path, text).unwrap();
    path
}

/// Everything `systemd-analyze verify` says about a unit, or None when it says nothing.
fn verify(unit: &Path) -> Option<String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !said.trim().is_empty())
        .then(|| format!("exit {}\n{said}", out.status))
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    if systemd_analyze().is_none() {
        println!("skipped: systemd-analyze not installed");
        return;
    }
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let scratch = Scratch::new("verify");
    let copy = installable_copy(&unit, &scratch.0);
    if let Some(complaints) = verify(&copy) {
        panic!("systemd-analyze verify {}:\n{complaints}", copy.display());
    }

    // verify exits 0 on an unknown key and only prints a warning: make sure the check above
    // would have seen one.
    let broken = Scratch::new("verify-broken");
    let typo = unit.replace("NotifyAccess=main", "NotifyAcces=main");
    assert_ne!(typo, unit, "the unit sets NotifyAccess=main");
    let complaints = verify(&installable_copy(&typo, &broken.0))
        .expect("systemd-analyze verify reports an unknown key");
    assert!(complaints.contains("NotifyAcces"), "{complaints}");
}

#[test]
fn security_exposure_stays_low() {
    if systemd_analyze().is_none() {
        println!("skipped: systemd-analyze not installed");
        return;
    }
    let version = systemd_version();
    if version < 250 {
        println!("skipped: systemd-analyze {version} has no security --offline (needs 250)");
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(UNIT)
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unrecognized option") {
        println!("skipped: systemd-analyze {version} does not support --offline: {stderr}");
        return;
    }
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{stdout}{stderr}"));
    // "→ Overall exposure level for hookd.service: 1.1 OK 🙂"
    let exposure: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unparsable exposure line: {line}"));
    let remaining: Vec<&str> = stdout.lines().filter(|l| l.starts_with('✗')).collect();
    assert!(
        exposure <= MAX_EXPOSURE + 1e-9,
        "exposure {exposure} above {MAX_EXPOSURE}; open items:\n{}",
        remaining.join("\n")
    );
}

/// The unit's `Key=value` settings (the last one wins, as in systemd for single-valued keys).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

fn seconds(value: &str) -> u64 {
    value
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected whole seconds like 45s, got {value}"))
}

#[test]
fn unit_waits_for_readiness_watches_and_outlasts_the_drain() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert_eq!(setting(&unit, "Type"), Some("notify"));
    assert_eq!(setting(&unit, "NotifyAccess"), Some("main"));
    assert_eq!(setting(&unit, "KillSignal"), Some("SIGTERM"));
    assert_eq!(setting(&unit, "Restart"), Some("on-failure"));
    let watchdog = seconds(setting(&unit, "WatchdogSec").expect("WatchdogSec"));
    assert!(watchdog >= 10, "WatchdogSec={watchdog}s is too tight");
    // hookd drains within HOOKD_SHUTDOWN_TIMEOUT_SECS, then closes its pool and exits: systemd
    // must not SIGKILL it first.
    let drain = config(&[]).shutdown_timeout.as_secs();
    let stop = seconds(setting(&unit, "TimeoutStopSec").expect("TimeoutStopSec"));
    assert!(
        stop >= drain + 10,
        "TimeoutStopSec={stop}s leaves no margin over a {drain}s drain"
    );
}

type Settings = Vec<(String, String)>;

/// Live `NAME=value` lines, and commented `#NAME=value` / `#key = value` lines (defaults).
fn assignments(text: &str, separator: char) -> (Settings, Settings) {
    let (mut live, mut commented) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let (target, rest) = match line.strip_prefix('#') {
            Some(rest) => (&mut commented, rest),
            None => (&mut live, line),
        };
        let Some((key, value)) = rest.split_once(separator) else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || key.contains(' ')
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        // Drop a trailing `# comment` (TOML) and TOML string quotes.
        let value = value.split(" #").next().unwrap().trim();
        let value = value.trim_matches('"');
        target.push((key.to_owned(), value.to_owned()));
    }
    (live, commented)
}

/// Settings the examples show as samples rather than defaults.
fn is_sample(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let name = name.strip_prefix("HOOKD_").unwrap_or(&name);
    name.starts_with("FORWARD_URL_")
        || matches!(
            name,
            "DATABASE_URL"
                | "STRIPE_WEBHOOK_SECRET"
                | "TELNYX_PUBLIC_KEY"
                | "CUSTOM_WEBHOOK_SECRET"
                | "ADMIN_TOKEN"
                | "FORWARD_SECRET"
                | "CONFIG"
                | "RUST_LOG"
        )
}

fn load(env: &[(String, String)]) -> Result<hookd::Config, String> {
    let mut env: std::collections::HashMap<String, String> = env.iter().cloned().collect();
    env.insert(
        "DATABASE_URL".into(),
        "postgres://hookd@localhost/hookd".into(),
    );
    hookd::config::Sources::new(env)
        .and_then(|s| hookd::Config::load(&s))
        .map_err(|e| e.to_string())
}

#[test]
fn example_settings_files_state_hookds_real_defaults() {
    let defaults = format!("{:?}", load(&[]).unwrap());

    let env = std::fs::read_to_string(ENV_EXAMPLE).unwrap();
    let (live, commented) = assignments(&env, '=');
    let documented: Settings = live
        .iter()
        .chain(&commented)
        .filter(|(k, _)| !is_sample(k))
        .cloned()
        .collect();
    for name in [
        "HOOKD_LISTEN",
        "HOOKD_MAX_ATTEMPTS",
        "HOOKD_RETRY_BASE_MS",
        "HOOKD_RETRY_MAX_MS",
        "HOOKD_WORKERS",
        "HOOKD_BATCH_SIZE",
        "HOOKD_BATCH_WAIT_MS",
        "HOOKD_LEASE_SECS",
        "HOOKD_POLL_INTERVAL_MS",
        "HOOKD_SHUTDOWN_TIMEOUT_SECS",
        "HOOKD_DB_MAX_CONNECTIONS",
        "HOOKD_BODY_LIMIT",
        "HOOKD_RATE_LIMIT",
        "HOOKD_RATE_BURST",
        "HOOKD_FORWARD_TIMEOUT_MS",
        "HOOKD_LOG_FORMAT",
    ] {
        assert!(
            documented.iter().any(|(k, _)| k == name),
            "hookd.env.example does not document {name}"
        );
    }
    let with_env = load(&documented).map_err(|e| format!("hookd.env.example: {e}"));
    assert_eq!(
        format!("{:?}", with_env.unwrap()),
        defaults,
        "hookd.env.example states a default hookd does not have"
    );
    // The samples are valid too (a forward URL needs the forward secret).
    let mut samples: Settings = commented
        .iter()
        .filter(|(k, _)| k.starts_with("HOOKD_FORWARD_URL_"))
        .cloned()
        .collect();
    samples.push(("HOOKD_FORWARD_SECRET".into(), CUSTOM_SECRET.into()));
    load(&samples).expect("the sample forward URLs load");

    let scratch = Scratch::new("toml-example");
    let toml = std::fs::read_to_string(TOML_EXAMPLE).unwrap();
    let (live, commented) = assignments(&toml, '=');
    let uncommented: String = live
        .iter()
        .chain(&commented)
        .filter(|(k, _)| !is_sample(k))
        .map(|(k, v)| match v.parse::<i64>() {
            Ok(n) => format!("{k} = {n}\n"),
            Err(_) => format!("{k} = {v:?}\n"),
        })
        .collect();
    for (name, _) in &documented {
        let key = name.strip_prefix("HOOKD_").unwrap().to_ascii_lowercase();
        assert!(
            uncommented
                .lines()
                .any(|l| l.starts_with(&format!("{key} "))),
            "hookd.toml.example does not document {key}"
        );
    }
    let file = scratch.0.join("hookd.toml");
    std::fs::write(&file, &uncommented).unwrap();
    let with_file = load(&[("HOOKD_CONFIG".into(), file.to_str().unwrap().into())])
        .map_err(|e| format!("hookd.toml.example: {e}"));
    assert_eq!(
        format!("{:?}", with_file.unwrap()),
        defaults,
        "hookd.toml.example states a default hookd does not have:\n{uncommented}"
    );
}

/// What hookd has told "systemd" so far, one assignment per entry, in order of arrival.
struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
    seen: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let path = std::env::temp_dir().join(format!(
            "hookd-it-notify-{}-{}.sock",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_file(&path);
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    fn transcript(&self) -> String {
        let start = self.seen.first().map(|(t, _)| *t);
        self.seen
            .iter()
            .map(|(t, l)| format!("  +{:>6} ms  {l}", (*t - start.unwrap()).as_millis()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Receives datagrams until one holds the assignment `wanted`; returns its index in `seen`.
    async fn until(&mut self, wanted: &str, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await;
            let Ok(received) = received else {
                panic!(
                    "no {wanted} within {limit:?}; hookd said:\n{}",
                    self.transcript()
                );
            };
            let n = received.expect("recv on the notify socket");
            let at = Instant::now();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut found = None;
            for line in text.lines().filter(|l| !l.is_empty()) {
                if line == wanted && found.is_none() {
                    found = Some(self.seen.len());
                }
                self.seen.push((at, line.to_owned()));
            }
            if let Some(index) = found {
                return index;
            }
        }
    }

    /// Everything that arrives within `window`.
    async fn collect_for(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        let mut buf = vec![0u8; 4096];
        while let Ok(received) = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await
        {
            let n = received.expect("recv on the notify socket");
            let at = Instant::now();
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if !line.is_empty() {
                    self.seen.push((at, line.to_owned()));
                }
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts `hookd serve` the way systemd starts a `Type=notify` service with `WatchdogSec=`:
/// `NOTIFY_SOCKET`, `WATCHDOG_USEC`, and `WATCHDOG_PID` set to the main process's pid (a shell
/// exports its own pid and execs hookd, so that pid is hookd's). Otherwise like
/// [`Process::spawn`].
fn spawn_as_systemd_would(pool: &PgPool, notify_socket: &str, watchdog_usec: &str) -> Process {
    let mut shell = Command::new("/bin/sh");
    // `serve` follows as "$1" once Process::spawn_with appends it.
    shell
        .args(["-c", "export WATCHDOG_PID=$$; exec \"$0\" \"$1\""])
        .arg(hookd_bin());
    Process::spawn_with(
        pool,
        &[
            ("NOTIFY_SOCKET", notify_socket),
            ("WATCHDOG_USEC", watchdog_usec),
        ],
        shell,
    )
}

/// The test database starts empty: `hookd serve` applies the migrations itself, before READY=1.
#[sqlx::test(migrations = false)]
async fn readiness_status_and_watchdog_over_a_real_notify_socket(pool: PgPool) {
    // Pings every 500 ms: enough slack for a loaded machine to deliver them late.
    const WATCHDOG_USEC: u64 = 1_000_000;
    let mut notify = NotifySocket::bind();
    let socket_path = notify.path.to_str().unwrap().to_owned();
    let watchdog_usec = WATCHDOG_USEC.to_string();
    let mut process = spawn_as_systemd_would(&pool, &socket_path, &watchdog_usec);

    // Start-up: status lines, then READY=1 once migrated and listening.
    let ready = notify.until("READY=1", Duration::from_secs(60)).await;
    let ready_at = notify.seen[ready].0;
    assert!(
        notify.seen[..ready]
            .iter()
            .any(|(_, l)| l.starts_with("STATUS=")),
        "no STATUS= before READY=1:\n{}",
        notify.transcript()
    );
    // The READY checks run while the pings are collected, so each ping is timed as it
    // arrives rather than when the checks are done.
    let port = process.port;
    let ready_checks = async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the HTTP port accepts connections at READY=1");
        let applied = count(&pool, "SELECT count(*) FROM _sqlx_migrations WHERE success").await;
        let shipped = common::MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count() as i64;
        assert_eq!(applied, shipped, "all migrations are applied at READY=1");
        let body = custom_event("systemd.ready");
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}{CUSTOM_PATH}"))
            .headers(
                custom_headers("msg_systemd_ready", &body, now())
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                    .collect(),
            )
            .body(body)
            .send()
            .await
            .expect("hookd answers at READY=1");
        assert_eq!(response.status(), 200, "a webhook is accepted at READY=1");
    };

    // Running: WATCHDOG=1 at half of WATCHDOG_USEC, never a full interval apart.
    tokio::join!(
        ready_checks,
        notify.collect_for(Duration::from_secs(3).saturating_sub(ready_at.elapsed()))
    );
    let pings: Vec<Instant> = notify
        .seen
        .iter()
        .filter(|(t, l)| *t >= ready_at && l == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(
        pings.len() >= 2,
        "{} WATCHDOG=1 in 3 s after READY=1 (every 500 ms expected):\n{}",
        pings.len(),
        notify.transcript()
    );
    let longest = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([pings[0] - ready_at])
        .max()
        .unwrap();
    assert!(
        longest < Duration::from_micros(WATCHDOG_USEC),
        "a {longest:?} gap between watchdog pings: systemd would have killed hookd:\n{}",
        notify.transcript()
    );

    // Stopping: STOPPING=1 and a draining status, then a clean exit.
    let before_stop = notify.seen.len();
    process.signal("TERM");
    notify.until("STOPPING=1", Duration::from_secs(10)).await;
    let draining = |seen: &[(Instant, String)]| {
        seen.iter()
            .any(|(_, l)| l.starts_with("STATUS=") && l.to_ascii_lowercase().contains("drain"))
    };
    if !draining(&notify.seen[before_stop..]) {
        notify.collect_for(Duration::from_secs(2)).await;
    }
    assert!(
        draining(&notify.seen[before_stop..]),
        "no STATUS= about draining after SIGTERM:\n{}",
        notify.transcript()
    );
    assert!(
        !notify.seen[before_stop..]
            .iter()
            .any(|(_, l)| l == "READY=1"),
        "READY=1 after SIGTERM:\n{}",
        notify.transcript()
    );
    let status = process.exit_within(Duration::from_secs(30)).await;
    assert!(status.success(), "hookd exited with {status} after SIGTERM");
    println!("hookd said:\n{}", notify.transcript());
}

/// A notify socket nobody reads (a busy or restarting PID 1) fills up after a few pings; hookd
/// must never block on it. For a whole minute, with the watchdog pinging every 50 ms into the
/// full socket, health and webhooks answer within a second.
#[sqlx::test(migrator = "common::MIGRATOR")]
async fn an_unread_notify_socket_never_stalls_hookd(pool: PgPool) {
    let path = std::env::temp_dir().join(format!(
        "hookd-it-unread-{}-{}.sock",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_file(&path);
    let unread = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    let process = spawn_as_systemd_would(&pool, path.to_str().unwrap(), "100000")
        .ready()
        .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{}", process.port);
    let started = Instant::now();
    let mut round = 0u32;
    while started.elapsed() < Duration::from_secs(60) {
        let health = client
            .get(format!("{base}/api/webhooks/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("health after {:?}: {e}", started.elapsed()));
        assert_eq!(health.status(), 200);
        if round.is_multiple_of(5) {
            let id = format!("msg_unread_{round}");
            let answer = signed_custom(&client, &base, &id, &custom_event("user.signed_up"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("webhook after {:?}: {e}", started.elapsed()));
            assert_eq!(answer.status(), 200);
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        process.log_lines("notify socket is full") == 1,
        "said once in the log"
    );
    // Its stdout is a file, not a terminal: no colour codes in it.
    let log = std::fs::read_to_string(&process.log).unwrap();
    assert!(!log.contains('\x1b'), "{log}");
    drop(unread);
    let _ = std::fs::remove_file(&path);
}

/// A log reader that stops reading (journald under pressure, a pipe nobody drains) must not
/// stall hookd either. With its stdout a pipe that is never read and every debug line on, 6,000
/// webhooks, whose log lines are many times the pipe's 64 KiB and the writer's buffer, are all
/// answered within a second each and all processed, and the metrics count the lines dropped.
#[sqlx::test(migrator = "common::MIGRATOR")]
async fn an_unread_log_pipe_never_stalls_hookd(pool: PgPool) {
    use futures::StreamExt;
    const EVENTS: usize = 6_000;
    const ADMIN: &str = "an-admin-token-of-some-length-0123456789";
    let (unread, writer) = std::io::pipe().expect("a pipe");
    let process = Process::spawn_with_stdout(
        &database_url(&pool),
        free_port(),
        &[("RUST_LOG", "debug"), ("HOOKD_ADMIN_TOKEN", ADMIN)],
        Command::new(hookd_bin()),
        Some(writer.into()),
    )
    .ready()
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{}", process.port);
    let started = Instant::now();
    futures::stream::iter(0..EVENTS)
        .map(|n| {
            let (client, base) = (&client, &base);
            async move {
                let id = format!("msg_unread_log_{n}");
                let answer = signed_custom(client, base, &id, &custom_event("user.signed_up"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("webhook {n} after {:?}: {e}", started.elapsed()));
                assert_eq!(answer.status(), 200);
            }
        })
        .buffer_unordered(8)
        .collect::<()>()
        .await;
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state = 'succeeded'",
        EVENTS as i64,
        Duration::from_secs(60),
    )
    .await;
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hookd_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no dropped-lines counter in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(dropped > 0, "{metrics}");
    drop(unread);
}
