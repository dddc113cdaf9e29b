//! Cluster mode's side of the engine host: what a shard needs from a replicated log, and
//! what a partition is to this node.
//!
//! In cluster mode the engine has one shard per partition. A partition this node owns
//! appends its groups to a [`ReplicatedLog`] (etcd, through the `partition` crate, which
//! this crate does not depend on: the binary's `cluster` feature wires it in). A partition
//! owned elsewhere holds no state here and answers every request with
//! [`StorageError::NotOwner`], which the HTTP layer forwards to the owner.
//!
//! The rules of the local log hold unchanged: per partition, log order is apply order
//! (groups are submitted under the shard's lock) and no answer leaves before the group it
//! waits for is acknowledged. A replicated log acknowledges groups in submission order, so
//! a counter of submitted groups serves as the partition's LSN.
//!
//! [`StorageError::NotOwner`]: super::StorageError::NotOwner

use std::sync::Arc;

/// What a submitter learns once its group (or snapshot) is settled: `Ok` once replicated,
/// or why not (the group may still be in the log: a retry with its idempotency key, answered
/// by the partition rebuilt from the log, finds out).
pub type Verdict = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A partition's replicated log, as the shard that owns it uses it.
pub trait ReplicatedLog: Send + Sync {
    /// Queues one group without waiting (called under the shard's lock). Verdicts come in
    /// submission order. An error means `done` was not queued and will not be called.
    fn submit(&self, records: Vec<Vec<u8>>, done: Verdict) -> Result<(), String>;
    /// Queues a snapshot of the shard's state after every group submitted before it.
    fn snapshot(&self, bytes: Vec<u8>, done: Verdict) -> Result<(), String>;
}

/// Where a shard's changes go.
#[derive(Clone)]
pub(super) enum Backend {
    /// Single-node mode: the engine's write-ahead log.
    Local,
    /// Cluster mode, a partition this node owns.
    Replicated(Arc<dyn ReplicatedLog>),
    /// Cluster mode, a partition owned by another node or by none (it is moving).
    Elsewhere,
}
