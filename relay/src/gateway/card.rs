//! Card numbers sealed at rest. The API host seals a card number (AES-256-GCM) before the
//! engine sees the command, the log keeps only the sealed bytes, and the gateway worker, the
//! one reader holding the key, opens them to call the gateway. Nothing else ever holds the
//! number: replies, Kafka, MariaDB and logs show the last four digits.
//!
//! Sealed layout (version 1): `[1][key id: 4][nonce: 12][ciphertext + tag: len + 16]`. The key
//! id (the first four bytes of SHA-256 of the key) tells "sealed under another key" apart from
//! "damaged". The merchant id is the AEAD's associated data, so sealed bytes moved to
//! another merchant's record do not open.
//!
//! The key file holds 64 hex digits (32 bytes) and a newline, mode 0600.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

const SEALED_VERSION: u8 = 1;
const KEY_ID_BYTES: usize = 4;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const HEADER_BYTES: usize = 1 + KEY_ID_BYTES + NONCE_BYTES;
/// A card number is at most 32 characters (core refuses longer ones before anything is sealed).
pub const NUMBER_BYTES_MAX: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CardKeyError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("sealed card number is damaged or not a sealed card number")]
    Malformed,
    #[error("card number was sealed under another key (key id {found}, this key is {ours})")]
    OtherKey { found: String, ours: String },
    #[error("sealed card number does not open (damaged, or moved to another merchant)")]
    DoesNotOpen,
    #[error("card number is longer than {NUMBER_BYTES_MAX} bytes")]
    TooLong,
}

/// The key that seals card numbers. Its `Debug` shows the key id only.
#[derive(Clone)]
pub struct CardKey {
    cipher: Aes256Gcm,
    id: [u8; KEY_ID_BYTES],
    /// Keys the idempotency fingerprints of card requests (see `fingerprint_key`).
    fingerprint_key: [u8; 32],
}

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardKey({})", hex(&self.id))
    }
}

/// Where a key came from, so that the host can warn about a generated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    File,
    Generated,
}

impl CardKey {
    pub fn from_bytes(key: [u8; 32]) -> CardKey {
        let digest = Sha256::digest(key);
        let mut id = [0u8; KEY_ID_BYTES];
        id.copy_from_slice(&digest[..KEY_ID_BYTES]);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!("any key length"));
        mac.update(b"surge idempotency fingerprint of card requests");
        let fingerprint_key = mac.finalize().into_bytes().into();
        CardKey { cipher: Aes256Gcm::new(&key.into()), id, fingerprint_key }
    }

    /// Reads the key file at `path`. With `create`, a missing file is made with a new random
    /// key (mode 0600) and `KeySource::Generated` says so; without it, a missing file is an
    /// error (an operator who names a key file must not get a fresh key by a typo).
    pub fn load(path: &Path, create: bool) -> Result<(CardKey, KeySource), CardKeyError> {
        let err = |reason: String| CardKeyError::File { path: path.display().to_string(), reason };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = unhex32(text.trim()).ok_or_else(|| err("must hold 64 hex digits (a 32-byte key)".into()))?;
                Ok((CardKey::from_bytes(key), KeySource::File))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_private(path, format!("{}\n", hex(&key)).as_bytes()).map_err(|e| err(e.to_string()))?;
                Ok((CardKey::from_bytes(key), KeySource::Generated))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Hex of the key id (safe to log).
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// A key for HMACs over card requests: an idempotency fingerprint must not be a plain
    /// hash of a body holding a card number (16 digits are few enough to try them all).
    pub fn fingerprint_key(&self) -> &[u8; 32] {
        &self.fingerprint_key
    }

    pub fn seal(&self, merchant: &str, number: &str) -> Result<Vec<u8>, CardKeyError> {
        if number.len() > NUMBER_BYTES_MAX {
            return Err(CardKeyError::TooLong);
        }
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: number.as_bytes(), aad: merchant.as_bytes() };
        let ciphertext =
            self.cipher.encrypt(Nonce::from_slice(&nonce), payload).map_err(|_| CardKeyError::DoesNotOpen)?;
        let mut out = Vec::with_capacity(HEADER_BYTES + ciphertext.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        debug_assert!(out.len() <= HEADER_BYTES + NUMBER_BYTES_MAX + TAG_BYTES);
        Ok(out)
    }

    pub fn open(&self, merchant: &str, sealed: &[u8]) -> Result<String, CardKeyError> {
        if sealed.len() < HEADER_BYTES + TAG_BYTES || sealed[0] != SEALED_VERSION {
            return Err(CardKeyError::Malformed);
        }
        let (id, rest) = sealed[1..].split_at(KEY_ID_BYTES);
        if id != self.id {
            return Err(CardKeyError::OtherKey { found: hex(id), ours: hex(&self.id) });
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let payload = Payload { msg: ciphertext, aad: merchant.as_bytes() };
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), payload).map_err(|_| CardKeyError::DoesNotOpen)?;
        String::from_utf8(plain).map_err(|_| CardKeyError::Malformed)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_numbers_open_for_their_merchant_only_and_never_show_the_number() {
        let key = CardKey::from_bytes([7; 32]);
        let sealed = key.seal("m-1", "4111-1111-1111-1234").expect("seal");
        assert!(!sealed.windows(4).any(|w| w == b"1234" || w == b"4111"), "no digits in clear");
        assert_eq!(key.open("m-1", &sealed).as_deref(), Ok("4111-1111-1111-1234"));
        assert_eq!(key.open("m-2", &sealed), Err(CardKeyError::DoesNotOpen));
        // Two seals of one number differ (fresh nonce each time).
        assert_ne!(key.seal("m-1", "4111-1111-1111-1234").expect("seal"), sealed);
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(key.open("m-1", &flipped), Err(CardKeyError::DoesNotOpen));
        let other = CardKey::from_bytes([8; 32]);
        assert!(matches!(other.open("m-1", &sealed), Err(CardKeyError::OtherKey { .. })));
        assert_eq!(key.open("m-1", b"short"), Err(CardKeyError::Malformed));
        assert_eq!(key.seal("m-1", &"1".repeat(33)), Err(CardKeyError::TooLong));
        assert!(!format!("{key:?}").contains("0707"), "Debug shows the key id, not the key");
    }

    #[test]
    fn a_key_file_is_made_once_private_and_then_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("card.key");
        assert!(matches!(CardKey::load(&path, false), Err(CardKeyError::File { .. })));
        let (made, source) = CardKey::load(&path, true).expect("generated");
        assert_eq!(source, KeySource::Generated);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (read, source) = CardKey::load(&path, true).expect("read");
        assert_eq!((source, read.id()), (KeySource::File, made.id()));
        let sealed = made.seal("m", "4111111111111234").expect("seal");
        assert_eq!(read.open("m", &sealed).as_deref(), Ok("4111111111111234"));
        std::fs::write(&path, "not hex").expect("write");
        assert!(matches!(CardKey::load(&path, true), Err(CardKeyError::File { .. })));
    }
}
