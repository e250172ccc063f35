//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` keyed by
//! `GITHUB_WEBHOOK_SECRET`; the delivery id (`X-GitHub-Delivery`) is the idempotency key and
//! `X-GitHub-Event` the type (`ping`, sent when the hook is created, is stored like any other).
//! Configure the hook with content type `application/json`.

use std::sync::Arc;

use common::Source;
use serde_json::{Value, json};

use super::hmac::{Algorithm, Encoding, Hmac, Spec};
use super::{Field, Provider, SampleArgs};
use crate::config::{ConfigError, Sources};

pub fn load(sources: &Sources) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let Some(secret) = sources.secret("GITHUB_WEBHOOK_SECRET")? else {
        return Ok(None);
    };
    Ok(Some(Arc::new(Hmac::new(spec(), secret.into()))))
}

pub fn spec() -> Spec {
    Spec {
        source: Source::register("github").expect("a valid name"),
        header: "x-hub-signature-256",
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: "sha256=",
        key: Field::Header(&["x-github-delivery"]),
        event_type: Field::Header(&["x-github-event"]),
        timestamp: None,
        signed: "{body}",
        sample,
    }
}

fn sample(event_type: &str, _: &SampleArgs) -> Value {
    let repository = json!({"id": 1296269, "full_name": "octocat/Hello-World", "private": false});
    match event_type {
        "ping" => json!({
            "zen": "Keep it logically awesome.",
            "hook_id": 109948940,
            "hook": {"type": "Repository", "id": 109948940, "active": true,
                     "events": ["push", "pull_request"],
                     "config": {"content_type": "json", "insecure_ssl": "0"}},
            "repository": repository,
        }),
        _ => json!({
            "ref": "refs/heads/main",
            "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "76ae82c7b1a177c8d03f9e96e0adf2466113728f",
            "repository": repository,
            "pusher": {"name": "octocat"},
            "sender": {"login": "octocat", "id": 1},
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Outgoing, header_map};
    use super::*;

    /// GitHub's documentation publishes this one ("Validating webhook deliveries").
    #[test]
    fn the_published_vector_verifies() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/vectors/signatures.json")).unwrap();
        let vector = &vectors["github"][0];
        let github = Hmac::new(spec(), vector["secret"].as_str().unwrap().to_owned().into());
        let headers = header_map(&[(
            "x-hub-signature-256".into(),
            vector["header"].as_str().unwrap().into(),
        )]);
        assert_eq!(github.verify(&headers, b"Hello, World!", 0), Ok(()));
        assert!(github.verify(&headers, b"Hello, World?", 0).is_err());
        let event = Outgoing {
            key: "d1".into(),
            event_type: "ping".into(),
            body: b"Hello, World!".to_vec(),
        };
        let signed = header_map(&github.sign(&event, 0).unwrap());
        assert_eq!(
            signed["x-hub-signature-256"],
            headers["x-hub-signature-256"]
        );
        assert_eq!(signed["x-github-event"], "ping");
    }
}
