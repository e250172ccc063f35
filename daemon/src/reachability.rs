//! Whether the database can be reached, known ahead of the requests that need it.
//!
//! Without it, every webhook sent during an outage waits out the pool's acquire timeout
//! (holding its body meanwhile) before it hears 503. A monitor pings the database on a
//! connection of its own, so a busy pool never looks like an outage; requests in flight are
//! released with 503 the moment it sees the database go, and while it is gone each request
//! gets one short try, so the first one after the database returns is served normally.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the monitor looks, and how long one look may take.
const EVERY: Duration = Duration::from_millis(250);
const LOOK: Duration = Duration::from_millis(400);
/// The one try a request gets while the database is known to be down: ample for a database
/// that came back (connecting takes milliseconds), and short enough that a webhook queued
/// behind another batch's try still hears 503 well within a second.
const TRY_WHILE_DOWN: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Reachability {
    up: watch::Sender<bool>,
}

impl Default for Reachability {
    fn default() -> Self {
        Reachability {
            up: watch::Sender::new(true),
        }
    }
}

impl Reachability {
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    fn set(&self, up: bool) {
        self.up
            .send_if_modified(|was| std::mem::replace(was, up) != up);
    }

    /// Runs `op`, a database call, so that it answers fast while the database is gone.
    pub async fn guard<T>(&self, op: impl Future<Output = sqlx::Result<T>>) -> sqlx::Result<T> {
        let mut up = self.up.subscribe();
        let result = if *up.borrow_and_update() {
            tokio::select! {
                result = op => result,
                _ = up.wait_for(|up| !up) => Err(sqlx::Error::PoolTimedOut),
            }
        } else {
            tokio::time::timeout(TRY_WHILE_DOWN, op)
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        };
        match &result {
            Ok(_) => self.set(true),
            Err(e) if crate::unreachable(e) => self.set(false),
            Err(_) => {}
        }
        result
    }

    /// The monitor: until `shutdown`, looks every [`EVERY`] on a connection of its own.
    pub async fn run(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        let mut conn: Option<PgConnection> = None;
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = 0;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let answered = tokio::time::timeout(LOOK, look(&pool, &mut conn))
                .await
                .is_ok_and(|r| r.is_ok());
            if answered {
                failed = 0;
            } else {
                conn = None;
                failed += 1;
            }
            // Two looks in a row, so one slow answer on a loaded machine turns nobody away.
            let up = failed < 2;
            if up != self.is_up() {
                if up {
                    tracing::info!("the database is reachable again");
                } else {
                    tracing::warn!("the database is unreachable: answering 503 at once");
                }
            }
            self.set(up);
        }
    }
}

async fn look(pool: &PgPool, conn: &mut Option<PgConnection>) -> sqlx::Result<()> {
    if conn.is_none() {
        *conn = Some(PgConnection::connect_with(&pool.connect_options()).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    c.ping().await
}
