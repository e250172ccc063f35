//! Preview-bound bulk actions over a real PostgreSQL: an action touches exactly the dead
//! events its preview counted, whatever died, was retried or died again in between.

use common::MIGRATOR;
use common::db::clusters;
use common::db::dlq;
use common::db::selection::{self, Retried, Selection, Token, TypeCount};
use sqlx::PgPool;

use crate::harness::*;

/// Kills events `ids` with `error`, as a worker would: they move into the dead partitions.
async fn die(pool: &PgPool, ids: &[i64], event_type: &str, error: &str) {
    let fingerprint = clusters::fingerprint(pool, error).await.unwrap();
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 4, dead_at = now(), last_error = $2,
                event_type = $3, error_fingerprint = $4
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(error)
    .bind(event_type)
    .bind(fingerprint)
    .execute(pool)
    .await
    .unwrap();
}

async fn dead_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM events WHERE state = 'dead' ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Events 1..=6: 1–3 died of one missing customer each (one cluster), 4–5 of a timeout, and
/// 6 is still pending.
async fn six(pool: &PgPool) {
    backlog(pool, 6).await;
    for (id, customer) in [(1, "cus_A"), (2, "cus_B"), (3, "cus_C")] {
        let error = format!("no business is linked to Stripe customer {customer}");
        die(pool, &[id], "invoice.payment_succeeded", &error).await;
    }
    die(pool, &[4, 5], "call.hangup", "timeout after 10000 ms").await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_preview_counts_by_type_and_the_retry_does_exactly_that(pool: PgPool) {
    six(&pool).await;
    let preview = selection::preview(&pool, &Selection::All).await.unwrap();
    assert_eq!(preview.count(), 5);
    let row = |event_type: &str, count| TypeCount {
        source: "custom".into(),
        event_type: event_type.into(),
        count,
    };
    assert_eq!(
        preview.by_type,
        [row("invoice.payment_succeeded", 3), row("call.hangup", 2)]
    );

    // Event 6 dies after the preview: the retry leaves it dead.
    die(&pool, &[6], "call.hangup", "timeout after 10000 ms").await;
    let token = Token::decode(&preview.token.encode()).unwrap();
    let done = selection::retry(&pool, &token).await.unwrap();
    assert_eq!(
        done,
        Retried {
            previewed: 5,
            retried: 5,
            skipped: 0
        }
    );
    assert_eq!(dead_ids(&pool).await, [6]);
    assert_eq!(state_of(&pool, 1).await.0, "pending");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn what_changed_since_the_preview_is_skipped_and_reported(pool: PgPool) {
    six(&pool).await;
    let preview = selection::preview(&pool, &Selection::All).await.unwrap();
    // Someone retries event 2 meanwhile; event 4 is retried and dies again before the action.
    dlq::retry(&pool, 2).await.unwrap();
    dlq::retry(&pool, 4).await.unwrap();
    die(&pool, &[4], "call.hangup", "timeout after 10000 ms").await;

    let done = selection::retry(&pool, &preview.token).await.unwrap();
    assert_eq!((done.retried, done.skipped), (3, 2));
    assert_eq!(
        done.to_string(),
        "retried 3, 2 had changed since the preview (already retried or purged)"
    );
    assert_eq!(
        dead_ids(&pool).await,
        [4],
        "its second death was not previewed"
    );
    // The same token again finds nothing left to do: nothing is retried twice.
    let again = selection::retry(&pool, &preview.token).await.unwrap();
    assert_eq!((again.retried, again.skipped), (0, 5));
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_death_committed_after_the_preview_is_not_in_it_even_if_its_clock_was_earlier(
    pool: PgPool,
) {
    six(&pool).await;
    // A worker's transaction kills event 6 (dead_at = its now()) but commits only after the
    // preview has been taken: the preview could not count it, so the action must not touch it.
    let mut worker = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 4, dead_at = now(), last_error = 'timeout'
         WHERE id = 6",
    )
    .execute(&mut *worker)
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let preview = selection::preview(&pool, &Selection::All).await.unwrap();
    worker.commit().await.unwrap();
    assert_eq!(preview.count(), 5);

    let done = selection::retry(&pool, &preview.token).await.unwrap();
    assert_eq!(done.retried, 5);
    assert_eq!(dead_ids(&pool).await, [6]);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_filter_or_a_cluster_retries_only_what_it_matches(pool: PgPool) {
    six(&pool).await;
    // cus_A, cus_B and cus_C are one cause.
    let found = clusters::list(&pool, 10).await.unwrap();
    let missing = found
        .iter()
        .find(|c| c.event_type == "invoice.payment_succeeded")
        .unwrap();
    assert_eq!(missing.count, 3);
    let cluster = selection::preview(&pool, &Selection::cluster(&missing.key()))
        .await
        .unwrap();
    assert_eq!(cluster.count(), 3);

    let matching = Selection::matching(None, None, Some("timeout".into()));
    let timeouts = selection::preview(&pool, &matching).await.unwrap();
    assert_eq!(timeouts.count(), 2);
    assert_eq!(
        selection::retry(&pool, &timeouts.token)
            .await
            .unwrap()
            .retried,
        2
    );
    assert_eq!(dead_ids(&pool).await, [1, 2, 3]);
    assert_eq!(
        selection::retry(&pool, &cluster.token)
            .await
            .unwrap()
            .retried,
        3
    );
    assert!(dead_ids(&pool).await.is_empty());
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_canary_retries_a_few_of_the_newest_and_the_rest_follow(pool: PgPool) {
    six(&pool).await;
    let missing = Selection::matching(None, Some("invoice.payment_succeeded".into()), None);
    let preview = selection::preview(&pool, &missing).await.unwrap();
    let canaries = selection::canary(&pool, &preview.token, 2).await.unwrap();
    assert_eq!(canaries.len(), 2);
    let progress = selection::states(&pool, &canaries).await.unwrap();
    assert!(progress.iter().all(|p| p.state == "pending"));
    assert_eq!(
        selection::verdict(&canaries, &progress),
        selection::Verdict::Running
    );

    sqlx::query("UPDATE events SET state = 'succeeded', processed_at = now() WHERE id = ANY($1)")
        .bind(&canaries)
        .execute(&pool)
        .await
        .unwrap();
    let progress = selection::states(&pool, &canaries).await.unwrap();
    assert_eq!(
        selection::verdict(&canaries, &progress),
        selection::Verdict::Succeeded
    );
    // The rest of the same preview: the canaries are no longer dead as previewed.
    let rest = selection::retry(&pool, &preview.token).await.unwrap();
    assert_eq!((rest.retried, rest.skipped), (1, 2));
    assert_eq!(dead_ids(&pool).await, [4, 5]);
}
