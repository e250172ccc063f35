//! The operators' Grafana dashboard and Prometheus alert rules (docs/grafana, docs/prometheus)
//! against promtool and a real hookd's /metrics: a renamed or dropped metric fails here, not
//! on an operator's empty panel or silent alert.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::MIGRATOR;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/hookd.json");
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/prometheus/hookd-rules.yml"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/prometheus/hookd-rules.test.yml"
);
const TOKEN: &str = "dashboards-test-admin-token-0123456789";

/// The panels operators were promised, each with a metric its queries must read.
const PANELS: [(&str, &str); 9] = [
    ("Ingest rate by source", "hookd_webhooks_received_total"),
    (
        "Ingest latency (p50, p99)",
        "hookd_ingest_duration_seconds_bucket",
    ),
    ("Processed by outcome", "hookd_events_processed_total"),
    ("Queue depth", "hookd_queue_depth"),
    (
        "Oldest pending event, and backlog drain time (estimate)",
        "hookd_oldest_pending_seconds",
    ),
    (
        "Oldest pending event, and backlog drain time (estimate)",
        "hookd_queue_depth",
    ),
    ("Dead events", "hookd_events_dead"),
    (
        "Attempt latency (p50, p99)",
        "hookd_attempt_duration_seconds_bucket",
    ),
    ("Rejected by reason", "hookd_webhooks_rejected_total"),
];

/// promtool from PATH. CI installs it (`cargo xtask test`), so there its absence is a failure;
/// elsewhere the test says it skipped, since Debian's `prometheus` package is a large install
/// to ask of every developer.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is not installed: CI must have it (apt-get install prometheus)"
        );
        println!("skipped: promtool not installed (apt-get install prometheus)");
    }
    found
}

fn run(promtool: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    serde_json::from_str(&text).expect("docs/grafana/hookd.json is JSON")
}

fn panel_exprs(panel: &Value) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect()
}

/// Every `hookd_...` name in `text` (queries, but also descriptions: a name an operator is
/// told to look for must exist too).
fn referenced_metrics(text: &str) -> BTreeSet<&str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("hookd_") {
        let end = rest[at..]
            .find(|c| !is_name(c))
            .map_or(rest.len(), |n| at + n);
        if !rest[..at].ends_with(is_name) {
            names.insert(&rest[at..end]);
        }
        rest = &rest[end..];
    }
    names
}

/// The exposition's families (`# TYPE`, `# HELP` lines) and the names its samples carry.
struct Scrape {
    types: BTreeMap<String, String>,
    helps: BTreeSet<String>,
    samples: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut helps = BTreeSet::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                helps.insert(help.split(' ').next().unwrap().to_owned());
            } else if let Some(decl) = line.strip_prefix("# TYPE ") {
                let (family, kind) = decl.split_once(' ').unwrap();
                types.insert(family.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_owned());
            }
        }
        Scrape {
            types,
            helps,
            samples,
        }
    }

    /// Why `name` would find nothing in Prometheus, if it would not. A series name is its
    /// family plus the suffix its type gives it (OpenMetrics: counters `_total`, histograms
    /// `_bucket`/`_sum`/`_count`); the bare family of a counter or histogram is no series.
    fn problem(&self, name: &str) -> Option<String> {
        let suffixes: &[(&str, &str)] = &[
            ("", "gauge"),
            ("_total", "counter"),
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
        ];
        let family = suffixes.iter().find_map(|(suffix, kind)| {
            let family = name.strip_suffix(suffix)?;
            (self.types.get(family).map(String::as_str) == Some(kind)).then_some(family)
        });
        match family {
            None => Some(format!("{name}: no family in the scrape has such a series")),
            Some(family) if !self.samples.contains(name) => {
                Some(format!("{name}: family {family} has no such sample"))
            }
            Some(_) => None,
        }
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let out = run(&promtool, &["check", "rules", RULES], None);
    assert!(out.status.success(), "promtool check rules: {}", said(&out));
    // promtool resolves rule_files relative to the test file.
    let out = run(&promtool, &["test", "rules", RULE_TESTS], None);
    assert!(out.status.success(), "promtool test rules: {}", said(&out));
    let rules = std::fs::read_to_string(RULES).unwrap();
    for alert in [
        "HookdDown",
        "HookdNoDeliveries",
        "HookdDeadEventsGrowing",
        "HookdQueueStalled",
        "HookdRefusingDeliveries",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert}");
    }
    // promtool accepts a rule without these; an operator's pager does not.
    let alerts = rules.matches("- alert: ").count();
    for key in ["severity: ", "summary: ", "description: "] {
        assert_eq!(rules.matches(key).count(), alerts, "every alert has {key}");
    }
}

#[test]
fn the_dashboard_has_the_promised_panels_and_valid_queries() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(variable("DS_PROMETHEUS")["query"], "prometheus");
    assert_eq!(variable("instance")["type"], "query");
    let source = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    assert_eq!(variable("instance")["datasource"], source);

    let panels = dashboard["panels"].as_array().unwrap();
    for (title, metric) in PANELS {
        let panel = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        let exprs = panel_exprs(panel);
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "{title}: {exprs:?}"
        );
        if title.contains("p50, p99") {
            for q in ["histogram_quantile(0.5,", "histogram_quantile(0.99,"] {
                assert!(exprs.iter().any(|e| e.contains(q)), "{title}: {q}");
            }
        }
    }
    let mut ids = BTreeSet::new();
    let mut exprs = vec![];
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64()), "panel ids are unique");
        assert_eq!(panel["datasource"], source, "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"], source, "{}", panel["title"]);
        }
        for expr in panel_exprs(panel) {
            assert!(expr.contains("instance=~\"$instance\""), "{expr}");
            exprs.push(expr);
        }
    }

    // promtool parses PromQL only inside rule files: each query, with Grafana's variables
    // given values, becomes a recording rule of a scratch file.
    let Some(promtool) = promtool() else { return };
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        assert!(
            !expr.contains('$'),
            "a variable the test does not know: {expr}"
        );
        let quoted = serde_json::to_string(&expr).unwrap();
        file.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let scratch = std::env::temp_dir().join(format!(
        "hookd-dashboard-queries-{}.yml",
        std::process::id()
    ));
    std::fs::write(&scratch, file).unwrap();
    let out = run(
        &promtool,
        &["check", "rules", scratch.to_str().unwrap()],
        None,
    );
    std::fs::remove_file(&scratch).unwrap();
    assert!(
        out.status.success(),
        "the dashboard's queries: {}",
        said(&out)
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_real_scrape_passes_promtool_and_has_every_metric_referenced(pool: PgPool) {
    let Some(promtool) = promtool() else { return };
    let hookd = Hookd::start(&pool, config(&[("HOOKD_ADMIN_TOKEN", TOKEN)])).await;
    // Every family gets a series: stored, duplicate, rejected, then processed.
    for i in 0..3 {
        let body = stripe_event(
            &format!("evt_dash_{i}"),
            "customer.created",
            now(),
            json!({}),
        );
        assert_eq!(hookd.stripe(&body).await.0, 200);
    }
    let again = stripe_event("evt_dash_0", "customer.created", now(), json!({}));
    assert_eq!(hookd.stripe(&again).await.1["duplicate"], true);
    let forged = stripe_event("evt_dash_x", "customer.created", now(), json!({}));
    let (status, _) = hookd
        .post(STRIPE_PATH, &stripe_headers("another body", now()), forged)
        .await;
    assert_eq!(status, 400);
    wait_for(
        &pool,
        "SELECT count(*) FROM events WHERE state IN ('pending', 'processing', 'retrying')",
        0,
        Duration::from_secs(30),
    )
    .await;

    let response = hookd
        .client
        .get(hookd.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    hookd.stop().await;

    let scrape = Scrape::parse(&text);
    let out = run(&promtool, &["check", "metrics"], Some(&text));
    // Exit 1 is a parse error, 3 a parse with lint advice. hookd serves OpenMetrics (and says
    // so in Content-Type, so Prometheus parses it as such), while promtool lints with the
    // classic text parser, for which a counter's samples carry the family's own name: it
    // takes `X_total` for a family of its own without HELP, next to an empty counter `X`.
    // That, and only for counters the scrape does describe, is accepted.
    let artifact = |line: &str| {
        line.strip_suffix(" no help text")
            .and_then(|name| name.strip_suffix("_total"))
            .is_some_and(|family| {
                scrape.types.get(family).map(String::as_str) == Some("counter")
                    && scrape.helps.contains(family)
            })
    };
    let advice = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || (out.status.code() == Some(3) && advice.lines().all(artifact)),
        "promtool check metrics: {}\n{text}",
        said(&out)
    );

    let dashboard = std::fs::read_to_string(DASHBOARD).unwrap();
    let rules = std::fs::read_to_string(RULES).unwrap();
    let mut problems = vec![];
    for (file, content) in [("dashboard", &dashboard), ("rules", &rules)] {
        let names = referenced_metrics(content);
        assert!(names.len() >= 5, "{file} names few metrics: {names:?}");
        problems.extend(
            names
                .into_iter()
                .filter_map(|name| scrape.problem(name))
                .map(|p| format!("{file}: {p}")),
        );
    }
    assert!(problems.is_empty(), "{problems:#?}\nin\n{text}");
}

#[test]
fn metric_names_are_found_in_queries_and_prose() {
    let found = referenced_metrics(
        "rate(hookd_a_total{x=\"y\"}[5m]) / hookd_b_bucket, my_hookd_c, hookd_d.",
    );
    assert_eq!(
        found,
        BTreeSet::from(["hookd_a_total", "hookd_b_bucket", "hookd_d"])
    );
}
