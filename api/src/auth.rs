//! API keys and the admin token: generated from the OS's randomness, stored only as SHA-256,
//! compared in constant time.

use axum::http::{header, HeaderMap};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex(&bytes))
}

/// A new merchant API key (`sk_` + 48 hex digits).
pub fn new_api_key() -> String {
    random_secret("sk_")
}

/// A new admin token (`adm_` + 48 hex digits).
pub fn new_admin_token() -> String {
    random_secret("adm_")
}

/// A nonce for a waiting-room token.
pub fn new_nonce() -> u64 {
    rand::rng().next_u64()
}

/// The token of `Authorization: Bearer <token>`, if well-formed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Whether `presented` hashes to `expected`, in constant time.
pub fn matches(presented: &str, expected: &[u8; 32]) -> bool {
    sha256(presented.as_bytes()).ct_eq(expected).into()
}

/// The password of `Authorization: Basic base64(user:password)` (browsers send it for the
/// admin page after a `WWW-Authenticate: Basic` challenge; the user name is ignored).
pub fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    decoded.split_once(':').map(|(_, password)| password.to_string())
}

/// Standard base64 with padding; `None` on anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) || bytes.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { value(c)? };
            n = (n << 6) | v;
        }
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("OmFkbWlu").as_deref(), Some(&b":admin"[..]));
        assert_eq!(super::base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(super::base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(super::base64_decode("Y!=="), None);
        assert_eq!(super::base64_decode("abc"), None);
    }
}
