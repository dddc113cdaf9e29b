//! Snapshots written by older builds, read into today's state. postcard is not
//! self-describing, so each older layout is spelled out as its own types and decoded by
//! version (the header says which), then converted; nothing is inferred from the bytes.
//!
//! | version | what differs from the next one                                             |
//! |---------|----------------------------------------------------------------------------|
//! | 1       | a `Ledger` of four fixed accounts (no `points:authorized`)                  |
//! | 2       | five fixed accounts (no `gateway:authorized`); a `Payment` has no `gateway`; a `Merchant` has no `dead_letters` |
//! | 3       | current                                                                    |
//!
//! An account an older snapshot lacks had zero totals then, and a payment had no gateway
//! (card payments did not reach a gateway before version 3).

use std::sync::Arc;

use serde::Deserialize;

use crate::chunked::ChunkedVec;
use crate::command::{CaptureMode, PaymentMethod};
use crate::encoding::decode_body;
use crate::error::DecodeError;
use crate::ids::UnixMs;
use crate::ledger::{AccountTotals, Ledger, FIXED_ACCOUNTS};
use crate::shard::ShardImage;
use crate::state::{
    CardInfo, Customer, Hold, Idempotency, Indexed, Item, Merchant, Order, Payment, PaymentStatus, Queue,
};

#[derive(Deserialize)]
struct LedgerV1 {
    fixed: [AccountTotals; 4],
    postings: u64,
}

#[derive(Deserialize)]
struct LedgerV2 {
    fixed: [AccountTotals; 5],
    postings: u64,
}

fn ledger(fixed_old: &[AccountTotals], postings: u64) -> Ledger {
    debug_assert!(fixed_old.len() < FIXED_ACCOUNTS.len());
    let mut fixed = [AccountTotals::default(); FIXED_ACCOUNTS.len()];
    fixed[..fixed_old.len()].copy_from_slice(fixed_old);
    Ledger { fixed, postings }
}

impl From<LedgerV1> for Ledger {
    fn from(l: LedgerV1) -> Ledger {
        ledger(&l.fixed, l.postings)
    }
}

impl From<LedgerV2> for Ledger {
    fn from(l: LedgerV2) -> Ledger {
        ledger(&l.fixed, l.postings)
    }
}

/// `Payment` of versions 1 and 2.
#[derive(Deserialize)]
struct PaymentV2 {
    order: u64,
    method: PaymentMethod,
    status: PaymentStatus,
    capture: CaptureMode,
    amount: u64,
    captured: u64,
    refunded: u64,
    card: Option<Box<CardInfo>>,
    transaction_key: Option<Box<str>>,
    failure_reason: Option<Box<str>>,
    created_at_ms: UnixMs,
    updated_at_ms: UnixMs,
}

impl From<PaymentV2> for Payment {
    fn from(p: PaymentV2) -> Payment {
        Payment {
            order: p.order,
            method: p.method,
            status: p.status,
            capture: p.capture,
            amount: p.amount,
            captured: p.captured,
            refunded: p.refunded,
            card: p.card,
            transaction_key: p.transaction_key,
            failure_reason: p.failure_reason,
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
            gateway: None,
        }
    }
}

/// `Merchant` of versions 1 and 2, `L` being that version's ledger.
#[derive(Deserialize)]
struct MerchantV2<L> {
    id: Arc<str>,
    name: Box<str>,
    currency: Box<str>,
    api_key_hash: [u8; 32],
    created_at_ms: UnixMs,
    items: Indexed<Item>,
    customers: Indexed<Customer>,
    holds: ChunkedVec<Hold>,
    orders: ChunkedVec<Order>,
    // A `ChunkedVec` encodes exactly as a `Vec`: decoded as one, it is converted by value.
    payments: Vec<PaymentV2>,
    queues: Indexed<Queue>,
    ledger: L,
    idempotency: Idempotency,
}

impl<L: Into<Ledger>> From<MerchantV2<L>> for Merchant {
    fn from(m: MerchantV2<L>) -> Merchant {
        let payments: ChunkedVec<Payment> = m.payments.into_iter().map(Payment::from).collect();
        Merchant {
            id: m.id,
            name: m.name,
            currency: m.currency,
            api_key_hash: m.api_key_hash,
            created_at_ms: m.created_at_ms,
            items: m.items,
            customers: m.customers,
            holds: m.holds,
            orders: m.orders,
            payments,
            queues: m.queues,
            ledger: m.ledger.into(),
            idempotency: m.idempotency,
            dead_letters: ChunkedVec::new(),
        }
    }
}

#[derive(Deserialize)]
struct ImageV2<L> {
    merchants: Vec<MerchantV2<L>>,
    applied_events: u64,
}

impl<L: Into<Ledger>> ImageV2<L> {
    fn into_current(self) -> Result<ShardImage, DecodeError> {
        let merchants: ChunkedVec<Merchant> = self.merchants.into_iter().map(Merchant::from).collect();
        let merchants = Indexed::from_all(merchants).map_err(DecodeError::Inconsistent)?;
        Ok(ShardImage { merchants, applied_events: self.applied_events })
    }
}

/// Decodes the body of a snapshot of an older `version` into today's image.
pub(crate) fn decode(version: u16, body: &[u8]) -> Result<ShardImage, DecodeError> {
    match version {
        1 => decode_body::<ImageV2<LedgerV1>>(body)?.into_current(),
        2 => decode_body::<ImageV2<LedgerV2>>(body)?.into_current(),
        _ => Err(DecodeError::UnsupportedVersion { version }),
    }
}
