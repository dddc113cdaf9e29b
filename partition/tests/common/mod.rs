//! What the etcd tests of this crate share.

use std::time::{SystemTime, UNIX_EPOCH};

use surge_core::sim::World;

/// A partition number no earlier run used (etcd keeps its data between runs): `base` plus
/// the time in seconds, times a hundred, plus `salt`. Each test file has its own `base`,
/// and the cluster crate's tests use numbers below 4,000,000,000.
pub fn fresh_partition(base: u32, salt: u32) -> u32 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    base + ((ms % 100_000_000) as u32 / 1_000) * 100 + salt
}

/// Shard 0's event batches (one record per applied request) of the random command sequence
/// that `len` bytes of a fixed xorshift stream from `seed` give: the same every run.
pub fn sim_records(seed: u64, len: usize, batches_min: usize) -> Vec<Vec<u8>> {
    let mut x = seed;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let batches = World::run(&bytes).logged_batches(0).to_vec();
    assert!(batches.len() >= batches_min, "the sequence applies enough requests on shard 0: {}", batches.len());
    batches
}
