//! The business state of one merchant. Plain data: `apply.rs` changes it, `decide.rs` and
//! `view.rs` read it. Collections that are looked up by a client's string have a hash index
//! beside them that is rebuilt on restore and never iterated, so hashing can never leak
//! into state, order or output.
//!
//! Everything that grows with traffic (orders, payments, holds, customers, queue tokens,
//! idempotency keys, and the indexes over them) is a `ChunkedVec` / `ChunkedDeque` /
//! `SplitMap` / `NumberedVec` (whose archived entries leave memory, see `numbered.rs`), which grow without ever copying or rehashing more than a few thousand
//! entries in one command (see `chunked.rs`, `split_map.rs`); they serialize exactly as the
//! `Vec`s they replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chunked::{ChunkedDeque, ChunkedVec};
use crate::command::{CaptureMode, PaymentMethod};
use crate::error::SettingsError;
use crate::event::{Bucket, GatewayOp};
use crate::ids::UnixMs;
use crate::ledger::{AccountTotals, Ledger};
use crate::limits::{IDEMPOTENCY_TTL_MS, RETAIN_SETTLED_MS_DEFAULT};
use crate::numbered::NumberedVec;
use crate::split_map::SplitMap;

/// Hash maps keyed by client-chosen strings. foldhash is several times faster than std's
/// SipHash on short keys and its per-process random seed keeps basic HashDoS resistance.
/// The seed never matters to state: these maps are indexes and are never iterated.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    pub id: Arc<str>,
    pub name: Box<str>,
    pub currency: Box<str>,
    pub api_key_hash: [u8; 32],
    pub created_at_ms: UnixMs,
    pub items: Indexed<Item>,
    pub customers: Indexed<Customer>,
    /// Hold number n is at index `n - 1`; likewise orders and payments. Archived ones
    /// have left (`archived_at`).
    pub holds: NumberedVec<Hold>,
    pub orders: NumberedVec<Order>,
    pub payments: NumberedVec<Payment>,
    pub queues: Indexed<Queue>,
    pub ledger: Ledger,
    pub idempotency: Idempotency,
    /// Gateway operations that kept failing (`dl_{n}` is `dead_letters[n - 1]`).
    pub dead_letters: ChunkedVec<DeadLetter>,
    /// What archived card payments left the gateway owing (captured minus refunded): the
    /// `gateway:clearing` balance they account for after they left memory.
    pub archived_card_net: u128,
}

impl Merchant {
    pub fn hold(&self, n: u64) -> Option<&Hold> {
        self.holds.get(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub fn order(&self, n: u64) -> Option<&Order> {
        self.orders.get(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub fn payment(&self, n: u64) -> Option<&Payment> {
        self.payments.get(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub(crate) fn hold_mut(&mut self, n: u64) -> Option<&mut Hold> {
        self.holds.get_mut(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub(crate) fn order_mut(&mut self, n: u64) -> Option<&mut Order> {
        self.orders.get_mut(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub(crate) fn payment_mut(&mut self, n: u64) -> Option<&mut Payment> {
        self.payments.get_mut(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    /// When hold `n` was archived (at the latest); `None` if it is live or never existed.
    pub fn hold_archived_at(&self, n: u64) -> Option<UnixMs> {
        self.holds.archived_at(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub fn order_archived_at(&self, n: u64) -> Option<UnixMs> {
        self.orders.archived_at(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub fn payment_archived_at(&self, n: u64) -> Option<UnixMs> {
        self.payments.archived_at(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    /// When the hold, order or payment named `id` (`hold_{n}`, `ord_{n}`, `pay_{n}`) was
    /// archived (at the latest); `None` if it is live, never existed or is no such id.
    pub fn archived_at(&self, id: &str) -> Option<UnixMs> {
        use crate::ids::Numbered;
        if let Some(n) = Numbered::Order.parse(id) {
            return self.order_archived_at(n);
        }
        if let Some(n) = Numbered::Payment.parse(id) {
            return self.payment_archived_at(n);
        }
        self.hold_archived_at(Numbered::Hold.parse(id)?)
    }
    /// When token `token` (`qt_{seq}_{nonce}`) of waiting room `queue` was archived (at the
    /// latest); `None` if it is live, never existed or is no token string. The token id
    /// holds no queue, so it takes one of its own; and an archived token's nonce has left
    /// memory with it, so any well-formed token string of an archived `seq` answers.
    pub fn token_archived_at(&self, queue: &str, token: &str) -> Option<UnixMs> {
        let (seq, _) = crate::ids::parse_token(token)?;
        self.queues.get(queue)?.tokens.archived_at(usize::try_from(seq).ok()?)
    }
    pub fn dead_letter(&self, n: u64) -> Option<&DeadLetter> {
        self.dead_letters.get(usize::try_from(n).ok()?.checked_sub(1)?)
    }
    pub(crate) fn dead_letter_mut(&mut self, n: u64) -> Option<&mut DeadLetter> {
        self.dead_letters.get_mut(usize::try_from(n).ok()?.checked_sub(1)?)
    }
}

/// Something stored in creation order and found by its string id.
pub trait Keyed {
    fn key(&self) -> &Arc<str>;
}

/// A sequence in creation order (canonical: snapshots and digests see only this, encoded
/// as a `Vec`) plus a hash index from id to position (derived: rebuilt on restore).
#[derive(Clone, Debug)]
pub struct Indexed<T> {
    all: ChunkedVec<T>,
    index: SplitMap<Arc<str>, u32>,
}

impl<T> Default for Indexed<T> {
    fn default() -> Self {
        Indexed { all: ChunkedVec::new(), index: SplitMap::default() }
    }
}

impl<T: Keyed + Clone> Indexed<T> {
    pub fn get(&self, key: &str) -> Option<&T> {
        self.all.get(*self.index.get(key)? as usize)
    }
    pub fn position(&self, key: &str) -> Option<u32> {
        self.index.get(key).copied()
    }
    pub fn at(&self, pos: u32) -> Option<&T> {
        self.all.get(pos as usize)
    }
    pub(crate) fn at_mut(&mut self, pos: u32) -> Option<&mut T> {
        self.all.get_mut(pos as usize)
    }
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut T> {
        let pos = *self.index.get(key)?;
        self.all.get_mut(pos as usize)
    }
    /// Appends a new entry; the caller has checked the key is new.
    pub(crate) fn push(&mut self, value: T) -> u32 {
        let pos = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        assert!(pos < u32::MAX, "more than 2^32 entries in one merchant collection");
        let previous = self.index.insert(value.key().clone(), pos);
        assert!(previous.is_none(), "duplicate key {}", value.key());
        self.all.push(value);
        pos
    }
    pub fn iter(&self) -> crate::chunked::Iter<'_, T> {
        self.all.iter()
    }
    /// The canonical sequence (what snapshots hold).
    pub(crate) fn all(&self) -> &ChunkedVec<T> {
        &self.all
    }
    pub fn len(&self) -> usize {
        self.all.len()
    }
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
    pub(crate) fn from_all(all: ChunkedVec<T>) -> Result<Self, String> {
        let mut index = SplitMap::default();
        for (pos, value) in all.iter().enumerate() {
            let pos = u32::try_from(pos).map_err(|_| "too many entries".to_string())?;
            if index.insert(value.key().clone(), pos).is_some() {
                return Err(format!("duplicate key {}", value.key()));
            }
        }
        Ok(Indexed { all, index })
    }
}

impl<T: PartialEq> PartialEq for Indexed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.all == other.all
    }
}
impl<T: Eq> Eq for Indexed<T> {}

impl<T: Serialize> Serialize for Indexed<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.all.serialize(s)
    }
}

impl<'de, T: Deserialize<'de> + Keyed + Clone> Deserialize<'de> for Indexed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Indexed::from_all(ChunkedVec::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: Arc<str>,
    pub name: Box<str>,
    pub price: u64,
    pub stock: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub queue: Option<Arc<str>>,
    /// Of `sold`: what archived orders (paid or refunded) had sold.
    pub archived_sold: u64,
}

impl Keyed for Item {
    fn key(&self) -> &Arc<str> {
        &self.sku
    }
}

impl Item {
    pub fn bucket(&self, bucket: Bucket) -> u64 {
        match bucket {
            Bucket::Available => self.available,
            Bucket::Held => self.held,
            Bucket::Sold => self.sold,
        }
    }
    pub(crate) fn bucket_mut(&mut self, bucket: Bucket) -> &mut u64 {
        match bucket {
            Bucket::Available => &mut self.available,
            Bucket::Held => &mut self.held,
            Bucket::Sold => &mut self.sold,
        }
    }
    /// Rule 3 of the design: `available + held + sold == stock` (each term is unsigned).
    pub fn is_conserved(&self) -> bool {
        self.available.checked_add(self.held).and_then(|s| s.checked_add(self.sold)) == Some(self.stock)
    }
}

/// Anyone who held, ordered, queued or got points. Points are never negative (unsigned),
/// and always equal the negated balance of the customer's points account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Arc<str>,
    pub points: u64,
    pub account: AccountTotals,
}

impl Keyed for Customer {
    fn key(&self) -> &Arc<str> {
        &self.id
    }
}

/// One line of a hold or an order, by item position (4 bytes) rather than by sku string:
/// a live order line costs 16 bytes here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLine {
    pub item: u32,
    pub qty: u32,
    pub unit_price: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Held,
    Released,
    Expired,
    Converted,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
            HoldStatus::Converted => "converted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub customer: u32,
    pub status: HoldStatus,
    /// `unit_price` is unused (0) in holds: the order takes the price at conversion.
    pub lines: Box<[StateLine]>,
    pub created_at_ms: UnixMs,
    pub expires_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
    pub order: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    AwaitingPayment,
    PendingPayment,
    Paid,
    Cancelled,
    Expired,
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Refunded => "refunded",
        }
    }
    /// Where the order's stock sits in this status.
    pub fn stock_bucket(self) -> Option<Bucket> {
        match self {
            OrderStatus::AwaitingPayment | OrderStatus::PendingPayment => Some(Bucket::Held),
            OrderStatus::Paid | OrderStatus::Refunded => Some(Bucket::Sold),
            OrderStatus::Cancelled | OrderStatus::Expired => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub customer: u32,
    pub status: OrderStatus,
    pub lines: Box<[StateLine]>,
    pub total: u64,
    pub hold: Option<u64>,
    pub payment: Option<u64>,
    pub created_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
    pub expires_at_ms: Option<UnixMs>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    Failed,
    Voided,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Captured => "captured",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Voided => "voided",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardInfo {
    pub last4: Box<str>,
    pub kind: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub order: u64,
    pub method: PaymentMethod,
    pub status: PaymentStatus,
    pub capture: CaptureMode,
    /// Requested (and, once authorized, authorized) amount.
    pub amount: u64,
    pub captured: u64,
    pub refunded: u64,
    pub card: Option<Box<CardInfo>>,
    pub transaction_key: Option<Box<str>>,
    pub failure_reason: Option<Box<str>>,
    pub created_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
    /// The gateway holding `transaction_key` (cards, once a gateway took the payment).
    pub gateway: Option<Box<str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// Waiting for an operator.
    Open,
    /// Requested again; it is reopened if it fails again.
    Retried,
    /// Its retry went through.
    Resolved,
}

impl DeadLetterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Open => "open",
            DeadLetterStatus::Retried => "retried",
            DeadLetterStatus::Resolved => "resolved",
        }
    }
}

/// A capture, void or refund of a card payment that the gateway kept refusing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub payment: u64,
    pub op: GatewayOp,
    /// The operation's idempotency key suffix (retries reuse it).
    pub key: Box<str>,
    pub amount: u64,
    /// Why the last attempt failed.
    pub reason: Box<str>,
    pub status: DeadLetterStatus,
    /// How many times it was dead-lettered (1 + failed retries).
    pub attempts: u32,
    pub created_at_ms: UnixMs,
    pub updated_at_ms: UnixMs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Waiting,
    Active,
    Expired,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Waiting => "waiting",
            TokenStatus::Active => "active",
            TokenStatus::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub customer: u32,
    pub nonce: u64,
    pub status: TokenStatus,
    pub issued_at_ms: UnixMs,
    /// Set when it becomes active.
    pub active_until_ms: Option<UnixMs>,
}

/// A waiting room. Tokens are numbered in arrival order (`seq` = index in `tokens`) and
/// activate strictly in that order, so the waiting ones are exactly `tokens[next_waiting..]`
/// and a waiting token's position is `seq - next_waiting + 1`. Expired tokens are archived
/// after the retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub id: Arc<str>,
    pub max_active: u64,
    pub active_ttl_s: u64,
    pub tokens: NumberedVec<Token>,
    pub next_waiting: u64,
    pub active: u64,
}

impl Keyed for Queue {
    fn key(&self) -> &Arc<str> {
        &self.id
    }
}

impl Queue {
    pub fn waiting(&self) -> u64 {
        self.tokens.len() as u64 - self.next_waiting
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: [u8; 16],
    pub reply: Arc<[u8]>,
    pub expires_at_ms: UnixMs,
    /// The shard's applied-event count when this record was applied. The record is in
    /// flight until the host reports that many events durable (`Shard::mark_durable`).
    pub applied_seq: u64,
}

/// Idempotency records of one merchant, in the order they were recorded (which is also
/// the order they expire in, up to clock steps backwards, which only delay expiry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Idempotency {
    pub(crate) records: SplitMap<Arc<str>, IdempotencyRecord>,
    pub(crate) order: ChunkedDeque<Arc<str>>,
}

impl Idempotency {
    pub fn get(&self, key: &str) -> Option<&IdempotencyRecord> {
        self.records.get(key)
    }
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
    /// The oldest key and its record.
    pub fn oldest(&self) -> impl Iterator<Item = (&Arc<str>, &IdempotencyRecord)> {
        self.order.iter().filter_map(|k| Some((k, self.records.get(k)?)))
    }
}

impl Serialize for Idempotency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Binary formats need the length up front; `order` and `records` hold the same keys.
        s.collect_seq(self.order.iter().map(|k| (k, self.records.get(k))))
    }
}

impl<'de> Deserialize<'de> for Idempotency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Idempotency;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of idempotency records")
            }
            // Entry by entry: no intermediate `Vec` of every key.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Idempotency, A::Error> {
                use serde::de::Error;
                let mut out = Idempotency::default();
                while let Some((key, record)) = seq.next_element::<(Arc<str>, Option<IdempotencyRecord>)>()? {
                    let record = record.ok_or_else(|| A::Error::custom("idempotency key without record"))?;
                    if out.records.insert(key.clone(), record).is_some() {
                        return Err(A::Error::custom("duplicate idempotency key"));
                    }
                    out.order.push_back(key);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Entries)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Shard {
    pub(crate) merchants: Indexed<Merchant>,
    /// Expiry deadlines of held holds, unpaid orders and active tokens. Derived from the
    /// merchants (rebuilt on restore); kept here so `tick` finds what is due in O(log n).
    pub(crate) deadlines: BTreeSet<Deadline>,
    /// Events applied since the empty state (part of the canonical state).
    pub(crate) applied_events: u64,
    /// Events the host reports durable. Runtime only: not in snapshots or the digest.
    pub(crate) durable_events: u64,
    /// The host's time settings (runtime only, see [`Settings`]).
    pub(crate) settings: Settings,
    /// Where the tick's archive scan goes on next, per (merchant, kind, queue). Runtime only:
    /// it steers which settled aggregates a tick looks at first, never what is decided
    /// about one, and replay applies the logged decisions without it.
    pub(crate) archive_cursors: BTreeMap<(u32, u8, u32), usize>,
}

/// The time settings a host passes in. They shape decisions only (`execute`, `tick`), never
/// `apply`: what they decide is in the events (an idempotency record carries its expiry, an
/// archive is an event), so replay reproduces the same state whatever the settings of the
/// process that replays. Not part of snapshots or the digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long an idempotency record is kept.
    pub idempotency_ttl_ms: u64,
    /// How long a settled aggregate stays in memory after its last change before the tick
    /// archives it; also a paid order's refund window (see `tick.rs`). Never shorter than
    /// `idempotency_ttl_ms`.
    pub retain_settled_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { idempotency_ttl_ms: IDEMPOTENCY_TTL_MS, retain_settled_ms: RETAIN_SETTLED_MS_DEFAULT }
    }
}

impl Settings {
    /// Refuses a retention shorter than the idempotency window (a retried request inside
    /// the window must find what its first attempt changed) or a zero window.
    pub fn new(idempotency_ttl_ms: u64, retain_settled_ms: u64) -> Result<Settings, SettingsError> {
        if idempotency_ttl_ms == 0 {
            return Err(SettingsError::ZeroIdempotencyWindow);
        }
        if retain_settled_ms < idempotency_ttl_ms {
            return Err(SettingsError::RetentionShorterThanWindow { retain_settled_ms, idempotency_ttl_ms });
        }
        Ok(Settings { idempotency_ttl_ms, retain_settled_ms })
    }
}

impl Keyed for Merchant {
    fn key(&self) -> &Arc<str> {
        &self.id
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    pub at_ms: UnixMs,
    pub merchant: u32,
    pub kind: DeadlineKind,
    /// Hold or order number, or queue position.
    pub a: u64,
    /// Token sequence number (tokens only).
    pub b: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DeadlineKind {
    Hold,
    Order,
    Token,
}

/// The canonical form of a shard: what snapshots hold and the digest covers.
#[derive(Serialize, Deserialize)]
pub(crate) struct ShardImage {
    pub merchants: Indexed<Merchant>,
    pub applied_events: u64,
}

#[derive(Serialize)]
pub(crate) struct ShardImageRef<'a> {
    pub merchants: &'a Indexed<Merchant>,
    pub applied_events: u64,
}
