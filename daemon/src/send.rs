//! `hookd send`: signs and posts a realistic sample event to a running hookd, like
//! `stripe trigger`, so a newcomer can watch one go through.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use common::Source;

use crate::config::Sources;
use crate::providers::{Registry, SampleArgs, token};
use crate::verify::{standard, telnyx};

#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Which provider to imitate: stripe, telnyx, custom, github, shopify or one of yours.
    pub source: String,
    /// The event type, e.g. customer.subscription.created, call.hangup, message.finalized, ping.
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
    let registry = Registry::load(sources)?;
    let source: Source = args.source.parse()?;
    let provider = registry.get(source).with_context(|| {
        format!(
            "{source} has no secret set, so hookd cannot sign as it; \
             `hookd dev-secrets` prints development values"
        )
    })?;
    let event = provider.sample(
        &args.event_type,
        &SampleArgs {
            id: args.id.clone().unwrap_or_default(),
            customer: args.customer.clone(),
            call_id: args.call_id.clone().unwrap_or_default(),
            business_number: args.business_number.clone(),
        },
    );
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/{source}/webhook"))
        .header("content-type", "application/json");
    for (name, value) in provider.sign(&event, Utc::now().timestamp())? {
        request = request.header(name, value);
    }
    let response = request
        .body(event.body)
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
