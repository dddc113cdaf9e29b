//! Every bound the contract (`docs/api.md`, "Limits") and the engine itself impose.
//! Input outside these is `invalid_request` naming the field; the engine's own loops are
//! bounded by the `*_MAX` constants below so one step never does unbounded work.

/// Ids (sku, customer, queue, merchant): 1..=64 chars from `[A-Za-z0-9_.:-]`.
pub const ID_LEN_MAX: usize = 64;
/// Lines in one order or hold.
pub const LINES_MAX: usize = 100;
/// Quantity of one line or one restock.
pub const QTY_MAX: u64 = 10_000;
/// Any amount, price or stock level, in minor units or pieces.
pub const AMOUNT_MAX: u64 = 1_000_000_000_000_000;
/// Hold and queue-token lifetimes.
pub const TTL_S_MAX: u64 = 3_600;
/// Items in one bulk put.
pub const BULK_ITEMS_MAX: usize = 10_000;
/// Free text: item and merchant names, reasons, in characters (as JSON Schema's
/// `maxLength` counts them).
pub const TEXT_CHARS_MAX: usize = 256;
/// A gateway's reason is cut to this many bytes before it becomes a command (so it is
/// within `TEXT_CHARS_MAX` too).
pub const TEXT_BYTES_MAX: usize = 256;
/// Idempotency keys: 1..=255 printable ASCII.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// Card numbers as the gateway takes them ("1234-5678-9814-1451").
pub const CARD_NUMBER_LEN_MAX: usize = 32;
/// A sealed card number (nonce, ciphertext, tag) is far smaller; anything larger is a host bug.
pub const CARD_SEALED_BYTES_MAX: usize = 256;
/// Concurrently active tokens of one waiting room.
pub const QUEUE_ACTIVE_MAX: u64 = 1_000_000;

/// Default hold lifetime when the request names none.
pub const HOLD_TTL_S_DEFAULT: u64 = 300;
/// An order created with payment method `none` keeps its stock reserved this long.
pub const UNPAID_ORDER_TTL_MS: u64 = 15 * 60 * 1_000;
/// Idempotency records are kept at least this long (the contract says >= 24 h).
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1_000;

/// How long a settled aggregate stays in memory after its last change, by default
/// (`surge serve --retain-settled`): 7 days.
pub const RETAIN_SETTLED_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1_000;

/// Expirations (holds, orders, tokens) one tick decides at most; the rest wait for the next
/// tick, so a backlog after downtime becomes several bounded log records, not one huge one.
pub const TICK_EXPIRIES_MAX: usize = 4_096;
/// Queue-token activations one tick decides at most, across all queues of a shard.
pub const TICK_ACTIVATIONS_MAX: usize = 4_096;
/// Idempotency records one tick forgets at most.
pub const TICK_IDEMPOTENCY_MAX: usize = 4_096;
/// Archive events one tick decides at most (an order's archive is up to three: its
/// payment, its hold, itself), across all merchants of a shard.
pub const TICK_ARCHIVES_MAX: usize = TICK_EXPIRIES_MAX;
/// Live aggregates one tick's archive scan looks at at most, across all merchants of a
/// shard; the scan goes on from there at the next tick.
pub const TICK_ARCHIVE_SCAN_MAX: usize = 4 * TICK_EXPIRIES_MAX;
/// Events in one decoded batch: a bulk put of `BULK_ITEMS_MAX` items plus slack.
pub const BATCH_EVENTS_MAX: usize = 4 * BULK_ITEMS_MAX;

/// Operations in one `POST /v1/batch`, JSON or binary.
pub const BATCH_OPS_MAX: usize = 1_000;
/// Request bodies, in bytes: a binary batch must fit too.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
