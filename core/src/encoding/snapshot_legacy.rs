//! Snapshots written by older builds, read into today's state. postcard is not
//! self-describing, so each older layout is spelled out as its own types and decoded by
//! version (the header says which), then converted; nothing is inferred from the bytes.
//!
//! | version | what differs from the next one                                             |
//! |---------|----------------------------------------------------------------------------|
//! | 1       | a `Ledger` of four fixed accounts (no `points:authorized`)                  |
//! | 2       | five fixed accounts (no `gateway:authorized`); a `Payment` has no `gateway`; a `Merchant` has no `dead_letters` |
//! | 3       | holds, orders, payments and queue tokens dense by number (`Vec`); an `Item` has no `archived_sold`; a `Merchant` has no `archived_card_net` |
//! | 4       | current                                                                    |
//!
//! An account an older snapshot lacks had zero totals then, a payment had no gateway (card
//! payments did not reach a gateway before version 3), and nothing was archived before
//! version 4.

use std::sync::Arc;

use serde::Deserialize;

use super::decode_body;
use crate::chunked::ChunkedVec;
use crate::command::{CaptureMode, PaymentMethod};
use crate::error::DecodeError;
use crate::ids::UnixMs;
use crate::ledger::{AccountTotals, Ledger, FIXED_ACCOUNTS};
use crate::numbered::NumberedVec;
use crate::state::ShardImage;
use crate::state::{
    CardInfo, Customer, DeadLetter, Hold, Idempotency, Indexed, Item, Keyed, Merchant, Order, Payment, PaymentStatus,
    Queue, Token,
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

/// `Item` of versions 1 to 3 (no `archived_sold`: nothing was archived).
#[derive(Deserialize)]
struct ItemV3 {
    sku: Arc<str>,
    name: Box<str>,
    price: u64,
    stock: u64,
    available: u64,
    held: u64,
    sold: u64,
    queue: Option<Arc<str>>,
}

impl From<ItemV3> for Item {
    fn from(i: ItemV3) -> Item {
        Item {
            sku: i.sku,
            name: i.name,
            price: i.price,
            stock: i.stock,
            available: i.available,
            held: i.held,
            sold: i.sold,
            queue: i.queue,
            archived_sold: 0,
        }
    }
}

/// `Queue` of versions 1 to 3: every token ever issued, by position.
#[derive(Deserialize)]
struct QueueV3 {
    id: Arc<str>,
    max_active: u64,
    active_ttl_s: u64,
    tokens: Vec<Token>,
    next_waiting: u64,
    active: u64,
}

impl From<QueueV3> for Queue {
    fn from(q: QueueV3) -> Queue {
        Queue {
            id: q.id,
            max_active: q.max_active,
            active_ttl_s: q.active_ttl_s,
            tokens: NumberedVec::from_dense(q.tokens),
            next_waiting: q.next_waiting,
            active: q.active,
        }
    }
}

fn indexed<T: Keyed + Clone, V: Into<T>>(values: Vec<V>) -> Result<Indexed<T>, DecodeError> {
    Indexed::from_all(values.into_iter().map(Into::into).collect()).map_err(DecodeError::Inconsistent)
}

/// `Merchant` of version 3: holds, orders and payments dense by number (a `ChunkedVec`
/// encodes exactly as a `Vec`: decoded as one, it is converted by value).
#[derive(Deserialize)]
struct MerchantV3 {
    id: Arc<str>,
    name: Box<str>,
    currency: Box<str>,
    api_key_hash: [u8; 32],
    created_at_ms: UnixMs,
    items: Vec<ItemV3>,
    customers: Indexed<Customer>,
    holds: Vec<Hold>,
    orders: Vec<Order>,
    payments: Vec<Payment>,
    queues: Vec<QueueV3>,
    ledger: Ledger,
    idempotency: Idempotency,
    dead_letters: ChunkedVec<DeadLetter>,
}

impl TryFrom<MerchantV3> for Merchant {
    type Error = DecodeError;
    fn try_from(m: MerchantV3) -> Result<Merchant, DecodeError> {
        Ok(Merchant {
            id: m.id,
            name: m.name,
            currency: m.currency,
            api_key_hash: m.api_key_hash,
            created_at_ms: m.created_at_ms,
            items: indexed(m.items)?,
            customers: m.customers,
            holds: NumberedVec::from_dense(m.holds),
            orders: NumberedVec::from_dense(m.orders),
            payments: NumberedVec::from_dense(m.payments),
            queues: indexed(m.queues)?,
            ledger: m.ledger,
            idempotency: m.idempotency,
            dead_letters: m.dead_letters,
            archived_card_net: 0,
        })
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
    items: Vec<ItemV3>,
    customers: Indexed<Customer>,
    holds: Vec<Hold>,
    orders: Vec<Order>,
    payments: Vec<PaymentV2>,
    queues: Vec<QueueV3>,
    ledger: L,
    idempotency: Idempotency,
}

impl<L: Into<Ledger>> From<MerchantV2<L>> for MerchantV3 {
    fn from(m: MerchantV2<L>) -> MerchantV3 {
        MerchantV3 {
            id: m.id,
            name: m.name,
            currency: m.currency,
            api_key_hash: m.api_key_hash,
            created_at_ms: m.created_at_ms,
            items: m.items,
            customers: m.customers,
            holds: m.holds,
            orders: m.orders,
            payments: m.payments.into_iter().map(Payment::from).collect(),
            queues: m.queues,
            ledger: m.ledger.into(),
            idempotency: m.idempotency,
            dead_letters: ChunkedVec::new(),
        }
    }
}

#[derive(Deserialize)]
struct Image<M> {
    merchants: Vec<M>,
    applied_events: u64,
}

impl<M: Into<MerchantV3>> Image<M> {
    fn into_current(self) -> Result<ShardImage, DecodeError> {
        let mut merchants = ChunkedVec::new();
        for m in self.merchants {
            merchants.push(Merchant::try_from(m.into())?);
        }
        let merchants = Indexed::from_all(merchants).map_err(DecodeError::Inconsistent)?;
        Ok(ShardImage { merchants, applied_events: self.applied_events })
    }
}

/// Decodes the body of a snapshot of an older `version` into today's image.
pub(crate) fn decode(version: u16, body: &[u8]) -> Result<ShardImage, DecodeError> {
    match version {
        1 => decode_body::<Image<MerchantV2<LedgerV1>>>(body)?.into_current(),
        2 => decode_body::<Image<MerchantV2<LedgerV2>>>(body)?.into_current(),
        3 => decode_body::<Image<MerchantV3>>(body)?.into_current(),
        _ => Err(DecodeError::UnsupportedVersion { version }),
    }
}
