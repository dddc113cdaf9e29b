//! The gateway worker's threads: one tails the durable log (the local log, or in cluster
//! mode a partition's log in etcd: a `LogSource`) and hands its records over a
//! bounded channel; the other runs the scheduler on a single-threaded tokio runtime, makes
//! the calls and reports it asks for (at most `in_flight_max` at once), and stores the
//! reader checkpoint `gateway`. It never runs on a request's path: a slow or dead gateway
//! slows this thread's calls, nothing else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use surge_core::Event;
use surge_wal::Lsn;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::card::CardKey;
use super::client::GatewayClient;
use super::config::GatewayConfig;
use super::port::{CommandPort, PortError};
use super::scheduler::{Action, Call, CallOutcome, Scheduler, Ticket};
use super::status::GatewayStatus;
use crate::batch::{BatchLimits, ReadError};
use crate::source::{LogCursor, LogSource};

/// The name the worker's checkpoint is stored under (in the log directory, or in etcd).
pub const READER: &str = "gateway";

/// Records in flight between the tail thread and the worker: a few batches, so reading
/// stops while the scheduler holds `ops_open_max` operations.
const CHANNEL_BATCHES_MAX: usize = 2;
/// Events per batch the tail thread reads.
const BATCH_EVENTS_MAX: usize = 4_096;
/// The longest the worker sleeps without looking at the stop flag.
const IDLE_WAIT_MS: u64 = 50;

/// Durable records `..=last_lsn`, with the events of those that have any.
struct Records {
    last_lsn: Lsn,
    events: Vec<(Lsn, Vec<Event>)>,
}

/// The running worker. Dropping it stops it.
pub struct GatewayWorker {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    status: Arc<GatewayStatus>,
}

impl GatewayWorker {
    /// Starts the worker on the log of `source`, from its stored checkpoint. `port` takes
    /// its reports back into the engine.
    pub fn spawn(
        source: Arc<dyn LogSource>,
        config: GatewayConfig,
        card_key: CardKey,
        port: Arc<dyn CommandPort>,
    ) -> Result<GatewayWorker, String> {
        config.validate()?;
        let client = GatewayClient::new(&config)?;
        let status = Arc::new(GatewayStatus::new(config.gateways.iter().map(|g| g.name.clone())));
        let checkpoint = source.load_checkpoint(READER).map_err(|e| format!("reading its checkpoint: {e}"))?;
        let read_lsn = checkpoint.unwrap_or(0);
        // Register at once so retention keeps every record the worker still has to read.
        source.store_checkpoint(READER, read_lsn).map_err(|e| format!("storing its checkpoint: {e}"))?;
        let cursor = source.open(read_lsn + 1).map_err(|e| format!("opening the log: {e}"))?;
        let fresh_after = cursor.durable_lsn();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES_MAX);
        let tail = {
            let (stop, status, source) = (stop.clone(), status.clone(), source.clone());
            std::thread::Builder::new()
                .name("gateway-tail".into())
                .spawn(move || tail(source.as_ref(), cursor, &tx, &stop, &status))
                .map_err(|e| format!("starting the tail thread: {e}"))?
        };
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let scheduler = Scheduler::new(config.clone(), status.clone(), read_lsn, fresh_after, seed);
        let run = Run { source, config, scheduler, client, card_key: Arc::new(card_key), port, stop: stop.clone() };
        let main = match std::thread::Builder::new().name("gateway".into()).spawn(move || run.run(rx)) {
            Ok(t) => t,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = tail.join();
                return Err(format!("starting the worker thread: {e}"));
            }
        };
        tracing::info!(read_lsn, "gateway worker started");
        Ok(GatewayWorker { stop, threads: vec![main, tail], status })
    }

    pub fn status(&self) -> &Arc<GatewayStatus> {
        &self.status
    }

    /// Stops after the calls in flight (each bounded by the response timeout) and stores
    /// the checkpoint.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for GatewayWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tail thread: durable records into the channel until stopped or the worker is gone.
fn tail(
    source: &dyn LogSource,
    mut cursor: Box<dyn LogCursor>,
    tx: &mpsc::Sender<Records>,
    stop: &AtomicBool,
    status: &GatewayStatus,
) {
    let limits = BatchLimits { events_max: BATCH_EVENTS_MAX, wait_ms: IDLE_WAIT_MS };
    // Bounded by the stop flag; each round waits at most `wait_ms` for a record.
    while !stop.load(Ordering::Relaxed) {
        status.durable_lsn.store(cursor.durable_lsn(), Ordering::Relaxed);
        let batch = match cursor.read_batch(limits) {
            Ok(batch) => batch,
            Err(ReadError::Removed { lsn, oldest_lsn }) => {
                tracing::error!(
                    "gateway worker: records {lsn}..{} were removed before it registered; going on from {oldest_lsn}",
                    oldest_lsn - 1
                );
                match source.open(oldest_lsn) {
                    Ok(c) => cursor = c,
                    Err(e) => {
                        tracing::error!("gateway worker: opening the log: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                continue;
            }
            Err(e @ (ReadError::Log(_) | ReadError::Source(_))) => {
                tracing::warn!("gateway worker: {e}; reading again in a second");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            Err(e @ ReadError::Record { .. }) => {
                // The server's own recovery refuses what this refuses: wait for an operator.
                tracing::error!("gateway worker: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let mut records = Records { last_lsn: batch.last_lsn, events: Vec::new() };
        for logged in batch.events {
            match records.events.last_mut() {
                Some((lsn, events)) if *lsn == logged.lsn => events.push(logged.event),
                _ => records.events.push((logged.lsn, vec![logged.event])),
            }
        }
        // Blocks while the worker is full; fails once it is gone.
        if tx.blocking_send(records).is_err() {
            return;
        }
    }
}

/// What a spawned call or report hands back.
enum Answer {
    Call(Ticket, CallOutcome),
    Report(Ticket, Result<(), PortError>),
}

struct Run {
    source: Arc<dyn LogSource>,
    config: GatewayConfig,
    scheduler: Scheduler,
    client: GatewayClient,
    card_key: Arc<CardKey>,
    port: Arc<dyn CommandPort>,
    stop: Arc<AtomicBool>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Run {
    fn run(mut self, mut rx: mpsc::Receiver<Records>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("gateway worker: building its runtime: {e}");
                return;
            }
        };
        runtime.block_on(async {
            let mut tasks: JoinSet<Answer> = JoinSet::new();
            let mut stored = self.scheduler.checkpoint();
            let mut stored_at = Instant::now();
            // Bounded by the stop flag; each round sleeps at most IDLE_WAIT_MS.
            while !self.stop.load(Ordering::Relaxed) {
                let wake = self.scheduler.next_wake().unwrap_or_else(Instant::now).max(Instant::now());
                let sleep_until = wake.min(Instant::now() + Duration::from_millis(IDLE_WAIT_MS));
                tokio::select! {
                    records = rx.recv(), if self.scheduler.can_read() => match records {
                        Some(records) => self.feed(records),
                        None => break, // the tail thread ended
                    },
                    Some(joined) = tasks.join_next(), if !tasks.is_empty() => self.answer(joined),
                    () = tokio::time::sleep_until(sleep_until.into()) => {}
                }
                for action in self.scheduler.poll(Instant::now(), now_ms()) {
                    self.start(&mut tasks, action);
                }
                let checkpoint = self.scheduler.checkpoint();
                let due = stored_at.elapsed() >= Duration::from_millis(self.config.checkpoint_interval_ms);
                if checkpoint != stored && due {
                    stored = self.store_checkpoint(checkpoint).unwrap_or(stored);
                    stored_at = Instant::now();
                }
            }
            // Calls in flight end within the response timeout; their answers still count.
            while let Some(joined) = tasks.join_next().await {
                self.answer(joined);
            }
            let checkpoint = self.scheduler.checkpoint();
            if checkpoint != stored {
                let _ = self.store_checkpoint(checkpoint);
            }
        });
        tracing::info!("gateway worker stopped");
    }

    fn store_checkpoint(&self, lsn: Lsn) -> Option<Lsn> {
        match self.source.store_checkpoint(READER, lsn) {
            Ok(()) => Some(lsn),
            Err(e) => {
                // A checkpoint left behind only means reading some records again.
                tracing::warn!("gateway worker: storing its checkpoint: {e}");
                None
            }
        }
    }

    fn feed(&mut self, records: Records) {
        let now = Instant::now();
        for (lsn, events) in &records.events {
            self.scheduler.on_record(*lsn, events, now);
        }
        self.scheduler.read_up_to(records.last_lsn);
    }

    fn answer(&mut self, joined: Result<Answer, tokio::task::JoinError>) {
        match joined {
            Ok(Answer::Call(ticket, outcome)) => self.scheduler.on_call(ticket, outcome, Instant::now()),
            Ok(Answer::Report(ticket, result)) => {
                self.scheduler.on_report(ticket, result, Instant::now(), now_ms());
            }
            // A task cannot panic by design; if one did, its payment waits for the restart
            // that reads its operation again.
            Err(e) => tracing::error!("gateway worker: a call task failed: {e}"),
        }
    }

    fn start(&self, tasks: &mut JoinSet<Answer>, action: Action) {
        match action {
            Action::Call { ticket, gateway, merchant, call } => {
                let client = self.client.clone();
                let endpoint = self.config.gateways[gateway].clone();
                let card_key = self.card_key.clone();
                tasks.spawn(async move {
                    let card = match &call {
                        Call::Pay { sealed, .. } => match card_key.open(&merchant, sealed) {
                            Ok(number) => Some(number),
                            Err(e) => return Answer::Call(ticket, CallOutcome::CardUnreadable(e.to_string())),
                        },
                        _ => None,
                    };
                    Answer::Call(ticket, client.call(&endpoint, &call, card.as_deref()).await)
                });
            }
            Action::Report { ticket, merchant, command } => {
                let port = self.port.clone();
                tasks.spawn(async move { Answer::Report(ticket, port.submit(merchant, command).await) });
            }
        }
    }
}
