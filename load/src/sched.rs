//! Drives workers in open loop (constant arrival rate) or closed loop (each connection sends
//! its next operation when the previous one answered).
//!
//! Open loop avoids coordinated omission: operation `i` is due at `start + i / rate`, and its
//! latency runs from that due time, not from when a connection got round to sending it.
//! A slow server therefore shows as a growing latency (the backlog), never as fewer samples.
//! The tokio timer ticks in milliseconds, so a connection wakes up to 1 ms before an
//! operation is due and sends it then; such an early operation is timed from its actual
//! send. Every loop is bounded: at most `rate * duration` operations, and nothing is sent
//! after `duration + grace` (those operations are reported as not sent).

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::{Outcome, Stats};

/// One connection's worth of load: runs operation `index` and says how each of its
/// requests ended.
pub trait Worker: Send + 'static {
    fn op(&mut self, index: u64) -> impl Future<Output = Vec<Outcome>> + Send;
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Constant arrival rate, operations per second.
    Open { rate: f64 },
    /// Each connection back to back.
    Closed,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: Mode,
    pub duration: Duration,
    /// How long after `duration` late operations may still start.
    pub grace: Duration,
    /// Print a progress line every second (on a terminal: rewritten in place).
    pub progress: bool,
}

/// When operation `index` is due, counted from the start.
pub fn due_offset(index: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate)
}

/// How many operations an open-loop run schedules.
pub fn planned_ops(rate: f64, duration: Duration) -> u64 {
    (rate * duration.as_secs_f64()).floor() as u64
}

/// The latency of an operation due at `due`, sent at `sent`, answered at `done`: from the
/// due time, unless it was sent early (then from the send).
pub fn latency(due: Instant, sent: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(due.min(sent))
}

/// How long before its due time a connection may send an operation (the timer's tick).
const EARLY: Duration = Duration::from_millis(1);
/// Workers hand their recordings over at least this often, up to this many workers.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_WORKERS: usize = 64;
/// The longest wait between hand-overs, however many workers.
const FLUSH_EVERY_MAX: Duration = Duration::from_secs(2);

/// How often each of `workers` hands its recordings over: a hand-over merges and clears a
/// whole histogram, so thousands of workers (batch-binary's callers) flushing every 100 ms
/// made the generator spend most of its CPU there; the progress line needs the total rate,
/// not each worker's every 100 ms.
fn flush_every(workers: usize) -> Duration {
    FLUSH_EVERY.mul_f64((workers as f64 / FLUSH_WORKERS as f64).max(1.0)).min(FLUSH_EVERY_MAX)
}

pub struct DriveResult {
    pub stats: Stats,
    /// Operations the plan scheduled (open loop).
    pub planned: Option<u64>,
    /// Scheduled operations never sent because the run went past `duration + grace`.
    pub not_sent: u64,
    /// From the start to the last answer.
    pub elapsed: Duration,
}

struct Shared {
    stats: Mutex<Stats>,
    next: AtomicU64,
}

/// Runs the plan with one task per worker; returns the merged recordings.
pub async fn drive<W: Worker>(plan: &Plan, workers: Vec<W>) -> DriveResult {
    let shared = Arc::new(Shared { stats: Mutex::new(Stats::default()), next: AtomicU64::new(0) });
    let start = Instant::now();
    let stop_progress = Arc::new(AtomicBool::new(false));
    let progress = plan.progress.then(|| {
        let shared = shared.clone();
        let stop = stop_progress.clone();
        tokio::spawn(progress_loop(shared, start, stop))
    });
    let mut tasks = Vec::with_capacity(workers.len());
    let flush = flush_every(workers.len());
    for w in workers {
        let shared = shared.clone();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move { run_worker(w, &plan, &shared, start, flush).await }));
    }
    let mut last_done = start;
    for t in tasks {
        if let Ok(done) = t.await {
            last_done = last_done.max(done);
        }
    }
    stop_progress.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    let stats = std::mem::take(&mut *shared.stats.lock().unwrap_or_else(|e| e.into_inner()));
    let planned = match plan.mode {
        Mode::Open { rate } => Some(planned_ops(rate, plan.duration)),
        Mode::Closed => None,
    };
    let not_sent = planned.map_or(0, |p| p.saturating_sub(stats.ops));
    DriveResult { stats, planned, not_sent, elapsed: last_done.duration_since(start) }
}

async fn run_worker<W: Worker>(mut w: W, plan: &Plan, shared: &Shared, start: Instant, flush: Duration) -> Instant {
    let mut local = Stats::default();
    let mut flushed = Instant::now();
    let mut last_done = start;
    let end = start + plan.duration;
    let hard_end = end + plan.grace;
    loop {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let due = match plan.mode {
            Mode::Open { rate } => {
                if index >= planned_ops(rate, plan.duration) {
                    break;
                }
                let due = start + due_offset(index, rate);
                let now = Instant::now();
                if now >= hard_end {
                    break;
                }
                if due > now + EARLY {
                    tokio::time::sleep_until((due - EARLY).into()).await;
                }
                due
            }
            Mode::Closed => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        let sent = Instant::now();
        let outcomes = w.op(index).await;
        let done = Instant::now();
        last_done = done;
        local.record(latency(due, sent, done), done.duration_since(start), &outcomes);
        if done.duration_since(flushed) >= flush {
            shared.stats.lock().unwrap_or_else(|e| e.into_inner()).merge(&local);
            local.clear();
            flushed = done;
        }
    }
    if !local.is_empty() {
        shared.stats.lock().unwrap_or_else(|e| e.into_inner()).merge(&local);
    }
    last_done
}

/// `[  12s] 12,000 ops  1,000/s  errors 3  p99 1.84 ms`
pub fn progress_line(elapsed: Duration, ops: u64, rate: f64, errors: u64, p99_ms: f64) -> String {
    format!(
        "[{:>4}s] {:>10} ops  {:>9}/s  errors {:<6}  p99 {:.2} ms",
        elapsed.as_secs(),
        thousands(ops),
        thousands(rate.round() as u64),
        thousands(errors),
        p99_ms
    )
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn progress_loop(shared: Arc<Shared>, start: Instant, stop: Arc<AtomicBool>) {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_ops = 0u64;
    let mut last_at = start;
    let mut tick = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let mut printed = false;
    loop {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (ops, errors, p99) = {
            let s = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
            (s.ops, s.failed_ops, s.latency().p99_ms)
        };
        let now = Instant::now();
        let rate = (ops - last_ops) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
        last_ops = ops;
        last_at = now;
        let line = progress_line(now.duration_since(start), ops, rate, errors, p99);
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        printed = true;
    }
    if tty && printed {
        let _ = writeln!(std::io::stderr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_evenly_spaced() {
        assert_eq!(planned_ops(1000.0, Duration::from_secs(3)), 3000);
        assert_eq!(planned_ops(0.5, Duration::from_secs(3)), 1);
        assert_eq!(due_offset(0, 200.0), Duration::ZERO);
        assert_eq!(due_offset(200, 200.0), Duration::from_secs(1));
        assert_eq!(due_offset(1, 4.0), Duration::from_millis(250));
    }

    #[test]
    fn latency_runs_from_the_due_time_unless_sent_early() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        // Sent 30 ms late (backlog): the wait counts.
        assert_eq!(latency(t, t + ms(30), t + ms(32)), ms(32));
        // Sent 1 ms early: timed from the send.
        assert_eq!(latency(t + ms(1), t, t + ms(2)), ms(2));
    }

    #[test]
    fn progress_line_reads_well() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        let l = progress_line(Duration::from_secs(12), 12000, 1000.4, 3, 1.839);
        assert!(l.contains("12,000 ops") && l.contains("1,000/s") && l.contains("p99 1.84 ms"), "{l}");
    }

    /// A server that stalls for 200 ms once: the operations due during the stall are still
    /// sent and their latency includes the wait (no coordinated omission).
    struct Stalling {
        stall_at: u64,
    }

    impl Worker for Stalling {
        fn op(&mut self, index: u64) -> impl Future<Output = Vec<Outcome>> + Send {
            let stall = index == self.stall_at;
            async move {
                if stall {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                vec![Outcome::answer("200", false)]
            }
        }
    }

    #[tokio::test]
    async fn open_loop_counts_the_backlog_of_a_stall() {
        let plan = Plan {
            mode: Mode::Open { rate: 200.0 },
            duration: Duration::from_secs(1),
            grace: Duration::from_secs(5),
            progress: false,
        };
        // One connection: everything due during the stall waits behind it.
        let r = drive(&plan, vec![Stalling { stall_at: 20 }]).await;
        assert_eq!(r.planned, Some(200));
        assert_eq!(r.stats.ops, 200);
        assert_eq!(r.not_sent, 0);
        // ~40 operations were due during the 200 ms stall; with coordinated omission they
        // would show ~0 ms. Here the ones right after the stall waited ~200 ms.
        let over_100ms = r.stats.hist.count_between(100_000, u64::MAX);
        assert!(over_100ms >= 15, "only {over_100ms} operations saw the stall");
        assert!(r.stats.latency().max_ms >= 190.0);
        assert!(r.elapsed >= Duration::from_millis(990), "{:?}", r.elapsed);
    }

    #[tokio::test]
    async fn closed_loop_stops_after_the_duration() {
        let plan =
            Plan { mode: Mode::Closed, duration: Duration::from_millis(300), grace: Duration::ZERO, progress: false };
        let r = drive(&plan, vec![Stalling { stall_at: u64::MAX }, Stalling { stall_at: u64::MAX }]).await;
        assert!(r.stats.ops > 0);
        assert_eq!(r.planned, None);
        assert!(r.elapsed < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn open_loop_past_the_grace_reports_not_sent() {
        let plan = Plan {
            mode: Mode::Open { rate: 100.0 },
            duration: Duration::from_millis(500),
            grace: Duration::ZERO,
            progress: false,
        };
        // The first operation takes the whole run: the rest is never sent.
        struct Slow;
        impl Worker for Slow {
            async fn op(&mut self, _index: u64) -> Vec<Outcome> {
                tokio::time::sleep(Duration::from_millis(600)).await;
                vec![Outcome::answer("200", false)]
            }
        }
        let r = drive(&plan, vec![Slow]).await;
        assert_eq!(r.planned, Some(50));
        assert_eq!(r.stats.ops, 1);
        assert_eq!(r.not_sent, 49);
    }
}
