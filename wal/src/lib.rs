//! surge-wal: the durable log that makes surge's answers true after a crash, and that the
//! relay tails as its outbox. It knows bytes and positions (LSNs), nothing about orders.
//!
//! * [`Wal::open`] recovers: newest valid snapshot, the records after it, and a report of a
//!   cut torn tail. Damage anywhere but the tail stops the open with file and offset.
//! * [`Wal::append`] / [`Wal::append_with`] / [`Wal::append_group`]: many threads append at
//!   once; one writer thread makes everything waiting durable with one write and one
//!   fdatasync (io_uring, or pwrite where io_uring is unavailable). Per thread, LSN order is
//!   append order.
//! * [`Wal::write_snapshot`], reader checkpoints and retention bound disk and replay time.
//! * [`Tailer`] yields durable records only, in this process or another one.
//!
//! The byte layout is in `wal/FORMAT.md`.

pub mod config;
pub mod decode_check;
pub mod error;
pub mod format;
pub mod io;
mod recovery;
mod retention;
pub mod segment;
pub mod sim;
mod snapshot;
pub mod stats;
pub mod storage;
mod tail;
mod wal;
mod watermark;
mod writer;

/// Log sequence number: 1 for the first record ever, +1 per record, never reused.
/// 0 means "nothing" (e.g. the durable LSN of an empty log).
pub type Lsn = u64;

pub use config::{Config, IoMode, WhenFull, ZERO_AHEAD_BYTES_DEFAULT};
pub use error::WalError;
pub use format::{decode_records, Record, RecordRef};
pub use recovery::{RecordIter, Recovery};
pub use segment::TailCut;
pub use stats::{WalStats, BATCH_RECORDS_BOUNDS, HISTOGRAM_BUCKETS, SYNC_NS_BOUNDS};
pub use storage::{FileBytes, LogFile, Storage};
pub use tail::Tailer;
pub use wal::{AppendHandle, Wal};
pub use writer::Callback;

/// Durably stores a reader's checkpoint in a log directory from any process (e.g. the
/// relay): retention keeps every record after `lsn` until the checkpoint moves on.
pub fn store_reader_checkpoint(dir: impl AsRef<std::path::Path>, reader: &str, lsn: Lsn) -> Result<(), WalError> {
    let storage = storage::DirStorage::open_reader(dir.as_ref());
    retention::store_checkpoint(&storage, reader, lsn)
}

/// Forgets a reader from any process: retention no longer keeps records for it. For a
/// reader that will never run again (a sink or worker taken out of service).
pub fn remove_reader_checkpoint(dir: impl AsRef<std::path::Path>, reader: &str) -> Result<(), WalError> {
    let storage = storage::DirStorage::open_reader(dir.as_ref());
    retention::remove_checkpoint(&storage, reader)
}

/// A reader's checkpoint in a log directory, from any process; `None` if the reader never
/// stored one (an undecodable checkpoint file reads as `Some(0)`, as retention counts it).
pub fn load_reader_checkpoint(dir: impl AsRef<std::path::Path>, reader: &str) -> Result<Option<Lsn>, WalError> {
    let storage = storage::DirStorage::open_reader(dir.as_ref());
    let readers = retention::read_checkpoints(&storage)?;
    Ok(readers.into_iter().find(|(name, _)| name == reader).map(|(_, lsn)| lsn))
}

/// Whether io_uring works on this machine (it may be blocked by seccomp).
pub fn io_uring_available() -> bool {
    io::uring::available()
}
