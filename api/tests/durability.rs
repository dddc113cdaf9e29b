//! Recovery, snapshots and storage failure, through the router.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{dir_opener, engine_config, server, server_with, Client};
use serde_json::Value;
use surge_api::engine::{Engine, EngineConfig, ReplayError, StartError, WalOpener};
use surge_core::image::ImageError;
use surge_wal::sim::SimStorage;

const ORDER: &str = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points"}}"#;

async fn seed(c: &Client<'_>) {
    let r = c.put("/v1/items/tee", r#"{"name":"Tee","price":100,"stock":50}"#).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = c.post_key("/v1/customers/c-1/points/credit", "credit", r#"{"amount":10000,"reason":"x"}"#).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// One point to c-1: a small record each time.
async fn credit(c: &Client<'_>, key: &str) {
    let r = c.post_key("/v1/customers/c-1/points/credit", key, r#"{"amount":1,"reason":"x"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn stop(s: common::Server) {
    let engine = s.state.take_engine().unwrap();
    drop(s);
    let engine = Arc::try_unwrap(engine).ok().expect("no other engine handles");
    tokio::task::spawn_blocking(move || engine.shutdown()).await.unwrap();
}

#[tokio::test]
async fn restart_recovers_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    seed(&c).await;
    let mut orders = Vec::new();
    for i in 0..5 {
        let r = c.post_key("/v1/orders", &format!("o-{i}"), ORDER).await;
        assert_eq!(r.status, StatusCode::CREATED);
        orders.push(r.body);
    }
    drop(c);
    stop(s).await;

    // `surge wal verify` replays the log and checks every invariant.
    let report = surge_api::walcmd::run(dir.path(), true).unwrap();
    assert!(report.contains("order.created            5"), "{report}");
    assert!(report.contains("verify: OK"), "{report}");

    let s = server(dir.path());
    // The key survives (its hash is in the log), and so does everything else.
    let c = Client::new(&s, &key);
    for o in &orders {
        let r = c.get(&format!("/v1/orders/{}", o["id"].as_str().unwrap())).await;
        assert_eq!(r.body, *o);
    }
    let item = c.get("/v1/items/tee").await.body;
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(5), Some(45)));
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 9500);
    // Idempotency records survive restarts too.
    let r = c.post_key("/v1/orders", "o-0", ORDER).await;
    assert_eq!(r.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(r.body, orders[0]);
    assert_eq!(c.get("/v1/ledger/trial-balance").await.body["balanced"], true);
}

/// A snapshot is the shards frozen at one LSN and written once that LSN is durable: at that
/// LSN every shard's image equals the live shard's, byte for byte.
#[tokio::test]
async fn a_snapshot_is_the_live_state_at_its_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with(dir_opener(dir.path()), EngineConfig { snapshot_every_records: 5, ..engine_config(2) }, 0);
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    seed(&c).await;
    for i in 0..6 {
        assert_eq!(c.post_key("/v1/orders", &format!("o-{i}"), ORDER).await.status, StatusCode::CREATED);
    }
    // Nothing is written from here on: wait for a snapshot of the last durable LSN.
    let durable = snapshot_at_durable_lsn(&s).await;
    let recovery = surge_wal::Wal::open_read_only(dir.path().join("wal")).unwrap();
    let (lsn, bytes) = recovery.snapshot().expect("a snapshot");
    assert_eq!(lsn, durable);
    let images = surge_core::image::decode_snapshot(bytes, Some(2)).unwrap();
    let live = s.engine.read("m-1", |shard| shard.snapshot()).await.unwrap();
    let index = surge_core::shard_of("m-1", 2);
    assert!(images[index].snapshot() == live, "the snapshot image differs from the live shard");
    assert_eq!(images[1 - index].snapshot(), surge_core::Shard::new().snapshot());
}

#[tokio::test]
async fn snapshots_are_taken_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let config = || EngineConfig { snapshot_every_records: 3, ..engine_config(2) };
    let s = server_with(dir_opener(dir.path()), config(), 0);
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    seed(&c).await;
    for i in 0..3 {
        assert_eq!(c.post_key("/v1/orders", &format!("o-{i}"), ORDER).await.status, StatusCode::CREATED);
    }
    let has_snapshot = || {
        std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("snap"))
    };
    for _ in 0..500 {
        if has_snapshot() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(has_snapshot(), "a snapshot was written");
    // One more order after the snapshot: recovery = snapshot + the log after it.
    assert_eq!(c.post_key("/v1/orders", "o-3", ORDER).await.status, StatusCode::CREATED);
    drop(c);
    stop(s).await;

    // A different shard count cannot use these snapshots: a clear error, not a panic.
    let err = Engine::start(dir_opener(dir.path()), EngineConfig { snapshot_every_records: 0, ..engine_config(3) })
        .err()
        .expect("shard count mismatch is refused");
    let mismatch = ImageError::ShardCountMismatch { written: 2, running: 3 };
    assert!(matches!(&err, StartError::Replay(ReplayError::Snapshot { source, .. }) if *source == mismatch), "{err}");
    assert!(err.to_string().contains("--shards 2"), "{err}");

    let s = server_with(dir_opener(dir.path()), config(), 0);
    let c = Client::new(&s, &key);
    let item = c.get("/v1/items/tee").await.body;
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(4), Some(46)));
    let report = surge_api::walcmd::run(dir.path(), true).unwrap();
    assert!(report.contains("2 shards") && report.contains("verify: OK"), "{report}");
    assert_eq!(c.get("/v1/orders/ord_4").await.body["status"], "paid");
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 9600);
}

#[tokio::test]
async fn a_snapshot_waits_for_as_many_log_bytes_as_the_last_one_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig { snapshot_every_records: 1, ..engine_config(1) };
    let s = server_with(dir_opener(dir.path()), config, 0);
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    seed(&c).await;
    // A state far larger than an order's record: 300 items with long names.
    let name = "n".repeat(200);
    for i in 0..300 {
        let body = format!(r#"{{"name":"{name}","price":100,"stock":50}}"#);
        assert_eq!(c.put(&format!("/v1/items/sku-{i}"), &body).await.status, StatusCode::CREATED);
    }
    // Snapshots chase the growing state; wait until they settle.
    let mut first = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = s.engine.stats().snapshot_lsn;
        if now != 0 && now == first {
            break;
        }
        first = now;
    }
    assert!(first > 0, "snapshots were written");
    let image_bytes = s.engine.stats().snapshot_bytes;
    assert!(image_bytes > 20_000, "the image holds items: {image_bytes} bytes");

    // Enough records, far too few bytes: no snapshot.
    for i in 0..3 {
        credit(&c, &format!("few-{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = s.engine.stats();
    assert!(stats.log_bytes_since_snapshot < image_bytes, "precondition: {stats:?}");
    assert_eq!(stats.snapshot_lsn, first, "no snapshot before the log since the last one is as large");

    // Once the log since adds up to the image, the next one comes.
    let mut credits = 0;
    while s.engine.stats().snapshot_lsn == first {
        assert!(credits < 5_000, "no snapshot after {credits} more records");
        credit(&c, &format!("many-{credits}")).await;
        credits += 1;
        if credits % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(c);
    stop(s).await;
}

#[tokio::test]
async fn a_record_that_does_not_decode_stops_start_up_naming_its_lsn() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = surge_wal::Wal::open(dir.path().join("wal"), surge_wal::Config::default()).unwrap();
        wal.append(surge_api::engine::RECORD_EVENTS, b"not an event batch").unwrap().wait().unwrap();
        wal.close().unwrap();
    }
    let err = Engine::start(dir_opener(dir.path()), engine_config(1)).err().expect("refused");
    assert!(matches!(err, StartError::Replay(ReplayError::Record { lsn: 1, .. })), "{err}");
    assert!(err.to_string().contains("LSN 1"), "{err}");
    let err = surge_api::walcmd::run(dir.path(), false).expect_err("inspect reports it too");
    assert!(err.contains("LSN 1"), "{err}");
}

fn sim_opener(sim: &SimStorage) -> WalOpener {
    WalOpener::storage(Arc::new(sim.clone()), common::wal_config())
}

#[tokio::test]
async fn storage_failure_answers_503_hides_the_change_and_recovers() {
    let sim = SimStorage::new();
    let s = server_with(sim_opener(&sim), engine_config(2), 0);
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    seed(&c).await;
    assert_eq!(c.post_key("/v1/orders", "o-1", ORDER).await.status, StatusCode::CREATED);

    sim.set_full(true);
    let r = c.post_key("/v1/orders", "o-2", ORDER).await;
    r.assert_problem(503, "storage_unavailable");
    // Writes keep failing while the disk is full; readiness says so.
    let r = c.post_key("/v1/orders", "o-3", ORDER).await;
    r.assert_problem(503, "storage_unavailable");
    assert_eq!(s.send("GET", "/readyz", &[], None).await.status, StatusCode::SERVICE_UNAVAILABLE);
    // Reads are served again (from the log as it is on disk) while writes are refused.
    let mut item = Value::Null;
    for _ in 0..500 {
        let r = c.get("/v1/items/tee").await;
        if r.status == StatusCode::OK {
            item = r.body;
            break;
        }
        r.assert_problem(503, "storage_unavailable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(1), Some(49)));
    c.post_key("/v1/orders", "o-4", ORDER).await.assert_problem(503, "storage_unavailable");
    assert_eq!(s.send("GET", "/readyz", &[], None).await.status, StatusCode::SERVICE_UNAVAILABLE);

    sim.set_full(false);
    // The supervisor reopens the log and rebuilds the shards from it.
    let mut ready = false;
    for _ in 0..500 {
        if s.send("GET", "/readyz", &[], None).await.status == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "ready again after the disk recovered");
    // The refused order is nowhere: not in stock, points or ids.
    let item = c.get("/v1/items/tee").await.body;
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(1), Some(49)));
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 9900);
    c.get("/v1/orders/ord_2").await.assert_problem(404, "not_found");
    // Safe to retry with the same key.
    let r = c.post_key("/v1/orders", "o-2", ORDER).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], "ord_2");
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 9800);
}

/// After a storage failure the shards are rebuilt from the reopened log: a snapshot taken
/// afterwards is still the live state, and holds nothing the failure took back.
#[tokio::test]
async fn snapshots_after_a_storage_failure_are_the_live_state() {
    let sim = SimStorage::new();
    let s = server_with(sim_opener(&sim), EngineConfig { snapshot_every_records: 2, ..engine_config(2) }, 0);
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    seed(&c).await;
    assert_eq!(c.post_key("/v1/orders", "o-1", ORDER).await.status, StatusCode::CREATED);
    sim.set_full(true);
    c.post_key("/v1/orders", "o-2", ORDER).await.assert_problem(503, "storage_unavailable");
    sim.set_full(false);
    for _ in 0..500 {
        if s.send("GET", "/readyz", &[], None).await.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 3..6 {
        assert_eq!(c.post_key("/v1/orders", &format!("o-{i}"), ORDER).await.status, StatusCode::CREATED);
    }
    let durable = snapshot_at_durable_lsn(&s).await;
    let recovery = surge_wal::Wal::open_read_only_with_storage(Arc::new(sim.clone())).unwrap();
    let (lsn, bytes) = recovery.snapshot().expect("a snapshot");
    assert_eq!(lsn, durable);
    let images = surge_core::image::decode_snapshot(bytes, Some(2)).unwrap();
    let live = s.engine.read("m-1", |shard| shard.snapshot()).await.unwrap();
    assert!(images[surge_core::shard_of("m-1", 2)].snapshot() == live, "the snapshot differs from the live shard");
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 9600);
}

/// Storage whose writable operations can be refused (a disk that is gone read-only), so
/// the log cannot be reopened for writing while it can still be read.
#[derive(Clone)]
struct ReadOnlyAtWill {
    inner: SimStorage,
    refuse: Arc<std::sync::atomic::AtomicBool>,
}

impl ReadOnlyAtWill {
    fn check(&self) -> std::io::Result<()> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("read-only file system"));
        }
        Ok(())
    }
}

impl surge_wal::Storage for ReadOnlyAtWill {
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }
    fn read(&self, name: &str) -> std::io::Result<surge_wal::FileBytes> {
        self.inner.read(name)
    }
    fn create(&self, name: &str, size_bytes: u64) -> std::io::Result<Box<dyn surge_wal::LogFile>> {
        self.check()?;
        self.inner.create(name, size_bytes)
    }
    fn open_write(&self, name: &str) -> std::io::Result<Box<dyn surge_wal::LogFile>> {
        self.check()?;
        self.inner.open_write(name)
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.check()?;
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.check()?;
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_dir()
    }
}

#[tokio::test]
async fn reads_are_served_from_the_log_while_it_cannot_be_reopened() {
    let sim = SimStorage::new();
    let storage = ReadOnlyAtWill { inner: sim.clone(), refuse: Default::default() };
    let s = server_with(WalOpener::storage(Arc::new(storage.clone()), common::wal_config()), engine_config(2), 0);
    let c = Client::new(&s, &s.merchant("m-1").await);
    seed(&c).await;
    assert_eq!(c.post_key("/v1/orders", "o-1", ORDER).await.status, StatusCode::CREATED);

    sim.set_full(true);
    storage.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    c.post_key("/v1/orders", "o-2", ORDER).await.assert_problem(503, "storage_unavailable");
    let mut item = Value::Null;
    for _ in 0..500 {
        let r = c.get("/v1/items/tee").await;
        if r.status == StatusCode::OK {
            item = r.body;
            break;
        }
        r.assert_problem(503, "storage_unavailable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the log holds: the first order, not the refused one.
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(1), Some(49)));
    c.get("/v1/orders/ord_2").await.assert_problem(404, "not_found");
    c.post_key("/v1/orders", "o-2", ORDER).await.assert_problem(503, "storage_unavailable");
    assert_eq!(s.send("GET", "/readyz", &[], None).await.status, StatusCode::SERVICE_UNAVAILABLE);

    sim.set_full(false);
    storage.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut ready = false;
    for _ in 0..500 {
        if s.send("GET", "/readyz", &[], None).await.status == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready);
    let r = c.post_key("/v1/orders", "o-2", ORDER).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], "ord_2");
}

/// Waits until the engine wrote a snapshot at the log's durable LSN (nothing is written
/// meanwhile, so one comes at that LSN); returns that LSN.
async fn snapshot_at_durable_lsn(s: &common::Server) -> u64 {
    let durable = s.engine.stats().wal.unwrap().durable_lsn;
    for _ in 0..500 {
        if s.engine.stats().snapshot_lsn == durable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.engine.stats().snapshot_lsn, durable, "a snapshot at the last durable LSN");
    durable
}
