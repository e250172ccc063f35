//! `hookd send`: signs and posts a realistic sample event to a running hookd, like
//! `stripe trigger`, so a newcomer can watch one go through.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{SecondsFormat, Utc};
use common::Source;
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};

use crate::config::Sources;
use crate::verify::{standard, stripe, telnyx};

#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Which provider to imitate: stripe, telnyx or custom.
    pub source: Source,
    /// The event type, e.g. customer.subscription.created, call.hangup, message.finalized.
    pub event_type: String,
    /// Base URL of the running hookd (default: http://$HOOKD_LISTEN).
    #[arg(long, env = "HOOKD_URL")]
    pub url: Option<String>,
    /// Provider event id to use; repeat one to see duplicate handling.
    #[arg(long)]
    pub id: Option<String>,
    /// Stripe customer the event is about.
    #[arg(long, default_value = "cus_hookd_demo")]
    pub customer: String,
    /// Telnyx call control id (send initiated, answered and hangup with the same one).
    #[arg(long)]
    pub call_id: Option<String>,
    /// Phone number of the business (the number called or texted).
    #[arg(long, default_value = "+15550100000")]
    pub business_number: String,
}

fn token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn uuid_like() -> String {
    let hex = hex::encode(rand::thread_rng().r#gen::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub fn stripe_event(args: &SendArgs, id: &str) -> Value {
    let now = Utc::now().timestamp();
    let object = if args.event_type.starts_with("customer.subscription.") {
        let status = if args.event_type.ends_with(".deleted") {
            "canceled"
        } else {
            "active"
        };
        json!({
            "id": "sub_1QhookdDemo",
            "object": "subscription",
            "customer": args.customer,
            "status": status,
            "start_date": now - 86_400,
            "current_period_start": now - 86_400,
            "current_period_end": now + 29 * 86_400,
            "cancel_at_period_end": false,
            "items": {"object": "list", "data": [{
                "id": "si_hookdDemo",
                "object": "subscription_item",
                "price": {"id": "price_hookd_pro_monthly", "object": "price", "currency": "usd",
                          "unit_amount": 4900, "recurring": {"interval": "month"},
                          "product": "prod_hookdPro"}
            }]},
            "livemode": false
        })
    } else if args.event_type.starts_with("invoice.") {
        let paid = args.event_type == "invoice.payment_succeeded";
        json!({
            "id": format!("in_{}", token(14)),
            "object": "invoice",
            "customer": args.customer,
            "amount_due": 4900,
            "amount_paid": if paid { 4900 } else { 0 },
            "currency": "usd",
            "status": if paid { "paid" } else { "open" },
            "billing_reason": "subscription_cycle",
            "attempt_count": 1,
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": "sub_1QhookdDemo"}},
            "status_transitions": {"paid_at": if paid { Value::from(now) } else { Value::Null }},
            "livemode": false
        })
    } else {
        json!({"id": format!("obj_{}", token(14)), "object": "unknown"})
    };
    json!({
        "id": id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": now,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": args.event_type,
    })
}

pub fn telnyx_event(args: &SendArgs, id: &str) -> Value {
    let now = Utc::now();
    let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let caller = "+15557654321";
    let payload = if args.event_type.starts_with("call.") {
        let call_id = args
            .call_id
            .clone()
            .unwrap_or_else(|| format!("v3:{}", token(22)));
        let mut payload = json!({
            "call_control_id": call_id,
            "call_leg_id": uuid_like(),
            "call_session_id": uuid_like(),
            "connection_id": "1494404757140276705",
            "client_state": null,
            "direction": "incoming",
            "from": caller,
            "to": args.business_number,
            "state": match args.event_type.as_str() {
                "call.initiated" => "parked",
                "call.answered" => "answered",
                _ => "hangup",
            },
        });
        if args.event_type == "call.hangup" {
            let start =
                (now - chrono::Duration::seconds(95)).to_rfc3339_opts(SecondsFormat::Millis, true);
            payload["start_time"] = json!(start);
            payload["end_time"] = json!(at);
            payload["hangup_cause"] = json!("normal_clearing");
            payload["hangup_source"] = json!("caller");
        }
        payload
    } else {
        let inbound = args.event_type == "message.received";
        let (from, to) = if inbound {
            (caller, args.business_number.as_str())
        } else {
            (args.business_number.as_str(), caller)
        };
        let status = match args.event_type.as_str() {
            "message.received" => "webhook_delivered",
            "message.sent" => "sent",
            _ => "delivered",
        };
        json!({
            "id": uuid_like(),
            "record_type": "message",
            "direction": if inbound { "inbound" } else { "outbound" },
            "type": "SMS",
            "messaging_profile_id": uuid_like(),
            "from": {"phone_number": from, "carrier": "Telnyx", "line_type": "Wireless"},
            "to": [{"phone_number": to, "status": status, "carrier": "T-Mobile USA",
                    "line_type": "Wireless"}],
            "text": "Hi! Is the shop open on Sunday?",
            "parts": 1,
            "encoding": "GSM-7",
            "sent_at": at,
            "completed_at": if args.event_type == "message.finalized" { json!(at) } else { Value::Null },
            "errors": [],
        })
    };
    json!({
        "data": {
            "record_type": "event",
            "event_type": args.event_type,
            "id": id,
            "occurred_at": at,
            "payload": payload,
        },
        "meta": {"attempt": 1, "delivered_to": "http://127.0.0.1/api/telnyx/webhook"},
    })
}

pub fn custom_event(args: &SendArgs) -> Value {
    json!({
        "type": args.event_type,
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        "data": {"actor": "hookd send", "note": "sample internal event"},
    })
}

fn required(sources: &Sources, name: &str) -> anyhow::Result<String> {
    sources.secret(name)?.with_context(|| {
        format!("{name} is not set; `hookd dev-secrets` prints development values")
    })
}

/// Builds, signs and posts one event; returns what hookd answered.
pub async fn send(args: &SendArgs, sources: &Sources) -> anyhow::Result<String> {
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!(
            "http://{}",
            sources
                .get("HOOKD_LISTEN")?
                .unwrap_or("127.0.0.1:8080".into())
        ),
    };
    let client = reqwest::Client::new();
    let now = Utc::now().timestamp();
    let request = match args.source {
        Source::Stripe => {
            let secret = required(sources, "STRIPE_WEBHOOK_SECRET")?;
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| format!("evt_{}", token(24)));
            let body = serde_json::to_vec(&stripe_event(args, &id))?;
            client
                .post(format!("{base}/api/stripe/webhook"))
                .header(stripe::HEADER, stripe::sign(secret.as_bytes(), now, &body))
                .body(body)
        }
        Source::Telnyx => {
            let seed = required(sources, "TELNYX_SIGNING_KEY")?;
            let seed: [u8; 32] = BASE64
                .decode(seed.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("TELNYX_SIGNING_KEY must be a base64 32-byte Ed25519 seed")?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let id = args.id.clone().unwrap_or_else(uuid_like);
            let body = serde_json::to_vec(&telnyx_event(args, &id))?;
            client
                .post(format!("{base}/api/telnyx/webhook"))
                .header(telnyx::SIGNATURE_HEADER, telnyx::sign(&key, now, &body))
                .header(telnyx::TIMESTAMP_HEADER, now.to_string())
                .body(body)
        }
        Source::Custom => {
            let secret: standard::Secret = required(sources, "CUSTOM_WEBHOOK_SECRET")?
                .trim()
                .parse()
                .map_err(|e: String| anyhow::anyhow!("CUSTOM_WEBHOOK_SECRET is invalid: {e}"))?;
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| format!("msg_{}", token(24)));
            let body = serde_json::to_vec(&custom_event(args))?;
            client
                .post(format!("{base}/api/custom/webhook"))
                .header(standard::ID_HEADER, &id)
                .header(standard::TIMESTAMP_HEADER, now.to_string())
                .header(
                    standard::SIGNATURE_HEADER,
                    standard::sign(&secret, &id, now, &body),
                )
                .body(body)
        }
    };
    let response = request
        .header("content-type", "application/json")
        .send()
        .await
        .with_context(|| format!("cannot reach hookd at {base}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("hookd answered {status}: {text}");
    }
    Ok(format!("{status} {text}"))
}

/// Fresh random secrets for a development setup, as shell `export` lines.
pub fn dev_secrets() -> String {
    let mut rng = rand::thread_rng();
    let signing = ed25519_dalek::SigningKey::generate(&mut rng);
    let public = telnyx::PublicKey::from_signing_key(&signing);
    format!(
        "export STRIPE_WEBHOOK_SECRET=whsec_{stripe}\n\
         export TELNYX_PUBLIC_KEY={public}\n\
         export TELNYX_SIGNING_KEY={seed}\n\
         export CUSTOM_WEBHOOK_SECRET={custom}\n\
         export HOOKD_FORWARD_SECRET={forward}\n\
         export HOOKD_ADMIN_TOKEN={admin}\n",
        stripe = token(32),
        public = public.to_base64(),
        seed = BASE64.encode(signing.to_bytes()),
        custom = standard::Secret::generate().to_whsec(),
        forward = standard::Secret::generate().to_whsec(),
        admin = token(40),
    )
}
