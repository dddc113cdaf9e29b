//! Kafka sink (rdkafka): one topic per aggregate family (`{prefix}orders`, `payments`,
//! `inventory`, `ledger`, `points`, `queue`, `merchants`, plus `{prefix}dlq` for the gateway
//! worker), key = `{merchant_id}/{aggregate_id}` ([`message_key`]), value = the JSON
//! envelope, headers `event-id` and `event-type`; idempotent producer with `acks=all`.
//! Engine-internal events (no `aggregate()`) are never published.
//!
//! # Position
//! The sink keeps no position of its own: `resume` returns the reader checkpoint the driver
//! stored, and the driver stores it only after `write` returned Ok, i.e. after the broker
//! acknowledged (acks=all) every message of the batch. After any failure the driver resumes
//! from that checkpoint and the sink sends the records again: at least once, and a duplicate
//! carries the same `event-id` (derived from its log position), so consumers deduplicate.
//!
//! # Per-aggregate order, across retries and restarts
//! Events of one aggregate share a key, hence a partition. Two facts give the order:
//!
//! 1. *Within one producer session, what reaches a partition is a prefix of what was
//!    produced to it, in produce order.* The idempotent producer numbers messages per
//!    partition and the broker appends sequence n+1 only after n, so retries inside
//!    librdkafka neither reorder nor duplicate (on a broker that implements idempotent
//!    produce; the partition test checks order on tansu). The one thing that can punch a hole in the
//!    middle (a message failing while a later one succeeds) is a per-message timeout of a
//!    queued message (librdkafka INTRODUCTION.md, "Message timeout considerations"), or a
//!    batch failing with a non-retriable error. So librdkafka's own `message.timeout.ms` is
//!    disabled (0 = never) and the sink enforces [`KafkaConfig::message_timeout_ms`] on the
//!    whole batch itself; `enable.gapless.guarantee` turns any other gap-making error into a
//!    fatal error. A session ends at the first failed (or interrupted) write: the producer is
//!    dropped, which purges its queue and in-flight requests, so nothing of that session is
//!    sent afterwards, and what it wrote is still a prefix per partition.
//! 2. *A new session starts at the checkpoint, which never passes an unacknowledged event.*
//!    It re-sends from there in log order, so it first repeats events already written
//!    (duplicates) and then extends the prefix.
//!
//! Together: per partition, and so per aggregate, the *first occurrences* of event ids are in
//! log order; later copies are duplicates a consumer drops by `event-id`. A restart of the
//! process is just another session starting at the stored checkpoint.
//!
//! The limit of this argument: "nothing of that session is sent afterwards" does not stop
//! a produce request the broker already *received* but has not yet appended (it sits in the
//! broker's request queue) from being appended after the next session's first messages.
//! That needs a write to time out against a live but very slow broker, and the request to
//! wait longer in its queue than the driver's backoff plus a `resume` round trip. Only a
//! transactional producer (a fixed `transactional.id`, whose new epoch fences the old
//! producer's requests) would close it, at the price of a commit per batch and
//! `read_committed` consumers; the sink does not do that.
//!
//! # Boundedness
//! A write holds at most one driver batch (`events_max`, 10,000 by default) in librdkafka's
//! queue (bounded by `queue.buffering.max.messages`); when that queue is full the write waits
//! for deliveries to drain it (until the batch deadline) instead of failing. No buffer of
//! our own grows: the payload buffer is reused and only as large as the largest envelope.
//!
//! # Tests
//! `relay/tests/kafka.rs` runs against a real Kafka-protocol broker (tansu), no mocks.
//! tansu built with the `dynostore` feature stores only in memory (`memory://`) or in S3
//! (`broker --help` lists postgres, memory and s3; the others need features not built), so
//! the broker-kill test cannot keep messages across the kill: it lets the consumer catch up
//! and records what it saw before the kill, and checks that the union of before and after
//! holds every event of the log (all written during the outage must arrive after the
//! restart). The end-to-end check of order under failures is a second test: a TCP proxy in
//! front of a private tansu cuts every connection in the middle of writes (the broker keeps
//! its data), and every event, each duplicate and the per-key order are checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use surge_core::event::Topic;
use surge_wal::Lsn;
use tokio::sync::Notify;

use crate::batch::Batch;
use crate::sink::{Sink, SinkError};

/// The key of an aggregate's messages: `{merchant_id}/{aggregate_id}`.
///
/// Aggregate ids are per merchant (`ord_1`, a SKU, a customer id), so on their own two
/// merchants' orders would share a key, and a compacted topic or a consumer keyed by it
/// would merge them. A merchant id never holds a `/` (core allows `[A-Za-z0-9_.:-]`), so a
/// key splits back at its first `/`. Every event of one aggregate gets the same key, hence
/// the same partition: per-aggregate order holds as before.
pub fn message_key(merchant_id: &str, aggregate_id: &str) -> String {
    let mut key = String::with_capacity(merchant_id.len() + 1 + aggregate_id.len());
    key.push_str(merchant_id);
    key.push('/');
    key.push_str(aggregate_id);
    key
}

/// Every topic family core publishes to, in the order of [`topic_index`].
const FAMILIES: [Topic; 8] = [
    Topic::Orders,
    Topic::Payments,
    Topic::Inventory,
    Topic::Ledger,
    Topic::Points,
    Topic::Queue,
    Topic::Merchants,
    Topic::DeadLetters,
];

fn topic_index(topic: Topic) -> usize {
    match topic {
        Topic::Orders => 0,
        Topic::Payments => 1,
        Topic::Inventory => 2,
        Topic::Ledger => 3,
        Topic::Points => 4,
        Topic::Queue => 5,
        Topic::Merchants => 6,
        Topic::DeadLetters => 7,
    }
}

/// The sink's name: its reader checkpoint and its metrics label.
pub const SINK_NAME: &str = "kafka";

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    /// Prepended to every topic name (`surge.` gives `surge.orders`).
    pub topic_prefix: String,
    /// Partitions of the topics the sink creates (existing topics are left as they are).
    pub partitions: i32,
    /// Replication factor of the topics the sink creates; -1 takes the broker's default.
    pub replication_factor: i32,
    /// How long one write may take to have every message of its batch acknowledged. Keep it
    /// below the driver's `call_timeout_ms` so the sink, not the driver, gives up first.
    pub message_timeout_ms: u64,
    /// How long `resume` waits for the broker (metadata and topic creation), and how long
    /// a write goes on while librdkafka reports every broker down before it gives up
    /// (sooner than `message_timeout_ms`, so the breaker hears of an outage early).
    pub connect_timeout_ms: u64,
    /// `linger.ms`: how long librdkafka waits to fill a produce request.
    pub linger_ms: u64,
    /// `compression.type`: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// `client.id` as the brokers see it.
    pub client_id: String,
    /// Further librdkafka properties (security, tuning) for the producer and the admin
    /// client alike; they cannot change what the ordering argument rests on
    /// (`enable.idempotence`, `acks`, `enable.gapless.guarantee`, `message.timeout.ms`).
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig { brokers: brokers.into(), ..KafkaConfig::default() }
    }

    /// The full name of a family's topic (`surge.orders`).
    pub fn topic(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.suffix())
    }

    /// The dead-letter topic (`surge.dlq`): gateway operations that kept failing.
    pub fn dlq_topic(&self) -> String {
        self.topic(Topic::DeadLetters)
    }

    /// Every topic the sink creates.
    pub fn all_topics(&self) -> Vec<String> {
        FAMILIES.iter().map(|t| self.topic(*t)).collect()
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("socket.connection.setup.timeout.ms", self.connect_timeout_ms.max(1000).to_string())
            // A broker closing an idle connection is no news (an outage still is: librdkafka
            // reports every broker down, and the sink acts on that).
            .set("log.connection.close", "false")
            .set_log_level(RDKafkaLogLevel::Warning);
        c
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("enable.gapless.guarantee", "true")
            // Never: the sink bounds the whole batch itself (see the module doc).
            .set("message.timeout.ms", "0")
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.num.messages", "10000")
            // The Java client's partitioner: a key lands on the partition other Kafka tools
            // (and co-partitioned joins in Kafka Streams) expect it on.
            .set("partitioner", "murmur2_random")
            .set("compression.type", &self.compression);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        // Applied after the free-form properties: these hold the sink's promises.
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("enable.gapless.guarantee", "true")
            .set("message.timeout.ms", "0");
        c
    }

    fn admin_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "surge.".into(),
            partitions: 3,
            replication_factor: -1,
            message_timeout_ms: 20_000,
            connect_timeout_ms: 5_000,
            linger_ms: 5,
            compression: "lz4".into(),
            client_id: "surge-relay".into(),
            properties: Vec::new(),
        }
    }
}

/// Delivery reports of one producer session, counted by librdkafka's polling thread.
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The delivery count the current write waits for (`u64::MAX` while producing), so
    /// the polling thread wakes the write once, not for every message.
    target: AtomicU64,
    first_error: Mutex<Option<String>>,
    notify: Notify,
    /// When librdkafka last said every broker is down, in ms since `born` plus one; 0 once
    /// a message got through again (or a write starts).
    down_since: AtomicU64,
    born: Instant,
}

impl Acks {
    fn new() -> Acks {
        Acks {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            first_error: Mutex::new(None),
            notify: Notify::new(),
            down_since: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn done(&self) -> u64 {
        self.ok.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// How long every broker has been down, if it is.
    fn down_for(&self) -> Option<Duration> {
        match self.down_since.load(Ordering::SeqCst) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }
}

/// The producer's context: counts delivery reports and sends librdkafka's logs to tracing.
struct Context {
    acks: Arc<Acks>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(sink = "kafka", "librdkafka {fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(sink = "kafka", "librdkafka {fac}: {log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(sink = "kafka", "librdkafka {fac}: {log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(sink = "kafka", "librdkafka {fac}: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            let now = self.acks.now_ms();
            let _ = self.acks.down_since.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        }
        tracing::warn!(sink = "kafka", "librdkafka: {error}: {reason}");
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let acks = &self.acks;
        let failed = match result {
            Ok(_) => {
                acks.ok.fetch_add(1, Ordering::SeqCst);
                if acks.down_since.load(Ordering::Relaxed) != 0 {
                    acks.down_since.store(0, Ordering::SeqCst);
                }
                false
            }
            Err((e, _)) => {
                let mut first = acks.first_error.lock();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
                drop(first);
                acks.failed.fetch_add(1, Ordering::SeqCst);
                true
            }
        };
        if failed || acks.done() >= acks.target.load(Ordering::SeqCst) {
            acks.notify.notify_one();
        }
    }
}

/// One producer and its delivery counts. Dropped after a failed or interrupted write: its
/// drop purges what it still holds, so nothing of it is sent afterwards.
struct Session {
    producer: ThreadedProducer<Context>,
    acks: Arc<Acks>,
    /// Messages handed to librdkafka in this session.
    produced: u64,
    /// False while a write is under way, and for good once one failed: the session then
    /// never writes again (a write the driver abandoned on its timeout leaves it false too).
    clean: bool,
}

impl Session {
    fn new(config: &KafkaConfig) -> Result<Session, SinkError> {
        let acks = Arc::new(Acks::new());
        let context = Context { acks: acks.clone() };
        let producer = config
            .producer_config()
            .create_with_context(context)
            .map_err(|e| SinkError::Fatal(format!("kafka producer configuration: {e}")))?;
        Ok(Session { producer, acks, produced: 0, clean: true })
    }

    fn fatal_error(&self) -> Option<String> {
        self.producer.client().fatal_error().map(|(code, reason)| format!("{code:?}: {reason}"))
    }
}

/// The Kafka sink. Built outside any runtime and without touching the network; `resume`
/// connects (and creates missing topics), `write` publishes a batch.
pub struct KafkaSink {
    config: KafkaConfig,
    /// Full topic names by [`topic_index`].
    topics: [String; FAMILIES.len()],
    session: Option<Session>,
    /// Reused for every envelope.
    payload: Vec<u8>,
}

impl KafkaSink {
    pub fn new(config: KafkaConfig) -> Result<KafkaSink, SinkError> {
        if config.brokers.trim().is_empty() {
            return Err(SinkError::Fatal("kafka: no brokers configured".into()));
        }
        if config.partitions < 1 {
            return Err(SinkError::Fatal(format!("kafka: partitions must be at least 1, not {}", config.partitions)));
        }
        if config.message_timeout_ms == 0 || config.connect_timeout_ms == 0 {
            return Err(SinkError::Fatal("kafka: timeouts must be positive".into()));
        }
        // Checks the configuration now rather than at the first resume.
        config.producer_config().create_native_config().map_err(|e| SinkError::Fatal(format!("kafka: {e}")))?;
        let topics = FAMILIES.map(|t| config.topic(t));
        Ok(KafkaSink { config, topics, session: None, payload: Vec::with_capacity(1024) })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Creates the topics that do not exist yet; "already exists" is fine.
    async fn ensure_topics(&self) -> Result<(), SinkError> {
        let admin: AdminClient<DefaultClientContext> = self
            .config
            .admin_config()
            .create()
            .map_err(|e| SinkError::Fatal(format!("kafka admin client configuration: {e}")))?;
        let names = self.config.all_topics();
        let new_topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(name, self.config.partitions, TopicReplication::Fixed(self.config.replication_factor))
            })
            .collect();
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let options = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|e| SinkError::Transient(format!("kafka: creating topics at {}: {e}", self.config.brokers)))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    let reason = format!("kafka: creating topic {name}: {code}");
                    // Retrying the same request cannot change these answers.
                    let hopeless = matches!(
                        code,
                        RDKafkaErrorCode::InvalidTopic
                            | RDKafkaErrorCode::InvalidPartitions
                            | RDKafkaErrorCode::InvalidReplicationFactor
                            | RDKafkaErrorCode::InvalidConfig
                            | RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::ClusterAuthorizationFailed
                            | RDKafkaErrorCode::PolicyViolation
                    );
                    return Err(if hopeless { SinkError::Fatal(reason) } else { SinkError::Transient(reason) });
                }
            }
        }
        Ok(())
    }

    /// Produces every publishable event of `batch` and waits for all their acknowledgements.
    async fn publish(
        session: &mut Session,
        topics: &[String; FAMILIES.len()],
        payload: &mut Vec<u8>,
        batch: &Batch,
        down_max: Duration,
    ) -> Result<(), SinkError> {
        let acks = session.acks.clone();
        acks.target.store(u64::MAX, Ordering::SeqCst);
        // A broker that dropped an idle connection is reconnected on demand: only an
        // outage noticed during this write counts.
        acks.down_since.store(0, Ordering::SeqCst);
        let start = session.produced;
        for logged in &batch.events {
            let Some((topic, aggregate_id)) = logged.event.aggregate() else { continue };
            let key = message_key(&logged.event.merchant, &aggregate_id);
            let envelope = logged.envelope();
            payload.clear();
            serde_json::to_writer(&mut *payload, &envelope)
                .map_err(|e| SinkError::Fatal(format!("kafka: encoding event {}: {e}", envelope.event_id)))?;
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header { key: "event-id", value: Some(envelope.event_id.as_str()) })
                .insert(Header { key: "event-type", value: Some(envelope.event_type) });
            let record: BaseRecord<'_, str, [u8], ()> = BaseRecord::to(&topics[topic_index(topic)])
                .key(key.as_str())
                .payload(payload.as_slice())
                .headers(headers);
            Self::produce(session, record, &envelope.event_id).await?;
        }
        let target = session.produced;
        if target == start {
            return Ok(());
        }
        Self::wait_for_acks(&acks, target, down_max).await
    }

    /// Hands one message to librdkafka, waiting while its queue is full.
    async fn produce(
        session: &mut Session,
        mut record: BaseRecord<'_, str, [u8], ()>,
        event_id: &str,
    ) -> Result<(), SinkError> {
        // Bounded by the write's deadline (the caller's timeout drops this future).
        loop {
            match session.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if let Some(e) = session.acks.first_error.lock().clone() {
                        return Err(SinkError::Transient(format!("kafka: delivery failed: {e}")));
                    }
                    // librdkafka's thread drains the queue as acknowledgements come in.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), back)) => {
                    return Err(SinkError::Fatal(format!(
                        "kafka: event {event_id} is {} bytes, more than the producer's message.max.bytes",
                        back.payload.map_or(0, <[u8]>::len)
                    )));
                }
                Err((e, _)) => {
                    return Err(SinkError::Transient(format!("kafka: producing event {event_id}: {e}")));
                }
            }
        }
        session.produced += 1;
        Ok(())
    }

    /// Waits until `target` delivery reports came in, all of them successes. Bounded by the
    /// deadline the caller puts on this future; the last delivery report (or any failure)
    /// wakes it, and it looks at the brokers' state in between.
    async fn wait_for_acks(acks: &Acks, target: u64, down_max: Duration) -> Result<(), SinkError> {
        acks.target.store(target, Ordering::SeqCst);
        loop {
            if acks.failed.load(Ordering::SeqCst) > 0 {
                let e = acks.first_error.lock().clone().unwrap_or_default();
                return Err(SinkError::Transient(format!("kafka: delivery failed: {e}")));
            }
            if acks.done() >= target {
                return Ok(());
            }
            if let Some(down) = acks.down_for().filter(|d| *d >= down_max) {
                // Rather than wait out the whole deadline: the breaker should hear of it.
                return Err(SinkError::Transient(format!(
                    "kafka: every broker has been down for {} ms",
                    down.as_millis()
                )));
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), acks.notify.notified()).await;
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        SINK_NAME
    }

    async fn resume(&mut self, checkpoint: Lsn) -> Result<Lsn, SinkError> {
        if let Some(session) = &self.session {
            if !session.clean || session.fatal_error().is_some() {
                // Purges what it still holds (blocks up to half a second for its reports).
                self.session = None;
            }
        }
        // Also the connectivity check; a broker that lost its topics gets them back.
        self.ensure_topics().await?;
        if self.session.is_none() {
            let session = Session::new(&self.config)?;
            // A metadata answer from the broker the producer will use makes librdkafka ask
            // for its producer id at once; without it the first batch waits for librdkafka's
            // 500 ms retry timer (its bootstrap connection is gone by the first attempt).
            // Blocking, but only the sink's own thread, for at most connect_timeout_ms.
            let timeout = Duration::from_millis(self.config.connect_timeout_ms);
            session
                .producer
                .client()
                .fetch_metadata(Some(&self.topics[0]), timeout)
                .map_err(|e| SinkError::Transient(format!("kafka: metadata from {}: {e}", self.config.brokers)))?;
            self.session = Some(session);
        }
        Ok(checkpoint)
    }

    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let Some(session) = self.session.as_mut() else {
            return Err(SinkError::Transient("kafka: not connected".into()));
        };
        if !session.clean {
            return Err(SinkError::Transient("kafka: the producer session failed; resume first".into()));
        }
        session.clean = false;
        let deadline = Duration::from_millis(self.config.message_timeout_ms);
        let down_max = Duration::from_millis(self.config.connect_timeout_ms);
        let published =
            tokio::time::timeout(deadline, Self::publish(session, &self.topics, &mut self.payload, batch, down_max))
                .await;
        let error = match published {
            Ok(Ok(())) => {
                session.clean = true;
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => SinkError::Transient(format!(
                "kafka: {} messages still unacknowledged after {} ms",
                session.produced.saturating_sub(session.acks.done()),
                self.config.message_timeout_ms
            )),
        };
        let error = match (session.fatal_error(), error) {
            (Some(fatal), SinkError::Transient(reason)) => {
                SinkError::Transient(format!("{reason} (fatal producer error {fatal}; a new producer takes over)"))
            }
            (_, error) => error,
        };
        // The session ends here: its drop purges what it still holds (module doc).
        self.session = None;
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_prefix() {
        let config = KafkaConfig::default();
        assert_eq!(config.topic(Topic::Orders), "surge.orders");
        assert_eq!(config.topic(Topic::Merchants), "surge.merchants");
        assert_eq!(config.dlq_topic(), "surge.dlq");
        let all = config.all_topics();
        assert_eq!(all.len(), 8);
        for suffix in ["orders", "payments", "inventory", "ledger", "points", "queue", "merchants", "dlq"] {
            assert!(all.contains(&format!("surge.{suffix}")), "{suffix}");
        }
        for topic in FAMILIES {
            assert_eq!(FAMILIES[topic_index(topic)], topic);
        }
    }

    #[test]
    fn message_keys_are_unique_across_merchants_and_stable_per_aggregate() {
        assert_eq!(message_key("m-1", "ord_1"), "m-1/ord_1");
        assert_ne!(message_key("m-1", "ord_1"), message_key("m-2", "ord_1"));
        assert_eq!(message_key("m-1", "ord_1"), message_key("m-1", "ord_1"));
        // Not confusable either: merchant ids hold no '/', so the first one splits the key.
        let key = message_key("shop.a:b-c_d", "sku/with/slashes");
        assert_eq!(key.split_once('/'), Some(("shop.a:b-c_d", "sku/with/slashes")));
    }

    #[test]
    fn new_checks_the_configuration_without_connecting() {
        // Nothing listens on port 1: building the sink does not care.
        assert!(KafkaSink::new(KafkaConfig::new("127.0.0.1:1")).is_ok());
        let bad = [
            KafkaConfig::new(" "),
            KafkaConfig { partitions: 0, ..KafkaConfig::default() },
            KafkaConfig { message_timeout_ms: 0, ..KafkaConfig::default() },
            KafkaConfig { compression: "bogus".into(), ..KafkaConfig::default() },
            KafkaConfig { properties: vec![("no.such.property".into(), "1".into())], ..KafkaConfig::default() },
        ];
        for config in bad {
            assert!(matches!(KafkaSink::new(config.clone()), Err(SinkError::Fatal(_))), "{config:?}");
        }
    }

    #[test]
    fn free_form_properties_cannot_weaken_the_producer() {
        let config = KafkaConfig {
            properties: vec![
                ("acks".into(), "1".into()),
                ("enable.idempotence".into(), "false".into()),
                ("message.timeout.ms".into(), "1000".into()),
                ("enable.gapless.guarantee".into(), "false".into()),
                ("linger.ms".into(), "50".into()),
            ],
            ..KafkaConfig::default()
        };
        let producer = config.producer_config();
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("message.timeout.ms"), Some("0"));
        assert_eq!(producer.get("enable.gapless.guarantee"), Some("true"));
        assert_eq!(producer.get("linger.ms"), Some("50"), "tuning is allowed");
    }
}
