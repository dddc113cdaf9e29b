//! The card payment gateway worker: it reads authorization, capture, void and refund
//! requests from the durable log (the engine logs them as `GatewayRequested`), calls the
//! payment gateway over HTTP, and reports what the gateway said back into the engine as
//! commands. Request handlers never wait on a gateway; the log is the queue, so a request
//! logged before a crash is made after the restart.
//!
//! Module map: `config` (every limit), `scheduler` (the decisions, no I/O), `client` (the
//! gateway's HTTP API as typed outcomes), `worker` (the threads: tail, calls, checkpoint),
//! `port` (how reports reach the engine; `http_port` for a worker in `surge relay`, over the server's admin API), `card` (card numbers sealed at rest), `signature`
//! (the callbacks' HMAC), `status` (what `/metrics` shows).
//!
//! Invariants: every call carries an idempotency key derived from the payment and the
//! operation, the same on every retry and after a restart, so a gateway never charges,
//! captures or refunds twice; an authorization that may have reached a gateway is never
//! sent to another; the checkpoint never passes an operation that is still open.

pub mod card;
pub mod client;
pub mod config;
pub mod http_port;
pub mod port;
pub mod scheduler;
pub mod signature;
pub mod status;
pub mod worker;

pub use card::{CardKey, CardKeyError, KeySource};
pub use config::{GatewayConfig, GatewayEndpoint};
pub use http_port::HttpPort;
pub use port::{CommandPort, PortError, PortFuture};
pub use status::GatewayStatus;
pub use worker::GatewayWorker;
