//! How the worker's results go back into the engine: as commands through the same shard
//! path as every request (decide, apply, log), never by writing the log itself. `surge
//! serve` implements it with its engine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use surge_core::Command;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The engine refused the command (e.g. the payment settled meanwhile): reporting it again
    /// would be refused again, so the worker moves on.
    #[error("refused: {0}")]
    Refused(String),
    /// The engine could not take it now (storage failure, shutting down): try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub type PortFuture = Pin<Box<dyn Future<Output = Result<(), PortError>> + Send>>;

pub trait CommandPort: Send + Sync + 'static {
    /// Runs `command` for `merchant`; resolves once its events are durable (or refused).
    fn submit(&self, merchant: Arc<str>, command: Command) -> PortFuture;
}
