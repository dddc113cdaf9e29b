//! The etcd the tests talk to: the three members `scripts/etcd.sh` starts on loopback (or
//! `SURGE_ETCD_ENDPOINTS`). Without one, a test fails when `CI` is set (CI must run them) and
//! is skipped with a message elsewhere.

#![allow(dead_code, unused_imports)] // each test binary uses a part

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use surge_cluster::{Etcd, NodeInfo};

pub fn script() -> String {
    format!("{}/../scripts/etcd.sh", env!("CARGO_MANIFEST_DIR"))
}

pub use surge_cluster::test_support::{config, endpoints, etcd, etcd_with};

/// A partition number no other test and no earlier run used (the etcd data is kept between
/// runs): a per-process base from the clock plus a counter.
pub fn fresh_partition() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| (d.as_secs() % 400_000) as u32 * 10_000).unwrap_or(0);
    base + NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn node(name: &str) -> NodeInfo {
    NodeInfo { node_id: name.to_owned(), address: format!("127.0.0.1:{}", 9000 + name.len()) }
}

/// Runs `scripts/etcd.sh` with `args`; panics with its output when it fails.
pub fn run_script(args: &[&str]) {
    let out = Command::new("bash").arg(script()).args(args).output().expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/etcd.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh partition taken by `name` (lease TTL `ttl_s`) and its log opened for writing.
pub async fn owned_log(
    etcd: &Etcd,
    name: &str,
    ttl_s: i64,
) -> (u32, surge_cluster::Owned, surge_cluster::PartitionLog) {
    let p = fresh_partition();
    let owned =
        surge_cluster::acquire(etcd, p, &node(name), ttl_s).await.expect("acquire").expect("a fresh partition is free");
    let log = surge_cluster::PartitionLog::open(etcd, &owned).await.expect("open");
    (p, owned, log)
}
