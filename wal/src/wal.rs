//! The public face: open, append (blocking handle or callback), snapshots, readers.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;
use crate::error::WalError;
use crate::recovery::{self, Recovery};
use crate::retention;
use crate::snapshot;
use crate::storage::{DirStorage, Storage};
use crate::tail::Tailer;
use crate::watermark::Watermark;
use crate::writer::{self, Shared};
use crate::Lsn;

/// The write-ahead log. `Send + Sync`: share it with `Arc` and append from any thread.
pub struct Wal {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    uses_io_uring: bool,
}

/// Completes when the appended record (or group) is durable. Cheap: no allocation per
/// append; waiting parks on the log's shared durable-LSN condition variable.
#[derive(Clone)]
pub struct AppendHandle {
    shared: Arc<Shared>,
    first_lsn: Lsn,
    last_lsn: Lsn,
}

impl AppendHandle {
    /// LSN of the (last) record.
    pub fn lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// LSN of the first record of a group (equals `lsn()` for a single record).
    pub fn first_lsn(&self) -> Lsn {
        self.first_lsn
    }

    /// Blocks until durable (`Ok(last LSN)`) or until the log fails (`Err`).
    pub fn wait(&self) -> Result<Lsn, WalError> {
        self.shared.wait_durable(self.last_lsn, None)
    }

    /// Like `wait`, but gives up with `WalError::Timeout` (the record may still become
    /// durable later).
    pub fn wait_timeout_ms(&self, timeout_ms: u64) -> Result<Lsn, WalError> {
        self.shared.wait_durable(self.last_lsn, Some(Duration::from_millis(timeout_ms)))
    }

    pub fn is_durable(&self) -> bool {
        self.shared.durable_lsn() >= self.last_lsn
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, taking an exclusive lock on it.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<(Wal, Recovery), WalError> {
        config.validate()?;
        let dir = dir.as_ref();
        let shown = dir.display().to_string();
        let storage = DirStorage::open_writer(dir, config.io_mode)
            .map_err(|e| WalError::io("open directory", &shown, &e))?
            .ok_or(WalError::Locked { dir: shown })?;
        let uring = storage.uses_uring();
        let (mut wal, rec) = Wal::open_with_storage(Arc::new(storage), config)?;
        wal.uses_io_uring = uring;
        Ok((wal, rec))
    }

    /// Opens the log on any [`Storage`] (tests use [`crate::sim::SimStorage`]).
    pub fn open_with_storage(storage: Arc<dyn Storage>, config: Config) -> Result<(Wal, Recovery), WalError> {
        config.validate()?;
        let opened = recovery::open(&storage, &config, false)?;
        let Some(active) = opened.active else {
            return Err(WalError::InvalidArgument("writable open produced no active segment".into()));
        };
        let last = opened.recovery.next_lsn - 1;
        let watermark = match storage.dir_path() {
            Some(dir) => Some(
                Watermark::create(dir, last)
                    .map_err(|e| WalError::io("create watermark file", &dir.display().to_string(), &e))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared::new(
            config,
            storage,
            opened.recovery.next_lsn,
            watermark,
            opened.segments,
            opened.snapshot_lsn,
            opened.salt,
        ));
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("surge-wal-writer".into())
            .spawn(move || {
                let run = || writer::run(writer_shared.clone(), active);
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                    writer::fail_after_panic(&writer_shared);
                }
            })
            .map_err(|e| WalError::io("spawn writer thread", "-", &e))?;
        Ok((Wal { shared, writer: Some(writer), uses_io_uring: false }, opened.recovery))
    }

    /// Runs every check open runs, without the lock and without changing anything (no tail
    /// cut, no deletes, no syncs): for `surge wal inspect/verify`, and for looking at a log
    /// another process is writing (its unsynced tail may then show up as `tail_cut`).
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Recovery, WalError> {
        let storage: Arc<dyn Storage> = Arc::new(DirStorage::open_reader(dir.as_ref()));
        Wal::open_read_only_with_storage(storage)
    }

    /// [`Wal::open_read_only`] on any [`Storage`].
    pub fn open_read_only_with_storage(storage: Arc<dyn Storage>) -> Result<Recovery, WalError> {
        Ok(recovery::open(&storage, &Config::default(), true)?.recovery)
    }

    /// Appends one record. The returned handle completes when it is durable.
    pub fn append(&self, record_type: u8, payload: &[u8]) -> Result<AppendHandle, WalError> {
        self.append_group(&[(record_type, payload)])
    }

    /// Appends several records atomically: after any crash either all of them are in the
    /// log or none is. They get consecutive LSNs and are written by one write.
    pub fn append_group(&self, records: &[(u8, &[u8])]) -> Result<AppendHandle, WalError> {
        let (first_lsn, last_lsn) = self.shared.enqueue(records, None)?;
        Ok(AppendHandle { shared: self.shared.clone(), first_lsn, last_lsn })
    }

    /// Appends one record and calls `on_durable` on the writer thread once it is durable
    /// (`Ok(lsn)`) or can never be (`Err`). Returns the record's LSN. If this returns `Err`,
    /// `on_durable` is dropped without being called. Keep the callback short (e.g. send
    /// on a channel or complete a oneshot): the next group commit waits for it. Callbacks
    /// run in LSN order. A panic in a callback is contained (the log carries on). A
    /// callback may append (it never waits for queue space: a full queue is `QueueFull`
    /// there, since only this thread frees space), but dropping the `Wal` from inside a
    /// callback would deadlock (it joins the writer thread).
    pub fn append_with<F>(&self, record_type: u8, payload: &[u8], on_durable: F) -> Result<Lsn, WalError>
    where
        F: FnOnce(Result<Lsn, WalError>) + Send + 'static,
    {
        self.append_group_with(&[(record_type, payload)], on_durable)
    }

    /// Atomic group with a callback; the callback gets the group's last LSN. Returns the
    /// last LSN; the group's LSNs are `last - records.len() + 1 ..= last`.
    pub fn append_group_with<F>(&self, records: &[(u8, &[u8])], on_durable: F) -> Result<Lsn, WalError>
    where
        F: FnOnce(Result<Lsn, WalError>) + Send + 'static,
    {
        let (_, last) = self.shared.enqueue(records, Some(Box::new(on_durable)))?;
        Ok(last)
    }

    /// Every record at or below this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn()
    }

    /// Counters since open, for metrics (commits, records, bytes, fsync time, queue fill).
    pub fn stats(&self) -> crate::stats::WalStats {
        self.shared.stats()
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.shared.next_lsn()
    }

    /// `Some` once a write or fsync failed: the log acknowledges nothing more; reopen it.
    pub fn failure(&self) -> Option<WalError> {
        self.shared.failure()
    }

    /// Blocks until `lsn` is durable (or the log fails, or the timeout passes).
    pub fn wait_durable(&self, lsn: Lsn, timeout_ms: u64) -> Result<Lsn, WalError> {
        self.shared.wait_durable(lsn, Some(Duration::from_millis(timeout_ms)))
    }

    /// Whether the writer uses io_uring (false: pwrite + fdatasync).
    pub fn uses_io_uring(&self) -> bool {
        self.uses_io_uring
    }

    /// Durably stores the caller's state as of `lsn` (must be <= `durable_lsn()`), removes
    /// older snapshots and runs retention. Returns the segment files retention deleted.
    pub fn write_snapshot(&self, lsn: Lsn, state: &[u8]) -> Result<Vec<String>, WalError> {
        snapshot::write(&self.shared, lsn, state)
    }

    /// Registers or advances reader `reader`'s checkpoint: it has consumed everything up to
    /// and including `lsn`; retention keeps everything after it.
    pub fn set_reader_checkpoint(&self, reader: &str, lsn: Lsn) -> Result<(), WalError> {
        retention::store_checkpoint(&*self.shared.storage, reader, lsn)
    }

    /// Forgets reader `reader`: retention no longer waits for it.
    pub fn remove_reader(&self, reader: &str) -> Result<(), WalError> {
        retention::remove_checkpoint(&*self.shared.storage, reader)
    }

    /// Registered readers and their checkpoints.
    pub fn readers(&self) -> Result<Vec<(String, Lsn)>, WalError> {
        retention::read_checkpoints(&*self.shared.storage)
    }

    /// Deletes segments every consumer is done with; returns their names.
    pub fn run_retention(&self) -> Result<Vec<String>, WalError> {
        retention::run(&self.shared)
    }

    /// An in-process tailer yielding durable records from `from_lsn` on.
    pub fn tail(&self, from_lsn: Lsn) -> Result<Tailer, WalError> {
        Tailer::local(self.shared.clone(), from_lsn)
    }

    /// Flushes everything queued, stops the writer and reports a failure if there was one.
    pub fn close(mut self) -> Result<(), WalError> {
        self.stop();
        match self.shared.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        self.shared.close();
        if let Some(w) = self.writer.take() {
            // A panicking writer already failed every waiter it could; nothing to add here.
            let _ = w.join();
        }
        // The writer is gone: nothing writes any more, so the directory may be reopened now,
        // even if handles or tailers still hold on to the shared state.
        self.shared.storage.unlock();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop();
    }
}
