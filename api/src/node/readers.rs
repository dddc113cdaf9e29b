//! What reads an owned partition's log on this node besides its shard: the relay (Kafka,
//! the MariaDB cold store) and the card gateway worker, the single-node code unchanged, each reading the
//! partition's log in etcd from its checkpoint there (`surge_partition::PartitionSource`).
//! They start when the node takes the partition and stop when it gives it up; the next
//! owner's go on from the checkpoints, so what this node's sent after its last checkpoint
//! is sent again (Kafka: at least once, the same event ids; MariaDB: exactly once, its
//! offset rows per partition move in the transactions that write the rows; the gateway:
//! the worker's restart rules and the operations' idempotency keys, so nothing is charged
//! twice).

use std::sync::Arc;

use surge_cluster::Etcd;
use surge_partition::{PartitionSource, ReaderPositions};
use surge_relay::gateway::{CardKey, GatewayConfig, GatewayStatus, GatewayWorker};
use surge_relay::kafka::{KafkaConfig, KafkaSink};
use surge_relay::mariadb::{MariaDbConfig, MariaDbSink};
use surge_relay::{DriverConfig, Relay, Sink, SinkError, SinkStatus};

use crate::engine::Engine;
use crate::gateway::{EnginePort, GatewayHost};

/// A relay's longest wait for new batches (an etcd watch, which wakes at once when one is
/// appended) before it looks at its stop flag again.
const RELAY_WAIT_MS: u64 = 1_000;

/// Card payments in cluster mode: the worker's settings, the card key every node shares
/// (card numbers sealed by one node are opened by the worker of whichever owns the
/// partition), and the host that shows the workers in /metrics.
pub struct GatewayReader {
    pub config: GatewayConfig,
    pub card_key: CardKey,
    pub host: Arc<GatewayHost>,
}

/// Which readers every owned partition gets.
#[derive(Default)]
pub struct ReaderConfig {
    pub kafka: Option<KafkaConfig>,
    /// The cold store every partition's sink writes (`--mariadb-url`).
    pub mariadb_url: Option<String>,
    pub gateway: Option<GatewayReader>,
}

/// The readers of one owned partition; dropping them stops them (joining their threads).
#[derive(Default)]
pub struct PartitionReaders {
    relay: Option<Relay>,
    gateway: Option<GatewayWorker>,
}

/// Runs `sink` (if it could be built) on `relay` for partition `p`; one that cannot start is
/// logged and left out (`what` names it).
fn spawn_sink<S: Sink + 'static>(relay: &mut Relay, p: u32, what: &str, sink: Result<S, SinkError>) {
    let started =
        sink.map_err(|e| e.to_string()).and_then(|sink| relay.spawn_labelled(sink, Some(p)).map_err(|e| e.to_string()));
    if let Err(e) = started {
        tracing::error!(partition = p, "the {what} relay did not start: {e}");
    }
}

impl ReaderConfig {
    /// Refuses now a configuration a reader would refuse at the first partition.
    pub fn check(&self) -> Result<(), String> {
        if let Some(kafka) = &self.kafka {
            KafkaSink::new(kafka.clone()).map_err(|e| format!("Kafka sink: {e}"))?;
        }
        if let Some(url) = &self.mariadb_url {
            // The URL's checks; the log it names is not read here.
            MariaDbSink::new(MariaDbConfig::new(url, std::path::PathBuf::new()))
                .map_err(|e| format!("MariaDB sink: {e}"))?;
        }
        if let Some(gateway) = &self.gateway {
            gateway.config.validate()?;
        }
        Ok(())
    }

    /// The partition's retention: every configured reader's position, 0 until it stores
    /// one. `None` without readers (a snapshot then deletes everything it covers).
    pub fn positions(&self) -> Option<Arc<ReaderPositions>> {
        let mut names = Vec::new();
        if self.kafka.is_some() {
            names.push(surge_relay::kafka::SINK_NAME);
        }
        if self.mariadb_url.is_some() {
            names.push(surge_relay::mariadb::SINK_NAME);
        }
        if self.gateway.is_some() {
            names.push(surge_relay::gateway::worker::READER);
        }
        (!names.is_empty()).then(|| ReaderPositions::new(names))
    }

    /// Starts partition `p`'s readers (on the current tokio runtime's handle, which their
    /// threads use for etcd). One that cannot start is logged and left out: the partition
    /// serves anyway, and its batches stay in etcd until that reader has them.
    pub async fn start(
        &self,
        etcd: &Etcd,
        p: u32,
        positions: &Arc<ReaderPositions>,
        engine: &Arc<Engine>,
    ) -> PartitionReaders {
        let source = Arc::new(PartitionSource::new(etcd, p, tokio::runtime::Handle::current(), positions.clone()));
        let mut config = DriverConfig::with_source(source.clone());
        config.batch.wait_ms = RELAY_WAIT_MS;
        let mut relay = Relay::new(config);
        if let Some(kafka) = self.kafka.clone() {
            spawn_sink(&mut relay, p, "Kafka", KafkaSink::new(kafka));
        }
        if let Some(url) = &self.mariadb_url {
            let config = MariaDbConfig::for_source(url, source.clone(), Some(p));
            spawn_sink(&mut relay, p, "MariaDB", MariaDbSink::new(config));
        }
        let relay = (!relay.statuses().is_empty()).then_some(relay);
        let gateway = match &self.gateway {
            Some(g) => {
                let (config, card_key) = (g.config.clone(), g.card_key.clone());
                let port = Arc::new(EnginePort(engine.clone()));
                // Its start reads the checkpoint from etcd, blocking: off the runtime's workers.
                let spawned = tokio::task::spawn_blocking(move || GatewayWorker::spawn(source, config, card_key, port));
                match spawned.await {
                    Ok(Ok(worker)) => Some(worker),
                    Ok(Err(e)) => {
                        tracing::error!(partition = p, "the gateway worker did not start: {e}");
                        None
                    }
                    Err(e) => {
                        tracing::error!(partition = p, "the gateway worker's start failed: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        PartitionReaders { relay, gateway }
    }

    /// Shows the readers of the partitions owned now in /metrics and the console.
    pub fn publish<'a>(&self, state: &crate::AppState, owned: impl Iterator<Item = &'a PartitionReaders>) {
        let (mut sinks, mut workers): (Vec<Arc<SinkStatus>>, Vec<Arc<GatewayStatus>>) = (Vec::new(), Vec::new());
        for readers in owned {
            sinks.extend(readers.relay.iter().flat_map(|r| r.statuses().iter().cloned()));
            workers.extend(readers.gateway.iter().map(|g| g.status().clone()));
        }
        state.set_relay_statuses(sinks);
        if let Some(gateway) = &self.gateway {
            gateway.host.set_worker_statuses(workers);
        }
    }
}
