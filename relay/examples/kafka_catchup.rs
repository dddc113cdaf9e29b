//! How fast the Kafka sink catches up: writes a log of about `EVENTS` public events (orders
//! paid with points, the way the server writes them), then times the relay's Kafka sink from
//! LSN 0 to the end of the log, three times (fresh topics each run), and prints the median.
//!
//!   scripts/services.sh kafka
//!   cargo run --release -p surge-relay --example kafka_catchup [-- EVENTS]
//!
//! Broker from `SURGE_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`); to try settings:
//! `SURGE_BENCH_COMPRESSION`, `SURGE_BENCH_LINGER_MS`, `SURGE_BENCH_EVENTS_MAX`.
//!
//! tansu with memory storage slows down as it accumulates messages (a long-running shared
//! broker holding a few million took 2-4x the CPU per message of a fresh one), so for
//! comparable numbers run it against a fresh broker, e.g.
//!   tansu broker --listener-url tcp://127.0.0.1:19092 \
//!       --advertised-listener-url tcp://127.0.0.1:19092 --storage-engine memory://tansu/ &
//!   SURGE_TEST_KAFKA_BROKERS=127.0.0.1:19092 cargo run --release -p surge-relay --example kafka_catchup

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use surge_core::command::*;
use surge_core::encoding::encode_events;
use surge_core::image::EVENTS_RECORD_TYPE;
use surge_core::view::Reply;
use surge_core::Outcome;
use surge_relay::kafka::{KafkaConfig, KafkaSink};
use surge_relay::{DriverConfig, Relay};

fn main() {
    let events: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let brokers = std::env::var("SURGE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (records, public) = write_log(dir.path(), events);
    println!("log: {records} records, {public} public events, written in {:?}", started.elapsed());

    let mut rates = Vec::new();
    for run in 0..3 {
        // From the start of the log, into fresh topics.
        surge_wal::store_reader_checkpoint(dir.path(), "kafka", 0).expect("reset checkpoint");
        let config = KafkaConfig {
            brokers: brokers.clone(),
            topic_prefix: format!("bench{}r{run}.", std::process::id()),
            compression: env_or("SURGE_BENCH_COMPRESSION", KafkaConfig::default().compression),
            linger_ms: env_or("SURGE_BENCH_LINGER_MS", KafkaConfig::default().linger_ms),
            ..KafkaConfig::default()
        };
        let mut driver = DriverConfig::new(dir.path().to_path_buf());
        driver.batch.events_max = env_or("SURGE_BENCH_EVENTS_MAX", driver.batch.events_max);
        let mut relay = Relay::new(driver);
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        relay.spawn(KafkaSink::new(config).expect("sink")).expect("spawn");
        let status = relay.statuses()[0].clone();
        let deadline = started + Duration::from_secs(300);
        let mut first: Option<(Duration, u64)> = None;
        while status.written_lsn.load(Ordering::Relaxed) < records {
            assert!(Instant::now() < deadline, "no catch-up within 5 minutes (is the broker at {brokers}?)");
            assert!(!status.is_stopped(), "the sink stopped");
            if first.is_none() && status.written_lsn.load(Ordering::Relaxed) > 0 {
                first = Some((started.elapsed(), status.events_written.load(Ordering::Relaxed)));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = started.elapsed();
        // After the first batch: connecting, creating topics and the producer id are behind.
        if let Some((at, events_then)) = first {
            let steady = (status.events_written.load(Ordering::Relaxed) - events_then) as f64
                / (took - at).as_secs_f64().max(1e-9);
            println!("  first batch acknowledged after {at:?}; from then on {steady:.0} events/s");
        }
        let cpu = cpu_seconds() - cpu_before;
        let failures = status.failures.load(Ordering::Relaxed);
        relay.stop();
        let rate = public as f64 / took.as_secs_f64();
        println!(
            "run {run}: {public} events in {took:?}: {rate:.0} events/s; relay CPU {cpu:.2} s = {:.1} us/event ({failures} failures)",
            cpu * 1e6 / public as f64
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.0} events/s", rates[1]);
}

/// CPU time (user + system) of this process so far: the relay's thread and librdkafka's
/// (the main thread only sleeps meanwhile). Linux only; 0 elsewhere.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line (field 3 comes first after the
    // name); in clock ticks, 100 a second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// A knob from the environment (for trying settings), or its default.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A shop, then orders paid with points until the log holds `events` public events.
/// Records are appended without waiting for each (group commit), like a loaded server.
fn write_log(dir: &std::path::Path, events: usize) -> (u64, usize) {
    let mut log = common::LogWriter::open(dir);
    let merchant = "m-bench";
    let hash = [7; 32];
    log.run(merchant, Command::CreateMerchant { name: "bench".into(), currency: "KRW".into(), api_key_hash: hash })
        .expect("merchant");
    let skus = 50;
    for spec in ItemSpec::numbered(skus, 100, 1_000_000_000) {
        log.run(merchant, Command::PutItem(spec)).expect("item");
    }
    for c in 0..100 {
        let credit =
            Command::CreditPoints { customer: format!("c-{c}"), amount: 1_000_000_000_000, reason: "bench".into() };
        log.run(merchant, credit).expect("points");
    }
    let mut public = 0;
    let mut last = None;
    let mut i = 0usize;
    while public < events {
        let order = Command::CreateOrder {
            customer: format!("c-{}", i % 100),
            source: OrderSource::Lines(vec![LineSpec { sku: format!("sku-{}", i % skus), qty: 1 }]),
            payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
            queue_token: None,
        };
        i += 1;
        let request = Request { merchant: merchant.into(), idempotency: None, command: order };
        let (_, outcome) = log.engine.execute(&request, log.now).expect("order");
        let Outcome::Applied { events, reply } = outcome else { panic!("no idempotency, no replay") };
        assert!(matches!(reply, Reply::Order(_)));
        public += events.iter().filter(|e| e.aggregate().is_some()).count();
        last = Some(log.wal.append(EVENTS_RECORD_TYPE, &encode_events(&events)).expect("append"));
        if i % 1_000 == 0 {
            last.take().map(|h| h.wait().expect("durable"));
            log.engine.mark_all_durable();
        }
    }
    if let Some(h) = last {
        h.wait().expect("durable");
    }
    log.engine.mark_all_durable();
    (log.durable_lsn(), public)
}
