//! Events: everything that happens, one per change of one aggregate. `apply` is the only
//! thing that changes state, and it changes it only by events; the log stores events, the
//! relay publishes them.
//!
//! Stability: the binary encoding (see `encoding.rs`) identifies variants and fields by
//! position. Append new variants and new `Option` fields at the end only; anything else
//! is a new `encoding::EVENTS_VERSION`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::command::GatewayOp;
use crate::command::{CaptureMode, PaymentMethod};
use crate::ids::{Numbered, UnixMs};
use crate::ledger::Account;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub merchant: Arc<str>,
    /// The `now` of the command that decided it.
    pub at_ms: UnixMs,
    pub body: EventBody,
}

/// Where stock sits. `available + held + sold == stock` for every item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Bucket {
    Available,
    Held,
    Sold,
}

/// What a ledger posting is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    PointsCredit,
    Capture,
    Refund,
    // Appended (variants are encoded by index): points parked for a manual capture, and
    // parked points given back (a partial capture's rest, a void).
    Authorize,
    Release,
}

macro_rules! event_bodies {
    ($($variant:ident => $type_name:literal,)*) => {
        /// One variant per event type; each holds a struct of the same name.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum EventBody { $($variant($variant),)* }

        impl EventBody {
            /// The `type` of the event's envelope (`inventory.*` depends on the move).
            pub fn type_name(&self) -> &'static str {
                #[allow(unreachable_patterns)] // the generated arm for InventoryMoved
                match self {
                    EventBody::InventoryMoved(m) => m.type_name(),
                    $(EventBody::$variant(_) => $type_name,)*
                }
            }
        }

        $(impl From<$variant> for EventBody {
            fn from(data: $variant) -> Self { EventBody::$variant(data) }
        })*

        /// Serializes only the payload struct, for the envelope's `data`.
        pub struct DataRef<'a>(pub &'a EventBody);

        impl Serialize for DataRef<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                #[allow(unreachable_patterns)] // the generated arms for the two above
                match self.0 {
                    // The full card number stays in the log (the gateway worker needs it);
                    // what leaves the process shows the last four digits only.
                    EventBody::PaymentRequested(data) => PublicPaymentRequested::from(data).serialize(s),
                    // Nothing downstream needs anything derived from the API key.
                    EventBody::MerchantCreated(data) => PublicMerchantCreated::from(data).serialize(s),
                    EventBody::ApiKeyRotated(_) => PublicApiKeyRotated {}.serialize(s),
                    $(EventBody::$variant(data) => data.serialize(s),)*
                }
            }
        }
    };
}

event_bodies! {
    MerchantCreated => "merchant.created",
    ItemPut => "item.put",
    ItemRestocked => "item.restocked",
    InventoryMoved => "inventory.moved",
    HoldCreated => "hold.created",
    HoldReleased => "hold.released",
    HoldExpired => "hold.expired",
    HoldConverted => "hold.converted",
    OrderCreated => "order.created",
    OrderPaid => "order.paid",
    OrderCancelled => "order.cancelled",
    OrderExpired => "order.expired",
    OrderRefunded => "order.refunded",
    PaymentRequested => "payment.requested",
    PaymentSubmitted => "payment.submitted",
    PaymentAuthorized => "payment.authorized",
    PaymentCaptured => "payment.captured",
    PaymentRefunded => "payment.refunded",
    PaymentFailed => "payment.failed",
    PaymentVoided => "payment.voided",
    PointsCredited => "points.credited",
    PointsDebited => "points.debited",
    LedgerPosted => "ledger.posted",
    QueuePut => "queue.put",
    TokenIssued => "queue.token_issued",
    TokenActivated => "queue.token_activated",
    TokenExpired => "queue.token_expired",
    IdempotencyRecorded => "idempotency.recorded",
    IdempotencyExpired => "idempotency.expired",
    // Appended for the card path (variants are encoded by index).
    GatewayRequested => "gateway.requested",
    PaymentSubmittedVia => "payment.submitted",
    OrderReopened => "order.reopened",
    GatewayDeadLettered => "payment.dead_lettered",
    DeadLetterRetried => "payment.dead_letter_retried",
    DeadLetterResolved => "payment.dead_letter_resolved",
    // Appended for retention: settled aggregates leave memory (see `tick.rs`).
    OrderArchived => "order.archived",
    PaymentArchived => "payment.archived",
    HoldArchived => "hold.archived",
    TokenArchived => "queue.token_archived",
    // Appended for the operators' console: a merchant's API key replaced.
    ApiKeyRotated => "merchant.api_key_rotated",
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantCreated {
    pub name: Box<str>,
    pub currency: Box<str>,
    #[serde(with = "crate::hex_bytes")]
    pub api_key_hash: [u8; 32],
}

/// `MerchantCreated` as published: without the API key's hash.
#[derive(Serialize)]
struct PublicMerchantCreated<'a> {
    name: &'a str,
    currency: &'a str,
}

impl<'a> From<&'a MerchantCreated> for PublicMerchantCreated<'a> {
    fn from(m: &'a MerchantCreated) -> Self {
        PublicMerchantCreated { name: &m.name, currency: &m.currency }
    }
}

/// The merchant's API key was replaced by the key hashing to `api_key_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRotated {
    #[serde(with = "crate::hex_bytes")]
    pub api_key_hash: [u8; 32],
}

/// `ApiKeyRotated` as published: that it happened, never anything derived from the key.
#[derive(Serialize)]
struct PublicApiKeyRotated {}

/// Creates the item or updates its name, price, stock level and waiting room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemPut {
    pub sku: Arc<str>,
    pub name: Box<str>,
    pub price: u64,
    pub stock: u64,
    pub queue: Option<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRestocked {
    pub sku: Arc<str>,
    pub qty: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryMoved {
    pub sku: Arc<str>,
    pub qty: u64,
    pub from: Bucket,
    pub to: Bucket,
}

impl InventoryMoved {
    pub fn type_name(&self) -> &'static str {
        match (self.from, self.to) {
            (Bucket::Available, Bucket::Held) => "inventory.reserved",
            (Bucket::Held, Bucket::Available) => "inventory.released",
            (_, Bucket::Sold) => "inventory.sold",
            (Bucket::Sold, _) => "inventory.returned",
            _ => "inventory.moved",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: Arc<str>,
    pub qty: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldCreated {
    pub hold: u64,
    pub customer: Arc<str>,
    pub lines: Vec<Line>,
    pub expires_at_ms: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReleased {
    pub hold: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldExpired {
    pub hold: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldConverted {
    pub hold: u64,
    pub order: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: Arc<str>,
    pub qty: u64,
    pub unit_price: u64,
}

/// Creates an order in status `awaiting_payment`; payment events move it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order: u64,
    pub customer: Arc<str>,
    pub lines: Vec<PricedLine>,
    pub total: u64,
    pub hold: Option<u64>,
    /// Set while the order waits for a payment that may never come.
    pub expires_at_ms: Option<UnixMs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderExpired {
    pub order: u64,
}

/// The order's payment was refunded in full (by refunds, not by cancellation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefunded {
    pub order: u64,
}

/// The card of a payment request. `number` is masked (`************1451`): the full number
/// travels only sealed, in `GatewayRequested`. (Logs written before the card path existed
/// hold test numbers here in full; nothing reads more than their last four digits.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardDetails {
    pub number: Box<str>,
    pub kind: Box<str>,
}

impl CardDetails {
    /// The last four digits of the number, ignoring separators.
    pub fn last4(&self) -> Box<str> {
        let digits: String = self.number.chars().filter(char::is_ascii_digit).collect();
        digits[digits.len().saturating_sub(4)..].into()
    }

    /// `number` with every digit but the last four replaced by `*` and separators dropped.
    pub fn masked(number: &str, kind: &str) -> CardDetails {
        let digits = number.bytes().filter(u8::is_ascii_digit).count();
        let last4 = CardDetails { number: number.into(), kind: kind.into() }.last4();
        let mut masked = "*".repeat(digits.saturating_sub(last4.len()));
        masked.push_str(&last4);
        CardDetails { number: masked.into(), kind: kind.into() }
    }
}

/// `PaymentRequested` as published: the card reduced to its last four digits and scheme.
#[derive(Serialize)]
struct PublicPaymentRequested<'a> {
    payment: u64,
    order: u64,
    method: PaymentMethod,
    amount: u64,
    capture: CaptureMode,
    card: Option<PublicCard<'a>>,
}

#[derive(Serialize)]
struct PublicCard<'a> {
    last4: Box<str>,
    kind: &'a str,
}

impl<'a> From<&'a PaymentRequested> for PublicPaymentRequested<'a> {
    fn from(p: &'a PaymentRequested) -> Self {
        let card = p.card.as_ref().map(|c| PublicCard { last4: c.last4(), kind: &c.kind });
        PublicPaymentRequested {
            payment: p.payment,
            order: p.order,
            method: p.method,
            amount: p.amount,
            capture: p.capture,
            card,
        }
    }
}

/// A payment of `amount` for `order`, status `pending`; the order waits for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequested {
    pub payment: u64,
    pub order: u64,
    pub method: PaymentMethod,
    pub amount: u64,
    pub capture: CaptureMode,
    pub card: Option<CardDetails>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSubmitted {
    pub payment: u64,
    pub transaction_key: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub payment: u64,
    pub transaction_key: Option<Box<str>>,
}

/// Captures `amount` (at most the authorized amount; the rest is released).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub payment: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment: u64,
    pub reason: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentVoided {
    pub payment: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsCredited {
    pub customer: Arc<str>,
    pub amount: u64,
    pub reason: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsDebited {
    pub customer: Arc<str>,
    pub amount: u64,
    pub payment: u64,
}

/// One balanced posting: `amount` debited to one account and credited to another. A
/// posting of two legs with one amount cannot be unbalanced by construction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPosted {
    pub posting: u64,
    pub debit: Account,
    pub credit: Account,
    pub amount: u64,
    pub kind: PostingKind,
    pub payment: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePut {
    pub queue: Arc<str>,
    pub max_active: u64,
    pub active_ttl_s: u64,
}

/// A token joins the end of the waiting line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIssued {
    pub queue: Arc<str>,
    pub seq: u64,
    pub nonce: u64,
    pub customer: Arc<str>,
}

/// The first waiting token becomes active (tokens activate strictly in arrival order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenActivated {
    pub queue: Arc<str>,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExpired {
    pub queue: Arc<str>,
    pub seq: u64,
}

/// The response to an idempotent request, stored with the request's fingerprint. `reply`
/// is the encoded `Reply` (see `encoding::encode_reply`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecorded {
    pub key: Arc<str>,
    pub fingerprint: [u8; 16],
    /// Shared with the state's record: applying it costs a reference count, not a copy.
    pub reply: Arc<[u8]>,
    pub expires_at_ms: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyExpired {
    pub key: Arc<str>,
}

/// A card number the host encrypted (AEAD) before the engine saw the command; only the
/// gateway worker, which holds the key, opens it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCard {
    pub kind: Box<str>,
    pub sealed: Box<[u8]>,
}

/// A call the gateway worker must make, with everything it needs, so that the worker is
/// driven by the log alone: a payment to authorize (with the sealed card), or a capture,
/// void or refund of a payment's gateway transaction. Engine-internal: never published (it
/// holds the sealed card); the public events of the same change say what happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRequested {
    pub payment: u64,
    pub order: u64,
    pub op: GatewayOp,
    pub amount: u64,
    /// Unique per payment and operation (`authorize`, `capture`, `void`, `refund:{refunded
    /// before}`): with the merchant and payment ids it is the gateway call's
    /// `Idempotency-Key`, the same on every retry, so a retry can never charge twice.
    pub key: Box<str>,
    pub capture: CaptureMode,
    /// The gateway transaction, once known (every operation but an early void has one).
    pub transaction_key: Option<Box<str>>,
    /// The gateway holding the transaction, once known.
    pub gateway: Option<Box<str>>,
    /// Authorize only.
    pub card: Option<SealedCard>,
    /// Set when an operator retried dead letter `dl_{n}`.
    pub retry_of: Option<u64>,
}

/// The gateway `gateway` took the payment and named its transaction (`PaymentSubmitted`
/// with the gateway; written instead of it since the card path exists).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSubmittedVia {
    pub payment: u64,
    pub transaction_key: Box<str>,
    pub gateway: Box<str>,
}

/// A card payment failed: the order waits for a payment again, its stock still reserved,
/// until `expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderReopened {
    pub order: u64,
    pub expires_at_ms: UnixMs,
}

/// A capture, void or refund that kept failing at the gateway, kept for an operator (a new
/// dead letter, or `dead_letter` reopened when its retry failed too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayDeadLettered {
    pub dead_letter: u64,
    pub payment: u64,
    pub op: GatewayOp,
    pub key: Box<str>,
    pub amount: u64,
    pub reason: Box<str>,
}

/// An operator retried a dead letter; a `GatewayRequested` of the same operation follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRetried {
    pub dead_letter: u64,
}

/// The retried operation of a dead letter went through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterResolved {
    pub dead_letter: u64,
}

/// A settled order left memory (the cold store keeps it). In the record that archives an
/// order, the `PaymentArchived` of its payment and the `HoldArchived` of the hold it came
/// from (when still in memory) come first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderArchived {
    pub order: u64,
}

/// A payment in a terminal status left memory: with its order, or on its own when it is an
/// earlier, failed payment of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentArchived {
    pub payment: u64,
}

/// A released, expired or converted hold left memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldArchived {
    pub hold: u64,
}

/// An expired waiting-room token left memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenArchived {
    pub queue: Arc<str>,
    pub seq: u64,
}

/// The Kafka topic family an event belongs to (the relay adds the configured prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Merchants,
    Orders,
    Payments,
    Inventory,
    Ledger,
    Points,
    Queue,
    /// Gateway operations that kept failing (`{prefix}dlq`).
    DeadLetters,
}

impl Topic {
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Merchants => "merchants",
            Topic::Orders => "orders",
            Topic::Payments => "payments",
            Topic::Inventory => "inventory",
            Topic::Ledger => "ledger",
            Topic::Points => "points",
            Topic::Queue => "queue",
            Topic::DeadLetters => "dlq",
        }
    }
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        self.body.type_name()
    }

    /// The topic and the aggregate id (the Kafka key) of this event; `None` for events that
    /// are engine-internal (idempotency records) and never leave the process. Events of one
    /// aggregate share the key, so a partitioned consumer sees them in log order.
    pub fn aggregate(&self) -> Option<(Topic, String)> {
        use EventBody as B;
        let order = |n: u64| Numbered::Order.id(n);
        let payment = |n: u64| Numbered::Payment.id(n);
        let hold = |n: u64| Numbered::Hold.id(n);
        let dead_letter = |n: u64| Numbered::DeadLetter.id(n);
        Some(match &self.body {
            B::MerchantCreated(_) => (Topic::Merchants, self.merchant.to_string()),
            B::ApiKeyRotated(_) => (Topic::Merchants, self.merchant.to_string()),
            B::ItemPut(e) => (Topic::Inventory, e.sku.to_string()),
            B::ItemRestocked(e) => (Topic::Inventory, e.sku.to_string()),
            B::InventoryMoved(e) => (Topic::Inventory, e.sku.to_string()),
            B::HoldCreated(e) => (Topic::Inventory, hold(e.hold)),
            B::HoldReleased(e) => (Topic::Inventory, hold(e.hold)),
            B::HoldExpired(e) => (Topic::Inventory, hold(e.hold)),
            B::HoldConverted(e) => (Topic::Inventory, hold(e.hold)),
            B::OrderCreated(e) => (Topic::Orders, order(e.order)),
            B::OrderPaid(e) => (Topic::Orders, order(e.order)),
            B::OrderCancelled(e) => (Topic::Orders, order(e.order)),
            B::OrderExpired(e) => (Topic::Orders, order(e.order)),
            B::OrderRefunded(e) => (Topic::Orders, order(e.order)),
            B::PaymentRequested(e) => (Topic::Payments, payment(e.payment)),
            B::PaymentSubmitted(e) => (Topic::Payments, payment(e.payment)),
            B::PaymentAuthorized(e) => (Topic::Payments, payment(e.payment)),
            B::PaymentCaptured(e) => (Topic::Payments, payment(e.payment)),
            B::PaymentRefunded(e) => (Topic::Payments, payment(e.payment)),
            B::PaymentFailed(e) => (Topic::Payments, payment(e.payment)),
            B::PaymentVoided(e) => (Topic::Payments, payment(e.payment)),
            B::PointsCredited(e) => (Topic::Points, e.customer.to_string()),
            B::PointsDebited(e) => (Topic::Points, e.customer.to_string()),
            // One merchant's postings are one ordered stream.
            B::LedgerPosted(_) => (Topic::Ledger, self.merchant.to_string()),
            B::QueuePut(e) => (Topic::Queue, e.queue.to_string()),
            B::TokenIssued(e) => (Topic::Queue, e.queue.to_string()),
            B::TokenActivated(e) => (Topic::Queue, e.queue.to_string()),
            B::TokenExpired(e) => (Topic::Queue, e.queue.to_string()),
            B::PaymentSubmittedVia(e) => (Topic::Payments, payment(e.payment)),
            B::OrderReopened(e) => (Topic::Orders, order(e.order)),
            B::GatewayDeadLettered(e) => (Topic::DeadLetters, dead_letter(e.dead_letter)),
            B::DeadLetterRetried(e) => (Topic::DeadLetters, dead_letter(e.dead_letter)),
            B::DeadLetterResolved(e) => (Topic::DeadLetters, dead_letter(e.dead_letter)),
            B::OrderArchived(e) => (Topic::Orders, order(e.order)),
            B::PaymentArchived(e) => (Topic::Payments, payment(e.payment)),
            B::HoldArchived(e) => (Topic::Inventory, hold(e.hold)),
            B::TokenArchived(e) => (Topic::Queue, e.queue.to_string()),
            B::IdempotencyRecorded(_) | B::IdempotencyExpired(_) | B::GatewayRequested(_) => return None,
        })
    }
}
