//! Purges that leave a receipt, through the built `hookd` and over a real PostgreSQL: the
//! archive holds exactly what was deleted with its attempts, its SHA-256 is in the audit row,
//! restore brings it back, a purge that cannot archive deletes nothing, and a purge preview
//! binds the purge to the set it counted.

use std::path::{Path, PathBuf};

use common::MIGRATOR;
use common::db::archive::{self, Actor, ArchiveTarget};
use common::db::dlq::{self, PurgeFilter};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::harness::*;

/// `hookd` with only the database and `env` set.
/// The hookd command line with `env`; its purges archive into a scratch directory unless
/// `env` says where, never into the host's /var/lib/hookd.
pub fn cli(pool: &PgPool, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(hookd_bin())
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url(pool))
        .env(
            "HOOKD_ARCHIVE_DIR",
            std::env::temp_dir().join("hookd-test-archives"),
        )
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A fresh directory of this test's own.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hookd-archive-{name}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Ten dead events: ids 1..=10 died `id` days ago, each after two attempts, in the day
/// partitions a hookd that saw them die would have made.
async fn ten_dead(pool: &PgPool) {
    sqlx::query(
        "SELECT hookd_create_dead_day((now() AT TIME ZONE 'UTC')::date - d)
         FROM generate_series(0, 12) AS d",
    )
    .execute(pool)
    .await
    .unwrap();
    backlog(pool, 10).await;
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 2,
                dead_at = now() - make_interval(days => id::int),
                last_error = 'downstream answered 500 for ' || event_id",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error,
                                     http_status, dead_at)
         SELECT id, a, dead_at - make_interval(mins => 2 - a), 7,
                CASE a WHEN 2 THEN 'dead' ELSE 'failed' END, last_error, 500, dead_at
         FROM events, generate_series(1, 2) AS a",
    )
    .execute(pool)
    .await
    .unwrap();
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The archive's lines, decompressed by gzip itself rather than by hookd's reader.
fn gunzip_lines(path: &Path) -> Vec<Value> {
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "gzip -dc {}", path.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn audit_rows(pool: &PgPool, action: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT details FROM audit_logs WHERE action = $1 ORDER BY created_at")
        .bind(action)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_purge_archives_what_it_deletes_and_restore_brings_it_back(pool: PgPool) {
    ten_dead(&pool).await;
    let dir = scratch("receipt");
    let env = [("HOOKD_ARCHIVE_DIR", dir.to_str().unwrap())];

    let (ok, out, err) = cli(
        &pool,
        &env,
        &["dlq", "purge", "--older-than", "7d", "--json"],
    );
    assert!(ok, "{err}");
    let receipt: Value = serde_json::from_str(&out).unwrap();
    // 8, 9 and 10 lie in days wholly past the cut (dropped), 7 in the day the cut falls in.
    assert_eq!(receipt["purged"], 4, "{receipt}");
    assert_eq!(dead_ids(&pool).await, [1, 2, 3, 4, 5, 6]);
    let path = PathBuf::from(receipt["archive"].as_str().unwrap());
    assert!(path.starts_with(&dir), "{}", path.display());

    // The receipt: who, the filter, the count, the archive and its SHA-256 as the file has it.
    let audits = audit_rows(&pool, "dlq.purge").await;
    assert_eq!(audits.len(), 1);
    let audit = &audits[0];
    let sha = sha256_of(&path);
    assert_eq!(audit["sha256"], sha.as_str());
    assert_eq!(receipt["sha256"], sha.as_str());
    assert_eq!(audit["archive"], path.to_str().unwrap());
    assert_eq!(audit["count"], 4);
    assert_eq!(audit["filter"]["older_than_secs"], 7 * 86_400);
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8(me.stdout).unwrap();
    assert_eq!(audit["who"], me.trim());
    assert_eq!(audit["via"], "cli");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_logs WHERE action = 'dlq.purge' AND source = 'hookd'
               AND created_at > now() - interval '1 minute'"
        )
        .await,
        1
    );

    // The archive is NDJSON of the events with their attempts.
    let lines = gunzip_lines(&path);
    let mut ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [7, 8, 9, 10]);
    for line in &lines {
        let history = line["history"].as_array().unwrap();
        assert_eq!(history.len(), 2, "{line}");
        assert_eq!(history[1]["outcome"], "dead");
        assert_eq!(history[1]["http_status"], 500);
        assert_eq!(line["payload"]["type"], "load.test");
        assert!(
            line["last_error"]
                .as_str()
                .unwrap()
                .ends_with(line["event_id"].as_str().unwrap())
        );
    }

    // Restore: back as dead events, under their ids, with their attempts and bodies.
    let (ok, out, err) = cli(
        &pool,
        &[],
        &["dlq", "restore", path.to_str().unwrap(), "--json"],
    );
    assert!(ok, "{err}");
    let restored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restored["restored"], 4, "{restored}");
    assert_eq!(restored["skipped"], serde_json::json!([]));
    assert_eq!(dead_ids(&pool).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM event_attempts WHERE event_id BETWEEN 7 AND 10
               AND dead_at IS NOT NULL"
        )
        .await,
        8
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE id = 9 AND convert_from(body, 'UTF8')::jsonb = payload
               AND dead_at::date = (now() - interval '9 days')::date"
        )
        .await,
        1
    );
    // The restored events are dead like any other: listed, and retried.
    let listed = dlq::list(
        &pool,
        &dlq::DeadFilter {
            limit: 50,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 10);
    dlq::retry(&pool, 8).await.unwrap();
    assert_eq!(state_of(&pool, 8).await.0, "pending");

    // Restoring again changes nothing and names what it skipped.
    let (ok, out, err) = cli(&pool, &[], &["dlq", "restore", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("restored 0 dead events from ") && out.contains("skipped 4 already stored"),
        "{out}"
    );
    assert_eq!(audit_rows(&pool, "dlq.restore").await.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_purge_whose_archive_cannot_be_written_deletes_nothing_and_says_why(pool: PgPool) {
    ten_dead(&pool).await;
    let dir = scratch("unwritable");
    // Where the archive directory should be there is a file.
    let blocked = dir.join("archive");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let env = [("HOOKD_ARCHIVE_DIR", blocked.to_str().unwrap())];
    let (ok, out, err) = cli(&pool, &env, &["dlq", "purge", "--older-than", "7d"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!(
            "cannot write the purge archive {}",
            blocked.display()
        )) && err.contains("nothing was deleted"),
        "{err}"
    );
    assert!(
        err.contains("File exists") || err.contains("Not a directory"),
        "the OS error: {err}"
    );
    assert_eq!(dead_ids(&pool).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM event_attempts").await,
        20
    );
    assert!(audit_rows(&pool, "dlq.purge").await.is_empty());

    // A file in the archive's place inside a directory hookd may not create.
    let under_file = blocked.join("deeper");
    let err = archive::purge(
        &pool,
        &dlq::PurgeToken::unbounded(PurgeFilter::older_than(chrono::Duration::days(7))),
        &ArchiveTarget::Dir(under_file.clone()),
        &Actor::new("test", "test"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, archive::ArchiveError::Write { purged: 0, .. }),
        "{err}"
    );
    assert_eq!(dead_ids(&pool).await.len(), 10);

    // Turned off explicitly, the purge goes ahead without an archive, and says so.
    let (ok, out, err) = cli(
        &pool,
        &[("HOOKD_ARCHIVE_DIR", "off")],
        &["dlq", "purge", "--older-than", "7d"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("no archive (HOOKD_ARCHIVE_DIR=off)"), "{out}");
    assert_eq!(dead_ids(&pool).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        audit_rows(&pool, "dlq.purge").await[0]["archive"],
        Value::Null
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_purge_by_token_deletes_exactly_what_its_preview_counted(pool: PgPool) {
    ten_dead(&pool).await;
    backlog_more(&pool).await;
    let dir = scratch("token");
    let env = [("HOOKD_ARCHIVE_DIR", dir.to_str().unwrap())];
    let (ok, out, err) = cli(
        &pool,
        &env,
        &["dlq", "purge", "--older-than", "7d", "--dry-run", "--json"],
    );
    assert!(ok, "{err}");
    let preview: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(preview["count"], 4, "{preview}");
    assert_eq!(preview["superseded"], 0);
    assert_eq!(preview["by_type"][0]["event_type"], "load.test");
    assert_eq!(dead_ids(&pool).await.len(), 10, "a dry run deletes nothing");
    let token = preview["token"].as_str().unwrap();

    // After the preview: event 11 dies with a date in a day the preview counted whole (as a
    // restore or a late death's clock can), and event 8 is retried.
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 1, dead_at = now() - interval '9 days',
                last_error = 'late'
         WHERE id = 11",
    )
    .execute(&pool)
    .await
    .unwrap();
    dlq::retry(&pool, 8).await.unwrap();

    let (ok, out, err) = cli(&pool, &env, &["dlq", "purge", "--token", token]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("purged 3 dead events older than 7days; 1 had changed"),
        "{out}"
    );
    assert_eq!(dead_ids(&pool).await, [1, 2, 3, 4, 5, 6, 11]);
    assert_eq!(state_of(&pool, 8).await.0, "pending");
    let audit = &audit_rows(&pool, "dlq.purge").await[0];
    assert_eq!((&audit["count"], &audit["skipped"]), (&3.into(), &1.into()));
    let archived = gunzip_lines(Path::new(audit["archive"].as_str().unwrap()));
    let mut ids: Vec<i64> = archived.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [7, 9, 10],
        "the archive holds exactly what was deleted"
    );

    let (ok, _, err) = cli(&pool, &env, &["dlq", "purge", "--token", "nonsense"]);
    assert!(!ok && err.contains("not a purge token"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Event 11, still pending.
async fn backlog_more(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO events (source, event_id, event_type, body, payload)
         VALUES ('custom', 'msg_late', 'load.test', convert_to('{}', 'UTF8'), '{}')",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn purges_at_once_each_keep_an_archive_of_their_own(pool: PgPool) {
    let dir = scratch("at-once");
    let target = ArchiveTarget::Dir(dir.clone());
    let actor = Actor::new("test", "at once");
    let token = dlq::PurgeToken::unbounded(PurgeFilter::older_than(chrono::Duration::days(7)));
    // Within the same milliseconds, from one process.
    let receipts =
        futures::future::join_all((0..20).map(|_| archive::purge(&pool, &token, &target, &actor)))
            .await;
    let mut paths: Vec<PathBuf> = receipts
        .into_iter()
        .map(|r| r.unwrap().archive.expect("an archive"))
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 20);
    assert!(paths.iter().all(|p| p.exists()));
    std::fs::remove_dir_all(&dir).unwrap();
}
