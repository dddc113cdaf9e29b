//! surge-relay: everything that leaves surge goes through here, driven only by the durable
//! log (the transactional outbox). It reads the log with `surge_wal::Tailer`, decodes
//! records with `surge_core::image`, and writes them to sinks; it knows nothing else of the
//! server, so it runs inside `surge serve` or as `surge relay` on the directory of a running
//! server, with the same code. In cluster mode the same drivers and sinks read a
//! partition's replicated log instead, through a `source::LogSource`.
//!
//! Module map: `batch` (durable records read into bounded batches of events), `source`
//! (where a driver reads records and keeps checkpoints: the local log, or a partition's
//! replicated log), `sink` (what a sink promises), `driver` (one thread per sink: tail, write, checkpoint, retry with
//! backoff and a circuit breaker), `breaker`, `status` (lag and state per sink, rendered as
//! Prometheus text), `kafka` (rdkafka producer), `mariadb` (cold store; and `mariadb::read`,
//! which the server uses to read archived orders and payments back), `gateway` (the card
//! payment worker: log to gateway calls, answers back into the engine as commands).
//!
//! Invariants: a sink never sees a record beyond the durable LSN (the tailer stops there);
//! a sink's checkpoint moves only after the sink acknowledged everything up to it; records
//! reach a sink in log order, and after a failure the sink resumes from its own checkpoint,
//! so every record is written at least once and, per aggregate, in order.

pub mod batch;
pub mod breaker;
pub mod driver;
pub mod gateway;
pub mod kafka;
pub mod mariadb;
pub mod setup;
pub mod sink;
pub mod source;
pub mod status;

pub use batch::{Batch, LoggedEvent};
pub use driver::{DriverConfig, Relay};
pub use sink::{Sink, SinkError};
pub use source::{LogCursor, LogSource, WalSource};
pub use status::SinkStatus;
