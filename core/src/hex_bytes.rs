//! Serde for 32-byte hashes: lowercase hex in human-readable formats (the JSON
//! envelope), raw bytes in binary ones (the log), so neither pays for the other.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

const N: usize = 32;

pub fn serialize<S: Serializer>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        let mut text = String::with_capacity(2 * N);
        for b in bytes {
            text.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            text.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        s.serialize_str(&text)
    } else {
        serde::Serialize::serialize(bytes, s)
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; N], D::Error> {
    if d.is_human_readable() {
        let text = String::deserialize(d)?;
        if text.len() != 2 * N {
            return Err(D::Error::custom("wrong hex length"));
        }
        let mut out = [0u8; N];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(D::Error::custom)?;
            out[i] = u8::from_str_radix(pair, 16).map_err(D::Error::custom)?;
        }
        Ok(out)
    } else {
        <[u8; N]>::deserialize(d)
    }
}
