//! The engine host: the shards, each a `surge_core::Shard` behind a short lock, joined to
//! the write-ahead log. A request runs on the caller's thread (a tokio worker) and is
//! answered only once the log holds it (design rule 4). There is no hop to a shard thread:
//! that hop cost ~1 context switch and ~14 us of CPU per request.
//!
//! Each rule is stated in the module that keeps it:
//! - `cell`: a shard behind its lock; per shard, log order is apply order, and no answer
//!   leaves before everything its shard appended before it is durable.
//! - `supervisor`: a log failure makes the shards stale; the log is reopened and every
//!   shard rebuilt from it, so no change the log lost stays visible.
//! - `snapshot`: when a snapshot is due, and why one never holds a change the log could lose.
//! - `wal`: opening the log, lending it out, and closing it only once every loan is back
//!   (a bounded wait, woken by the last return).
//! - `ticker`: expiries go through the log like any command.
//! - `metrics`: the engine's own figures and histograms for `/metrics`.
//! - `business`: orders, payments, stock and the like for `/metrics`, counted from the
//!   events once the log holds them.
//! - `replicated`: cluster mode, where a shard is a partition whose log is replicated
//!   elsewhere (or that another node owns), with no local log, supervisor or snapshot thread.
//! - `error`: what a request, a start or a rebuild fails with.

mod business;
mod cell;
mod error;
mod metrics;
mod replicated;
mod snapshot;
mod supervisor;
mod ticker;
mod wal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Histogram;
use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use surge_core::encoding::encode_events;
use surge_core::image;
use surge_core::{shard_of, Outcome, Reply, Request, Shard};
use surge_wal::{Recovery, Wal};
use tokio::sync::oneshot;

use self::business::{BusinessCounters, Tally};
use self::cell::Cell;
use self::metrics::{GROUP_COMMIT_BUCKETS_S, GROUP_RECORDS_BUCKETS};
use self::replicated::Backend;
use self::snapshot::write_snapshots;
use self::supervisor::{Command, Supervisor};
use self::ticker::run_ticker;
use self::wal::WalSlot;

pub use self::business::{BusinessFigures, ORDER_EVENTS};
pub use self::error::{ExecError, ReplayError, StartError, StorageError};
pub use self::metrics::EngineStats;
pub use self::replicated::{ReplicatedLog, Verdict};
pub use self::ticker::TICK_INTERVAL;
pub use self::wal::WalOpener;
pub use surge_core::image::EVENTS_RECORD_TYPE as RECORD_EVENTS;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What an executed request produced.
#[derive(Debug, Clone)]
pub struct Executed {
    pub reply: Reply,
    pub replayed: bool,
    /// It logged events (a command that changes nothing, like a repeated gateway report,
    /// logs none).
    pub changed: bool,
}

pub type ExecResult = Result<Executed, ExecError>;

/// State shared by the HTTP side, the log callbacks, the ticker and the supervisor.
struct Shared {
    wal: WalSlot,
    /// False while the log is failed and the shards are being rebuilt.
    healthy: AtomicBool,
    /// API key hash -> merchant id.
    keys: RwLock<HashMap<[u8; 32], Arc<str>>>,
    /// The supervisor's commands.
    supervisor: Sender<Command>,
    records_since_snapshot: AtomicU64,
    /// Payload bytes appended since the last snapshot was asked for.
    log_bytes_since_snapshot: AtomicU64,
    /// Size of the latest snapshot written: the next one waits for as many log bytes.
    snapshot_bytes: AtomicU64,
    stopping: AtomicBool,
    /// The latest storage failure or failed reopen, as operators read it.
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
    /// What the durable events and the engine's answers say about the business.
    business: BusinessCounters,
    /// Cluster mode: partitions whose replicated log failed, for the node's controller to
    /// rebuild or give up (in single-node mode the supervisor rebuilds every shard instead).
    partition_failures: Option<Sender<u32>>,
}

impl Shared {
    fn new(
        wal: Option<Wal>,
        keys: HashMap<[u8; 32], Arc<str>>,
        supervisor: Sender<Command>,
        partition_failures: Option<Sender<u32>>,
    ) -> Shared {
        Shared {
            wal: WalSlot::new(wal),
            healthy: AtomicBool::new(true),
            keys: RwLock::new(keys),
            supervisor,
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
            business: BusinessCounters::default(),
            partition_failures,
        }
    }
}

/// Starts one of the engine's threads.
fn spawn(name: &str, thread: &'static str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new().name(name.into()).spawn(f).map_err(|source| StartError::Spawn { thread, source })
}

/// The shards' time settings, as `EngineConfig` takes them.
pub use surge_core::Settings;

pub struct EngineConfig {
    pub shards: usize,
    /// Write a snapshot after this many records (0: never).
    pub snapshot_every_records: u64,
    /// How often the supervisor retries opening a failed log.
    pub reopen_interval: Duration,
    /// The shards' time settings (idempotency window, retention of settled aggregates).
    pub settings: surge_core::Settings,
}

pub struct Engine {
    cells: Vec<Arc<Cell>>,
    shared: Arc<Shared>,
    ticker: Mutex<Option<JoinHandle<()>>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    supervisor_commands: Sender<Command>,
}

/// Rebuilds shards from what the log recovered: the snapshot (if any), then every record
/// after it; the shards then decide with `settings` (replay itself uses none).
pub fn replay(
    recovery: &Recovery,
    shard_count: usize,
    settings: surge_core::Settings,
) -> Result<Vec<Shard>, ReplayError> {
    let mut shards = match recovery.snapshot() {
        Some((lsn, bytes)) => {
            image::decode_snapshot(bytes, Some(shard_count)).map_err(|source| ReplayError::Snapshot { lsn, source })?
        }
        None => (0..shard_count).map(|_| Shard::new()).collect(),
    };
    for record in recovery.records() {
        let record = record.map_err(ReplayError::Read)?;
        image::record_events(record.record_type, record.payload)
            .and_then(|events| image::apply_events(&mut shards, &events))
            .map_err(|source| ReplayError::Record { lsn: record.lsn, source })?;
    }
    for shard in &mut shards {
        let applied = shard.applied_events();
        shard.mark_durable(applied);
        shard.set_settings(settings);
    }
    Ok(shards)
}

fn key_map(shards: &[Shard]) -> HashMap<[u8; 32], Arc<str>> {
    shards.iter().flat_map(|s| s.merchants()).map(|m| (m.api_key_hash, m.id.clone())).collect()
}

impl Engine {
    /// Opens the log with `opener`, recovers every shard and starts the threads. A record
    /// that does not decode or apply stops start-up with an error naming its LSN.
    pub fn start(opener: WalOpener, config: EngineConfig) -> Result<Engine, StartError> {
        let n = config.shards.max(1);
        let (wal, recovery) = (opener.open)().map_err(StartError::Open)?;
        if let Some(cut) = &recovery.tail_cut {
            tracing::warn!(?cut, "cut a torn tail off the log");
        }
        let shards = replay(&recovery, n, config.settings)?;
        drop(recovery);
        tracing::info!(shards = n, next_lsn = wal.next_lsn(), "recovered");
        let (commands_tx, commands_rx) = supervisor::commands(n);
        let shared = Arc::new(Shared::new(Some(wal), key_map(&shards), commands_tx.clone(), None));
        let cells: Vec<Arc<Cell>> = shards
            .into_iter()
            .enumerate()
            .map(|(index, shard)| Arc::new(Cell::new(index, shard, Backend::Local, &shared)))
            .collect();
        // Threads already started end once `stopping` is set (the snapshot thread once its
        // queue, held by the supervisor that never ran, is dropped).
        let stop_on_failure = |e: StartError| {
            shared.stopping.store(true, Ordering::Release);
            e
        };
        let (ticker_shared, ticker_cells) = (shared.clone(), cells.clone());
        let ticker = spawn("surge-ticker", "ticker", move || run_ticker(&ticker_shared, &ticker_cells))?;
        // One round at a time: the supervisor starts none while `snapshot_busy`.
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(1);
        let snapshot_shared = shared.clone();
        let snapshot_thread =
            spawn("surge-snapshot", "snapshot thread", move || write_snapshots(&snapshot_shared, &jobs_rx))
                .map_err(stop_on_failure)?;
        let supervisor = Supervisor {
            opener,
            shared: shared.clone(),
            cells: cells.clone(),
            commands: commands_rx,
            config,
            shard_count: n,
            snapshot_jobs: Some(jobs_tx),
            snapshot_thread: Some(snapshot_thread),
        };
        let supervisor = spawn("surge-supervisor", "supervisor", move || supervisor.run()).map_err(stop_on_failure)?;
        Ok(Engine {
            cells,
            shared,
            ticker: Mutex::new(Some(ticker)),
            supervisor: Mutex::new(Some(supervisor)),
            supervisor_commands: commands_tx,
        })
    }

    /// Cluster mode: `partitions` shards, none owned yet, with no local log. The node's
    /// controller gives each partition it takes a shard and its replicated log
    /// ([`Engine::take_partition`]); a partition whose log fails is named on
    /// `partition_failures` (bounded: one per partition until it is replaced).
    pub fn start_cluster(
        partitions: usize,
        settings: surge_core::Settings,
    ) -> Result<(Engine, crossbeam_channel::Receiver<u32>), StartError> {
        assert!(partitions > 0, "a cluster has at least one partition");
        let (commands_tx, _no_supervisor) = supervisor::commands(partitions);
        let (failed_tx, failed_rx) = crossbeam_channel::bounded(partitions);
        let shared = Arc::new(Shared::new(None, HashMap::new(), commands_tx.clone(), Some(failed_tx)));
        let cells: Vec<Arc<Cell>> = (0..partitions)
            .map(|index| {
                let mut shard = Shard::new();
                shard.set_settings(settings);
                Arc::new(Cell::new(index, shard, Backend::Elsewhere, &shared))
            })
            .collect();
        let (ticker_shared, ticker_cells) = (shared.clone(), cells.clone());
        let ticker = spawn("surge-ticker", "ticker", move || run_ticker(&ticker_shared, &ticker_cells))?;
        let engine = Engine {
            cells,
            shared,
            ticker: Mutex::new(Some(ticker)),
            supervisor: Mutex::new(None),
            supervisor_commands: commands_tx,
        };
        Ok((engine, failed_rx))
    }

    /// Cluster mode: serves `partition` from `shard` (rebuilt from its replicated log, every
    /// event durable), appending to `log`. Whatever waited on the partition before fails.
    pub fn take_partition(
        &self,
        partition: u32,
        mut shard: Shard,
        settings: surge_core::Settings,
        log: Arc<dyn ReplicatedLog>,
    ) {
        let cell = &self.cells[partition as usize];
        shard.set_settings(settings);
        {
            let mut keys = self.shared.keys.write();
            keys.extend(shard.merchants().map(|m| (m.api_key_hash, m.id.clone())));
        }
        cell.set_owner(None);
        let moved = StorageError::Replication(format!("partition {partition} changed hands"));
        cell.replace_with(shard, Backend::Replicated(log), moved);
    }

    /// Cluster mode: stops taking requests for `partition` (they answer `NotOwner`, which
    /// the HTTP layer turns into `503 partition_moving`: nothing applied) while the groups
    /// already submitted still get their log's verdicts and their answers. The first step
    /// of handing a partition over; `give_up_partition` ends it.
    pub fn drain_partition(&self, partition: u32) {
        self.cells[partition as usize].drain();
    }

    /// Cluster mode: this node's hold on `partition` as of now (it changes when the partition
    /// is taken or given up, not when it is drained): what `resume_partition` checks.
    pub fn partition_generation(&self, partition: u32) -> u64 {
        self.cells[partition as usize].generation()
    }

    /// Cluster mode: serves a drained partition again on `log` (its lease, lapsed, was
    /// renewed after all), if it was neither given up nor taken again since `generation`.
    /// True if it serves again.
    pub fn resume_partition(&self, partition: u32, generation: u64, log: Arc<dyn ReplicatedLog>) -> bool {
        self.cells[partition as usize].resume(generation, log)
    }

    /// Cluster mode: stops serving `partition` (lost, failed or handed over): its state is
    /// dropped and its requests answer `NotOwner` until it is taken again.
    pub fn give_up_partition(&self, partition: u32) {
        let cell = &self.cells[partition as usize];
        let gone = StorageError::Replication(format!("this node gave partition {partition} up"));
        cell.replace_with(Shard::new(), Backend::Elsewhere, gone);
    }

    /// Cluster mode: `NotOwner` when another node owns `merchant`'s partition (a request
    /// that is one group, such as a batch, is then forwarded whole).
    pub fn owned_elsewhere(&self, merchant: &str) -> Option<ExecError> {
        self.cell(merchant).elsewhere()
    }

    /// Cluster mode: the address of the node that owns `partition`, for forwarding (`None`
    /// while nobody does).
    pub fn set_partition_owner(&self, partition: u32, address: Option<Arc<str>>) {
        self.cells[partition as usize].set_owner(address);
    }

    /// Cluster mode: queues a snapshot of `partition`'s state through its replicated log and
    /// says its size in bytes; `None` when this node does not own it.
    pub fn snapshot_partition(&self, partition: u32, done: Verdict) -> Option<Result<usize, String>> {
        self.cells[partition as usize].snapshot_replicated(done)
    }

    /// Cluster mode: makes the API keys of merchants in a partition owned elsewhere known
    /// here, so their requests authenticate before they are forwarded.
    pub fn learn_keys(&self, keys: impl IntoIterator<Item = ([u8; 32], Arc<str>)>) {
        self.shared.keys.write().extend(keys);
    }

    pub fn shard_count(&self) -> usize {
        self.cells.len()
    }

    /// Whether the log is writable (false while a storage failure is being recovered).
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
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

    /// Called once a `RotateApiKey` is durable: the merchant's old key stops working.
    /// Scans the key table (one entry per merchant): rotations are rare operator actions.
    pub fn replace_key(&self, merchant: &str, hash: [u8; 32]) {
        let mut keys = self.shared.keys.write();
        keys.retain(|_, m| &**m != merchant);
        keys.insert(hash, merchant.into());
    }

    /// Orders and settled payments since start, as the business counters hold them.
    pub fn business_figures(&self) -> BusinessFigures {
        self.shared.business.figures()
    }

    fn cell(&self, merchant: &str) -> &Cell {
        &self.cells[shard_of(merchant, self.cells.len())]
    }

    /// Runs a request on its merchant's shard; answers once its record is durable.
    pub async fn execute(&self, req: Request) -> ExecResult {
        if !self.is_healthy() {
            return Err(ExecError::Storage(self.unavailable()));
        }
        let cell = self.cell(&req.merchant);
        let _permit = cell.permits.acquire().await.map_err(|_| ExecError::Storage(StorageError::ShuttingDown))?;
        let (tx, rx) = oneshot::channel();
        let done =
            cell.write(&self.shared, |shard, now, records, tally| execute_into(shard, &req, now, records, tally));
        done.settle(cell, move |result| {
            let _ = tx.send(result.and_then(|executed| executed));
        });
        let result = rx.await.unwrap_or(Err(ExecError::Storage(StorageError::ShardStopped)));
        self.shared.business.answered(&result);
        result
    }

    /// Runs requests of `merchant` in order, each on its own; all their records are
    /// appended as one atomic group (one log write), and every answer waits for it.
    pub async fn execute_batch(&self, merchant: &str, reqs: Vec<Request>) -> Vec<ExecResult> {
        let n = reqs.len();
        let refuse = |why: StorageError| (0..n).map(|_| Err(ExecError::Storage(why.clone()))).collect();
        if !self.is_healthy() {
            return refuse(self.unavailable());
        }
        debug_assert!(reqs.iter().all(|r| r.merchant == merchant));
        let cell = self.cell(merchant);
        let Ok(_permit) = cell.permits.acquire().await else { return refuse(StorageError::ShuttingDown) };
        let (tx, rx) = oneshot::channel();
        let done = cell.write(&self.shared, |shard, now, records, tally| {
            reqs.iter().map(|req| execute_into(shard, req, now, records, tally)).collect::<Vec<_>>()
        });
        done.settle(cell, move |result| {
            let _ = tx.send(match result {
                Ok(results) => results,
                Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
            });
        });
        let results = rx.await.unwrap_or_else(|_| refuse(StorageError::ShardStopped));
        for result in &results {
            self.shared.business.answered(result);
        }
        results
    }

    /// Runs `f` on the merchant's shard, after everything that shard applied before is durable.
    pub async fn read<R, F>(&self, merchant: &str, f: F) -> Result<R, ExecError>
    where
        R: Send + 'static,
        F: FnOnce(&Shard) -> R + Send + 'static,
    {
        let cell = self.cell(merchant);
        let _permit = cell.permits.acquire().await.map_err(|_| ExecError::Storage(StorageError::ShuttingDown))?;
        let (tx, rx) = oneshot::channel::<Result<R, ExecError>>();
        let done = cell.read(f);
        done.settle(cell, move |result| {
            let _ = tx.send(result);
        });
        rx.await.unwrap_or_else(|_| Err(ExecError::Storage(StorageError::ShardStopped)))
    }

    /// Runs `f` on every shard in turn (each after what it applied before is durable): for
    /// views across merchants (admin listings, gauges). Holds one shard at a time.
    pub async fn read_each<R, F>(&self, f: F) -> Result<Vec<R>, ExecError>
    where
        R: Send + 'static,
        F: Fn(&Shard) -> R + Clone + Send + 'static,
    {
        Ok(self.read_cells(f, false).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Cluster mode: `read_each` over the partitions this node serves now, each answer with
    /// its partition; the others (owned elsewhere, moving, draining) are skipped.
    pub async fn read_owned<R, F>(&self, f: F) -> Result<Vec<(u32, R)>, ExecError>
    where
        R: Send + 'static,
        F: Fn(&Shard) -> R + Clone + Send + 'static,
    {
        self.read_cells(f, true).await
    }

    async fn read_cells<R, F>(&self, f: F, owned_only: bool) -> Result<Vec<(u32, R)>, ExecError>
    where
        R: Send + 'static,
        F: Fn(&Shard) -> R + Clone + Send + 'static,
    {
        let mut out = Vec::with_capacity(self.cells.len());
        for (index, cell) in self.cells.iter().enumerate() {
            let _permit = cell.permits.acquire().await.map_err(|_| ExecError::Storage(StorageError::ShuttingDown))?;
            let (tx, rx) = oneshot::channel::<Result<R, ExecError>>();
            cell.read(f.clone()).settle(cell, move |result| {
                let _ = tx.send(result);
            });
            match rx.await.unwrap_or_else(|_| Err(ExecError::Storage(StorageError::ShardStopped))) {
                Ok(r) => out.push((index as u32, r)),
                Err(ExecError::Storage(StorageError::NotOwner { .. })) if owned_only => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn unavailable(&self) -> StorageError {
        StorageError::Unavailable { last_failure: self.last_failure() }
    }

    /// Stops the supervisor and the ticker, then closes the log once what was appended is
    /// durable (closing flushes it; every waiting answer gets the log's verdict).
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        // A wake-up only (`stopping` is what the supervisor obeys): it may be full.
        let _ = self.supervisor_commands.try_send(Command::Stop);
        if let Some(s) = self.supervisor.lock().take() {
            let _ = s.join();
        }
        if let Some(t) = self.ticker.lock().take() {
            let _ = t.join();
        }
        if let Err(e) = self.shared.wal.take_and_close() {
            tracing::error!("closing the log: {e}");
        }
        for cell in &self.cells {
            cell.log.fail_waiting(StorageError::ShuttingDown);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Executes one request; an applied outcome's events become one record, and are tallied.
fn execute_into(
    shard: &mut Shard,
    req: &Request,
    now: u64,
    records: &mut Vec<Vec<u8>>,
    tally: &mut Tally,
) -> ExecResult {
    match shard.execute(req, now) {
        Ok(Outcome::Applied { events, reply }) => {
            let changed = !events.is_empty();
            tally.events(shard, &events);
            records.push(encode_events(&events));
            Ok(Executed { reply, replayed: false, changed })
        }
        Ok(Outcome::Replayed { reply }) => Ok(Executed { reply, replayed: true, changed: false }),
        Err(e) => Err(ExecError::Core(e)),
    }
}
