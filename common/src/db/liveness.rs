//! Which hookd processes are alive, as PostgreSQL sees them (migration 0007).
//!
//! A process holds the advisory lock `(hookd_owner_space(), owner)` on a connection of its own
//! for as long as it lives, and claims events in the name of `owner`. When the process dies,
//! its connection goes and the lock with it; [`rescue_orphans`], run by every process, finds
//! the owners of claims in flight whose lock is free and makes their events due again.

use rand::Rng;
use sqlx::{PgConnection, PgPool};

/// Takes an owner number nobody alive holds, and holds it for as long as `conn` lives.
pub async fn take_owner(conn: &mut PgConnection) -> sqlx::Result<i32> {
    loop {
        let candidate = rand_owner();
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hookd_owner_space(), $1)")
            .bind(candidate)
            .fetch_one(&mut *conn)
            .await?;
        if held {
            return Ok(candidate);
        }
    }
}

/// A random positive owner number: owners only need to differ among the processes alive at
/// once, and a clash is caught by the lock itself.
fn rand_owner() -> i32 {
    rand::thread_rng().gen_range(1..=i32::MAX)
}

/// Makes the claims of every dead owner due at once, except `me`'s; returns their event ids.
/// An owner is dead when its lock can be taken; the lock is taken only for this transaction.
pub async fn rescue_orphans(pool: &PgPool, me: i32) -> sqlx::Result<Vec<i64>> {
    super::retry_moved(|| {
        sqlx::query_scalar(
            "WITH owners AS MATERIALIZED (
                 SELECT DISTINCT claimed_by AS owner FROM events
                 WHERE state = 'processing' AND claimed_by <> $1
             ),
             dead AS MATERIALIZED (
                 SELECT owner FROM owners
                 WHERE pg_try_advisory_xact_lock(hookd_owner_space(), owner)
             )
             UPDATE events e
             -- Due since they arrived: they go before the events that came after them.
             SET next_attempt_at = LEAST(e.received_at, now()), locked_until = now(),
                 claimed_by = NULL
             FROM dead
             WHERE e.state = 'processing' AND e.claimed_by = dead.owner
             RETURNING e.id",
        )
        .bind(me)
        .fetch_all(pool)
    })
    .await
}
