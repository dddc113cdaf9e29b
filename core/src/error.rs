//! The engine's typed errors. Each `CoreError` variant is exactly one error code of the
//! contract (`code()`); the HTTP layer owns the status numbers and the problem+json shape.

use thiserror::Error;

/// Why a command was refused. A refused command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CoreError {
    /// Input outside the contract; `field` names it (JSON field or header).
    #[error("{field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
    /// No such resource for this merchant (another merchant's ids look the same).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("insufficient stock for {sku}: {available} available")]
    InsufficientStock { sku: String, available: u64 },
    /// The resource is in a status that does not allow the operation.
    #[error("not allowed while {status}")]
    InvalidState { status: &'static str },
    #[error("a request with this idempotency key is still in flight")]
    IdempotencyKeyInUse,
    #[error("this idempotency key was used with a different request")]
    IdempotencyKeyReused,
    #[error("insufficient points: balance {balance}, required {required}")]
    InsufficientPoints { balance: u64, required: u64 },
    /// An item of the request sits behind a waiting room and no active token of it was given.
    #[error("an active token of waiting room {queue} is required")]
    QueueTokenRequired { queue: String },
    /// The resource was settled and archived (`archived_at_ms`: at or before then); the cold
    /// store keeps it, memory does not.
    #[error("{what} was archived")]
    Archived { what: &'static str, archived_at_ms: crate::ids::UnixMs },
}

impl CoreError {
    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::InvalidRequest { .. } => "invalid_request",
            CoreError::NotFound { .. } => "not_found",
            CoreError::InsufficientStock { .. } => "insufficient_stock",
            CoreError::InvalidState { .. } => "invalid_state",
            CoreError::IdempotencyKeyInUse => "idempotency_key_in_use",
            CoreError::IdempotencyKeyReused => "idempotency_key_reused",
            CoreError::InsufficientPoints { .. } => "insufficient_points",
            CoreError::QueueTokenRequired { .. } => "queue_token_required",
            CoreError::Archived { .. } => "archived",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CoreError::InvalidRequest { field, reason: reason.into() }
    }

    pub(crate) fn not_found(what: &'static str) -> Self {
        CoreError::NotFound { what }
    }
}

/// An event that cannot be applied to the current state. Events that `decide` produced
/// always apply; this only comes from a log or snapshot that does not belong to this state
/// (corruption that passed the checksum, or a mix-up of files), and replay stops on it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("event {event_type} for merchant {merchant} does not apply: {reason}")]
pub struct ApplyError {
    pub event_type: &'static str,
    pub merchant: String,
    pub reason: &'static str,
}

/// Bytes that are not a valid encoding (event batch, snapshot, stored reply).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("too short: {len} bytes")]
    TooShort { len: usize },
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported version {version}")]
    UnsupportedVersion { version: u16 },
    #[error("malformed body: {0}")]
    Body(String),
    #[error("header says {expected} events, body has {actual}")]
    CountMismatch { expected: u32, actual: usize },
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    #[error("snapshot does not restore: {0}")]
    Inconsistent(String),
}

/// Time settings a host may not run with (`Settings::new`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SettingsError {
    #[error("the idempotency window must be longer than 0")]
    ZeroIdempotencyWindow,
    #[error("the retention of settled aggregates ({retain_settled_ms} ms) is shorter than the idempotency window ({idempotency_ttl_ms} ms)")]
    RetentionShorterThanWindow { retain_settled_ms: u64, idempotency_ttl_ms: u64 },
}
