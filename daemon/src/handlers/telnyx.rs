//! Telnyx: call control events into `call_logs`, messaging events into `sms_logs`, as the
//! runbook's handlers write them.

use std::borrow::Cow;

use common::db::business::{CallEvent, MessageEvent};
use common::db::events::ClaimedEvent;

use super::{Effect, Fields, HandlerError};

pub fn plan(event: &ClaimedEvent) -> Result<Effect<'_>, HandlerError> {
    let fields = Fields(&event.payload);
    match event.event_type.as_str() {
        "call.initiated" | "call.answered" | "call.hangup" => {
            call(&fields, &event.event_type).map(Effect::Call)
        }
        "message.received" | "message.sent" | "message.finalized" => {
            message(&fields, &event.event_type).map(Effect::Message)
        }
        _ => Ok(Effect::Unhandled),
    }
}

/// The business the payload names, as the runbook's handlers read it: `payload.business_id`,
/// a number or a string (a uuid, say).
fn business_key<'a>(fields: &Fields<'a>) -> Option<Cow<'a, str>> {
    match fields.0.pointer("/data/payload/business_id")? {
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
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

fn call<'a>(fields: &Fields<'a>, kind: &str) -> Result<CallEvent<'a>, HandlerError> {
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
        business_key: business_key(fields),
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
    Ok(row)
}

fn message<'a>(fields: &Fields<'a>, kind: &str) -> Result<MessageEvent<'a>, HandlerError> {
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
    Ok(MessageEvent {
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
        business_key: business_key(fields),
    })
}
