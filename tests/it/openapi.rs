//! The admin API's OpenAPI document: the committed copy is the one hookd serves, and every
//! operation it documents answers as it says, in each state it documents: with the token,
//! without it, with a wrong one, with the admin API off, to a barred client, and with the
//! database down. Bodies are checked against the documented schemas, so a field hookd sends
//! and the document does not name (or the other way round) fails too.

use std::collections::BTreeSet;

use common::{MIGRATOR, Source};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;

const TOKEN: &str = "openapi-tests-admin-token-of-at-least-32-bytes";
const REGENERATE: &str = "cargo run -q -p hookd -- openapi > docs/openapi.json";

fn committed() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}; write it with `{REGENERATE}`"))
}

fn document() -> Value {
    serde_json::from_str(&committed()).expect("docs/openapi.json is JSON")
}

/// One documented method of one path.
struct Operation<'a> {
    method: reqwest::Method,
    path: &'a str,
    spec: &'a Value,
}

impl Operation<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Routes whose security has no empty requirement cannot be used without the token.
    fn needs_token(&self) -> bool {
        self.spec["security"].as_array().is_some_and(|all| {
            all.iter()
                .all(|r| r.as_object().is_some_and(|r| !r.is_empty()))
        })
    }

    fn parameters(&self) -> impl Iterator<Item = &Value> {
        self.spec["parameters"].as_array().into_iter().flatten()
    }

    /// The path with each required parameter set to its documented example.
    fn target(&self) -> String {
        let required: Vec<String> = self
            .parameters()
            .filter(|p| p["required"] == true)
            .map(|p| {
                let example = p["example"].as_str().unwrap_or_else(|| {
                    panic!("{}: required {} has no example", self.name(), p["name"])
                });
                format!("{}={example}", p["name"].as_str().unwrap())
            })
            .collect();
        with_query(self.path, &required)
    }

    /// The documented request examples, or no body.
    fn bodies(&self) -> Vec<Option<Value>> {
        let content = &self.spec["requestBody"]["content"]["application/json"];
        match content["examples"].as_object() {
            Some(examples) => examples
                .values()
                .map(|e| Some(e["value"].clone()))
                .collect(),
            None if content.is_null() => vec![None],
            None => panic!("{}: the request body has no examples", self.name()),
        }
    }
}

fn with_query(path: &str, pairs: &[String]) -> String {
    if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// Every operation, reads first: they need the dead events the writes take away.
fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, spec) in item.as_object().unwrap() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            all.push(Operation { method, path, spec });
        }
    }
    let order = |m: &reqwest::Method| match m.as_str() {
        "GET" => 0,
        "POST" => 1,
        _ => 2,
    };
    all.sort_by_key(|op| order(&op.method));
    assert!(all.len() >= 7, "the admin API has at least 7 operations");
    all
}

/// Follows `#/components/...` references.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value["$ref"].as_str() {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not in the document"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} resolves to nothing"));
    }
    value
}

/// Whether `value` is what `schema` describes. Stricter than JSON Schema on one point: an
/// object whose schema names properties may hold only those, so nothing hookd sends is
/// undocumented.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(branches) = schema["oneOf"].as_array() {
        let matching = branches
            .iter()
            .filter(|b| conforms(doc, b, value, at).is_ok())
            .count();
        return match matching {
            1 => Ok(()),
            n => Err(format!("{at}: {value} matches {n} branches of oneOf")),
        };
    }
    if let Some(types) = match &schema["type"] {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    } {
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let fits = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !fits {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(n), Some(min)) = (value.as_f64(), schema["minimum"].as_f64())
        && n < min
    {
        return Err(format!("{at}: {n} is under the minimum {min}"));
    }
    if let (Some(n), Some(max)) = (value.as_f64(), schema["maximum"].as_f64())
        && n > max
    {
        return Err(format!("{at}: {n} is over the maximum {max}"));
    }
    if schema["format"] == "date-time"
        && let Some(text) = value.as_str()
        && chrono::DateTime::parse_from_rfc3339(text).is_err()
    {
        return Err(format!("{at}: {text} is not a date-time"));
    }
    if let Value::Object(fields) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !fields.contains_key(name.as_str().unwrap()) {
                return Err(format!("{at}: required {name} is missing from {value}"));
            }
        }
        // A schema without properties is a free-form object (the document itself).
        if let Some(properties) = schema["properties"].as_object() {
            for (name, field) in fields {
                let at = format!("{at}.{name}");
                match properties.get(name) {
                    Some(property) => conforms(doc, property, field, &at)?,
                    None => return Err(format!("{at} is sent but not documented")),
                }
            }
        }
    }
    if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, value) in items.iter().enumerate() {
            conforms(doc, item, value, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// What hookd answered.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &reqwest::Method,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut request = client.request(method.clone(), format!("{base}{target}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("hookd answers");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// Panics unless `reply` is one of the answers `op` documents: its status, its content type
/// and a body of the documented schema.
fn check(doc: &Value, op: &Operation<'_>, target: &str, reply: &Reply) {
    let name = format!("{} {target}", op.method);
    let documented: BTreeSet<&str> = op.spec["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let status = reply.status.to_string();
    assert!(
        documented.contains(status.as_str()),
        "{name} answered {} (documented: {documented:?}): {}",
        reply.status,
        reply.body
    );
    let response = resolve(doc, &op.spec["responses"][&status]);
    let content_type = reply
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap());
    let Some(content) = response["content"].as_object() else {
        assert!(
            reply.body.is_empty(),
            "{name}: undocumented body {}",
            reply.body
        );
        return;
    };
    let content_type = content_type.unwrap_or_else(|| panic!("{name}: no content type"));
    let media = content.get(content_type).unwrap_or_else(|| {
        panic!(
            "{name} {status}: content type {content_type} is not one of {:?}",
            content.keys()
        )
    });
    if content_type == "application/json" {
        let body: Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {}", reply.body));
        if let Err(e) = conforms(doc, &media["schema"], &body, "body") {
            panic!("{name} {status}: {e}");
        }
    }
    for (header, _) in response["headers"].as_object().into_iter().flatten() {
        // The bare 503 of a request past its deadline has no Retry-After; every 503 these
        // tests provoke is the database's, which has.
        assert!(
            reply.headers.contains_key(header.as_str()),
            "{name} {status}: documented header {header} is missing"
        );
    }
}

async fn dead_events(pool: &PgPool) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = json!({"type": "order.placed", "id": format!("oa{i}"), "created": 0});
        let id = format!("oa{i}");
        ids.push(store(pool, Source::Custom, &id, "order.placed", &body.to_string()).await);
    }
    sqlx::query(
        "UPDATE events SET state = 'dead', attempts = 4, dead_at = now() - interval '8 days', \
         last_error = 'boom' WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(pool)
    .await
    .unwrap();
    ids
}

async fn admin_hookd(pool: &PgPool, extra: &[(&str, &str)]) -> Hookd {
    let mut env = vec![("HOOKD_ADMIN_TOKEN", TOKEN)];
    env.extend_from_slice(extra);
    let mut config = config(&env);
    config.workers = 0;
    Hookd::start(pool, config).await
}

fn base(hookd: &Hookd) -> String {
    hookd.url("")
}

#[test]
fn the_document_is_openapi_3_1_and_its_references_and_examples_hold() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("an openapi field");
    assert!(version.starts_with("3.1"), "OpenAPI {version}, not 3.1");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for op in operations(&doc) {
        for requirement in op.spec["security"].as_array().expect("security") {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(
                    schemes.contains_key(scheme),
                    "{}: no scheme {scheme}",
                    op.name()
                );
            }
        }
        let mut contents: Vec<(String, &Value)> = op.spec["responses"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(status, r)| {
                let r = resolve(&doc, r);
                r["content"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(move |(_, c)| (status.clone(), c))
            })
            .collect();
        if let Some(body) = op.spec["requestBody"]["content"].as_object() {
            contents.extend(body.values().map(|c| ("request".to_owned(), c)));
        }
        for (what, content) in contents {
            let examples = content["examples"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, e)| &e["value"])
                .chain(content.get("example"));
            for example in examples {
                if let Err(e) = conforms(&doc, &content["schema"], example, "example") {
                    panic!("{} {what}: {e}", op.name());
                }
            }
        }
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_committed_document_is_the_served_one(pool: PgPool) {
    let hookd = admin_hookd(&pool, &[]).await;
    let get = reqwest::Method::GET;
    let served = send(
        &hookd.client,
        &base(&hookd),
        &get,
        "/api/openapi.json",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(served.headers["content-type"], "application/json");
    let committed = committed();
    if served.body != committed {
        let line = served
            .body
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "their lengths".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "docs/openapi.json is not what hookd serves (they differ at {line}): regenerate it \
             with `{REGENERATE}` and commit it"
        );
    }
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_documented_operation_answers_as_documented(pool: PgPool) {
    dead_events(&pool).await;
    let doc = document();
    let hookd = admin_hookd(&pool, &[]).await;
    let base = base(&hookd);
    for op in operations(&doc) {
        let target = op.target();
        let mut succeeded = false;
        for body in op.bodies() {
            let body = body.as_ref();
            let reply = send(&hookd.client, &base, &op.method, &target, Some(TOKEN), body).await;
            check(&doc, &op, &target, &reply);
            succeeded |= reply.status == 200;

            let anyone = send(&hookd.client, &base, &op.method, &target, None, body).await;
            check(&doc, &op, &target, &anyone);
            let wrong = send(
                &hookd.client,
                &base,
                &op.method,
                &target,
                Some("x".repeat(40).as_str()),
                body,
            )
            .await;
            check(&doc, &op, &target, &wrong);
            if op.needs_token() {
                assert_eq!((anyone.status, wrong.status), (401, 403), "{}", op.name());
                assert_eq!(anyone.headers["www-authenticate"], "Bearer");
            } else {
                assert_eq!((anyone.status, wrong.status), (200, 200), "{}", op.name());
            }
        }
        assert!(
            succeeded,
            "{}: no documented request answered 200",
            op.name()
        );

        // The documented bounds of parameters are the ones hookd applies.
        for param in op.parameters() {
            let name = param["name"].as_str().unwrap();
            for (bound, inside, outside) in [("minimum", 0, -1), ("maximum", 0, 1)] {
                let Some(limit) = param["schema"][bound].as_i64() else {
                    continue;
                };
                for (value, want) in [(limit + inside, 200), (limit + outside, 400)] {
                    let separator = if target.contains('?') { '&' } else { '?' };
                    let target = format!("{target}{separator}{name}={value}");
                    let reply =
                        send(&hookd.client, &base, &op.method, &target, Some(TOKEN), None).await;
                    check(&doc, &op, &target, &reply);
                    assert_eq!(reply.status, want, "{} {target}: {}", op.method, reply.body);
                }
            }
        }
    }
    hookd.stop().await;
}

/// Finds the documented operation, sends the request and checks the answer is `want` and
/// documented.
async fn expect(
    doc: &Value,
    hookd: &Hookd,
    method: &str,
    target: &str,
    body: Option<Value>,
    want: u16,
) {
    let path = target.split('?').next().unwrap();
    let ops = operations(doc);
    let op = ops
        .iter()
        .find(|op| op.method.as_str() == method && op.path == path)
        .unwrap_or_else(|| panic!("{method} {path} is not documented"));
    let reply = send(
        &hookd.client,
        &base(hookd),
        &op.method,
        target,
        Some(TOKEN),
        body.as_ref(),
    )
    .await;
    check(doc, op, target, &reply);
    assert_eq!(reply.status, want, "{method} {target}: {}", reply.body);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_documented_refusals_are_the_ones_hookd_gives(pool: PgPool) {
    let dead = dead_events(&pool).await;
    let body = json!({"type": "order.placed", "id": "alive", "created": 0}).to_string();
    let alive = store(&pool, Source::Custom, "alive", "order.placed", &body).await;
    let doc = document();
    let hookd = admin_hookd(&pool, &[]).await;
    let dlq = "/api/webhooks/dlq";

    for target in ["?source=paypal", "?before_id=abc", "?limit=many"] {
        expect(&doc, &hookd, "GET", &format!("{dlq}{target}"), None, 400).await;
    }
    for body in [
        json!({}),
        json!({"retry_all": false}),
        json!({"webhook_id": 1, "retry_all": true}),
        json!({"drop": "table"}),
    ] {
        expect(&doc, &hookd, "POST", dlq, Some(body), 400).await;
    }
    expect(
        &doc,
        &hookd,
        "POST",
        dlq,
        Some(json!({"webhook_id": 987654})),
        404,
    )
    .await;
    expect(
        &doc,
        &hookd,
        "POST",
        dlq,
        Some(json!({"webhook_id": alive})),
        409,
    )
    .await;
    expect(
        &doc,
        &hookd,
        "POST",
        dlq,
        Some(json!({"webhook_id": dead[0]})),
        200,
    )
    .await;
    for target in [
        "",
        "?older_than=soon",
        "?older_than=5m",
        "?older_than=7d&force=maybe",
    ] {
        expect(&doc, &hookd, "DELETE", &format!("{dlq}{target}"), None, 400).await;
    }
    expect(
        &doc,
        &hookd,
        "DELETE",
        &format!("{dlq}?older_than=5m&force=true"),
        None,
        200,
    )
    .await;
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn with_the_admin_api_off_every_guarded_operation_answers_404(pool: PgPool) {
    let doc = document();
    let hookd = Hookd::start(&pool, config(&[])).await;
    for op in operations(&doc) {
        let target = op.target();
        for body in op.bodies() {
            let reply = send(
                &hookd.client,
                &hookd.url(""),
                &op.method,
                &target,
                Some(TOKEN),
                body.as_ref(),
            )
            .await;
            check(&doc, &op, &target, &reply);
            let want = if op.needs_token() { 404 } else { 200 };
            assert_eq!(reply.status, want, "{}", op.name());
        }
    }
    hookd.stop().await;
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_barred_client_hears_429_on_every_operation(pool: PgPool) {
    let doc = document();
    let hookd = admin_hookd(
        &pool,
        &[("HOOKD_RATE_LIMIT", "1"), ("HOOKD_RATE_BURST", "1")],
    )
    .await;
    let base = base(&hookd);
    let get = reqwest::Method::GET;
    for op in operations(&doc) {
        // Wrong tokens until barred; a bar lasts about a second, longer than one request.
        let mut barred = false;
        for _ in 0..10 {
            let reply = send(&hookd.client, &base, &get, "/metrics", Some("wrong"), None).await;
            if reply.status == 429 {
                barred = true;
                break;
            }
        }
        assert!(barred, "wrong tokens never got the client barred");
        let target = op.target();
        let body = op.bodies().swap_remove(0);
        let reply = send(
            &hookd.client,
            &base,
            &op.method,
            &target,
            Some(TOKEN),
            body.as_ref(),
        )
        .await;
        check(&doc, &op, &target, &reply);
        assert_eq!(reply.status, 429, "{}", op.name());
    }
    hookd.stop().await;
}

#[tokio::test]
async fn with_the_database_down_every_operation_answers_as_documented() {
    let doc = document();
    let nowhere = secrecy::SecretString::from(format!(
        "postgres://postgres@127.0.0.1:{}/none",
        free_port()
    ));
    let settings = hookd::PoolSettings::tool(hookd::Schema::default(), 2);
    let state = hookd::AppState::new(
        hookd::pool(&nowhere, &settings).unwrap(),
        &config(&[("HOOKD_ADMIN_TOKEN", TOKEN)]),
        Default::default(),
        None,
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(hookd::http::serve(
        listener,
        hookd::app(state),
        64,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    for op in operations(&doc) {
        let target = op.target();
        let body = op.bodies().swap_remove(0);
        let reply = send(
            &client,
            &base,
            &op.method,
            &target,
            Some(TOKEN),
            body.as_ref(),
        )
        .await;
        check(&doc, &op, &target, &reply);
        // The document itself is the one answer that needs no database.
        let want = if op.path == "/api/openapi.json" {
            200
        } else {
            503
        };
        assert_eq!(reply.status, want, "{}: {}", op.name(), reply.body);
    }
    shutdown.cancel();
}
