//! Telnyx: call control events into `call_logs`, messaging events into `sms_logs`.

use common::db::business::{self, CallEvent, MessageEvent};
use common::db::events::ClaimedEvent;
use sqlx::PgConnection;

use super::{Fields, HandlerError, Outcome};

pub async fn apply(conn: &mut PgConnection, event: &ClaimedEvent) -> Result<Outcome, HandlerError> {
    let fields = Fields(&event.payload);
    match event.event_type.as_str() {
        "call.initiated" | "call.answered" | "call.hangup" => {
            call(conn, &fields, &event.event_type).await
        }
        "message.received" | "message.sent" | "message.finalized" => {
            message(conn, &fields, &event.event_type).await
        }
        _ => Ok(Outcome::Unhandled),
    }
}

/// The number that names the business a call or message belongs to: the one it reached (or,
/// outbound, left from). A number that is not a business's is fine: the log row is kept
/// without one.
fn business_phone<'a>(
    inbound: bool,
    from: Option<&'a str>,
    to: Option<&'a str>,
) -> Option<&'a str> {
    if inbound { to } else { from }
}

async fn call(
    conn: &mut PgConnection,
    fields: &Fields<'_>,
    kind: &str,
) -> Result<Outcome, HandlerError> {
    let call_control_id = fields.str("/data/payload/call_control_id")?;
    let occurred_at = fields.opt_rfc3339("/data/occurred_at");
    let direction = fields.opt_str("/data/payload/direction");
    let from = fields.opt_str("/data/payload/from");
    let to = fields.opt_str("/data/payload/to");
    let mut row = CallEvent {
        call_control_id,
        business_phone: business_phone(direction != Some("outgoing"), from, to),
        direction,
        from_number: from,
        to_number: to,
        stage: 0,
        status: "",
        started_at: fields.opt_rfc3339("/data/payload/start_time"),
        answered_at: None,
        ended_at: None,
        hangup_cause: None,
    };
    match kind {
        "call.initiated" => {
            row.stage = 1;
            row.status = "initiated";
            row.started_at = row.started_at.or(occurred_at);
        }
        "call.answered" => {
            row.stage = 2;
            row.status = "answered";
            row.answered_at = occurred_at;
        }
        _ => {
            row.stage = 3;
            row.status = "completed";
            row.ended_at = fields.opt_rfc3339("/data/payload/end_time").or(occurred_at);
            row.hangup_cause = fields.opt_str("/data/payload/hangup_cause");
        }
    }
    business::upsert_call(conn, &row).await?;
    Ok(Outcome::Applied)
}

async fn message(
    conn: &mut PgConnection,
    fields: &Fields<'_>,
    kind: &str,
) -> Result<Outcome, HandlerError> {
    let message_id = fields.str("/data/payload/id")?;
    let direction = fields.opt_str("/data/payload/direction");
    let from = fields.opt_str("/data/payload/from/phone_number");
    let to = fields.opt_str("/data/payload/to/0/phone_number");
    let (stage, status) = match kind {
        "message.received" => (1, "received"),
        "message.sent" => (1, "sent"),
        // The final word is the carrier's delivery status of the recipient.
        _ => (
            2,
            fields
                .opt_str("/data/payload/to/0/status")
                .unwrap_or("finalized"),
        ),
    };
    let row = MessageEvent {
        message_id,
        business_phone: business_phone(direction != Some("outbound"), from, to),
        direction,
        from_number: from,
        to_number: to,
        body: fields.opt_str("/data/payload/text"),
        stage,
        status,
        sent_at: fields
            .opt_rfc3339("/data/payload/sent_at")
            .or_else(|| fields.opt_rfc3339("/data/payload/received_at")),
        completed_at: fields.opt_rfc3339("/data/payload/completed_at"),
    };
    business::upsert_message(conn, &row).await?;
    Ok(Outcome::Applied)
}
