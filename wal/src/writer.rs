//! Group commit. Appenders encode their frames straight into one shared, bounded buffer under
//! a short lock (that is where the LSN is assigned, so LSN order is buffer order is append
//! order). One writer thread swaps the buffer out, writes it with one write and makes it
//! durable with one fdatasync, then publishes the durable LSN and runs the callbacks.
//! While it is busy the next batch fills the other buffer: at most 2 x `batch_bytes_max`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::{Config, WhenFull};
use crate::error::WalError;
use crate::format::{self, FLAG_GROUP_CONTINUES, SEGMENT_HEADER_SIZE};
use crate::retention;
use crate::segment;
use crate::stats::{Counters, WalStats};
use crate::storage::{LogFile, Storage};
use crate::watermark::Watermark;
use crate::Lsn;

/// Called once, on the writer thread, when the record (or group) is durable (`Ok(last LSN)`)
/// or can never become durable (`Err`). Keep it short: the next commit waits for it.
pub type Callback = Box<dyn FnOnce(Result<Lsn, WalError>) + Send + 'static>;

struct Queue {
    /// Encoded frames, in LSN order.
    buf: Vec<u8>,
    /// (last LSN of the append, callback).
    callbacks: Vec<(Lsn, Callback)>,
    records: u32,
    /// LSN of the first frame in `buf` (meaningful when `records > 0`).
    first_lsn: Lsn,
    next_lsn: Lsn,
    failed: Option<WalError>,
    closing: bool,
    space_waiters: u32,
}

/// Blocked appenders are spread over this many condition variables (see `wait_durable`).
const WAIT_SLOTS: usize = 16;

struct WaitSlot {
    lock: Mutex<()>,
    cv: Condvar,
}

struct Durable {
    durable_lsn: Lsn,
    /// Set once: (first LSN that will never be durable, why).
    failed: Option<(Lsn, WalError)>,
}

/// A segment as the writer and retention know it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub first_lsn: Lsn,
    pub name: String,
}

pub struct Shared {
    pub config: Config,
    pub storage: Arc<dyn Storage>,
    /// The log's checksum salt, from its segment headers (see `format::payload_crc`).
    pub salt: u64,
    pub counters: Counters,
    queue: Mutex<Queue>,
    queue_space: Condvar,
    queue_work: Condvar,
    durable: Mutex<Durable>,
    /// Tailers wait here (few of them); appenders wait on `wait_slots`.
    durable_changed: Condvar,
    wait_slots: [WaitSlot; WAIT_SLOTS],
    durable_lsn: AtomicU64,
    failed: AtomicBool,
    pub watermark: Option<Watermark>,
    /// Segment files in LSN order; the last one is being written.
    pub segments: Mutex<Vec<SegmentInfo>>,
    /// Newest snapshot LSN (0 = none): retention never deletes what it does not cover.
    pub snapshot_lsn: AtomicU64,
    /// Serializes snapshot writes and retention passes.
    pub maintenance: Mutex<()>,
}

/// Where the writer appends.
pub struct ActiveSegment {
    pub file: Box<dyn LogFile>,
    pub first_lsn: Lsn,
    pub offset: u64,
    /// Preallocated size of this segment (from its header; the config may have changed).
    pub size_bytes: u64,
    /// Bytes below this are written (log or zeros); `>= offset`. See [`zero_ahead`].
    pub zeroed_to: u64,
}

impl ActiveSegment {
    pub fn new(file: Box<dyn LogFile>, first_lsn: Lsn, offset: u64, size_bytes: u64) -> ActiveSegment {
        assert!(offset <= size_bytes);
        ActiveSegment { file, first_lsn, offset, size_bytes, zeroed_to: offset }
    }
}

/// The zero source for [`zero_ahead`] (in .bss: untouched pages cost no memory).
static ZEROS: [u8; crate::config::ZERO_AHEAD_BYTES_MAX as usize] = [0; crate::config::ZERO_AHEAD_BYTES_MAX as usize];

/// Before a batch that ends at `end`: if less than half of `zero_ahead_bytes` past it is
/// written, write zeros up to `end + zero_ahead_bytes` (page-aligned, within the segment).
/// The batch's fdatasync then makes them durable with it; later batches land on written
/// blocks and their fdatasync has no extent conversion to make durable. Zeros where
/// zeros already read back change nothing recovery can see (FORMAT.md, "zero-ahead").
fn zero_ahead(config: &Config, active: &mut ActiveSegment, end: u64) -> std::io::Result<()> {
    let ahead_bytes = config.zero_ahead_bytes;
    if ahead_bytes == 0 || active.zeroed_to >= (end + ahead_bytes / 2).min(active.size_bytes) {
        return Ok(());
    }
    let from = active.zeroed_to.max(end);
    let to = ((end + ahead_bytes) & !4095).max(from).min(active.size_bytes);
    assert!(to - from <= ZEROS.len() as u64);
    if to > from {
        active.file.write_at(from, &ZEROS[..(to - from) as usize])?;
    }
    active.zeroed_to = to;
    Ok(())
}

impl Shared {
    pub fn new(
        config: Config,
        storage: Arc<dyn Storage>,
        next_lsn: Lsn,
        watermark: Option<Watermark>,
        segments: Vec<SegmentInfo>,
        snapshot_lsn: Lsn,
        salt: u64,
    ) -> Shared {
        assert!(next_lsn >= 1);
        let batch_bytes_max = config.batch_bytes_max as usize;
        Shared {
            queue: Mutex::new(Queue {
                buf: Vec::with_capacity(batch_bytes_max),
                callbacks: Vec::new(),
                records: 0,
                first_lsn: next_lsn,
                next_lsn,
                failed: None,
                closing: false,
                space_waiters: 0,
            }),
            queue_space: Condvar::new(),
            queue_work: Condvar::new(),
            durable: Mutex::new(Durable { durable_lsn: next_lsn - 1, failed: None }),
            durable_changed: Condvar::new(),
            wait_slots: std::array::from_fn(|_| WaitSlot { lock: Mutex::new(()), cv: Condvar::new() }),
            durable_lsn: AtomicU64::new(next_lsn - 1),
            failed: AtomicBool::new(false),
            watermark,
            segments: Mutex::new(segments),
            snapshot_lsn: AtomicU64::new(snapshot_lsn),
            maintenance: Mutex::new(()),
            config,
            storage,
            salt,
            counters: Counters::default(),
        }
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn.load(Ordering::Acquire)
    }

    pub fn next_lsn(&self) -> Lsn {
        self.queue.lock().next_lsn
    }

    pub fn stats(&self) -> WalStats {
        let (queued_records, queued_bytes) = {
            let q = self.queue.lock();
            (q.records as u64, q.buf.len() as u64)
        };
        WalStats { durable_lsn: self.durable_lsn(), queued_records, queued_bytes, ..self.counters.read() }
    }

    pub fn failure(&self) -> Option<WalError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.durable.lock().failed.as_ref().map(|(_, e)| e.clone())
    }

    /// Queues `records` as one atomic group. Returns (first LSN, last LSN).
    pub fn enqueue(&self, records: &[(u8, &[u8])], callback: Option<Callback>) -> Result<(Lsn, Lsn), WalError> {
        let count = records.len();
        if count == 0 {
            return Err(WalError::InvalidArgument("empty append".into()));
        }
        if count > self.config.queue_depth_max as usize {
            return Err(WalError::InvalidArgument(format!("group of {count} records exceeds queue_depth_max")));
        }
        let mut size_bytes: u64 = 0;
        for (_, payload) in records {
            if payload.len() as u64 > self.config.record_size_bytes_max() {
                return Err(WalError::RecordTooLarge {
                    size_bytes: payload.len() as u64,
                    size_bytes_max: self.config.record_size_bytes_max(),
                });
            }
            size_bytes += format::frame_size(payload.len()) as u64;
        }
        if size_bytes > self.config.batch_bytes_max {
            return Err(WalError::RecordTooLarge { size_bytes, size_bytes_max: self.config.batch_bytes_max });
        }
        // Checksums outside the lock; only the few header bytes are hashed under it.
        let mut crc_one = [0u32; 1];
        let mut crc_many = Vec::new();
        let crcs: &[u32] = if count == 1 {
            crc_one[0] = format::payload_crc(self.salt, records[0].1);
            &crc_one
        } else {
            crc_many.extend(records.iter().map(|(_, p)| format::payload_crc(self.salt, p)));
            &crc_many
        };

        let mut q = self.queue.lock();
        // Computed only once we actually have to wait (reading the clock is not free).
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(e) = &q.failed {
                return Err(WalError::Failed { cause: e.to_string() });
            }
            if q.closing {
                return Err(WalError::Closed);
            }
            let fits_bytes = q.buf.len() as u64 + size_bytes <= self.config.batch_bytes_max;
            let fits_depth = q.records as u64 + count as u64 <= self.config.queue_depth_max as u64;
            if fits_bytes && fits_depth {
                break;
            }
            let deadline = match (self.config.when_full, deadline) {
                // Only the writer thread frees space: a callback that appends must not wait
                // for it (it would wait for itself forever).
                (WhenFull::Wait { .. }, _) if ON_WRITER_THREAD.with(|w| w.get()) => {
                    Counters::add(&self.counters.queue_full, 1);
                    return Err(WalError::QueueFull);
                }
                (WhenFull::Fail, _) => {
                    Counters::add(&self.counters.queue_full, 1);
                    return Err(WalError::QueueFull);
                }
                (WhenFull::Wait { .. }, Some(d)) => d,
                (WhenFull::Wait { timeout_ms }, None) => {
                    let d = Instant::now() + Duration::from_millis(timeout_ms);
                    deadline = Some(d);
                    d
                }
            };
            q.space_waiters += 1;
            let timed_out = self.queue_space.wait_until(&mut q, deadline).timed_out();
            q.space_waiters -= 1;
            if timed_out {
                Counters::add(&self.counters.queue_full, 1);
                return Err(WalError::QueueFull);
            }
        }
        let was_empty = q.records == 0;
        if was_empty {
            q.first_lsn = q.next_lsn;
        }
        let first = q.next_lsn;
        let batch_first = q.first_lsn;
        for (i, ((record_type, payload), crc)) in records.iter().zip(crcs).enumerate() {
            let flags = if i + 1 < count { FLAG_GROUP_CONTINUES } else { 0 };
            let lsn = first + i as u64;
            format::encode_frame(&mut q.buf, self.salt, lsn, batch_first, *record_type, flags, payload, *crc);
        }
        let last = first + count as u64 - 1;
        q.next_lsn = last + 1;
        q.records += count as u32;
        if let Some(cb) = callback {
            q.callbacks.push((last, cb));
        }
        debug_assert!(q.buf.len() as u64 <= self.config.batch_bytes_max);
        drop(q);
        if was_empty {
            self.queue_work.notify_one();
        }
        Ok((first, last))
    }

    /// Blocks until `lsn` is durable, the log failed at or below it, or the timeout passes.
    ///
    /// Waiters are spread over `WAIT_SLOTS` condition variables by LSN: with hundreds of
    /// blocked appenders, one condvar makes every wake-up re-take the same mutex one thread
    /// after another, which (measured) costs more than the fdatasync itself.
    pub fn wait_durable(&self, lsn: Lsn, timeout: Option<Duration>) -> Result<Lsn, WalError> {
        if self.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(lsn);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let slot = &self.wait_slots[(lsn % WAIT_SLOTS as u64) as usize];
        let mut guard = slot.lock.lock();
        loop {
            if self.durable_lsn.load(Ordering::Acquire) >= lsn {
                return Ok(lsn);
            }
            if self.failed.load(Ordering::Acquire) {
                drop(guard);
                let d = self.durable.lock();
                return match &d.failed {
                    Some((from, e)) if lsn >= *from => Err(e.clone()),
                    _ => Ok(lsn),
                };
            }
            match deadline {
                Some(deadline) => {
                    if slot.cv.wait_until(&mut guard, deadline).timed_out()
                        && self.durable_lsn.load(Ordering::Acquire) < lsn
                        && !self.failed.load(Ordering::Acquire)
                    {
                        return Err(WalError::Timeout);
                    }
                }
                None => slot.cv.wait(&mut guard),
            }
        }
    }

    /// Wakes every blocked `wait_durable`. Taking each slot's lock before notifying closes
    /// the window between a waiter's check of the atomic and its sleep.
    fn wake_waiters(&self) {
        for slot in &self.wait_slots {
            let _guard = slot.lock.lock();
            slot.cv.notify_all();
        }
    }

    /// Waits (at most `timeout`) until the durable LSN exceeds `lsn`; returns it.
    pub fn wait_durable_beyond(&self, lsn: Lsn, timeout: Duration) -> Lsn {
        let deadline = Instant::now() + timeout;
        let mut d = self.durable.lock();
        while d.durable_lsn <= lsn && d.failed.is_none() {
            if self.durable_changed.wait_until(&mut d, deadline).timed_out() {
                break;
            }
        }
        d.durable_lsn
    }

    pub fn close(&self) {
        self.queue.lock().closing = true;
        self.queue_work.notify_all();
        self.queue_space.notify_all();
    }

    fn publish_durable(&self, last: Lsn) {
        {
            let mut d = self.durable.lock();
            assert!(last > d.durable_lsn, "durable LSN must only grow");
            d.durable_lsn = last;
        }
        self.durable_lsn.store(last, Ordering::Release);
        if let Some(w) = &self.watermark {
            w.publish(last);
        }
        self.wake_waiters();
        self.durable_changed.notify_all();
    }

    /// From now on nothing is acknowledged: records from `first_lost` on fail.
    fn enter_failed(&self, first_lost: Lsn, err: &WalError) -> Vec<(Lsn, Callback)> {
        let cause = err.to_string();
        let leftover = {
            let mut q = self.queue.lock();
            if q.failed.is_none() {
                q.failed = Some(err.clone());
            }
            // Everything still queued can never be written either.
            q.buf.clear();
            q.records = 0;
            std::mem::take(&mut q.callbacks)
        };
        {
            let mut d = self.durable.lock();
            if d.failed.is_none() {
                d.failed = Some((first_lost, WalError::Failed { cause }));
            }
        }
        self.failed.store(true, Ordering::Release);
        self.wake_waiters();
        self.durable_changed.notify_all();
        self.queue_space.notify_all();
        leftover
    }
}

/// Runs one completion callback. A panicking callback is a bug in the caller; it must not
/// take the log (and every other waiter) down with it, so the panic stops here (the panic
/// hook has already printed it).
fn call(cb: Callback, result: Result<Lsn, WalError>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cb(result)));
}

/// Called if the writer thread panicked (a broken invariant): fail every waiter instead of
/// leaving them blocked forever. Callbacks of the batch in flight are lost with the panic.
pub fn fail_after_panic(shared: &Shared) {
    let first_lost = shared.durable_lsn() + 1;
    let err = WalError::Failed { cause: "writer thread panicked".into() };
    for (_, cb) in shared.enter_failed(first_lost, &err) {
        call(cb, Err(err.clone()));
    }
}

thread_local! {
    /// True on a log's writer thread (where completion callbacks run).
    static ON_WRITER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The writer thread's loop. Returns when the log is closed and the queue drained.
pub fn run(shared: Arc<Shared>, mut active: ActiveSegment) {
    ON_WRITER_THREAD.with(|w| w.set(true));
    let batch_bytes_max = shared.config.batch_bytes_max as usize;
    let mut batch: Vec<u8> = Vec::with_capacity(batch_bytes_max);
    let mut callbacks: Vec<(Lsn, Callback)> = Vec::new();
    let mut failed = false;
    loop {
        let (first, last) = {
            let mut q = shared.queue.lock();
            // No yield or delay before taking the batch: measured, yielding here to let
            // just-woken appenders join halved closed-loop callback throughput.
            while q.records == 0 && !q.closing {
                shared.queue_work.wait(&mut q);
            }
            if q.records == 0 {
                return; // closing and drained
            }
            std::mem::swap(&mut q.buf, &mut batch);
            std::mem::swap(&mut q.callbacks, &mut callbacks);
            let first = q.first_lsn;
            let last = q.next_lsn - 1;
            q.records = 0;
            q.first_lsn = q.next_lsn;
            if q.space_waiters > 0 {
                shared.queue_space.notify_all();
            }
            (first, last)
        };
        assert!(!batch.is_empty() && first <= last);
        assert!(!failed, "a failed log accepts no appends");
        let result = commit(&shared, &mut active, &batch, first, last - first + 1);
        match result {
            Ok(()) => {
                shared.publish_durable(last);
                for (lsn, cb) in callbacks.drain(..) {
                    call(cb, Ok(lsn));
                }
            }
            Err(err) => {
                failed = true;
                let leftover = shared.enter_failed(first, &err);
                let fail = WalError::Failed { cause: err.to_string() };
                for (_, cb) in callbacks.drain(..).chain(leftover) {
                    call(cb, Err(fail.clone()));
                }
            }
        }
        batch.clear();
        // Don't keep a 1 GiB buffer around because of one huge batch.
        if batch.capacity() > 2 * batch_bytes_max {
            batch.shrink_to(batch_bytes_max);
        }
    }
}

/// Makes one batch durable: roll to a new segment if it does not fit, then one write and
/// one fdatasync.
fn commit(shared: &Shared, active: &mut ActiveSegment, batch: &[u8], first: Lsn, records: u64) -> Result<(), WalError> {
    if active.offset + batch.len() as u64 > active.size_bytes {
        roll(shared, active, first)?;
        // Best effort: a failed delete never endangers data, it is retried on the next roll.
        let _ = retention::run_if_idle(shared);
    }
    assert!(active.offset + batch.len() as u64 <= active.size_bytes);
    let name = segment::segment_name(active.first_lsn);
    let started = Instant::now();
    let end = active.offset + batch.len() as u64;
    zero_ahead(&shared.config, active, end)
        .map_err(|e| WalError::io("write zeros ahead", &shared.storage.describe(&name), &e))?;
    active
        .file
        .write_at_sync(active.offset, batch)
        .map_err(|e| WalError::io("write+fdatasync", &shared.storage.describe(&name), &e))?;
    let sync_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.counters.commit(records, batch.len() as u64, sync_ns);
    active.offset = end;
    active.zeroed_to = active.zeroed_to.max(end);
    Ok(())
}

/// Starts segment `first_lsn`: create + preallocate, header, fdatasync, directory fsync. The
/// previous segment's data is already durable (every batch is synced before the next).
pub fn roll(shared: &Shared, active: &mut ActiveSegment, first_lsn: Lsn) -> Result<(), WalError> {
    let name = segment::segment_name(first_lsn);
    let file = create_segment(&*shared.storage, shared.config.segment_size_bytes, first_lsn, shared.salt)?;
    *active = ActiveSegment::new(file, first_lsn, SEGMENT_HEADER_SIZE as u64, shared.config.segment_size_bytes);
    {
        let mut segments = shared.segments.lock();
        // An empty active segment with this very name (config shrank the segment size
        // between runs) was just replaced by `create`: list it once.
        segments.retain(|s| s.first_lsn != first_lsn);
        segments.push(SegmentInfo { first_lsn, name });
    }
    Counters::add(&shared.counters.segments_created, 1);
    Ok(())
}

pub fn create_segment(
    storage: &dyn Storage,
    segment_size_bytes: u64,
    first_lsn: Lsn,
    salt: u64,
) -> Result<Box<dyn LogFile>, WalError> {
    let name = segment::segment_name(first_lsn);
    let path = storage.describe(&name);
    let mut file = storage.create(&name, segment_size_bytes).map_err(|e| WalError::io("create segment", &path, &e))?;
    let header = format::encode_segment_header(&format::SegmentHeader { first_lsn, segment_size_bytes, salt });
    file.write_at_sync(0, &header).map_err(|e| WalError::io("write segment header", &path, &e))?;
    storage.sync_dir().map_err(|e| WalError::io("fsync directory", &path, &e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every write's range; never fails.
    #[derive(Default)]
    struct Writes(Arc<Mutex<Vec<(u64, u64)>>>);

    impl LogFile for Writes {
        fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
            assert!(bytes.iter().all(|&b| b == 0), "zero_ahead writes zeros only");
            self.0.lock().push((offset, offset + bytes.len() as u64));
            Ok(())
        }
        fn sync_data(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn zeros_stay_ahead_of_the_log_inside_the_segment_and_come_in_few_writes() {
        let size_bytes = 5 << 20;
        let config = Config::default();
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let mut active = ActiveSegment::new(Box::new(Writes(ranges.clone())), 1, 64, size_bytes);
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut batches = 0u64;
        while active.offset < size_bytes {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let end = (active.offset + 1 + rng % 20_000).min(size_bytes);
            let zeroed_before = active.zeroed_to;
            let writes_before = ranges.lock().len();
            zero_ahead(&config, &mut active, end).unwrap();
            for &(from, to) in &ranges.lock()[writes_before..] {
                assert!(from >= end.max(zeroed_before), "zeros never overwrite the log or each other");
                assert!(to <= size_bytes && from < to);
            }
            let wanted = (end + config.zero_ahead_bytes / 2).min(size_bytes);
            assert!(active.zeroed_to >= wanted, "at least half the zero-ahead is left after every batch");
            // What commit does after the batch's write.
            active.offset = end;
            active.zeroed_to = active.zeroed_to.max(end);
            batches += 1;
        }
        let writes = ranges.lock().len() as u64;
        assert!(batches > 200 && writes <= 2 * (size_bytes / config.zero_ahead_bytes) + 2, "{writes} zero writes");
    }

    #[test]
    fn zero_ahead_off_writes_nothing() {
        let config = Config { zero_ahead_bytes: 0, ..Config::default() };
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let mut active = ActiveSegment::new(Box::new(Writes(ranges.clone())), 1, 64, 1 << 20);
        zero_ahead(&config, &mut active, 4096).unwrap();
        assert!(ranges.lock().is_empty());
    }
}
