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
//! - Memory: before the timed groups, the bench creates paid orders on a fresh shard and
//!   prints allocated bytes per order line, with and without the idempotency record, from a
//!   counting global allocator (exact: no sampling, no RSS noise).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use surge_benches::{points_order, request, setup, setup_commands, CUSTOMERS, ITEMS, T0_MS};
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

fn hold(i: usize) -> Command {
    Command::CreateHold {
        customer: format!("c-{}", i % CUSTOMERS),
        lines: vec![LineSpec { sku: format!("sku-{}", (i * 13) % ITEMS), qty: 1 }],
        ttl_s: Some(300),
        queue_token: None,
    }
}

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
                    (request(points_order(i), Some(format!("order-{i}"))), request(hold(i), None))
                })
                .collect();
            let started = Instant::now();
            for (order, hold) in &requests {
                now_ms += 1;
                // A refused command would time the error path: every step must apply.
                let placed = applied(shard.execute(order, now_ms));
                let hold_id = match shard.execute(hold, now_ms) {
                    Ok(Outcome::Applied { reply: surge_core::Reply::Hold(h), .. }) => h.id.to_string(),
                    other => panic!("hold: {other:?}"),
                };
                let released = applied(shard.execute(&request(Command::ReleaseHold { hold: hold_id }, None), now_ms));
                let ticked = shard.tick(now_ms);
                // Everything is durable at once: in-flight checks stay off the timed path.
                let applied = shard.applied_events();
                shard.mark_durable(applied);
                black_box((placed, released, ticked));
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

fn applied(outcome: Result<Outcome, surge_core::CoreError>) -> Outcome {
    match outcome {
        Ok(applied @ Outcome::Applied { .. }) => applied,
        other => panic!("expected an applied command: {other:?}"),
    }
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

fn config() -> Criterion {
    report_memory();
    Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = bench_mix }
criterion_main!(benches);
