//! The engine's own figures for `/metrics`: counters and gauges as [`EngineStats`], the
//! shards' group histograms and the business counters in Prometheus text.

use std::sync::atomic::Ordering;
use std::time::Duration;

use surge_wal::Lsn;

use super::cell::SHARD_INFLIGHT_MAX;
use super::Engine;

/// Bounds of `group_records`.
pub(super) const GROUP_RECORDS_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Bounds of `group_commit`, in seconds.
pub(super) const GROUP_COMMIT_BUCKETS_S: [f64; 12] =
    [0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Figures for `/metrics`.
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub healthy: bool,
    pub shards: usize,
    pub storage_failures: u64,
    pub snapshots_written: u64,
    pub records_since_snapshot: u64,
    /// Wait for durability + encode + write + fsync of the latest snapshot written.
    pub snapshot_write: Duration,
    /// How long the latest snapshot held every shard's lock (to freeze them).
    pub snapshot_pause: Duration,
    /// LSN of the latest snapshot written since start (0: none).
    pub snapshot_lsn: Lsn,
    /// Size of the latest snapshot written since start (0: none).
    pub snapshot_bytes: u64,
    /// Record payload bytes appended since the last snapshot was asked for.
    pub log_bytes_since_snapshot: u64,
    /// Per shard: requests queued for it or running on it.
    pub queue_depths: Vec<usize>,
    pub merchants: usize,
    pub wal: Option<surge_wal::WalStats>,
}

impl Engine {
    pub fn stats(&self) -> EngineStats {
        let s = &self.shared;
        EngineStats {
            healthy: self.is_healthy(),
            shards: self.cells.len(),
            storage_failures: s.storage_failures.load(Ordering::Relaxed),
            snapshots_written: s.snapshots_written.load(Ordering::Relaxed),
            records_since_snapshot: s.records_since_snapshot.load(Ordering::Relaxed),
            snapshot_write: Duration::from_nanos(s.snapshot_write_ns.load(Ordering::Relaxed)),
            snapshot_pause: Duration::from_nanos(s.snapshot_pause_ns.load(Ordering::Relaxed)),
            snapshot_lsn: s.snapshot_lsn.load(Ordering::Relaxed),
            snapshot_bytes: s.snapshot_bytes.load(Ordering::Relaxed),
            log_bytes_since_snapshot: s.log_bytes_since_snapshot.load(Ordering::Relaxed),
            queue_depths: self.cells.iter().map(|c| SHARD_INFLIGHT_MAX - c.permits.available_permits()).collect(),
            merchants: s.keys.read().len(),
            wal: s.wal.stats(),
        }
    }

    /// The shards' group histograms, in Prometheus text.
    pub fn render_histograms(&self, out: &mut String) {
        use std::fmt::Write;
        let name = "surge_log_group_records";
        let _ =
            writeln!(out, "# HELP {name} Records per group a shard appended (1 per request, a batch's ops in one).");
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.shared.group_records.render(out, name, "");
        let name = "surge_log_group_commit_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a shard's append of a group to its durability (queue + write + fdatasync)."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.shared.group_commit.render(out, name, "");
    }

    /// The business counters (`business.rs`), in Prometheus text.
    pub fn render_business(&self, out: &mut String) {
        self.shared.business.render(out);
    }
}
