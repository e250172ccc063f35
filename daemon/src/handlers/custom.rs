//! Internal events: every one is kept in `audit_logs`, under its own type as the action.

use common::Source;
use common::db::business::{self, AuditEntry, BusinessRef, Statements};
use common::db::events::ClaimedEvent;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::{HandlerError, Outcome};

pub async fn apply(
    conn: &mut PgConnection,
    statements: &Statements,
    event: &ClaimedEvent,
) -> Result<Outcome, HandlerError> {
    // A sender may name the business the event concerns (by its key, a number or a uuid);
    // anything else is not ours to judge.
    let key = match event.payload.pointer("/data/business_id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let details = json!({
        "webhook_id": event.event_id,
        "data": event.payload.get("data"),
    });
    business::insert_audit(
        conn,
        statements,
        &AuditEntry {
            action: &event.event_type,
            details: &details,
            business: key.as_deref().map_or(BusinessRef::None, BusinessRef::Key),
            webhook_id: event.id,
            source: Source::Custom,
        },
    )
    .await?;
    Ok(Outcome::Applied)
}
