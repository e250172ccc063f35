//! Telnyx: call control events into `call_logs`, messaging events into `sms_logs`, as the
//! runbook's handlers write them.

use std::borrow::Cow;

use common::db::business::{CallEvent, MessageEvent};
use serde::Deserialize;
use serde::de::{MapAccess, SeqAccess};

use super::fields::{self, Key, Lenient, Obj, Text, deserialize_leniently};
use super::{Effect, Event, HandlerError, required, rfc3339};

/// What the handlers read of a Telnyx event.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    data: Obj<Data>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Data {
    occurred_at: Text,
    payload: Obj<Fields>,
}

/// `data.payload`: a call's or a message's.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Fields {
    id: Text,
    call_control_id: Text,
    direction: Text,
    from: Party,
    to: Party,
    start_time: Text,
    end_time: Text,
    hangup_cause: Text,
    text: Text,
    received_at: Text,
    sent_at: Text,
    completed_at: Text,
    business_id: Key,
}

/// `from` or `to`: a number in call events; in message events `from` is an object and `to` a
/// list of them, each with its carrier's delivery `status`.
#[derive(Debug, Default)]
struct Party {
    number: Option<String>,
    object: Contact,
    first: Contact,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Contact {
    phone_number: Text,
    status: Text,
}

impl Lenient for Party {
    fn from_text(s: &str) -> Self {
        Party {
            number: Some(s.to_owned()),
            ..Party::default()
        }
    }
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        Ok(Party {
            object: Obj::from_map(map)?.0,
            ..Party::default()
        })
    }
    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        Ok(Party {
            first: fields::First::from_seq(seq)?.0,
            ..Party::default()
        })
    }
}

deserialize_leniently!(Party);

impl Payload {
    fn fields(&self) -> &Fields {
        &self.data.0.payload.0
    }

    /// The row the event locks: its call's, else its message's.
    pub fn row_key(&self) -> Option<&str> {
        let fields = self.fields();
        fields
            .call_control_id
            .0
            .as_deref()
            .or(fields.id.0.as_deref())
    }
}

fn text(field: &Text) -> Option<&str> {
    field.0.as_deref()
}

pub fn plan<'e>(event: &'e Event, payload: &'e Payload) -> Result<Effect<'e>, HandlerError> {
    match event.event_type.as_str() {
        "call.initiated" | "call.answered" | "call.hangup" => {
            call(payload, &event.event_type).map(Effect::Call)
        }
        "message.received" | "message.sent" | "message.finalized" => {
            message(payload, &event.event_type).map(Effect::Message)
        }
        _ => Ok(Effect::Unhandled),
    }
}

/// The business the payload names, as the runbook's handlers read it: `payload.business_id`,
/// a number or a string (a uuid, say).
fn business_key(fields: &Fields) -> Option<Cow<'_, str>> {
    fields.business_id.0.as_deref().map(Cow::Borrowed)
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

fn call<'a>(payload: &'a Payload, kind: &str) -> Result<CallEvent<'a>, HandlerError> {
    let fields = payload.fields();
    let occurred_at = rfc3339(text(&payload.data.0.occurred_at));
    // Telnyx says `incoming` or `outgoing`; the runbook's `call_type` is `inbound` or
    // `outbound`. Only `call.initiated` is sure to carry it.
    let call_type = match text(&fields.direction) {
        Some("outgoing") => Some("outbound"),
        Some(_) => Some("inbound"),
        None => None,
    };
    let (customer_phone, business_phone) = customer_and_business(
        call_type != Some("outbound"),
        fields.from.number.as_deref(),
        fields.to.number.as_deref(),
    );
    let mut row = CallEvent {
        call_id: required(
            text(&fields.call_control_id),
            "/data/payload/call_control_id",
        )?,
        customer_phone,
        business_phone,
        call_type,
        status: "",
        started_at: rfc3339(text(&fields.start_time)),
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
            row.ended_at = rfc3339(text(&fields.end_time)).or(occurred_at);
            row.hangup_cause = text(&fields.hangup_cause);
        }
    }
    Ok(row)
}

fn message<'a>(payload: &'a Payload, kind: &str) -> Result<MessageEvent<'a>, HandlerError> {
    let fields = payload.fields();
    let message_type = text(&fields.direction);
    let recipient = &fields.to.first;
    let (customer_phone, business_phone) = customer_and_business(
        message_type != Some("outbound"),
        text(&fields.from.object.phone_number),
        text(&recipient.phone_number),
    );
    let status = match kind {
        "message.received" => "received",
        "message.sent" => "sent",
        // The final word is the carrier's delivery status of the recipient.
        _ => text(&recipient.status).unwrap_or("finalized"),
    };
    Ok(MessageEvent {
        message_id: required(text(&fields.id), "/data/payload/id")?,
        customer_phone,
        business_phone,
        message_type,
        content: text(&fields.text),
        status,
        received_at: rfc3339(text(&fields.received_at))
            .or_else(|| rfc3339(text(&fields.sent_at)))
            .or_else(|| rfc3339(text(&payload.data.0.occurred_at))),
        completed_at: rfc3339(text(&fields.completed_at)),
        business_key: business_key(fields),
    })
}
