//! The engine host's errors: what a request gets when its change cannot be made durable,
//! and why the engine cannot start or rebuild its shards.

use surge_core::image::ImageError;
use surge_core::CoreError;
use surge_wal::{Lsn, WalError};

/// Why a request was not executed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// Refused by core's rules.
    #[error("{0}")]
    Core(CoreError),
    /// The log could not make it durable (or the engine is rebuilding): nothing was applied.
    #[error("{0}")]
    Storage(StorageError),
}

/// Why a request's change could not be made durable; nothing of it was applied (a 503
/// `storage_unavailable`, whose detail is this message).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The engine is recovering from a log failure (or cannot reopen the log).
    #[error("the write-ahead log is unavailable{}; nothing was applied, retry later", in_parens(.last_failure))]
    Unavailable { last_failure: Option<String> },
    /// This shard saw a log failure and answers nothing from memory until it is rebuilt.
    #[error("the write-ahead log is unavailable")]
    ShardStale,
    /// The log refused the append (full queue, oversized group, closed log).
    #[error("the write-ahead log refused the write ({0})")]
    Refused(WalError),
    /// The log failed before the records this answer waited for were durable.
    #[error("the write-ahead log failed ({0}); nothing was applied")]
    Failed(WalError),
    /// The log was reopened while the answer waited: the fate of its records is unknown here.
    #[error("the write-ahead log was reopened; retry")]
    Reopened,
    #[error("shutting down")]
    ShuttingDown,
    /// The answer was dropped without a verdict.
    #[error("the shard stopped")]
    ShardStopped,
    /// Cluster mode: the partition's replicated log did not acknowledge the write (or this
    /// node lost the partition meanwhile); the write may or may not be in the log.
    #[error("the partition's replicated log did not acknowledge the write ({0}); retry with the same idempotency key")]
    Replication(String),
    /// Cluster mode: another node owns the partition (`owner`, its address), or none does
    /// while it moves.
    #[error("partition {partition} is owned by {}", .owner.as_deref().unwrap_or("no node yet (it is moving)"))]
    NotOwner { partition: u32, owner: Option<std::sync::Arc<str>> },
}

fn in_parens(reason: &Option<String>) -> String {
    reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
}

/// The detail of the 503 a storage error answers with.
impl From<StorageError> for String {
    fn from(e: StorageError) -> String {
        e.to_string()
    }
}

/// A snapshot or record that does not rebuild the shards.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("snapshot at LSN {lsn}: {source}")]
    Snapshot { lsn: Lsn, source: ImageError },
    #[error("reading the log: {0}")]
    Read(WalError),
    #[error("record at LSN {lsn}: {source}")]
    Record { lsn: Lsn, source: ImageError },
}

/// Why `Engine::start` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the log: {0}")]
    Open(WalError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("spawning the {thread}: {source}")]
    Spawn { thread: &'static str, source: std::io::Error },
}

/// Why the supervisor could not reopen the log (it retries) or read it for reads.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReopenError {
    #[error("{0}")]
    Open(WalError),
    /// The probe append (an empty event batch) did not become durable.
    #[error("the reopened log is not writable: {0}")]
    NotWritable(WalError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_error_reads_as_the_503_detail_it_always_was() {
        let detail = |e: StorageError| String::from(e);
        assert_eq!(
            detail(StorageError::Unavailable { last_failure: None }),
            "the write-ahead log is unavailable; nothing was applied, retry later"
        );
        assert_eq!(
            detail(StorageError::Unavailable { last_failure: Some("append queue full".into()) }),
            "the write-ahead log is unavailable (append queue full); nothing was applied, retry later"
        );
        assert_eq!(
            detail(StorageError::Refused(WalError::QueueFull)),
            "the write-ahead log refused the write (append queue full)"
        );
        assert_eq!(detail(StorageError::ShuttingDown), "shutting down");
    }
}
