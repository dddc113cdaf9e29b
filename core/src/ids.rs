//! Identifier syntax and the deterministic ids the engine hands out.
//!
//! Orders, holds, payments and dead letters are numbered per merchant from 1 in apply order, so replaying
//! the same events gives the same ids. Queue tokens add a 64-bit nonce that the caller puts
//! into the command (the engine has no randomness); the nonce is logged with the event, so
//! replay reproduces the token too.

use crate::limits::{IDEMPOTENCY_KEY_LEN_MAX, ID_LEN_MAX};

/// Milliseconds since the Unix epoch; every time in the engine comes in with a command.
pub type UnixMs = u64;

/// `[A-Za-z0-9_.:-]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// 1..=255 printable ASCII (space included, as Stripe allows).
pub fn is_valid_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LEN_MAX && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The kinds of numbered resources, each with its id prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numbered {
    Hold,
    Order,
    Payment,
    DeadLetter,
}

impl Numbered {
    /// What every external id of this kind starts with (`ord_`).
    pub fn prefix(self) -> &'static str {
        match self {
            Numbered::Hold => "hold_",
            Numbered::Order => "ord_",
            Numbered::Payment => "pay_",
            Numbered::DeadLetter => "dl_",
        }
    }

    /// The external id of resource number `n` (numbers start at 1).
    pub fn id(self, n: u64) -> String {
        debug_assert!(n >= 1);
        let mut id = String::with_capacity(24);
        id.push_str(self.prefix());
        id.push_str(itoa::Buffer::new().format(n));
        id
    }

    /// The number inside an external id, if it is one of ours; anything else is simply not
    /// found, which is also what another merchant's id must look like.
    pub fn parse(self, id: &str) -> Option<u64> {
        let digits = id.strip_prefix(self.prefix())?;
        if digits.is_empty() || digits.len() > 19 || digits.starts_with('0') {
            return None;
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

macro_rules! numbered_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        /// Shown as its external string (`Display`, JSON); stored as a plain number in binary
        /// encodings, so building and storing a reply formats nothing.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // itoa: every reply renders ids; `write!` was most of a reply's formatting.
                f.write_str($kind.prefix())?;
                f.write_str(itoa::Buffer::new().format(self.0))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_u64(self.0)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    $kind.parse(&text).map($name).ok_or_else(|| serde::de::Error::custom("not an id of this kind"))
                } else {
                    u64::deserialize(d).map($name)
                }
            }
        }
    };
}

numbered_id!(
    /// `hold_{n}`.
    HoldId,
    Numbered::Hold
);
numbered_id!(
    /// `ord_{n}`.
    OrderId,
    Numbered::Order
);
numbered_id!(
    /// `pay_{n}`.
    PaymentId,
    Numbered::Payment
);

numbered_id!(
    /// `dl_{n}`: a gateway operation that kept failing, kept for an operator.
    DeadLetterId,
    Numbered::DeadLetter
);

/// A waiting-room token: `qt_{seq}_{nonce as 16 hex digits}`.
pub fn token_id(seq: u64, nonce: u64) -> String {
    format!("qt_{seq}_{nonce:016x}")
}

/// `(seq, nonce)` of a token string, or `None` when it is not one of ours.
pub fn parse_token(token: &str) -> Option<(u64, u64)> {
    let rest = token.strip_prefix("qt_")?;
    let (seq, nonce) = rest.split_once('_')?;
    if seq.is_empty() || seq.len() > 19 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((seq.parse().ok()?, u64::from_str_radix(nonce, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_syntax() {
        assert!(is_valid_id("m-1"));
        assert!(is_valid_id("A.b:c_d-9"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("é"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
    }

    #[test]
    fn numbered_ids_round_trip_and_reject_lookalikes() {
        assert_eq!(Numbered::Order.id(42), "ord_42");
        assert_eq!(Numbered::Order.parse("ord_42"), Some(42));
        for bad in ["ord_", "ord_042", "ord_4x", "hold_4", "ord_99999999999999999999", "ord_-1"] {
            assert_eq!(Numbered::Order.parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn typed_ids_are_strings_in_json_and_numbers_in_binary() {
        let id = OrderId(42);
        assert_eq!(id.to_string(), "ord_42");
        assert_eq!(serde_json::to_string(&id).ok().as_deref(), Some("\"ord_42\""));
        assert_eq!(serde_json::from_str::<OrderId>("\"ord_42\"").ok(), Some(id));
        assert!(serde_json::from_str::<OrderId>("\"pay_42\"").is_err());
        let bytes = postcard::to_stdvec(&id).unwrap_or_default();
        assert_eq!(bytes, [42]);
        assert_eq!(postcard::from_bytes::<OrderId>(&bytes).ok(), Some(id));
    }

    #[test]
    fn tokens_round_trip() {
        let t = token_id(7, 0xdead_beef);
        assert_eq!(t, "qt_7_00000000deadbeef");
        assert_eq!(parse_token(&t), Some((7, 0xdead_beef)));
        assert_eq!(parse_token("qt_7_xyz"), None);
        assert_eq!(parse_token("qt__00000000deadbeef"), None);
    }

    #[test]
    fn idempotency_key_syntax() {
        assert!(is_valid_idempotency_key("order 1 / retry"));
        assert!(!is_valid_idempotency_key(""));
        assert!(!is_valid_idempotency_key("tab\t"));
        assert!(!is_valid_idempotency_key(&"k".repeat(256)));
    }
}
