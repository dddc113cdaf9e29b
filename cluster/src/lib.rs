//! surge's cluster layer on etcd: partition ownership with fencing tokens, and each
//! partition's log of opaque records (group commits) with snapshots, all stored in a
//! three-member (or larger) etcd. It knows nothing about orders: it moves bytes.
//!
//! - [`ownership`]: take a free partition under a lease; its token is the owner key's create
//!   revision; keep-alive, loss detection, release.
//! - [`membership`]: the live nodes, each holding its key under a lease.
//! - [`table`]: the partition table (partition -> node, address, token), watched.
//! - [`log`]: append a batch as one txn guarded by the token, read back in pages or follow
//!   as it grows, snapshots in chunks, truncation after a snapshot.
//! - [`checkpoint`]: how far each reader of a partition's log (a relay sink) has come.
//!
//! The design and its measurements are in `docs/cluster.md` (Option C).

pub mod checkpoint;
pub mod client;
pub mod codec;
pub mod error;
pub mod keys;
pub mod log;
pub mod membership;
pub mod ownership;
pub mod table;
pub mod test_support;

pub use client::{Etcd, EtcdConfig};
pub use codec::{Batch, NodeInfo};
pub use error::{ClusterError, Result};
pub use log::{Follower, LogReader, Page, PartitionLog, Snapshot};
pub use membership::{agreed, join, members, partition_count, Member};
pub use ownership::{acquire, LeaseState, Leased, Owned};
pub use table::{Owner, PartitionTable, Table};
