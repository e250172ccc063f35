//! The systemd service protocol: readiness, status lines and the watchdog. Every call is a
//! no-op when hookd does not run under systemd (no `NOTIFY_SOCKET`), and none ever blocks.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::worker::Heartbeat;

/// How long a message systemd must not miss (readiness, stopping) is tried again while the
/// notify socket is full.
const DEFER_FOR: Duration = Duration::from_secs(60);

/// Sends without ever blocking: a busy or restarting PID 1 reads its socket late, and a
/// blocking send would hang a runtime thread, and with it webhooks and health. When the socket
/// is full, status lines and watchdog pings are dropped (the next one follows soon) and READY
/// and STOPPING are tried again in the background; either is said once in the log.
fn notify(states: &[NotifyState]) {
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    match send(&message) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            static SAID: AtomicBool = AtomicBool::new(false);
            let must_arrive = states
                .iter()
                .any(|s| matches!(s, NotifyState::Ready | NotifyState::Stopping));
            if !SAID.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the systemd notify socket is full; dropping status and watchdog messages \
                     and retrying readiness until it drains"
                );
            }
            if must_arrive && let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(defer(message));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
    }
}

async fn defer(message: String) {
    let deadline = tokio::time::Instant::now() + DEFER_FOR;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match send(&message) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
            Ok(()) => {}
        }
        return;
    }
    tracing::warn!(
        message = message.trim(),
        "systemd never read its notify socket; gave up"
    );
}

/// One datagram to `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket), non-blocking.
fn send(message: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &address)?;
    } else {
        socket.send_to(message.as_bytes(), &path)?;
    }
    Ok(())
}

pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// Migrations ran and the listener is bound: systemd may now order dependants after us.
pub fn ready(address: &str) {
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("listening on {address}")),
    ]);
}

pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: finishing in-flight work"),
    ]);
}

/// The interval systemd expects pings at, when it watches us. As in libsystemd's
/// `sd_watchdog_enabled`, `WATCHDOG_PID` only disables the watchdog when it names another
/// process (sd-notify's version also requires it to be set).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us =
        std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
    (for_us && usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval while the workers (if this process runs any) come
/// round their loop: a wedged hookd stops pinging and systemd restarts it. A database outage
/// does not stop the pings, since a restart cannot cure it and hookd already answers 503
/// meanwhile; it shows in the status line instead.
pub async fn watchdog(pool: PgPool, heartbeat: Option<Heartbeat>, shutdown: CancellationToken) {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let mut ticks = tokio::time::interval(interval / 2);
    let mut database_was_up = true;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if heartbeat.as_ref().is_none_or(Heartbeat::alive) {
            notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!("workers stopped coming round their loop; withholding watchdog ping");
        }
        let database_up = tokio::time::timeout(interval / 2, common::db::ping(&pool))
            .await
            .is_ok_and(|r| r.is_ok());
        if database_up != database_was_up {
            status(if database_up {
                "running"
            } else {
                "database unreachable: answering 503"
            });
            database_was_up = database_up;
        }
    }
}
