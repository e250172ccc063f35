//! At the edge, over real sockets: a verified delivery is only refused when hookd truly cannot
//! take it (503 and `Retry-After`), never because someone else was noisy; junk is limited per
//! client; memory, connections and request time stay within their caps.

use std::net::IpAddr;
use std::time::Duration;

use common::MIGRATOR;
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::{
    CUSTOM_PATH, Hookd, Process, STRIPE_PATH, config, count, custom_event, custom_headers, now,
    stripe_event, stripe_headers,
};

/// A client whose connections come from `ip` (any 127/8 address is this host).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

/// Posts a signed Stripe event through `client`, with extra headers; the status.
async fn deliver(client: &reqwest::Client, hookd: &Hookd, id: &str, extra: &[(&str, &str)]) -> u16 {
    let body = stripe_event(id, "invoice.paid", now(), json!({}));
    let mut request = client.post(hookd.url(STRIPE_PATH)).body(body.clone());
    for (name, value) in stripe_headers(&body, now()) {
        request = request.header(name, value);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Posts an unsigned body; the status and `Retry-After`, if any.
async fn junk(
    client: &reqwest::Client,
    hookd: &Hookd,
    extra: &[(&str, &str)],
) -> (u16, Option<u64>) {
    let mut request = client
        .post(hookd.url(STRIPE_PATH))
        .body("{\"id\":\"evt_junk\"}");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status().as_u16(), retry_after)
}

/// Sends junk until the client is barred (bounded); the answers seen.
async fn flood(client: &reqwest::Client, hookd: &Hookd, extra: &[(&str, &str)]) -> Vec<u16> {
    let mut seen = Vec::new();
    for _ in 0..500 {
        let (status, retry_after) = junk(client, hookd, extra).await;
        seen.push(status);
        if status == 429 {
            assert!(
                retry_after.is_some_and(|s| s >= 1),
                "429 without Retry-After"
            );
            break;
        }
        assert_eq!(status, 400, "unsigned junk is refused as such");
    }
    seen
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn sixty_four_verified_deliveries_in_flight_from_one_address_get_no_429(pool: PgPool) {
    let mut config = config(&[]);
    config.workers = 0;
    assert!(
        config.rate_limit.is_some(),
        "the failure limit is on by default"
    );
    let hookd = Hookd::start(&pool, config).await;
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..3_000)
        .map(|i| {
            let hookd = &hookd;
            async move { deliver(&hookd.client, hookd, &format!("evt_many_{i}"), &[]).await }
        })
        .buffer_unordered(64)
        .take_while(|_| std::future::ready(started.elapsed() < Duration::from_secs(60)))
        .collect()
        .await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        ok,
        statuses.len(),
        "all acknowledged: {:?}",
        tally(&statuses)
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events").await,
        statuses.len() as i64
    );
    hookd.stop().await;
}

/// A receive-only hookd with `extra` settings: what is stored stays as it was stored.
async fn receiver(pool: &PgPool, extra: &[(&str, &str)]) -> Hookd {
    let mut config = config(extra);
    config.workers = 0;
    Hookd::start(pool, config).await
}

/// Whether junk sent with `X-Forwarded-For: hop(i)`, a new `i` each time, is barred within
/// 200 requests.
async fn barred(client: &reqwest::Client, hookd: &Hookd, hop: impl Fn(usize) -> String) -> bool {
    for i in 0..200 {
        let forwarded = hop(i);
        if junk(client, hookd, &[("x-forwarded-for", &forwarded)])
            .await
            .0
            == 429
        {
            return true;
        }
    }
    false
}

fn tally(statuses: &[u16]) -> std::collections::BTreeMap<u16, usize> {
    let mut tally = std::collections::BTreeMap::new();
    for s in statuses {
        *tally.entry(*s).or_default() += 1;
    }
    tally
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn junk_through_the_proxy_is_limited_while_its_verified_deliveries_pass(pool: PgPool) {
    // The reverse proxy is 127.0.0.1; it appends the client to X-Forwarded-For. One failure
    // a second refills, so a barred client stays barred for about a second.
    let hookd = receiver(
        &pool,
        &[
            ("HOOKD_TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8"),
            ("HOOKD_RATE_LIMIT", "1"),
            ("HOOKD_RATE_BURST", "20"),
        ],
    )
    .await;
    let proxy = client_from([127, 0, 0, 1]);
    let attacker = [("x-forwarded-for", "198.51.100.66, 203.0.113.66")];
    let seen = flood(&proxy, &hookd, &attacker).await;
    assert_eq!(
        seen.last(),
        Some(&429),
        "the junk client is barred: {seen:?}"
    );
    assert!(seen.len() > 20, "not before its burst: {seen:?}");

    // Barred: refused before its body is read, so a body that never comes costs nothing.
    let mut stream = TcpStream::connect(hookd.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {STRIPE_PATH} HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 203.0.113.66\r\n\
                 content-length: 1000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let head = read_head(&mut stream, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");

    // The junk goes on; meanwhile the same proxy's verified deliveries for others, another
    // client of the proxy sending junk, and a direct client are all served as before.
    let stop = tokio_util::sync::CancellationToken::new();
    let flooding = tokio::spawn({
        let (proxy, stop, url) = (proxy.clone(), stop.clone(), hookd.url(STRIPE_PATH));
        async move {
            let mut seen = Vec::new();
            while !stop.is_cancelled() && seen.len() < 20_000 {
                let request = proxy.post(&url).header("x-forwarded-for", "203.0.113.66");
                let response = request.body("{}").send().await.unwrap();
                seen.push(response.status().as_u16());
            }
            seen
        }
    });
    let provider = [("x-forwarded-for", "54.187.174.169")];
    let mut statuses = Vec::new();
    for i in 0..50 {
        statuses.push(deliver(&proxy, &hookd, &format!("evt_p{i}"), &provider).await);
    }
    let direct = client_from([127, 0, 0, 2]);
    statuses.push(deliver(&direct, &hookd, "evt_direct", &[]).await);
    assert_eq!(
        junk(&proxy, &hookd, &[("x-forwarded-for", "192.0.2.7")])
            .await
            .0,
        400
    );
    stop.cancel();
    let flood = tally(&flooding.await.unwrap());
    assert_eq!(
        tally(&statuses),
        [(200, 51)].into(),
        "the junk alongside: {flood:?}"
    );
    assert!(
        flood[&429] > flood.get(&400).copied().unwrap_or(0),
        "{flood:?}"
    );
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn forwarded_addresses_from_an_untrusted_peer_are_ignored(pool: PgPool) {
    let hookd = receiver(
        &pool,
        &[("HOOKD_RATE_LIMIT", "5"), ("HOOKD_RATE_BURST", "20")],
    )
    .await;
    let attacker = client_from([127, 0, 0, 3]);
    // A new made-up address each time: if it were believed, the client would never be barred.
    let barred = barred(&attacker, &hookd, |i| {
        format!("203.0.{}.{}", i / 250, i % 250 + 1)
    })
    .await;
    assert!(barred, "forged X-Forwarded-For must not escape the limit");
    let other = client_from([127, 0, 0, 4]);
    assert_eq!(deliver(&other, &hookd, "evt_other", &[]).await, 200);
    assert_eq!(junk(&other, &hookd, &[]).await.0, 400);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn ipv6_clients_are_limited_by_their_64(pool: PgPool) {
    let hookd = receiver(
        &pool,
        &[
            ("HOOKD_TRUSTED_PROXIES", "127.0.0.1"),
            ("HOOKD_RATE_LIMIT", "5"),
            ("HOOKD_RATE_BURST", "20"),
        ],
    )
    .await;
    let proxy = client_from([127, 0, 0, 1]);
    // One host hopping through the addresses of its /64 is one client.
    let barred = barred(&proxy, &hookd, |i| format!("2001:db8:1:2:{i:x}::1")).await;
    assert!(barred, "addresses of one /64 share a budget");
    let neighbour = [("x-forwarded-for", "2001:db8:1:3::1")];
    assert_eq!(junk(&proxy, &hookd, &neighbour).await.0, 400);
    assert_eq!(deliver(&proxy, &hookd, "evt_v6", &neighbour).await, 200);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn unknown_routes_and_wrong_tokens_count_as_failures(pool: PgPool) {
    let config = config(&[
        ("HOOKD_ADMIN_TOKEN", "edge-admin-token-0123456789abcdef0123"),
        ("HOOKD_RATE_LIMIT", "1"),
        ("HOOKD_RATE_BURST", "6"),
    ]);
    let hookd = Hookd::start(&pool, config).await;
    let scanner = client_from([127, 0, 0, 5]);
    let mut statuses = Vec::new();
    for path in ["/wp-login.php", "/.env", "/admin"] {
        statuses.push(
            scanner
                .get(hookd.url(path))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    for _ in 0..3 {
        let response = scanner
            .get(hookd.url("/api/webhooks/dlq"))
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 403, 403, 403]);
    // Its burst is spent: the next failure bars it.
    let response = scanner.get(hookd.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = scanner.get(hookd.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 429, "barred after its burst of failures");
    // Health is for everyone, and the public answer needs no token.
    let health = client_from([127, 0, 0, 6]);
    let response = health
        .get(hookd.url("/api/webhooks/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_operator_s_ceiling_per_source_limits_verified_deliveries(pool: PgPool) {
    let hookd = receiver(&pool, &[("HOOKD_SOURCE_RATE_LIMIT", "5")]).await;
    let statuses: Vec<u16> = futures::future::join_all((0..12).map(|i| {
        let hookd = &hookd;
        async move { deliver(&hookd.client, hookd, &format!("evt_ceiling_{i}"), &[]).await }
    }))
    .await;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 1, "{statuses:?}");
    assert_eq!(limited + statuses.iter().filter(|s| **s == 200).count(), 12);
    // Other sources have their own ceiling.
    let body = custom_event("x.y");
    let (status, _) = hookd
        .post(
            CUSTOM_PATH,
            &custom_headers("msg_ceiling", &body, now()),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    hookd.stop().await;
}

/// Reads until the end of a response head, or `limit`.
async fn read_head(stream: &mut TcpStream, limit: Duration) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    let _ = tokio::time::timeout(limit, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&byte[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&head).into_owned()
}

/// A request head for a signed Stripe event of `len` bytes whose body is sent separately.
fn signed_head(body: &str) -> String {
    let mut head = format!(
        "POST {STRIPE_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (name, value) in stripe_headers(body, now()) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn connections_beyond_the_cap_hear_503_and_idle_ones_are_closed(pool: PgPool) {
    let hookd = receiver(&pool, &[("HOOKD_MAX_CONNECTIONS", "4")]).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(hookd.addr).await.unwrap());
    }
    // One of them after a request of its own, as a kept-alive connection.
    idle[0]
        .write_all(b"GET /api/webhooks/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_head(&mut idle[0], Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Accepted in order: the four hold every slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(hookd.addr).await.unwrap();
    let head = read_head(&mut fifth, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    // One leaves; its slot is free for a delivery.
    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        deliver(&reqwest::Client::new(), &hookd, "evt_slot", &[]).await,
        200
    );
    // Silent connections are closed by the head deadline (10 s), freeing their slots.
    let started = Instant::now();
    for stream in &mut idle {
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            let mut rest = [0u8; 1024];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        })
        .await;
        assert!(closed.is_ok(), "closed, not left open");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        deliver(&reqwest::Client::new(), &hookd, "evt_after", &[]).await,
        200
    );
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_body_that_does_not_arrive_by_the_deadline_gets_408(pool: PgPool) {
    let hookd = receiver(&pool, &[("HOOKD_REQUEST_TIMEOUT_MS", "1000")]).await;
    let body = stripe_event("evt_slow", "invoice.paid", now(), json!({}));
    let mut stream = TcpStream::connect(hookd.addr).await.unwrap();
    stream
        .write_all(signed_head(&body).as_bytes())
        .await
        .unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    let started = Instant::now();
    let head = read_head(&mut stream, Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

/// Holds `LOCK TABLE events` (what every insert needs) until the returned sender is dropped.
async fn lock_events(pool: &PgPool) -> tokio::sync::oneshot::Sender<()> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = released.await;
        tx.rollback().await.unwrap();
    });
    release
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_lock_held_on_what_ingest_needs_answers_503_in_bounded_time(pool: PgPool) {
    // The defaults: lock_timeout 2 s, request deadline 10 s.
    let hookd = receiver(&pool, &[]).await;
    assert_eq!(deliver(&hookd.client, &hookd, "evt_before", &[]).await, 200);
    let release = lock_events(&pool).await;
    let started = Instant::now();
    let body = stripe_event("evt_locked", "invoice.paid", now(), json!({}));
    let response = hookd
        .client
        .post(hookd.url(STRIPE_PATH))
        .headers(headers(&stripe_headers(&body, now())))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Public health answers from what hookd knows, without a query that would wait too.
    let health = hookd
        .client
        .get(hookd.url("/api/webhooks/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(release);
    // Ingest resumes at once; the provider's retry of the refused event is stored.
    let (status, reply) = hookd.stripe(&body).await;
    assert_eq!((status, reply["duplicate"].as_bool()), (200, None));
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_statement_that_hangs_is_cut_by_the_request_deadline(pool: PgPool) {
    // No database-side timeouts at all: only the request deadline bounds the wait.
    let hookd = receiver(
        &pool,
        &[
            ("HOOKD_LOCK_TIMEOUT_MS", "0"),
            ("HOOKD_STATEMENT_TIMEOUT_MS", "0"),
            ("HOOKD_REQUEST_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    assert_eq!(deliver(&hookd.client, &hookd, "evt_warm", &[]).await, 200);
    let release = lock_events(&pool).await;
    let started = Instant::now();
    let body = stripe_event("evt_hung", "invoice.paid", now(), json!({}));
    let (status, reply) = hookd
        .post(STRIPE_PATH, &stripe_headers(&body, now()), body.clone())
        .await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("deadline"),
        "{reply}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    drop(release);
    // The insert that was waiting commits once the lock goes: the retry is a duplicate, and
    // the event is stored once.
    let (status, _) = hookd.stripe(&body).await;
    assert_eq!(status, 200);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_id = 'evt_hung'"
        )
        .await,
        1
    );
    hookd.stop().await;
}

fn headers(pairs: &[(&'static str, String)]) -> reqwest::header::HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            )
        })
        .collect()
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A thousand connections each send most of a 1 MiB body and hold the rest: hookd's memory
/// stays within its budget, it never exits, and a genuine delivery sent meanwhile is stored
/// (large bodies only get half the budget), as is the same delivery sent once it is over.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_thousand_clients_trickling_large_bodies_leave_memory_bounded(pool: PgPool) {
    const CLIENTS: usize = 1_000;
    const BODY: usize = 1 << 20;
    const BUDGET: u64 = 128 << 20;
    let mut hookd = Process::spawn(
        &pool,
        &[
            ("HOOKD_WORKERS", "0"),
            ("HOOKD_MEMORY_BUDGET", &BUDGET.to_string()),
            ("HOOKD_MAX_CONNECTIONS", "2000"),
            ("HOOKD_REQUEST_TIMEOUT_MS", "8000"),
        ],
    )
    .ready()
    .await;
    let pid = hookd.child.id();
    let port = hookd.port;
    let baseline = rss(pid);
    let body: std::sync::Arc<[u8]> = vec![b'x'; BODY].into();
    let hold = tokio_util::sync::CancellationToken::new();
    let tricklers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let hold = hold.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
                    return "connect";
                };
                let head = format!(
                    "POST {STRIPE_PATH} HTTP/1.1\r\nhost: x\r\nstripe-signature: t=1,v1=00\r\n\
                     content-length: {BODY}\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return "closed";
                }
                // All but the last byte, in 64 KiB pieces; then hold the request open.
                for piece in body[..BODY - 1].chunks(64 * 1024) {
                    if stream.write_all(piece).await.is_err() {
                        return "closed";
                    }
                }
                let mut answer = [0u8; 12];
                tokio::select! {
                    read = stream.read(&mut answer) => match read {
                        Ok(n) if n >= 12 && answer.starts_with(b"HTTP/1.1 ") => {
                            if &answer[9..12] == b"503" { "503" } else { "other" }
                        }
                        _ => "closed",
                    },
                    () = hold.cancelled() => "held",
                }
            })
        })
        .collect();
    // Sample the resident size while the flood is on, and send a genuine delivery meanwhile.
    let started = Instant::now();
    let mut peak = 0;
    let genuine = stripe_event("evt_during_flood", "invoice.paid", now(), json!({}));
    let url = format!("http://127.0.0.1:{port}{STRIPE_PATH}");
    let client = reqwest::Client::new();
    let mut during = None;
    while started.elapsed() < Duration::from_secs(6) {
        peak = peak.max(rss(pid));
        if during.is_none() && started.elapsed() > Duration::from_secs(2) {
            let response = client
                .post(&url)
                .headers(headers(&stripe_headers(&genuine, now())))
                .body(genuine.clone())
                .send()
                .await
                .unwrap();
            let retry = response.headers().contains_key("retry-after");
            during = Some(response.status().as_u16());
            // Large bodies have only half the budget: the usual few KiB still get in.
            assert_eq!(
                during,
                Some(200),
                "a genuine delivery during the flood (retry-after: {retry})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hold.cancel();
    eprintln!("t={:?} flood over", started.elapsed());
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for trickler in tricklers {
        *outcomes.entry(trickler.await.unwrap()).or_default() += 1;
    }
    assert!(
        hookd.child.try_wait().unwrap().is_none(),
        "hookd is still running"
    );
    eprintln!("t={:?} tricklers done", started.elapsed());
    eprintln!(
        "hostile load: {CLIENTS} clients x 1 MiB: RSS {} MiB before, peak {} MiB \
         (budget {} MiB); the clients saw {outcomes:?}; a genuine delivery meanwhile: {during:?}",
        baseline >> 20,
        peak >> 20,
        BUDGET >> 20
    );
    assert!(peak < BUDGET, "peak RSS {} MiB over the budget", peak >> 20);
    // Once the flood is over the provider's retry is stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client
            .post(&url)
            .headers(headers(&stripe_headers(&genuine, now())))
            .body(genuine.clone())
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(Instant::now() < deadline, "not stored after the flood");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_id = 'evt_during_flood'"
        )
        .await,
        1
    );
    assert!(hookd.child.try_wait().unwrap().is_none());
}

/// With its writer stuck behind a lock, the ingest queue fills and then refuses at once,
/// instead of holding every further request (and its body) until the lock goes.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_full_ingest_queue_refuses_at_once(pool: PgPool) {
    use hookd::ingest::{Ingest, IngestError};
    let ingest = Ingest::start(
        crate::harness::pool_like(&pool, 4),
        Default::default(),
        Default::default(),
    );
    let release = lock_events(&pool).await;
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..3_000 {
        let ingest = ingest.clone();
        pending.spawn(async move {
            let body = custom_event("queue.test");
            ingest
                .insert(common::db::events::NewEvent {
                    source: common::Source::Custom,
                    event_id: common::ProviderEventId::parse(format!("msg_q{i}")).unwrap(),
                    event_type: common::EventType::parse("queue.test").unwrap(),
                    body: body.into_bytes(),
                    jsonb_checked: false,
                })
                .await
        });
    }
    let mut refused = 0;
    while let Ok(Some(done)) =
        tokio::time::timeout(Duration::from_secs(2), pending.join_next()).await
    {
        assert!(
            matches!(done.unwrap(), Err(IngestError::Full)),
            "only refusals finish while stuck"
        );
        refused += 1;
    }
    assert!(
        refused > 0 && pending.len() > 2_000,
        "{refused} refused, {} waiting",
        pending.len()
    );
    drop(release);
    let waiting = pending.len();
    while let Some(done) = pending.join_next().await {
        assert!(done.unwrap().is_ok());
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM events").await,
        waiting as i64
    );
}
