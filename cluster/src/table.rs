//! The partition table: who owns which partition, as every node sees it, built from the
//! owner keys (`/surge/owner/` prefix) and kept current by an etcd watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Etcd;
use crate::codec::{decode_owner, NodeInfo};
use crate::error::{unavailable, ClusterError, Result};
use crate::keys::{parse_owner_key, OWNER_PREFIX};

/// The owner of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: NodeInfo,
    /// The fencing token (the owner key's create revision).
    pub token: i64,
}

/// Partition number to owner; a partition without an owner is absent.
pub type Table = BTreeMap<u32, Owner>;

/// A table kept current in the background; every reader sees a consistent copy.
pub struct PartitionTable {
    rx: watch::Receiver<Arc<Table>>,
    task: JoinHandle<()>,
}

/// Pause before listing again after the watch broke (etcd unreachable, history compacted).
const REWATCH_PAUSE_MS: u64 = 200;

impl PartitionTable {
    /// Lists the owner keys once (so the first table is complete when this returns), then
    /// follows them with a watch. `partitions` bounds the table: keys of partitions at or
    /// above it are ignored (written by a cluster of another size).
    pub async fn start(etcd: &Etcd, partitions: u32) -> Result<Self> {
        let (table, revision) = list(etcd, partitions).await?;
        let (tx, rx) = watch::channel(Arc::new(table));
        let task = tokio::spawn(follow(etcd.clone(), partitions, revision, tx));
        Ok(Self { rx, task })
    }

    /// The table as it is now.
    pub fn current(&self) -> Arc<Table> {
        self.rx.borrow().clone()
    }

    /// A receiver that wakes on every change of the table (a key taken, released or
    /// expired), for a caller that acts on changes instead of polling.
    pub fn changes(&self) -> watch::Receiver<Arc<Table>> {
        self.rx.clone()
    }

    /// Waits up to `timeout_ms` for a table for which `pred` holds; returns it, or `None` on
    /// timeout.
    pub async fn wait_for(&mut self, timeout_ms: u64, mut pred: impl FnMut(&Table) -> bool) -> Option<Arc<Table>> {
        let wait = self.rx.wait_for(|t| pred(t));
        match tokio::time::timeout(Duration::from_millis(timeout_ms), wait).await {
            Ok(Ok(t)) => Some(t.clone()),
            _ => None,
        }
    }
}

impl Drop for PartitionTable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads every owner key; returns the table and the revision it was read at.
async fn list(etcd: &Etcd, partitions: u32) -> Result<(Table, i64)> {
    // One owner key per partition: the limit bounds the answer (one extra to notice junk).
    let options = GetOptions::new().with_prefix().with_limit(i64::from(partitions).saturating_add(1));
    let resp = etcd.get("list owners", OWNER_PREFIX, Some(options)).await?;
    let revision = resp
        .header()
        .map(|h| h.revision())
        .ok_or_else(|| ClusterError::Unavailable("list owners: no header".to_owned()))?;
    let mut table = Table::new();
    for kv in resp.kvs() {
        apply_put(&mut table, partitions, kv.key(), kv.value(), kv.create_revision());
    }
    Ok((table, revision))
}

fn apply_put(table: &mut Table, partitions: u32, key: &[u8], value: &[u8], token: i64) {
    let Some(p) = parse_owner_key(key).filter(|p| *p < partitions) else {
        tracing::warn!(key = %String::from_utf8_lossy(key), "ignoring a key under the owner prefix");
        return;
    };
    match decode_owner(value) {
        Ok(node) => {
            table.insert(p, Owner { node, token });
        }
        Err(reason) => tracing::warn!(partition = p, reason, "ignoring an owner value"),
    }
}

async fn follow(etcd: Etcd, partitions: u32, mut revision: i64, tx: watch::Sender<Arc<Table>>) {
    loop {
        if let Err(e) = watch_from(&etcd, partitions, revision, &tx).await {
            tracing::warn!(error = %e, "owner watch broke; listing again");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(REWATCH_PAUSE_MS)).await;
        // Whatever happened while the watch was down, a fresh list is the truth.
        match list(&etcd, partitions).await {
            Ok((table, rev)) => {
                revision = rev;
                tx.send_replace(Arc::new(table));
            }
            Err(e) => tracing::warn!(error = %e, "listing owners failed"),
        }
    }
}

/// Applies the watch's events after `revision` until the watch ends; returns why.
async fn watch_from(etcd: &Etcd, partitions: u32, revision: i64, tx: &watch::Sender<Arc<Table>>) -> Result<()> {
    let (member, client) = etcd.client();
    let mut client = client.watch_client();
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let opened = etcd
        .bounded("watch owners", client.watch(OWNER_PREFIX, Some(options)))
        .await
        .and_then(|r| r.map_err(|e| unavailable("watch owners", e)));
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => {
            etcd.demote(member);
            return Err(e);
        }
    };
    loop {
        let msg = match stream.message().await {
            Ok(m) => m,
            Err(e) => {
                etcd.demote(member);
                return Err(unavailable("watch owners", e));
            }
        };
        let Some(resp) = msg else {
            return Err(ClusterError::Unavailable("owner watch closed".to_owned()));
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err(ClusterError::Unavailable(format!(
                "owner watch cancelled: {} (compacted at {})",
                resp.cancel_reason(),
                resp.compact_revision()
            )));
        }
        if resp.events().is_empty() {
            continue;
        }
        let mut table = Table::clone(&tx.borrow());
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => apply_put(&mut table, partitions, kv.key(), kv.value(), kv.create_revision()),
                EventType::Delete => {
                    if let Some(p) = parse_owner_key(kv.key()) {
                        table.remove(&p);
                    }
                }
            }
        }
        if tx.send(Arc::new(table)).is_err() {
            return Ok(()); // nobody reads the table any more
        }
    }
}
