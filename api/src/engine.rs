//! The engine host: one thread per shard, each owning a `surge_core::Shard`, joined to the
//! write-ahead log.
//!
//! A shard thread drains what is waiting (bounded), executes each request, encodes each
//! applied outcome's events as one log record, and appends the drained batch's records as
//! one atomic group. Every answer it produces — writes, replays, refusals and reads — is
//! held until everything the shard appended before it is durable, so nobody ever sees a
//! change that could still be lost (design rule 4). On a log failure the shard goes stale
//! (writes and reads answer 503 `storage_unavailable`), and the supervisor thread reopens
//! the log and rebuilds every shard from it: the in-memory state is rolled back to what the
//! log holds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::Histogram;
use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use surge_core::encoding::encode_events;
use surge_core::image;
use surge_core::{shard_of, CoreError, Outcome, Reply, Request, Shard};
use surge_wal::{Lsn, Recovery, Wal, WalError};
use tokio::sync::{oneshot, Semaphore};

pub use surge_core::image::EVENTS_RECORD_TYPE as RECORD_EVENTS;
/// Most jobs a shard takes in one drain.
const DRAIN_MAX: usize = 512;
/// A group is appended once its records reach this size (the log's batch limit is 4 MiB).
const GROUP_BYTES_MAX: usize = 1 << 20;
/// Requests queued or in flight per shard before callers wait (back-pressure).
const SHARD_INFLIGHT_MAX: usize = 16_384;
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

enum Job {
    Exec {
        req: Box<Request>,
        tx: oneshot::Sender<ExecResult>,
    },
    /// Requests of one merchant, run in order; their records go into one group.
    Batch {
        reqs: Vec<Request>,
        tx: oneshot::Sender<Vec<ExecResult>>,
    },
    Read {
        run: Box<dyn FnOnce(&Shard) -> Completion + Send>,
    },
}

enum Control {
    Durable(Result<Lsn, WalError>),
    /// Stop appending: the supervisor is replacing the log.
    Suspend,
    /// The rebuilt state after a log reopen.
    Replace(Box<Shard>, Sender<()>),
    Stop,
}

/// What the snapshot thread gets from the supervisor for one snapshot.
struct SnapshotJob {
    /// The log to snapshot. Weak: a storage failure may replace it meanwhile, and the
    /// supervisor must be able to close it; then this snapshot is dropped.
    wal: std::sync::Weak<Wal>,
}

struct ShardHandle {
    inbox: Sender<Job>,
    control: Sender<Control>,
    permits: Arc<Semaphore>,
}

/// State shared by the HTTP side, the shard threads and the supervisor.
struct Shared {
    wal: RwLock<Option<Arc<Wal>>>,
    /// False while the log is failed and the shards are being rebuilt.
    healthy: AtomicBool,
    /// API key hash -> merchant id.
    keys: RwLock<HashMap<[u8; 32], Arc<str>>>,
    failures: Sender<String>,
    records_since_snapshot: AtomicU64,
    stopping: AtomicBool,
    last_failure: Mutex<Option<String>>,
    storage_failures: AtomicU64,
    snapshots_written: AtomicU64,
    /// A snapshot is being encoded or written: the supervisor starts no other.
    snapshot_busy: AtomicBool,
    /// Rebuild + encode + write + fsync of the latest snapshot written, in nanoseconds.
    snapshot_write_ns: AtomicU64,
    snapshot_lsn: AtomicU64,
    /// Records per group a shard appends (one group per drain).
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
    /// Rebuild + encode + write + fsync of the latest snapshot written (snapshot thread).
    pub snapshot_write: Duration,
    /// LSN of the latest snapshot written since start (0: none).
    pub snapshot_lsn: Lsn,
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
    handles: Vec<ShardHandle>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
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
        // The snapshot thread's replica starts as a copy of the recovered state (taken
        // before anything runs, so it pauses nothing); no snapshots, no copy.
        let replica = (config.snapshot_every_records > 0).then(|| Replica::new(shards.clone(), wal.next_lsn() - 1));
        let (failures_tx, failures_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            wal: RwLock::new(Some(Arc::new(wal))),
            healthy: AtomicBool::new(true),
            keys: RwLock::new(key_map(&shards)),
            failures: failures_tx.clone(),
            records_since_snapshot: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            storage_failures: AtomicU64::new(0),
            snapshots_written: AtomicU64::new(0),
            snapshot_busy: AtomicBool::new(false),
            snapshot_write_ns: AtomicU64::new(0),
            snapshot_lsn: AtomicU64::new(0),
            group_records: Histogram::new(&GROUP_RECORDS_BUCKETS),
            group_commit: Histogram::new(&GROUP_COMMIT_BUCKETS_S),
        });
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (index, shard) in shards.into_iter().enumerate() {
            let (inbox_tx, inbox_rx) = crossbeam_channel::unbounded();
            let (control_tx, control_rx) = crossbeam_channel::unbounded();
            let worker = Worker {
                index,
                shard,
                inbox: inbox_rx,
                control: control_rx,
                control_tx: control_tx.clone(),
                shared: shared.clone(),
                stale: false,
                stopping: false,
                last_appended: 0,
                durable_seen: 0,
                inflight: VecDeque::new(),
                waiting: VecDeque::new(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("surge-shard-{index}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("spawning a shard thread: {e}"))?;
            threads.push(thread);
            handles.push(ShardHandle {
                inbox: inbox_tx,
                control: control_tx,
                permits: Arc::new(Semaphore::new(SHARD_INFLIGHT_MAX)),
            });
        }
        // One round at a time: the supervisor starts none while `snapshot_busy`.
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(1);
        let snapshot_shared = shared.clone();
        let snapshot_thread = std::thread::Builder::new()
            .name("surge-snapshot".into())
            .spawn(move || write_snapshots(&snapshot_shared, replica, &jobs_rx))
            .map_err(|e| format!("spawning the snapshot thread: {e}"))?;
        let supervisor = Supervisor {
            opener,
            shared: shared.clone(),
            controls: handles.iter().map(|h| h.control.clone()).collect(),
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
            handles,
            shared,
            threads: Mutex::new(threads),
            supervisor: Mutex::new(Some(supervisor)),
            supervisor_stop: failures_tx,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.handles.len()
    }

    /// Whether the log is writable (false while a storage failure is being recovered).
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> EngineStats {
        let s = &self.shared;
        EngineStats {
            healthy: self.is_healthy(),
            shards: self.handles.len(),
            storage_failures: s.storage_failures.load(Ordering::Relaxed),
            snapshots_written: s.snapshots_written.load(Ordering::Relaxed),
            records_since_snapshot: s.records_since_snapshot.load(Ordering::Relaxed),
            snapshot_write: Duration::from_nanos(s.snapshot_write_ns.load(Ordering::Relaxed)),
            snapshot_lsn: s.snapshot_lsn.load(Ordering::Relaxed),
            queue_depths: self.handles.iter().map(|h| SHARD_INFLIGHT_MAX - h.permits.available_permits()).collect(),
            merchants: s.keys.read().len(),
            wal: s.wal.read().as_ref().map(|w| w.stats()),
        }
    }

    /// The shards' group histograms, in Prometheus text.
    pub fn render_histograms(&self, out: &mut String) {
        use std::fmt::Write;
        let name = "surge_log_group_records";
        let _ = writeln!(out, "# HELP {name} Records per group a shard appended (one group per drain of its queue).");
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

    fn handle(&self, merchant: &str) -> &ShardHandle {
        &self.handles[shard_of(merchant, self.handles.len())]
    }

    /// Runs a request on its merchant's shard; answers once its record is durable.
    pub async fn execute(&self, req: Request) -> ExecResult {
        if !self.is_healthy() {
            return Err(ExecError::Storage(self.unavailable_reason()));
        }
        let handle = self.handle(&req.merchant);
        let _permit = handle.permits.acquire().await.map_err(|_| ExecError::Storage("shutting down".into()))?;
        let (tx, rx) = oneshot::channel();
        handle
            .inbox
            .send(Job::Exec { req: Box::new(req), tx })
            .map_err(|_| ExecError::Storage("shutting down".into()))?;
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
        let handle = self.handle(merchant);
        let Ok(_permit) = handle.permits.acquire().await else { return refuse("shutting down".into()) };
        let (tx, rx) = oneshot::channel();
        if handle.inbox.send(Job::Batch { reqs, tx }).is_err() {
            return refuse("shutting down".into());
        }
        rx.await.unwrap_or_else(|_| refuse("the shard stopped".into()))
    }

    /// Runs `f` on the merchant's shard, after everything that shard applied before is durable.
    pub async fn read<R, F>(&self, merchant: &str, f: F) -> Result<R, ExecError>
    where
        R: Send + 'static,
        F: FnOnce(&Shard) -> R + Send + 'static,
    {
        let handle = self.handle(merchant);
        let _permit = handle.permits.acquire().await.map_err(|_| ExecError::Storage("shutting down".into()))?;
        let (tx, rx) = oneshot::channel::<Result<R, ExecError>>();
        let run: Box<dyn FnOnce(&Shard) -> Completion + Send> = Box::new(move |shard: &Shard| {
            let value = f(shard);
            Box::new(move |err: Option<ExecError>| {
                let _ = tx.send(match err {
                    None => Ok(value),
                    Some(e) => Err(e),
                });
            }) as Completion
        });
        handle.inbox.send(Job::Read { run }).map_err(|_| ExecError::Storage("shutting down".into()))?;
        rx.await.unwrap_or_else(|_| Err(ExecError::Storage("the shard stopped".into())))
    }

    fn unavailable_reason(&self) -> String {
        match self.last_failure() {
            Some(f) => format!("the write-ahead log is unavailable ({f}); nothing was applied, retry later"),
            None => "the write-ahead log is unavailable; nothing was applied, retry later".into(),
        }
    }

    /// Stops the supervisor, then every shard once what it appended is durable, then the log.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.supervisor_stop.send(String::new());
        if let Some(s) = self.supervisor.lock().take() {
            let _ = s.join();
        }
        for h in &self.handles {
            let _ = h.control.send(Control::Stop);
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        let wal = self.shared.wal.write().take();
        if let Some(wal) = wal.and_then(|w| Arc::try_unwrap(w).ok()) {
            if let Err(e) = wal.close() {
                tracing::warn!("closing the log: {e}");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    index: usize,
    shard: Shard,
    inbox: Receiver<Job>,
    control: Receiver<Control>,
    control_tx: Sender<Control>,
    shared: Arc<Shared>,
    /// The state may hold changes the log does not: answer nothing from it until replaced.
    stale: bool,
    stopping: bool,
    last_appended: Lsn,
    durable_seen: Lsn,
    /// (last LSN of a group, the shard's applied events after it, when it was appended).
    inflight: VecDeque<(Lsn, u64, Instant)>,
    /// Answers held until the LSN is durable, in LSN order.
    waiting: VecDeque<(Lsn, Completion)>,
}

/// Records of the current group and the answers that depend on them.
#[derive(Default)]
struct Group {
    records: Vec<Vec<u8>>,
    bytes: usize,
    waiters: Vec<Completion>,
}

impl Worker {
    fn run(mut self) {
        let mut next_tick = Instant::now() + TICK_INTERVAL;
        loop {
            while let Ok(c) = self.control.try_recv() {
                self.on_control(c);
            }
            if self.stopping && self.inflight.is_empty() {
                self.fail_waiting("shutting down");
                return;
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK_INTERVAL;
                if !self.stopping {
                    self.tick();
                }
                continue;
            }
            let timeout = next_tick - now;
            if self.stopping {
                // Only the log's answers may come in now.
                if let Ok(c) = self.control.recv_timeout(timeout) {
                    self.on_control(c);
                }
                continue;
            }
            select! {
                recv(self.control) -> c => if let Ok(c) = c { self.on_control(c) },
                recv(self.inbox) -> job => if let Ok(job) = job { self.drain(job) },
                default(timeout) => {}
            }
        }
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Durable(Ok(lsn)) => {
                self.durable_seen = self.durable_seen.max(lsn);
                while let Some(&(l, applied, appended)) = self.inflight.front() {
                    if l > lsn {
                        break;
                    }
                    self.inflight.pop_front();
                    self.shared.group_commit.observe(appended.elapsed().as_secs_f64());
                    if !self.stale {
                        self.shard.mark_durable(applied);
                    }
                }
                while self.waiting.front().is_some_and(|(l, _)| *l <= self.durable_seen) {
                    if let Some((_, done)) = self.waiting.pop_front() {
                        done(None);
                    }
                }
            }
            Control::Durable(Err(e)) => {
                // Callbacks come in LSN order: everything still waiting depends on this
                // group or a later one, none of which can become durable now.
                let reason = e.to_string();
                self.go_stale(&reason);
                self.inflight.clear();
                self.fail_waiting(&format!("the write-ahead log failed ({reason}); nothing was applied"));
            }
            Control::Suspend => {
                // Answers already waiting still get the log's verdict through `Durable`.
                self.stale = true;
            }
            Control::Replace(shard, ack) => {
                self.fail_waiting("the write-ahead log was reopened");
                self.shard = *shard;
                self.stale = false;
                self.inflight.clear();
                self.last_appended = 0;
                self.durable_seen = 0;
                let _ = ack.send(());
            }
            Control::Stop => self.stopping = true,
        }
    }

    fn fail_waiting(&mut self, reason: &str) {
        for (_, done) in self.waiting.drain(..) {
            done(Some(ExecError::Storage(reason.to_string())));
        }
    }

    /// The state now holds changes the log will not have: stop answering from it and ask
    /// the supervisor to rebuild it from the log.
    fn go_stale(&mut self, reason: &str) {
        if !self.stale {
            tracing::error!(shard = self.index, "log failure, shard goes stale until rebuilt: {reason}");
            // Not ready from now on (the supervisor sets it back once the shards are rebuilt).
            self.shared.healthy.store(false, Ordering::Release);
            let _ = self.shared.failures.send(reason.to_string());
        }
        self.stale = true;
    }

    /// Answers now, or after what this shard appended so far is durable.
    fn settle(&mut self, group: &mut Group, done: Completion) {
        if !group.records.is_empty() {
            group.waiters.push(done);
        } else if self.last_appended > self.durable_seen {
            self.waiting.push_back((self.last_appended, done));
        } else {
            done(None);
        }
    }

    fn drain(&mut self, first: Job) {
        let now = surge_core::UnixMs::from(now_ms());
        let mut group = Group::default();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            taken += 1;
            self.run_job(job, now, &mut group);
            if group.bytes >= GROUP_BYTES_MAX {
                self.append(std::mem::take(&mut group));
            }
            if taken < DRAIN_MAX {
                next = self.inbox.try_recv().ok();
            }
        }
        if !group.records.is_empty() {
            self.append(group);
        }
    }

    /// The shard has seen a log failure, or the log is down: nothing is answered from memory.
    fn log_unavailable(&self) -> bool {
        self.stale || !self.shared.healthy.load(Ordering::Acquire)
    }

    /// Executes one request; an applied outcome's events become one record of `group`.
    fn execute_into(&mut self, req: &Request, now: u64, group: &mut Group) -> Result<Executed, ExecError> {
        match self.shard.execute(req, now) {
            Ok(Outcome::Applied { events, reply }) => {
                let record = encode_events(&events);
                group.bytes += record.len();
                group.records.push(record);
                Ok(Executed { reply, replayed: false })
            }
            Ok(Outcome::Replayed { reply }) => Ok(Executed { reply, replayed: true }),
            Err(e) => Err(ExecError::Core(e)),
        }
    }

    fn run_job(&mut self, job: Job, now: u64, group: &mut Group) {
        match job {
            Job::Exec { req, tx } => {
                if self.log_unavailable() {
                    let _ = tx.send(Err(ExecError::Storage(LOG_UNAVAILABLE.into())));
                    return;
                }
                let result = self.execute_into(&req, now, group);
                let done: Completion = Box::new(move |err| {
                    let _ = tx.send(match err {
                        None => result,
                        Some(e) => Err(e),
                    });
                });
                self.settle(group, done);
            }
            Job::Batch { reqs, tx } => {
                if self.log_unavailable() {
                    let _ = tx.send(reqs.iter().map(|_| Err(ExecError::Storage(LOG_UNAVAILABLE.into()))).collect());
                    return;
                }
                let results: Vec<_> = reqs.iter().map(|req| self.execute_into(req, now, group)).collect();
                let done: Completion = Box::new(move |err| {
                    let _ = tx.send(match err {
                        None => results,
                        Some(e) => results.iter().map(|_| Err(e.clone())).collect(),
                    });
                });
                self.settle(group, done);
            }
            Job::Read { run } => {
                if self.stale {
                    let done = run(&Shard::new());
                    done(Some(ExecError::Storage(LOG_UNAVAILABLE.into())));
                    return;
                }
                let done = run(&self.shard);
                self.settle(group, done);
            }
        }
    }

    fn tick(&mut self) {
        if self.stale || !self.shared.healthy.load(Ordering::Acquire) {
            return;
        }
        let events = self.shard.tick(now_ms());
        if events.is_empty() {
            return;
        }
        let record = encode_events(&events);
        self.append(Group { bytes: record.len(), records: vec![record], waiters: Vec::new() });
    }

    fn append(&mut self, group: Group) {
        let wal = self.shared.wal.read().clone();
        let refs: Vec<(u8, &[u8])> = group.records.iter().map(|r| (RECORD_EVENTS, r.as_slice())).collect();
        let ctl = self.control_tx.clone();
        let appended = match &wal {
            Some(wal) => wal.append_group_with(&refs, move |r| {
                let _ = ctl.send(Control::Durable(r));
            }),
            None => Err(WalError::Closed),
        };
        drop(wal);
        match appended {
            Ok(last) => {
                self.last_appended = last;
                self.inflight.push_back((last, self.shard.applied_events(), Instant::now()));
                self.shared.group_records.observe(refs.len() as f64);
                for done in group.waiters {
                    self.waiting.push_back((last, done));
                }
                self.shared.records_since_snapshot.fetch_add(refs.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Only this group is refused; earlier groups still get the log's verdict
                // (a full queue or an oversized record does not fail them).
                let reason = e.to_string();
                for done in group.waiters {
                    done(Some(ExecError::Storage(format!("the write-ahead log refused the write ({reason})"))));
                }
                self.go_stale(&reason);
            }
        }
    }
}

struct Supervisor {
    opener: WalOpener,
    shared: Arc<Shared>,
    controls: Vec<Sender<Control>>,
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
        for c in &self.controls {
            let _ = c.send(Control::Suspend);
        }
        let old = self.shared.wal.write().take();
        if let Some(mut wal) = old {
            // Shards hold a clone only while appending.
            loop {
                match Arc::try_unwrap(wal) {
                    Ok(w) => {
                        let _ = w.close();
                        break;
                    }
                    Err(w) => {
                        wal = w;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
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
        let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
        for (c, shard) in self.controls.iter().zip(shards) {
            let _ = c.send(Control::Replace(Box::new(shard), ack_tx.clone()));
        }
        for _ in 0..self.controls.len() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Asks the snapshot thread for a snapshot; the shards are not involved at all.
    fn maybe_snapshot(&self) {
        let every = self.config.snapshot_every_records;
        if every == 0 || self.shared.records_since_snapshot.load(Ordering::Relaxed) < every {
            return;
        }
        if !self.shared.healthy.load(Ordering::Acquire) || self.shared.snapshot_busy.load(Ordering::Acquire) {
            return;
        }
        let Some(jobs) = &self.snapshot_jobs else { return };
        let Some(wal) = self.shared.wal.read().as_ref().map(Arc::downgrade) else { return };
        self.shared.records_since_snapshot.store(0, Ordering::Relaxed);
        self.shared.snapshot_busy.store(true, Ordering::Release);
        if jobs.try_send(SnapshotJob { wal }).is_err() {
            self.shared.snapshot_busy.store(false, Ordering::Release);
        }
    }
}

/// The snapshot thread, at the lowest CPU priority. Snapshots are taken from a replica of
/// the shards that this thread keeps by following the durable log through the same `apply`
/// as recovery: by design rule 1 the replica after record N is byte for byte the shards'
/// state after record N. So no shard ever pauses for a snapshot (cloning a shard with ~700k
/// orders paused every shard for 100-650 ms here); the price is a second copy of the state
/// in memory and applying every record twice (cheap next to HTTP and JSON).
fn write_snapshots(shared: &Shared, replica: Option<Replica>, jobs: &Receiver<SnapshotJob>) {
    lower_priority();
    let Some(mut replica) = replica else {
        // Snapshots are off: nothing to follow; just answer (drop) jobs until shutdown.
        for _ in jobs.iter() {
            shared.snapshot_busy.store(false, Ordering::Release);
        }
        return;
    };
    loop {
        match jobs.recv_timeout(FOLLOW_INTERVAL) {
            Ok(job) => {
                if !shared.stopping.load(Ordering::Acquire) {
                    replica.snapshot(shared, job);
                }
                shared.snapshot_busy.store(false, Ordering::Release);
            }
            // Between snapshots keep up with the log, so a snapshot mostly has to encode.
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => replica.follow(shared, None),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// How often the replica catches up with the log between snapshots.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Most records the replica applies per catch-up while no snapshot waits (bounds the time
/// before this thread sees the next job).
const FOLLOW_RECORDS_MAX: u64 = 50_000;

/// The shards as of LSN `lsn`, rebuilt from the log as it becomes durable.
struct Replica {
    shards: Vec<Shard>,
    lsn: Lsn,
    /// The log followed, and a tailer on it from `lsn + 1`.
    tail: Option<(std::sync::Weak<Wal>, surge_wal::Tailer)>,
    /// A record did not decode or apply: the replica can no longer be trusted.
    broken: bool,
    /// LSN of the newest snapshot this thread wrote.
    written: Lsn,
}

impl Replica {
    fn new(shards: Vec<Shard>, lsn: Lsn) -> Replica {
        Replica { shards, lsn, tail: None, broken: false, written: 0 }
    }

    /// Applies durable records of the current log, up to `upto` (all there are when None,
    /// at most `FOLLOW_RECORDS_MAX`). After a storage failure the reopened log holds every
    /// record the old one made durable, so following simply continues on it.
    fn follow(&mut self, shared: &Shared, upto: Option<Lsn>) {
        if self.broken {
            return;
        }
        let Some(wal) = shared.wal.read().clone() else { return };
        if !self.tail.as_ref().is_some_and(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&wal))) {
            match wal.tail(self.lsn + 1) {
                Ok(t) => self.tail = Some((Arc::downgrade(&wal), t)),
                Err(e) => {
                    tracing::warn!("snapshot replica: tailing the log from LSN {}: {e}", self.lsn + 1);
                    return;
                }
            }
        }
        // The tailer does not need the log handle: let go of it, so a storage failure can
        // close the log without waiting for this thread.
        drop(wal);
        let Some((_, tail)) = self.tail.as_mut() else { return };
        let limit = upto.unwrap_or_else(|| self.lsn.saturating_add(FOLLOW_RECORDS_MAX));
        while self.lsn < limit {
            let record = match tail.try_next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    // E.g. the log failed: start a new tailer on whatever log comes next.
                    tracing::warn!("snapshot replica: tailing the log at LSN {}: {e}", self.lsn + 1);
                    self.tail = None;
                    return;
                }
            };
            assert_eq!(record.lsn, self.lsn + 1, "the tailer yields every LSN in order");
            let applied = image::record_events(record.record_type, &record.payload)
                .and_then(|events| image::apply_events(&mut self.shards, &events));
            if let Err(e) = applied {
                tracing::error!("snapshot replica: record at LSN {}: {e}; no more snapshots until restart", record.lsn);
                self.broken = true;
                return;
            }
            self.lsn = record.lsn;
        }
    }

    /// Catches up with everything durable now, encodes and writes the snapshot.
    fn snapshot(&mut self, shared: &Shared, job: SnapshotJob) {
        let started = Instant::now();
        let Some(upto) = job.wal.upgrade().map(|w| w.durable_lsn()) else { return };
        self.follow(shared, Some(upto));
        let lsn = self.lsn;
        if self.broken || lsn == 0 || lsn <= self.written {
            return;
        }
        let caught_up = started.elapsed();
        let images: Vec<Vec<u8>> = self.shards.iter().map(Shard::snapshot).collect();
        let bytes = image::encode_snapshot(&images);
        drop(images);
        let encoded = started.elapsed() - caught_up;
        // Only into the log the replica follows (a storage failure may have replaced it).
        let Some(wal) = job.wal.upgrade() else { return };
        let current = shared.wal.read().as_ref().is_some_and(|w| Arc::ptr_eq(w, &wal));
        if !current || wal.durable_lsn() < lsn {
            return;
        }
        match wal.write_snapshot(lsn, &bytes) {
            Ok(removed) => {
                let took = started.elapsed();
                self.written = lsn;
                shared.snapshots_written.fetch_add(1, Ordering::Relaxed);
                shared.snapshot_write_ns.store(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
                shared.snapshot_lsn.store(lsn, Ordering::Relaxed);
                tracing::info!(
                    lsn,
                    bytes = bytes.len(),
                    removed = removed.len(),
                    ?caught_up,
                    ?encoded,
                    ?took,
                    "snapshot written"
                )
            }
            Err(e) => tracing::warn!("writing a snapshot at LSN {lsn} failed: {e}"),
        }
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
