//! Signature verification for the three webhook schemes hookd accepts.
//!
//! Every `verify` function is pure: header values come in as `Option<&str>` (`None` when
//! the header is absent) and the clock comes in as `now` (Unix seconds), so the HTTP layer
//! decides where they come from and tests can pin time next to published vectors.
//! Each scheme also has a `sign` function for `hookd send` and for tests.

pub mod standard;
pub mod stripe;
pub mod telnyx;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Tolerance for all three schemes, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {header} header: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("timestamp is more than {TOLERANCE_SECS} s away from the server clock")]
    StaleTimestamp,
    #[error("no v1 signature in {0} header")]
    NoSupportedSignature(&'static str),
    #[error("no signature matches")]
    NoMatch,
}

/// Accepts `ts` when it is within [`TOLERANCE_SECS`] of `now`, in either direction: a
/// timestamp from the future is as suspicious as an old one (a replay window opened early).
fn check_timestamp(ts: i64, now: i64) -> Result<(), VerifyError> {
    // abs_diff cannot overflow, whatever a hostile header parsed to.
    if now.abs_diff(ts) <= TOLERANCE_SECS.unsigned_abs() {
        Ok(())
    } else {
        Err(VerifyError::StaleTimestamp)
    }
}

/// A header that is absent or blank is reported as missing: an empty value carries nothing
/// to verify, and proxies sometimes turn absent headers into empty ones.
fn required<'a>(value: Option<&'a str>, header: &'static str) -> Result<&'a str, VerifyError> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(VerifyError::MissingHeader(header)),
    }
}

/// Parses Unix seconds. Only plain ASCII digits are accepted (no sign, spaces or `+`),
/// because the HMAC schemes sign the canonical decimal form of the number.
fn parse_timestamp(value: &str, header: &'static str) -> Result<i64, VerifyError> {
    let malformed = |reason| VerifyError::MalformedHeader { header, reason };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("timestamp is not a number of seconds"));
    }
    value
        .parse()
        .map_err(|_| malformed("timestamp is out of range"))
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC hashes over-long keys and pads short ones, so every key length is accepted.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_inside_tolerance_both_directions() {
        let now = 1_700_000_000;
        assert_eq!(check_timestamp(now, now), Ok(()));
        assert_eq!(check_timestamp(now - TOLERANCE_SECS, now), Ok(()));
        assert_eq!(check_timestamp(now + TOLERANCE_SECS, now), Ok(()));
    }

    #[test]
    fn timestamp_just_outside_tolerance_both_directions() {
        let now = 1_700_000_000;
        let stale = Err(VerifyError::StaleTimestamp);
        assert_eq!(check_timestamp(now - TOLERANCE_SECS - 1, now), stale);
        assert_eq!(check_timestamp(now + TOLERANCE_SECS + 1, now), stale);
    }

    #[test]
    fn timestamp_extremes_do_not_overflow() {
        let stale = Err(VerifyError::StaleTimestamp);
        assert_eq!(check_timestamp(i64::MAX, i64::MIN), stale);
        assert_eq!(check_timestamp(i64::MIN, i64::MAX), stale);
        assert_eq!(check_timestamp(i64::MAX, 0), stale);
        assert_eq!(check_timestamp(0, i64::MAX), stale);
    }

    #[test]
    fn required_treats_blank_as_missing() {
        let missing = Err(VerifyError::MissingHeader("x"));
        assert_eq!(required(None, "x"), missing);
        assert_eq!(required(Some(""), "x"), missing);
        assert_eq!(required(Some("  "), "x"), missing);
        assert_eq!(required(Some(" a "), "x"), Ok("a"));
    }

    #[test]
    fn parse_timestamp_accepts_only_digits() {
        assert_eq!(parse_timestamp("1700000000", "h"), Ok(1_700_000_000));
        for bad in ["", "-1", "+1", "1.5", "1e9", "abc", " 1", "١٢٣", "0x10"] {
            assert!(
                matches!(
                    parse_timestamp(bad, "h"),
                    Err(VerifyError::MalformedHeader { header: "h", .. })
                ),
                "{bad:?} must be rejected"
            );
        }
        assert!(matches!(
            parse_timestamp("99999999999999999999999", "h"),
            Err(VerifyError::MalformedHeader {
                reason: "timestamp is out of range",
                ..
            })
        ));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            VerifyError::MissingHeader("webhook-id").to_string(),
            "missing webhook-id header"
        );
        assert_eq!(
            VerifyError::MalformedHeader {
                header: "stripe-signature",
                reason: "no timestamp"
            }
            .to_string(),
            "malformed stripe-signature header: no timestamp"
        );
        assert_eq!(
            VerifyError::StaleTimestamp.to_string(),
            "timestamp is more than 300 s away from the server clock"
        );
        assert_eq!(
            VerifyError::NoSupportedSignature("stripe-signature").to_string(),
            "no v1 signature in stripe-signature header"
        );
    }
}
