//! A partition's log as the relay reads it, against the real etcd of `scripts/etcd.sh`:
//! every acknowledged group's events in order under partition-qualified ids, checkpoints
//! in etcd, and a snapshot that deletes only the batches every reader has. Without etcd
//! the tests fail when `CI` is set and are skipped with a message elsewhere.

mod common;

use std::sync::Arc;

use surge_cluster::test_support::etcd;
use surge_cluster::{acquire, Etcd, LogReader, NodeInfo, PartitionLog};
use surge_core::image;
use surge_core::Shard;
use surge_partition::{Committer, CommitterConfig, PartitionSource, ReaderPositions};
use surge_relay::batch::{BatchLimits, ReadError};
use surge_relay::LogSource;
use tokio::sync::oneshot;

/// A partition number no earlier run used; `tests/etcd.rs` uses 4,000,000,000 and up.
fn fresh_partition(salt: u32) -> u32 {
    common::fresh_partition(4_100_000_000, salt)
}

/// Shard 0's event batches of a fixed random command sequence.
fn records() -> Vec<Vec<u8>> {
    common::sim_records(0x2545_F491_4F6C_DD1D, 8_000, 20)
}

fn events_of(records: &[Vec<u8>]) -> Vec<surge_core::Event> {
    records
        .iter()
        .flat_map(|r| image::record_events(image::EVENTS_RECORD_TYPE, r).expect("a logged batch decodes"))
        .collect()
}

/// Commits each record as its own group, waiting for each (one batch per group).
async fn commit_each(committer: &Committer, records: &[Vec<u8>]) -> Vec<u64> {
    let mut seqs = Vec::new();
    for r in records {
        let (tx, rx) = oneshot::channel();
        committer.submit(vec![r.clone()], Box::new(move |v| drop(tx.send(v)))).expect("submit");
        seqs.push(rx.await.expect("a verdict").expect("acknowledged"));
    }
    seqs
}

async fn snapshot(committer: &Committer, shard: &Shard) -> u64 {
    let (tx, rx) = oneshot::channel();
    committer.snapshot(shard.snapshot(), Box::new(move |v| drop(tx.send(v)))).expect("queue the snapshot");
    rx.await.expect("a verdict").expect("snapshot stored")
}

async fn owner(etcd: &Etcd, partition: u32) -> (surge_cluster::Owned, PartitionLog) {
    let me = NodeInfo { node_id: "a".to_owned(), address: "127.0.0.1:1".to_owned() };
    let owned = acquire(etcd, partition, &me, 5).await.expect("acquire").expect("the partition is free");
    let log = PartitionLog::open(etcd, &owned).await.expect("open");
    (owned, log)
}

/// Runs `f` on a thread outside the runtime, as the relay's drivers call a source.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the blocking call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reads_every_group_in_order_and_its_checkpoint_survives_the_owner() {
    let Some(etcd) = etcd().await else { return };
    let records = records();
    let partition = fresh_partition(1);
    let (_owned, log) = owner(&etcd, partition).await;
    let committer = Committer::start(log, CommitterConfig::new(etcd.config(), 64));
    let seqs = commit_each(&committer, &records).await;
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>(), "one batch per group, dense from 1");

    let readers = ReaderPositions::new(["kafka"]);
    let source = Arc::new(PartitionSource::new(&etcd, partition, tokio::runtime::Handle::current(), readers.clone()));
    let (batches, checkpoint) = off_runtime({
        let source = source.clone();
        move || {
            assert_eq!(source.load_checkpoint("kafka").expect("load"), None, "no position yet");
            let mut cursor = source.open(1).expect("open");
            let mut batches = Vec::new();
            // Bounded: every read returns a page of the log or an empty batch at its end.
            loop {
                let batch = cursor.read_batch(BatchLimits { events_max: 10_000, wait_ms: 0 }).expect("read");
                if batch.is_empty() {
                    break;
                }
                batches.push(batch);
            }
            let last = batches.last().map(|b| b.last_lsn).unwrap_or(0);
            source.store_checkpoint("kafka", last).expect("store");
            (batches, source.load_checkpoint("kafka").expect("load"))
        }
    })
    .await;
    assert_eq!(checkpoint, Some(records.len() as u64), "the stored position reads back");
    assert_eq!(readers.floor(), records.len() as u64, "the stored position is the partition's retention");
    let lsns: Vec<u64> = batches.iter().flat_map(|b| b.first_lsn..=b.last_lsn).collect();
    assert_eq!(lsns, seqs, "every batch once, in order, its seq as the LSN");
    let read: Vec<_> = batches.iter().flat_map(|b| b.events.iter()).collect();
    let expected = events_of(&records);
    assert_eq!(read.len(), expected.len());
    for (got, want) in read.iter().zip(&expected) {
        assert_eq!(&got.event, want);
        assert_eq!(got.partition, Some(partition));
        let id = got.event_id();
        assert!(id.starts_with(&format!("{partition:04x}-{:016x}-", got.lsn)), "{id}");
    }

    // A reader of the next owner (another source on the same etcd) starts where this one stopped.
    let next = PartitionSource::new(&etcd, partition, tokio::runtime::Handle::current(), ReaderPositions::new([]));
    let loaded = off_runtime(move || next.load_checkpoint("kafka").expect("load")).await;
    assert_eq!(loaded, Some(records.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_deletes_only_the_batches_every_reader_has() {
    let Some(etcd) = etcd().await else { return };
    let records = records();
    let partition = fresh_partition(2);
    let (_owned, log) = owner(&etcd, partition).await;
    let readers = ReaderPositions::new(["kafka"]);
    let mut config = CommitterConfig::new(etcd.config(), 64);
    config.readers = Some(readers.clone());
    let committer = Committer::start(log, config);
    let mut shard = Shard::new();
    for r in &records {
        let events = image::record_events(image::EVENTS_RECORD_TYPE, r).expect("decode");
        image::apply_events(std::slice::from_mut(&mut shard), &events).expect("apply");
    }
    let seqs = commit_each(&committer, &records).await;
    let last = *seqs.last().expect("some batches");
    let oldest = |etcd: Etcd| async move {
        let page = LogReader::new(&etcd, partition).read_from(1).await.expect("read");
        page.entries.first().map(|e| e.seq)
    };

    // The reader registered at 0: the snapshot deletes nothing.
    assert_eq!(snapshot(&committer, &shard).await, last);
    assert_eq!(oldest(etcd.clone()).await, Some(1), "a batch the reader has not read stays");
    // The cold store's view of it: the state after every batch up to the seq it covers.
    let source = PartitionSource::new(&etcd, partition, tokio::runtime::Handle::current(), readers.clone());
    let stored = off_runtime(move || source.snapshot().expect("read the snapshot")).await;
    let (covers, shards) = stored.expect("a snapshot");
    assert_eq!(covers, last);
    assert_eq!(shards.iter().map(Shard::digest).collect::<Vec<_>>(), vec![shard.digest()]);

    // The reader has read up to 5: the next snapshot deletes 1..=5 and keeps the rest.
    let source = PartitionSource::new(&etcd, partition, tokio::runtime::Handle::current(), readers.clone());
    off_runtime(move || source.store_checkpoint("kafka", 5).expect("store")).await;
    assert_eq!(snapshot(&committer, &shard).await, last);
    assert_eq!(oldest(etcd.clone()).await, Some(6), "only what every reader has is deleted");

    // A reader behind the deleted batches learns where the log now starts.
    let source = PartitionSource::new(&etcd, partition, tokio::runtime::Handle::current(), ReaderPositions::new([]));
    let read = off_runtime(move || {
        let mut cursor = source.open(2).expect("open");
        cursor.read_batch(BatchLimits { events_max: 10, wait_ms: 0 }).map(|b| b.first_lsn)
    })
    .await;
    assert!(matches!(read, Err(ReadError::Removed { lsn: 2, oldest_lsn: 6 })), "{read:?}");
}
