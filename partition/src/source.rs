//! A partition's log in etcd as the relay reads it (`surge_relay::LogSource`), so the relay's
//! drivers and sinks run unchanged on the partition's owner: the LSN is the batch's seq
//! (dense, from 1), an etcd batch is one relay record whose events are those of every group
//! in it, and event ids carry the partition. Checkpoints are etcd keys
//! (`surge_cluster::checkpoint`), so the next owner's relay goes on where this one stopped.
//!
//! [`ReaderPositions`] is the partition's retention: the committer deletes the batches a
//! snapshot covers only up to the lowest stored position of the partition's readers.
//!
//! The relay's drivers and the gateway worker are threads of their own, some inside a
//! current-thread runtime of their own; this source runs each etcd call as a task on the
//! node's runtime and blocks the calling thread until it ends (`on_node`), which works from
//! any thread but one of the node runtime's own workers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use surge_cluster::{checkpoint, Etcd, Follower, LogReader};
use surge_core::Shard;
use surge_relay::batch::{Batch, BatchLimits, ReadError};
use surge_relay::{LogCursor, LogSource, SinkError};
use tokio::runtime::Handle;

use crate::rebuild::entry_events;

/// The stored positions of the readers a partition's batches wait for before a snapshot's
/// truncation may delete them. A reader named at creation holds everything back (position 0)
/// until it stores a position.
#[derive(Debug, Default)]
pub struct ReaderPositions {
    positions: Mutex<BTreeMap<String, u64>>,
}

impl ReaderPositions {
    pub fn new<'a>(readers: impl IntoIterator<Item = &'a str>) -> Arc<ReaderPositions> {
        let positions = readers.into_iter().map(|r| (r.to_owned(), 0)).collect();
        Arc::new(ReaderPositions { positions: Mutex::new(positions) })
    }

    fn set(&self, reader: &str, seq: u64) {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        positions.insert(reader.to_owned(), seq);
    }

    /// Every batch up to this seq has reached every reader (`u64::MAX` with no readers).
    pub fn floor(&self) -> u64 {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        positions.values().copied().min().unwrap_or(u64::MAX)
    }
}

pub struct PartitionSource {
    etcd: Etcd,
    partition: u32,
    runtime: Handle,
    readers: Arc<ReaderPositions>,
}

impl PartitionSource {
    /// The log of `partition`; etcd calls run on `runtime`; stored positions also go to
    /// `readers` (the partition's retention).
    pub fn new(etcd: &Etcd, partition: u32, runtime: Handle, readers: Arc<ReaderPositions>) -> PartitionSource {
        PartitionSource { etcd: etcd.clone(), partition, runtime, readers }
    }
}

impl std::fmt::Debug for PartitionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionSource").field("partition", &self.partition).finish_non_exhaustive()
    }
}

impl LogSource for PartitionSource {
    fn load_checkpoint(&self, reader: &str) -> Result<Option<u64>, String> {
        let (etcd, partition, reader) = (self.etcd.clone(), self.partition, reader.to_owned());
        let loaded = on_node(&self.runtime, async move { checkpoint::load(&etcd, partition, &reader).await })?;
        loaded.map_err(|e| e.to_string())
    }

    fn store_checkpoint(&self, reader: &str, seq: u64) -> Result<(), String> {
        let (etcd, partition, name) = (self.etcd.clone(), self.partition, reader.to_owned());
        let stored = on_node(&self.runtime, async move { checkpoint::store(&etcd, partition, &name, seq).await })?;
        stored.map_err(|e| e.to_string())?;
        self.readers.set(reader, seq);
        Ok(())
    }

    fn open(&self, from: u64) -> Result<Box<dyn LogCursor>, String> {
        if from == 0 {
            return Err("a partition's log starts at seq 1".to_owned());
        }
        let reader = LogReader::new(&self.etcd, self.partition);
        // The log's end now: what a reader starting here finds already written (the gateway
        // worker treats those records as read before, with look-ups first).
        let end = reader.clone();
        let last = on_node(&self.runtime, async move { end.last_seq().await })?.map_err(|e| e.to_string())?;
        Ok(Box::new(PartitionCursor {
            partition: self.partition,
            runtime: self.runtime.clone(),
            follower: Some(reader.follow(from)),
            durable: last.unwrap_or(0).max(from - 1),
        }))
    }

    /// The newest snapshot in etcd: the partition's one shard and the seq it covers.
    fn snapshot(&self) -> Result<Option<(u64, Vec<Shard>)>, SinkError> {
        let reader = LogReader::new(&self.etcd, self.partition);
        let read = on_node(&self.runtime, async move { reader.get_snapshot().await }).map_err(SinkError::Transient)?;
        let Some(snapshot) = read.map_err(|e| SinkError::Transient(e.to_string()))? else { return Ok(None) };
        let shard = Shard::restore(&snapshot.bytes).map_err(|e| {
            let p = self.partition;
            SinkError::Fatal(format!(
                "partition {p}: the snapshot covering seq {} does not decode: {e}",
                snapshot.covers_seq
            ))
        })?;
        Ok(Some((snapshot.covers_seq, vec![shard])))
    }
}

struct PartitionCursor {
    partition: u32,
    runtime: Handle,
    /// Taken while a read runs on the node's runtime.
    follower: Option<Follower>,
    /// The newest seq known to be in the log.
    durable: u64,
}

impl LogCursor for PartitionCursor {
    /// One page of the log (etcd's `read_page_batches` at most, whatever `events_max` says:
    /// a page cannot be handed back in part).
    fn read_batch(&mut self, limits: BatchLimits) -> Result<Batch, ReadError> {
        let mut follower = self.follower.take().ok_or_else(|| ReadError::Source("an earlier read was lost".into()))?;
        let expected = follower.next_seq();
        let wait_ms = limits.wait_ms;
        let (follower, page) = on_node(&self.runtime, async move {
            let page = follower.next(wait_ms).await;
            (follower, page)
        })
        .map_err(ReadError::Source)?;
        let expected_next = follower.next_seq();
        self.follower = Some(follower);
        let page = page.map_err(|e| ReadError::Source(e.to_string()))?;
        let mut batch = Batch::default();
        let mut seq = expected;
        for entry in &page.entries {
            if entry.seq != seq {
                return Err(if seq == expected {
                    // A snapshot's truncation went past this reader.
                    ReadError::Removed { lsn: expected, oldest_lsn: entry.seq }
                } else {
                    ReadError::Source(format!("partition {}: batch {seq} is missing", self.partition))
                });
            }
            let events = entry_events(entry).map_err(|reason| ReadError::Record { lsn: entry.seq, reason })?;
            batch.push_record(Some(self.partition), entry.seq, events);
            seq += 1;
        }
        debug_assert_eq!(seq, expected_next, "a page's batches are consecutive");
        // More after this page: at least one batch beyond it.
        self.durable = self.durable.max(seq - 1 + u64::from(page.more));
        Ok(batch)
    }

    fn durable_lsn(&self) -> u64 {
        self.durable
    }
}

/// Runs `task` on the node's runtime and waits for it on this thread: from a plain thread,
/// or from inside another (current-thread) runtime, where `Handle::block_on` would panic.
/// Blocks the calling thread for one etcd call, as the local log's checkpoint fsync does.
fn on_node<T: Send + 'static>(
    runtime: &Handle,
    task: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(task.await);
    });
    rx.recv().map_err(|_| "the node's runtime is shutting down".to_owned())
}
