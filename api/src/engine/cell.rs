//! One shard behind its lock, and the answers that wait for the log.
//!
//! A request takes its shard's lock on the caller's thread and, under it, takes the log's
//! news (`mark_durable`), executes, encodes an applied outcome's events as one log record
//! and appends it (a batch's records as one atomic group). Appending under the lock keeps
//! each shard's log order equal to its apply order. Every answer (writes, replays, refusals
//! and reads) is then held until everything its shard appended before it is durable; the
//! log's callback (on its writer thread) releases it, so nobody ever sees a change that
//! could still be lost. After a log failure the shard is stale: it answers nothing from its
//! memory (503 `storage_unavailable`) until the supervisor has replaced it with a shard
//! rebuilt from the log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use surge_core::encoding::encode_events;
use surge_core::Shard;
use surge_wal::{Lsn, WalError};
use tokio::sync::Semaphore;

use super::business::Tally;
use super::replicated::Backend;
use super::supervisor::Command;
use super::{now_ms, ExecError, Shared, StorageError, RECORD_EVENTS};

/// Requests executing or waiting for the log per shard before callers wait (back-pressure).
/// Appends happen on tokio workers under the shard's lock, so this also keeps the log's
/// queue (65,536 records / 8 MiB by default) from filling up under ordinary records: a full
/// queue would block a worker (the log waits for room) instead of a shard thread.
pub(super) const SHARD_INFLIGHT_MAX: usize = 4_096;

type Completion = Box<dyn FnOnce(Option<ExecError>) + Send>;

/// One shard: its state behind a short lock that the caller's thread (a tokio worker)
/// takes to decide, apply and append; the answers wait in `log` until the log reports
/// their records durable.
pub(super) struct Cell {
    /// Also what the snapshot freeze takes, every cell's in shard order.
    pub(super) state: Mutex<CellState>,
    pub(super) log: Arc<CellLog>,
    /// Requests waiting for or holding this shard (back-pressure).
    pub(super) permits: Semaphore,
}

pub(super) struct CellState {
    pub(super) shard: Shard,
    /// Where this shard's changes go (in cluster mode: whether this node owns it).
    pub(super) backend: Backend,
    last_appended: Lsn,
    /// (last LSN of a group, the shard's applied events after it).
    inflight: VecDeque<(Lsn, u64)>,
}

/// What the log's callbacks (on its writer thread) and the request path share.
pub(super) struct CellLog {
    index: usize,
    /// The state may hold changes the log does not: answer nothing from it until replaced.
    stale: AtomicBool,
    /// Highest LSN the log reported durable for this shard (this log instance).
    durable: AtomicU64,
    /// Counts log reopens: an answer computed before one must not wait on the new log,
    /// whose LSNs may name other records. Changed only under the state and waits locks.
    epoch: AtomicU64,
    waits: Mutex<Waits>,
    shared: Arc<Shared>,
    /// Cluster mode: the address of the node that owns this partition, when another does.
    owner: RwLock<Option<Arc<str>>>,
}

#[derive(Default)]
struct Waits {
    /// The log failed: nothing beyond `CellLog::durable` will become durable.
    failed: Option<StorageError>,
    /// Answers held until their LSN is durable, in no particular order (`on_durable` looks at all).
    waiting: VecDeque<(Lsn, Completion)>,
}

/// An answer computed under the shard's lock, and the LSN (of the log as of `epoch`) it
/// must wait for.
#[must_use]
pub(super) enum Pending<T> {
    Now(Result<T, ExecError>),
    After { lsn: Lsn, epoch: u64, value: T },
}

impl<T: Send + 'static> Pending<T> {
    /// Delivers the answer now, or once `lsn` is durable (an error if the log fails first).
    pub(super) fn settle(self, cell: &Cell, deliver: impl FnOnce(Result<T, ExecError>) + Send + 'static) {
        match self {
            Pending::Now(r) => deliver(r),
            Pending::After { lsn, epoch, value } => {
                cell.log.wait(
                    lsn,
                    epoch,
                    Box::new(move |err| {
                        deliver(match err {
                            None => Ok(value),
                            Some(e) => Err(e),
                        })
                    }),
                );
            }
        }
    }
}

/// Aborts the process when dropped by a panic: a panic while a shard is locked for a change
/// (decide, apply, encode, append) may leave its memory half-applied, and the lock does not
/// poison. Only the log can be trusted then; a restart recovers from it.
struct AbortOnPanic;

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("surge: panic while a shard was locked for a change: aborting; restart to recover from the log");
            std::process::abort();
        }
    }
}

impl Cell {
    pub(super) fn new(index: usize, shard: Shard, backend: Backend, shared: &Arc<Shared>) -> Cell {
        Cell {
            state: Mutex::new(CellState { shard, backend, last_appended: 0, inflight: VecDeque::new() }),
            log: Arc::new(CellLog {
                index,
                stale: AtomicBool::new(false),
                durable: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                waits: Mutex::new(Waits::default()),
                shared: shared.clone(),
                owner: RwLock::new(None),
            }),
            permits: Semaphore::new(SHARD_INFLIGHT_MAX),
        }
    }

    /// Stops answering from this shard's memory until [`Cell::replace`] (answers already
    /// waiting still get the log's verdict through its callbacks).
    pub(super) fn mark_stale(&self) {
        self.log.stale.store(true, Ordering::Release);
    }

    /// Puts a shard rebuilt from the (reopened) log in place of this one. Whatever waited
    /// on the old log is failed, in one step under the waits lock, and an answer computed
    /// on the old log that registers later sees the new epoch and fails too.
    pub(super) fn replace(&self, shard: Shard) {
        let backend = self.state.lock().backend.clone();
        self.replace_with(shard, backend, StorageError::Reopened);
    }

    /// Puts `shard` in place with `backend` (cluster mode: a partition taken or given up).
    /// Whatever waited on the previous log gets `orphaned`.
    pub(super) fn replace_with(&self, shard: Shard, backend: Backend, orphaned: StorageError) {
        let mut st = self.state.lock();
        st.shard = shard;
        st.backend = backend;
        st.last_appended = 0;
        st.inflight.clear();
        let mut w = self.log.waits.lock();
        self.log.epoch.fetch_add(1, Ordering::AcqRel);
        self.log.durable.store(0, Ordering::Release);
        w.failed = None;
        let waiting: Vec<_> = w.waiting.drain(..).collect();
        drop(w);
        self.log.stale.store(false, Ordering::Release);
        drop(st);
        for (_, done) in waiting {
            done(Some(ExecError::Storage(orphaned.clone())));
        }
    }

    /// Cluster mode: new requests answer `NotOwner` from now on; the groups already
    /// submitted keep their waiters, answered by the log's verdicts (the log itself is
    /// dropped here, so its owner can close it once those verdicts are in).
    pub(super) fn drain(&self) {
        let mut st = self.state.lock();
        st.backend = Backend::Elsewhere;
    }

    /// Cluster mode: the log's epoch, which `replace_with` (take, give up) moves on.
    pub(super) fn generation(&self) -> u64 {
        let _st = self.state.lock();
        self.log.epoch.load(Ordering::Acquire)
    }

    /// Cluster mode: undoes `drain` if the cell was not replaced since `generation`: the
    /// shard, its waiters and its LSNs are as the drain left them, on the same log.
    pub(super) fn resume(&self, generation: u64, log: Arc<dyn super::replicated::ReplicatedLog>) -> bool {
        let mut st = self.state.lock();
        if self.log.epoch.load(Ordering::Acquire) != generation || !matches!(st.backend, Backend::Elsewhere) {
            return false;
        }
        st.backend = Backend::Replicated(log);
        true
    }

    /// Cluster mode: what a request gets when another node owns this partition.
    pub(super) fn elsewhere(&self) -> Option<ExecError> {
        matches!(self.state.lock().backend, Backend::Elsewhere).then(|| self.log.not_owner())
    }

    /// Cluster mode: says which node owns this partition when this one does not.
    pub(super) fn set_owner(&self, address: Option<Arc<str>>) {
        *self.log.owner.write() = address;
    }

    /// Under the shard's lock: takes the log's news, runs `work` (which may apply, push
    /// records and tally their events), appends those records as one group, and says what
    /// the answer waits for: everything this shard appended so far.
    pub(super) fn write<T>(
        &self,
        shared: &Shared,
        work: impl FnOnce(&mut Shard, u64, &mut Vec<Vec<u8>>, &mut Tally) -> T,
    ) -> Pending<T> {
        let mut st = self.state.lock();
        let _abort = AbortOnPanic;
        if let Backend::Elsewhere = st.backend {
            return Pending::Now(Err(self.log.not_owner()));
        }
        if self.log.unavailable() {
            return Pending::Now(Err(ExecError::Storage(StorageError::ShardStale)));
        }
        let epoch = self.log.absorb(&mut st);
        let mut records = Vec::new();
        let mut tally = Tally::default();
        let value = work(&mut st.shard, now_ms(), &mut records, &mut tally);
        if !records.is_empty() {
            if let Err(e) = self.append(shared, &mut st, records, tally) {
                return Pending::Now(Err(ExecError::Storage(e)));
            }
        }
        Pending::After { lsn: st.last_appended, epoch, value }
    }

    /// Under the shard's lock: runs `f` on the state; the answer waits until everything
    /// this shard appended before is durable.
    pub(super) fn read<R>(&self, f: impl FnOnce(&Shard) -> R) -> Pending<R> {
        let mut st = self.state.lock();
        if let Backend::Elsewhere = st.backend {
            return Pending::Now(Err(self.log.not_owner()));
        }
        if self.log.stale.load(Ordering::Acquire) {
            return Pending::Now(Err(ExecError::Storage(StorageError::ShardStale)));
        }
        let epoch = self.log.absorb(&mut st);
        let value = f(&st.shard);
        Pending::After { lsn: st.last_appended, epoch, value }
    }

    /// The expiries that are due, appended like any command's events.
    pub(super) fn tick(&self, shared: &Shared) {
        let mut st = self.state.lock();
        let _abort = AbortOnPanic;
        if matches!(st.backend, Backend::Elsewhere) || self.log.unavailable() {
            return;
        }
        self.log.absorb(&mut st);
        let events = st.shard.tick(now_ms());
        if events.is_empty() {
            return;
        }
        let mut tally = Tally::default();
        tally.events(&st.shard, &events);
        let _ = self.append(shared, &mut st, vec![encode_events(&events)], tally);
    }

    /// Appends `records` as one atomic group; a refusal makes the shard stale. `tally` is
    /// counted once the group is durable.
    fn append(
        &self,
        shared: &Shared,
        st: &mut CellState,
        records: Vec<Vec<u8>>,
        tally: Tally,
    ) -> Result<(), StorageError> {
        let log = self.log.clone();
        // Stable under the state lock (`replace` takes it too).
        let epoch = self.log.epoch.load(Ordering::Acquire);
        let started = Instant::now();
        let (count, bytes) = (records.len(), records.iter().map(Vec::len).sum::<usize>());
        let appended = match &st.backend {
            Backend::Local => {
                let refs: Vec<(u8, &[u8])> = records.iter().map(|r| (RECORD_EVENTS, r.as_slice())).collect();
                let appended = match shared.wal.lend() {
                    Some(wal) => wal.append_group_with(&refs, move |r| {
                        log.on_durable(r.map_err(StorageError::Failed), started, epoch, &tally)
                    }),
                    None => Err(WalError::Closed),
                };
                appended.map_err(StorageError::Refused)
            }
            Backend::Replicated(replicated) => {
                // Groups are acknowledged in submission order: their count is the LSN.
                let lsn = st.last_appended + 1;
                let verdict = move |r: Result<(), String>| {
                    log.on_durable(r.map(|()| lsn).map_err(StorageError::Replication), started, epoch, &tally)
                };
                replicated.submit(records, Box::new(verdict)).map(|()| lsn).map_err(StorageError::Replication)
            }
            Backend::Elsewhere => Err(StorageError::NotOwner { partition: self.log.index as u32, owner: None }),
        };
        match appended {
            Ok(last) => {
                st.last_appended = last;
                st.inflight.push_back((last, st.shard.applied_events()));
                shared.group_records.observe(count as f64);
                shared.records_since_snapshot.fetch_add(count as u64, Ordering::Relaxed);
                shared.log_bytes_since_snapshot.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Only this group is refused; earlier groups still get the log's verdict
                // (a full queue or an oversized record does not fail them).
                self.log.go_stale(&e);
                Err(e)
            }
        }
    }

    /// Cluster mode: under the shard's lock, queues a snapshot of the partition's state after
    /// every group appended so far; its size in bytes. `None` when this node does not own
    /// it. The encoding holds the lock (no copy-on-write freeze as in single-node mode): its
    /// time is a pause of this partition.
    pub(super) fn snapshot_replicated(&self, done: super::replicated::Verdict) -> Option<Result<usize, String>> {
        let st = self.state.lock();
        let Backend::Replicated(replicated) = &st.backend else { return None };
        if self.log.unavailable() {
            return Some(Err("the partition is being rebuilt".into()));
        }
        let bytes = st.shard.snapshot();
        let len = bytes.len();
        Some(replicated.snapshot(bytes, done).map(|()| len))
    }
}

impl CellLog {
    /// The shard has seen a log failure, or the log is down: nothing is answered from memory.
    /// What a request for a partition owned elsewhere gets: the owner, when known, to
    /// forward it to.
    fn not_owner(&self) -> ExecError {
        ExecError::Storage(StorageError::NotOwner { partition: self.index as u32, owner: self.owner.read().clone() })
    }

    pub(super) fn unavailable(&self) -> bool {
        self.stale.load(Ordering::Acquire) || !self.shared.healthy.load(Ordering::Acquire)
    }

    /// Tells the shard which of its groups are durable (idempotency records stop being
    /// "in flight"). Called under the state lock before every use of the shard, so a retry
    /// sent after its first answer always finds that answer's record durable. Returns the
    /// log's epoch (stable while the state lock is held: `replace` takes it too).
    fn absorb(&self, st: &mut CellState) -> u64 {
        let durable = self.durable.load(Ordering::Acquire);
        while let Some(&(lsn, applied)) = st.inflight.front() {
            if lsn > durable {
                break;
            }
            st.inflight.pop_front();
            if !self.stale.load(Ordering::Acquire) {
                st.shard.mark_durable(applied);
            }
        }
        self.epoch.load(Ordering::Acquire)
    }

    fn wait(&self, lsn: Lsn, epoch: u64, done: Completion) {
        let mut w = self.waits.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            // The log this answer waited on was replaced: its fate is unknown here.
            drop(w);
            done(Some(ExecError::Storage(StorageError::Reopened)));
        } else if lsn <= self.durable.load(Ordering::Acquire) {
            drop(w);
            done(None);
        } else if let Some(e) = &w.failed {
            let e = ExecError::Storage(e.clone());
            drop(w);
            done(Some(e));
        } else {
            w.waiting.push_back((lsn, done));
        }
    }

    /// The log's verdict on a group of this shard (on the log's writer thread, in LSN order),
    /// appended to the log of `epoch`; `tally` is what its events add to the counters.
    fn on_durable(&self, result: Result<Lsn, StorageError>, appended: Instant, epoch: u64, tally: &Tally) {
        let mut w = self.waits.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            // A log that could not be closed before the reopen (`CloseError::StillLent`)
            // reports late: its LSNs name other records than the current log's, and its
            // failure is not this shard's any more.
            return;
        }
        match result {
            Ok(lsn) => {
                self.shared.group_commit.observe(appended.elapsed().as_secs_f64());
                self.shared.business.add(tally);
                self.durable.fetch_max(lsn, Ordering::AcqRel);
                // Waits are registered after the shard's lock is released, so they are not
                // quite in LSN order: look at every one (bounded by the shard's permits).
                // In place: this runs once per group, usually to release a single answer.
                let mut ready = Vec::new();
                let mut i = 0;
                while i < w.waiting.len() {
                    if w.waiting[i].0 <= lsn {
                        ready.extend(w.waiting.swap_remove_back(i));
                    } else {
                        i += 1;
                    }
                }
                drop(w);
                for (_, done) in ready {
                    done(None);
                }
            }
            Err(e) => {
                // Everything still waiting depends on this group or a later one, none of
                // which can become durable now.
                w.failed = Some(e.clone());
                let waiting: Vec<_> = w.waiting.drain(..).collect();
                drop(w);
                self.go_stale(&e);
                for (_, done) in waiting {
                    done(Some(ExecError::Storage(e.clone())));
                }
            }
        }
    }

    pub(super) fn fail_waiting(&self, reason: StorageError) {
        let waiting: Vec<_> = self.waits.lock().waiting.drain(..).collect();
        for (_, done) in waiting {
            done(Some(ExecError::Storage(reason.clone())));
        }
    }

    /// The state now holds changes the log will not have: stop answering from it and ask
    /// for a rebuild: of every shard from the local log (the supervisor), or in cluster mode
    /// of this partition from its replicated log (the node's controller).
    fn go_stale(&self, reason: &StorageError) {
        if !self.stale.swap(true, Ordering::AcqRel) {
            tracing::error!(shard = self.index, "log failure, shard goes stale until rebuilt: {reason}");
            if let Some(failed) = &self.shared.partition_failures {
                // One per partition until it is replaced: the queue holds one per partition.
                let _ = failed.try_send(self.index as u32);
                return;
            }
            // Not ready from now on (the supervisor sets it back once the shards are rebuilt).
            self.shared.healthy.store(false, Ordering::Release);
            // A full queue already holds a recovery that rebuilds every shard.
            let _ = self.shared.supervisor.try_send(Command::Recover(reason.to_string()));
        }
    }
}
