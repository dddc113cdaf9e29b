//! The gateway's callback signature: lowercase hex of HMAC-SHA256(secret,
//! `"{timestamp}.{raw body}"`), timestamp in Unix seconds, sent as `X-Signature` and
//! `X-Timestamp`. Verification compares in constant time and refuses a timestamp further
//! than the tolerance from now in either direction (a replayed old callback, or a clock far
//! off).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-signature";
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
pub const TOLERANCE_S_DEFAULT: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Signature and X-Timestamp are required")]
    Missing,
    #[error("X-Timestamp must be Unix seconds and X-Signature 64 hex digits")]
    Malformed,
    #[error("X-Timestamp is more than the tolerance away from now")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Signature` value for `body` sent at `timestamp` (Unix seconds, as text).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    super::card::hex(&mac(secret, timestamp, body).finalize().into_bytes())
}

/// Checks a callback's headers against its raw body at `now_s`.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let at_s: u64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    let signature = signature.trim();
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignatureError::Malformed);
    }
    let mut expected = [0u8; 32];
    for (i, pair) in signature.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| SignatureError::Malformed)?;
        expected[i] = u8::from_str_radix(pair, 16).map_err(|_| SignatureError::Malformed)?;
    }
    // Checked before the stale test, so that a forged old callback says "mismatch" only
    // when it would also have been refused as stale: both are 401 and change nothing.
    mac(secret, timestamp, body).verify_slice(&expected).map_err(|_| SignatureError::Mismatch)?;
    if at_s.abs_diff(now_s) > tolerance_s {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_body_secret_and_time() {
        let body = br#"{"transactionKey":"20261205:TR:9577c5","status":"SUCCESS"}"#;
        let sig = sign(b"secret", "1764892800", body);
        assert_eq!(sig.len(), 64);
        let ok = |ts: Option<&str>, s: Option<&str>, b: &[u8], now| verify(b"secret", ts, s, b, now, 300);
        assert_eq!(ok(Some("1764892800"), Some(&sig), body, 1_764_892_800), Ok(()));
        assert_eq!(ok(Some("1764892800"), Some(&sig.to_uppercase()), body, 1_764_892_900), Ok(()));
        assert_eq!(ok(Some("1764892800"), Some(&sig), b"{}", 1_764_892_800), Err(SignatureError::Mismatch));
        assert_eq!(ok(Some("1764892801"), Some(&sig), body, 1_764_892_800), Err(SignatureError::Mismatch));
        assert_eq!(ok(Some("1764892800"), Some(&sig), body, 1_764_893_101), Err(SignatureError::Stale));
        assert_eq!(ok(Some("1764892800"), Some(&sig), body, 1_764_892_499), Err(SignatureError::Stale));
        assert_eq!(ok(None, Some(&sig), body, 0), Err(SignatureError::Missing));
        assert_eq!(ok(Some("soon"), Some(&sig), body, 0), Err(SignatureError::Malformed));
        assert_eq!(ok(Some("1"), Some("zz"), body, 1), Err(SignatureError::Malformed));
        let other = sign(b"other", "1764892800", body);
        assert_eq!(ok(Some("1764892800"), Some(&other), body, 1_764_892_800), Err(SignatureError::Mismatch));
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently (Python's hmac module) for this secret, timestamp and body.
        let body = br#"{"transactionKey":"20261205:TR:9577c5","status":"SUCCESS"}"#;
        assert_eq!(
            sign(b"secret", "1764892800", body),
            "dcd97a972b79e9528a33c96f6f1ac169afc138025acf4774503fc9e6346872b5"
        );
    }
}
