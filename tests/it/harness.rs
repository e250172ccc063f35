//! A real hookd on loopback against the test's private database, and senders that sign like
//! the providers do.

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hookd::Config;
use hookd::config::Sources;
use hookd::verify::{standard, stripe, telnyx};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const STRIPE_SECRET: &str = "whsec_hookdIt4Ns7qLw2Vb9Xc3Rt6Yp8Km1Zd5Gh0";
pub const CUSTOM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const TELNYX_SEED: [u8; 32] = [7; 32];

pub fn telnyx_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&TELNYX_SEED)
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A configuration with all three routes enabled and fast retries.
pub fn config(extra: &[(&str, &str)]) -> Config {
    let public = telnyx::PublicKey::from_signing_key(&telnyx_key()).to_base64();
    let mut env: HashMap<String, String> = [
        ("DATABASE_URL", "postgres://unused-the-test-brings-its-pool"),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("TELNYX_PUBLIC_KEY", public.as_str()),
        ("CUSTOM_WEBHOOK_SECRET", CUSTOM_SECRET),
        ("HOOKD_RETRY_BASE_MS", "50"),
        ("HOOKD_POLL_INTERVAL_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::load(&Sources::new(env).expect("sources")).expect("test config")
}

/// A pool of its own on the test's database, as hookd would open it.
pub fn pool_like(pool: &PgPool, max: u32) -> PgPool {
    hookd::pool_like(
        pool,
        &hookd::PoolSettings::tool(hookd::Schema::default(), max),
    )
}

pub struct Hookd {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Hookd {
    /// Starts hookd in-process on 127.0.0.1:0 with its own pool on the test database.
    pub async fn start(pool: &PgPool, config: Config) -> Hookd {
        let own_pool = hookd::pool_like(pool, &config.pool_settings());
        Self::start_with_pool(own_pool, config).await
    }

    pub async fn start_with_pool(pool: PgPool, config: Config) -> Hookd {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hookd::run_with_pool(
            config,
            pool,
            listener,
            shutdown.clone(),
        ));
        Hookd {
            addr,
            client: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    /// Ingest only: no workers, so tests see events exactly as stored.
    pub async fn ingest_only(pool: &PgPool) -> Hookd {
        let mut config = config(&[]);
        config.workers = 0;
        Self::start(pool, config).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("hookd task")
            .expect("hookd exits cleanly");
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request reaches hookd");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    pub async fn stripe(&self, body: &str) -> (u16, serde_json::Value) {
        self.post(STRIPE_PATH, &stripe_headers(body, now()), body.to_owned())
            .await
    }

    pub async fn telnyx(&self, body: &str) -> (u16, serde_json::Value) {
        self.post(TELNYX_PATH, &telnyx_headers(body, now()), body.to_owned())
            .await
    }

    pub async fn custom(&self, id: &str, body: &str) -> (u16, serde_json::Value) {
        self.post(
            CUSTOM_PATH,
            &custom_headers(id, body, now()),
            body.to_owned(),
        )
        .await
    }
}

pub const STRIPE_PATH: &str = "/api/stripe/webhook";
pub const TELNYX_PATH: &str = "/api/telnyx/webhook";
pub const CUSTOM_PATH: &str = "/api/custom/webhook";

pub fn stripe_headers(body: &str, t: i64) -> Vec<(&'static str, String)> {
    vec![(
        "Stripe-Signature",
        stripe::sign(STRIPE_SECRET.as_bytes(), t, body.as_bytes()),
    )]
}

pub fn telnyx_headers(body: &str, t: i64) -> Vec<(&'static str, String)> {
    vec![
        (
            "telnyx-signature-ed25519",
            telnyx::sign(&telnyx_key(), t, body.as_bytes()),
        ),
        ("telnyx-timestamp", t.to_string()),
    ]
}

pub fn custom_headers(id: &str, body: &str, t: i64) -> Vec<(&'static str, String)> {
    let secret: standard::Secret = CUSTOM_SECRET.parse().unwrap();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", t.to_string()),
        (
            "webhook-signature",
            standard::sign(&secret, id, t, body.as_bytes()),
        ),
    ]
}

pub fn stripe_event(id: &str, kind: &str, created: i64, object: serde_json::Value) -> String {
    serde_json::json!({
        "id": id, "object": "event", "type": kind, "created": created,
        "data": {"object": object}, "livemode": false,
    })
    .to_string()
}

pub fn telnyx_event(id: &str, kind: &str, payload: serde_json::Value) -> String {
    serde_json::json!({
        "data": {"record_type": "event", "event_type": kind, "id": id,
                 "occurred_at": "2026-11-29T03:00:00.000Z", "payload": payload},
        "meta": {"attempt": 1},
    })
    .to_string()
}

/// A signed POST of a custom event to the hookd at `base` (`http://host:port`).
pub fn signed_custom(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    body: &str,
) -> reqwest::RequestBuilder {
    let mut request = client
        .post(format!("{base}{CUSTOM_PATH}"))
        .body(body.to_owned());
    for (name, value) in custom_headers(id, body, now()) {
        request = request.header(name, value);
    }
    request
}

pub fn custom_event(kind: &str) -> String {
    serde_json::json!({"type": kind, "timestamp": "2026-11-29T03:00:00Z", "data": {"k": 1}})
        .to_string()
}

pub fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Leases up to `limit` due events for `lease`, as a worker of no owner would.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> Vec<common::db::events::ClaimedEvent> {
    let mut conn = pool.acquire().await.unwrap();
    common::db::events::claim_due(&mut conn, limit, lease, None)
        .await
        .unwrap()
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A worker like hookd's, to drive processing step by step with `process_batch`.
pub fn worker(pool: &PgPool, extra: &[(&str, &str)]) -> hookd::worker::Worker {
    let tables = hookd::AppTables::full();
    hookd::worker(
        pool.clone(),
        &config(extra),
        &tables,
        std::sync::Arc::default(),
    )
    .expect("worker")
}

/// Processes until nothing is due within `horizon`, sleeping briefly while retries wait.
pub async fn drain(worker: &hookd::worker::Worker, pool: &PgPool, horizon: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue did not drain in 60 s"
        );
        if worker.process_batch().await.expect("batch") > 0 {
            continue;
        }
        let next: Option<chrono::DateTime<chrono::Utc>> =
            common::db::events::next_due_at(pool).await.unwrap();
        match next {
            Some(due) if due < chrono::Utc::now() + horizon => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            _ => return,
        }
    }
}

/// Stores a verified event as ingest would, bypassing HTTP.
pub async fn store(pool: &PgPool, source: common::Source, id: &str, kind: &str, body: &str) -> i64 {
    let event = common::db::events::NewEvent {
        source,
        event_id: common::ProviderEventId::parse(id).unwrap(),
        event_type: common::EventType::parse(kind).unwrap(),
        body: body.as_bytes().to_vec(),
        jsonb_checked: false,
    };
    match common::db::events::insert(pool, &event).await.unwrap() {
        common::db::events::Inserted::New(id) => id,
        common::db::events::Inserted::Duplicate => panic!("{id} already stored"),
    }
}

/// The runbook's columns of a business row.
#[derive(Debug, PartialEq, sqlx::FromRow)]
pub struct Business {
    pub stripe_subscription_id: Option<String>,
    pub subscription_status: Option<String>,
    pub subscription_plan: Option<String>,
    pub subscription_start_date: Option<chrono::DateTime<chrono::Utc>>,
    pub last_payment_date: Option<chrono::DateTime<chrono::Utc>>,
}

/// The business `filter` (an SQL condition) matches.
pub async fn business_where(pool: &PgPool, filter: &str) -> Business {
    sqlx::query_as(&format!(
        "SELECT stripe_subscription_id, subscription_status, subscription_plan,
                subscription_start_date, last_payment_date
         FROM businesses WHERE {filter}"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn insert_business(
    pool: &PgPool,
    name: &str,
    customer: Option<&str>,
    phone: Option<&str>,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO businesses (name, stripe_customer_id, phone_number) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(customer)
    .bind(phone)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn state_of(pool: &PgPool, id: i64) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT state, attempts, last_error FROM events WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The real `hookd` executable, built on first use so the suite needs no separate step.
pub fn hookd_bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // This test binary lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "-p", "hookd", "--bin", "hookd"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p hookd failed");
        profile_dir.join("hookd")
    })
}

/// A URL for the test's private database, for child processes.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut url = reqwest::Url::parse(&base).expect("DATABASE_URL is a URL");
    let db = pool
        .connect_options()
        .get_database()
        .expect("test database")
        .to_owned();
    url.set_path(&db);
    url.to_string()
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hookd process; killed when dropped so a failing test leaves nothing behind.
pub struct Process {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl Process {
    pub fn spawn(pool: &PgPool, extra: &[(&str, &str)]) -> Process {
        Self::spawn_with(pool, extra, std::process::Command::new(hookd_bin()))
    }

    /// Like [`Process::spawn`], with `command` as the program that ends up running
    /// `hookd serve` (a wrapper that execs it, say); the environment is set here.
    pub fn spawn_with(
        pool: &PgPool,
        extra: &[(&str, &str)],
        command: std::process::Command,
    ) -> Process {
        Self::spawn_at(&database_url(pool), free_port(), extra, command)
    }

    /// The most general start: any database URL, and a chosen port (a restarted hookd keeps
    /// its senders' URL).
    pub fn spawn_at(
        database_url: &str,
        port: u16,
        extra: &[(&str, &str)],
        command: std::process::Command,
    ) -> Process {
        Self::spawn_with_stdout(database_url, port, extra, command, None)
    }

    /// Like [`Process::spawn_at`]; with `stdout` given, the log goes there instead of to a
    /// file, and [`Process::log_lines`] finds nothing.
    pub fn spawn_with_stdout(
        database_url: &str,
        port: u16,
        extra: &[(&str, &str)],
        mut command: std::process::Command,
        stdout: Option<std::process::Stdio>,
    ) -> Process {
        static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "hookd-it-{}-{port}-{start}.log",
            std::process::id()
        ));
        let public = telnyx::PublicKey::from_signing_key(&telnyx_key()).to_base64();
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("HOOKD_LISTEN", format!("127.0.0.1:{port}"))
            .env("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
            .env("TELNYX_PUBLIC_KEY", public)
            .env("CUSTOM_WEBHOOK_SECRET", CUSTOM_SECRET)
            .env("HOOKD_POLL_INTERVAL_MS", "200")
            // The line per processed event, which tests count, is at debug.
            .env("RUST_LOG", "info,hookd::worker=debug")
            .stdout(stdout.unwrap_or_else(|| std::fs::File::create(&log).unwrap().into()))
            .stderr(std::process::Stdio::inherit());
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn hookd");
        Process { child, port, log }
    }

    /// Waits until the process accepts connections.
    pub async fn ready(self) -> Process {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hookd did not start listening"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn exit_within(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hookd did not exit within {limit:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn log_lines(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Stores `n` custom events in one statement (as a backlog would look).
pub async fn backlog(pool: &PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO events (source, event_id, event_type, body, payload)
         SELECT 'custom', 'msg_' || g, 'load.test', convert_to(p::text, 'UTF8'), p
         FROM generate_series(1, $1) g,
              LATERAL (SELECT jsonb_build_object('type', 'load.test', 'data', jsonb_build_object('n', g)) AS p) j",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// Polls until `sql` returns `want`.
pub async fn wait_for(pool: &PgPool, sql: &str, want: i64, limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let got = count(pool, sql).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: {got}, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub async fn dead_ids(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM events WHERE state = 'dead' ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Retries every event dead now, as `hookd dlq retry-all` does: a preview, then its token.
pub async fn retry_every_dead(pool: &PgPool) -> i64 {
    use common::db::selection::{self, Selection};
    let preview = selection::preview(pool, &Selection::All).await.unwrap();
    selection::retry(pool, &preview.token)
        .await
        .unwrap()
        .retried
}
