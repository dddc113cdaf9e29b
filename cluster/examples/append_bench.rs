//! Option C's costs through this crate (gRPC, as a node would pay them), against the etcd at
//! the endpoints given: append latency and throughput per payload size and number of
//! partitions appending at once (one append in flight each), a catch-up read, and a
//! takeover (lease expiry after the owner stops renewing, then the new owner's open and
//! catch-up). Run by `benches/cluster_primitives.sh` (part `etcd-log`).
//!
//!     append_bench ENDPOINTS [SIZES] [PARTITIONS] [SECONDS]
//!     e.g. append_bench 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 4096,65536 1,4 3

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use surge_cluster::{acquire, Etcd, EtcdConfig, LogReader, NodeInfo, PartitionLog};

/// Bounds each cell's loop whatever the latency.
const APPENDS_MAX: usize = 20_000;
const TTL_S: i64 = 2;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn node(i: usize) -> NodeInfo {
    NodeInfo { node_id: format!("bench-{i}"), address: "127.0.0.1:1".to_owned() }
}

fn list(arg: Option<String>, default: &str) -> Vec<usize> {
    arg.unwrap_or_else(|| default.to_owned()).split(',').filter_map(|x| x.parse().ok()).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoints: Vec<String> = args
        .next()
        .ok_or("usage: append_bench ENDPOINTS [SIZES] [PARTITIONS] [SECONDS]")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let sizes = list(args.next(), "4096,65536,524288");
    let concurrencies = list(args.next(), "1,4,16");
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let etcd = Etcd::connect(EtcdConfig::new(endpoints)).await?;
    // Partition numbers no earlier run used.
    let base = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as u32 % 100_000 * 1000;
    let mut next_partition = base;

    for &size in &sizes {
        let payload = vec![0x5au8; size];
        for &k in &concurrencies {
            let stop_at = Instant::now() + Duration::from_secs_f64(seconds);
            let mut tasks = Vec::new();
            for i in 0..k {
                let (etcd, payload) = (etcd.clone(), payload.clone());
                let p = next_partition;
                next_partition += 1;
                tasks.push(tokio::spawn(async move {
                    let owned = acquire(&etcd, p, &node(i), 30).await?.ok_or("partition taken")?;
                    let mut log = PartitionLog::open(&etcd, &owned).await?;
                    let mut t = Vec::new();
                    while Instant::now() < stop_at && t.len() < APPENDS_MAX {
                        let a = Instant::now();
                        log.append(&[&payload]).await?;
                        t.push(a.elapsed());
                    }
                    owned.release().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>((p, t))
                }));
            }
            let started = Instant::now();
            let mut all = Vec::new();
            let mut parts = Vec::new();
            for task in tasks {
                let (p, t) = task.await?.map_err(|e| e.to_string())?;
                parts.push(p);
                all.extend(t);
            }
            let elapsed = started.elapsed().as_secs_f64();
            all.sort();
            let n = all.len();
            println!(
                "grpc log append {:4} KiB x {:2} partitions: n={n:<6} p50 {:.2} ms  p99 {:.2} ms  {:7.1} commits/s  {:6.1} MiB/s",
                size / 1024,
                k,
                pct(&all, 50.0),
                pct(&all, 99.0),
                n as f64 / elapsed,
                (n * size) as f64 / elapsed / 1048576.0
            );
            if k == *concurrencies.last().unwrap_or(&1) {
                // Catch-up: read one partition's log from the start, in pages.
                let reader = LogReader::new(&etcd, parts[0]);
                let a = Instant::now();
                let (mut seq, mut batches, mut bytes) = (0, 0usize, 0usize);
                for _ in 0..1_000_000 {
                    let page = reader.read_from(seq).await?;
                    batches += page.entries.len();
                    bytes +=
                        page.entries.iter().map(|e| e.batch.records.iter().map(Vec::len).sum::<usize>()).sum::<usize>();
                    seq = page.next_seq;
                    if !page.more {
                        break;
                    }
                }
                let s = a.elapsed().as_secs_f64();
                println!(
                    "grpc catch-up read {:4} KiB batches: {batches} batches, {:.1} MiB in {s:.3} s: {:.1} MiB/s",
                    size / 1024,
                    bytes as f64 / 1048576.0,
                    bytes as f64 / 1048576.0 / s
                );
            }
        }
    }

    // Takeover: the owner stops renewing (a SIGSTOP or a cut-off owner); another node polls
    // to take the partition, opens the log and reads it to the end.
    for round in 1..=3 {
        let p = next_partition;
        next_partition += 1;
        let old = acquire(&etcd, p, &node(0), TTL_S).await?.ok_or("partition taken")?;
        let mut log = PartitionLog::open(&etcd, &old).await?;
        let payload = vec![1u8; 4096];
        for _ in 0..200 {
            log.append(&[&payload]).await?;
        }
        let stopped = Instant::now();
        old.stop_keep_alive();
        let mut polls = 0;
        let new = loop {
            if let Some(o) = acquire(&etcd, p, &node(1), TTL_S).await? {
                break o;
            }
            polls += 1;
            if polls > 1_000 {
                return Err("the lease never expired".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let taken = stopped.elapsed();
        let reader = LogReader::new(&etcd, p);
        let mut seq = 0;
        for _ in 0..1_000 {
            let page = reader.read_from(seq).await?;
            seq = page.next_seq;
            if !page.more {
                break;
            }
        }
        let mut new_log = PartitionLog::open(&etcd, &new).await?;
        new_log.append(&[b"first of the new owner"]).await?;
        let fenced = log.append(&[b"late"]).await.is_err();
        println!(
            "grpc takeover round {round}: key taken {:.3} s after the owner stopped renewing (TTL {TTL_S} s); \
             catch-up of 200 x 4 KiB and the first append done at {:.3} s; the old owner's append refused: {fenced}",
            taken.as_secs_f64(),
            stopped.elapsed().as_secs_f64()
        );
        new.release().await?;
    }
    Ok(())
}
