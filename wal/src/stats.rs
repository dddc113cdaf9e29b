//! Counters for the server's /metrics. Relaxed atomics: they are statistics, never used to
//! decide anything.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets of the per-commit histograms; each histogram has one more
/// bucket for everything above the last bound.
pub const BATCH_RECORDS_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384];
pub const SYNC_NS_BOUNDS: [u64; 12] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];
/// Buckets per histogram: one per bound, plus the overflow.
pub const HISTOGRAM_BUCKETS: usize = 13;

#[derive(Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub sync_ns_total: AtomicU64,
    pub sync_ns_max: AtomicU64,
    pub last_batch_records: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub queue_full: AtomicU64,
    batch_records_hist: [AtomicU64; HISTOGRAM_BUCKETS],
    sync_ns_hist: [AtomicU64; HISTOGRAM_BUCKETS],
}

/// A snapshot of the log's counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Group commits (one write + one fdatasync each).
    pub commits: u64,
    /// Records made durable.
    pub records: u64,
    /// Frame bytes made durable (headers and padding included).
    pub bytes: u64,
    /// Total and worst time spent in write + fdatasync, in nanoseconds.
    pub sync_ns_total: u64,
    pub sync_ns_max: u64,
    /// Records in the most recent commit.
    pub last_batch_records: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    /// Appends refused with `QueueFull` (immediately or after waiting).
    pub queue_full: u64,
    pub durable_lsn: u64,
    /// Records and bytes queued but not yet handed to the writer.
    pub queued_records: u64,
    pub queued_bytes: u64,
    /// Commits by records in the commit, per bucket of [`BATCH_RECORDS_BOUNDS`] (not cumulative).
    pub batch_records_hist: [u64; HISTOGRAM_BUCKETS],
    /// Commits by write + fdatasync time, per bucket of [`SYNC_NS_BOUNDS`] (not cumulative).
    pub sync_ns_hist: [u64; HISTOGRAM_BUCKETS],
}

fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len())
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn commit(&self, records: u64, bytes: u64, sync_ns: u64) {
        Counters::add(&self.commits, 1);
        Counters::add(&self.records, records);
        Counters::add(&self.bytes, bytes);
        Counters::add(&self.sync_ns_total, sync_ns);
        self.sync_ns_max.fetch_max(sync_ns, Ordering::Relaxed);
        self.last_batch_records.store(records, Ordering::Relaxed);
        Counters::add(&self.batch_records_hist[bucket(&BATCH_RECORDS_BOUNDS, records)], 1);
        Counters::add(&self.sync_ns_hist[bucket(&SYNC_NS_BOUNDS, sync_ns)], 1);
    }

    pub fn read(&self) -> WalStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WalStats {
            commits: r(&self.commits),
            records: r(&self.records),
            bytes: r(&self.bytes),
            sync_ns_total: r(&self.sync_ns_total),
            sync_ns_max: r(&self.sync_ns_max),
            last_batch_records: r(&self.last_batch_records),
            segments_created: r(&self.segments_created),
            segments_deleted: r(&self.segments_deleted),
            queue_full: r(&self.queue_full),
            batch_records_hist: self.batch_records_hist.each_ref().map(r),
            sync_ns_hist: self.sync_ns_hist.each_ref().map(r),
            ..WalStats::default()
        }
    }
}
