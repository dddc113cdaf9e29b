//! Snapshots: when one is due, how the supervisor freezes the shards at one LSN, and the
//! snapshot thread that waits for that LSN to be durable, then encodes and writes.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use surge_core::encoding::SnapshotCache;
use surge_core::{image, FrozenShard};
use surge_wal::{Lsn, Wal};

use super::supervisor::Supervisor;
use super::Shared;

/// What the snapshot thread gets from the supervisor for one snapshot.
pub(super) struct SnapshotJob {
    /// The log to snapshot. Weak: a storage failure may replace it meanwhile, and the
    /// supervisor must be able to close it; then this snapshot is dropped.
    pub(super) wal: Weak<Wal>,
    /// The shards hold every record up to this LSN and none after it.
    pub(super) lsn: Lsn,
    pub(super) shards: Vec<FrozenShard>,
}

impl Supervisor {
    /// Asks the snapshot thread for a snapshot (see [`snapshot_due`]); the shards are not
    /// involved at all.
    pub(super) fn maybe_snapshot(&self) {
        let shared = &self.shared;
        let due = snapshot_due(
            self.config.snapshot_every_records,
            shared.records_since_snapshot.load(Ordering::Relaxed),
            shared.log_bytes_since_snapshot.load(Ordering::Relaxed),
            shared.snapshot_bytes.load(Ordering::Relaxed),
        );
        if !due {
            return;
        }
        if !self.shared.healthy.load(Ordering::Acquire) || self.shared.snapshot_busy.load(Ordering::Acquire) {
            return;
        }
        let Some(jobs) = &self.snapshot_jobs else { return };
        let Some(wal) = self.shared.wal.lend() else { return };
        let started = Instant::now();
        // Every append happens under its shard's lock, right after the apply. With every
        // lock held (in shard order, as `replace` takes them) no record is between its apply
        // and its append, so the shards hold exactly the records up to the log's last LSN.
        let states: Vec<_> = self.cells.iter().map(|c| c.state.lock()).collect();
        if self.cells.iter().any(|c| c.log.unavailable()) {
            // A failed log: the shards may hold changes it lost; the supervisor rebuilds them.
            return;
        }
        let lsn = wal.next_lsn() - 1;
        let shards: Vec<FrozenShard> = states.iter().map(|st| st.shard.freeze()).collect();
        drop(states);
        let pause = started.elapsed();
        self.shared.snapshot_pause_ns.store(pause.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.shared.records_since_snapshot.store(0, Ordering::Relaxed);
        self.shared.log_bytes_since_snapshot.store(0, Ordering::Relaxed);
        self.shared.snapshot_busy.store(true, Ordering::Release);
        if jobs.try_send(SnapshotJob { wal: wal.downgrade(), lsn, shards }).is_err() {
            self.shared.snapshot_busy.store(false, Ordering::Release);
        }
    }
}

/// A snapshot is due after `every_records` records (0: never) AND as many log bytes as
/// the latest snapshot holds. The second rule keeps the cost of snapshots in proportion to
/// the traffic: encoding is linear in the state, which only grows during a sale, so a fixed
/// record interval would spend more and more of a core on encoding (a 1M-order image every
/// 100k records is ~10 orders encoded per request). Recovery stays bounded the same way:
/// the log to replay after a snapshot is about the snapshot's size at most.
fn snapshot_due(every_records: u64, records_since: u64, log_bytes_since: u64, snapshot_bytes: u64) -> bool {
    every_records > 0 && records_since >= every_records && log_bytes_since >= snapshot_bytes
}

/// The snapshot thread, at the lowest CPU priority. The supervisor freezes the shards at
/// one LSN (a pause of microseconds: the containers that grow with traffic are chunked and
/// copy-on-write, so a frozen shard shares its chunks with the live one, which copies a
/// chunk only when it next changes it); this thread waits until that LSN is durable, then
/// encodes and writes. No second copy of the state, nothing applied twice.
pub(super) fn write_snapshots(shared: &Shared, jobs: &Receiver<SnapshotJob>) {
    lower_priority();
    // One buffer for every snapshot this thread writes: a fresh one each time would be a
    // snapshot's size of new pages to fault in, then hand back, every snapshot.
    let mut buffer = Vec::new();
    // The encoded chunks of the previous snapshot: a snapshot encodes only what changed
    // since (old orders and idempotency records are copied as bytes), for about one more
    // snapshot's size of memory. Valid across log failures and rebuilds: chunks are
    // recognised by allocation, and a rebuilt shard has none of the old ones.
    let mut cache = SnapshotCache::new();
    for job in jobs.iter() {
        if !shared.stopping.load(Ordering::Acquire) {
            write_snapshot(shared, job, &mut buffer, &mut cache);
        }
        shared.snapshot_busy.store(false, Ordering::Release);
    }
}

/// Longest a frozen snapshot waits for its LSN to become durable (a healthy log takes a
/// group commit, milliseconds); past it the snapshot is dropped and the next one is asked.
const SNAPSHOT_DURABLE_WAIT_MAX_MS: u64 = 30_000;

/// Whether `lsn` became durable on the job's log while it still was the current log.
///
/// The wait is the log's own (`Wal::wait_durable`): woken by the commit that makes `lsn`
/// durable, or at once by a failure of the log, never by polling. It holds a loan of the
/// log meanwhile, so a supervisor that wants to close the log after a failure waits for it:
/// a failed log ends the wait at once, a healthy one within a group commit, a stuck one at
/// the bound.
fn wait_durable(shared: &Shared, wal: &Weak<Wal>, lsn: Lsn) -> bool {
    let Some(wal) = shared.wal.lend_if_current(wal) else { return false };
    match wal.wait_durable(lsn, SNAPSHOT_DURABLE_WAIT_MAX_MS) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(lsn, "no snapshot: the frozen state did not become durable: {e}");
            false
        }
    }
}

/// Waits until the frozen state's LSN is durable (a snapshot must never hold a change the
/// log could still lose), then encodes and writes it into that same log.
fn write_snapshot(shared: &Shared, job: SnapshotJob, buffer: &mut Vec<u8>, cache: &mut SnapshotCache) {
    let started = Instant::now();
    let SnapshotJob { wal, lsn, shards } = job;
    if lsn == 0 || lsn <= shared.snapshot_lsn.load(Ordering::Relaxed) {
        return;
    }
    if !wait_durable(shared, &wal, lsn) || shared.stopping.load(Ordering::Acquire) {
        return;
    }
    let durable_after = started.elapsed();
    // Room for the previous image and some growth: no copies while encoding.
    let previous = shared.snapshot_bytes.load(Ordering::Relaxed) as usize;
    buffer.clear();
    buffer.reserve(previous + previous / 4);
    image::encode_snapshot_cached(&shards, cache, buffer);
    // Let go of the chunks at once: the live shards stop copying them on change.
    drop(shards);
    let encoded = started.elapsed() - durable_after;
    // Kept for the next snapshot, but not at a size the state has since shrunk from.
    if buffer.capacity() > 2 * buffer.len() {
        buffer.shrink_to(buffer.len() + buffer.len() / 4);
    }
    let bytes = &buffer[..];
    // Not lent while encoding: a storage failure may close the log meanwhile.
    let Some(wal) = shared.wal.lend_if_current(&wal) else { return };
    match wal.write_snapshot(lsn, bytes) {
        Ok(removed) => {
            let took = started.elapsed();
            shared.snapshots_written.fetch_add(1, Ordering::Relaxed);
            shared.snapshot_write_ns.store(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
            shared.snapshot_lsn.store(lsn, Ordering::Relaxed);
            shared.snapshot_bytes.store(bytes.len() as u64, Ordering::Relaxed);
            tracing::info!(
                lsn,
                bytes = bytes.len(),
                removed = removed.len(),
                pause = ?Duration::from_nanos(shared.snapshot_pause_ns.load(Ordering::Relaxed)),
                ?durable_after,
                ?encoded,
                reused_bytes = cache.reused_bytes(),
                encoded_bytes = cache.encoded_bytes(),
                ?took,
                "snapshot written"
            )
        }
        Err(e) => tracing::warn!("writing a snapshot at LSN {lsn} failed: {e}"),
    }
}

/// Lowers the calling thread's CPU priority to nice 19 (Linux keeps a nice value per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn setpriority(which: i32, who: u32, prio: i32) -> i32;
        }
        const PRIO_PROCESS: i32 = 0;
        // SAFETY: plain integer arguments, no memory is shared with the callee; on Linux
        // `who = 0` with PRIO_PROCESS is the calling thread only.
        let rc = unsafe { setpriority(PRIO_PROCESS, 0, 19) };
        if rc != 0 {
            tracing::warn!("could not lower the snapshot thread's priority: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn a_snapshot_waits_for_its_records_and_for_as_many_log_bytes_as_the_last_one() {
        assert!(!snapshot_due(0, u64::MAX, u64::MAX, 0), "0 turns snapshots off");
        assert!(snapshot_due(100, 100, 0, 0), "the first snapshot needs only the records");
        assert!(!snapshot_due(100, 99, 0, 0));
        assert!(!snapshot_due(100, 1_000, 4_999, 5_000), "the log since is smaller than the image");
        assert!(snapshot_due(100, 1_000, 5_000, 5_000));
        assert!(!snapshot_due(100, 99, 1 << 40, 5_000), "bytes alone are not enough");
    }
}
