//! The systemd service protocol: readiness, status lines and the watchdog. Every call is a
//! no-op when hookd does not run under systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::worker::Heartbeat;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
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
