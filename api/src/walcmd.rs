//! `surge wal inspect DIR` and `surge wal verify DIR`: read-only looks at a log (the server
//! may be running on it). `inspect` summarises snapshots, records and event types;
//! `verify` also replays everything through `apply` and checks every invariant.
//! `surge wal forget-reader DIR NAME` drops a reader's checkpoint (its only write).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use surge_core::image;
use surge_wal::Wal;

use crate::engine::replay;

/// A data directory or its `wal/` subdirectory.
pub(crate) fn wal_dir(dir: &Path) -> PathBuf {
    let sub = dir.join("wal");
    if sub.is_dir() {
        sub
    } else {
        dir.to_path_buf()
    }
}

/// Shard count a snapshot was written with (`SRGH`, version, count); 1 without snapshot.
fn snapshot_shards(bytes: &[u8]) -> usize {
    image::snapshot_shard_count(bytes).unwrap_or(1).max(1)
}

pub fn run(dir: &Path, verify: bool) -> Result<String, String> {
    let dir = wal_dir(dir);
    let recovery = Wal::open_read_only(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = String::new();
    let _ = writeln!(out, "log: {}", dir.display());
    match recovery.snapshot() {
        Some((lsn, bytes)) => {
            let _ = writeln!(out, "snapshot: LSN {lsn}, {} bytes, {} shards", bytes.len(), snapshot_shards(bytes));
        }
        None => {
            let _ = writeln!(out, "snapshot: none");
        }
    }
    for (file, reason) in &recovery.invalid_snapshots {
        let _ = writeln!(out, "invalid snapshot (skipped): {file}: {reason}");
    }
    let _ = writeln!(out, "records after the snapshot: {}", recovery.record_count());
    let _ = writeln!(out, "last LSN: {}", recovery.last_lsn());
    if let Some(cut) = &recovery.tail_cut {
        let _ = writeln!(
            out,
            "torn tail: {} at offset {} (LSN {}): {} ({} bytes after it)",
            cut.file, cut.offset, cut.lsn, cut.reason, cut.discarded_bytes
        );
    }
    let mut types: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut events = 0u64;
    for record in recovery.records() {
        let record = record.map_err(|e| e.to_string())?;
        let batch = image::record_events(record.record_type, record.payload)
            .map_err(|e| format!("record at LSN {}: {e}", record.lsn))?;
        for e in &batch {
            *types.entry(e.type_name()).or_default() += 1;
            events += 1;
        }
    }
    let _ = writeln!(out, "events after the snapshot: {events}");
    for (t, n) in &types {
        let _ = writeln!(out, "  {t:<24} {n}");
    }
    if verify {
        let shards = recovery.snapshot().map_or(1, |(_, b)| snapshot_shards(b));
        let shards = replay(&recovery, shards, surge_core::Settings::default()).map_err(|e| e.to_string())?;
        for (i, shard) in shards.iter().enumerate() {
            shard.check_invariants().map_err(|e| format!("shard {i}: invariant broken after replay: {e}"))?;
            let digest = crate::auth::hex(&shard.digest());
            let _ = writeln!(
                out,
                "shard {i}: {} merchants, {} events applied, digest {digest}",
                shard.merchants().count(),
                shard.applied_events()
            );
        }
        let _ = writeln!(out, "verify: OK (every record decodes and applies; every invariant holds)");
    }
    Ok(out)
}

/// Drops reader `reader`'s checkpoint from the log in `dir`.
pub fn forget_reader(dir: &Path, reader: &str) -> Result<(), String> {
    let dir = wal_dir(dir);
    match surge_wal::load_reader_checkpoint(&dir, reader).map_err(|e| format!("{}: {e}", dir.display()))? {
        None => Err(format!("{}: no reader named {reader}", dir.display())),
        Some(lsn) => {
            surge_wal::remove_reader_checkpoint(&dir, reader).map_err(|e| format!("{}: {e}", dir.display()))?;
            println!("forgot reader {reader} (its checkpoint was LSN {lsn})");
            Ok(())
        }
    }
}
