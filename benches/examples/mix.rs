//! The `core/mix` workload for instruction counts, which stay put on a shared machine where
//! times move by a third:
//!
//! `valgrind --tool=callgrind --toggle-collect='*mix_step*' target/release/examples/mix [ITERATIONS]`
//!
//! counts only `mix_step`: ITERATIONS (default 10,000) mix iterations of 4 commands each on
//! the bench's set-up, the requests built beforehand (as `core/mix` builds them outside its
//! timing). Divide the total by 4 × ITERATIONS for instructions per command.

use mimalloc::MiMalloc;
use std::hint::black_box;
use surge_benches::{mix_requests, mix_step, setup, T0_MS};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let iterations: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let mut shard = setup();
    let requests: Vec<_> = (0..iterations).map(mix_requests).collect();
    let mut now_ms = T0_MS;
    for (order, hold) in &requests {
        now_ms += 1;
        black_box(mix_step(&mut shard, order, hold, now_ms));
    }
    black_box(&shard);
}
