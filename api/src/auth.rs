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
