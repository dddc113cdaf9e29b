//! Several shards and the merchant -> shard mapping. The API server keeps each shard behind
//! a lock of its own and runs a request on whichever tokio worker received it (see the
//! `surge-api` engine host); this type is the lock-free, single-threaded form for tests,
//! benches and tools.

use crate::command::Request;
use crate::error::CoreError;
use crate::event::Event;
use crate::ids::UnixMs;
use crate::shard::{Outcome, Shard};

/// FNV-1a, 64 bit: stable across runs, builds and platforms, unlike std's hasher. Merchant
/// ids are few and chosen by the admin, so a non-keyed hash is fine here.
pub fn shard_of(merchant: &str, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in merchant.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shard_count as u64) as usize
}

#[derive(Clone, Debug)]
pub struct Engine {
    pub shards: Vec<Shard>,
}

impl Engine {
    pub fn new(shard_count: usize) -> Self {
        assert!(shard_count > 0);
        Engine { shards: (0..shard_count).map(|_| Shard::new()).collect() }
    }

    pub fn shard_index(&self, merchant: &str) -> usize {
        shard_of(merchant, self.shards.len())
    }

    pub fn shard_for(&self, merchant: &str) -> &Shard {
        &self.shards[self.shard_index(merchant)]
    }

    pub fn execute(&mut self, request: &Request, now: UnixMs) -> Result<(usize, Outcome), CoreError> {
        let i = self.shard_index(&request.merchant);
        Ok((i, self.shards[i].execute(request, now)?))
    }

    /// Ticks every shard; the events per shard index.
    pub fn tick(&mut self, now: UnixMs) -> Vec<(usize, Vec<Event>)> {
        self.shards.iter_mut().enumerate().map(|(i, s)| (i, s.tick(now))).filter(|(_, e)| !e.is_empty()).collect()
    }

    pub fn mark_all_durable(&mut self) {
        for shard in &mut self.shards {
            let applied = shard.applied_events();
            shard.mark_durable(applied);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shard_of_is_stable() {
        // Pinned: changing the hash would move merchants between shards of existing logs.
        assert_eq!(super::shard_of("m-1", 8), super::shard_of("m-1", 8));
        assert_eq!(super::shard_of("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as usize);
    }
}
