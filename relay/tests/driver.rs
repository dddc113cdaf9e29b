//! The driver against an in-memory sink (no servers): positions, checkpoints, retries after
//! failures, never a record beyond the durable prefix, per-aggregate order.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use surge_relay::breaker::BreakerConfig;
use surge_relay::{Batch, DriverConfig, Relay, Sink, SinkError};
use surge_wal::Lsn;

/// (LSN, event id, aggregate id) of every event a sink was given, in order.
type Seen = Arc<Mutex<Vec<(Lsn, String, Option<String>)>>>;

/// Records what it was given; fails the first `fail_writes` writes after writing half of
/// the batch (so a retry re-delivers that half).
#[derive(Clone, Default)]
struct MemorySink {
    seen: Seen,
    fail_writes: Arc<Mutex<u32>>,
    resumes: Arc<Mutex<u32>>,
}

impl Sink for MemorySink {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn resume(&mut self, checkpoint: Lsn) -> Result<Lsn, SinkError> {
        *self.resumes.lock() += 1;
        Ok(checkpoint)
    }

    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut fail = self.fail_writes.lock();
        let take = if *fail > 0 { batch.events.len() / 2 } else { batch.events.len() };
        let mut seen = self.seen.lock();
        for e in &batch.events[..take] {
            seen.push((e.lsn, e.event_id(), e.event.aggregate().map(|(_, id)| id)));
        }
        if *fail > 0 {
            *fail -= 1;
            return Err(SinkError::Transient("injected".into()));
        }
        Ok(())
    }
}

fn config(dir: &std::path::Path) -> DriverConfig {
    let mut c = DriverConfig::new(dir.to_path_buf());
    c.backoff_min_ms = 5;
    c.backoff_max_ms = 20;
    c.batch.events_max = 64;
    c.breaker = BreakerConfig { open_ms: 50, ..BreakerConfig::default() };
    c
}

/// A relay driving `sink`, once it has written everything up to `durable`.
fn caught_up(dir: &std::path::Path, sink: &MemorySink, durable: Lsn) -> (Relay, Arc<surge_relay::SinkStatus>) {
    let mut relay = Relay::new(config(dir));
    relay.spawn(sink.clone()).expect("spawn");
    let status = relay.statuses()[0].clone();
    wait_until("the sink to catch up", || status.written_lsn.load(std::sync::atomic::Ordering::Relaxed) == durable);
    (relay, status)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_event_arrives_in_order_across_failures_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open(dir.path());
    log.shop("m-1", 5);
    log.orders("m-1", 5, 100);
    let sink = MemorySink::default();
    *sink.fail_writes.lock() = 3;

    let durable = log.durable_lsn();
    let (mut relay, status) = caught_up(dir.path(), &sink, durable);
    assert!(*sink.resumes.lock() >= 4, "every failure resumes from the checkpoint");
    assert!(status.failures.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    relay.stop();
    assert_eq!(surge_wal::load_reader_checkpoint(dir.path(), "memory").expect("checkpoint"), Some(durable));

    // More records while the relay is down, then a restart: it goes on from its checkpoint.
    log.orders("m-1", 5, 20);
    let durable = log.durable_lsn();
    let (mut relay, _) = caught_up(dir.path(), &sink, durable);
    relay.stop();

    let seen = sink.seen.lock().clone();
    assert!(seen.iter().all(|(lsn, _, _)| *lsn <= durable), "nothing beyond the durable prefix");
    // Every public event of the log arrived (at least once).
    let expected = expected_event_ids(dir.path());
    let got: std::collections::HashSet<&str> = seen.iter().map(|(_, id, _)| id.as_str()).collect();
    for id in &expected {
        assert!(got.contains(id.as_str()), "event {id} never arrived");
    }
    // Per aggregate, first deliveries are in log order.
    let mut last_per_key: HashMap<String, String> = HashMap::new();
    let mut first_seen = std::collections::HashSet::new();
    for (_, id, key) in &seen {
        if !first_seen.insert(id.clone()) {
            continue;
        }
        if let Some(key) = key {
            if let Some(prev) = last_per_key.insert(key.clone(), id.clone()) {
                assert!(prev < *id, "aggregate {key}: {id} after {prev}");
            }
        }
    }
}

#[test]
fn a_sink_that_is_down_keeps_its_segments_through_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open_small_segments(dir.path());
    log.shop("m-1", 5);
    let sink = MemorySink::default();
    *sink.fail_writes.lock() = u32::MAX; // the destination is down
    let mut relay = Relay::new(config(dir.path()));
    relay.spawn(sink.clone()).expect("spawn");
    wait_until("the sink to register", || {
        surge_wal::load_reader_checkpoint(dir.path(), "memory").expect("checkpoint") == Some(0)
    });
    log.orders("m-1", 5, 400);
    let segments = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg")))
        .count();
    assert!(segments >= 3, "the log spans several segments ({segments})");
    let removed = log.snapshot();
    assert!(removed.is_empty(), "retention removed {removed:?} while the sink still needs them");
    let status = relay.statuses()[0].clone();
    wait_until("the lag to show while the sink is down", || {
        status.lag_records() + 1 >= log.durable_lsn() && status.lag_ms.load(std::sync::atomic::Ordering::Relaxed) > 0
    });

    // The destination returns: everything arrives, then the next snapshot may remove segments.
    *sink.fail_writes.lock() = 0;
    let durable = log.durable_lsn();
    wait_until("the sink to catch up", || status.written_lsn.load(std::sync::atomic::Ordering::Relaxed) == durable);
    wait_until("its checkpoint", || {
        surge_wal::load_reader_checkpoint(dir.path(), "memory").expect("checkpoint") == Some(durable)
    });
    relay.stop();
    let got: std::collections::HashSet<String> = sink.seen.lock().iter().map(|(_, id, _)| id.clone()).collect();
    let expected = expected_event_ids(dir.path());
    assert!(expected.iter().all(|id| got.contains(id)), "every event arrived after the outage");
    assert!(!log.snapshot().is_empty(), "with the sink caught up, retention removes what everyone is done with");
}

/// Every event id in the log, from reading it directly (from LSN 1, ignoring snapshots).
fn expected_event_ids(dir: &std::path::Path) -> Vec<String> {
    let mut tailer = surge_wal::Tailer::open(dir, 1).expect("tail the log");
    let mut ids = Vec::new();
    while let Some(record) = tailer.try_next().expect("record") {
        let events = surge_core::image::record_events(record.record_type, &record.payload).expect("events");
        for (i, _) in events.iter().enumerate() {
            ids.push(surge_core::envelope::event_id(record.lsn, i as u32));
        }
    }
    assert!(ids.len() > 500, "the mix writes a good number of events ({})", ids.len());
    ids
}

#[test]
fn a_sink_registered_after_retention_starts_at_the_oldest_record_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open_small_segments(dir.path());
    log.shop("m-1", 5);
    log.orders("m-1", 5, 400);
    log.orders("m-1", 5, 10); // more records after the ones the snapshot covers
    assert!(!log.snapshot().is_empty(), "no reader yet: retention removes old segments");
    let oldest = first_lsn_left(dir.path());
    assert!(oldest > 1);

    let sink = MemorySink::default();
    let (mut relay, status) = caught_up(dir.path(), &sink, log.durable_lsn());
    relay.stop();
    assert!(!status.is_stopped());
    let seen = sink.seen.lock();
    assert_eq!(seen.first().map(|(lsn, _, _)| *lsn), Some(oldest), "it starts at the oldest record left");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "then in log order, without a gap or a repeat");
}

fn first_lsn_left(dir: &std::path::Path) -> u64 {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    let first = names.first().expect("a segment");
    first.trim_start_matches("wal-").trim_end_matches(".seg").parse().expect("segment name holds its first LSN")
}
