//! surge-core on one thread: commands per second for a realistic mix, and memory per live
//! order line.
//!
//! Run: `cargo bench -p surge-benches --bench core`
//!
//! - `core/mix`: one iteration is 4 commands through `Shard::execute` / `tick`, as the
//!   server runs them: a 2-line order paid with points (with an idempotency key, as the
//!   contract requires), a hold, its release, and a tick. Reported per command.
//! - `core/mix_decide_apply`: the same mix through `decide` + `apply` + `decide_tick` only:
//!   the state machine without the reply view and idempotency record `execute` adds.
//! - `core/decide_only`: the same order decided but not applied, as the floor the mix is
//!   compared with (what validation alone costs).
//! - `core/replay`: recovery without a snapshot — decode every batch of a logged session
//!   (setup + 20,000 mix iterations, 281,001 events) and apply it to an empty shard.
//!   Throughput is in events.
//! - Snapshots: before the timed groups, the bench grows one merchant to
//!   `SNAPSHOT_ORDERS` (200,000) keyed orders, then five times executes 10,000 more and
//!   encodes the frozen shard both ways — in full (`image::encode_snapshot_into`) and with
//!   the snapshot thread's `SnapshotCache` (only chunks changed since the previous snapshot
//!   encoded) — and prints the median time of each per order executed between snapshots.
//! - Memory: before the timed groups, the bench creates paid orders on a fresh shard and
//!   prints allocated bytes per order line, with and without the idempotency record, from a
//!   counting global allocator (exact: no sampling, no RSS noise).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use surge_benches::{hold, mix_requests, mix_step, points_order, request, setup, setup_commands, T0_MS};
use surge_core::command::*;
use surge_core::{Outcome, Shard};

struct Counting;

static ALLOCATED_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Counting is on only while memory is measured, so the timed groups pay one relaxed load.
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATED_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Requests are built before timing (parsing them is the API layer's cost, not core's);
/// results are dropped inside the timed loop, as the server drops them after logging.
fn bench_mix(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(4));
    group.bench_function("mix", |b| {
        let mut shard = setup();
        let mut i = 0usize;
        let mut now_ms = T0_MS;
        b.iter_custom(|iters| {
            let requests: Vec<_> = (0..iters)
                .map(|_| {
                    i += 1;
                    mix_requests(i)
                })
                .collect();
            let started = Instant::now();
            for (order, hold) in &requests {
                now_ms += 1;
                black_box(mix_step(&mut shard, order, hold, now_ms));
            }
            started.elapsed()
        });
    });
    // The state machine alone: decide + apply + tick, no reply view, no idempotency record.
    group.bench_function("mix_decide_apply", |b| {
        let mut shard = setup();
        let mut i = 0usize;
        let mut now_ms = T0_MS;
        b.iter_custom(|iters| {
            let requests: Vec<_> = (0..iters)
                .map(|_| {
                    i += 1;
                    (request(points_order(i), None), request(hold(i), None))
                })
                .collect();
            let started = Instant::now();
            for (order, hold) in &requests {
                now_ms += 1;
                decide_apply(&mut shard, order, now_ms);
                let held = decide_apply(&mut shard, hold, now_ms);
                let hold_id = match held {
                    surge_core::Target::Hold(n) => surge_core::ids::HoldId(n).to_string(),
                    other => panic!("hold: {other:?}"),
                };
                decide_apply(&mut shard, &request(Command::ReleaseHold { hold: hold_id }, None), now_ms);
                for event in shard.decide_tick(now_ms) {
                    apply(&mut shard, &event);
                }
            }
            started.elapsed()
        });
    });
    // The log of a session: setup plus 20,000 mix iterations, as encoded batches.
    let (batches, events) = logged_session(20_000);
    group.throughput(Throughput::Elements(events));
    group.bench_function("replay", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let mut shard = Shard::new();
                for bytes in &batches {
                    match surge_core::encoding::decode_events(bytes) {
                        Ok(decoded) => decoded.iter().for_each(|event| apply(&mut shard, event)),
                        Err(e) => panic!("{e}"),
                    }
                }
                black_box(&shard);
            }
            started.elapsed()
        });
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("decide_only", |b| {
        let shard = setup();
        let mut i = 0usize;
        b.iter_custom(|iters| {
            let requests: Vec<_> = (0..iters)
                .map(|_| {
                    i += 1;
                    request(points_order(i), None)
                })
                .collect();
            let started = Instant::now();
            for order in &requests {
                match shard.decide(order, T0_MS) {
                    Ok(decided) => black_box(decided),
                    Err(e) => panic!("{e}"),
                };
            }
            started.elapsed()
        });
    });
    group.finish();
}

/// Runs setup and `iterations` of the mix through `execute`, returning every applied
/// batch encoded as the log would hold it, and the number of events.
fn logged_session(iterations: usize) -> (Vec<Vec<u8>>, u64) {
    let mut shard = Shard::new();
    let mut batches = Vec::new();
    let mut log = |outcome: Result<Outcome, surge_core::CoreError>| match outcome {
        Ok(Outcome::Applied { events, reply }) => {
            batches.push(surge_core::encoding::encode_events(&events));
            reply
        }
        other => panic!("{other:?}"),
    };
    for command in setup_commands() {
        log(shard.execute(&request(command, None), T0_MS));
    }
    for i in 0..iterations {
        let now_ms = T0_MS + i as u64;
        log(shard.execute(&request(points_order(i), Some(format!("order-{i}"))), now_ms));
        let hold_id = match log(shard.execute(&request(hold(i), None), now_ms)) {
            surge_core::Reply::Hold(h) => h.id.to_string(),
            other => panic!("{other:?}"),
        };
        log(shard.execute(&request(Command::ReleaseHold { hold: hold_id }, None), now_ms));
    }
    let events = shard.applied_events();
    (batches, events)
}

fn apply(shard: &mut Shard, event: &surge_core::Event) {
    if let Err(e) = shard.apply(event) {
        panic!("{e}");
    }
}

fn decide_apply(shard: &mut Shard, request: &Request, now_ms: u64) -> surge_core::Target {
    match shard.decide(request, now_ms) {
        Ok(decided) => {
            for event in &decided.events {
                apply(shard, event);
            }
            decided.target
        }
        Err(e) => panic!("{e}"),
    }
}

/// Allocated bytes per live order line, for paid 2-line orders: orders, lines, payments,
/// with and without their idempotency records.
fn report_memory() {
    const ORDERS: usize = 200_000;
    for keyed in [false, true] {
        let mut shard = setup();
        COUNTING.store(true, Ordering::Relaxed);
        let before = ALLOCATED_BYTES.load(Ordering::Relaxed);
        for i in 0..ORDERS {
            let key = keyed.then(|| format!("order-{i}"));
            if let Err(e) = shard.execute(&request(points_order(i), key), T0_MS + i as u64) {
                panic!("order {i}: {e}");
            }
        }
        let after = ALLOCATED_BYTES.load(Ordering::Relaxed);
        COUNTING.store(false, Ordering::Relaxed);
        let lines = 2 * ORDERS;
        let per_line = (after - before) as f64 / lines as f64;
        println!(
            "memory: {per_line:.1} bytes per live order line ({ORDERS} paid 2-line orders, idempotency records {})",
            if keyed { "kept" } else { "none" }
        );
        black_box(&shard);
    }
}

/// What a snapshot costs per order executed since the previous one, encoded in full and
/// with the snapshot thread's cache (see the module doc). Printed, not timed by criterion:
/// each round changes the state.
fn report_snapshot() {
    const BETWEEN: usize = 10_000;
    const ROUNDS: usize = 5;
    let orders: usize = std::env::var("SNAPSHOT_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let mut shard = setup();
    let mut i = 0;
    let order = |shard: &mut Shard, i: &mut usize| {
        if let Err(e) = shard.execute(&request(points_order(*i), Some(format!("order-{i}"))), T0_MS + *i as u64) {
            panic!("order {i}: {e}");
        }
        *i += 1;
        let applied = shard.applied_events();
        shard.mark_durable(applied);
    };
    while i < orders {
        order(&mut shard, &mut i);
    }
    let mut cache = surge_core::encoding::SnapshotCache::new();
    let (mut full, mut cached) = (Vec::new(), Vec::new());
    surge_core::image::encode_snapshot_cached(&[shard.freeze()], &mut cache, &mut cached);
    let (mut full_ns, mut cached_ns, mut reused, mut encoded) = (Vec::new(), Vec::new(), 0, 0);
    for round in 0..ROUNDS {
        for _ in 0..BETWEEN {
            order(&mut shard, &mut i);
        }
        let frozen = [shard.freeze()];
        // Alternating which goes first, so neither always finds the state in cache.
        for first in [round % 2 == 0, round % 2 == 1] {
            let started = Instant::now();
            if first {
                surge_core::image::encode_snapshot_into(&frozen, &mut full);
                full_ns.push(started.elapsed().as_nanos() as f64);
            } else {
                surge_core::image::encode_snapshot_cached(&frozen, &mut cache, &mut cached);
                cached_ns.push(started.elapsed().as_nanos() as f64);
            }
        }
        assert!(full == cached, "the cached snapshot differs from the full one");
        (reused, encoded) = (cache.reused_bytes(), cache.encoded_bytes());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (full_ns, cached_ns) = (median(&mut full_ns), median(&mut cached_ns));
    println!(
        "snapshot: {} bytes at {i} keyed orders; per order between snapshots ({BETWEEN}): full {:.3} µs, cached {:.3} µs \
         (median of {ROUNDS}; last: {reused} bytes reused, {encoded} encoded)",
        full.len(),
        full_ns / 1e3 / BETWEEN as f64,
        cached_ns / 1e3 / BETWEEN as f64,
    );
    black_box(&shard);
}

fn config() -> Criterion {
    report_memory();
    report_snapshot();
    Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = bench_mix }
criterion_main!(benches);
