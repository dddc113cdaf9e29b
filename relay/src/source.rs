//! Where a driver reads durable records and keeps each reader's checkpoint. Single-node
//! mode reads the local write-ahead log ([`WalSource`]); cluster mode reads one partition's
//! replicated log (the `partition` crate implements this trait for etcd), so the driver,
//! its retries and every sink are the same code in both modes.
//!
//! A source's LSNs are dense and start at 1: the record after `lsn` is `lsn + 1`, and a
//! checkpoint of 0 means nothing was written yet.

use std::fmt;
use std::path::{Path, PathBuf};

use surge_core::{image, Shard};
use surge_wal::{Lsn, Tailer, WalError};

use crate::batch::{read_batch, Batch, BatchLimits, ReadError};
use crate::sink::SinkError;

pub trait LogSource: Send + Sync + fmt::Debug {
    /// The position `reader` last stored, if it ever stored one.
    fn load_checkpoint(&self, reader: &str) -> Result<Option<Lsn>, String>;

    /// Stores `reader`'s position: every record up to `lsn` reached its destination. The
    /// log keeps every record after the lowest stored position of its readers.
    fn store_checkpoint(&self, reader: &str, lsn: Lsn) -> Result<(), String>;

    /// A cursor whose first record is `from` (or, if the log no longer has it, whose first
    /// read says so with [`ReadError::Removed`]).
    fn open(&self, from: Lsn) -> Result<Box<dyn LogCursor>, String>;

    /// The newest snapshot: its LSN and the state (shards) after every record up to it;
    /// `None` when the log has none. For a sink that keeps a copy of the state (the cold
    /// store) and finds itself behind what the log still holds.
    fn snapshot(&self) -> Result<Option<(Lsn, Vec<Shard>)>, SinkError>;
}

pub trait LogCursor: Send {
    /// The next durable records: waits up to `limits.wait_ms` for the first, then takes
    /// what is already there up to `limits.events_max` events. Empty: nothing came.
    fn read_batch(&mut self, limits: BatchLimits) -> Result<Batch, ReadError>;

    /// The newest durable LSN this cursor knows of (for lag).
    fn durable_lsn(&self) -> Lsn;
}

/// The local write-ahead log in `dir` (`<data-dir>/wal`); checkpoints are its reader
/// checkpoint files, which its retention honours.
#[derive(Clone, Debug)]
pub struct WalSource {
    dir: PathBuf,
}

impl WalSource {
    pub fn new(dir: PathBuf) -> WalSource {
        WalSource { dir }
    }
}

impl LogSource for WalSource {
    fn load_checkpoint(&self, reader: &str) -> Result<Option<Lsn>, String> {
        surge_wal::load_reader_checkpoint(&self.dir, reader).map_err(|e| e.to_string())
    }

    fn store_checkpoint(&self, reader: &str, lsn: Lsn) -> Result<(), String> {
        surge_wal::store_reader_checkpoint(&self.dir, reader, lsn).map_err(|e| e.to_string())
    }

    fn open(&self, from: Lsn) -> Result<Box<dyn LogCursor>, String> {
        let tailer = Tailer::open(&self.dir, from).map_err(|e| e.to_string())?;
        Ok(Box::new(WalCursor { tailer }))
    }

    fn snapshot(&self) -> Result<Option<(Lsn, Vec<Shard>)>, SinkError> {
        let Some((lsn, bytes)) = newest_snapshot(&self.dir)? else { return Ok(None) };
        let shards = image::decode_snapshot(&bytes, None)
            .map_err(|e| SinkError::Fatal(format!("the log's snapshot at LSN {lsn} does not decode: {e}")))?;
        Ok(Some((lsn, shards)))
    }
}

/// The newest valid snapshot in `dir`: `(LSN, state bytes)`. The log writes snapshots under
/// a temporary name and renames them, so a listed snapshot is complete; one that fails its
/// checksums is skipped for the next older one, as the server's own recovery does.
fn newest_snapshot(dir: &Path) -> Result<Option<(Lsn, Vec<u8>)>, SinkError> {
    let listing =
        std::fs::read_dir(dir).map_err(|e| SinkError::Transient(format!("listing {}: {e}", dir.display())))?;
    let mut snapshots: Vec<(Lsn, PathBuf)> = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| SinkError::Transient(format!("listing {}: {e}", dir.display())))?;
        let name = entry.file_name();
        if let Some(lsn) = name.to_str().and_then(surge_wal::segment::parse_snapshot_name) {
            snapshots.push((lsn, entry.path()));
        }
    }
    snapshots.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    for (lsn, path) in snapshots {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed since the listing: a newer one replaced it; look again next time.
            Err(e) => return Err(SinkError::Transient(format!("reading {}: {e}", path.display()))),
        };
        match surge_wal::format::decode_snapshot(&bytes) {
            Ok((header_lsn, _)) if header_lsn == lsn => {
                let mut payload = bytes;
                payload.drain(..surge_wal::format::SNAPSHOT_HEADER_SIZE);
                return Ok(Some((lsn, payload)));
            }
            Ok(_) => tracing::warn!("snapshot {} names another LSN than its header; skipped", path.display()),
            Err(reason) => tracing::warn!("snapshot {} is invalid ({reason}); skipped", path.display()),
        }
    }
    Ok(None)
}

struct WalCursor {
    tailer: Tailer,
}

impl LogCursor for WalCursor {
    fn read_batch(&mut self, limits: BatchLimits) -> Result<Batch, ReadError> {
        read_batch(&mut self.tailer, limits).map_err(|e| match e {
            ReadError::Log(WalError::LsnNotAvailable { lsn, oldest_lsn }) if oldest_lsn > lsn => {
                ReadError::Removed { lsn, oldest_lsn }
            }
            other => other,
        })
    }

    fn durable_lsn(&self) -> Lsn {
        self.tailer.durable_lsn()
    }
}
