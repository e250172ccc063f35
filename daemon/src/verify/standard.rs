//! Standard Webhooks v1 (<https://www.standardwebhooks.com/>), used by internal senders:
//! `webhook-signature` is a space-separated list of `v1,<base64>` entries, each an
//! HMAC-SHA256 of `"{webhook-id}.{webhook-timestamp}.{raw body}"` keyed by the decoded secret.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::Mac;
use rand::RngCore as _;
use secrecy::zeroize::Zeroize as _;

use super::{VerifyError, check_timestamp, hmac_sha256, parse_timestamp, required};

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

const PREFIX: &str = "whsec_";
const VERSION: &str = "v1";
/// Base64 length of a padded 32-byte HMAC-SHA256 tag.
const SIGNATURE_B64_LEN: usize = 44;

/// Decoded key. Its Debug does not print the key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The `whsec_<base64>` form senders are configured with (for printing dev secrets).
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", BASE64.encode(&self.0))
    }

    /// How many bytes the decoded key has, so configuration can refuse weak keys while
    /// verification keeps accepting any.
    pub fn key_len(&self) -> usize {
        self.0.len()
    }

    /// A fresh random 32-byte secret, for development setups.
    pub fn generate() -> Self {
        let mut key = vec![0; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardSecret(..)")
    }
}

impl Drop for Secret {
    // Don't leave the key in freed memory.
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let encoded = s.strip_prefix(PREFIX).unwrap_or(s);
        // The decode error is not included: it would quote a character of the secret.
        let key = BASE64
            .decode(encoded)
            .map_err(|_| "webhook secret is not valid base64 (expected whsec_<base64>)")?;
        if key.is_empty() {
            return Err("webhook secret is empty (expected whsec_<base64>)".to_owned());
        }
        Ok(Self(key))
    }
}

pub fn verify(
    secret: &Secret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let id = required(id, ID_HEADER)?;
    let timestamp = required(timestamp, TIMESTAMP_HEADER)?;
    let signature = required(signature, SIGNATURE_HEADER)?;
    let timestamp = parse_timestamp(timestamp, TIMESTAMP_HEADER)?;
    check_timestamp(timestamp, now)?;

    let v1_signatures = || {
        signature
            .split_ascii_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|&(version, _)| version == VERSION)
            .map(|(_, sig)| sig)
    };
    if v1_signatures().next().is_none() {
        return Err(VerifyError::NoSupportedSignature(SIGNATURE_HEADER));
    }

    let mac = signed_payload_mac(secret, id, timestamp, body);
    // Senders list one entry per active secret while rotating, so any v1 may match. Entries
    // of the wrong length (including an empty `v1,`) are skipped before decoding, and the
    // MAC is cloned rather than recomputed: work stays linear in the header size.
    let matched = v1_signatures()
        .filter(|sig| sig.len() == SIGNATURE_B64_LEN)
        .filter_map(|sig| BASE64.decode(sig).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// Returns one `webhook-signature` entry, `v1,<base64>`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = signed_payload_mac(secret, id, timestamp, body)
        .finalize()
        .into_bytes();
    format!("{VERSION},{}", BASE64.encode(tag))
}

fn signed_payload_mac(
    secret: &Secret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = hmac_sha256(&secret.0);
    // The reference libraries sign the timestamp as re-formatted from its parsed value.
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::TOLERANCE_SECS;

    // From /work/shared/vectors/signatures.json ("standard_webhooks_v1").
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const TS_STR: &str = "1649367553";
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn secret() -> Secret {
        SECRET.parse().unwrap()
    }

    fn check(signature: &str) -> Result<(), VerifyError> {
        verify(&secret(), Some(ID), Some(TS_STR), Some(signature), BODY, TS)
    }

    #[test]
    fn vector_is_valid_at_its_timestamp() {
        assert_eq!(check(SIG), Ok(()));
    }

    #[test]
    fn sign_reproduces_vector() {
        assert_eq!(sign(&secret(), ID, TS, BODY), SIG);
    }

    #[test]
    fn vector_valid_just_inside_tolerance() {
        for now in [TS + TOLERANCE_SECS, TS - TOLERANCE_SECS] {
            let got = verify(&secret(), Some(ID), Some(TS_STR), Some(SIG), BODY, now);
            assert_eq!(got, Ok(()));
        }
    }

    #[test]
    fn vector_stale_or_future_just_outside_tolerance() {
        for now in [TS + TOLERANCE_SECS + 1, TS - TOLERANCE_SECS - 1] {
            let got = verify(&secret(), Some(ID), Some(TS_STR), Some(SIG), BODY, now);
            assert_eq!(got, Err(VerifyError::StaleTimestamp));
        }
    }

    #[test]
    fn vector_list_with_match_not_first() {
        assert_eq!(check(&format!("v1,Zm9v {SIG}")), Ok(()));
        assert_eq!(check(&format!("v1,Zm9v v1, {SIG} v1,bad")), Ok(()));
        let old = sign(&Secret(b"old key".to_vec()), ID, TS, BODY);
        assert_eq!(check(&format!("{old} {SIG}")), Ok(()));
    }

    #[test]
    fn vector_empty_v1_alone_is_rejected() {
        assert_eq!(check("v1,"), Err(VerifyError::NoMatch));
        assert_eq!(check("v1, v1, v1,"), Err(VerifyError::NoMatch));
    }

    #[test]
    fn other_versions_are_ignored() {
        let v2 = SIG.replacen("v1,", "v2,", 1);
        assert_eq!(
            check(&v2),
            Err(VerifyError::NoSupportedSignature(SIGNATURE_HEADER))
        );
        assert_eq!(check(&format!("v1a,abc {v2} {SIG}")), Ok(()));
        assert_eq!(
            check("v1a,xyz"),
            Err(VerifyError::NoSupportedSignature(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn secret_without_prefix_is_accepted() {
        let bare: Secret = SECRET.strip_prefix("whsec_").unwrap().parse().unwrap();
        assert_eq!(bare.0, secret().0);
        let got = verify(&bare, Some(ID), Some(TS_STR), Some(SIG), BODY, TS);
        assert_eq!(got, Ok(()));
    }

    #[test]
    fn secret_round_trips_and_debug_hides_it() {
        assert_eq!(secret().to_whsec(), SECRET);
        assert_eq!(format!("{:?}", secret()), "StandardSecret(..)");
        let fresh = Secret::generate();
        assert_eq!(fresh.0.len(), 32);
        assert_eq!(fresh.to_whsec().parse::<Secret>().unwrap().0, fresh.0);
    }

    #[test]
    fn bad_secrets_are_rejected_without_quoting_them() {
        for bad in [
            "",
            "whsec_",
            "whsec_!!!!",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7o",
            "é",
        ] {
            let err = bad.parse::<Secret>().unwrap_err();
            assert!(err.contains("webhook secret"), "{bad:?}: {err}");
            assert!(!err.contains('!') && !err.contains('é'), "{err}");
        }
    }

    #[test]
    fn tampered_body_fails() {
        let tampered = br#"{"email":"test@example.com","username":"test_usr"}"#;
        let got = verify(&secret(), Some(ID), Some(TS_STR), Some(SIG), tampered, TS);
        assert_eq!(got, Err(VerifyError::NoMatch));
    }

    #[test]
    fn wrong_secret_fails() {
        let wrong: Secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oE".parse().unwrap();
        let got = verify(&wrong, Some(ID), Some(TS_STR), Some(SIG), BODY, TS);
        assert_eq!(got, Err(VerifyError::NoMatch));
    }

    #[test]
    fn wrong_id_or_timestamp_fails() {
        let got = verify(
            &secret(),
            Some("msg_other"),
            Some(TS_STR),
            Some(SIG),
            BODY,
            TS,
        );
        assert_eq!(got, Err(VerifyError::NoMatch));
        let next = (TS + 1).to_string();
        let got = verify(&secret(), Some(ID), Some(&next), Some(SIG), BODY, TS);
        assert_eq!(got, Err(VerifyError::NoMatch));
    }

    #[test]
    fn missing_headers() {
        let s = secret();
        for blank in [None, Some(""), Some(" ")] {
            assert_eq!(
                verify(&s, blank, Some(TS_STR), Some(SIG), BODY, TS),
                Err(VerifyError::MissingHeader(ID_HEADER))
            );
            assert_eq!(
                verify(&s, Some(ID), blank, Some(SIG), BODY, TS),
                Err(VerifyError::MissingHeader(TIMESTAMP_HEADER))
            );
            assert_eq!(
                verify(&s, Some(ID), Some(TS_STR), blank, BODY, TS),
                Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
            );
        }
    }

    #[test]
    fn non_numeric_timestamps_are_malformed() {
        for ts in [
            "abc",
            "-1649367553",
            "+1649367553",
            "1649367553.5",
            "1.6e9",
            "٣",
        ] {
            assert!(
                matches!(
                    verify(&secret(), Some(ID), Some(ts), Some(SIG), BODY, TS),
                    Err(VerifyError::MalformedHeader {
                        header: TIMESTAMP_HEADER,
                        ..
                    })
                ),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn bad_base64_signatures_never_match() {
        // Right length, wrong alphabet; unpadded; non-canonical trailing bits; URL-safe form.
        for sig in [
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3K!w=",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx=",
            "v1,tZ1I4_hDygAJgO5TYxiSd6Sd0kDW6hPenDe-bTa3Kkw=",
            "v1,ééé",
        ] {
            assert_eq!(check(sig), Err(VerifyError::NoMatch), "{sig:?}");
        }
    }

    #[test]
    fn garbage_headers_are_rejected_without_panic() {
        for sig in [
            ",",
            ",,,",
            "v1",
            "v1 v1 v1",
            "\u{0}",
            "ééé,ééé",
            "v1,,,,",
            "v1,\u{feff}",
        ] {
            assert!(check(sig).is_err(), "{sig:?}");
        }
        let huge_ts = "9".repeat(1 << 16);
        assert!(verify(&secret(), Some(ID), Some(&huge_ts), Some(SIG), BODY, TS).is_err());
        let max_ts = i64::MAX.to_string();
        assert_eq!(
            verify(&secret(), Some(ID), Some(&max_ts), Some(SIG), BODY, TS),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        assert!(check(&"x".repeat(1 << 20)).is_err());

        // Many well-formed but wrong entries, then the right one: still found.
        let wrong = format!("v1,{}", "A".repeat(43) + "=");
        let mut header = vec![wrong.as_str(); 10_000].join(" ");
        assert_eq!(check(&header), Err(VerifyError::NoMatch));
        header.push(' ');
        header.push_str(SIG);
        assert_eq!(check(&header), Ok(()));

        let body = vec![0u8; 4 << 20];
        let id = "i".repeat(1 << 16);
        let sig = sign(&secret(), &id, TS, &body);
        let got = verify(&secret(), Some(&id), Some(TS_STR), Some(&sig), &body, TS);
        assert_eq!(got, Ok(()));
    }
}
