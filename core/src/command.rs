//! Commands: everything the HTTP contract can ask of the engine, already parsed from JSON
//! by the API layer but not yet validated (validation is `decide`'s job, so the rules live
//! in one place and the fuzzer reaches them).

use serde::{Deserialize, Serialize};

/// One merchant-scoped request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The authenticated merchant (for `CreateMerchant`: the id to create).
    pub merchant: String,
    /// `Idempotency-Key` and the fingerprint of the request it came with.
    pub idempotency: Option<Idempotency>,
    pub command: Command,
}

/// The caller computes the fingerprint over whatever identifies "the same request"
/// (method, path and body); the engine only compares fingerprints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: [u8; 16],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `api_key_hash` is the SHA-256 of the key the caller generated; the key itself never
    /// reaches the engine or the log.
    CreateMerchant {
        name: String,
        currency: String,
        api_key_hash: [u8; 32],
    },
    PutItem(ItemSpec),
    PutItems {
        items: Vec<ItemSpec>,
    },
    Restock {
        sku: String,
        qty: u64,
    },
    CreateHold {
        customer: String,
        lines: Vec<LineSpec>,
        ttl_s: Option<u64>,
        queue_token: Option<String>,
    },
    ReleaseHold {
        hold: String,
    },
    CreateOrder {
        customer: String,
        source: OrderSource,
        payment: PaymentSpec,
        queue_token: Option<String>,
    },
    /// Pays an `awaiting_payment` order.
    PayOrder {
        order: String,
        payment: PaymentSpec,
    },
    CancelOrder {
        order: String,
    },
    CapturePayment {
        payment: String,
        amount: Option<u64>,
    },
    RefundPayment {
        payment: String,
        amount: Option<u64>,
    },
    VoidPayment {
        payment: String,
    },
    /// The gateway `gateway` took the payment request and named its transaction.
    GatewayAccepted {
        payment: String,
        transaction_key: String,
        gateway: String,
    },
    /// The gateway approved the payment (callback `SUCCESS`, or the reconciler's look-up).
    /// For a payment that has already failed or been voided, this asks for the approval to
    /// be voided at the gateway (a late approval must never stay a charge).
    GatewayApproved {
        payment: String,
        transaction_key: String,
    },
    /// The gateway declined it (callback `FAILED`, or the reconciler's look-up).
    GatewayDeclined {
        payment: String,
        reason: String,
    },
    /// The gateway worker gave up (no gateway took or settled the payment in time): the
    /// payment fails, and whatever a request that went unanswered may have created at the
    /// gateway is voided.
    GatewayGaveUp {
        payment: String,
        reason: String,
    },
    /// A capture, void or refund kept failing at the gateway: it becomes a dead letter (or
    /// the dead letter it was a retry of opens again; a repeated report changes nothing).
    GatewayOpFailed {
        payment: String,
        op: GatewayOp,
        /// The operation's idempotency key suffix (`GatewayRequested::key`).
        key: String,
        amount: u64,
        reason: String,
    },
    /// An operator retries a dead letter (`dl_{n}`): the operation is requested again.
    RetryDeadLetter {
        dead_letter: String,
    },
    /// The retry of dead letter number `dead_letter` went through at the gateway.
    ResolveDeadLetter {
        dead_letter: u64,
    },
    CreditPoints {
        customer: String,
        amount: u64,
        reason: String,
    },
    PutQueue {
        queue: String,
        max_active: u64,
        active_ttl_s: u64,
    },
    /// `nonce` comes from the caller's random source; it makes tokens unguessable while the
    /// engine stays deterministic.
    IssueToken {
        queue: String,
        customer: String,
        nonce: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSpec {
    pub sku: String,
    pub name: String,
    pub price: u64,
    pub stock: u64,
    pub queue: Option<String>,
}

impl ItemSpec {
    /// Items `sku-0`, `sku-1`, ... named `item 0`, ... with one price and stock, in no
    /// queue: the catalogue that benches, examples and tests set up.
    pub fn numbered(count: usize, price: u64, stock: u64) -> Vec<ItemSpec> {
        (0..count)
            .map(|i| ItemSpec { sku: format!("sku-{i}"), name: format!("item {i}"), price, stock, queue: None })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSpec {
    pub sku: String,
    pub qty: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderSource {
    Lines(Vec<LineSpec>),
    Hold(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSpec {
    pub method: PaymentMethod,
    pub card: Option<CardSpec>,
    pub capture: CaptureMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Points,
    Card,
    None,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Points => "points",
            PaymentMethod::Card => "card",
            PaymentMethod::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSpec {
    /// The number as the client sent it: validated here, then only its last four digits
    /// are kept (events, state, replies).
    pub number: String,
    /// The card scheme as the gateway names it (`SAMSUNG`, `KB`, ...).
    pub kind: String,
    /// The number encrypted by the host (AEAD); opaque to the engine, which logs it for
    /// the gateway worker, the only reader that can open it.
    pub sealed: Box<[u8]>,
}

/// `automatic` captures as soon as the gateway approves; `manual` waits for a capture call.
/// Points payments are always captured at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    #[default]
    Automatic,
    Manual,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Automatic => "automatic",
            CaptureMode::Manual => "manual",
        }
    }
}

/// What the gateway worker is asked to do for a card payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayOp {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl GatewayOp {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayOp::Authorize => "authorize",
            GatewayOp::Capture => "capture",
            GatewayOp::Void => "void",
            GatewayOp::Refund => "refund",
        }
    }
}
