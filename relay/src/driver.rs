//! One thread per sink: tail the durable log from the sink's position, hand it batches,
//! move its checkpoint once it acknowledged them, and on failure back off (exponential with
//! jitter), trip the circuit breaker, and resume from the sink's own position. The thread
//! owns a single-threaded tokio runtime for the sink's async client, so a slow sink never
//! takes a worker from the HTTP server it may share a process with.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use surge_wal::Lsn;

use crate::batch::{BatchLimits, ReadError};
use crate::breaker::{Breaker, BreakerConfig, BreakerState, Permit};
use crate::sink::{Sink, SinkError};
use crate::source::{LogCursor, LogSource, WalSource};
use crate::status::SinkStatus;

#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Where the records come from and the sinks' checkpoints go.
    pub source: Arc<dyn LogSource>,
    pub batch: BatchLimits,
    /// A write that takes longer fails (and counts against the breaker).
    pub call_timeout_ms: u64,
    /// A resume that takes longer fails. Longer than a write's: a sink may rebuild its
    /// state from the log or rewrite a snapshot's worth of rows there.
    pub resume_timeout_ms: u64,
    /// The reader checkpoint is stored at most this often (each store is an fsync, or an
    /// etcd write); on stop it is stored once more. A checkpoint behind the sink only means
    /// re-delivery.
    pub checkpoint_interval_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub breaker: BreakerConfig,
}

impl DriverConfig {
    /// Drivers of the local log in `wal_dir` (`<data-dir>/wal`).
    pub fn new(wal_dir: PathBuf) -> DriverConfig {
        DriverConfig::with_source(Arc::new(WalSource::new(wal_dir)))
    }

    /// Drivers of `source`.
    pub fn with_source(source: Arc<dyn LogSource>) -> DriverConfig {
        DriverConfig {
            source,
            batch: BatchLimits::default(),
            call_timeout_ms: 30_000,
            resume_timeout_ms: 30 * 60_000,
            checkpoint_interval_ms: 200,
            backoff_min_ms: 100,
            backoff_max_ms: 5_000,
            breaker: BreakerConfig::default(),
        }
    }
}

/// The running relay: one driver thread per sink.
pub struct Relay {
    config: DriverConfig,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    statuses: Vec<Arc<SinkStatus>>,
}

impl Relay {
    pub fn new(config: DriverConfig) -> Relay {
        Relay { config, stop: Arc::new(AtomicBool::new(false)), threads: Vec::new(), statuses: Vec::new() }
    }

    /// Starts driving `sink` on a thread of its own.
    pub fn spawn<S: Sink + 'static>(&mut self, sink: S) -> std::io::Result<()> {
        self.spawn_labelled(sink, None)
    }

    /// The same, its status labelled with the partition whose log it reads (cluster mode).
    pub fn spawn_labelled<S: Sink + 'static>(&mut self, sink: S, partition: Option<u32>) -> std::io::Result<()> {
        let status = SinkStatus::labelled(sink.name(), partition);
        let driver = Driver { config: self.config.clone(), stop: self.stop.clone(), status: status.clone() };
        let thread =
            std::thread::Builder::new().name(format!("relay-{}", sink.name())).spawn(move || driver.run(sink))?;
        self.threads.push(thread);
        self.statuses.push(status);
        Ok(())
    }

    pub fn statuses(&self) -> &[Arc<SinkStatus>] {
        &self.statuses
    }

    /// Appends every sink's lag, state and counters in Prometheus text.
    pub fn render_prometheus(&self, out: &mut String) {
        crate::status::render_prometheus(&self.statuses, out);
    }

    /// Stops every driver after its current call and stores its checkpoint.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Driver {
    config: DriverConfig,
    stop: Arc<AtomicBool>,
    status: Arc<SinkStatus>,
}

/// Why the inner loop gave up on the current connection.
enum Stop {
    /// Asked to stop.
    Asked,
    /// Retry from the sink's position after a pause.
    Retry(String),
    /// Never retry.
    Fatal(String),
}

/// Where the sink stands, and when its checkpoint was last stored.
struct Position {
    written: Lsn,
    stored: Lsn,
    stored_at: Instant,
}

impl Driver {
    fn run<S: Sink>(self, mut sink: S) {
        let name = sink.name();
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return self.fatal(name, &format!("cannot start its runtime: {e}")),
        };
        let mut breaker = Breaker::new(self.config.breaker);
        let mut backoff = self.backoff();
        let mut failing = false;
        // Bounded by the stop flag: every round either runs the inner loop or sleeps.
        while !self.stopping() {
            let (permit, changed) = breaker.permit(Instant::now());
            self.breaker_changed(name, changed);
            if let Permit::Refused(wait) = permit {
                self.sleep(wait);
                continue;
            }
            let outcome = self.connected(&runtime, &mut sink, &mut breaker, &mut failing, &mut backoff);
            match outcome {
                Stop::Asked => break,
                Stop::Fatal(reason) => return self.fatal(name, &reason),
                Stop::Retry(reason) => {
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    self.refresh_lag_while_down();
                    if !failing {
                        failing = true;
                        tracing::warn!(sink = name, "relay sink unavailable, retrying with backoff: {reason}");
                    }
                    let wait = backoff.next().unwrap_or(Duration::from_millis(self.config.backoff_max_ms));
                    self.sleep(wait);
                }
            }
        }
        tracing::info!(
            sink = name,
            written_lsn = self.status.written_lsn.load(Ordering::Relaxed),
            "relay sink stopped"
        );
    }

    /// Resumes the sink and writes batches until something fails or we are asked to stop.
    fn connected<S: Sink>(
        &self,
        runtime: &tokio::runtime::Runtime,
        sink: &mut S,
        breaker: &mut Breaker,
        failing: &mut bool,
        backoff: &mut backon::ExponentialBackoff,
    ) -> Stop {
        let name = sink.name();
        let source = &self.config.source;
        let checkpoint = match source.load_checkpoint(name) {
            Ok(c) => c.unwrap_or(0),
            Err(e) => return Stop::Retry(format!("reading its checkpoint: {e}")),
        };
        let started = Instant::now();
        let resume_timeout_ms = self.config.resume_timeout_ms;
        let resumed = self.call(runtime, breaker, started, resume_timeout_ms, sink.resume(checkpoint));
        let resumed = match resumed {
            Ok(lsn) => lsn,
            Err(stop) => return stop,
        };
        if *failing {
            *failing = false;
            tracing::info!(sink = name, resumed_lsn = resumed, "relay sink available again");
        }
        *backoff = self.backoff();
        // Register at once so retention keeps everything this sink still needs.
        if let Err(e) = source.store_checkpoint(name, resumed) {
            return Stop::Retry(format!("storing its checkpoint: {e}"));
        }
        self.status.written_lsn.store(resumed, Ordering::Relaxed);
        let mut position = Position { written: resumed, stored: resumed, stored_at: Instant::now() };
        let mut cursor = match source.open(resumed + 1) {
            Ok(c) => c,
            Err(e) => return Stop::Retry(format!("opening the log: {e}")),
        };
        let result = self.stream(runtime, sink, breaker, &mut cursor, &mut position);
        if position.stored != position.written {
            // Best effort: a checkpoint left behind only means re-delivery after a restart.
            if let Err(e) = source.store_checkpoint(name, position.written) {
                tracing::warn!(sink = name, "storing its checkpoint: {e}");
            }
        }
        result
    }

    fn stream<S: Sink>(
        &self,
        runtime: &tokio::runtime::Runtime,
        sink: &mut S,
        breaker: &mut Breaker,
        cursor: &mut Box<dyn LogCursor>,
        position: &mut Position,
    ) -> Stop {
        let name = sink.name();
        // Bounded by the stop flag; each round waits at most `batch.wait_ms` for records.
        while !self.stopping() {
            let batch = match cursor.read_batch(self.config.batch) {
                Ok(batch) => batch,
                Err(ReadError::Removed { lsn, oldest_lsn }) => {
                    // Retention removed them before this sink ever registered a checkpoint.
                    tracing::error!(
                        sink = name,
                        "records {lsn}..{} were removed before this sink registered; they cannot be sent; going on from {oldest_lsn}",
                        oldest_lsn - 1
                    );
                    match self.config.source.open(oldest_lsn) {
                        Ok(c) => *cursor = c,
                        Err(e) => return Stop::Retry(format!("opening the log: {e}")),
                    }
                    // The sink goes on right before the oldest record there is.
                    position.written = oldest_lsn - 1;
                    self.status.written_lsn.store(position.written, Ordering::Relaxed);
                    continue;
                }
                Err(e @ (ReadError::Log(_) | ReadError::Source(_))) => return Stop::Retry(e.to_string()),
                Err(e @ ReadError::Record { .. }) => return Stop::Fatal(e.to_string()),
            };
            let durable = cursor.durable_lsn();
            self.status.durable_lsn.store(durable, Ordering::Relaxed);
            if !batch.is_empty() {
                assert_eq!(batch.first_lsn, position.written + 1, "batches follow the sink's position");
                let started = Instant::now();
                let timeout_ms = self.config.call_timeout_ms;
                if let Err(stop) = self.call(runtime, breaker, started, timeout_ms, sink.write(&batch)) {
                    return stop;
                }
                position.written = batch.last_lsn;
                self.status.written_lsn.store(batch.last_lsn, Ordering::Relaxed);
                self.status.events_written.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                self.status.batches_written.fetch_add(1, Ordering::Relaxed);
                let behind = durable > batch.last_lsn;
                let lag_ms = match batch.last_at_ms() {
                    Some(at_ms) if behind => now_ms().saturating_sub(at_ms),
                    _ => 0,
                };
                self.status.lag_ms.store(lag_ms, Ordering::Relaxed);
            } else if durable <= position.written {
                self.status.lag_ms.store(0, Ordering::Relaxed);
            }
            let due = position.stored_at.elapsed() >= Duration::from_millis(self.config.checkpoint_interval_ms);
            if position.stored != position.written && due {
                if let Err(e) = self.config.source.store_checkpoint(name, position.written) {
                    return Stop::Retry(format!("storing its checkpoint: {e}"));
                }
                position.stored = position.written;
                position.stored_at = Instant::now();
            }
        }
        Stop::Asked
    }

    /// Runs one sink call with a timeout and records its outcome in the breaker.
    fn call<T>(
        &self,
        runtime: &tokio::runtime::Runtime,
        breaker: &mut Breaker,
        started: Instant,
        timeout_ms: u64,
        call: impl std::future::Future<Output = Result<T, SinkError>>,
    ) -> Result<T, Stop> {
        let timeout = Duration::from_millis(timeout_ms);
        let result = runtime.block_on(async { tokio::time::timeout(timeout, call).await });
        let result = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(SinkError::Fatal(reason))) => return Err(Stop::Fatal(reason)),
            Ok(Err(SinkError::Transient(reason))) => Err(Stop::Retry(reason)),
            Err(_) => Err(Stop::Retry(format!("no answer within {timeout_ms} ms"))),
        };
        let changed = breaker.record(Instant::now(), result.is_ok(), started.elapsed());
        self.breaker_changed(self.status.name, changed);
        result
    }

    /// While the sink cannot write, the log goes on: show how far behind it falls, in
    /// records and in the age of the oldest durable event it has not written.
    fn refresh_lag_while_down(&self) {
        let written = self.status.written_lsn.load(Ordering::Relaxed);
        let Ok(mut cursor) = self.config.source.open(written + 1) else { return };
        let first = cursor.read_batch(BatchLimits { events_max: 1, wait_ms: 0 });
        self.status.durable_lsn.store(cursor.durable_lsn(), Ordering::Relaxed);
        let oldest_ms = first.ok().and_then(|batch| batch.events.first().map(|e| e.event.at_ms));
        if let Some(at_ms) = oldest_ms {
            self.status.lag_ms.store(now_ms().saturating_sub(at_ms), Ordering::Relaxed);
        }
    }

    fn breaker_changed(&self, name: &str, changed: Option<BreakerState>) {
        if let Some(state) = changed {
            self.status.set_breaker(state);
            tracing::warn!(sink = name, "relay circuit breaker {}", state.as_str());
        }
    }

    fn fatal(&self, name: &str, reason: &str) {
        self.status.set_stopped();
        tracing::error!(sink = name, "relay sink stopped for good: {reason}");
    }

    fn backoff(&self) -> backon::ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.backoff_min_ms))
            .with_max_delay(Duration::from_millis(self.config.backoff_max_ms))
            .with_jitter()
            .without_max_times()
            .build()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`, waking early when asked to stop.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        // Bounded by `until`.
        while !self.stopping() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
