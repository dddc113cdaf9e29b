//! The engine host: the shards, each a `surge_core::Shard` behind a short lock, joined to
//! the write-ahead log.
//!
//! A request runs on the caller's thread (a tokio worker): under its shard's lock it takes
//! the log's news (`mark_durable`), executes, encodes an applied outcome's events as one log
//! record and appends it (a batch's records as one atomic group), so per shard log order is
//! apply order. Every answer — writes, replays, refusals and reads — is then held until
//! everything the shard appended before it is durable; the log's callback (on its writer
//! thread) releases it, so nobody ever sees a change that could still be lost (design rule
//! 4). No hop to a shard thread: that hop cost ~1 context switch and ~14 us of CPU per
//! request. On a log failure the shard goes stale (writes and reads answer 503
//! `storage_unavailable`), and the supervisor thread reopens the log and rebuilds every
//! shard from it: the in-memory state is rolled back to what the log holds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::Histogram;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use surge_core::encoding::encode_events;
use surge_core::image;
use surge_core::{shard_of, CoreError, FrozenShard, Outcome, Reply, Request, Shard};
use surge_wal::{Lsn, Recovery, Wal, WalError};
use tokio::sync::{oneshot, Semaphore};

pub use surge_core::image::EVENTS_RECORD_TYPE as RECORD_EVENTS;
/// Requests executing or waiting for the log per shard before callers wait (back-pressure).
/// Appends happen on tokio workers under the shard's lock, so this also keeps the log's
/// queue (65,536 records / 8 MiB by default) from filling up under ordinary records: a full
/// queue would block a worker (the log waits for room) instead of a shard thread.
const SHARD_INFLIGHT_MAX: usize = 4_096;
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);
const LOG_UNAVAILABLE: &str = "the write-ahead log is unavailable";

type OpenFn = Box<dyn Fn() -> Result<(Wal, Recovery), WalError> + Send + Sync>;
type OpenReadOnlyFn = Box<dyn Fn() -> Result<Recovery, WalError> + Send + Sync>;

/// Opens (recovers) the log: at start, and again after a storage failure. While the log
/// cannot be reopened for writing, the read-only open serves reads from what it holds.
pub struct WalOpener {
    open: OpenFn,
    open_read_only: OpenReadOnlyFn,
}

impl WalOpener {
    /// The log in directory `dir`.
    pub fn dir(dir: std::path::PathBuf, config: surge_wal::Config) -> WalOpener {
        let ro = dir.clone();
        WalOpener {
            open: Box::new(move || Wal::open(&dir, config.clone())),
            open_read_only: Box::new(move || Wal::open_read_only(&ro)),
        }
    }

    /// The log on any storage (tests use the log's crash-simulating `SimStorage`).
    pub fn storage(storage: Arc<dyn surge_wal::Storage>, config: surge_wal::Config) -> WalOpener {
        let ro = storage.clone();
        WalOpener {
            open: Box::new(move || Wal::open_with_storage(storage.clone(), config.clone())),
            open_read_only: Box::new(move || Wal::open_read_only_with_storage(ro.clone())),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What an executed request produced.
#[derive(Debug, Clone)]
pub struct Executed {
    pub reply: Reply,
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub enum ExecError {
    Core(CoreError),
    /// The log could not make it durable (or the engine is rebuilding): nothing was applied.
    Storage(String),
}

pub type ExecResult = Result<Executed, ExecError>;

type Completion = Box<dyn FnOnce(Option<ExecError>) + Send>;

/// What the snapshot thread gets from the supervisor for one snapshot.
struct SnapshotJob {
    /// The log to snapshot. Weak: a storage failure may replace it meanwhile, and the
    /// supervisor must be able to close it; then this snapshot is dropped.
    wal: std::sync::Weak<Wal>,
    /// The shards hold every record up to this LSN and none after it.
    lsn: Lsn,
    shards: Vec<FrozenShard>,
}

/// One shard: its state behind a short lock that the caller's thread (a tokio worker)
/// takes to decide, apply and append, so a request needs no hop to another thread; the
/// answers wait in `log` until the log reports their records durable.
struct Cell {
    state: Mutex<CellState>,
    log: Arc<CellLog>,
    /// Requests waiting for or holding this shard (back-pressure).
    permits: Semaphore,
}

struct CellState {
    shard: Shard,
    last_appended: Lsn,
    /// (last LSN of a group, the shard's applied events after it).
    inflight: VecDeque<(Lsn, u64)>,
}

/// What the log's callbacks (on its writer thread) and the request path share.
struct CellLog {
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
}

#[derive(Default)]
struct Waits {
    /// The log failed: nothing beyond `CellLog::durable` will become durable.
    failed: Option<String>,
    /// Answers held until their LSN is durable, in no particular order (`on_durable` looks at all).
    waiting: VecDeque<(Lsn, Completion)>,
}

/// State shared by the HTTP side, the log callbacks, the ticker and the supervisor.
struct Shared {
    wal: RwLock<Option<Arc<Wal>>>,
    /// False while the log is failed and the shards are being rebuilt.
    healthy: AtomicBool,
    /// API key hash -> merchant id.
    keys: RwLock<HashMap<[u8; 32], Arc<str>>>,
    failures: Sender<String>,
    records_since_snapshot: AtomicU64,
    /// Payload bytes appended since the last snapshot was asked for.
    log_bytes_since_snapshot: AtomicU64,
    /// Size of the latest snapshot written: the next one waits for as many log bytes.
    snapshot_bytes: AtomicU64,
    stopping: AtomicBool,
    last_failure: Mutex<Option<String>>,
    storage_failures: AtomicU64,
    snapshots_written: AtomicU64,
    /// A snapshot is being encoded or written: the supervisor starts no other.
    snapshot_busy: AtomicBool,
    /// Wait for durability + encode + write + fsync of the latest snapshot written, in ns.
    snapshot_write_ns: AtomicU64,
    /// How long the latest snapshot held every shard's lock (to freeze them), in ns.
    snapshot_pause_ns: AtomicU64,
    snapshot_lsn: AtomicU64,
    /// Records per group a shard appends (one per request; a batch's records are one group).
    group_records: Histogram,
    /// From a shard's append of a group to the log's report that it is durable.
    group_commit: Histogram,
}

/// Bounds of `group_records`.
const GROUP_RECORDS_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Bounds of `group_commit`, in seconds.
const GROUP_COMMIT_BUCKETS_S: [f64; 12] =
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

pub struct EngineConfig {
    pub shards: usize,
    /// Write a snapshot after this many records (0: never).
    pub snapshot_every_records: u64,
    /// How often the supervisor retries opening a failed log.
    pub reopen_interval: Duration,
}

pub struct Engine {
    cells: Vec<Arc<Cell>>,
    shared: Arc<Shared>,
    ticker: Mutex<Option<JoinHandle<()>>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    supervisor_stop: Sender<String>,
}

/// Rebuilds shards from what the log recovered: the snapshot (if any), then every record after it.
pub fn replay(recovery: &Recovery, shard_count: usize) -> Result<Vec<Shard>, String> {
    let mut shards = match recovery.snapshot() {
        Some((lsn, bytes)) => {
            image::decode_snapshot(bytes, Some(shard_count)).map_err(|e| format!("snapshot at LSN {lsn}: {e}"))?
        }
        None => (0..shard_count).map(|_| Shard::new()).collect(),
    };
    for record in recovery.records() {
        let record = record.map_err(|e| format!("reading the log: {e}"))?;
        image::record_events(record.record_type, record.payload)
            .and_then(|events| image::apply_events(&mut shards, &events))
            .map_err(|e| format!("record at LSN {}: {e}", record.lsn))?;
    }
    for shard in &mut shards {
        let applied = shard.applied_events();
        shard.mark_durable(applied);
    }
    Ok(shards)
}

fn key_map(shards: &[Shard]) -> HashMap<[u8; 32], Arc<str>> {
    shards.iter().flat_map(|s| s.merchants()).map(|m| (m.api_key_hash, m.id.clone())).collect()
}

impl Engine {
    /// Opens the log with `opener`, recovers every shard and starts the threads. A record
    /// that does not decode or apply stops start-up with an error naming its LSN.
    pub fn start(opener: WalOpener, config: EngineConfig) -> Result<Engine, String> {
        let n = config.shards.max(1);
        let (wal, recovery) = (opener.open)().map_err(|e| format!("opening the log: {e}"))?;
        if let Some(cut) = &recovery.tail_cut {
            tracing::warn!(?cut, "cut a torn tail off the log");
        }
        let shards = replay(&recovery, n)?;
        drop(recovery);
        tracing::info!(shards = n, next_lsn = wal.next_lsn(), "recovered");
        let (failures_tx, failures_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            wal: RwLock::new(Some(Arc::new(wal))),
            healthy: AtomicBool::new(true),
            keys: RwLock::new(key_map(&shards)),
            failures: failures_tx.clone(),
            records_since_snapshot: AtomicU64::new(0),
            log_bytes_since_snapshot: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            storage_failures: AtomicU64::new(0),
            snapshots_written: AtomicU64::new(0),
            snapshot_busy: AtomicBool::new(false),
            snapshot_write_ns: AtomicU64::new(0),
            snapshot_pause_ns: AtomicU64::new(0),
            snapshot_lsn: AtomicU64::new(0),
            group_records: Histogram::new(&GROUP_RECORDS_BUCKETS),
            group_commit: Histogram::new(&GROUP_COMMIT_BUCKETS_S),
        });
        let cells: Vec<Arc<Cell>> = shards
            .into_iter()
            .enumerate()
            .map(|(index, shard)| {
                Arc::new(Cell {
                    state: Mutex::new(CellState { shard, last_appended: 0, inflight: VecDeque::new() }),
                    log: Arc::new(CellLog {
                        index,
                        stale: AtomicBool::new(false),
                        durable: AtomicU64::new(0),
                        epoch: AtomicU64::new(0),
                        waits: Mutex::new(Waits::default()),
                        shared: shared.clone(),
                    }),
                    permits: Semaphore::new(SHARD_INFLIGHT_MAX),
                })
            })
            .collect();
        let ticker_cells = cells.clone();
        let ticker_shared = shared.clone();
        let ticker = std::thread::Builder::new()
            .name("surge-ticker".into())
            .spawn(move || run_ticker(&ticker_shared, &ticker_cells))
            .map_err(|e| format!("spawning the ticker: {e}"))?;
        // One round at a time: the supervisor starts none while `snapshot_busy`.
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(1);
        let snapshot_shared = shared.clone();
        let snapshot_thread = std::thread::Builder::new()
            .name("surge-snapshot".into())
            .spawn(move || write_snapshots(&snapshot_shared, &jobs_rx))
            .map_err(|e| format!("spawning the snapshot thread: {e}"))?;
        let supervisor = Supervisor {
            opener,
            shared: shared.clone(),
            cells: cells.clone(),
            failures: failures_rx,
            config,
            shard_count: n,
            snapshot_jobs: Some(jobs_tx),
            snapshot_thread: Some(snapshot_thread),
        };
        let supervisor = std::thread::Builder::new()
            .name("surge-supervisor".into())
            .spawn(move || supervisor.run())
            .map_err(|e| format!("spawning the supervisor: {e}"))?;
        Ok(Engine {
            cells,
            shared,
            ticker: Mutex::new(Some(ticker)),
            supervisor: Mutex::new(Some(supervisor)),
            supervisor_stop: failures_tx,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.cells.len()
    }

    /// Whether the log is writable (false while a storage failure is being recovered).
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

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
            wal: s.wal.read().as_ref().map(|w| w.stats()),
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

    pub fn last_failure(&self) -> Option<String> {
        self.shared.last_failure.lock().clone()
    }

    /// The merchant an API key hash belongs to.
    pub fn merchant_for_key(&self, hash: &[u8; 32]) -> Option<Arc<str>> {
        self.shared.keys.read().get(hash).cloned()
    }

    /// Called once a `CreateMerchant` is durable.
    pub fn register_key(&self, hash: [u8; 32], merchant: &str) {
        self.shared.keys.write().insert(hash, merchant.into());
    }

    fn cell(&self, merchant: &str) -> &Cell {
        &self.cells[shard_of(merchant, self.cells.len())]
    }

    /// Runs a request on its merchant's shard; answers once its record is durable.
    pub async fn execute(&self, req: Request) -> ExecResult {
        if !self.is_healthy() {
            return Err(ExecError::Storage(self.unavailable_reason()));
        }
        let cell = self.cell(&req.merchant);
        let _permit = cell.permits.acquire().await.map_err(|_| ExecError::Storage("shutting down".into()))?;
        let (tx, rx) = oneshot::channel();
        let done = cell.write(&self.shared, |shard, now, records| execute_into(shard, &req, now, records));
        done.settle(cell, move |result| {
            let _ = tx.send(result.and_then(|executed| executed));
        });
        rx.await.unwrap_or_else(|_| Err(ExecError::Storage("the shard stopped".into())))
    }

    /// Runs requests of `merchant` in order, each on its own; all their records are
    /// appended as one atomic group (one log write), and every answer waits for it.
    pub async fn execute_batch(&self, merchant: &str, reqs: Vec<Request>) -> Vec<ExecResult> {
        let n = reqs.len();
        let refuse = |why: String| (0..n).map(|_| Err(ExecError::Storage(why.clone()))).collect();
        if !self.is_healthy() {
            return refuse(self.unavailable_reason());
        }
        debug_assert!(reqs.iter().all(|r| r.merchant == merchant));
        let cell = self.cell(merchant);
        let Ok(_permit) = cell.permits.acquire().await else { return refuse("shutting down".into()) };
        let (tx, rx) = oneshot::channel();
        let done = cell.write(&self.shared, |shard, now, records| {
            reqs.iter().map(|req| execute_into(shard, req, now, records)).collect::<Vec<_>>()
        });
        done.settle(cell, move |result| {
            let _ = tx.send(match result {
                Ok(results) => results,
                Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
            });
        });
        rx.await.unwrap_or_else(|_| refuse("the shard stopped".into()))
    }

    /// Runs `f` on the merchant's shard, after everything that shard applied before is durable.
    pub async fn read<R, F>(&self, merchant: &str, f: F) -> Result<R, ExecError>
    where
        R: Send + 'static,
        F: FnOnce(&Shard) -> R + Send + 'static,
    {
        let cell = self.cell(merchant);
        let _permit = cell.permits.acquire().await.map_err(|_| ExecError::Storage("shutting down".into()))?;
        let (tx, rx) = oneshot::channel::<Result<R, ExecError>>();
        let done = cell.read(f);
        done.settle(cell, move |result| {
            let _ = tx.send(result);
        });
        rx.await.unwrap_or_else(|_| Err(ExecError::Storage("the shard stopped".into())))
    }

    fn unavailable_reason(&self) -> String {
        match self.last_failure() {
            Some(f) => format!("the write-ahead log is unavailable ({f}); nothing was applied, retry later"),
            None => "the write-ahead log is unavailable; nothing was applied, retry later".into(),
        }
    }

    /// Stops the supervisor and the ticker, then closes the log once what was appended is
    /// durable (closing flushes it; every waiting answer gets the log's verdict).
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.supervisor_stop.send(String::new());
        if let Some(s) = self.supervisor.lock().take() {
            let _ = s.join();
        }
        if let Some(t) = self.ticker.lock().take() {
            let _ = t.join();
        }
        let wal = self.shared.wal.write().take();
        if let Some(wal) = wal.map(unwrap_when_released) {
            if let Err(e) = wal.close() {
                tracing::warn!("closing the log: {e}");
            }
        }
        for cell in &self.cells {
            cell.log.fail_waiting("shutting down");
        }
    }
}

/// The log itself once nobody else holds it (a request thread holds a clone only while
/// appending, the snapshot thread only while it checks the log's progress).
fn unwrap_when_released(mut wal: Arc<Wal>) -> Wal {
    loop {
        match Arc::try_unwrap(wal) {
            Ok(w) => return w,
            Err(w) => {
                wal = w;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Executes one request; an applied outcome's events become one record.
fn execute_into(shard: &mut Shard, req: &Request, now: u64, records: &mut Vec<Vec<u8>>) -> ExecResult {
    match shard.execute(req, now) {
        Ok(Outcome::Applied { events, reply }) => {
            records.push(encode_events(&events));
            Ok(Executed { reply, replayed: false })
        }
        Ok(Outcome::Replayed { reply }) => Ok(Executed { reply, replayed: true }),
        Err(e) => Err(ExecError::Core(e)),
    }
}

/// An answer computed under the shard's lock, and the LSN (of the log as of `epoch`) it
/// must wait for.
#[must_use]
enum Pending<T> {
    Now(Result<T, ExecError>),
    After { lsn: Lsn, epoch: u64, value: T },
}

impl<T: Send + 'static> Pending<T> {
    /// Delivers the answer now, or once `lsn` is durable (an error if the log fails first).
    fn settle(self, cell: &Cell, deliver: impl FnOnce(Result<T, ExecError>) + Send + 'static) {
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
    /// Under the shard's lock: takes the log's news, runs `work` (which may apply and push
    /// records), appends those records as one group, and says what the answer waits for:
    /// everything this shard appended so far. Appending under the lock keeps the shard's
    /// log order equal to its apply order.
    fn write<T>(&self, shared: &Shared, work: impl FnOnce(&mut Shard, u64, &mut Vec<Vec<u8>>) -> T) -> Pending<T> {
        let mut st = self.state.lock();
        let _abort = AbortOnPanic;
        if self.log.unavailable() {
            return Pending::Now(Err(ExecError::Storage(LOG_UNAVAILABLE.into())));
        }
        let epoch = self.log.absorb(&mut st);
        let mut records = Vec::new();
        let value = work(&mut st.shard, now_ms(), &mut records);
        if !records.is_empty() {
            if let Err(reason) = self.append(shared, &mut st, &records) {
                return Pending::Now(Err(ExecError::Storage(format!(
                    "the write-ahead log refused the write ({reason})"
                ))));
            }
        }
        Pending::After { lsn: st.last_appended, epoch, value }
    }

    /// Under the shard's lock: runs `f` on the state; the answer waits until everything
    /// this shard appended before is durable.
    fn read<R>(&self, f: impl FnOnce(&Shard) -> R) -> Pending<R> {
        let mut st = self.state.lock();
        if self.log.stale.load(Ordering::Acquire) {
            return Pending::Now(Err(ExecError::Storage(LOG_UNAVAILABLE.into())));
        }
        let epoch = self.log.absorb(&mut st);
        let value = f(&st.shard);
        Pending::After { lsn: st.last_appended, epoch, value }
    }

    /// The expiries that are due, appended like any command's events.
    fn tick(&self, shared: &Shared) {
        let mut st = self.state.lock();
        let _abort = AbortOnPanic;
        if self.log.unavailable() {
            return;
        }
        self.log.absorb(&mut st);
        let events = st.shard.tick(now_ms());
        if events.is_empty() {
            return;
        }
        let _ = self.append(shared, &mut st, &[encode_events(&events)]);
    }

    /// Appends `records` as one atomic group; a refusal makes the shard stale.
    fn append(&self, shared: &Shared, st: &mut CellState, records: &[Vec<u8>]) -> Result<(), String> {
        let refs: Vec<(u8, &[u8])> = records.iter().map(|r| (RECORD_EVENTS, r.as_slice())).collect();
        let log = self.log.clone();
        let wal = shared.wal.read().clone();
        let started = Instant::now();
        let appended = match &wal {
            Some(wal) => wal.append_group_with(&refs, move |r| log.on_durable(r, started)),
            None => Err(WalError::Closed),
        };
        drop(wal);
        match appended {
            Ok(last) => {
                st.last_appended = last;
                st.inflight.push_back((last, st.shard.applied_events()));
                shared.group_records.observe(refs.len() as f64);
                shared.records_since_snapshot.fetch_add(refs.len() as u64, Ordering::Relaxed);
                let bytes: usize = refs.iter().map(|(_, r)| r.len()).sum();
                shared.log_bytes_since_snapshot.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Only this group is refused; earlier groups still get the log's verdict
                // (a full queue or an oversized record does not fail them).
                let reason = e.to_string();
                self.log.go_stale(&reason);
                Err(reason)
            }
        }
    }
}

impl CellLog {
    /// The shard has seen a log failure, or the log is down: nothing is answered from memory.
    fn unavailable(&self) -> bool {
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
            done(Some(ExecError::Storage("the write-ahead log was reopened; retry".into())));
        } else if lsn <= self.durable.load(Ordering::Acquire) {
            drop(w);
            done(None);
        } else if let Some(reason) = &w.failed {
            let e = ExecError::Storage(format!("the write-ahead log failed ({reason}); nothing was applied"));
            drop(w);
            done(Some(e));
        } else {
            w.waiting.push_back((lsn, done));
        }
    }

    /// The log's verdict on a group of this shard (on the log's writer thread, in LSN order).
    fn on_durable(&self, result: Result<Lsn, WalError>, appended: Instant) {
        let mut w = self.waits.lock();
        match result {
            Ok(lsn) => {
                self.shared.group_commit.observe(appended.elapsed().as_secs_f64());
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
                let reason = e.to_string();
                w.failed = Some(reason.clone());
                let waiting: Vec<_> = w.waiting.drain(..).collect();
                drop(w);
                self.go_stale(&reason);
                for (_, done) in waiting {
                    done(Some(ExecError::Storage(format!(
                        "the write-ahead log failed ({reason}); nothing was applied"
                    ))));
                }
            }
        }
    }

    fn fail_waiting(&self, reason: &str) {
        let waiting: Vec<_> = self.waits.lock().waiting.drain(..).collect();
        for (_, done) in waiting {
            done(Some(ExecError::Storage(reason.to_string())));
        }
    }

    /// The state now holds changes the log will not have: stop answering from it and ask
    /// the supervisor to rebuild it from the log.
    fn go_stale(&self, reason: &str) {
        if !self.stale.swap(true, Ordering::AcqRel) {
            tracing::error!(shard = self.index, "log failure, shard goes stale until rebuilt: {reason}");
            // Not ready from now on (the supervisor sets it back once the shards are rebuilt).
            self.shared.healthy.store(false, Ordering::Release);
            let _ = self.shared.failures.send(reason.to_string());
        }
    }
}

/// Ticks every shard every `TICK_INTERVAL` (expiries go through the log like any command).
fn run_ticker(shared: &Shared, cells: &[Arc<Cell>]) {
    while !shared.stopping.load(Ordering::Acquire) {
        std::thread::sleep(TICK_INTERVAL);
        for cell in cells {
            cell.tick(shared);
        }
    }
}

struct Supervisor {
    opener: WalOpener,
    shared: Arc<Shared>,
    cells: Vec<Arc<Cell>>,
    failures: Receiver<String>,
    config: EngineConfig,
    shard_count: usize,
    snapshot_jobs: Option<Sender<SnapshotJob>>,
    snapshot_thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    fn run(mut self) {
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
            match self.failures.recv_timeout(Duration::from_millis(200)) {
                Ok(reason) if !reason.is_empty() => self.recover(reason),
                Ok(_) => {}
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => self.maybe_snapshot(),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Takes the failed log away from the shards, reopens it (retrying) and rebuilds every
    /// shard from what it holds, so no change the log lost stays visible.
    fn recover(&self, reason: String) {
        self.shared.healthy.store(false, Ordering::Release);
        self.shared.storage_failures.fetch_add(1, Ordering::Relaxed);
        *self.shared.last_failure.lock() = Some(reason.clone());
        tracing::error!("storage failure: {reason}; reopening the log");
        for cell in &self.cells {
            // Answers already waiting still get the log's verdict through its callbacks.
            cell.log.stale.store(true, Ordering::Release);
        }
        let old = self.shared.wal.write().take();
        if let Some(wal) = old {
            // Closing stops the writer after it has reported on every group it was given.
            let _ = unwrap_when_released(wal).close();
        }
        while self.failures.try_recv().is_ok() {}
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
                    *self.shared.last_failure.lock() = Some(e);
                    if !serving_reads {
                        match self.rebuild_read_only() {
                            Ok(()) => {
                                serving_reads = true;
                                tracing::warn!("serving reads from the log as it is on disk; writes answer 503");
                            }
                            Err(e) => tracing::error!("reading the log failed too, reads answer 503: {e}"),
                        }
                    }
                    std::thread::sleep(self.config.reopen_interval);
                }
            }
        }
    }

    fn reopen(&self) -> Result<(), String> {
        let (wal, recovery) = (self.opener.open)().map_err(|e| e.to_string())?;
        // Ready means writable: prove it with an empty event batch (a valid record that
        // applies nothing) before any shard may append again.
        let probe = wal
            .append(RECORD_EVENTS, &encode_events(&[]))
            .and_then(|h| h.wait_timeout_ms(10_000))
            .map_err(|e| format!("the reopened log is not writable: {e}"));
        if let Err(e) = probe {
            drop(recovery);
            let _ = wal.close();
            return Err(e);
        }
        let shards = replay(&recovery, self.shard_count)?;
        drop(recovery);
        *self.shared.wal.write() = Some(Arc::new(wal));
        self.replace(shards);
        Ok(())
    }

    /// While the log cannot be written: rebuild the shards from what a read-only open finds,
    /// so reads are answered (from the log, never from memory the log lost). Writes stay
    /// refused: `healthy` is false and there is no log to append to.
    fn rebuild_read_only(&self) -> Result<(), String> {
        let recovery = (self.opener.open_read_only)().map_err(|e| e.to_string())?;
        let shards = replay(&recovery, self.shard_count)?;
        self.replace(shards);
        Ok(())
    }

    fn replace(&self, shards: Vec<Shard>) {
        *self.shared.keys.write() = key_map(&shards);
        for (cell, shard) in self.cells.iter().zip(shards) {
            let mut st = cell.state.lock();
            st.shard = shard;
            st.last_appended = 0;
            st.inflight.clear();
            // One step under the waits lock: whatever waited on the old log is failed, and
            // an answer computed on it that registers later sees the new epoch and fails.
            let mut w = cell.log.waits.lock();
            cell.log.epoch.fetch_add(1, Ordering::AcqRel);
            cell.log.durable.store(0, Ordering::Release);
            w.failed = None;
            let waiting: Vec<_> = w.waiting.drain(..).collect();
            drop(w);
            cell.log.stale.store(false, Ordering::Release);
            drop(st);
            for (_, done) in waiting {
                done(Some(ExecError::Storage("the write-ahead log was reopened".into())));
            }
        }
    }

    /// Asks the snapshot thread for a snapshot (see [`snapshot_due`]); the shards are not
    /// involved at all.
    fn maybe_snapshot(&self) {
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
        let Some(wal) = self.shared.wal.read().clone() else { return };
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
        if jobs.try_send(SnapshotJob { wal: Arc::downgrade(&wal), lsn, shards }).is_err() {
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
fn write_snapshots(shared: &Shared, jobs: &Receiver<SnapshotJob>) {
    lower_priority();
    for job in jobs.iter() {
        if !shared.stopping.load(Ordering::Acquire) {
            write_snapshot(shared, job);
        }
        shared.snapshot_busy.store(false, Ordering::Release);
    }
}

/// Longest a frozen snapshot waits for its LSN to become durable (a healthy log takes a
/// group commit, milliseconds); past it the snapshot is dropped and the next one is asked.
const SNAPSHOT_DURABLE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Whether `lsn` became durable on the log of the job, while it still is the current log.
fn wait_durable(shared: &Shared, wal: &std::sync::Weak<Wal>, lsn: Lsn) -> bool {
    let started = Instant::now();
    loop {
        // Hold the log only to look: a storage failure must be able to close it meanwhile.
        let durable = match wal.upgrade() {
            Some(w) if shared.wal.read().as_ref().is_some_and(|c| Arc::ptr_eq(c, &w)) => w.durable_lsn(),
            _ => return false,
        };
        if durable >= lsn {
            return true;
        }
        if started.elapsed() > SNAPSHOT_DURABLE_WAIT_MAX || shared.stopping.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the frozen state's LSN is durable (a snapshot must never hold a change the
/// log could still lose), then encodes and writes it into that same log.
fn write_snapshot(shared: &Shared, job: SnapshotJob) {
    let started = Instant::now();
    let SnapshotJob { wal, lsn, shards } = job;
    if lsn == 0 || lsn <= shared.snapshot_lsn.load(Ordering::Relaxed) {
        return;
    }
    if !wait_durable(shared, &wal, lsn) {
        tracing::warn!(lsn, "no snapshot: the log did not make the frozen state durable");
        return;
    }
    let durable_after = started.elapsed();
    // Room for the previous image and some growth: no copies while encoding.
    let previous = shared.snapshot_bytes.load(Ordering::Relaxed) as usize;
    let bytes = image::encode_snapshot(&shards, previous + previous / 4);
    // Let go of the chunks at once: the live shards stop copying them on change.
    drop(shards);
    let encoded = started.elapsed() - durable_after;
    let Some(wal) = wal.upgrade() else { return };
    if !shared.wal.read().as_ref().is_some_and(|w| Arc::ptr_eq(w, &wal)) {
        return;
    }
    match wal.write_snapshot(lsn, &bytes) {
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
