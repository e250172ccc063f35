//! Telnyx API v2: `telnyx-signature-ed25519` is a base64 Ed25519 signature over
//! `"{telnyx-timestamp}|{raw body}"`, checked with the account's public key.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{
    PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, Signature, Signer, SigningKey, VerifyingKey,
};

use super::{VerifyError, check_timestamp, parse_timestamp, required};

pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";

/// The Telnyx account's Ed25519 public key (`TELNYX_PUBLIC_KEY`).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_signing_key(k: &SigningKey) -> Self {
        Self(k.verifying_key())
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    // The key is public; base64 is the form operators can compare with the Telnyx portal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = BASE64
            .decode(s.trim())
            .map_err(|e| format!("Telnyx public key is not valid base64: {e}"))?;
        let bytes: [u8; PUBLIC_KEY_LENGTH] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "Telnyx public key must be {PUBLIC_KEY_LENGTH} bytes, got {}",
                b.len()
            )
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "Telnyx public key is not a valid Ed25519 point".to_owned())?;
        // verify_strict would reject every signature under a small-order key anyway; saying
        // so at startup beats a route that silently answers 400 to everything.
        if key.is_weak() {
            return Err("Telnyx public key is a weak (small-order) Ed25519 point".to_owned());
        }
        Ok(Self(key))
    }
}

pub fn verify(
    key: &PublicKey,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let signature = required(signature, SIGNATURE_HEADER)?;
    let timestamp = required(timestamp, TIMESTAMP_HEADER)?;
    check_timestamp(parse_timestamp(timestamp, TIMESTAMP_HEADER)?, now)?;

    let malformed = |reason| VerifyError::MalformedHeader {
        header: SIGNATURE_HEADER,
        reason,
    };
    let bytes = BASE64
        .decode(signature)
        .map_err(|_| malformed("signature is not valid base64"))?;
    let bytes: [u8; SIGNATURE_LENGTH] = bytes
        .try_into()
        .map_err(|_| malformed("signature is not 64 bytes"))?;
    let signature = Signature::from_bytes(&bytes);

    // Telnyx signs the timestamp header exactly as sent, so it is not re-formatted here.
    // verify_strict rejects weak keys and malleable signatures, as libsodium does for Telnyx's
    // own SDKs.
    key.0
        .verify_strict(&signed_payload(timestamp, body), &signature)
        .map_err(|_| VerifyError::NoMatch)
}

/// Returns the `telnyx-signature-ed25519` header value for `telnyx-timestamp: {timestamp}`.
pub fn sign(key: &SigningKey, timestamp: i64, body: &[u8]) -> String {
    let signature = key.sign(&signed_payload(&timestamp.to_string(), body));
    BASE64.encode(signature.to_bytes())
}

fn signed_payload(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(timestamp.len() + 1 + body.len());
    payload.extend_from_slice(timestamp.as_bytes());
    payload.push(b'|');
    payload.extend_from_slice(body);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::TOLERANCE_SECS;

    // From /work/shared/vectors/signatures.json ("telnyx_ed25519").
    const SEED_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const PUBLIC_KEY: &str = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
    const TS_STR: &str = "1700000000";
    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] =
        br#"{"data":{"event_type":"call.hangup","id":"evt-1","record_type":"event"}}"#;
    const SIG: &str =
        "ZK4+aK68TnGs+jOHlxnFy8dbRMARwWlD67BUS4mvQXKPMNjwCDi6YZhqALocS7o2wtXfijq6ql1igfQkqWgCBw==";

    fn signing_key() -> SigningKey {
        let seed: [u8; 32] = hex::decode(SEED_HEX).unwrap().try_into().unwrap();
        SigningKey::from_bytes(&seed)
    }

    fn key() -> PublicKey {
        PUBLIC_KEY.parse().unwrap()
    }

    fn check(signature: &str, body: &[u8], now: i64) -> Result<(), VerifyError> {
        verify(&key(), Some(signature), Some(TS_STR), body, now)
    }

    #[test]
    fn vector_is_valid_at_its_timestamp() {
        assert_eq!(check(SIG, BODY, TS), Ok(()));
    }

    #[test]
    fn vector_key_and_signature_are_reproduced() {
        let sk = signing_key();
        assert_eq!(PublicKey::from_signing_key(&sk).to_base64(), PUBLIC_KEY);
        assert_eq!(PublicKey::from_signing_key(&sk), key());
        // Ed25519 is deterministic, so signing again yields the published bytes.
        assert_eq!(sign(&sk, TS, BODY), SIG);
    }

    #[test]
    fn vector_valid_just_inside_tolerance() {
        for now in [TS + TOLERANCE_SECS, TS - TOLERANCE_SECS] {
            assert_eq!(check(SIG, BODY, now), Ok(()));
        }
    }

    #[test]
    fn vector_stale_or_future_just_outside_tolerance() {
        for now in [TS + TOLERANCE_SECS + 1, TS - TOLERANCE_SECS - 1] {
            assert_eq!(check(SIG, BODY, now), Err(VerifyError::StaleTimestamp));
        }
    }

    #[test]
    fn dot_instead_of_pipe_fails() {
        let mut payload = TS_STR.as_bytes().to_vec();
        payload.push(b'.');
        payload.extend_from_slice(BODY);
        let dotted = BASE64.encode(signing_key().sign(&payload).to_bytes());
        assert_eq!(check(&dotted, BODY, TS), Err(VerifyError::NoMatch));
    }

    #[test]
    fn tampered_body_fails() {
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(check(SIG, &body, TS), Err(VerifyError::NoMatch));
    }

    #[test]
    fn wrong_key_fails() {
        let other = PublicKey::from_signing_key(&SigningKey::from_bytes(&[7; 32]));
        assert_eq!(
            verify(&other, Some(SIG), Some(TS_STR), BODY, TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn signature_for_other_timestamp_fails() {
        let next = (TS + 1).to_string();
        assert_eq!(
            verify(&key(), Some(SIG), Some(&next), BODY, TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn timestamp_is_verified_as_sent() {
        // Same number, different bytes: the signature covers the header text.
        assert_eq!(
            verify(&key(), Some(SIG), Some("01700000000"), BODY, TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn missing_headers() {
        let k = key();
        let missing_sig = Err(VerifyError::MissingHeader(SIGNATURE_HEADER));
        let missing_ts = Err(VerifyError::MissingHeader(TIMESTAMP_HEADER));
        assert_eq!(verify(&k, None, Some(TS_STR), BODY, TS), missing_sig);
        assert_eq!(verify(&k, Some(""), Some(TS_STR), BODY, TS), missing_sig);
        assert_eq!(verify(&k, Some(SIG), None, BODY, TS), missing_ts);
        assert_eq!(verify(&k, Some(SIG), Some(""), BODY, TS), missing_ts);
        assert_eq!(verify(&k, None, None, BODY, TS), missing_sig);
    }

    #[test]
    fn non_numeric_timestamps_are_malformed() {
        for ts in [
            "abc",
            "-1700000000",
            "+1700000000",
            "1700000000.0",
            "1.7e9",
            "١٧٠٠٠٠٠٠٠٠",
        ] {
            assert!(
                matches!(
                    verify(&key(), Some(SIG), Some(ts), BODY, TS),
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
    fn bad_base64_signature_is_malformed() {
        for sig in [
            "not base64!",
            "ZK4+aK68TnGs+jOHlxnFy8dbRMARwWlD67BUS4mvQXKPMNjwCDi6YZhqALocS7o2wtXfijq6ql1igfQkqWgCBw",
            "é",
        ] {
            assert_eq!(
                check(sig, BODY, TS),
                Err(VerifyError::MalformedHeader {
                    header: SIGNATURE_HEADER,
                    reason: "signature is not valid base64"
                }),
                "{sig:?}"
            );
        }
    }

    #[test]
    fn wrong_length_signature_is_malformed() {
        let full = BASE64.decode(SIG).unwrap();
        for bytes in [&full[..63], &[0u8; 65][..], &[][..], &[1u8; 32][..]] {
            let sig = BASE64.encode(bytes);
            let got = check(&sig, BODY, TS);
            if sig.is_empty() {
                assert_eq!(got, Err(VerifyError::MissingHeader(SIGNATURE_HEADER)));
            } else {
                assert_eq!(
                    got,
                    Err(VerifyError::MalformedHeader {
                        header: SIGNATURE_HEADER,
                        reason: "signature is not 64 bytes"
                    })
                );
            }
        }
    }

    #[test]
    fn garbage_64_byte_signatures_fail() {
        for sig in [[0u8; 64], [0xff; 64]] {
            assert_eq!(
                check(&BASE64.encode(sig), BODY, TS),
                Err(VerifyError::NoMatch)
            );
        }
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        let huge_sig = "A".repeat(1 << 20);
        assert!(check(&huge_sig, BODY, TS).is_err());
        let huge_ts = "9".repeat(1 << 16);
        assert!(verify(&key(), Some(SIG), Some(&huge_ts), BODY, TS).is_err());

        let body = vec![b'{'; 4 << 20];
        let sig = sign(&signing_key(), TS, &body);
        assert_eq!(check(&sig, &body, TS), Ok(()));
    }

    #[test]
    fn public_key_parse_errors_say_what_is_wrong() {
        let err = "not base64!".parse::<PublicKey>().unwrap_err();
        assert!(err.contains("not valid base64"), "{err}");
        let err = BASE64.encode([1u8; 31]).parse::<PublicKey>().unwrap_err();
        assert!(err.contains("must be 32 bytes, got 31"), "{err}");
        let err = "".parse::<PublicKey>().unwrap_err();
        assert!(err.contains("got 0"), "{err}");
        // [2; 32] does not decompress to a curve point; [0; 32] is a small-order point.
        let err = BASE64.encode([2u8; 32]).parse::<PublicKey>().unwrap_err();
        assert!(err.contains("not a valid Ed25519 point"), "{err}");
        let err = BASE64.encode([0u8; 32]).parse::<PublicKey>().unwrap_err();
        assert!(err.contains("weak"), "{err}");
    }

    #[test]
    fn public_key_parse_tolerates_surrounding_whitespace() {
        let k: PublicKey = format!(" {PUBLIC_KEY}\n").parse().unwrap();
        assert_eq!(k, key());
        assert_eq!(format!("{k:?}"), format!("PublicKey({PUBLIC_KEY})"));
    }
}
