//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, where each `v1` is
//! HMAC-SHA256 of `"{t}.{raw body}"` keyed by the endpoint secret string (`whsec_...`,
//! used as-is, not decoded).

use hmac::Mac;

use super::{VerifyError, check_timestamp, hmac_sha256, parse_timestamp, required};

pub const HEADER: &str = "stripe-signature";

/// The only scheme Stripe uses for live signatures; `v0` and anything newer are ignored.
const SCHEME: &str = "v1";
/// Hex length of an HMAC-SHA256 tag.
const SIGNATURE_HEX_LEN: usize = 64;

pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let header = required(header, HEADER)?;
    let malformed = |reason| VerifyError::MalformedHeader {
        header: HEADER,
        reason,
    };

    let mut timestamp = None;
    let mut any_v1 = false;
    for (key, value) in pairs(header) {
        match key {
            "t" if timestamp.is_some() => return Err(malformed("more than one timestamp")),
            "t" => timestamp = Some(parse_timestamp(value, HEADER)?),
            SCHEME => any_v1 = true,
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(malformed("no timestamp"))?;
    if !any_v1 {
        return Err(VerifyError::NoSupportedSignature(HEADER));
    }
    check_timestamp(timestamp, now)?;

    let mac = signed_payload_mac(secret, timestamp, body);
    // During a secret rotation Stripe sends one v1 per active secret, in no promised order,
    // so every candidate is tried. The MAC is computed once and cloned per candidate, and
    // candidates of the wrong length are skipped before any work: linear in the header.
    let matched = pairs(header)
        .filter(|&(key, value)| key == SCHEME && value.len() == SIGNATURE_HEX_LEN)
        .filter_map(|(_, value)| hex::decode(value).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// Returns the full header value, `t=<timestamp>,v1=<hex>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = signed_payload_mac(secret, timestamp, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},{SCHEME}={}", hex::encode(tag))
}

fn signed_payload_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = hmac_sha256(secret);
    // Stripe's libraries sign the timestamp as re-formatted from its parsed value.
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `key=value` items of the header; items without `=` carry nothing we use and are skipped.
fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header
        .split(',')
        .filter_map(|item| item.split_once('='))
        .map(|(key, value)| (key.trim(), value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::TOLERANCE_SECS;

    // From /work/shared/vectors/signatures.json ("stripe").
    const SECRET: &[u8] = b"whsec_test_secret";
    const TS: i64 = 1492774577;
    const BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const SIG: &str = "88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a";
    const HEADER_VALUE: &str =
        "t=1492774577,v1=88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a";

    fn check(header: &str) -> Result<(), VerifyError> {
        verify(SECRET, Some(header), BODY, TS)
    }

    #[test]
    fn vector_is_valid_at_its_timestamp() {
        assert_eq!(check(HEADER_VALUE), Ok(()));
    }

    #[test]
    fn sign_reproduces_vector() {
        assert_eq!(sign(SECRET, TS, BODY), HEADER_VALUE);
    }

    #[test]
    fn vector_valid_just_inside_tolerance() {
        for now in [TS + TOLERANCE_SECS, TS - TOLERANCE_SECS] {
            assert_eq!(verify(SECRET, Some(HEADER_VALUE), BODY, now), Ok(()));
        }
    }

    #[test]
    fn vector_stale_or_future_just_outside_tolerance() {
        for now in [TS + TOLERANCE_SECS + 1, TS - TOLERANCE_SECS - 1] {
            assert_eq!(
                verify(SECRET, Some(HEADER_VALUE), BODY, now),
                Err(VerifyError::StaleTimestamp)
            );
        }
    }

    // "stripe_header_cases" from the vectors file, with the clock at the vector's timestamp.

    #[test]
    fn header_case_bad_header() {
        assert!(matches!(
            check("bad_header"),
            Err(VerifyError::MalformedHeader { header: HEADER, .. })
        ));
    }

    #[test]
    fn header_case_empty_or_absent() {
        assert_eq!(check(""), Err(VerifyError::MissingHeader(HEADER)));
        assert_eq!(
            verify(SECRET, None, BODY, TS),
            Err(VerifyError::MissingHeader(HEADER))
        );
    }

    #[test]
    fn header_case_only_v0() {
        let header =
            "t=1492774577,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
        assert_eq!(
            check(header),
            Err(VerifyError::NoSupportedSignature(HEADER))
        );
    }

    #[test]
    fn header_case_bad_v1() {
        assert_eq!(
            check("t=1492774577,v1=bad_signature"),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn header_case_match_first_of_several() {
        assert_eq!(check(&format!("t={TS},v1={SIG},v1=potato")), Ok(()));
    }

    #[test]
    fn header_case_match_not_first_rotation() {
        assert_eq!(check(&format!("t={TS},v1=potato,v1={SIG}")), Ok(()));
        let other = sign(b"whsec_old", TS, BODY);
        let (_, other_sig) = other.split_once(",v1=").unwrap();
        assert_eq!(check(&format!("t={TS},v1={other_sig},v1={SIG}")), Ok(()));
    }

    #[test]
    fn other_schemes_are_ignored_alongside_v1() {
        assert_eq!(check(&format!("t={TS},v0=abc,v1={SIG},v9=zzz")), Ok(()));
        assert_eq!(check(&format!("v1={SIG},t={TS}")), Ok(()));
    }

    #[test]
    fn tampered_body_fails() {
        let tampered = br#"{"id":"evt_test_webhook","object":"event" }"#;
        assert_eq!(
            verify(SECRET, Some(HEADER_VALUE), tampered, TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn wrong_secret_fails() {
        assert_eq!(
            verify(b"whsec_test_secreT", Some(HEADER_VALUE), BODY, TS),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn signature_for_other_timestamp_fails() {
        // The timestamp is part of the signed payload, so it cannot be refreshed by a replayer.
        let header = format!("t={},v1={SIG}", TS + 1);
        assert_eq!(check(&header), Err(VerifyError::NoMatch));
    }

    #[test]
    fn uppercase_hex_is_the_same_tag() {
        let header = format!("t={TS},v1={}", SIG.to_uppercase());
        assert_eq!(check(&header), Ok(()));
    }

    #[test]
    fn non_numeric_timestamps_are_malformed() {
        for t in [
            "abc",
            "",
            "-1492774577",
            "+1492774577",
            "1492774577.0",
            "1e9",
        ] {
            let header = format!("t={t},v1={SIG}");
            assert!(
                matches!(check(&header), Err(VerifyError::MalformedHeader { .. })),
                "{header:?}"
            );
        }
    }

    #[test]
    fn duplicate_timestamp_is_malformed() {
        let header = format!("t={TS},t={TS},v1={SIG}");
        assert!(matches!(
            check(&header),
            Err(VerifyError::MalformedHeader { .. })
        ));
    }

    #[test]
    fn empty_and_truncated_v1_never_match() {
        assert_eq!(check(&format!("t={TS},v1=")), Err(VerifyError::NoMatch));
        assert_eq!(
            check(&format!("t={TS},v1={}", &SIG[..62])),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            check(&format!("t={TS},v1={SIG}00")),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn stale_is_reported_before_signature_work() {
        let header = format!("t={},v1=potato", TS - 10_000);
        assert_eq!(check(&header), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn garbage_headers_are_rejected_without_panic() {
        for header in [
            ",",
            "=",
            "t=",
            "t",
            "v1",
            "==,,==",
            "t==1,v1==",
            "t=1492774577,v1=ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
            "t=1492774577,v1=\u{0}\u{1}",
            "t=١٤٩٢٧٧٤٥٧٧,v1=00",
            "t=99999999999999999999999999,v1=00",
            "t=9223372036854775807,v1=00",
            "\u{feff}t=1492774577,v1=00",
        ] {
            assert!(check(header).is_err(), "{header:?}");
        }
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        let garbage = "x".repeat(1 << 20);
        assert!(check(&garbage).is_err());

        // Many well-formed but wrong candidates, then the right one: still found.
        let mut header = format!("t={TS}");
        for _ in 0..10_000 {
            header.push_str(",v1=");
            header.push_str(&"0".repeat(SIGNATURE_HEX_LEN));
        }
        assert_eq!(check(&header), Err(VerifyError::NoMatch));
        header.push_str(&format!(",v1={SIG}"));
        assert_eq!(check(&header), Ok(()));

        let body = vec![b'a'; 4 << 20];
        let signed = sign(SECRET, TS, &body);
        assert_eq!(verify(SECRET, Some(&signed), &body, TS), Ok(()));
    }

    #[test]
    fn sign_verify_round_trip_empty_body_and_secret() {
        let header = sign(b"", TS, b"");
        assert_eq!(verify(b"", Some(&header), b"", TS), Ok(()));
        assert_eq!(
            verify(b"x", Some(&header), b"", TS),
            Err(VerifyError::NoMatch)
        );
    }
}
