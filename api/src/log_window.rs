//! Which records an admin look-up reads back from the log: the newest `records_max` durable
//! ones still in a segment. Shared by the console's look-up (`console/history.rs`) and
//! `GET /v1/admin/merchants/{merchant_id}/events/{aggregate_id}` (`lookup.rs`), which both
//! read history the engine does not keep.

use std::path::Path;

use surge_wal::segment::segments_in;
use surge_wal::{Tailer, WalError};

/// The LSNs to read, `from_lsn..=durable_lsn` (an empty log: `from_lsn` 1, `durable_lsn` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recent {
    pub from_lsn: u64,
    pub durable_lsn: u64,
    /// The range starts at the oldest record the log still holds: reading it reads all.
    pub complete: bool,
}

/// The newest `records_max` (at least 1) durable records of the log in `dir`.
pub fn recent(dir: &Path, records_max: u64) -> Result<Recent, WalError> {
    let durable_lsn = Tailer::open(dir, 1)?.durable_lsn();
    let listing = std::fs::read_dir(dir).map_err(|e| WalError::Io {
        op: "read_dir",
        file: dir.display().to_string(),
        kind: e.kind(),
        message: e.to_string(),
    })?;
    let names: Vec<String> = listing.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect();
    let oldest_lsn = segments_in(&names).first().map_or(1, |(lsn, _)| *lsn).max(1);
    let newest_window = durable_lsn.saturating_sub(records_max.max(1) - 1).max(1);
    let from_lsn = oldest_lsn.max(newest_window);
    Ok(Recent { from_lsn, durable_lsn, complete: from_lsn == oldest_lsn })
}
