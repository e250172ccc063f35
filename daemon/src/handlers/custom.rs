//! Internal events: every one is kept in `audit_logs`, under its own type as the action.

use std::borrow::Cow;

use common::Source;
use common::db::batch::Audit;
use common::db::business::{self, AuditEntry, Statements};
use common::db::events::ClaimedEvent;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::Effect;

pub fn plan(event: &ClaimedEvent) -> Effect<'_> {
    // A sender may name the business the event concerns (by its key, a number or a uuid);
    // anything else is not ours to judge.
    let key = match event.payload.pointer("/data/business_id") {
        Some(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
        Some(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
        _ => None,
    };
    Effect::Audit(Audit {
        action: &event.event_type,
        details: json!({
            "webhook_id": event.event_id,
            "data": event.payload.get("data"),
        }),
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
