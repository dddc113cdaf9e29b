//! `Etcd`: one connection (a balanced gRPC channel over every endpoint) and the bounds every
//! request of the crate obeys.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, GetResponse, KvClient};

use crate::error::{ClusterError, Result};

/// etcd refuses a request larger than this by default (`--max-request-bytes`, 1.5 MiB).
pub const ETCD_REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// Room kept in a request beside the value: keys, compares and protobuf framing.
const REQUEST_OVERHEAD_BYTES: usize = 4 * 1024;

/// How the crate talks to etcd, and its bounds.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `host:port` of each member; the client spreads requests over those that answer.
    pub endpoints: Vec<String>,
    /// Bound on establishing a connection to a member.
    pub connect_timeout_ms: u64,
    /// Bound on every request: past it a read is `Unavailable`, a write `Indeterminate`.
    /// Above etcd's election timeout (1 s by default), so a leader change is ridden through.
    pub request_timeout_ms: u64,
    /// The largest encoded batch one append may write (one etcd value).
    pub batch_bytes_max: usize,
    /// The most records one batch may hold.
    pub batch_records_max: usize,
    /// The most batches one `read_from` page returns; with `batch_bytes_max` it bounds a
    /// response's size.
    pub read_page_batches: usize,
    /// The bytes of one snapshot chunk (one etcd value).
    pub snapshot_chunk_bytes: usize,
    /// The largest snapshot `put_snapshot` writes and `get_snapshot` accepts.
    pub snapshot_bytes_max: usize,
    /// How long an append whose tries' outcomes are unknown (etcd electing a leader, a
    /// member gone) goes on trying the same batch at the same seq before it answers
    /// `Indeterminate`; 0: each member once.
    pub append_patience_ms: u64,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 5_000,
            batch_bytes_max: 1024 * 1024,
            batch_records_max: 65_536,
            read_page_batches: 8,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_bytes_max: 1024 * 1024 * 1024,
            append_patience_ms: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(ClusterError::Config(m));
        if self.endpoints.is_empty() {
            return fail("no etcd endpoint".into());
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return fail("timeouts must be above zero".into());
        }
        let value_max = ETCD_REQUEST_BYTES_MAX - REQUEST_OVERHEAD_BYTES;
        if self.batch_bytes_max == 0 || self.batch_bytes_max > value_max {
            return fail(format!("batch_bytes_max must be 1..={value_max}"));
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > value_max {
            return fail(format!("snapshot_chunk_bytes must be 1..={value_max}"));
        }
        if self.batch_records_max == 0 || self.batch_records_max > u32::MAX as usize {
            return fail("batch_records_max must be 1..=u32::MAX".into());
        }
        if self.read_page_batches == 0 || self.read_page_batches > 1024 {
            return fail("read_page_batches must be 1..=1024".into());
        }
        if self.snapshot_bytes_max / self.snapshot_chunk_bytes > u32::MAX as usize {
            return fail("a snapshot would need more than u32::MAX chunks".into());
        }
        Ok(())
    }

    /// The largest response a read may bring: a page of values as large as etcd accepts
    /// (a writer configured with larger batches or chunks than this reader stays readable),
    /// plus room for keys and headers.
    fn response_bytes_max(&self) -> usize {
        self.read_page_batches * ETCD_REQUEST_BYTES_MAX + 1024 * 1024
    }
}

/// One member's connection.
struct Member {
    endpoint: String,
    client: Client,
    kv: KvClient,
}

/// A connection to an etcd cluster: one gRPC connection per member, requests pinned to one
/// member at a time and moved to the next when it fails (as etcd's own Go client does). A
/// balanced channel over all members was tried first: after a member died it kept sending
/// about every other request to the dead member's address (connection refused), so a
/// member's death would have failed requests for as long as it stayed down.
/// Cheap to clone (connections and the pinned member are shared).
#[derive(Clone)]
pub struct Etcd {
    members: Arc<Vec<Member>>,
    pinned: Arc<AtomicUsize>,
    pub(crate) config: EtcdConfig,
}

impl Etcd {
    /// Prepares a connection to each member in `config.endpoints` (connections open on first
    /// use, so a member that is down now is not an error).
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        config.validate()?;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .with_timeout(Duration::from_millis(config.request_timeout_ms))
            // HTTP/2 pings find a dead member's connection without waiting for a request.
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum answers "no leader" at once instead of
            // queueing the request until the timeout; the request moves to another member.
            .with_require_leader(true);
        let mut members = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let connect = Client::connect([endpoint.as_str()], Some(options.clone()));
            let client =
                timeout(&config, "connect", connect).await?.map_err(|e| crate::error::unavailable("connect", e))?;
            let kv = client.kv_client().max_decoding_message_size(config.response_bytes_max());
            members.push(Member { endpoint: endpoint.clone(), client, kv });
        }
        Ok(Self { members: Arc::new(members), pinned: Arc::new(AtomicUsize::new(0)), config })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The endpoint requests go to now.
    pub fn pinned_endpoint(&self) -> &str {
        &self.members[self.pinned_index()].endpoint
    }

    fn pinned_index(&self) -> usize {
        self.pinned.load(Ordering::Relaxed) % self.members.len()
    }

    /// The pinned member's index and client (for leases and watches, which hold streams).
    pub(crate) fn client(&self) -> (usize, Client) {
        let i = self.pinned_index();
        (i, self.members[i].client.clone())
    }

    /// Moves requests off member `i` after it failed (if no other request moved them yet).
    pub(crate) fn demote(&self, i: usize) {
        let next = (i + 1) % self.members.len();
        if self.pinned.compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!(
                from = %self.members[i].endpoint,
                to = %self.members[next].endpoint,
                "etcd member failed; requests move to the next"
            );
        }
    }

    /// A read (or any request that changes nothing), tried on each member at most once until
    /// one answers; each try bounded by the request timeout.
    pub(crate) async fn read<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.members.len() {
            let i = self.pinned_index();
            match timeout(&self.config, what, f(self.members[i].kv.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if crate::error::refused(&e) => {
                    return Err(ClusterError::Rejected(format!("{what}: {e}")));
                }
                Ok(Err(e)) => last = Some(crate::error::unavailable(what, e)),
                Err(e) => last = Some(e),
            }
            self.demote(i);
        }
        Err(last.unwrap_or_else(|| ClusterError::Unavailable(what.to_owned())))
    }

    /// A range read (`read`'s retries), for the many reads that are one `get`.
    pub(crate) async fn get(
        &self,
        what: &str,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse> {
        let key = key.into();
        self.read(what, |mut kv| {
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    /// A write, tried once on the pinned member: a failure is `Indeterminate` (or `Rejected`)
    /// and moves later requests to the next member. Retrying is the caller's decision, since
    /// only it knows whether the write is safe to repeat.
    pub(crate) async fn write<T, Fut>(&self, what: &str, f: impl FnOnce(KvClient) -> Fut) -> Result<T>
    where
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let i = self.pinned_index();
        let outcome = timeout(&self.config, what, f(self.members[i].kv.clone())).await;
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let err = crate::error::write_failed(what, e);
                if !matches!(err, ClusterError::Rejected(_)) {
                    self.demote(i);
                }
                Err(err)
            }
            Err(e) => {
                self.demote(i);
                Err(ClusterError::Indeterminate(e.to_string()))
            }
        }
    }

    /// The number of members (bounds retries that try each once).
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Runs a request on a stream-holding client under the request timeout; a timeout is
    /// `Unavailable`.
    pub(crate) async fn bounded<T>(&self, what: &str, f: impl Future<Output = T>) -> Result<T> {
        timeout(&self.config, what, f).await
    }
}

async fn timeout<T>(config: &EtcdConfig, what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(Duration::from_millis(config.request_timeout_ms), f)
        .await
        .map_err(|_| ClusterError::Unavailable(format!("{what}: no answer within {} ms", config.request_timeout_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bounds_are_checked() {
        let c = EtcdConfig::new(vec!["127.0.0.1:2379".into()]);
        assert!(c.validate().is_ok());
        let mut big = c.clone();
        big.batch_bytes_max = ETCD_REQUEST_BYTES_MAX;
        assert!(big.validate().is_err());
        let mut none = c.clone();
        none.endpoints.clear();
        assert!(none.validate().is_err());
        let mut zero = c;
        zero.read_page_batches = 0;
        assert!(zero.validate().is_err());
    }
}
