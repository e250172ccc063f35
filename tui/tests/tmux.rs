//! hooktop in a real terminal: tmux runs the binary against a test database while hookd runs
//! in-process, and the test types keys and reads the screen like an on-call engineer would.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::db::stats;
use hookd::Config;
use hookd::config::Sources;
use hookd::verify::{standard, stripe};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const STRIPE_SECRET: &str = "whsec_hooktopTmux3Fq8Lw2Vb9Xc4Rt6Yp1Km7Zd5";
const CUSTOM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long the screen may take to show what the database holds.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);

fn config() -> Config {
    let env: HashMap<String, String> = [
        ("DATABASE_URL", "postgres://unused-the-test-brings-its-pool"),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("CUSTOM_WEBHOOK_SECRET", CUSTOM_SECRET),
        // One attempt: a failure goes straight to the dead-letter queue.
        ("HOOKD_MAX_ATTEMPTS", "1"),
        ("HOOKD_POLL_INTERVAL_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Config::load(&Sources::new(env).expect("sources")).expect("test config")
}

struct Hookd {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Hookd {
    async fn start(pool: &PgPool) -> Hookd {
        let config = config();
        let own_pool = hookd::pool_like(pool, &config.pool_settings());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hookd::run_with_pool(
            config,
            own_pool,
            listener,
            shutdown.clone(),
        ));
        Hookd {
            base,
            client: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    async fn send(&self, path: &str, headers: Vec<(&'static str, String)>, body: String) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("hookd answers");
        assert_eq!(
            response.status().as_u16(),
            200,
            "{:?}",
            response.text().await
        );
    }

    async fn stripe(&self, id: &str, kind: &str, created: Option<i64>, customer: &str) {
        let mut event = serde_json::json!({
            "id": id, "object": "event", "type": kind,
            "data": {"object": {"id": format!("in_{id}"), "customer": customer, "status": "active"}},
        });
        if let Some(created) = created {
            event["created"] = created.into();
        }
        let body = event.to_string();
        let t = chrono::Utc::now().timestamp();
        let signature = stripe::sign(STRIPE_SECRET.as_bytes(), t, body.as_bytes());
        self.send(
            "/api/stripe/webhook",
            vec![("Stripe-Signature", signature)],
            body,
        )
        .await;
    }

    async fn custom(&self, id: &str, kind: &str) {
        let body = serde_json::json!({"type": kind, "data": {"k": 1}}).to_string();
        let t = chrono::Utc::now().timestamp();
        let secret: standard::Secret = CUSTOM_SECRET.parse().unwrap();
        let headers = vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", t.to_string()),
            (
                "webhook-signature",
                standard::sign(&secret, id, t, body.as_bytes()),
            ),
        ];
        self.send("/api/custom/webhook", headers, body).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("hookd task")
            .expect("hookd exits cleanly");
    }
}

/// A tmux server of our own (its own socket), killed and its socket removed on drop, whatever
/// happens.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn start(width: u16, height: u16, env: &[(&str, &str)], command: &str) -> Tmux {
        let socket = std::env::temp_dir().join(format!(
            "hooktop-e2e-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let tmux = Tmux { socket };
        let mut args: Vec<String> = vec!["-u".into(), "-f".into(), "/dev/null".into()];
        args.push("-S".into());
        args.push(tmux.socket.to_string_lossy().into_owned());
        args.extend(
            [
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ]
            .into_iter()
            .map(str::to_owned),
        );
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(command.to_owned());
        let status = std::process::Command::new("tmux")
            .args(&args)
            .status()
            .expect("tmux runs (Debian package tmux)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    async fn tmux(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .await
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "main"]).await
    }

    async fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.tmux(&args).await;
    }

    async fn text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "main", "-l", text]).await;
    }

    /// Polls the pane until `ok` holds; on timeout, fails showing the last screen.
    async fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen().await;
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_text(&self, text: &str) -> String {
        self.wait_for(&format!("{text:?}"), |s| s.contains(text))
            .await
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The URL of the test's own database, with the credentials of `DATABASE_URL`.
fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    let (without_query, query) = base.split_once('?').unwrap_or((&base, ""));
    let (server, _) = without_query
        .rsplit_once('/')
        .expect("DATABASE_URL has a database");
    let name = pool
        .connect_options()
        .get_database()
        .expect("the test database has a name")
        .to_owned();
    if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    }
}

async fn state_of(pool: &PgPool, event_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn wait_until_idle(pool: &PgPool) {
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    while stats::queue(pool).await.unwrap().depth() > 0 {
        assert!(Instant::now() < deadline, "hookd did not finish processing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The numbers on the screen line of one event type: recv, ok, skip, retry, dead.
fn row_numbers(screen: &str, source: &str, event_type: &str) -> Option<Vec<i64>> {
    let line = screen.lines().find(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.windows(2).any(|w| w == [source, event_type])
    })?;
    Some(
        line.split_whitespace()
            .filter_map(|w| w.trim_matches('│').parse().ok())
            .collect(),
    )
}

fn screen_matches(screen: &str, rows: &[stats::TypeCounts], queue: &stats::Queue) -> bool {
    rows.iter().all(|t| {
        row_numbers(screen, &t.source, &t.event_type)
            == Some(vec![
                t.received,
                t.succeeded,
                t.skipped,
                t.retrying_now,
                t.dead_now,
            ])
    }) && screen.contains(&format!("dead {}", queue.dead))
        && screen.contains(&format!("queue {}", queue.depth()))
}

#[sqlx::test(migrator = "common::MIGRATOR")]
async fn hooktop_in_tmux_shows_the_database_retries_and_purges(pool: PgPool) {
    let hookd = Hookd::start(&pool).await;
    let created = Some(chrono::Utc::now().timestamp());
    for i in 0..3 {
        hookd.custom(&format!("msg_{i}"), "order.created").await;
    }
    // No business has this customer yet: dead after its one attempt, fixable by linking one.
    hookd
        .stripe("evt_late", "invoice.payment_succeeded", created, "cus_late")
        .await;
    // No `created`: dead for good.
    hookd
        .stripe("evt_broken", "customer.subscription.updated", None, "cus_x")
        .await;
    // Dead too; made 8 days old below, for the purge.
    hookd
        .stripe("evt_old", "invoice.payment_failed", created, "cus_gone")
        .await;
    hookd
        .stripe("evt_other", "charge.refunded", created, "cus_x")
        .await;
    wait_until_idle(&pool).await;
    assert_eq!(state_of(&pool, "evt_late").await.as_deref(), Some("dead"));
    assert_eq!(
        state_of(&pool, "evt_other").await.as_deref(),
        Some("skipped")
    );
    sqlx::query("UPDATE events SET dead_at = now() - interval '8 days' WHERE event_id = 'evt_old'")
        .execute(&pool)
        .await
        .unwrap();

    let url = database_url(&pool);
    let command = format!(
        "{} --no-notify; echo \"hooktop exited with $?\"; sleep 600",
        env!("CARGO_BIN_EXE_hooktop")
    );
    let archive = tempfile::tempdir().unwrap();
    let archive_dir = archive.path().to_str().unwrap().to_owned();
    let tmux = Tmux::start(
        120,
        40,
        &[
            ("DATABASE_URL", &url),
            ("NO_COLOR", "1"),
            ("HOOKD_ARCHIVE_DIR", &archive_dir),
        ],
        &command,
    );

    // The counts on screen are the database's.
    let rows = stats::by_type(&pool, chrono::TimeDelta::hours(24))
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    let queue = stats::queue(&pool).await.unwrap();
    assert_eq!(queue.dead, 3);
    tmux.wait_for("the database's counts", |s| {
        screen_matches(s, &rows, &queue)
    })
    .await;
    tmux.wait_for_text("Dead letters · 3 of 3").await;

    // `r` on the event that can now succeed: hookd takes it at once and it leaves the DLQ.
    sqlx::query("INSERT INTO businesses (name, stripe_customer_id) VALUES ('Late Co', 'cus_late')")
        .execute(&pool)
        .await
        .unwrap();
    tmux.keys(&["/"]).await;
    tmux.text("evt_late").await;
    tmux.wait_for_text("filter: evt_late").await;
    tmux.keys(&["Enter"]).await;
    // An event's own id opens it, dead or not; closed, the filtered list is behind it.
    tmux.wait_for_text("event id   evt_late").await;
    tmux.keys(&["Escape"]).await;
    tmux.wait_for_text("1 matching \"evt_late\" of 3").await;
    tmux.keys(&["r"]).await;
    tmux.wait_for_text("retried event").await;
    let deadline = Instant::now() + SCREEN_TIMEOUT;
    while state_of(&pool, "evt_late").await.as_deref() != Some("succeeded") {
        assert!(Instant::now() < deadline, "hookd did not process the retry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tmux.wait_for_text("0 matching \"evt_late\" of 2").await;
    tmux.keys(&["Escape"]).await;
    let screen = tmux.wait_for_text("Dead letters · 2 of 2").await;
    assert!(
        row_numbers(&screen, "stripe", "invoice.payment_succeeded")
            .is_some_and(|n| n[1] == 1 && n[4] == 0),
        "the retried type counts one success and no dead:\n{screen}"
    );

    // `p` states the count, archives and deletes only what died more than 7 days ago, and
    // says where the archive is.
    tmux.keys(&["p"]).await;
    tmux.wait_for_text("▸ the 1 dead events that died more than 7d ago")
        .await;
    tmux.wait_for_text(&format!(
        "archived with their attempt history into {archive_dir}"
    ))
    .await;
    tmux.keys(&["y"]).await;
    tmux.wait_for_text("purged 1 dead events that died more than 7d ago · archive")
        .await;
    let files: Vec<_> = std::fs::read_dir(archive.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one archive: {files:?}");
    let receipt: (String, serde_json::Value) =
        sqlx::query_as("SELECT action, details FROM audit_logs WHERE action = 'dlq.purge'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(receipt.1["count"], 1, "{receipt:?}");
    tmux.wait_for_text("Dead letters · 1 of 1").await;
    assert_eq!(state_of(&pool, "evt_old").await, None, "purged");
    assert_eq!(
        state_of(&pool, "evt_broken").await.as_deref(),
        Some("dead"),
        "a recent dead event stays"
    );

    // The help overlay lists the keys; Esc closes it; q quits with the terminal restored.
    tmux.keys(&["?"]).await;
    tmux.wait_for_text("retry the cluster's, filter's or all dead events")
        .await;
    tmux.keys(&["Escape"]).await;
    tmux.wait_for("the help to close", |s| !s.contains(" Keys "))
        .await;
    tmux.keys(&["q"]).await;
    let screen = tmux.wait_for_text("hooktop exited with 0").await;
    assert!(
        !screen.contains("Dead letters"),
        "the alternate screen was left:\n{screen}"
    );
    drop(tmux);
    hookd.stop().await;
}

async fn count_in_state(pool: &PgPool, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The on-call story of a canary: a cluster of deaths appears; a canary of it before the fix
/// fails again and stops there; after the fix a canary succeeds, the rest follow, and the
/// dead-letter queue empties.
#[sqlx::test(migrator = "common::MIGRATOR")]
async fn a_canary_in_tmux_fails_before_the_fix_and_clears_the_cluster_after_it(pool: PgPool) {
    let hookd = Hookd::start(&pool).await;
    let created = Some(chrono::Utc::now().timestamp());
    // Eight customers no business is linked to yet: one cluster, whatever the customer's id.
    for i in 1..=8 {
        hookd
            .stripe(
                &format!("evt_c{i}"),
                "invoice.payment_succeeded",
                created,
                &format!("cus_c{i}"),
            )
            .await;
    }
    wait_until_idle(&pool).await;
    assert_eq!(count_in_state(&pool, "dead").await, 8);

    let url = database_url(&pool);
    let command = format!(
        "{} --no-notify; echo \"hooktop exited with $?\"; sleep 600",
        env!("CARGO_BIN_EXE_hooktop")
    );
    let tmux = Tmux::start(
        120,
        40,
        &[("DATABASE_URL", &url), ("NO_COLOR", "1")],
        &command,
    );
    tmux.wait_for_text("Dead letters · 8 of 8").await;
    // The clusters pane: one row of eight.
    tmux.wait_for("the cluster of eight", |s| {
        s.lines()
            .any(|l| l.contains("8 stripe invoice.payment_succeeded"))
    })
    .await;
    tmux.keys(&["BTab"]).await;

    // Before the fix: the canary fails again, and nothing else is retried.
    tmux.keys(&["c"]).await;
    tmux.wait_for_text("Canary: retry 5 of the 8 dead stripe")
        .await;
    tmux.keys(&["y"]).await;
    tmux.wait_for_text("5 of 5 failed again: the rest was not retried")
        .await;
    tmux.keys(&["Escape"]).await;
    assert_eq!(count_in_state(&pool, "dead").await, 8);

    // The fix, then a canary that succeeds, and the rest.
    for i in 1..=8 {
        sqlx::query("INSERT INTO businesses (name, stripe_customer_id) VALUES ($1, $2)")
            .bind(format!("Business {i}"))
            .bind(format!("cus_c{i}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    tmux.keys(&["c"]).await;
    tmux.wait_for_text("Canary: retry 5 of the 8 dead stripe")
        .await;
    tmux.keys(&["y"]).await;
    let screen = tmux.wait_for_text("All 5 succeeded.").await;
    assert!(screen.contains("retry the other 3"), "{screen}");
    assert_eq!(count_in_state(&pool, "succeeded").await, 5);
    assert_eq!(count_in_state(&pool, "dead").await, 3, "the rest waits");
    tmux.keys(&["y"]).await;
    tmux.wait_for_text("retried the other 3 after the canary's 5")
        .await;
    tmux.wait_for_text("Dead letters · 0 of 0").await;
    wait_until_idle(&pool).await;
    assert_eq!(count_in_state(&pool, "succeeded").await, 8);
    tmux.keys(&["q"]).await;
    tmux.wait_for_text("hooktop exited with 0").await;
    drop(tmux);
    hookd.stop().await;
}
