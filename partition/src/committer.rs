//! A partition's group commit to etcd: one task owns the `PartitionLog` (one append in
//! flight per partition, so sequence numbers are dense and in order), takes every group
//! queued while the previous append was in flight, and appends them as one batch. A
//! snapshot queued between groups ends a batch and is stored once the groups before it
//! are appended, so it covers exactly their batches; the batches it covers are deleted,
//! up to the lowest position of the partition's readers (the relay's sinks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use surge_cluster::codec::batch_encoded_len;
use surge_cluster::{ClusterError, EtcdConfig, PartitionLog};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::source::ReaderPositions;

/// What a group's submitter learns once its batch is settled.
pub type Committed = Box<dyn FnOnce(Result<u64, CommitError>) + Send>;

/// Why a group is not acknowledged. Nothing here says the group is absent from the log
/// (an indeterminate append may have landed): a client's retry with its idempotency key,
/// answered by the partition rebuilt from etcd, finds out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Another node owns the partition now: this node never writes to it again.
    #[error("partition {partition}: fenced, another node owns it")]
    Fenced { partition: u32 },
    /// The append failed (etcd unreachable, outcome unknown, refused).
    #[error("partition {partition}: append failed: {reason}")]
    Failed { partition: u32, reason: String },
    /// An earlier append of this partition failed: the shard may hold changes the log
    /// does not, and must be rebuilt from etcd before anything else is appended.
    #[error("partition {partition}: an earlier append failed, the partition must be rebuilt")]
    Stopped { partition: u32 },
    /// The queue is full (more groups waiting than the host's permits allow).
    #[error("partition {partition}: {queued} groups already queued")]
    Full { partition: u32, queued: usize },
    /// One group is over the batch bounds on its own.
    #[error("partition {partition}: a group of {records} records, {bytes} bytes is over the batch bounds")]
    TooLarge { partition: u32, records: usize, bytes: usize },
}

pub struct CommitterConfig {
    /// Groups waiting at most (the host's per-shard permits keep it from filling).
    pub queue_groups_max: usize,
    /// Records and bytes of one append at most (etcd's request limit bounds the bytes).
    pub batch_records_max: usize,
    pub batch_bytes_max: usize,
    /// The partition's readers: a snapshot deletes only the batches every one of them has
    /// (none: every batch it covers).
    pub readers: Option<Arc<ReaderPositions>>,
}

impl CommitterConfig {
    /// The batch bounds of the etcd client `etcd`, with `queue_groups_max` groups waiting
    /// at most.
    pub fn new(etcd: &EtcdConfig, queue_groups_max: usize) -> CommitterConfig {
        CommitterConfig {
            queue_groups_max,
            batch_records_max: etcd.batch_records_max,
            batch_bytes_max: etcd.batch_bytes_max,
            readers: None,
        }
    }
}

struct Group {
    records: Vec<Vec<u8>>,
    done: Committed,
}

/// What the queue holds, in the order the shard produced it.
enum Item {
    Group(Group),
    /// The shard's state after every group queued before it.
    Snapshot {
        bytes: Vec<u8>,
        done: Committed,
    },
}

impl Item {
    /// Answers the item without running it (the committer stopped before it).
    fn refuse(self, error: CommitError) {
        match self {
            Item::Group(Group { done, .. }) | Item::Snapshot { done, .. } => done(Err(error)),
        }
    }
}

/// The submitting side; the task ends once every handle is dropped or an append failed.
pub struct Committer {
    partition: u32,
    queue: mpsc::Sender<Item>,
    stopped: Arc<AtomicBool>,
    task: JoinHandle<PartitionLog>,
    config_batch: (usize, usize),
    queue_groups_max: usize,
}

/// Bytes a group adds to a batch: its records and their length prefixes (a record's
/// prefix measured from the batch encoding itself, so the two cannot disagree).
fn group_bytes(records: &[Vec<u8>]) -> usize {
    let record_prefix = batch_encoded_len(&[&[]]) - batch_encoded_len(&[]);
    records.iter().map(|r| record_prefix + r.len()).sum()
}

/// The encoded size of a batch whose groups add `bytes` (`group_bytes` summed).
fn batch_bytes(bytes: usize) -> usize {
    batch_encoded_len(&[]) + bytes
}

impl Committer {
    /// Starts the partition's commit task on the current tokio runtime.
    pub fn start(log: PartitionLog, config: CommitterConfig) -> Committer {
        assert!(config.queue_groups_max > 0 && config.batch_records_max > 0 && config.batch_bytes_max > 0);
        let partition = log.partition();
        let (queue, rx) = mpsc::channel(config.queue_groups_max);
        let stopped = Arc::new(AtomicBool::new(false));
        let bounds = (config.batch_records_max, config.batch_bytes_max);
        let task = tokio::spawn(run(log, rx, stopped.clone(), bounds, config.readers));
        Committer {
            partition,
            queue,
            stopped,
            task,
            config_batch: (config.batch_records_max, config.batch_bytes_max),
            queue_groups_max: config.queue_groups_max,
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// False once an append failed: the partition must be rebuilt before it serves again.
    pub fn is_running(&self) -> bool {
        !self.stopped.load(Ordering::Acquire)
    }

    /// Queues one group without waiting (the host calls it under the shard's lock, so
    /// queue order is apply order); `done` gets the batch's sequence number once etcd
    /// committed it, or why not. An error here means `done` was not queued.
    pub fn submit(&self, records: Vec<Vec<u8>>, done: Committed) -> Result<(), CommitError> {
        let partition = self.partition;
        let (records_max, bytes_max) = self.config_batch;
        let bytes = group_bytes(&records);
        if records.is_empty() || records.len() > records_max || batch_bytes(bytes) > bytes_max {
            return Err(CommitError::TooLarge { partition, records: records.len(), bytes });
        }
        self.enqueue(Item::Group(Group { records, done }))
    }

    /// Queues a snapshot of the shard's state after every group submitted before it (the
    /// host encodes it under the shard's lock, or from a frozen copy, and queues it before
    /// any later group). Once the batches before it are appended, it is stored as covering
    /// the last of them, and the batches it covers are deleted; `done` gets that seq. A
    /// snapshot or deletion that fails leaves a readable partition (the manifest switches
    /// in one txn, and batches are deleted only once a snapshot covers them), so only
    /// `Fenced` stops the committer.
    pub fn snapshot(&self, bytes: Vec<u8>, done: Committed) -> Result<(), CommitError> {
        self.enqueue(Item::Snapshot { bytes, done })
    }

    fn enqueue(&self, item: Item) -> Result<(), CommitError> {
        let partition = self.partition;
        if self.stopped.load(Ordering::Acquire) {
            return Err(CommitError::Stopped { partition });
        }
        self.queue.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommitError::Full { partition, queued: self.queue_groups_max },
            mpsc::error::TrySendError::Closed(_) => CommitError::Stopped { partition },
        })
    }

    /// Waits for every queued group's verdict and gives the log back (to snapshot, say).
    pub async fn close(self) -> Option<PartitionLog> {
        drop(self.queue);
        self.task.await.ok()
    }
}

/// Why the loop stopped: every item still queued is answered with `Stopped`.
struct Stop;

/// Marks the committer stopped before anyone hears why: a submitter that got a failed
/// verdict must find `is_running` false and its next submit refused.
fn stop(stopped: &AtomicBool) -> Stop {
    stopped.store(true, Ordering::Release);
    Stop
}

/// The commit loop: one append per round, of every group queued (within the bounds) up to
/// the next snapshot; a snapshot once the groups before it are appended.
async fn run(
    mut log: PartitionLog,
    mut rx: mpsc::Receiver<Item>,
    stopped: Arc<AtomicBool>,
    (records_max, bytes_max): (usize, usize),
    readers: Option<Arc<ReaderPositions>>,
) -> PartitionLog {
    let partition = log.partition();
    let mut groups: Vec<Group> = Vec::new();
    // An item that did not fit the previous batch (or a snapshot, which ends a batch) goes next.
    let mut carried: Option<Item> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return log, // every handle dropped
            },
        };
        let outcome = match first {
            Item::Snapshot { bytes, done } => {
                let floor = readers.as_ref().map_or(u64::MAX, |r| r.floor());
                store_snapshot(&mut log, &bytes, floor, done, &stopped).await
            }
            Item::Group(first) => {
                carried = gather(&mut rx, first, &mut groups, records_max, bytes_max);
                append(&mut log, &mut groups, &stopped).await
            }
        };
        if let Err(Stop) = outcome {
            // Everything queued was applied on top of what failed: none of it can be
            // acknowledged now, and the shard must be rebuilt from etcd.
            debug_assert!(stopped.load(Ordering::Acquire));
            rx.close();
            let later = carried.take().into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok()));
            for item in later {
                item.refuse(CommitError::Stopped { partition });
            }
            return log;
        }
    }
}

/// Fills `groups` from `first` and what is queued, within the batch's records and bytes
/// (each group fits alone: `submit`). Returns the item that ends the batch, if one does.
fn gather(
    rx: &mut mpsc::Receiver<Item>,
    first: Group,
    groups: &mut Vec<Group>,
    records_max: usize,
    bytes_max: usize,
) -> Option<Item> {
    debug_assert!(groups.is_empty());
    let (mut records, mut bytes) = (first.records.len(), group_bytes(&first.records));
    groups.push(first);
    // Bounded by the batch's bounds and by the queue's.
    while let Ok(item) = rx.try_recv() {
        let Item::Group(g) = item else { return Some(item) };
        let (r, b) = (g.records.len(), group_bytes(&g.records));
        if records + r > records_max || batch_bytes(bytes + b) > bytes_max {
            return Some(Item::Group(g));
        }
        records += r;
        bytes += b;
        groups.push(g);
    }
    None
}

/// Appends `groups` as one batch and answers each; on failure answers them with it.
async fn append(log: &mut PartitionLog, groups: &mut Vec<Group>, stopped: &AtomicBool) -> Result<(), Stop> {
    let partition = log.partition();
    let refs: Vec<&[u8]> = groups.iter().flat_map(|g| g.records.iter().map(Vec::as_slice)).collect();
    debug_assert_eq!(
        batch_encoded_len(&refs),
        batch_bytes(groups.iter().map(|g| group_bytes(&g.records)).sum()),
        "a batch's size is what the gathering counted"
    );
    let seq_before = log.next_seq();
    let result = log.append(&refs).await;
    drop(refs);
    match result {
        Ok(seq) => {
            assert_eq!(seq, seq_before, "partition {partition}: sequence numbers are dense and in order");
            for g in groups.drain(..) {
                (g.done)(Ok(seq));
            }
            Ok(())
        }
        Err(e) => {
            let error = match e {
                ClusterError::Fenced { .. } => CommitError::Fenced { partition },
                other => CommitError::Failed { partition, reason: other.to_string() },
            };
            tracing::error!(partition, "partition append failed, the partition stops until rebuilt: {error}");
            let stopping = stop(stopped);
            for g in groups.drain(..) {
                (g.done)(Err(error.clone()));
            }
            Err(stopping)
        }
    }
}

/// Stores a snapshot covering every batch appended so far, then deletes those batches up to
/// `readers_floor` (the lowest reader's position: a batch a reader still needs stays).
async fn store_snapshot(
    log: &mut PartitionLog,
    bytes: &[u8],
    readers_floor: u64,
    done: Committed,
    stopped: &AtomicBool,
) -> Result<(), Stop> {
    let partition = log.partition();
    let Some(covers_seq) = log.next_seq().checked_sub(1).filter(|&s| s > 0) else {
        // Nothing appended yet: the empty state needs no snapshot.
        done(Ok(0));
        return Ok(());
    };
    let stored = match log.put_snapshot(covers_seq, bytes).await {
        Ok(()) => log.truncate_before(covers_seq.min(readers_floor) + 1).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(()) => {
            done(Ok(covers_seq));
            Ok(())
        }
        Err(ClusterError::Fenced { .. }) => {
            let stopping = stop(stopped);
            done(Err(CommitError::Fenced { partition }));
            Err(stopping)
        }
        Err(other) => {
            tracing::warn!(partition, covers_seq, "snapshot not stored, the previous one stands: {other}");
            done(Err(CommitError::Failed { partition, reason: other.to_string() }));
            Ok(())
        }
    }
}
