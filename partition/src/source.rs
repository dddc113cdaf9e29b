//! A partition's log in etcd as the relay reads it (`surge_relay::LogSource`), so the relay's
//! drivers and sinks run unchanged on the partition's owner: the LSN is the batch's seq
//! (dense, from 1), an etcd batch is one relay record whose events are those of every group
//! in it, and event ids carry the partition. Checkpoints are etcd keys
//! (`surge_cluster::checkpoint`), so the next owner's relay goes on where this one stopped.
//!
//! [`ReaderPositions`] is the partition's retention: the committer deletes the batches a
//! snapshot covers only up to the lowest stored position of the partition's readers.
//!
//! The relay's drivers are threads of their own; they call this source outside any tokio
//! runtime, and it runs each etcd call on the node's runtime (`Handle::block_on`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use surge_cluster::{checkpoint, Etcd, Follower, LogReader};
use surge_core::image;
use surge_relay::batch::{Batch, BatchLimits, ReadError};
use surge_relay::{LogCursor, LogSource};
use tokio::runtime::Handle;

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
        let loaded = self.runtime.block_on(checkpoint::load(&self.etcd, self.partition, reader));
        loaded.map_err(|e| e.to_string())
    }

    fn store_checkpoint(&self, reader: &str, seq: u64) -> Result<(), String> {
        self.runtime.block_on(checkpoint::store(&self.etcd, self.partition, reader, seq)).map_err(|e| e.to_string())?;
        self.readers.set(reader, seq);
        Ok(())
    }

    fn open(&self, from: u64) -> Result<Box<dyn LogCursor>, String> {
        if from == 0 {
            return Err("a partition's log starts at seq 1".to_owned());
        }
        let follower = LogReader::new(&self.etcd, self.partition).follow(from);
        Ok(Box::new(PartitionCursor {
            partition: self.partition,
            runtime: self.runtime.clone(),
            follower,
            durable: from - 1,
        }))
    }
}

struct PartitionCursor {
    partition: u32,
    runtime: Handle,
    follower: Follower,
    /// The newest seq known to be in the log.
    durable: u64,
}

impl LogCursor for PartitionCursor {
    /// One page of the log (etcd's `read_page_batches` at most, whatever `events_max` says:
    /// a page cannot be handed back in part).
    fn read_batch(&mut self, limits: BatchLimits) -> Result<Batch, ReadError> {
        let expected = self.follower.next_seq();
        let page =
            self.runtime.block_on(self.follower.next(limits.wait_ms)).map_err(|e| ReadError::Source(e.to_string()))?;
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
            let mut events = Vec::new();
            for record in &entry.batch.records {
                let decoded = image::record_events(image::EVENTS_RECORD_TYPE, record)
                    .map_err(|reason| ReadError::Record { lsn: entry.seq, reason })?;
                events.extend(decoded);
            }
            batch.push_record(Some(self.partition), entry.seq, events);
            seq += 1;
        }
        debug_assert_eq!(seq, self.follower.next_seq(), "a page's batches are consecutive");
        // More after this page: at least one batch beyond it.
        self.durable = self.durable.max(seq - 1 + u64::from(page.more));
        Ok(batch)
    }

    fn durable_lsn(&self) -> u64 {
        self.durable
    }
}
