//! The Kafka sink against a real Kafka-protocol broker (tansu), no mocks: every public event
//! arrives with its key, envelope and headers, per aggregate in log order (first
//! occurrences), across relay restarts and a broker outage.
//!
//! The shared broker is `SURGE_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`, started by
//! `scripts/services.sh kafka`); without it these tests fail, they never skip. The outage test
//! starts a private tansu on a free port (binary from `SURGE_TEST_TANSU`, PATH or
//! `~/.cargo/bin/tansu`). tansu's dynostore build keeps messages only in memory, so that
//! test lets the consumer catch up before the kill and checks the union of what it saw
//! before and after (see the module doc of `surge_relay::kafka`); the partition test puts a
//! cutting TCP proxy in front of a private tansu instead, so the broker keeps its data and
//! order and duplicates are checked end to end.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use surge_relay::breaker::{BreakerConfig, BreakerState};
use surge_relay::kafka::{KafkaConfig, KafkaSink};
use surge_relay::{DriverConfig, Relay, SinkStatus};
use surge_wal::Lsn;

const START_HINT: &str = "start one with `scripts/services.sh kafka` (tansu on 127.0.0.1:9092), \
                          or point SURGE_TEST_KAFKA_BROKERS at a running broker";

fn brokers() -> String {
    std::env::var("SURGE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// Fails the test loudly when the shared broker does not answer.
fn require_broker(brokers: &str) {
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let addr: Option<SocketAddr> = first.to_socket_addrs().ok().and_then(|mut a| a.next());
    let reachable = addr.is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(reachable, "no Kafka broker answers at {brokers}: {START_HINT}");
}

/// A topic prefix no other test (or earlier run on the same broker) uses.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("t{}{test}{:x}.", std::process::id(), nanos & 0xffff)
}

fn sink_config(brokers: &str, prefix: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        topic_prefix: prefix.to_string(),
        message_timeout_ms: 3_000,
        connect_timeout_ms: 1_000,
        replication_factor: 1,
        ..KafkaConfig::default()
    }
}

fn driver_config(dir: &Path) -> DriverConfig {
    let mut c = DriverConfig::new(dir.to_path_buf());
    c.batch.events_max = 500;
    c.batch.wait_ms = 20;
    c.call_timeout_ms = 10_000;
    c.checkpoint_interval_ms = 20;
    c.backoff_min_ms = 20;
    c.backoff_max_ms = 200;
    c.breaker = BreakerConfig { calls_min: 2, open_ms: 300, window_ms: 3_000, ..BreakerConfig::default() };
    c
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("{what}: {:?}", started.elapsed());
}

fn caught_up(status: &SinkStatus, durable: Lsn) -> bool {
    status.written_lsn.load(Ordering::Relaxed) == durable
}

/// A public event as the log says it must appear in Kafka.
#[derive(Clone, Debug)]
struct Expected {
    lsn: Lsn,
    topic: String,
    /// `{merchant_id}/{aggregate_id}`.
    key: String,
    aggregate: String,
    event_type: &'static str,
    merchant: String,
}

/// Every public event in the log at `dir`, by event id.
fn expected_events(dir: &Path, prefix: &str) -> BTreeMap<String, Expected> {
    let recovery = surge_wal::Wal::open_read_only(dir).expect("read log");
    let mut out = BTreeMap::new();
    for record in recovery.records() {
        let record = record.expect("record");
        let events = surge_core::image::record_events(record.record_type, record.payload).expect("events");
        for (i, event) in events.iter().enumerate() {
            let Some((topic, aggregate)) = event.aggregate() else { continue };
            out.insert(
                surge_core::envelope::event_id(record.lsn, i as u32),
                Expected {
                    lsn: record.lsn,
                    topic: format!("{prefix}{}", topic.suffix()),
                    key: format!("{}/{aggregate}", event.merchant),
                    aggregate,
                    event_type: event.type_name(),
                    merchant: event.merchant.to_string(),
                },
            );
        }
    }
    out
}

/// One message as consumed.
#[derive(Clone, Debug)]
struct Got {
    topic: String,
    partition: i32,
    offset: i64,
    key: String,
    event_id: String,
    event_type: String,
    value: serde_json::Value,
}

/// Reads every partition of the given topics from the beginning.
struct Collector {
    consumer: BaseConsumer,
    got: Vec<Got>,
}

impl Collector {
    fn new(brokers: &str, topics: &[String]) -> Collector {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("surge-test-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for topic in topics {
            let metadata =
                consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata (is it there?)");
            let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
            assert!(partitions > 0, "topic {topic} has no partitions");
            for p in 0..partitions as i32 {
                assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
            }
        }
        consumer.assign(&assignment).expect("assign");
        Collector { consumer, got: Vec::new() }
    }

    /// Consumes until every id of `want` was seen (or panics after `timeout`).
    fn until_seen<'a>(&mut self, want: impl IntoIterator<Item = &'a String>, timeout: Duration) {
        let mut missing: HashSet<String> = want.into_iter().cloned().collect();
        for g in &self.got {
            missing.remove(&g.event_id);
        }
        let deadline = Instant::now() + timeout;
        while !missing.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} events never arrived within {timeout:?}, e.g. {:?}",
                missing.len(),
                missing.iter().take(5).collect::<Vec<_>>()
            );
            if let Some(got) = self.poll_one() {
                missing.remove(&got.event_id);
            }
        }
    }

    /// Consumes until `quiet` passes without a message.
    fn until_quiet(&mut self, quiet: Duration) {
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            if self.poll_one().is_some() {
                last = Instant::now();
            }
        }
    }

    /// Waits up to 100 ms for one message and records it.
    fn poll_one(&mut self) -> Option<&Got> {
        let msg = self.consumer.poll(Duration::from_millis(100))?.expect("consume");
        let header = |name: &str| {
            msg.headers()
                .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                .map(|v| String::from_utf8(v.to_vec()).expect("utf-8 header"))
                .unwrap_or_else(|| panic!("message without header {name}"))
        };
        self.got.push(Got {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: String::from_utf8(msg.key().expect("key").to_vec()).expect("utf-8 key"),
            event_id: header("event-id"),
            event_type: header("event-type"),
            value: serde_json::from_slice(msg.payload().expect("value")).expect("JSON value"),
        });
        self.got.last()
    }
}

/// Every message is a public event of the log, on its topic, with its key, headers and
/// envelope; per partition (so per key), first occurrences of event ids are in log order.
fn check_messages(got: &[Got], expected: &BTreeMap<String, Expected>) {
    for g in got {
        let e = expected.get(&g.event_id).unwrap_or_else(|| panic!("{} is no public event of the log", g.event_id));
        assert_eq!(g.topic, e.topic, "{}: topic", g.event_id);
        assert_eq!(g.key, e.key, "{}: key", g.event_id);
        assert_eq!(g.event_type, e.event_type, "{}: event-type header", g.event_id);
        let v = &g.value;
        assert_eq!(v["event_id"], g.event_id.as_str(), "{}: envelope event_id", g.event_id);
        assert_eq!(v["type"], e.event_type, "{}: envelope type", g.event_id);
        assert_eq!(v["merchant_id"], e.merchant.as_str(), "{}: envelope merchant_id", g.event_id);
        assert_eq!(v["aggregate_id"], e.aggregate.as_str(), "{}: envelope aggregate_id", g.event_id);
        assert!(v["occurred_at"].is_string() && v.get("data").is_some(), "{}: envelope {v}", g.event_id);
    }
    let mut by_position: Vec<&Got> = got.iter().collect();
    by_position.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    let mut first_seen = HashSet::new();
    let mut last_per_key: HashMap<(&str, &str), &str> = HashMap::new();
    for g in by_position {
        if !first_seen.insert(g.event_id.as_str()) {
            continue;
        }
        if let Some(prev) = last_per_key.insert((&g.topic, &g.key), &g.event_id) {
            assert!(prev < g.event_id.as_str(), "{} key {}: {} arrived before {}", g.topic, g.key, prev, g.event_id);
        }
    }
}

/// A relay with one Kafka sink on the log in `dir`, once it has written up to `durable`.
fn relay_caught_up(dir: &Path, config: &KafkaConfig, durable: Lsn) -> (Relay, Arc<SinkStatus>) {
    let mut relay = Relay::new(driver_config(dir));
    relay.spawn(KafkaSink::new(config.clone()).expect("sink")).expect("spawn");
    let status = relay.statuses()[0].clone();
    wait_until("the sink to catch up", Duration::from_secs(60), || caught_up(&status, durable));
    (relay, status)
}

/// Every public event of the log in `dir`, consumed from the test's topics and checked
/// message by message.
fn consume_and_check(brokers: &str, config: &KafkaConfig, dir: &Path) -> (BTreeMap<String, Expected>, Collector) {
    let expected = expected_events(dir, &config.topic_prefix);
    let mut collector = Collector::new(brokers, &config.all_topics());
    collector.until_seen(expected.keys(), Duration::from_secs(60));
    check_messages(&collector.got, &expected);
    (expected, collector)
}

fn public_ids_after(expected: &BTreeMap<String, Expected>, lsn: Lsn) -> Vec<String> {
    expected.iter().filter(|(_, e)| e.lsn > lsn).map(|(id, _)| id.clone()).collect()
}

#[test]
fn every_public_event_arrives_with_key_headers_and_envelope_in_order() {
    let brokers = brokers();
    require_broker(&brokers);
    let prefix = prefix("all");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open(dir.path());
    log.shop("m-1", 5);
    log.shop("m-2", 3);
    log.orders("m-1", 5, 120);
    log.orders("m-2", 3, 60);
    // A record with no events (the probe the server writes after a storage failure) moves
    // the position like any other.
    let probe = surge_core::encoding::encode_events(&[]);
    log.wal.append(surge_core::image::EVENTS_RECORD_TYPE, &probe).expect("append").wait().expect("durable");

    let config = sink_config(&brokers, &prefix);
    let durable = log.durable_lsn();
    let (mut relay, status) = relay_caught_up(dir.path(), &config, durable);
    assert_eq!(status.name, "kafka");
    wait_until("lag to go to 0", Duration::from_secs(10), || {
        status.lag_records() == 0 && status.lag_ms.load(Ordering::Relaxed) == 0
    });
    assert!(!status.is_stopped());
    relay.stop();
    assert_eq!(surge_wal::load_reader_checkpoint(dir.path(), "kafka").expect("checkpoint"), Some(durable));

    let (expected, collector) = consume_and_check(&brokers, &config, dir.path());
    assert!(expected.len() > 500, "the mix publishes a good number of events ({})", expected.len());
    let families: HashSet<&str> = expected.values().map(|e| e.topic.as_str()).collect();
    for family in ["orders", "payments", "inventory", "ledger", "points", "merchants"] {
        assert!(families.contains(format!("{prefix}{family}").as_str()), "the mix publishes to {family}");
    }
    assert!(collector.got.iter().all(|g| !g.topic.ends_with("dlq")), "nothing goes to the dead-letter topic");
}

/// Settled aggregates archived by the engine's tick: their `*.archived` events go to the
/// topic of their family with the aggregate's key, after that aggregate's earlier events.
#[test]
fn archived_events_arrive_on_their_families_topics() {
    let brokers = brokers();
    require_broker(&brokers);
    let prefix = prefix("arch");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open(dir.path());
    log.shop("m-1", 3);
    log.orders("m-1", 3, 40);
    assert!(log.archive_settled() > 40);
    log.orders("m-1", 3, 5);

    let config = sink_config(&brokers, &prefix);
    let (mut relay, _) = relay_caught_up(dir.path(), &config, log.durable_lsn());
    relay.stop();
    let (expected, collector) = consume_and_check(&brokers, &config, dir.path());
    for (event_type, family) in
        [("order.archived", "orders"), ("payment.archived", "payments"), ("hold.archived", "inventory")]
    {
        let topic = format!("{prefix}{family}");
        let n = expected.values().filter(|e| e.event_type == event_type && e.topic == topic).count();
        assert!(n > 0, "{event_type} expected on {topic}");
        let got = collector.got.iter().filter(|g| g.topic == topic && g.event_type == event_type).count();
        assert!(got >= n, "{event_type}: {got} of {n} on {topic}");
    }
    let ord1 = collector.got.iter().find(|g| g.event_type == "order.archived" && g.key == "m-1/ord_1");
    assert!(ord1.is_some(), "ord_1's archive is keyed m-1/ord_1");
}

/// Order, payment and hold ids count per merchant: two merchants' first orders are both
/// `ord_1`. Their messages must carry keys of their own, and every message of one key must
/// stay on one partition (per-aggregate order).
#[test]
fn two_merchants_orders_of_the_same_id_get_keys_of_their_own() {
    let brokers = brokers();
    require_broker(&brokers);
    let prefix = prefix("keys");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open(dir.path());
    log.shop("m-a", 1);
    log.shop("m-b", 1);
    assert_eq!(log.orders("m-a", 1, 1), ["ord_1"]);
    assert_eq!(log.orders("m-b", 1, 1), ["ord_1"]);

    let config = KafkaConfig { partitions: 8, ..sink_config(&brokers, &prefix) };
    let (mut relay, _) = relay_caught_up(dir.path(), &config, log.durable_lsn());
    relay.stop();

    let (_, collector) = consume_and_check(&brokers, &config, dir.path());
    let orders = format!("{prefix}orders");
    let mut partitions: HashMap<&str, HashSet<i32>> = HashMap::new();
    for g in collector.got.iter().filter(|g| g.topic == orders) {
        assert_eq!(g.value["aggregate_id"], "ord_1", "{g:?}");
        let merchant = g.value["merchant_id"].as_str().expect("merchant_id");
        assert_eq!(g.key, format!("{merchant}/ord_1"), "{g:?}");
        partitions.entry(&g.key).or_default().insert(g.partition);
    }
    let keys: Vec<&&str> = partitions.keys().collect();
    assert_eq!(partitions.len(), 2, "one key per merchant's ord_1: {keys:?}");
    assert!(partitions.contains_key("m-a/ord_1") && partitions.contains_key("m-b/ord_1"), "{keys:?}");
    for (key, on) in &partitions {
        assert_eq!(on.len(), 1, "every message of {key} on one partition: {on:?}");
    }
}

#[test]
fn relay_stopped_mid_stream_and_restarted_leaves_no_gap() {
    let brokers = brokers();
    require_broker(&brokers);
    let prefix = prefix("restart");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open(dir.path());
    log.shop("m-1", 4);
    log.orders("m-1", 4, 40);
    let config = sink_config(&brokers, &prefix);

    let mut relay = Relay::new(driver_config(dir.path()));
    relay.spawn(KafkaSink::new(config.clone()).expect("sink")).expect("spawn");
    let status = relay.statuses()[0].clone();
    wait_until("the sink to write something", Duration::from_secs(30), || {
        status.written_lsn.load(Ordering::Relaxed) > 0
    });
    // Records keep coming (another thread, as the server's) while the relay runs, and it
    // is dropped in the middle of them.
    let before = log.durable_lsn();
    let writer = std::thread::spawn(move || {
        for _ in 0..6 {
            log.orders("m-1", 4, 10);
        }
        log
    });
    wait_until("the sink to follow new records", Duration::from_secs(30), || {
        status.written_lsn.load(Ordering::Relaxed) > before
    });
    eprintln!("relay dropped while the writer is {}", if writer.is_finished() { "done" } else { "writing" });
    drop(relay);
    let mut log = writer.join().expect("writer");
    let stopped_at = status.written_lsn.load(Ordering::Relaxed);
    let first_failures = status.failures.load(Ordering::Relaxed);
    let checkpoint = surge_wal::load_reader_checkpoint(dir.path(), "kafka").expect("checkpoint").unwrap_or(0);
    assert_eq!(checkpoint, stopped_at, "a stop stores where the sink stands");
    // More while it is down.
    log.orders("m-1", 4, 30);
    // A crash can lose the last checkpoint stores (they are written at most every
    // `checkpoint_interval_ms`): the next relay then sends what Kafka already has again.
    let rewound = stopped_at / 2;
    surge_wal::store_reader_checkpoint(dir.path(), "kafka", rewound).expect("rewind checkpoint");

    let mut relay = Relay::new(driver_config(dir.path()));
    relay.spawn(KafkaSink::new(config.clone()).expect("sink")).expect("spawn");
    let status = relay.statuses()[0].clone();
    let durable = log.durable_lsn();
    assert!(stopped_at < durable, "the first relay stopped before the end ({stopped_at} of {durable})");
    wait_until("the restarted sink to catch up", Duration::from_secs(60), || caught_up(&status, durable));
    relay.stop();

    let expected = expected_events(dir.path(), &prefix);
    let mut collector = Collector::new(&brokers, &config.all_topics());
    collector.until_seen(expected.keys(), Duration::from_secs(60));
    // Everything from the rewound checkpoint up to where the first relay stopped comes
    // twice; only what the first relay wrote can be there twice (the broker acknowledged
    // the rest once).
    let resent: Vec<&String> =
        expected.iter().filter(|(_, e)| e.lsn > rewound && e.lsn <= stopped_at).map(|(id, _)| id).collect();
    assert!(!resent.is_empty());
    collector.until_quiet(Duration::from_millis(500));
    let mut copies: HashMap<&str, Vec<&Got>> = HashMap::new();
    for g in &collector.got {
        copies.entry(g.event_id.as_str()).or_default().push(g);
    }
    for (id, c) in &copies {
        assert!(c.iter().all(|g| (&g.key, &g.value) == (&c[0].key, &c[0].value)), "{id}: copies differ: {c:?}");
    }
    for id in &resent {
        assert!(copies[id.as_str()].len() >= 2, "{id} was sent again after the rewind");
    }
    if first_failures + status.failures.load(Ordering::Relaxed) == 0 {
        // Without a failed write, exactly the rewound stretch came twice.
        assert_eq!(collector.got.len(), expected.len() + resent.len(), "nothing else came twice");
    }
    check_messages(&collector.got, &expected);
}

#[test]
fn a_full_local_queue_waits_instead_of_failing() {
    let brokers = brokers();
    require_broker(&brokers);
    let prefix = prefix("queue");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = common::LogWriter::open(dir.path());
    log.shop("m-1", 3);
    log.orders("m-1", 3, 30);
    let mut config = sink_config(&brokers, &prefix);
    // librdkafka holds at most 8 messages: every batch overflows it many times.
    config.properties.push(("queue.buffering.max.messages".into(), "8".into()));

    let mut relay = Relay::new(driver_config(dir.path()));
    relay.spawn(KafkaSink::new(config.clone()).expect("sink")).expect("spawn");
    let status = relay.statuses()[0].clone();
    let durable = log.durable_lsn();
    wait_until("the sink to catch up", Duration::from_secs(60), || caught_up(&status, durable));
    assert_eq!(status.failures.load(Ordering::Relaxed), 0, "a full queue is no failure");
    relay.stop();

    let expected = expected_events(dir.path(), &prefix);
    let mut collector = Collector::new(&brokers, &config.all_topics());
    collector.until_seen(expected.keys(), Duration::from_secs(60));
    check_messages(&collector.got, &expected);
}

/// A tansu of this test's own, on a port of its own; killed with SIGKILL on drop.
struct PrivateBroker {
    bin: PathBuf,
    port: u16,
    /// The port it tells clients to use (its own, or a proxy's).
    advertised: u16,
    log: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl PrivateBroker {
    fn start(dir: &Path) -> PrivateBroker {
        let port = free_port();
        PrivateBroker::start_advertising(dir, port, port)
    }

    /// Listens on `port` and sends clients to `advertised` (where a proxy listens).
    fn start_advertising(dir: &Path, port: u16, advertised: u16) -> PrivateBroker {
        let bin = tansu_bin();
        let mut broker = PrivateBroker { bin, port, advertised, log: dir.join("tansu.log"), child: None };
        broker.restart();
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Starts it (again) on the same port and waits until it answers.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("tansu log");
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("tansu exited with {status}; see {}", self.log.display());
            }
            assert!(Instant::now() < deadline, "tansu did not answer on {addr}; see {}", self.log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SURGE_TEST_TANSU") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("tansu")).find(|p| p.is_file()))
        .unwrap_or_default();
    if let Some(bin) = on_path {
        return bin;
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    let bin = home.join("bin").join("tansu");
    assert!(bin.is_file(), "no tansu binary (SURGE_TEST_TANSU, PATH, {}): {START_HINT}", bin.display());
    bin
}

#[test]
fn broker_outage_loses_nothing_and_the_breaker_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = PrivateBroker::start(dir.path());
    let brokers = broker.brokers();
    let prefix = prefix("outage");
    let wal_dir = dir.path().join("wal");
    let mut log = common::LogWriter::open(&wal_dir);
    log.shop("m-1", 4);
    log.orders("m-1", 4, 60);
    let config = sink_config(&brokers, &prefix);

    let mut relay = Relay::new(driver_config(&wal_dir));
    relay.spawn(KafkaSink::new(config.clone()).expect("sink")).expect("spawn");
    let status: Arc<SinkStatus> = relay.statuses()[0].clone();
    let before_kill = log.durable_lsn();
    wait_until("the sink to catch up", Duration::from_secs(60), || caught_up(&status, before_kill));
    // Quiesced: record what the broker holds before it dies with it (memory storage).
    let expected = expected_events(&wal_dir, &prefix);
    let mut before = Collector::new(&brokers, &config.all_topics());
    before.until_seen(expected.keys(), Duration::from_secs(60));
    check_messages(&before.got, &expected);
    drop(before);

    broker.kill();
    let failures = status.failures.load(Ordering::Relaxed);
    log.orders("m-1", 4, 40);
    let durable = log.durable_lsn();
    assert!(durable > before_kill);
    wait_until("the breaker to open", Duration::from_secs(30), || status.breaker() == BreakerState::Open);
    assert!(status.failures.load(Ordering::Relaxed) > failures, "failures are counted");
    assert_eq!(status.written_lsn.load(Ordering::Relaxed), before_kill, "nothing is acknowledged while it is down");
    // The driver refreshes the durable LSN only when it reads a batch, i.e. not while
    // `resume` keeps failing, so the lag shows what was durable at the first failed write.
    assert!(status.lag_records() > 0, "the lag shows that records wait");
    let mut prom = String::new();
    relay.render_prometheus(&mut prom);
    assert!(prom.contains("surge_relay_breaker_state{sink=\"kafka\"} 1"), "{prom}");

    broker.restart();
    wait_until("the sink to catch up after the outage", Duration::from_secs(60), || caught_up(&status, durable));
    wait_until("the breaker to close", Duration::from_secs(10), || status.breaker() == BreakerState::Closed);
    relay.stop();

    // The restarted broker starts empty: everything written from the kill on must be there.
    let expected = expected_events(&wal_dir, &prefix);
    let after_ids = public_ids_after(&expected, before_kill);
    assert!(after_ids.len() > 100, "the outage covers a good number of events ({})", after_ids.len());
    let mut after = Collector::new(&brokers, &config.all_topics());
    after.until_seen(&after_ids, Duration::from_secs(60));
    check_messages(&after.got, &expected);
}

/// A TCP proxy in front of a broker that can cut every connection (and refuse new ones)
/// while the broker keeps its data: a network partition, not a crash. Answers from the
/// broker are held back `delay` per chunk so that writes are slow and a cut lands in the
/// middle of one.
struct Proxy {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<parking_lot::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (cut2, open2) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = open2.lock();
                    open.push(client.try_clone().expect("clone"));
                    open.push(server.try_clone().expect("clone"));
                }
                let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                std::thread::spawn(move || pump(client, server, Duration::ZERO));
                std::thread::spawn(move || pump(s2, c2, delay));
            }
        });
        Proxy { port, cut, open }
    }

    /// Closes every connection and refuses new ones until `restore`.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[test]
fn network_partition_in_the_middle_of_writes_keeps_order_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_port = free_port();
    let proxy = Proxy::start(broker_port, Duration::from_millis(50));
    let _broker = PrivateBroker::start_advertising(dir.path(), broker_port, proxy.port);
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let prefix = prefix("partition");
    let wal_dir = dir.path().join("wal");
    let mut log = common::LogWriter::open(&wal_dir);
    log.shop("m-1", 3);
    log.orders("m-1", 3, 150);
    let config = sink_config(&brokers, &prefix);

    let mut driver = driver_config(&wal_dir);
    driver.batch.events_max = 200;
    let mut relay = Relay::new(driver);
    relay.spawn(KafkaSink::new(config.clone()).expect("sink")).expect("spawn");
    let status = relay.statuses()[0].clone();
    let durable = log.durable_lsn();
    // Cut twice while the relay is behind: a short cut (librdkafka reconnects within the
    // write) and one long enough for the write to give up and a new session to re-send.
    for (i, cut_for) in [Duration::from_millis(300), Duration::from_millis(2_500)].into_iter().enumerate() {
        let from = status.written_lsn.load(Ordering::Relaxed);
        wait_until("the sink to move on", Duration::from_secs(30), || {
            status.written_lsn.load(Ordering::Relaxed) > from
        });
        // The next write's requests are out by now, and their answers are held back.
        std::thread::sleep(Duration::from_millis(30));
        proxy.cut();
        std::thread::sleep(cut_for);
        proxy.restore();
        if i == 0 {
            log.orders("m-1", 3, 30);
        }
    }
    let durable = log.durable_lsn().max(durable);
    wait_until("the sink to catch up after the cuts", Duration::from_secs(60), || caught_up(&status, durable));
    assert!(status.failures.load(Ordering::Relaxed) > 0, "the long cut failed a write or a resume");
    relay.stop();

    let expected = expected_events(&wal_dir, &prefix);
    let mut collector = Collector::new(&brokers, &config.all_topics());
    collector.until_seen(expected.keys(), Duration::from_secs(60));
    collector.until_quiet(Duration::from_millis(300));
    check_messages(&collector.got, &expected);
    let mut copies: HashMap<&str, Vec<&Got>> = HashMap::new();
    for g in &collector.got {
        copies.entry(g.event_id.as_str()).or_default().push(g);
    }
    for (id, c) in &copies {
        assert!(c.iter().all(|g| (&g.key, &g.value) == (&c[0].key, &c[0].value)), "{id}: copies differ: {c:?}");
    }
    eprintln!(
        "{} events, {} messages ({} duplicates), {} failures",
        expected.len(),
        collector.got.len(),
        collector.got.len() - copies.len(),
        status.failures.load(Ordering::Relaxed)
    );
}
