//! Internal events: every one is kept in `audit_logs`.

use common::Source;
use common::db::business;
use common::db::events::ClaimedEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::{HandlerError, Outcome};

pub async fn apply(conn: &mut PgConnection, event: &ClaimedEvent) -> Result<Outcome, HandlerError> {
    // A sender may name the business the event concerns; anything else is not ours to judge.
    let business_id = event
        .payload
        .pointer("/data/business_id")
        .and_then(|v| v.as_i64());
    let details = json!({
        "webhook_id": event.event_id,
        "data": event.payload.get("data"),
    });
    business::insert_audit(
        conn,
        business_id,
        event.id,
        Source::Custom,
        &event.event_type,
        &details,
    )
    .await?;
    Ok(Outcome::Applied)
}
