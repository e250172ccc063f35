//! Telnyx: call control events into `call_logs`, messaging events into `sms_logs`, as the
//! runbook's handlers write them.

use common::db::business::{self, CallEvent, MessageEvent, Statements};
use common::db::events::ClaimedEvent;
use sqlx::PgConnection;

use super::{Fields, HandlerError, Outcome};

pub async fn apply(
    conn: &mut PgConnection,
    statements: &Statements,
    event: &ClaimedEvent,
) -> Result<Outcome, HandlerError> {
    let fields = Fields(&event.payload);
    match event.event_type.as_str() {
        "call.initiated" | "call.answered" | "call.hangup" => {
            call(conn, statements, &fields, &event.event_type).await
        }
        "message.received" | "message.sent" | "message.finalized" => {
            message(conn, statements, &fields, &event.event_type).await
        }
        _ => Ok(Outcome::Unhandled),
    }
}

/// The business the payload names, as the runbook's handlers read it: `payload.business_id`,
/// a number or a string (a uuid, say).
fn business_key(fields: &Fields<'_>) -> Option<String> {
    match fields.0.pointer("/data/payload/business_id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The customer's number and the business's: an inbound call or message comes from the
/// customer to the business, an outbound one the other way.
fn customer_and_business<'a>(
    inbound: bool,
    from: Option<&'a str>,
    to: Option<&'a str>,
) -> (Option<&'a str>, Option<&'a str>) {
    if inbound { (from, to) } else { (to, from) }
}

async fn call(
    conn: &mut PgConnection,
    statements: &Statements,
    fields: &Fields<'_>,
    kind: &str,
) -> Result<Outcome, HandlerError> {
    let occurred_at = fields.opt_rfc3339("/data/occurred_at");
    // Telnyx says `incoming` or `outgoing`; the runbook's `call_type` is `inbound` or
    // `outbound`. Only `call.initiated` is sure to carry it.
    let call_type = match fields.opt_str("/data/payload/direction") {
        Some("outgoing") => Some("outbound"),
        Some(_) => Some("inbound"),
        None => None,
    };
    let (customer_phone, business_phone) = customer_and_business(
        call_type != Some("outbound"),
        fields.opt_str("/data/payload/from"),
        fields.opt_str("/data/payload/to"),
    );
    let key = business_key(fields);
    let mut row = CallEvent {
        call_id: fields.str("/data/payload/call_control_id")?,
        customer_phone,
        business_phone,
        call_type,
        status: "",
        started_at: fields.opt_rfc3339("/data/payload/start_time"),
        answered_at: None,
        ended_at: None,
        hangup_cause: None,
        business_key: key.as_deref(),
    };
    match kind {
        "call.initiated" => {
            row.status = "initiated";
            row.started_at = row.started_at.or(occurred_at);
        }
        "call.answered" => {
            row.status = "answered";
            row.answered_at = occurred_at;
        }
        _ => {
            row.status = "completed";
            row.ended_at = fields.opt_rfc3339("/data/payload/end_time").or(occurred_at);
            row.hangup_cause = fields.opt_str("/data/payload/hangup_cause");
        }
    }
    business::upsert_call(conn, statements, &row).await?;
    Ok(Outcome::Applied)
}

async fn message(
    conn: &mut PgConnection,
    statements: &Statements,
    fields: &Fields<'_>,
    kind: &str,
) -> Result<Outcome, HandlerError> {
    let message_type = fields.opt_str("/data/payload/direction");
    let (customer_phone, business_phone) = customer_and_business(
        message_type != Some("outbound"),
        fields.opt_str("/data/payload/from/phone_number"),
        fields.opt_str("/data/payload/to/0/phone_number"),
    );
    let status = match kind {
        "message.received" => "received",
        "message.sent" => "sent",
        // The final word is the carrier's delivery status of the recipient.
        _ => fields
            .opt_str("/data/payload/to/0/status")
            .unwrap_or("finalized"),
    };
    let key = business_key(fields);
    let row = MessageEvent {
        message_id: fields.str("/data/payload/id")?,
        customer_phone,
        business_phone,
        message_type,
        content: fields.opt_str("/data/payload/text"),
        status,
        received_at: fields
            .opt_rfc3339("/data/payload/received_at")
            .or_else(|| fields.opt_rfc3339("/data/payload/sent_at"))
            .or_else(|| fields.opt_rfc3339("/data/occurred_at")),
        completed_at: fields.opt_rfc3339("/data/payload/completed_at"),
        business_key: key.as_deref(),
    };
    business::upsert_message(conn, statements, &row).await?;
    Ok(Outcome::Applied)
}
