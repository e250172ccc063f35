//! This process's liveness, as PostgreSQL sees it, and the rescue of dead processes' claims
//! (see `common::db::liveness`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::announce::Announcer;

/// How often every process looks for dead owners' claims: what bounds the time from a death
/// to the rescue, with the server's own notice of the death (at once for a closed connection,
/// within the keepalive settings below for a lost host).
const RESCUE_EVERY: Duration = Duration::from_secs(1);
/// The longest this process waits for its own lock connection to answer.
const LOOK: Duration = Duration::from_secs(2);

/// The owner number this process claims in, shared by its workers; none while the lock is
/// not held (claims then carry no owner, and only their lease returns them).
#[derive(Debug, Clone, Default)]
pub struct Owner(Arc<AtomicI32>);

impl Owner {
    pub fn get(&self) -> Option<i32> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&id| id != 0)
    }

    fn set(&self, id: Option<i32>) {
        self.0.store(id.unwrap_or(0), Ordering::Relaxed);
    }

    /// Waits up to `limit` for the lock to be held, so the first claims already carry it.
    pub async fn held_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.get().is_none() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Holds this process's owner lock on a connection of its own, and returns the claims of dead
/// processes every [`RESCUE_EVERY`], waking the workers when it did. When its connection goes
/// (the database restarted, or someone terminated it), it takes a new owner number on a new
/// one: the claims made under the old number are rescued like anyone else's. Runs until
/// `until` is cancelled, which releases the lock.
pub async fn run(pool: PgPool, owner: Owner, announcer: Arc<Announcer>, until: CancellationToken) {
    let mut held: Option<(PgConnection, i32)> = None;
    let mut ticks = tokio::time::interval(RESCUE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = until.cancelled() => break,
        }
        // Bounded: over a cut link a query waits for TCP to give up, which takes minutes.
        if let Some((conn, _)) = held.as_mut()
            && !tokio::time::timeout(LOOK, sqlx::query("SELECT 1").execute(&mut *conn))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            tracing::warn!("lost the connection holding this process's liveness lock");
            held = None;
            owner.set(None);
        }
        if held.is_none() {
            match hold(&pool).await {
                Ok((conn, id)) => {
                    tracing::info!(owner = id, "holding the liveness lock");
                    owner.set(Some(id));
                    held = Some((conn, id));
                    reported = false;
                }
                Err(e) => {
                    if !reported {
                        tracing::warn!(error = %e, "cannot take the liveness lock; retrying");
                        reported = true;
                    }
                    continue;
                }
            }
        }
        let Some((_, me)) = &held else { continue };
        let rescued =
            tokio::time::timeout(LOOK * 2, common::db::liveness::rescue_orphans(&pool, *me))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        match rescued {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => {
                tracing::info!(events = ids.len(), "returned the claims of dead processes");
                announcer.new_events(ids.len() as u64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for dead processes' claims"),
        }
    }
    owner.set(None);
    if let Some((conn, _)) = held {
        let _ = conn.close().await;
    }
}

/// A connection of its own with the owner lock taken. The server probes it with keepalives,
/// so a host that vanished without closing it loses its lock within seconds, not hours.
async fn hold(pool: &PgPool) -> sqlx::Result<(PgConnection, i32)> {
    let options = (*pool.connect_options()).clone().options([
        ("tcp_keepalives_idle", "2"),
        ("tcp_keepalives_interval", "1"),
        ("tcp_keepalives_count", "2"),
        ("tcp_user_timeout", "5000"),
    ]);
    let mut conn =
        tokio::time::timeout(Duration::from_secs(3), PgConnection::connect_with(&options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let id = common::db::liveness::take_owner(&mut conn).await?;
    Ok((conn, id))
}
