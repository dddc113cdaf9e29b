//! Retention: delete whole segments that every consumer is done with, and reader
//! checkpoints, which say what a consumer is done with.
//!
//! A segment may go when all of its records are at or below
//! `min(newest snapshot LSN, every registered reader's checkpoint)`. The segment being
//! written is never deleted. A checkpoint file that does not decode counts as 0 (keep
//! everything): failing safe beats deleting what a reader still needs.

use crate::error::WalError;
use crate::format;
use crate::segment;
use crate::storage::Storage;
use crate::writer::Shared;
use crate::Lsn;
use std::sync::atomic::Ordering;

/// Runs a pass unless a snapshot or another pass is in progress (the writer thread must not
/// block behind a big snapshot's fsync).
pub fn run_if_idle(shared: &Shared) -> Result<Vec<String>, WalError> {
    match shared.maintenance.try_lock() {
        Some(_guard) => run_locked(shared),
        None => Ok(Vec::new()),
    }
}

pub fn run(shared: &Shared) -> Result<Vec<String>, WalError> {
    let _guard = shared.maintenance.lock();
    run_locked(shared)
}

/// Caller holds `shared.maintenance`. Returns the names of the deleted segments.
pub fn run_locked(shared: &Shared) -> Result<Vec<String>, WalError> {
    let storage = &*shared.storage;
    let mut keep_upto = shared.snapshot_lsn.load(Ordering::Acquire);
    for (_, lsn) in read_checkpoints(storage)? {
        keep_upto = keep_upto.min(lsn);
    }
    let doomed: Vec<String> = {
        let segs = shared.segments.lock();
        let mut doomed = Vec::new();
        // Never the last (active) segment. Segment i ends just before segment i+1 starts.
        for pair in segs.windows(2) {
            if pair[1].first_lsn - 1 <= keep_upto {
                doomed.push(pair[0].name.clone());
            } else {
                break;
            }
        }
        doomed
    };
    if doomed.is_empty() {
        return Ok(doomed);
    }
    for name in &doomed {
        match storage.remove(name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io("remove segment", &storage.describe(name), &e)),
        }
        shared.segments.lock().retain(|s| &s.name != name);
    }
    storage.sync_dir().map_err(|e| WalError::io("fsync directory", &storage.describe("."), &e))?;
    crate::stats::Counters::add(&shared.counters.segments_deleted, doomed.len() as u64);
    Ok(doomed)
}

/// Every registered reader and its checkpoint (0 for an unreadable checkpoint file).
pub fn read_checkpoints(storage: &dyn Storage) -> Result<Vec<(String, Lsn)>, WalError> {
    let names = storage.list().map_err(|e| WalError::io("list directory", &storage.describe("."), &e))?;
    let mut out = Vec::new();
    for name in names {
        let Some(reader) = segment::parse_checkpoint_name(&name) else {
            continue;
        };
        let lsn = match storage.read(&name) {
            Ok(bytes) => format::decode_checkpoint(&bytes).unwrap_or(0),
            // Removed between list and read: the reader unregistered.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => 0,
        };
        out.push((reader.to_string(), lsn));
    }
    Ok(out)
}

/// Durably records that `reader` has consumed everything up to and including `lsn`.
/// Atomic: temp file, fdatasync, rename, directory fsync.
pub fn store_checkpoint(storage: &dyn Storage, reader: &str, lsn: Lsn) -> Result<(), WalError> {
    if !segment::valid_reader_name(reader) {
        return Err(WalError::InvalidArgument(format!("reader name {reader:?} must be 1..=64 of [A-Za-z0-9_-]")));
    }
    let name = segment::checkpoint_name(reader);
    let tmp = format!("{name}{}", segment::TMP_SUFFIX);
    let path = storage.describe(&name);
    let path = path.as_str();
    let io = |op: &'static str| move |e: std::io::Error| WalError::io(op, path, &e);
    let mut file = storage.create(&tmp, 0).map_err(io("create checkpoint"))?;
    file.write_at(0, &format::encode_checkpoint(lsn)).map_err(io("write checkpoint"))?;
    file.sync_data().map_err(io("fsync checkpoint"))?;
    drop(file);
    storage.rename(&tmp, &name).map_err(io("rename checkpoint"))?;
    storage.sync_dir().map_err(io("fsync directory"))?;
    Ok(())
}

pub fn remove_checkpoint(storage: &dyn Storage, reader: &str) -> Result<(), WalError> {
    if !segment::valid_reader_name(reader) {
        return Err(WalError::InvalidArgument(format!("bad reader name {reader:?}")));
    }
    let name = segment::checkpoint_name(reader);
    let path = storage.describe(&name);
    match storage.remove(&name) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(WalError::io("remove checkpoint", &path, &e)),
    }
    storage.sync_dir().map_err(|e| WalError::io("fsync directory", &path, &e))
}
