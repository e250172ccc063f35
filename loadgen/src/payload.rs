//! Realistic, roughly 1 KB bodies for each source, signed the way each provider signs, with an
//! event id that is unique per run and per request.
//!
//! Bodies are formatted directly (no `serde_json::Value` in between): the load generator shares
//! the machine with hookd and PostgreSQL, so every microsecond it spends is taken from them.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use common::Source;
use hookd::config::Sources;
use hookd::providers::{Outgoing, Registry};

/// The businesses the payloads refer to: `cus_loadgen_K`, `sub_loadgen_K` and phone
/// `+1555030KKKK` for K in 0..count. `loadgen bench` seeds the same ones for the drain.
pub fn business_customer(k: u64) -> String {
    format!("cus_loadgen_{k}")
}

pub fn business_phone(k: u64) -> String {
    format!("+1555030{k:04}")
}

/// SQL creating the businesses (idempotent); `$1` is the count.
pub const SEED_BUSINESSES_SQL: &str = "
    INSERT INTO businesses (name, phone_number, stripe_customer_id, stripe_subscription_id,
                            subscription_status, subscription_plan)
    SELECT 'Loadgen Business ' || k, '+1555030' || lpad(k::text, 4, '0'), 'cus_loadgen_' || k,
           'sub_loadgen_' || k, 'active', 'price_hookd_pro_monthly'
    FROM generate_series(0, $1::int - 1) AS k
    ON CONFLICT DO NOTHING";

/// The providers loadgen signs as, from the secrets as hookd's environment names them (the
/// Telnyx one is the private seed): hookd's own providers sign, so loadgen sends exactly
/// what they would.
pub struct Keys {
    providers: Registry,
}

impl Keys {
    pub fn new(
        stripe: Option<&str>,
        telnyx_seed: Option<&str>,
        custom: Option<&str>,
    ) -> anyhow::Result<Self> {
        let env = [
            ("STRIPE_WEBHOOK_SECRET", stripe),
            ("TELNYX_SIGNING_KEY", telnyx_seed),
            ("CUSTOM_WEBHOOK_SECRET", custom),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?.to_owned())))
        .collect();
        let providers = Registry::load(&Sources::new(env)?)?;
        Ok(Keys { providers })
    }

    pub fn check(&self, sources: &[Source]) -> anyhow::Result<()> {
        for source in sources {
            if self.providers.get(*source).is_none() {
                let name = match *source {
                    Source::Telnyx => "TELNYX_SIGNING_KEY".to_owned(),
                    other => format!("{}_WEBHOOK_SECRET", other.as_str().to_ascii_uppercase()),
                };
                bail!("the mix sends {source} events but {name} is not set");
            }
        }
        Ok(())
    }
}

/// `stripe=1,telnyx=2,custom=1`: request i goes to `pattern[i % len]`.
pub fn parse_mix(text: &str) -> anyhow::Result<Vec<Source>> {
    let mut pattern = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
        // The payloads here exercise the built-in handlers, so the mix is of those sources.
        let source = Source::ALL
            .into_iter()
            .find(|s| s.as_str() == name.trim())
            .ok_or_else(|| anyhow::anyhow!("unknown source {name:?} in --mix"))?;
        let weight: usize = weight
            .trim()
            .parse()
            .with_context(|| format!("weight of {name} in --mix"))?;
        if weight > 100 {
            bail!("weights in --mix are at most 100");
        }
        pattern.extend(std::iter::repeat_n(source, weight));
    }
    if pattern.is_empty() {
        bail!("--mix selects no source");
    }
    // Interleave so a 1:1:1 mix alternates rather than sending runs of one source.
    let mut interleaved = Vec::with_capacity(pattern.len());
    let mut buckets: Vec<Vec<Source>> = Source::ALL
        .iter()
        .map(|s| pattern.iter().copied().filter(|p| p == s).collect())
        .collect();
    while buckets.iter().any(|b| !b.is_empty()) {
        for bucket in &mut buckets {
            if let Some(s) = bucket.pop() {
                interleaved.push(s);
            }
        }
    }
    Ok(interleaved)
}

/// Unique ids for this run: a run tag and the request's index.
#[derive(Debug, Clone)]
pub struct Ids {
    tag: String,
}

impl Ids {
    pub fn new() -> Self {
        let ms = chrono::Utc::now().timestamp_millis() as u64;
        let noise: u16 = rand::random();
        Ids {
            tag: format!("{:010x}{:04x}", ms & 0xff_ffff_ffff, noise),
        }
    }

    /// The provider event id hookd keys request `i` by.
    pub fn event_id(&self, source: Source, i: u64) -> String {
        match source {
            Source::Stripe => format!("evt_lg{}x{i:010}", self.tag),
            // Telnyx ids are UUIDs; this one is UUID-shaped and unique.
            Source::Telnyx => {
                let t = &self.tag;
                format!("{}-{}-4{}0-8000-{i:012x}", &t[..8], &t[8..12], &t[12..14])
            }
            Source::Custom => format!("msg_lg{}x{i:010}", self.tag),
            _ => unreachable!("parse_mix admits only the sources with payloads here"),
        }
    }
}

/// One request ready to send.
pub struct Signed {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct Generator {
    pub keys: Keys,
    pub ids: Ids,
    pub businesses: u64,
    /// Database ids of the businesses, by K, when known (custom events name one).
    pub business_ids: Vec<i64>,
}

const CALL_STAGES: [&str; 3] = ["call.initiated", "call.answered", "call.hangup"];
const CUSTOM_TYPES: [&str; 4] = [
    "order.created",
    "order.fulfilled",
    "appointment.booked",
    "review.posted",
];

impl Generator {
    /// Request `i`'s provider event id, event type and body.
    pub fn body(&self, source: Source, i: u64, now: i64) -> (String, &'static str, String) {
        let id = self.ids.event_id(source, i);
        let k = i % self.businesses.max(1);
        match source {
            Source::Stripe => {
                let body = stripe_invoice(&id, i, k, now);
                (id, "invoice.payment_succeeded", body)
            }
            Source::Telnyx => {
                let body = telnyx_call(&id, &self.ids.tag, i, k, now);
                (id, CALL_STAGES[(i % 3) as usize], body)
            }
            Source::Custom => {
                let business = self.business_ids.get(k as usize).copied();
                let kind = CUSTOM_TYPES[(i % CUSTOM_TYPES.len() as u64) as usize];
                (id, kind, custom_event(i, business, now))
            }
            _ => unreachable!("parse_mix admits only the sources with payloads here"),
        }
    }

    /// Request `i`, signed at `now` as its provider would.
    pub fn request(&self, source: Source, i: u64, now: i64) -> Signed {
        let (key, event_type, body) = self.body(source, i, now);
        let event = Outgoing {
            key,
            event_type: event_type.to_owned(),
            body: body.into_bytes(),
        };
        let provider = self.keys.providers.get(source).expect("checked");
        let headers = provider.sign(&event, now).expect("checked");
        Signed {
            path: format!("/api/{source}/webhook"),
            headers,
            body: event.body,
        }
    }
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `invoice.payment_succeeded` for business K: the handler locks and updates that business.
pub fn stripe_invoice(id: &str, i: u64, k: u64, now: i64) -> String {
    let customer = business_customer(k);
    let period_start = now - 30 * 86_400;
    let mut s = String::with_capacity(1_400);
    let _ = write!(
        s,
        concat!(
            r#"{{"id":"{id}","object":"event","api_version":"2025-03-31.basil","created":{now},"#,
            r#""data":{{"object":{{"id":"in_lg{i:014}","object":"invoice","account_country":"US","#,
            r#""account_name":"Hookd Bench Inc.","amount_due":4900,"amount_paid":4900,"amount_remaining":0,"#,
            r#""attempt_count":1,"attempted":true,"billing_reason":"subscription_cycle","#,
            r#""collection_method":"charge_automatically","created":{now},"currency":"usd","#,
            r#""customer":"{customer}","customer_email":"owner+{k}@example.com","#,
            r#""customer_name":"Loadgen Business {k}","#,
            r#""hosted_invoice_url":"https://invoice.stripe.com/i/acct_1HookdBench/test_{i:020}","#,
            r#""lines":{{"object":"list","data":[{{"id":"il_lg{i:014}","object":"line_item","amount":4900,"#,
            r#""currency":"usd","description":"1 × Pro (at $49.00 / month)","#,
            r#""period":{{"start":{period_start},"end":{now}}},"quantity":1}}],"has_more":false,"total_count":1}},"#,
            r#""number":"LG-{i:08}","paid":true,"#,
            r#""parent":{{"type":"subscription_details","subscription_details":{{"subscription":"sub_loadgen_{k}"}}}},"#,
            r#""period_end":{now},"period_start":{period_start},"status":"paid","#,
            r#""status_transitions":{{"finalized_at":{now},"paid_at":{now}}},"#,
            r#""subtotal":4900,"total":4900,"livemode":false}}}},"#,
            r#""livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"#,
            r#""type":"invoice.payment_succeeded"}}"#
        ),
        id = id,
        now = now,
        i = i,
        k = k,
        customer = customer,
        period_start = period_start,
    );
    s
}

/// A `call.*` event with a call control id of its own, to business K's number.
pub fn telnyx_call(id: &str, tag: &str, i: u64, k: u64, now: i64) -> String {
    let kind = CALL_STAGES[(i % 3) as usize];
    let at = rfc3339(now);
    let to = business_phone(k);
    let state = match kind {
        "call.initiated" => "parked",
        "call.answered" => "answered",
        _ => "hangup",
    };
    let mut s = String::with_capacity(1_200);
    let _ = write!(
        s,
        concat!(
            r#"{{"data":{{"record_type":"event","event_type":"{kind}","id":"{id}","occurred_at":"{at}","#,
            r#""payload":{{"call_control_id":"v3:lg{tag}_{i:012}_aW5ib3VuZC1jYWxsLWNvbnRyb2wtaWQ","#,
            r#""call_leg_id":"{tag}-leg-{i:012}","call_session_id":"{tag}-session-{i:012}","#,
            r#""connection_id":"1494404757140276705","client_state":null,"#,
            r#""caller_id_name":"Bench Caller","direction":"incoming","from":"+15557654321","#,
            r#""to":"{to}","state":"{state}","#,
            r#""custom_headers":[{{"name":"X-Bench-Run","value":"{tag}"}}],"#,
            r#""sip_headers":[{{"name":"User-Agent","value":"Telnyx SIP 2.0"}},{{"name":"P-Asserted-Identity","value":"<sip:+15557654321@sip.telnyx.com>"}}]"#
        ),
        kind = kind,
        id = id,
        at = at,
        tag = tag,
        i = i,
        to = to,
        state = state,
    );
    if kind == "call.hangup" {
        let _ = write!(
            s,
            r#","start_time":"{}","end_time":"{at}","hangup_cause":"normal_clearing","hangup_source":"caller","sip_hangup_cause":"200","call_quality_stats":{{"inbound":{{"jitter_max_variance":"0.52","mos":"4.45","packet_count":"4750"}},"outbound":{{"packet_count":"4742","skip_packet_count":"0"}}}}"#,
            rfc3339(now - 95)
        );
    } else {
        s.push_str(r#","start_time":null,"tags":["bench","loadgen"],"from_sip_uri":"sip:+15557654321@sip.telnyx.com","to_sip_uri":"sip:+15550300000@sip.telnyx.com","media_encryption":"disabled""#);
    }
    s.push_str(r#"}},"meta":{"attempt":1,"delivered_to":"http://127.0.0.1/api/telnyx/webhook"}}"#);
    s
}

/// An internal event naming a business (when its database id is known).
pub fn custom_event(i: u64, business_id: Option<i64>, now: i64) -> String {
    let kind = CUSTOM_TYPES[(i % CUSTOM_TYPES.len() as u64) as usize];
    let business = business_id.map_or_else(|| "null".to_owned(), |id| id.to_string());
    let mut s = String::with_capacity(1_100);
    let _ = write!(
        s,
        concat!(
            r#"{{"type":"{kind}","timestamp":"{at}","data":{{"business_id":{business},"#,
            r#""order_id":"ord_{i:012}","channel":"web","currency":"usd","total_cents":{total},"#,
            r#""customer":{{"id":"cust_{i:010}","email":"customer{i}@example.com","name":"Bench Customer","#,
            r#""phone":"+15557654321","marketing_opt_in":false}},"#,
            r#""items":[{{"sku":"SKU-CUT-001","name":"Haircut","quantity":1,"unit_cents":3500}},"#,
            r#"{{"sku":"SKU-WASH-002","name":"Wash and style","quantity":1,"unit_cents":2000}},"#,
            r#"{{"sku":"SKU-TIP-000","name":"Tip","quantity":1,"unit_cents":{tip}}}],"#,
            r#""shipping":{{"method":"in_store","address":{{"line1":"1 Bench Street","city":"Springfield","#,
            r#""postal_code":"12345","country":"US"}}}},"#,
            r#""notes":"Customer asked for the 3 pm slot; confirm by SMS the day before.","#,
            r#""staff":{{"id":"stf_0042","name":"Alex Example","role":"stylist"}},"#,
            r#""location":{{"id":"loc_main","timezone":"America/New_York"}},"#,
            r#""tags":["returning","sms-reminder","web-booking"],"#,
            r#""metadata":{{"source":"hookd-loadgen","request_index":{i},"schema":"v2"}}}}}}"#
        ),
        kind = kind,
        at = rfc3339(now),
        business = business,
        i = i,
        total = 5_500 + (i % 1_000),
        tip = i % 1_000,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_of_about_a_kilobyte() {
        let now = 1_800_000_000;
        for (body, min) in [
            (stripe_invoice("evt_x", 7, 3, now), 900),
            (telnyx_call("id", "tag0123456789", 0, 3, now), 900),
            (telnyx_call("id", "tag0123456789", 2, 3, now), 900),
            (custom_event(5, Some(9), now), 900),
            (custom_event(5, None, now), 900),
        ] {
            let value: serde_json::Value = serde_json::from_str(&body).expect(&body);
            assert!(value.is_object());
            eprintln!("{} bytes", body.len());
            assert!(
                (min..1_600).contains(&body.len()),
                "{} bytes: {body}",
                body.len()
            );
        }
    }

    #[test]
    fn ids_are_unique_and_mix_interleaves() {
        let ids = Ids::new();
        for s in Source::ALL {
            assert_ne!(ids.event_id(s, 1), ids.event_id(s, 2));
        }
        let mix = parse_mix("stripe=1,telnyx=1,custom=1").unwrap();
        assert_eq!(mix.len(), 3);
        assert!(parse_mix("bogus=1").is_err());
        assert_eq!(parse_mix("custom").unwrap(), vec![Source::Custom]);
    }
}
