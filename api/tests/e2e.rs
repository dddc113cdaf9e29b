//! End to end: the real `surge` binary on a socket, killed with SIGKILL mid-traffic and
//! restarted on the same data directory. Every acknowledged order must be there.

mod process;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::{http, Surge};

const ORDER: &str = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points"}}"#;

#[test]
fn kill_9_loses_nothing_acknowledged() {
    kill_9_mid_traffic(&[], |_| true);
}

/// The same with a snapshot every few records: shards are frozen and snapshots written while
/// orders flow, the kill may land in the middle of one, and recovery starts from the newest.
#[test]
fn kill_9_while_snapshots_are_taken_loses_nothing_acknowledged() {
    let dir = kill_9_mid_traffic(&[("SURGE_SNAPSHOT_EVERY", "50")], |data| snapshot_count(&data.join("wal")) > 0);
    let wal = dir.path().join("wal");
    assert!(snapshot_count(&wal) > 0, "snapshots were written during the run");
    // The newest snapshot plus the log after it pass every invariant.
    let out = Command::new(env!("CARGO_BIN_EXE_surge")).args(["wal", "verify"]).arg(&wal).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && report.contains("verify: OK"), "{report}");
}

fn snapshot_count(wal: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(wal) else { return 0 };
    entries.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snap"))).count()
}

/// Stock and points for more orders than the 4 threads can send before the kill.
const STOCK: u64 = 1_000_000;
const POINTS: u64 = 100 * STOCK;

/// Orders from 4 threads, SIGKILL in the middle, restart: every acknowledged order is there
/// and stock, points and ledger add up. The kill comes after at least 400 ms of traffic and
/// once `ready(data_dir)` holds (polled, at most 20 s: on a busy machine a fixed delay could
/// kill before what the test is about has happened). Returns the data directory (the server
/// is stopped).
fn kill_9_mid_traffic(env: &[(&str, &str)], ready: impl Fn(&std::path::Path) -> bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (surge, token) = Surge::start_with(dir.path(), env);
    let admin = format!("Bearer {}", token.expect("an admin token is printed at first start"));
    let addr = surge.addr;
    let auth = process::create_merchant(addr, &admin, "m-1");
    let a = [("Authorization", auth.as_str())];
    assert_eq!(
        http(addr, "PUT", "/v1/items/tee", &a, Some(&format!(r#"{{"name":"Tee","price":100,"stock":{STOCK}}}"#)))
            .unwrap()
            .0,
        201
    );
    let credit = [("Authorization", auth.as_str()), ("Idempotency-Key", "credit-1")];
    let r = http(
        addr,
        "POST",
        "/v1/customers/c-1/points/credit",
        &credit,
        Some(&format!(r#"{{"amount":{POINTS},"reason":"x"}}"#)),
    );
    assert_eq!(r.unwrap().0, 200);

    // Traffic from 4 threads; kill -9 in the middle of it.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, auth) = (acked.clone(), stop.clone(), auth.clone());
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w{w}-{i}");
                    let h = [("Authorization", auth.as_str()), ("Idempotency-Key", key.as_str())];
                    match http(addr, "POST", "/v1/orders", &h, Some(ORDER)) {
                        Some((201, body)) => acked.lock().unwrap().push(body["id"].as_str().unwrap().to_string()),
                        Some((status, body)) => panic!("unexpected {status}: {body}"),
                        None => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let waited = std::time::Instant::now();
    while !ready(dir.path()) {
        assert!(waited.elapsed() < Duration::from_secs(20), "the condition for the kill never held");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(surge); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "some orders were acknowledged before the kill");
    eprintln!("{} orders acknowledged before SIGKILL", acked.len());

    let (surge, token) = Surge::start_with(dir.path(), env);
    assert!(token.is_none(), "the admin token is printed only at first start");
    let addr = surge.addr;
    let a = [("Authorization", auth.as_str())];
    for id in &acked {
        let (status, o) = http(addr, "GET", &format!("/v1/orders/{id}"), &a, None).unwrap();
        assert_eq!(status, 200, "acknowledged order {id} is missing");
        assert_eq!(o["status"], "paid");
    }
    let (_, item) = http(addr, "GET", "/v1/items/tee", &a, None).unwrap();
    let sold = item["sold"].as_u64().unwrap();
    assert!(sold >= acked.len() as u64);
    assert_eq!(item["available"].as_u64().unwrap() + item["held"].as_u64().unwrap() + sold, STOCK);
    let (_, points) = http(addr, "GET", "/v1/customers/c-1/points", &a, None).unwrap();
    assert_eq!(points["balance"].as_u64().unwrap(), POINTS - 100 * sold);
    let (_, tb) = http(addr, "GET", "/v1/ledger/trial-balance", &a, None).unwrap();
    assert_eq!(tb["balanced"], true);
    // The persisted admin token still works.
    let (status, _) = http(
        addr,
        "POST",
        "/v1/merchants",
        &[("Authorization", &admin)],
        Some(r#"{"id":"m-2","name":"Two","currency":"KRW"}"#),
    )
    .unwrap();
    assert_eq!(status, 201);
    drop(surge);
    dir
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut surge, _) = Surge::start(dir.path());
    let status = Command::new("kill").arg("-TERM").arg(surge.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = surge.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "surge did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
