//! The `core/mix` workload for instruction counts, which stay put on a shared machine where
//! times move by a third:
//!
//! `valgrind --tool=callgrind --toggle-collect='*measured*' target/release/examples/mix [ITERATIONS]`
//!
//! counts only `measured`: ITERATIONS (default 20,000) mix iterations of 4 commands each
//! after as many unmeasured ones, the requests built beforehand (as `core/mix` builds them
//! outside its timing). Divide the total by 4 × ITERATIONS for instructions per command.

use mimalloc::MiMalloc;
use std::hint::black_box;
use surge_benches::{mix_requests, mix_step, setup, T0_MS};
use surge_core::{Request, Shard};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[inline(never)]
fn warm_up(shard: &mut Shard, requests: &[(Request, Request)], now_ms: &mut u64) {
    run(shard, requests, now_ms);
}

#[inline(never)]
fn measured(shard: &mut Shard, requests: &[(Request, Request)], now_ms: &mut u64) {
    run(shard, requests, now_ms);
}

fn run(shard: &mut Shard, requests: &[(Request, Request)], now_ms: &mut u64) {
    for (order, hold) in requests {
        *now_ms += 1;
        black_box(mix_step(shard, order, hold, *now_ms));
    }
}

fn main() {
    let iterations: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let mut shard = setup();
    let mut now_ms = T0_MS;
    let warm: Vec<_> = (0..iterations).map(mix_requests).collect();
    let timed: Vec<_> = (iterations..2 * iterations).map(mix_requests).collect();
    warm_up(&mut shard, &warm, &mut now_ms);
    measured(&mut shard, &timed, &mut now_ms);
    black_box(&shard);
}
