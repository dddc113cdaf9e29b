//! Cluster mode's shard side: a partition is one shard whose log is in etcd
//! (`surge_cluster`). Single-node mode does not use this crate, and `surge serve` does not
//! depend on it yet: building it needs `protoc` (for etcd's client), which the single-node
//! build must not.
//!
//! - `committer`: a partition's group commit. Groups of records (one per request, a
//!   batch's records as one group) queue up while the previous append is in flight, and
//!   go out together as ONE token-guarded etcd txn; each group's answer is released only
//!   once that txn is committed on a majority of etcd's members. The first failure ends
//!   the committer: the shard's memory may then hold changes the log does not, so the
//!   partition is rebuilt from etcd (as a failed local log makes every shard stale).
//! - `rebuild`: a partition's shard rebuilt from etcd, its newest snapshot and then every
//!   batch after it, through the same `image::apply_events` the local log's replay uses,
//!   so a new owner holds exactly what the old one acknowledged.
//! - `assignment`: which partitions a node takes, its fair share over the live nodes.
//! - `standby`: a partition owned elsewhere, rebuilt once and then kept current by
//!   following its log, so a takeover reads only the tail; it never answers.
//!
//! Records in an etcd batch are the events of one request, encoded as the local log's
//! `RECORD_EVENTS` payloads are (`encoding::encode_events`); a snapshot is
//! `Shard::snapshot`'s bytes.

pub mod assignment;
mod committer;
mod rebuild;
mod source;
mod standby;

pub use self::committer::{CommitError, Committed, Committer, CommitterConfig};
pub use self::rebuild::{entry_events, rebuild, RebuildError, Rebuilt};
pub use self::source::{PartitionSource, ReaderPositions};
pub use self::standby::Standby;
