//! Snapshots: "the caller's state after applying every record up to LSN N", written
//! atomically (temp file, fdatasync, rename, directory fsync) so a crash leaves either the
//! old set of snapshots or the new one, never a half-written file under a real name.

use std::sync::atomic::Ordering;

use crate::error::WalError;
use crate::format::{self, SNAPSHOT_HEADER_SIZE};
use crate::retention;
use crate::segment;
use crate::storage::{FileBytes, Storage};
use crate::writer::Shared;
use crate::Lsn;

/// A snapshot is written and made durable this much at a time.
const SNAPSHOT_CHUNK_BYTES: usize = 2 << 20;

pub fn write(shared: &Shared, lsn: Lsn, state: &[u8]) -> Result<Vec<String>, WalError> {
    let durable = shared.durable_lsn();
    if lsn > durable {
        return Err(WalError::InvalidArgument(format!("snapshot LSN {lsn} is beyond the durable LSN {durable}")));
    }
    let _guard = shared.maintenance.lock();
    let newest = shared.snapshot_lsn.load(Ordering::Acquire);
    if lsn < newest {
        return Err(WalError::InvalidArgument(format!(
            "snapshot LSN {lsn} is older than the newest snapshot {newest}"
        )));
    }
    let storage = &*shared.storage;
    let name = segment::snapshot_name(lsn);
    let tmp = format!("{name}{}", segment::TMP_SUFFIX);
    let path = storage.describe(&name);
    let io = |op: &'static str| {
        let path = path.clone();
        move |e: std::io::Error| WalError::io(op, &path, &e)
    };
    let mut file = storage.create(&tmp, 0).map_err(io("create snapshot"))?;
    file.write_at(0, &format::encode_snapshot_header(lsn, state)).map_err(io("write snapshot"))?;
    // In chunks, each made durable before the next: the log's own small fdatasyncs share the
    // disk with this file, and one large write-back would hold every acknowledgement behind it.
    // Bounded: `state.len() / SNAPSHOT_CHUNK_BYTES + 1` rounds.
    let mut offset = 0;
    while offset < state.len() {
        let end = (offset + SNAPSHOT_CHUNK_BYTES).min(state.len());
        let at = (SNAPSHOT_HEADER_SIZE + offset) as u64;
        file.write_at(at, &state[offset..end]).map_err(io("write snapshot"))?;
        file.sync_data().map_err(io("fsync snapshot"))?;
        offset = end;
    }
    file.sync_data().map_err(io("fsync snapshot"))?;
    drop(file);
    storage.rename(&tmp, &name).map_err(io("rename snapshot"))?;
    storage.sync_dir().map_err(io("fsync directory"))?;
    shared.snapshot_lsn.store(lsn, Ordering::Release);

    // Older snapshots are now useless: retention may delete the segments they would need.
    let names = storage.list().map_err(io("list directory"))?;
    let mut removed = false;
    for old in names {
        if segment::parse_snapshot_name(&old).is_some_and(|l| l < lsn) {
            storage.remove(&old).map_err(io("remove old snapshot"))?;
            removed = true;
        }
    }
    if removed {
        storage.sync_dir().map_err(io("fsync directory"))?;
    }
    retention::run_locked(shared)
}

/// A loaded snapshot.
pub struct LoadedSnapshot {
    pub lsn: Lsn,
    pub bytes: FileBytes,
}

impl LoadedSnapshot {
    pub fn state(&self) -> &[u8] {
        &self.bytes[SNAPSHOT_HEADER_SIZE..]
    }
}

/// The newest valid snapshot, and `(file, reason)` of newer ones that failed validation.
pub type NewestSnapshot = (Option<LoadedSnapshot>, Vec<(String, String)>);

/// The newest snapshot that validates, plus `(file, reason)` for every newer one that did not.
pub fn load_newest(storage: &dyn Storage, names: &[String]) -> Result<NewestSnapshot, WalError> {
    let mut snaps: Vec<(Lsn, &String)> =
        names.iter().filter_map(|n| segment::parse_snapshot_name(n).map(|l| (l, n))).collect();
    snaps.sort();
    let mut invalid = Vec::new();
    for (lsn, name) in snaps.into_iter().rev() {
        let path = storage.describe(name);
        let bytes = storage.read(name).map_err(|e| WalError::io("read snapshot", &path, &e))?;
        match format::decode_snapshot(&bytes) {
            Ok((l, _)) if l == lsn => return Ok((Some(LoadedSnapshot { lsn, bytes }), invalid)),
            Ok(_) => invalid.push((path, "LSN in header does not match file name".into())),
            Err(reason) => invalid.push((path, reason.to_string())),
        }
    }
    Ok((None, invalid))
}
