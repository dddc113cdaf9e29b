//! The etcd the tests talk to: the three members `scripts/etcd.sh` starts on loopback (or
//! `SURGE_ETCD_ENDPOINTS`). Without one, a test fails when `CI` is set (CI must run them) and
//! is skipped with a message elsewhere.

#![allow(dead_code)] // each test binary uses a part

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use surge_cluster::{Etcd, EtcdConfig, NodeInfo};

pub fn script() -> String {
    format!("{}/../scripts/etcd.sh", env!("CARGO_MANIFEST_DIR"))
}

pub fn endpoints() -> Vec<String> {
    let list = std::env::var("SURGE_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:22379,127.0.0.1:22479,127.0.0.1:22579".to_owned());
    list.split(',').map(str::to_owned).collect()
}

pub fn config() -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints());
    c.request_timeout_ms = 3_000;
    c
}

/// Connects and checks that etcd answers; `None` (skip) only outside CI.
pub async fn etcd() -> Option<Etcd> {
    etcd_with(config()).await
}

pub async fn etcd_with(config: EtcdConfig) -> Option<Etcd> {
    let endpoints = config.endpoints.join(",");
    let answered = match Etcd::connect(config).await {
        Ok(etcd) => match surge_cluster::log::current_revision(&etcd).await {
            Ok(_) => Ok(etcd),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    match answered {
        Ok(etcd) => Some(etcd),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("etcd at {endpoints} does not answer ({e}); CI must start it with scripts/etcd.sh")
        }
        Err(e) => {
            eprintln!("SKIPPED: etcd at {endpoints} does not answer ({e}); run scripts/etcd.sh");
            None
        }
    }
}

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
