//! A hot standby of a partition owned elsewhere: rebuilt once, then kept current by
//! following the partition's log as it grows, so that taking the partition over costs only
//! the tail appended since the last page (and the lease's expiry), not a full rebuild.
//!
//! A standby never answers from its shard: until it owns the partition (and has read the
//! log up to the end under its own token) its state may lag the owner's acknowledgements.

use surge_cluster::{Follower, LogReader};
use surge_core::Shard;

use crate::rebuild::{apply_entry, rebuild, LearnedKey, RebuildError, Rebuilt};

pub struct Standby {
    partition: u32,
    shard: Shard,
    follower: Follower,
    batches_applied: u64,
    /// API keys the batches applied since the last `take_learned_keys` gave merchants.
    learned_keys: Vec<LearnedKey>,
}

impl Standby {
    /// Rebuilds the partition from what etcd holds now and follows it from there.
    pub async fn start(reader: LogReader, partition: u32) -> Result<Standby, RebuildError> {
        let Rebuilt { shard, next_seq, batches_applied } = rebuild(&reader, partition).await?;
        let follower = reader.follow(next_seq);
        Ok(Standby { partition, shard, follower, batches_applied, learned_keys: Vec::new() })
    }

    /// The seq of the next batch the standby expects.
    pub fn next_seq(&self) -> u64 {
        self.follower.next_seq()
    }

    /// The partition's state as far as the standby has read (never answered from: see above).
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// Batches applied since the snapshot it started from.
    pub fn batches_applied(&self) -> u64 {
        self.batches_applied
    }

    /// The API keys merchants got (created, or rotated) in the batches applied since the
    /// last call: what a node learns without walking every merchant after each page.
    pub fn take_learned_keys(&mut self) -> Vec<LearnedKey> {
        std::mem::take(&mut self.learned_keys)
    }

    /// Applies the next page of the log, waiting up to `wait_ms` for one when there is
    /// nothing new. Returns how many batches it applied (0: nothing appended meanwhile) and
    /// whether the log may hold more after them. A `Gap` means the log was truncated past
    /// this standby (it fell behind the newest snapshot): start a new one.
    pub async fn poll(&mut self, wait_ms: u64) -> Result<(u64, bool), RebuildError> {
        let partition = self.partition;
        let expected = self.follower.next_seq();
        let page = self.follower.next(wait_ms).await.map_err(|source| RebuildError::Read { partition, source })?;
        let mut seq = expected;
        for entry in &page.entries {
            apply_entry(&mut self.shard, partition, seq, entry, Some(&mut self.learned_keys))?;
            seq += 1;
        }
        debug_assert_eq!(seq, self.follower.next_seq());
        let applied = page.entries.len() as u64;
        self.batches_applied += applied;
        Ok((applied, page.more))
    }

    /// Reads the log to its end: for a new owner, after taking the partition (its token now
    /// fences the old owner, so the end does not move). Bounded by the log's length: every
    /// round applies at least one batch or ends.
    pub async fn catch_up(mut self) -> Result<Rebuilt, RebuildError> {
        loop {
            let (applied, more) = self.poll(0).await?;
            if applied == 0 && !more {
                break;
            }
            if applied == 0 {
                return Err(RebuildError::Stalled { partition: self.partition, seq: self.next_seq() });
            }
        }
        let applied = self.shard.applied_events();
        self.shard.mark_durable(applied);
        Ok(Rebuilt { shard: self.shard, next_seq: self.follower.next_seq(), batches_applied: self.batches_applied })
    }
}
