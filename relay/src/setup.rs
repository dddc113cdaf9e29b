//! Which sinks to run, from the operator's options: the same for `surge serve
//! --kafka-brokers ... --mariadb-url ...` (in-process) and `surge relay` (standalone).

use std::path::PathBuf;

use crate::driver::{DriverConfig, Relay};
use crate::kafka::{KafkaConfig, KafkaSink};
use crate::mariadb::{MariaDbConfig, MariaDbSink};

#[derive(Clone, Debug, Default)]
pub struct RelayOptions {
    /// `host:port[,host:port...]`: turns on the Kafka sink.
    pub kafka_brokers: Option<String>,
    /// Topic names are this prefix + the aggregate family (`surge.orders`, ...).
    pub kafka_topic_prefix: Option<String>,
    /// `mysql://user[:password]@host:port/db`: turns on the MariaDB sink.
    pub mariadb_url: Option<String>,
}

impl RelayOptions {
    pub fn any(&self) -> bool {
        self.kafka_brokers.is_some() || self.mariadb_url.is_some()
    }

    /// The Kafka sink's configuration, when `--kafka-brokers` names any.
    pub fn kafka_config(&self) -> Option<KafkaConfig> {
        let brokers = self.kafka_brokers.as_deref().filter(|b| !b.is_empty())?;
        let mut config = KafkaConfig::new(brokers);
        if let Some(prefix) = &self.kafka_topic_prefix {
            config.topic_prefix = prefix.clone();
        }
        Some(config)
    }
}

/// Starts a driver per configured sink on the log in `wal_dir`; `None` if no sink is
/// configured. Sinks connect on their own threads: an unreachable broker or database
/// does not stop the caller, it shows in the sink's status and log lines.
pub fn start(wal_dir: PathBuf, options: &RelayOptions) -> Result<Option<Relay>, String> {
    if !options.any() {
        return Ok(None);
    }
    let mut relay = Relay::new(DriverConfig::new(wal_dir.clone()));
    if let Some(config) = options.kafka_config() {
        let sink = KafkaSink::new(config).map_err(|e| format!("Kafka sink: {e}"))?;
        relay.spawn(sink).map_err(|e| format!("starting the Kafka sink: {e}"))?;
    }
    if let Some(url) = options.mariadb_url.as_deref().filter(|u| !u.is_empty()) {
        let sink = MariaDbSink::new(MariaDbConfig::new(url, wal_dir)).map_err(|e| format!("MariaDB sink: {e}"))?;
        relay.spawn(sink).map_err(|e| format!("starting the MariaDB sink: {e}"))?;
    }
    Ok(Some(relay))
}
