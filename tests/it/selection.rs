//! Preview-bound bulk actions over a real PostgreSQL: an action touches exactly the dead
//! events its preview counted, whatever died, was retried or died again in between.

use common::MIGRATOR;
use common::db::clusters;
use common::db::dlq;
use common::db::selection::{self, Retried, Selection, Token, TypeCount};
use sqlx::PgPool;

use crate::harness::*;
use crate::processes::hookd_cli;

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

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_admin_api_previews_and_retries_exactly_the_preview(pool: PgPool) {
    const TOKEN: &str = "s3cret-admin-token-for-the-preview-tests";
    six(&pool).await;
    let hookd = Hookd::start(
        &pool,
        config(&[("HOOKD_ADMIN_TOKEN", TOKEN), ("HOOKD_WORKERS", "0")]),
    )
    .await;
    let post = |path: &'static str, body: serde_json::Value| {
        let request = hookd.client.post(hookd.url(path)).bearer_auth(TOKEN);
        async move {
            let response = request.json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, preview) = post(
        "/api/webhooks/dlq/preview",
        serde_json::json!({"selection": {"kind": "matching", "text": "TIMEOUT"}}),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["count"], 2);
    assert_eq!(
        preview["by_type"],
        serde_json::json!([{"source": "custom", "event_type": "call.hangup", "count": 2}])
    );

    die(&pool, &[6], "call.hangup", "timeout after 10000 ms").await;
    let (status, done) = post(
        "/api/webhooks/dlq",
        serde_json::json!({"token": preview["token"]}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        done,
        serde_json::json!({"retried": 2, "previewed": 2, "skipped": 0})
    );
    assert_eq!(dead_ids(&pool).await, [1, 2, 3, 6]);

    let (status, refused) =
        post("/api/webhooks/dlq", serde_json::json!({"token": "made-up"})).await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not a preview token"),
        "{refused}"
    );
    let (status, _) = post(
        "/api/webhooks/dlq/preview",
        serde_json::json!({"selection": {"kind": "everything"}}),
    )
    .await;
    assert_eq!(status, 400);
}

/// Runs `hookd ARGS` while `worker` processes what it retries, as a running hookd would.
async fn cli_while_working(
    pool: &PgPool,
    worker: &hookd::worker::Worker,
    args: &[&str],
) -> (bool, String, String) {
    let child = tokio::process::Command::new(hookd_bin())
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url(pool))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = child.wait_with_output();
    tokio::pin!(output);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let output = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hookd {args:?} hangs"
        );
        tokio::select! {
            biased;
            output = &mut output => break output.unwrap(),
            // Awaited in the branch, never cancelled halfway through a batch.
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {
                worker.process_batch().await.expect("batch");
            }
        }
    };
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The on-call story from the command line: a cluster of Stripe events for customers hookd
/// does not know, a canary that fails, the businesses added, a canary that succeeds, the rest.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_canary_from_the_command_line_gates_the_rest(pool: PgPool) {
    let customers = ["cus_new1", "cus_new2", "cus_new3", "cus_new4"];
    for (k, customer) in customers.iter().enumerate() {
        let id = format!("evt_canary_{k}");
        let body = stripe_event(
            &id,
            "customer.subscription.created",
            now(),
            serde_json::json!({"id": format!("sub_c{k}"), "customer": customer, "status": "active"}),
        );
        store(
            &pool,
            common::Source::Stripe,
            &id,
            "customer.subscription.created",
            &body,
        )
        .await;
    }
    let worker = worker(
        &pool,
        &[("HOOKD_MAX_ATTEMPTS", "2"), ("HOOKD_RETRY_BASE_MS", "20")],
    );
    drain(&worker, &pool, std::time::Duration::from_secs(5)).await;
    assert_eq!(dead_ids(&pool).await.len(), 4);

    // One cluster; it is named by its sample.
    let (ok, out, err) = hookd_cli(&pool, &["dlq", "clusters", "--json"]);
    assert!(ok, "{err}");
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let sample = found[0]["sample_id"].to_string();
    let dry = ["dlq", "retry-all", "--cluster", &sample, "--dry-run"];
    let (ok, out, err) = hookd_cli(&pool, &dry);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(
            "4 are: dead stripe customer.subscription.created events that died of \
             \"no business is linked to Stripe customer <id>\"\n       4  stripe  \
             customer.subscription.created\nnothing was changed"
        ),
        "{out}"
    );
    let token = out.rsplit("--token ").next().unwrap().trim().to_owned();
    assert_eq!(dead_ids(&pool).await.len(), 4, "a dry run changes nothing");

    // Nothing fixed yet: the canary fails again, and the rest stay dead.
    let canary = ["dlq", "retry-all", "--token", &token, "--canary", "1"];
    let (ok, _, err) = cli_while_working(&pool, &worker, &canary).await;
    assert!(!ok);
    assert!(
        err.contains("canary failed again; the rest was not retried"),
        "{err}"
    );
    assert!(
        err.contains("no business is linked to Stripe customer cus_new"),
        "{err}"
    );
    drain(&worker, &pool, std::time::Duration::from_secs(5)).await;
    assert_eq!(dead_ids(&pool).await.len(), 4);

    for customer in customers {
        insert_business(&pool, customer, Some(customer), None).await;
    }
    let (ok, out, err) = hookd_cli(&pool, &dry);
    assert!(ok, "{err}");
    let token = out.rsplit("--token ").next().unwrap().trim().to_owned();
    let canary = ["dlq", "retry-all", "--token", &token, "--canary", "2"];
    let (ok, out, err) = cli_while_working(&pool, &worker, &canary).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("canary succeeded: all 2 were processed; to retry the other 2"),
        "{out}"
    );
    assert!(err.contains("succeeded, "), "the progress is shown: {err}");
    assert!(
        out.trim_end().ends_with(&format!("--token {token}")),
        "{out}"
    );

    let rest = ["dlq", "retry-all", "--token", &token, "--json"];
    let (ok, out, err) = hookd_cli(&pool, &rest);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"previewed": 4, "retried": 2, "skipped": 2})
    );
    drain(&worker, &pool, std::time::Duration::from_secs(5)).await;
    assert!(dead_ids(&pool).await.is_empty());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE state = 'succeeded'"
        )
        .await,
        4
    );
}
