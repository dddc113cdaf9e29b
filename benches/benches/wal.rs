//! surge-wal benches (criterion, real disk, tempdir on the same filesystem as /tmp).
//!
//! * `wal_group_commit`: records/s of 128-byte records with fsync, many appender threads.
//!   - `blocking/T`: T threads, each appends one record and waits for it (one request per
//!     thread at a time: the closed-loop worst case for group commit).
//!   - `pipelined/T`: T threads append with handles and wait only on every 256th (how a
//!     shard thread uses the log: it keeps applying while earlier records become durable).
//!   - `callbacks/2shards/C`: the API server's shape: 2 shard threads keep C requests in
//!     flight, each completion callback triggers that client's next append.
//! * `wal_append_latency`: one append + wait at low load, with zero-ahead (the default) and
//!   without (`zero_ahead_bytes: 0`, appends into fallocated blocks), beside a raw 4 KiB
//!   pwrite + fdatasync on a zero-filled file; p50/p99 of individually timed, interleaved
//!   samples are printed.
//! * `wal_replay`: open + iterate a log of 1,000,000 128-byte records (records/s).
//!
//! Run briefly: `cargo bench -p surge-benches --bench wal -- --warm-up-time 1 --measurement-time 3`

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use surge_wal::{Config, IoMode, Wal};

const RECORD_BYTES: usize = 128;

fn bench_dir() -> tempfile::TempDir {
    // Same filesystem as the real data directory would be (not tmpfs).
    tempfile::Builder::new()
        .prefix("surge-wal-bench")
        .tempdir_in(std::env::var("SURGE_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
        .expect("bench tempdir")
}

/// `SURGE_BENCH_IO=pwrite|uring` forces the I/O path (default: auto-detect).
fn config() -> Config {
    let io_mode = match std::env::var("SURGE_BENCH_IO").as_deref() {
        Ok("pwrite") => IoMode::Pwrite,
        Ok("uring") => IoMode::Uring,
        _ => IoMode::Auto,
    };
    Config { queue_depth_max: 1 << 20, batch_bytes_max: 8 << 20, io_mode, ..Config::default() }
}

/// Appends `total` records from `threads` threads; returns the elapsed time.
fn run_appenders(wal: &Arc<Wal>, threads: usize, total: u64, wait_every: u64) -> Duration {
    let per_thread = (total / threads as u64).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let payload = [t as u8; RECORD_BYTES];
                let mut last = None;
                for i in 0..per_thread {
                    let h = wal.append(1, &payload).expect("append");
                    if (i + 1) % wait_every == 0 {
                        h.wait().expect("durable");
                    }
                    last = Some(h);
                }
                if let Some(h) = last {
                    h.wait().expect("durable");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("appender thread");
    }
    start.elapsed()
}

/// Closed loop like the API server: `clients` concurrent requests spread over `shards`
/// shard threads; each request is one 128-byte record whose durability callback (run on
/// the writer thread) sends the client id back to its shard, which then appends that
/// client's next record. No thread blocks per record. Returns the elapsed time.
fn run_closed_loop(wal: &Arc<Wal>, shards: usize, clients: usize, total: u64) -> Duration {
    let per_shard = total / shards as u64;
    let clients_per_shard = clients / shards;
    let start = Instant::now();
    let handles: Vec<_> = (0..shards)
        .map(|s| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let (tx, rx) = std::sync::mpsc::channel::<usize>();
                let payload = [s as u8; RECORD_BYTES];
                let append = |client: usize| {
                    let tx = tx.clone();
                    wal.append_with(1, &payload, move |r| {
                        r.expect("durable");
                        let _ = tx.send(client);
                    })
                    .expect("append");
                };
                let mut issued = 0u64;
                for c in 0..clients_per_shard {
                    append(c);
                    issued += 1;
                }
                let mut done = 0u64;
                while done < issued {
                    let c = rx.recv().expect("completion");
                    done += 1;
                    if issued < per_shard {
                        append(c);
                        issued += 1;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("shard thread");
    }
    start.elapsed()
}

/// Keeps the bench from filling the disk: a snapshot lets retention drop old segments.
fn trim(wal: &Wal) {
    let d = wal.durable_lsn();
    if d > 0 {
        wal.write_snapshot(d, b"").expect("snapshot");
    }
}

fn group_commit(c: &mut Criterion) {
    let dir = bench_dir();
    let (wal, _) = Wal::open(dir.path(), config()).expect("open");
    eprintln!("wal: io_uring in use: {}", wal.uses_io_uring());
    let wal = Arc::new(wal);
    let mut g = c.benchmark_group("wal_group_commit");
    g.sample_size(10);
    for &(mode, threads, wait_every, per_sample) in &[
        ("blocking", 64usize, 1u64, 20_000u64),
        ("blocking", 256, 1, 40_000),
        ("pipelined", 64, 256, 400_000),
        ("pipelined", 256, 256, 400_000),
    ] {
        g.throughput(Throughput::Elements(per_sample));
        g.bench_function(format!("{mode}/{threads}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_appenders(&wal, threads, per_sample, wait_every);
                    trim(&wal);
                }
                total
            })
        });
    }
    for &(shards, clients, per_sample) in &[(2usize, 256usize, 200_000u64), (2, 1024, 400_000)] {
        g.throughput(Throughput::Elements(per_sample));
        g.bench_function(format!("callbacks/{shards}shards/{clients}clients"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_closed_loop(&wal, shards, clients, per_sample);
                    trim(&wal);
                }
                total
            })
        });
    }
    g.finish();
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (p(0.50), p(0.99))
}

fn latency(c: &mut Criterion) {
    let dir = bench_dir();
    let (wal, _) = Wal::open(dir.path().join("zero-ahead"), config()).expect("open");
    let no_zeros = Config { zero_ahead_bytes: 0, ..config() };
    let (wal_fallocated, _) = Wal::open(dir.path().join("fallocated"), no_zeros).expect("open");
    eprintln!("wal: io_uring in use: {}", wal.uses_io_uring());
    let payload = [7u8; RECORD_BYTES];
    let raw_path = dir.path().join("raw-baseline");
    let raw = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&raw_path).expect("raw file");
    raw.set_len(64 << 20).expect("size");
    raw.write_all_at(&vec![0u8; 64 << 20], 0).expect("fill");
    raw.sync_all().expect("sync");
    let block = [1u8; 4096];
    let mut raw_off = 0u64;
    let mut raw_write = move || {
        raw.write_all_at(&block, raw_off).expect("pwrite");
        raw.sync_data().expect("fdatasync");
        raw_off = (raw_off + 4096) % (64 << 20);
    };

    // Individually timed samples for p50/p99 (criterion reports means), interleaved so the
    // machine's noise falls on all three alike. 128 B: many appends share a block, so only
    // one in ~27 lands on a fresh one; 16 KiB: a commit the size of ~30 orders, fresh blocks
    // every time (where zero-ahead matters).
    let big = vec![9u8; 16 << 10];
    for (label, payload) in [("128B", &payload[..]), ("16KiB", &big[..])] {
        let n = 3000;
        let mut samples: [Vec<Duration>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
        for _ in 0..n {
            let t = Instant::now();
            wal.append(1, payload).expect("append").wait().expect("durable");
            samples[0].push(t.elapsed());
            let t = Instant::now();
            wal_fallocated.append(1, payload).expect("append").wait().expect("durable");
            samples[1].push(t.elapsed());
            let t = Instant::now();
            raw_write();
            samples[2].push(t.elapsed());
        }
        let names = ["wal append+wait (zero-ahead)", "wal append+wait (fallocated only)", "raw 4KiB pwrite+fdatasync"];
        for (name, s) in names.iter().zip(samples) {
            let (p50, p99) = percentiles(s);
            eprintln!(
                "wal_append_latency {label} (n={n}, interleaved): {name}: p50 {:.1} us p99 {:.1} us",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
        }
    }

    let mut g = c.benchmark_group("wal_append_latency");
    g.sample_size(50);
    g.bench_function("wal_append_wait_128B", |b| {
        b.iter(|| wal.append(1, &payload).expect("append").wait().expect("durable"))
    });
    g.bench_function("wal_append_wait_128B_fallocated_only", |b| {
        b.iter(|| wal_fallocated.append(1, &payload).expect("append").wait().expect("durable"))
    });
    g.bench_function("raw_pwrite_fdatasync_4KiB", |b| b.iter(&mut raw_write));
    g.finish();
}

fn build_replay_log(dir: &Path, records: u64) {
    let (wal, _) = Wal::open(dir, config()).expect("open");
    let wal = Arc::new(wal);
    run_appenders(&wal, 4, records, 4096);
    Arc::try_unwrap(wal).ok().expect("sole owner").close().expect("close");
}

fn replay(c: &mut Criterion) {
    let records = 1_000_000u64;
    let dir = bench_dir();
    let t = Instant::now();
    build_replay_log(dir.path(), records);
    eprintln!("wal_replay: built {records} records in {:?}", t.elapsed());
    let mut g = c.benchmark_group("wal_replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(records));
    g.bench_function("open_and_iterate_1M_x_128B", |b| {
        b.iter(|| {
            let (wal, rec) = Wal::open(dir.path(), config()).expect("open");
            let mut n = 0u64;
            let mut bytes = 0usize;
            for r in rec.records() {
                let r = r.expect("record");
                n += 1;
                bytes += r.payload.len();
            }
            assert_eq!(n, records);
            drop(rec);
            drop(wal);
            bytes
        })
    });
    g.finish();
}

criterion_group!(benches, group_commit, latency, replay);
criterion_main!(benches);
