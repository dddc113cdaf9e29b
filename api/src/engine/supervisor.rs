//! The supervisor thread. On a storage failure it takes the log away from the shards,
//! reopens it (retrying every `reopen_interval`) and rebuilds every shard from what the log
//! holds: the in-memory state is rolled back to the log, so no change the log lost stays
//! visible. Until the log can be written again the engine is not healthy (writes answer
//! 503), and a read-only open of the log serves reads. Between failures it asks the
//! snapshot thread for snapshots.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use surge_core::encoding::encode_events;
use surge_core::Shard;

use super::cell::Cell;
use super::error::ReopenError;
use super::snapshot::SnapshotJob;
use super::wal::{CloseError, WalOpener};
use super::{key_map, replay, EngineConfig, Shared, RECORD_EVENTS};

/// How often the supervisor looks whether a snapshot is due, when nothing else wakes it.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// What the supervisor is told.
#[derive(Debug)]
pub(super) enum Command {
    /// A shard saw this log failure: take the log away, reopen it and rebuild every shard.
    Recover(String),
    /// Shutting down (a wake-up: the supervisor obeys `Shared::stopping`).
    Stop,
}

/// The supervisor's queue. Bounded: each shard sends at most one `Recover` until it is
/// rebuilt, and one pending `Recover` rebuilds every shard, so a full queue loses nothing.
pub(super) fn commands(shard_count: usize) -> (Sender<Command>, Receiver<Command>) {
    crossbeam_channel::bounded(shard_count + 1)
}

pub(super) struct Supervisor {
    pub(super) opener: WalOpener,
    pub(super) shared: Arc<Shared>,
    pub(super) cells: Vec<Arc<Cell>>,
    pub(super) commands: Receiver<Command>,
    pub(super) config: EngineConfig,
    pub(super) shard_count: usize,
    pub(super) snapshot_jobs: Option<Sender<SnapshotJob>>,
    pub(super) snapshot_thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    pub(super) fn run(mut self) {
        self.serve();
        // The snapshot thread ends once its queue is closed (after the round it may be in).
        drop(self.snapshot_jobs.take());
        if let Some(t) = self.snapshot_thread.take() {
            let _ = t.join();
        }
    }

    fn serve(&self) {
        loop {
            if self.shared.stopping.load(Ordering::Acquire) {
                return;
            }
            match self.commands.recv_timeout(SNAPSHOT_CHECK_INTERVAL) {
                Ok(Command::Recover(reason)) => self.recover(&reason),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => self.maybe_snapshot(),
            }
        }
    }

    /// Takes the failed log away from the shards, reopens it (retrying) and rebuilds every
    /// shard from what it holds, so no change the log lost stays visible.
    fn recover(&self, reason: &str) {
        self.shared.healthy.store(false, Ordering::Release);
        self.shared.storage_failures.fetch_add(1, Ordering::Relaxed);
        *self.shared.last_failure.lock() = Some(reason.to_string());
        tracing::error!("storage failure: {reason}; reopening the log");
        for cell in &self.cells {
            cell.mark_stale();
        }
        match self.shared.wal.take_and_close() {
            // Closed by its last user instead; until then the reopen below fails and is retried.
            Err(e @ CloseError::StillLent { .. }) => tracing::error!("closing the failed log: {e}"),
            // A failed log's close reports that failure again.
            Ok(()) | Err(CloseError::Wal(_)) => {}
        }
        // Bounded by the queue's capacity.
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Stop = command {
                return;
            }
        }
        let mut serving_reads = false;
        loop {
            if self.shared.stopping.load(Ordering::Acquire) {
                return;
            }
            match self.reopen() {
                Ok(()) => {
                    // A failure reported after the drain above is handled by the next round
                    // (at worst one needless reopen), never dropped.
                    tracing::info!("log reopened and shards rebuilt");
                    self.shared.healthy.store(true, Ordering::Release);
                    return;
                }
                Err(e) => {
                    tracing::error!("reopening the log failed: {e}");
                    *self.shared.last_failure.lock() = Some(e.to_string());
                    if !serving_reads {
                        match self.rebuild_read_only() {
                            Ok(()) => {
                                serving_reads = true;
                                tracing::warn!("serving reads from the log as it is on disk; writes answer 503");
                            }
                            Err(e) => tracing::error!("reading the log failed too, reads answer 503: {e}"),
                        }
                    }
                    // Until the next attempt, or at once when told to stop. Another failure
                    // report changes nothing: every shard is rebuilt by the reopen anyway.
                    if let Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) =
                        self.commands.recv_timeout(self.config.reopen_interval)
                    {
                        return;
                    }
                }
            }
        }
    }

    fn reopen(&self) -> Result<(), ReopenError> {
        let (wal, recovery) = (self.opener.open)().map_err(ReopenError::Open)?;
        // Ready means writable: prove it with an empty event batch (a valid record that
        // applies nothing) before any shard may append again.
        let probe = wal
            .append(RECORD_EVENTS, &encode_events(&[]))
            .and_then(|h| h.wait_timeout_ms(10_000))
            .map_err(ReopenError::NotWritable);
        if let Err(e) = probe {
            drop(recovery);
            let _ = wal.close();
            return Err(e);
        }
        let shards = replay(&recovery, self.shard_count, self.config.settings)?;
        drop(recovery);
        self.shared.wal.put(wal);
        self.replace(shards);
        Ok(())
    }

    /// While the log cannot be written: rebuild the shards from what a read-only open finds,
    /// so reads are answered (from the log, never from memory the log lost). Writes stay
    /// refused: `healthy` is false and there is no log to append to.
    fn rebuild_read_only(&self) -> Result<(), ReopenError> {
        let recovery = (self.opener.open_read_only)().map_err(ReopenError::Open)?;
        let shards = replay(&recovery, self.shard_count, self.config.settings)?;
        self.replace(shards);
        Ok(())
    }

    fn replace(&self, shards: Vec<Shard>) {
        *self.shared.keys.write() = key_map(&shards);
        for (cell, shard) in self.cells.iter().zip(shards) {
            cell.replace(shard);
        }
    }
}
