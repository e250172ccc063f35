//! Hostile and broken input over real HTTP: nothing a client sends may crash hookd, get past
//! verification, store something unusable, tie the server up, or change data through the
//! admin API without the token. (ingest.rs and admin.rs cover the ordinary refusals; this file
//! covers what they do not.)

use std::time::{Duration, Instant};

use common::MIGRATOR;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const TOKEN: &str = "badinput-admin-token-0123456789abcdef";

/// hookd in-process with all routes, the admin API, no rate limit and no workers (stored
/// events stay exactly as ingest left them).
async fn hookd(pool: &PgPool) -> Hookd {
    let mut config = config(&[("HOOKD_ADMIN_TOKEN", TOKEN), ("HOOKD_RATE_LIMIT", "off")]);
    config.workers = 0;
    Hookd::start(pool, config).await
}

/// Waits until the in-process server answers (it binds first, then migrates), so timings
/// measured afterwards are the server's, not its start-up.
async fn up(hookd: &Hookd) {
    hookd
        .client
        .get(hookd.url("/api/webhooks/health"))
        .send()
        .await
        .expect("hookd answers");
}

/// Sends raw bytes on a fresh connection and reads the whole answer (until the server closes
/// or 20 s pass). Returns the status code, if a status line came back, and the text.
async fn raw(hookd: &Hookd, request: &[u8]) -> (Option<u16>, String) {
    let mut stream = TcpStream::connect(hookd.addr).await.unwrap();
    // The server may close early (431, 413); what it sent before that still counts.
    let _ = stream.write_all(request).await;
    let mut answer = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    (status, text)
}

/// A POST request head announcing `length` body bytes, `Connection: close`, with the given
/// extra header lines.
fn head(path: &str, headers: &[(&str, &[u8])], length: usize) -> Vec<u8> {
    let mut out =
        format!("POST {path} HTTP/1.1\r\nHost: hookd\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {length}\r\n\r\n").as_bytes());
    out
}

/// A whole POST request: head and body.
fn request(path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = head(path, headers, body.len());
    out.extend_from_slice(body);
    out
}

/// Signed custom-route headers as raw header lines.
fn signed_custom(id: &str, body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let secret: hookd::verify::standard::Secret = CUSTOM_SECRET.parse().unwrap();
    let t = now();
    vec![
        ("webhook-id", id.as_bytes().to_vec()),
        ("webhook-timestamp", t.to_string().into_bytes()),
        (
            "webhook-signature",
            hookd::verify::standard::sign(&secret, id, t, body).into_bytes(),
        ),
    ]
}

fn as_refs<'a>(headers: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'a str, &'a [u8])> {
    headers.iter().map(|(n, v)| (*n, v.as_slice())).collect()
}

/// Posts `body` (bytes) to `route`, correctly signed for that route.
async fn post_signed(hookd: &Hookd, route: &str, id: &str, body: &[u8]) -> (u16, Value) {
    // One reading of the clock: a second ticking over between signing and the timestamp
    // header would make the signature wrong.
    let now = now();
    let headers: Vec<(&str, String)> = match route {
        STRIPE_PATH => vec![(
            "Stripe-Signature",
            hookd::verify::stripe::sign(STRIPE_SECRET.as_bytes(), now, body),
        )],
        TELNYX_PATH => vec![
            (
                "telnyx-signature-ed25519",
                hookd::verify::telnyx::sign(&telnyx_key(), now, body),
            ),
            ("telnyx-timestamp", now.to_string()),
        ],
        _ => {
            let secret: hookd::verify::standard::Secret = CUSTOM_SECRET.parse().unwrap();
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", now.to_string()),
                (
                    "webhook-signature",
                    hookd::verify::standard::sign(&secret, id, now, body),
                ),
            ]
        }
    };
    hookd.post(route, &headers, body.to_vec()).await
}

/// A body for `route` whose id and type are in place, with `extra` spliced in as more fields.
fn event_with(route: &str, id: &str, extra: &str) -> String {
    match route {
        STRIPE_PATH => format!(r#"{{"id":"{id}","type":"bad.input","created":1,{extra}}}"#),
        TELNYX_PATH => {
            format!(r#"{{"data":{{"id":"{id}","event_type":"bad.input"}},{extra}}}"#)
        }
        _ => format!(r#"{{"type":"bad.input",{extra}}}"#),
    }
}

const ROUTES: [&str; 3] = [STRIPE_PATH, TELNYX_PATH, CUSTOM_PATH];

// ------------------------------------------------------------- bodies ----

#[sqlx::test(migrator = "MIGRATOR")]
async fn malformed_and_deeply_nested_json_is_refused_on_every_route(pool: PgPool) {
    let hookd = hookd(&pool).await;
    for route in ROUTES {
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("bad-{n}")
        };
        // Nesting within serde_json's limit is stored; beyond it, and far beyond it (a parser
        // without a limit would overflow its stack here), refused.
        let i = id();
        let ok = event_with(
            route,
            &i,
            &format!(r#""deep":{}1{}"#, "[".repeat(100), "]".repeat(100)),
        );
        assert_eq!(
            post_signed(&hookd, route, &i, ok.as_bytes()).await.0,
            200,
            "{route} depth 100"
        );
        for depth in [200, 100_000] {
            let i = id();
            let deep = event_with(
                route,
                &i,
                &format!(r#""deep":{}1{}"#, "[".repeat(depth), "]".repeat(depth)),
            );
            let (status, reply) = post_signed(&hookd, route, &i, deep.as_bytes()).await;
            assert_eq!(status, 400, "{route} depth {depth}: {reply}");
            assert!(
                reply["error"].as_str().unwrap().contains("not valid JSON"),
                "{route} depth {depth}: {reply}"
            );
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            let (status, _) = post_signed(&hookd, route, &id(), objects.as_bytes()).await;
            assert_eq!(status, 400, "{route} object depth {depth}");
        }
        let i = id();
        let whole = event_with(route, &i, r#""k":1"#);
        for broken in [
            String::new(),
            " \r\n\t ".into(),
            "null".into(),
            "\"just a string\"".into(),
            "{".into(),
            whole[..whole.len() - 1].to_owned(),
            format!("{whole} trailing"),
            format!("{whole}{whole}"),
            format!("\u{feff}{whole}"),
            whole.replace(r#""k":1"#, r#""k":1e999"#),
            whole.replace(r#""k":1"#, r#""k":01"#),
            whole.replace(r#""k":1"#, r#""k":NaN"#),
            whole.replace(r#""k":1"#, r#""k":'single'"#),
            whole.replace(r#""k":1"#, r#""k":"\ud800""#),
            whole.replace(r#""k":1"#, r#""k":"tab	raw""#),
            whole.replace(r#""k":1"#, r#""k\u0000":1"#),
            whole.replace(r#""k":1"#, r#""k":1,"#),
        ] {
            let (status, reply) = post_signed(&hookd, route, &i, broken.as_bytes()).await;
            assert_eq!(status, 400, "{route} {broken:?}: {reply}");
            assert!(reply["error"].is_string());
        }
        // None of them kept the id, not even the one only PostgreSQL refused (`\u0000`, after
        // the key was claimed in the same statement): sent well formed, the event is new.
        let (status, reply) = post_signed(&hookd, route, &i, whole.as_bytes()).await;
        assert_eq!(
            (status, &reply["duplicate"]),
            (200, &serde_json::Value::Null),
            "{reply}"
        );
        // A surrogate pair is one valid character.
        let i = id();
        let emoji = event_with(route, &i, r#""k":"\ud83d\ude00""#);
        assert_eq!(
            post_signed(&hookd, route, &i, emoji.as_bytes()).await.0,
            200
        );
    }
    // Only the depth-100, well-formed and emoji events were stored, three of each.
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 9);
    assert_eq!(count(&pool, "SELECT count(*) FROM event_keys").await, 9);
    hookd.stop().await;
}

/// When a key repeats, serde_json and PostgreSQL's jsonb both keep the last value: the id
/// hookd deduplicates on is the id the stored payload (and so every handler) sees.
#[sqlx::test(migrator = "MIGRATOR")]
async fn duplicate_keys_resolve_the_same_way_in_hookd_and_postgres(pool: PgPool) {
    let hookd = hookd(&pool).await;
    let stripe = r#"{"id":"evt_first","type":"a.b","id":"evt_last","type":"c.d","created":1}"#;
    assert_eq!(
        post_signed(&hookd, STRIPE_PATH, "", stripe.as_bytes())
            .await
            .0,
        200
    );
    let telnyx = r#"{"data":{"id":"tx_first","event_type":"a.b"},"data":{"id":"tx_last","event_type":"c.d"}}"#;
    assert_eq!(
        post_signed(&hookd, TELNYX_PATH, "", telnyx.as_bytes())
            .await
            .0,
        200
    );
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event_id, event_type,
                COALESCE(p->>'id', p->'data'->>'id'),
                COALESCE(p->>'type', p->'data'->>'event_type')
         FROM events, LATERAL (SELECT convert_from(body, 'UTF8')::jsonb) AS parsed(p)
         ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "evt_last".into(),
                "c.d".into(),
                Some("evt_last".into()),
                Some("c.d".into())
            ),
            (
                "tx_last".into(),
                "c.d".into(),
                Some("tx_last".into()),
                Some("c.d".into())
            ),
        ]
    );
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn identifiers_are_bounded_and_free_of_control_characters(pool: PgPool) {
    let hookd = hookd(&pool).await;
    let long = "e".repeat(255);
    let too_long = "e".repeat(256);
    // 85 three-byte characters are 255 bytes; one more is over the bound.
    let wide = "€".repeat(85);
    let too_wide = "€".repeat(86);
    for (id, expected) in [
        (long.as_str(), 200),
        (too_long.as_str(), 400),
        (wide.as_str(), 200),
        (too_wide.as_str(), 400),
        ("evt\\u0007bell", 400),
        ("evt\\nnewline", 400),
        ("evt\\u007fdel", 400),
        ("evt\\u0085nel", 400),
        // Format characters are not control characters: stored as they are.
        ("evt\\u202eevil", 200),
        ("evt zero\\u200bwidth", 200),
    ] {
        let body = format!(r#"{{"id":"{id}","type":"x.y","created":1}}"#);
        let (status, reply) = post_signed(&hookd, STRIPE_PATH, "", body.as_bytes()).await;
        assert_eq!(status, expected, "{id}: {reply}");
        let body = format!(r#"{{"id":"x","type":"{id}","created":1}}"#);
        let (status, reply) = post_signed(&hookd, STRIPE_PATH, "", body.as_bytes()).await;
        // The same bound holds for the type (the id "x" repeats: a duplicate is also 200).
        assert_eq!(status, expected, "type {id}: {reply}");
    }
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn invalid_utf8_in_bodies_and_headers_is_refused(pool: PgPool) {
    let hookd = hookd(&pool).await;
    for route in ROUTES {
        for (i, bytes) in [
            b"\xff\xfe{}".to_vec(),
            b"{\"type\":\"x.y\",\"id\":\"a\",\"data\":{\"id\":\"a\",\"event_type\":\"x\"},\"k\":\"\xc3\x28\"}"
                .to_vec(),
            // An overlong encoding of '/'.
            b"{\"type\":\"x.y\",\"id\":\"a\",\"k\":\"\xc0\xaf\"}".to_vec(),
            // A UTF-8-encoded surrogate.
            b"{\"type\":\"x.y\",\"id\":\"a\",\"k\":\"\xed\xa0\x80\"}".to_vec(),
        ]
        .into_iter()
        .enumerate()
        {
            let (status, reply) = post_signed(&hookd, route, &format!("u{i}"), &bytes).await;
            assert_eq!(status, 400, "{route} #{i}: {reply}");
        }
    }
    // Header values that are not text (obs-text bytes) are as good as absent.
    let body = custom_event("x.y");
    let mut headers = signed_custom("caf\u{e9}", body.as_bytes());
    headers[0].1 = b"caf\xe9".to_vec();
    let (status, text) = raw(
        &hookd,
        &request(CUSTOM_PATH, &as_refs(&headers), body.as_bytes()),
    )
    .await;
    assert_eq!(status, Some(400), "{text}");
    assert!(text.contains("missing webhook-id header"), "{text}");
    let stripe = stripe_event("evt_hdr", "x.y", now(), json!({}));
    let mut signature = stripe_headers(&stripe, now())[0].1.clone().into_bytes();
    signature.extend_from_slice(b"\xff");
    let (status, text) = raw(
        &hookd,
        &request(
            STRIPE_PATH,
            &[("Stripe-Signature", &signature)],
            stripe.as_bytes(),
        ),
    )
    .await;
    assert_eq!(status, Some(400), "{text}");
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

/// hookd does not look at Content-Type (providers differ, and the signature is over the raw
/// bytes): any type, or none, is verified and stored byte for byte. Content-Encoding is not
/// undone either: the signed bytes are what is stored.
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_content_type_is_ignored_and_the_raw_bytes_are_stored(pool: PgPool) {
    let hookd = hookd(&pool).await;
    let types: [Option<&str>; 7] = [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=xyz"),
        Some("application/json; charset=iso-8859-1"),
        Some("?? not a media type ??"),
    ];
    for (i, content_type) in types.iter().enumerate() {
        let id = format!("ct-{i}");
        let body = custom_event("content.type");
        let mut request = hookd.client.post(hookd.url(CUSTOM_PATH)).body(body.clone());
        for (name, value) in custom_headers(&id, &body, now()) {
            request = request.header(name, value);
        }
        if let Some(t) = content_type {
            request = request.header("content-type", *t);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{content_type:?}");
        let stored: Vec<u8> = sqlx::query_scalar("SELECT body FROM events WHERE event_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, body.as_bytes());
    }
    let body = custom_event("content.encoding");
    let mut request = hookd
        .client
        .post(hookd.url(CUSTOM_PATH))
        .header("content-encoding", "gzip")
        .body(body.clone());
    for (name, value) in custom_headers("ce-1", &body, now()) {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status().as_u16(), 200);
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn body_limit_edges_and_lying_lengths(pool: PgPool) {
    let hookd = hookd(&pool).await;
    let limit = 1024 * 1024;
    let frame = r#"{"type":"x.y","pad":""}"#;
    let exactly = format!(
        r#"{{"type":"x.y","pad":"{}"}}"#,
        "a".repeat(limit - frame.len())
    );
    assert_eq!(exactly.len(), limit);
    assert_eq!(
        post_signed(&hookd, CUSTOM_PATH, "at-limit", exactly.as_bytes())
            .await
            .0,
        200
    );
    let over = exactly.replacen("\"a", "\"aa", 1);
    assert_eq!(
        post_signed(&hookd, CUSTOM_PATH, "over-limit", over.as_bytes())
            .await
            .0,
        413
    );
    // Framing an attacker could use to smuggle a second request, or garbage lengths: refused.
    for head in [
        &b"POST /api/custom/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}{}{}"[..],
        b"POST /api/custom/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /api/custom/webhook HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n{}",
        b"POST /api/custom/webhook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /api/custom/webhook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /api/custom/webhook HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    ] {
        let (status, text) = raw(&hookd, head).await;
        assert!(
            matches!(status, Some(400..=499) | None),
            "{}: {text}",
            String::from_utf8_lossy(head)
        );
    }
    // Content-Length together with chunked: the chunked framing wins (RFC 9112 6.3) and the
    // connection is closed after the answer, so nothing can ride along.
    let body = custom_event("x.y");
    let headers = signed_custom("te-cl", body.as_bytes());
    let mut both = format!("POST {CUSTOM_PATH} HTTP/1.1\r\nHost: h\r\n").into_bytes();
    for (name, value) in &headers {
        both.extend_from_slice(format!("{name}: ").as_bytes());
        both.extend_from_slice(value);
        both.extend_from_slice(b"\r\n");
    }
    both.extend_from_slice(
        format!(
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n\
             GET /api/webhooks/dlq HTTP/1.1\r\nHost: h\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let (status, text) = raw(&hookd, &both).await;
    assert!(
        matches!(status, Some(200) | Some(400)),
        "TE+CL: {status:?} {text}"
    );
    assert!(
        !text.contains("HTTP/1.1 401") && !text.contains("events"),
        "a smuggled second request was answered: {text}"
    );
    println!(
        "BADINPUT content-length+chunked -> {status:?} (stored: {})",
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_id = 'te-cl'"
        )
        .await
    );
    hookd.stop().await;
}

/// A declared length over the limit is refused at once with 413, without waiting for (or
/// reading) bytes that must be refused anyway.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_declared_length_over_the_limit_gets_413_at_once(pool: PgPool) {
    let hookd = hookd(&pool).await;
    up(&hookd).await;
    let body = custom_event("x.y");
    let signed = signed_custom("declared", body.as_bytes());
    let lengths = [1024 * 1024 + 1, 10 * 1024 * 1024 * 1024];
    let answers = futures::future::join_all(lengths.map(|length| {
        let (addr, head, body) = (
            hookd.addr,
            head(CUSTOM_PATH, &as_refs(&signed), length),
            body.clone(),
        );
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(&head).await.unwrap();
            stream.write_all(body.as_bytes()).await.unwrap();
            until_closed(stream, Duration::from_secs(15)).await
        }
    }))
    .await;
    for (length, (closed, answer)) in lengths.iter().zip(answers) {
        println!(
            "BADINPUT Content-Length {length} with {} bytes sent -> {:?} after {closed:?}",
            body.len(),
            answer.lines().next()
        );
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "Content-Length {length}: {:?} after {closed:?}",
            answer.lines().next()
        );
        let closed = closed.expect("answered");
        // At once: well before the 10 s body read deadline.
        assert!(
            closed < Duration::from_secs(8),
            "{length}: waited {closed:?}"
        );
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

// ------------------------------------------------------------ headers ----

/// More than 64 KiB of request head (one huge header, many headers, a huge request line) is
/// refused with 431 and stores nothing, whatever the chunks it arrives in.
#[sqlx::test(migrator = "MIGRATOR")]
async fn request_heads_over_64_kib_get_431(pool: PgPool) {
    let hookd = hookd(&pool).await;
    let body = custom_event("x.y");
    let mut answers = vec![];
    // One header of 65 KiB .. 1 MiB, on an otherwise valid signed request.
    for kib in [65, 70, 128, 300, 1024] {
        let mut headers = signed_custom(&format!("big-{kib}"), body.as_bytes());
        headers.push(("x-pad", vec![b'a'; kib * 1024]));
        let (status, _) = raw(
            &hookd,
            &request(CUSTOM_PATH, &as_refs(&headers), body.as_bytes()),
        )
        .await;
        answers.push((format!("one {kib} KiB header"), status, [431].as_slice()));
    }
    // 1,500 headers of 50 bytes: 75 KiB in all.
    let mut headers = signed_custom("many", body.as_bytes());
    headers.extend((0..1500).map(|_| ("x-pad", vec![b'b'; 42])));
    let (status, _) = raw(
        &hookd,
        &request(CUSTOM_PATH, &as_refs(&headers), body.as_bytes()),
    )
    .await;
    answers.push(("1500 headers, 75 KiB".into(), status, &[431]));
    // Many small headers under the byte limit: hyper caps their number (100) as well.
    let mut headers = signed_custom("count", body.as_bytes());
    headers.extend((0..200).map(|i| ("x-n", i.to_string().into_bytes())));
    let (status, _) = raw(
        &hookd,
        &request(CUSTOM_PATH, &as_refs(&headers), body.as_bytes()),
    )
    .await;
    answers.push(("200 small headers".into(), status, &[431]));
    // A huge request line.
    let path = format!("/api/custom/webhook?{}", "q".repeat(70 * 1024));
    let (status, _) = raw(&hookd, &request(&path, &[], body.as_bytes())).await;
    answers.push(("70 KiB request line".into(), status, &[414, 431]));
    for (what, status, _) in &answers {
        println!("BADINPUT {what} -> {status:?}");
    }
    let stored = count(&pool, "SELECT count(*) FROM events").await;
    // Still serving.
    assert_eq!(hookd.custom("after", &body).await.0, 200);
    let wrong: Vec<_> = answers
        .iter()
        .filter(|(_, status, ok)| !status.is_some_and(|s| ok.contains(&s)))
        .collect();
    assert!(wrong.is_empty(), "not refused: {wrong:?}");
    assert_eq!(stored, 0, "oversized requests were stored");
    hookd.stop().await;
}

/// Repeated signature and id headers: only the first of each is read, so a valid one behind a
/// forged one does not help, and a forged one behind a valid one does not hurt.
#[sqlx::test(migrator = "MIGRATOR")]
async fn repeated_signature_and_id_headers_count_once(pool: PgPool) {
    let hookd = hookd(&pool).await;
    let body = custom_event("x.y");
    let good = signed_custom("hdr-4", body.as_bytes());
    let mut forged_first = good.clone();
    forged_first.insert(2, ("webhook-signature", b"v1,AAAA".to_vec()));
    let (status, text) = raw(
        &hookd,
        &request(CUSTOM_PATH, &as_refs(&forged_first), body.as_bytes()),
    )
    .await;
    assert_eq!(status, Some(400), "{text}");
    let mut forged_second = good.clone();
    forged_second.push(("webhook-signature", b"v1,AAAA".to_vec()));
    let (status, text) = raw(
        &hookd,
        &request(CUSTOM_PATH, &as_refs(&forged_second), body.as_bytes()),
    )
    .await;
    assert_eq!(status, Some(200), "{text}");
    // Two webhook-id headers: the first is the id, and it is the one signed.
    let mut two_ids = signed_custom("hdr-5", body.as_bytes());
    two_ids.push(("webhook-id", b"hdr-other".to_vec()));
    let (status, _) = raw(
        &hookd,
        &request(CUSTOM_PATH, &as_refs(&two_ids), body.as_bytes()),
    )
    .await;
    assert_eq!(status, Some(200));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE event_id IN ('hdr-4', 'hdr-5')"
        )
        .await,
        2
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 2);
    // Still serving.
    assert_eq!(hookd.custom("hdr-after", &body).await.0, 200);
    hookd.stop().await;
}

// -------------------------------------------------------- slow clients ----

/// Reads until the server closes the connection; returns after how long, and what came.
async fn until_closed(mut stream: TcpStream, limit: Duration) -> (Option<Duration>, String) {
    let started = Instant::now();
    let mut answer = vec![];
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (
        closed.ok().map(|()| started.elapsed()),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

/// Slow clients: 200 connections that send half their headers and stop (slowloris), one
/// that sends nothing, one that sends its headers but no body. The server drops each after
/// its ~10 s deadline and keeps serving everyone else meanwhile.
#[sqlx::test(migrator = "MIGRATOR")]
async fn slow_clients_are_cut_off_while_others_are_served(pool: PgPool) {
    let hookd = hookd(&pool).await;
    up(&hookd).await;
    let limit = Duration::from_secs(25);
    let mut half_headers = vec![];
    for _ in 0..200 {
        let mut s = TcpStream::connect(hookd.addr).await.unwrap();
        s.write_all(b"POST /api/custom/webhook HTTP/1.1\r\nHost: hookd\r\nwebhook-id: sl")
            .await
            .unwrap();
        half_headers.push(tokio::spawn(until_closed(s, limit)));
    }
    let silent = tokio::spawn(until_closed(
        TcpStream::connect(hookd.addr).await.unwrap(),
        limit,
    ));
    // Headers announcing a body, then one byte of it, then nothing.
    let mut no_body = TcpStream::connect(hookd.addr).await.unwrap();
    let body = custom_event("x.y");
    let signed = signed_custom("nb", body.as_bytes());
    no_body
        .write_all(&head(CUSTOM_PATH, &as_refs(&signed), body.len()))
        .await
        .unwrap();
    no_body.write_all(b"{").await.unwrap();
    let no_body = tokio::spawn(until_closed(no_body, limit));

    // Meanwhile everyone else is served promptly.
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        let t = Instant::now();
        assert_eq!(hookd.custom(&format!("ok-{served}"), &body).await.0, 200);
        slowest = slowest.max(t.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut closed_after = vec![];
    for task in half_headers {
        let (closed, _) = task.await.unwrap();
        closed_after.push(closed.expect("a half-sent head was never cut off"));
    }
    closed_after.sort();
    let (silent_closed, _) = silent.await.unwrap();
    let (no_body_closed, no_body_answer) = no_body.await.unwrap();
    println!(
        "BADINPUT slow clients: half-headers closed after {:?}..{:?}, silent after {:?}, \
         headers-without-body after {:?} ({:?}); others served {served} times, slowest {:?}",
        closed_after[0],
        closed_after[closed_after.len() - 1],
        silent_closed,
        no_body_closed,
        no_body_answer.lines().next(),
        slowest
    );
    assert!(closed_after[0] >= Duration::from_secs(8));
    // Upper bounds leave a slow machine room past the 10 s deadlines; what matters is
    // that every one is cut off, and not before its deadline.
    assert!(closed_after[closed_after.len() - 1] <= Duration::from_secs(18));
    let silent_closed = silent_closed.expect("an idle connection was never closed");
    assert!(silent_closed <= Duration::from_secs(18));
    let no_body_closed = no_body_closed.expect("a body that never came was never cut off");
    assert!((Duration::from_secs(8)..=Duration::from_secs(18)).contains(&no_body_closed));
    assert!(
        no_body_answer.is_empty() || no_body_answer.starts_with("HTTP/1.1 4"),
        "{no_body_answer}"
    );
    // Far below the 10 s a blocked server would make them wait.
    assert!(
        slowest < Duration::from_secs(5),
        "others waited {slowest:?}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, served);
    hookd.stop().await;
}

/// A client that sends its headers, then trickles its body a byte at a time, must be cut off
/// once the body deadline (~10 s) has passed, not only after 10 s of silence.
#[sqlx::test(migrator = "MIGRATOR")]
async fn a_client_trickling_its_body_is_cut_off_after_the_body_deadline(pool: PgPool) {
    let hookd = hookd(&pool).await;
    up(&hookd).await;
    let body = custom_event("x.y");
    let headers = signed_custom("trickle", body.as_bytes());
    let full = request(CUSTOM_PATH, &as_refs(&headers), body.as_bytes());
    let (head, rest) = full.split_at(full.len() - body.len());
    let mut stream = TcpStream::connect(hookd.addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    let started = Instant::now();
    let mut cut_off = None;
    let mut answer = vec![];
    // One byte a second, for at most 25 s.
    for byte in rest.iter().take(25) {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                cut_off = Some(started.elapsed());
                break;
            }
            Err(_) => {}
        }
    }
    println!(
        "BADINPUT trickled body: cut off after {cut_off:?} ({:?})",
        String::from_utf8_lossy(&answer).lines().next()
    );
    let cut_off = cut_off.expect("a body trickled for 25 s was never cut off");
    assert!(
        cut_off <= Duration::from_secs(18),
        "cut off after {cut_off:?}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 0);
    hookd.stop().await;
}

// ------------------------------------------------------------ replays ----

/// A captured request replayed later with a fresh timestamp, or with a new id to slip past
/// deduplication, fails verification on every route: the timestamp and the id are signed.
#[sqlx::test(migrator = "MIGRATOR")]
async fn replays_with_doctored_timestamps_or_ids_are_refused(pool: PgPool) {
    let hookd = hookd(&pool).await;
    let captured_at = now() - 3600;
    // Stripe: the captured `v1` with today's `t`, or both timestamps.
    let stripe = stripe_event("evt_replay", "x.y", captured_at, json!({}));
    let captured = stripe_headers(&stripe, captured_at)[0].1.clone();
    let v1 = captured.split_once(',').unwrap().1;
    for header in [
        format!("t={},{v1}", now()),
        format!("t={},t={captured_at},{v1}", now()),
        format!("t={captured_at},t={},{v1}", now()),
        format!("{v1},t={}", now()),
    ] {
        let (status, reply) = hookd
            .post(
                STRIPE_PATH,
                &[("Stripe-Signature", header.clone())],
                stripe.clone(),
            )
            .await;
        assert_eq!(status, 400, "{header}: {reply}");
    }
    // Telnyx: the captured signature with today's timestamp.
    let telnyx = telnyx_event("tx-replay", "x.y", json!({}));
    let mut headers = telnyx_headers(&telnyx, captured_at);
    headers[1].1 = now().to_string();
    let (status, reply) = hookd.post(TELNYX_PATH, &headers, telnyx.clone()).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("signature"));
    // Standard Webhooks: today's timestamp, or a fresh id with a valid timestamp.
    let custom = custom_event("x.y");
    let mut headers = custom_headers("msg_replay", &custom, captured_at);
    headers[1].1 = now().to_string();
    assert_eq!(
        hookd.post(CUSTOM_PATH, &headers, custom.clone()).await.0,
        400
    );
    let fresh = custom_headers("msg_once", &custom, now());
    assert_eq!(hookd.post(CUSTOM_PATH, &fresh, custom.clone()).await.0, 200);
    let mut renamed = fresh.clone();
    renamed[0].1 = "msg_once_again".into();
    let (status, reply) = hookd.post(CUSTOM_PATH, &renamed, custom.clone()).await;
    assert_eq!(status, 400, "{reply}");
    // An exact replay inside the window is a duplicate: acknowledged, nothing new.
    let (status, reply) = hookd.post(CUSTOM_PATH, &fresh, custom.clone()).await;
    assert_eq!(
        (status, reply),
        (200, json!({"received": true, "duplicate": true}))
    );
    // Timestamps in milliseconds, or absurdly far out, are outside the window too.
    for t in [now() * 1000, i64::MAX] {
        let headers = custom_headers("msg_ms", &custom, t);
        let (status, reply) = hookd.post(CUSTOM_PATH, &headers, custom.clone()).await;
        assert_eq!(status, 400, "{t}: {reply}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 1);
    hookd.stop().await;
}

// ---------------------------------------------------------- admin API ----

/// What the admin API could change: every event's state, attempts and timestamps, and the
/// attempt history.
async fn fingerprint(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(COALESCE(string_agg(concat_ws('|', id, state, attempts, next_attempt_at,
                                                  dead_at, last_error), ',' ORDER BY id), ''))
                || ':' || (SELECT count(*) FROM event_attempts)
         FROM events",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Three dead events and one that succeeded, with attempt history.
async fn some_history(pool: &PgPool) -> i64 {
    backlog(pool, 4).await;
    sqlx::query(
        "UPDATE events SET state = CASE WHEN id < 4 THEN 'dead' ELSE 'succeeded' END,
                attempts = 4, dead_at = CASE WHEN id < 4 THEN now() - interval '30 days' END,
                last_error = CASE WHEN id < 4 THEN 'boom' END",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome, error)
         SELECT id, 4, now(), 1, CASE WHEN id < 4 THEN 'dead' ELSE 'succeeded' END, last_error
         FROM events",
    )
    .execute(pool)
    .await
    .unwrap();
    4
}

/// Sends one raw admin request; the answer status (0 when none came).
async fn admin_raw(
    hookd: &Hookd,
    method: &str,
    path: &str,
    auth: Option<&[u8]>,
    body: Option<&str>,
) -> (u16, String) {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: hookd\r\nConnection: close\r\n").into_bytes();
    if let Some(auth) = auth {
        req.extend_from_slice(b"Authorization: ");
        req.extend_from_slice(auth);
        req.extend_from_slice(b"\r\n");
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        req.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    req.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    let (status, text) = raw(hookd, &req).await;
    (status.unwrap_or(0), text)
}

const ADMIN_ROUTES: [(&str, &str, Option<&str>); 6] = [
    ("GET", "/api/webhooks/dlq", None),
    ("POST", "/api/webhooks/dlq", Some(r#"{"retry_all":true}"#)),
    ("POST", "/api/webhooks/dlq", Some(r#"{"webhook_id":1}"#)),
    ("DELETE", "/api/webhooks/dlq?older_than=1d", None),
    ("GET", "/api/webhooks/analytics", None),
    ("GET", "/metrics", None),
];

#[sqlx::test(migrator = "MIGRATOR")]
async fn admin_routes_refuse_malformed_and_wrong_credentials(pool: PgPool) {
    some_history(&pool).await;
    let hookd = hookd(&pool).await;
    let before = fingerprint(&pool).await;
    let huge = format!("Bearer {}", "x".repeat(60 * 1024));
    let basic = format!("Basic {}", b64(format!("admin:{TOKEN}").as_bytes()));
    let credentials: Vec<(Vec<u8>, u16)> = vec![
        (b"Bearer".to_vec(), 401),
        // Trailing whitespace is not part of a header value: this is "Bearer" alone.
        (b"Bearer ".to_vec(), 401),
        (basic.into_bytes(), 401),
        (format!("Token {TOKEN}").into_bytes(), 401),
        (TOKEN.as_bytes().to_vec(), 401),
        (format!("Bearer {TOKEN} {TOKEN}").into_bytes(), 403),
        (format!("Bearer {TOKEN}x").into_bytes(), 403),
        (
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]).into_bytes(),
            403,
        ),
        (format!("Bearer {}", TOKEN.to_uppercase()).into_bytes(), 403),
        (format!("Bearer \"{TOKEN}\"").into_bytes(), 403),
        // Not visible ASCII: unreadable, so as good as absent.
        (format!("Bearer {TOKEN}\u{e9}").into_bytes(), 401),
        (
            [b"Bearer ".as_slice(), TOKEN.as_bytes(), b"\xff"].concat(),
            401,
        ),
        (huge.into_bytes(), 403),
    ];
    // The auth scheme is case-insensitive in RFC 9110; hookd only knows "Bearer". Either way
    // is safe; print which.
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {TOKEN}");
        let (status, _) = admin_raw(
            &hookd,
            "GET",
            "/api/webhooks/analytics",
            Some(auth.as_bytes()),
            None,
        )
        .await;
        assert!(matches!(status, 200 | 401), "{scheme}: {status}");
        println!("BADINPUT admin auth scheme {scheme:?} with the right token -> {status}");
    }
    for (method, path, body) in ADMIN_ROUTES {
        for (auth, expected) in &credentials {
            let (status, text) = admin_raw(&hookd, method, path, Some(auth), body).await;
            assert_eq!(
                status,
                *expected,
                "{method} {path} with {:?}: {}",
                String::from_utf8_lossy(&auth[..auth.len().min(40)]),
                text.lines().next().unwrap_or("")
            );
            assert!(!text.contains(TOKEN));
        }
        // The token anywhere but the Authorization header does not count.
        let sep = if path.contains('?') { '&' } else { '?' };
        for leak in [
            format!("{path}{sep}token={TOKEN}"),
            format!("{path}{sep}access_token={TOKEN}"),
        ] {
            assert_eq!(
                admin_raw(&hookd, method, &leak, None, body).await.0,
                401,
                "{leak}"
            );
        }
        // Two Authorization headers, the wrong one first: the first is the one read.
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\
                               Authorization: Bearer wrong\r\nAuthorization: Bearer {TOKEN}\r\n\
                               Content-Type: application/json\r\n"
        )
        .into_bytes();
        let body = body.unwrap_or("");
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        assert_eq!(
            raw(&hookd, &req).await.0,
            Some(403),
            "{method} {path} twice"
        );
    }
    // Paths that look like the admin routes are not a way around the token.
    for path in [
        "/api/webhooks/dlq/",
        "//api/webhooks/dlq",
        "/api/webhooks/../webhooks/dlq",
        "/api/webhooks/./dlq",
        "/api/webhooks/%64lq",
        "/API/WEBHOOKS/DLQ",
        "/api/webhooks/dlq%00",
        "/api/webhooks/dlq;x=1",
        "/metrics/",
        "/metrics%2f",
    ] {
        let (status, text) = admin_raw(&hookd, "GET", path, None, None).await;
        assert!(
            matches!(status, 400 | 401 | 404),
            "{path}: {}",
            text.lines().next().unwrap_or("")
        );
        assert!(
            !text.contains("\"events\""),
            "{path} leaked the DLQ: {text}"
        );
    }
    assert_eq!(fingerprint(&pool).await, before, "data changed");
    hookd.stop().await;
}

/// With the right token, hostile filter values are refused (4xx) or match nothing (200);
/// never a 5xx, never a change to the data.
#[sqlx::test(migrator = "MIGRATOR")]
async fn admin_filters_with_hostile_values_never_5xx_nor_change_data(pool: PgPool) {
    some_history(&pool).await;
    let hookd = hookd(&pool).await;
    let before = fingerprint(&pool).await;
    let auth = format!("Bearer {TOKEN}");
    let auth = Some(auth.as_bytes());
    let long = "%27".repeat(5000);
    let queries = [
        "source=stripe'--".to_owned(),
        "source=%27%3B%20DROP%20TABLE%20events%3B%20--".into(),
        "source=".into(),
        "source=%00".into(),
        "source=%F0%9F%94%A5".into(),
        "event_type=%27%3B%20DROP%20TABLE%20events%3B%20--".into(),
        "event_type=%00".into(),
        "event_type=%E2%80%AE".into(),
        "q=%25".into(),
        "q=_".into(),
        "q=%5C".into(),
        "q=%27%20OR%201%3D1%20--".into(),
        "q=%00".into(),
        "q=%F0%9F%94%A5".into(),
        "q=%FF%FE".into(),
        format!("q={long}"),
        "limit=0".into(),
        "limit=-1".into(),
        "limit=501".into(),
        "limit=9223372036854775807".into(),
        "limit=9223372036854775808".into(),
        "limit=-9223372036854775808".into(),
        "limit=1e3".into(),
        "limit=abc".into(),
        "limit=".into(),
        "limit=1&limit=2".into(),
        "limit=%00".into(),
        "before_id=-1".into(),
        "before_id=0".into(),
        "before_id=-9223372036854775808".into(),
        "before_id=9223372036854775807".into(),
        "before_id=99999999999999999999".into(),
        "before_id=1.5".into(),
        "before_id=abc".into(),
        "before_id=%00".into(),
        "unknown=1".into(),
        "source[]=stripe".into(),
        "%FF=1".into(),
        "&&&==&".into(),
    ];
    let mut failures = vec![];
    for query in &queries {
        let path = format!("/api/webhooks/dlq?{query}");
        let (status, text) = admin_raw(&hookd, "GET", &path, auth, None).await;
        let line = text.lines().next().unwrap_or("").to_owned();
        if !(200..500).contains(&status) {
            failures.push(format!("GET {}: {line}", &path[..path.len().min(80)]));
        }
    }
    for body in [
        r#"{"webhook_id":-1}"#,
        r#"{"webhook_id":0}"#,
        r#"{"webhook_id":4}"#,
        r#"{"webhook_id":9223372036854775807}"#,
        r#"{"webhook_id":9223372036854775808}"#,
        r#"{"webhook_id":-9223372036854775809}"#,
        r#"{"webhook_id":1.5}"#,
        r#"{"webhook_id":"1"}"#,
        r#"{"webhook_id":"1 OR 1=1"}"#,
        r#"{"webhook_id":null}"#,
        r#"{"webhook_id":[1,2]}"#,
        r#"{"webhook_id":1,"retry_all":true}"#,
        r#"{"retry_all":false}"#,
        r#"{"retry_all":"true"}"#,
        r#"{"retry_all":1}"#,
        r#"{"webhook_id":1,"extra":1}"#,
        r#"{"webhook_id":1,"webhook_id":2}"#,
        r#"{}"#,
        r#"[]"#,
        "null",
        "",
        "{",
        "\u{feff}{\"webhook_id\":1}",
        r#"{"webhook_id":1e2}"#,
    ] {
        let (status, text) = admin_raw(&hookd, "POST", "/api/webhooks/dlq", auth, Some(body)).await;
        let line = text.lines().next().unwrap_or("").to_owned();
        if !(400..500).contains(&status) {
            failures.push(format!("POST {body}: {line}"));
        }
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _) = admin_raw(&hookd, "POST", "/api/webhooks/dlq", auth, Some(&deep)).await;
    if !(400..500).contains(&status) {
        failures.push(format!("POST deep: {status}"));
    }
    for age in [
        "",
        "-7d",
        "7",
        "d",
        "7 days ago",
        "7d%3B%20DROP%20TABLE%20events",
        "%00",
        "%EF%BC%97d",
        "99999999999999999999d",
        "1000000y",
        "300000y",
        "100000y",
        "18446744073709551615s",
        "1e9d",
        "NaN",
    ] {
        let path = format!("/api/webhooks/dlq?older_than={age}");
        let (status, text) = admin_raw(&hookd, "DELETE", &path, auth, None).await;
        let line = text.lines().next().unwrap_or("").to_owned();
        if !(400..500).contains(&status) {
            failures.push(format!("DELETE older_than={age}: {line}"));
        }
    }
    // Methods the routes do not have.
    for (method, path) in [
        ("PUT", "/api/webhooks/dlq"),
        ("PATCH", "/api/webhooks/dlq"),
        ("DELETE", "/api/webhooks/analytics"),
        ("POST", "/metrics"),
        ("TRACE", "/api/webhooks/dlq"),
        ("GET", "/api/custom/webhook"),
    ] {
        let (status, text) = admin_raw(&hookd, method, path, auth, Some("{}")).await;
        if !(400..500).contains(&status) {
            failures.push(format!(
                "{method} {path}: {}",
                text.lines().next().unwrap_or("")
            ));
        }
    }
    let after = fingerprint(&pool).await;
    assert!(
        failures.is_empty(),
        "hostile admin input got non-4xx answers:\n{}",
        failures.join("\n")
    );
    assert_eq!(after, before, "data changed");
    hookd.stop().await;
}
