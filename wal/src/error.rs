//! The one error type of the log. It is `Clone` because a single failed write or fsync has to
//! be reported to every waiter of the batch (and every later caller), not just one.

use std::io;

/// Everything that can go wrong in the log. Messages name the file and offset where that is
/// known, so an operator can find the bad bytes without a debugger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// A read, write, fsync or directory operation failed.
    #[error("I/O error during {op} on {file}: {message} ({kind:?})")]
    Io { op: &'static str, file: String, kind: io::ErrorKind, message: String },
    /// An earlier write or fsync failed; the log acknowledges nothing more. Reopen the log
    /// once the storage is healthy.
    #[error("log stopped after an earlier storage failure ({cause}); reopen once storage is healthy")]
    Failed { cause: String },
    /// The submission queue is at `queue_depth_max` records or `batch_bytes_max` bytes and
    /// the configuration says to fail rather than wait (or the wait timed out).
    #[error("append queue full")]
    QueueFull,
    /// One record, or one atomic group, is larger than a single write batch may be.
    #[error("record of {size_bytes} bytes exceeds the maximum of {size_bytes_max} bytes")]
    RecordTooLarge { size_bytes: u64, size_bytes_max: u64 },
    /// The log is shutting down or was dropped.
    #[error("log closed")]
    Closed,
    /// Bytes before the tail do not decode: the log refuses to open rather than lose data.
    #[error("corrupt log: {file} at offset {offset}: {reason}")]
    Corrupt { file: String, offset: u64, reason: String },
    /// Another process holds the directory lock.
    #[error("log directory {dir} is locked by another writer")]
    Locked { dir: String },
    /// A tailer asked for a position that retention already deleted, or that never existed.
    #[error("LSN {lsn} is not available (oldest available: {oldest_lsn})")]
    LsnNotAvailable { lsn: u64, oldest_lsn: u64 },
    /// A caller broke a documented precondition (bad reader name, snapshot beyond durable...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A blocking wait ran out of time (the record may still become durable later).
    #[error("timed out")]
    Timeout,
}

impl WalError {
    pub(crate) fn io(op: &'static str, file: &str, err: &io::Error) -> WalError {
        WalError::Io { op, file: file.to_string(), kind: err.kind(), message: err.to_string() }
    }

    pub(crate) fn corrupt(file: &str, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corrupt { file: file.to_string(), offset, reason: reason.into() }
    }
}
