//! surge-core: the whole business state of surge as a deterministic state machine.
//!
//! - `decide(request, now) -> Result<Decided, CoreError>` validates and returns events;
//!   `apply(event)` is the only mutation. A refused command changes nothing.
//! - No I/O, no clock, no randomness, no threads: time and nonces come in with commands,
//!   ids are counters, so replaying the same events gives byte-identical state
//!   (`Shard::digest`).
//! - Sharded by merchant: everything of a merchant lives in one `Shard`; no command spans
//!   shards.
//!
//! Module map: `command` (inputs), `event` (what happens), `decide`/`tick` (commands and
//! time to events), `apply` (events to state), `state` (the data; `chunked` and `split_map` are its growable containers), `view` (read models and
//! replies), `ledger` (chart of accounts), `encoding` (log and snapshot bytes), `envelope`
//! (JSON shape for the relay), `image` (the host's log
//! records and snapshots of many shards), `invariants` (the rules, checked), `sim` (random command
//! sequences for property tests and the fuzzer).

pub mod apply;
pub mod chunked;
pub mod command;
pub mod decide;
pub mod encoding;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod event;
mod hex_bytes;
pub mod ids;
pub mod image;
pub mod invariants;
pub mod ledger;
pub mod limits;
pub mod numbered;
pub mod shard;
pub mod sim;
pub mod split_map;
pub mod state;
pub mod tick;
pub mod view;

pub use command::{
    CaptureMode, CardSpec, Command, Idempotency, ItemSpec, LineSpec, OrderSource, PaymentMethod, PaymentSpec, Request,
};
pub use decide::{Decided, Target};
pub use engine::{shard_of, Engine};
pub use error::{ApplyError, CoreError, DecodeError, SettingsError};
pub use event::{Event, EventBody, Topic};
pub use ids::UnixMs;
pub use shard::{FrozenShard, Outcome, Settings, Shard};
pub use view::Reply;
