//! Fixed data and a fixed "now" for tests, so snapshots are stable.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::db::archive::PurgeReceipt;
use common::db::clusters::Cluster;
use common::db::dlq::{DeadEvent, PurgeFilter};
use common::db::events::{Attempt, EventDetail};
use common::db::retention;
use common::db::selection::{Progress, Selection, TypeCount};
use common::db::stats::{Queue, Totals, TypeCounts};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::action::Action;
use crate::app::{App, Settings};
use crate::model::{Bound, Choice, Detail, Snapshot};

pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T03:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn ago(secs: i64) -> DateTime<Utc> {
    now() - TimeDelta::seconds(secs)
}

pub fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn ch(c: char) -> Action {
    key(KeyCode::Char(c))
}

pub fn types(source: &str, event_type: &str, counts: [i64; 5]) -> TypeCounts {
    let [received, succeeded, skipped, retrying_now, dead_now] = counts;
    TypeCounts {
        source: source.into(),
        event_type: event_type.into(),
        received,
        succeeded,
        skipped,
        failed: retrying_now,
        dead: dead_now,
        retrying_now,
        dead_now,
    }
}

pub fn dead(id: i64, died_secs_ago: i64, source: &str, event_type: &str, error: &str) -> DeadEvent {
    DeadEvent {
        id,
        source: source.into(),
        event_id: format!("evt_{id}"),
        event_type: event_type.into(),
        attempts: 4,
        last_error: Some(error.into()),
        received_at: ago(died_secs_ago + 90),
        dead_at: ago(died_secs_ago),
        superseded: false,
    }
}

/// A cluster of `count` events that died between `first` and `last` seconds ago.
pub fn cluster(
    source: &str,
    event_type: &str,
    fingerprint: &str,
    count: i64,
    (first, last): (i64, i64),
    (sample_id, sample_error): (i64, &str),
) -> Cluster {
    Cluster {
        source: source.into(),
        event_type: event_type.into(),
        fingerprint: fingerprint.into(),
        count,
        first_death: ago(first),
        last_death: ago(last),
        sample_id,
        sample_error: Some(sample_error.into()),
        superseded: 0,
    }
}

/// The causes of [`snapshot`]'s dead events.
pub fn clusters() -> Vec<Cluster> {
    vec![
        cluster(
            "stripe",
            "invoice.payment_failed",
            "no business is linked to Stripe customer <id>",
            1,
            (75, 75),
            (42, "no business is linked to Stripe customer cus_Q1"),
        ),
        cluster(
            "telnyx",
            "call.hangup",
            "payload has no string at /data/payload/call_control_id",
            1,
            (3_700, 3_700),
            (41, "payload has no string at /data/payload/call_control_id"),
        ),
        cluster(
            "custom",
            "order.created",
            "forward: <n> Service Unavailable",
            1,
            (9 * 86_400, 9 * 86_400),
            (17, "forward: 503 Service Unavailable"),
        ),
    ]
}

/// An incident: three causes whose orders by count, last death and first death all differ.
pub fn incident_clusters() -> Vec<Cluster> {
    vec![
        cluster(
            "stripe",
            "invoice.payment_failed",
            "no business is linked to Stripe customer <id>",
            40,
            (10_800, 75),
            (42, "no business is linked to Stripe customer cus_Q1"),
        ),
        cluster(
            "telnyx",
            "call.hangup",
            "payload has no string at /data/payload/call_control_id",
            3,
            (3_600, 20),
            (41, "payload has no string at /data/payload/call_control_id"),
        ),
        cluster(
            "custom",
            "order.created",
            "forward: <n> Service Unavailable",
            2,
            (9 * 86_400, 10),
            (17, "forward: 503 Service Unavailable"),
        ),
    ]
}

/// An app at [`now`] in the middle of [`incident_clusters`].
pub fn incident() -> App {
    let mut app = App::new(
        Settings {
            color: false,
            ..Settings::default()
        },
        now(),
    );
    let mut during = snapshot();
    during.queue.dead = 45;
    app.update(Action::Snapshot(Box::new(during)));
    app.update(Action::Clusters(incident_clusters()));
    app
}

/// The snapshot that answers listing the first of [`incident_clusters`].
pub fn incident_cluster_snapshot() -> Snapshot {
    let key = incident_clusters()[0].key();
    let mut listed = snapshot();
    listed.queue.dead = 45;
    listed.dead = (0..40)
        .map(|n| {
            dead(
                42 - n,
                75 + 270 * n,
                "stripe",
                "invoice.payment_failed",
                &format!("no business is linked to Stripe customer cus_Q{}", n + 1),
            )
        })
        .collect();
    listed.cluster = Some(key);
    listed
}

pub fn snapshot() -> Snapshot {
    let dead_events = vec![
        dead(
            42,
            75,
            "stripe",
            "invoice.payment_failed",
            "no business is linked to Stripe customer cus_Q1",
        ),
        dead(
            41,
            3_700,
            "telnyx",
            "call.hangup",
            "payload has no string at /data/payload/call_control_id",
        ),
        dead(
            17,
            9 * 86_400,
            "custom",
            "order.created",
            "forward: 503 Service Unavailable",
        ),
    ];
    Snapshot {
        taken_at: ago(1),
        took: Duration::from_millis(7),
        queue: Queue {
            pending: 10,
            retrying: 3,
            processing: 2,
            dead: 3,
            oldest_pending_secs: Some(252.0),
        },
        last_5m: Totals {
            received: 120,
            succeeded: 118,
            skipped: 0,
            failed: 2,
            dead: 1,
        },
        last_hour: Totals {
            received: 1_480,
            succeeded: 1_452,
            skipped: 12,
            failed: 30,
            dead: 2,
        },
        last_day: Totals {
            received: 30_210,
            succeeded: 29_800,
            skipped: 300,
            failed: 400,
            dead: 110,
        },
        throughput: (0..60)
            .map(|m| (ago(60 * (59 - m)), [12, 30, 18, 25, 40, 8][m as usize % 6]))
            .collect(),
        by_type: vec![
            types("custom", "order.created", [320, 317, 0, 2, 1]),
            types(
                "stripe",
                "customer.subscription.updated",
                [2_210, 2_210, 0, 0, 0],
            ),
            types("stripe", "invoice.payment_failed", [95, 93, 0, 1, 1]),
            types("telnyx", "call.hangup", [27_585, 27_180, 300, 0, 1]),
        ],
        recent_dead: dead_events.clone(),
        dead: dead_events,
        filter: String::new(),
        cluster: None,
        retained: retention::Status {
            retention_secs: 30 * 86_400,
            dedup_window_secs: 30 * 86_400,
            dlq_retention_secs: None,
            oldest_processed_day: Some(ago(29 * 86_400).date_naive()),
            days_kept: 30,
            days_ahead: 3,
            next_drop_at: None,
            undated_processed: 0,
            key_generations: 2,
            keys_generation_started_at: Some(ago(12 * 86_400)),
            policy_updated_at: ago(3_600),
        },
    }
}

pub fn detail() -> Detail {
    let payload = serde_json::json!({
        "id": "evt_42",
        "type": "invoice.payment_failed",
        "created": 1_800_000_000,
        "data": {"object": {"customer": "cus_Q1", "amount_due": 4_900}},
    });
    let failed = |attempt: i32, secs: i64, outcome: &str| Attempt {
        attempt,
        started_at: ago(secs),
        duration_ms: 12 * attempt,
        outcome: outcome.into(),
        error: Some("no business is linked to Stripe customer cus_Q1".into()),
        http_status: None,
        response_body: None,
    };
    Detail {
        event: EventDetail {
            id: 42,
            source: "stripe".into(),
            event_id: "evt_42".into(),
            event_type: "invoice.payment_failed".into(),
            state: "dead".into(),
            attempts: 3,
            last_error: Some("no business is linked to Stripe customer cus_Q1".into()),
            received_at: ago(165),
            processed_at: None,
            dead_at: Some(ago(75)),
            payload: payload.clone(),
        },
        attempts: vec![
            failed(1, 164, "failed"),
            failed(2, 130, "failed"),
            failed(3, 75, "dead"),
        ],
        payload: serde_json::to_string_pretty(&payload)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
        superseded: false,
    }
}

/// An app at [`now`] that has seen [`snapshot`] and [`clusters`].
pub fn app_with(settings: Settings) -> App {
    let mut app = App::new(settings, now());
    app.update(Action::Snapshot(Box::new(snapshot())));
    app.update(Action::Clusters(clusters()));
    app
}

pub fn app() -> App {
    app_with(Settings {
        color: false,
        ..Settings::default()
    })
}

/// A retry's choice as a preview of `selection` would return it, with a token as real ones
/// are (an opaque snapshot the tests never look into).
pub fn choice(selection: Selection, by_type: &[(&str, &str, i64)]) -> Choice {
    let count = by_type.iter().map(|t| t.2).sum();
    let token = serde_json::from_value(serde_json::json!({
        "selection": selection,
        "snapshot": "1000:1000:",
        "count": count,
    }))
    .expect("a token");
    Choice {
        what: selection.describe(),
        count,
        by_type: type_counts(by_type),
        superseded: None,
        bound: Bound::Retry(token),
    }
}

/// A purge's choice as its preview would return it: what died more than 7 days ago.
pub fn purge_choice(by_type: &[(&str, &str, i64)], superseded: i64) -> Choice {
    let filter = PurgeFilter::older_than(TimeDelta::days(7));
    purge_of(filter, Some(ago(7 * 86_400)), by_type, Some(superseded))
}

/// The superseded dead events of any age, as a purge preview counts them.
pub fn superseded_choice(by_type: &[(&str, &str, i64)]) -> Choice {
    let filter = PurgeFilter {
        older_than_secs: None,
        superseded: true,
    };
    purge_of(filter, None, by_type, None)
}

/// `superseded` none: all of them are.
fn purge_of(
    filter: PurgeFilter,
    cut: Option<DateTime<Utc>>,
    by_type: &[(&str, &str, i64)],
    superseded: Option<i64>,
) -> Choice {
    let count = by_type.iter().map(|t| t.2).sum();
    let token = serde_json::from_value(serde_json::json!({
        "filter": filter,
        "cut": cut,
        "snapshot": "1000:1000:",
        "count": count,
    }))
    .expect("a purge token");
    Choice {
        what: filter.describe(),
        count,
        by_type: type_counts(by_type),
        superseded: Some(superseded.unwrap_or(count)),
        bound: Bound::Purge(token),
    }
}

fn type_counts(by_type: &[(&str, &str, i64)]) -> Vec<TypeCount> {
    by_type
        .iter()
        .map(|&(source, event_type, count)| TypeCount {
            source: source.into(),
            event_type: event_type.into(),
            count,
        })
        .collect()
}

pub fn receipt(purged: u64) -> PurgeReceipt {
    PurgeReceipt {
        previewed: purged as i64,
        purged,
        skipped: 0,
        archive: Some("/var/lib/hookd/archive/dlq-purge-20261129T030000Z.ndjson.gz".into()),
        sha256: Some("9f2c".into()),
        filter: PurgeFilter::older_than(TimeDelta::days(7)).describe(),
    }
}

pub fn progress(id: i64, state: &str, error: Option<&str>) -> Progress {
    Progress {
        id,
        event_type: "invoice.payment_failed".into(),
        state: state.into(),
        last_error: error.map(str::to_owned),
    }
}
