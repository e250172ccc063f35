//! Internal events: every one is kept in `audit_logs`, under its own type as the action.

use std::borrow::Cow;

use common::Source;
use common::db::batch::Audit;
use common::db::business::{self, AuditEntry, Statements};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::PgConnection;

use super::fields::{self, Key};
use super::{Effect, Event};

/// What the handler reads of an internal event: its `data`, kept whole in the entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    data: Option<Box<RawValue>>,
}

/// What the handler reads inside `data`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Data {
    business_id: Key,
}

#[derive(Serialize)]
struct Details<'a> {
    webhook_id: &'a str,
    data: Option<&'a RawValue>,
}

pub fn plan<'e>(event: &'e Event, payload: &'e Payload) -> Effect<'e> {
    // A sender may name the business the event concerns (by its key, a number or a uuid);
    // anything else is not ours to judge.
    let key = payload
        .data
        .as_ref()
        .and_then(|data| fields::read::<Data>(data.get().as_bytes()).business_id.0)
        .map(Cow::Owned);
    let details = Details {
        webhook_id: &event.event_id,
        data: payload.data.as_deref(),
    };
    Effect::Audit(Audit {
        action: &event.event_type,
        details: serde_json::value::to_raw_value(&details)
            .expect("a string and a JSON value serialize"),
        customer: None,
        subscription: None,
        key,
        webhook_id: event.id,
        source: Source::Custom,
    })
}

pub async fn apply_one(
    conn: &mut PgConnection,
    statements: &Statements,
    audit: &Audit<'_>,
) -> sqlx::Result<()> {
    business::insert_audit(
        conn,
        statements,
        &AuditEntry {
            action: audit.action,
            details: &audit.details,
            business: audit.business(),
            webhook_id: audit.webhook_id,
            source: audit.source,
        },
    )
    .await
}
