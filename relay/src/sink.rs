//! What a sink promises the driver.

use std::future::Future;

use surge_wal::Lsn;

use crate::batch::Batch;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination is unreachable or refused for now (broker down, database restarting,
    /// timeout): the driver backs off, trips the breaker, and retries from the sink's position.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (bad configuration, a schema from a newer version): the driver
    /// stops this sink, logs why and shows it in its status; the server keeps serving.
    #[error("{0}")]
    Fatal(String),
}

/// A destination for durable events. The driver calls `resume` before the first batch and
/// after every failure, then `write` with consecutive batches starting right after the LSN
/// `resume` returned.
pub trait Sink: Send {
    /// Short and stable: the reader checkpoint's name in the log directory and the
    /// `sink` label in metrics (`kafka`, `mariadb`).
    fn name(&self) -> &'static str;

    /// (Re)connects and returns the last LSN this sink has fully written. `checkpoint` is
    /// the reader checkpoint the driver stored for this sink (0 if none): a sink that keeps
    /// no position of its own returns it; one that stores its position with its data (the
    /// database) returns that one instead.
    fn resume(&mut self, checkpoint: Lsn) -> impl Future<Output = Result<Lsn, SinkError>> + Send;

    /// Writes every event of `batch` and returns once the destination acknowledged all of
    /// them (the driver then moves the checkpoint past `batch.last_lsn`). On an error
    /// nothing is assumed written; the driver calls `resume` again.
    fn write(&mut self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;
}
