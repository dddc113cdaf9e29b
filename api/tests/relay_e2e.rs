//! End to end with real servers, no mocks: orders over HTTP to the real `surge` binary,
//! relayed to a Kafka-protocol broker (tansu) and to MariaDB, both started by
//! `scripts/services.sh` (CI runs it first). Without them these tests fail, naming it.
//!
//! 1. `surge serve --kafka-brokers --mariadb-url`: the in-process relay.
//! 2. `surge relay` as its own process on the server's data directory, SIGKILLed
//!    mid-stream and restarted: no gaps in Kafka, MariaDB exactly once.
//! 3. A short retention: archived orders and payments answer from MariaDB as they were,
//!    plus `archived_at`; without a cold store, or with one that does not answer, 410.

mod process;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process::services::{brokers, kafka_header, require_mariadb, require_services, unique, Db};
use process::{get_text, http, metric, Surge};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde_json::Value;

/// A merchant with three items and five customers with points; returns its API key header.
fn shop(addr: SocketAddr, admin: &str) -> String {
    let auth = process::create_merchant(addr, &format!("Bearer {admin}"), "m-1");
    for sku in ["tee", "cap", "mug"] {
        let r = http(
            addr,
            "PUT",
            &format!("/v1/items/{sku}"),
            &[("Authorization", &auth)],
            Some(r#"{"name":"x","price":100,"stock":100000}"#),
        );
        assert_eq!(r.unwrap().0, 201);
    }
    for c in 0..5 {
        let h = [("Authorization", auth.as_str()), ("Idempotency-Key", &*format!("credit-{c}"))];
        let r = http(
            addr,
            "POST",
            &format!("/v1/customers/c-{c}/points/credit"),
            &h,
            Some(r#"{"amount":100000000,"reason":"x"}"#),
        );
        assert_eq!(r.unwrap().0, 200);
    }
    auth
}

/// `n` points orders (every third partly refunded, every fifth cancelled); their ids.
fn orders(addr: SocketAddr, auth: &str, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let sku = ["tee", "cap", "mug"][i % 3];
        let body = format!(
            r#"{{"customer_id":"c-{}","lines":[{{"sku":"{sku}","qty":{}}}],"payment":{{"method":"points"}}}}"#,
            i % 5,
            1 + i % 2
        );
        let key = format!("{tag}-{i}");
        let h = [("Authorization", auth), ("Idempotency-Key", key.as_str())];
        let Some((201, o)) = http(addr, "POST", "/v1/orders", &h, Some(&body)) else { break };
        let id = o["id"].as_str().unwrap().to_string();
        if i % 3 == 1 {
            let payment = o["payment"]["id"].as_str().unwrap();
            let key = format!("{tag}-refund-{i}");
            let h = [("Authorization", auth), ("Idempotency-Key", key.as_str())];
            let r = http(addr, "POST", &format!("/v1/payments/{payment}/refund"), &h, Some(r#"{"amount":50}"#));
            assert_eq!(r.unwrap().0, 200);
        } else if i % 5 == 2 {
            let r = http(addr, "POST", &format!("/v1/orders/{id}/cancel"), &[("Authorization", auth)], Some("{}"));
            assert_eq!(r.unwrap().0, 200);
        }
        ids.push(id);
    }
    ids
}

/// Every published event of the log: id -> (topic suffix, key `{merchant}/{aggregate}`),
/// read from the log itself with a tailer (durable records only: the server may still be
/// writing).
fn published_events(data_dir: &Path) -> BTreeMap<String, (String, String)> {
    let mut tailer = surge_wal::Tailer::open(data_dir.join("wal"), 1).expect("tail the log");
    let mut out = BTreeMap::new();
    while let Some(record) = tailer.try_next().expect("record") {
        let events = surge_core::image::record_events(record.record_type, &record.payload).expect("decode");
        for (i, e) in events.iter().enumerate() {
            if let Some((topic, aggregate)) = e.aggregate() {
                let key = format!("{}/{aggregate}", e.merchant);
                out.insert(surge_core::envelope::event_id(record.lsn, i as u32), (topic.suffix().to_string(), key));
            }
        }
    }
    out
}

/// Everything on the test's topics: (topic suffix, key, event id, envelope) in partition order.
fn consume(prefix: &str, expected: &BTreeMap<String, (String, String)>) -> Vec<(String, String, String, Value)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let topics: Vec<String> = ["merchants", "orders", "payments", "inventory", "ledger", "points"]
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>()).expect("subscribe");
    let mut got = Vec::new();
    let mut ids = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !expected.keys().all(|id| ids.contains(id)) {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = message.expect("consume");
        let header = |name: &str| kafka_header(&m, name);
        let id = header("event-id");
        let value: Value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON envelope");
        assert_eq!(value["event_id"], id.as_str());
        assert_eq!(value["type"], header("event-type").as_str());
        let topic = m.topic().strip_prefix(prefix).unwrap_or_default().to_string();
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
        ids.insert(id.clone());
        got.push((topic, key, id, value));
    }
    got
}

/// Kafka holds every published event on its topic under its key, and per key the first
/// delivery of each event comes in log order (duplicates are allowed: at least once).
fn check_kafka(prefix: &str, expected: &BTreeMap<String, (String, String)>) {
    let got = consume(prefix, expected);
    let mut first: HashSet<&str> = HashSet::new();
    let mut last_per_key: HashMap<(&str, &str), &str> = HashMap::new();
    for (topic, key, id, _) in &got {
        let want = expected.get(id).unwrap_or_else(|| panic!("unexpected event {id}"));
        assert_eq!((topic, key), (&want.0, &want.1), "event {id}: topic and key");
        if !first.insert(id) {
            continue;
        }
        if let Some(prev) = last_per_key.insert((topic, key), id) {
            assert!(prev < id.as_str(), "{topic}/{key}: {id} came after {prev}");
        }
    }
    let missing: Vec<_> = expected.keys().filter(|id| !first.contains(id.as_str())).collect();
    assert!(missing.is_empty(), "{} events never reached Kafka, e.g. {:?}", missing.len(), missing.first());
}

/// MariaDB holds each published event exactly once and rows equal to the API's views.
fn check_mariadb(db: &Db, addr: SocketAddr, auth: &str, expected: &BTreeMap<String, (String, String)>, ids: &[String]) {
    let counts: Vec<(u64, u64)> = db.rows("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events");
    assert_eq!(counts[0], (expected.len() as u64, expected.len() as u64), "events exactly once");
    let a = [("Authorization", auth)];
    let rows: Vec<(String, String, u64, Option<String>)> =
        db.rows("SELECT id, status, total, payment_status FROM orders WHERE merchant_id = 'm-1'");
    let rows: HashMap<_, _> = rows.into_iter().map(|(id, s, t, p)| (id, (s, t, p))).collect();
    assert_eq!(rows.len(), ids.len(), "one row per order");
    for id in ids {
        let (_, o) = http(addr, "GET", &format!("/v1/orders/{id}"), &a, None).unwrap();
        let row = rows.get(id).unwrap_or_else(|| panic!("order {id} has no row"));
        let api = (
            o["status"].as_str().unwrap().to_string(),
            o["total"].as_u64().unwrap(),
            o["payment"]["status"].as_str().map(String::from),
        );
        assert_eq!(row, &api, "order {id}: row vs API");
    }
    for sku in ["tee", "cap", "mug"] {
        let (_, item) = http(addr, "GET", &format!("/v1/items/{sku}"), &a, None).unwrap();
        let row: Vec<(u64, u64, u64, u64)> = db.rows(&format!(
            "SELECT stock, available, held, sold FROM items WHERE merchant_id = 'm-1' AND sku = '{sku}'"
        ));
        let api = ["stock", "available", "held", "sold"].map(|f| item[f].as_u64().unwrap());
        assert_eq!(row, vec![(api[0], api[1], api[2], api[3])], "item {sku}: row vs API");
    }
}

fn wait_caught_up(addr: SocketAddr, sinks: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text) = get_text(addr, "/metrics").expect("metrics");
        let lag = |s: &str| metric(&text, &format!("surge_relay_lag_records{{sink=\"{s}\"}}"));
        let written = |s: &str| metric(&text, &format!("surge_relay_written_lsn{{sink=\"{s}\"}}")).unwrap_or(0.0);
        if sinks.iter().all(|s| lag(s) == Some(0.0) && written(s) > 0.0) {
            return;
        }
        assert!(Instant::now() < deadline, "the relay did not catch up:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_relays_every_event_to_kafka_and_mariadb() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create("e2e_serve");
    let prefix = format!("{}.", unique("serve"));
    let url = db.url();
    let env = [
        ("SURGE_KAFKA_BROKERS", brokers()),
        ("SURGE_KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("SURGE_MARIADB_URL", url),
        ("SURGE_ADMIN_TOKEN", "admin".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (surge, _) = Surge::start_with(dir.path(), &env);
    let auth = shop(surge.addr, "admin");
    let ids = orders(surge.addr, &auth, "o", 150);
    assert_eq!(ids.len(), 150);
    wait_caught_up(surge.addr, &["kafka", "mariadb"]);
    let expected = published_events(dir.path());
    check_kafka(&prefix, &expected);
    check_mariadb(&db, surge.addr, &auth, &expected, &ids);
}

/// The writer's chunks of ten orders; bounds the run if the main thread never stops it.
const WRITER_CHUNKS_MAX: usize = 40;

/// Waits until the writer has placed at least `count` orders; returns how many it has.
fn wait_written(written: &AtomicUsize, count: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = written.load(Ordering::Acquire);
        if now >= count {
            return now;
        }
        assert!(Instant::now() < deadline, "the writer placed {now} of {count} orders");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `surge relay` on the server's data directory (its own process).
fn relay_process(data_dir: &Path, prefix: &str, db: &Db, until_caught_up: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_surge"));
    cmd.arg("relay")
        .arg("--data-dir")
        .arg(data_dir)
        .env("SURGE_KAFKA_BROKERS", brokers())
        .env("SURGE_KAFKA_TOPIC_PREFIX", prefix)
        .env("SURGE_MARIADB_URL", db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if until_caught_up {
        cmd.arg("--until-caught-up");
    }
    cmd.spawn().expect("start surge relay")
}

#[test]
fn standalone_relay_killed_mid_stream_leaves_no_gap_and_no_duplicate_row() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create("e2e_relay");
    let prefix = format!("{}.", unique("relay"));
    let (surge, _) = Surge::start_with(dir.path(), &[("SURGE_ADMIN_TOKEN", "admin")]);
    let addr = surge.addr;
    let auth = shop(addr, "admin");
    let mut relay = relay_process(dir.path(), &prefix, &db, false);
    // Orders flow while the relay runs; it is SIGKILLed in the middle of them: after the
    // writer has placed some orders and while it keeps placing more. Progress, not time,
    // decides the moment, so a fast machine cannot finish the writes before the kill.
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (auth, written, stop) = (auth.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            for chunk in 0..WRITER_CHUNKS_MAX {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                ids.extend(orders(addr, &auth, &format!("a{chunk}"), 10));
                written.store(ids.len(), Ordering::Release);
            }
            ids
        })
    };
    let at_kill = wait_written(&written, 100);
    relay.kill().expect("SIGKILL the relay");
    relay.wait().expect("reap");
    wait_written(&written, at_kill + 50);
    stop.store(true, Ordering::Release);
    let mut ids = writer.join().unwrap();
    ids.extend(orders(addr, &auth, "b", 100));
    // A new relay process picks up from the checkpoints and exits once caught up.
    let mut relay = relay_process(dir.path(), &prefix, &db, true);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = relay.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "surge relay --until-caught-up did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "surge relay: {status}");
    let expected = published_events(dir.path());
    check_kafka(&prefix, &expected);
    check_mariadb(&db, addr, &auth, &expected, &ids);
}

#[test]
fn serve_keeps_serving_while_broker_and_database_are_unreachable() {
    // Nothing listens on these ports: both sinks fail from the start.
    let (kafka_port, db_port) = (process::free_port(), process::free_port());
    let dir = tempfile::tempdir().unwrap();
    let kafka = format!("127.0.0.1:{kafka_port}");
    let url = format!("mysql://root@127.0.0.1:{db_port}/nowhere");
    let env = [("SURGE_KAFKA_BROKERS", kafka.as_str()), ("SURGE_MARIADB_URL", &url), ("SURGE_ADMIN_TOKEN", "admin")];
    let (surge, _) = Surge::start_with(dir.path(), &env);
    let auth = shop(surge.addr, "admin");
    assert_eq!(orders(surge.addr, &auth, "down", 30).len(), 30, "orders are acknowledged while the sinks are down");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = get_text(surge.addr, "/metrics").expect("metrics");
        let value = |name: &str, sink: &str| metric(&text, &format!("{name}{{sink=\"{sink}\"}}")).unwrap_or(0.0);
        let behind = ["kafka", "mariadb"]
            .iter()
            .all(|s| value("surge_relay_lag_records", s) > 30.0 && value("surge_relay_failures_total", s) > 0.0);
        if behind {
            break;
        }
        assert!(Instant::now() < deadline, "lag and failures show in /metrics:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_card_number_reaches_no_log_file_snapshot_kafka_message_or_mariadb_row() {
    require_services();
    const NUMBER: &str = "4111-1111-1111-1451";
    let digits = NUMBER.replace('-', "");
    let needles = [NUMBER.as_bytes(), digits.as_bytes()];
    let found = |bytes: &[u8]| needles.iter().any(|n| bytes.windows(n.len()).any(|w| w == *n));
    let sim = process::Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create("e2e_card");
    let prefix = format!("{}.", unique("card"));
    let (url, sim_url) = (db.url(), sim.url());
    let env = [
        ("SURGE_KAFKA_BROKERS", brokers()),
        ("SURGE_KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("SURGE_MARIADB_URL", url),
        ("SURGE_ADMIN_TOKEN", "admin".to_string()),
        ("SURGE_GATEWAY_URLS", sim_url),
        ("SURGE_GATEWAY_SECRET", process::SIM_SECRET.to_string()),
        // Snapshots are written during the flow too.
        ("SURGE_SNAPSHOT_EVERY", "5".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (surge, _) = Surge::start_with(dir.path(), &env);
    let auth = shop(surge.addr, "admin");
    let mut ids = Vec::new();
    for (i, capture) in ["automatic", "manual", "automatic"].iter().enumerate() {
        let body = format!(
            r#"{{"customer_id":"c-1","lines":[{{"sku":"tee","qty":1}}],
                "payment":{{"method":"card","card":{{"number":"{NUMBER}","type":"KB"}},"capture":"{capture}"}}}}"#
        );
        let key = format!("card-{i}");
        let h = [("Authorization", auth.as_str()), ("Idempotency-Key", key.as_str())];
        let (status, order) = http(surge.addr, "POST", "/v1/orders", &h, Some(&body)).unwrap();
        assert_eq!(status, 202, "{order}");
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let (_, o) =
                http(surge.addr, "GET", &format!("/v1/orders/{id}"), &[("Authorization", &auth)], None).unwrap();
            if o["status"] == "paid" {
                break;
            }
            assert!(Instant::now() < deadline, "order {id}: {o}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    wait_caught_up(surge.addr, &["kafka", "mariadb"]);
    let expected = published_events(dir.path());
    for (topic, key, id, value) in consume(&prefix, &expected) {
        assert!(!found(key.as_bytes()) && !found(value.to_string().as_bytes()), "Kafka {topic} event {id}");
    }
    let tables: Vec<String> =
        db.rows(&format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{}'", db.name));
    assert!(tables.len() > 3, "{tables:?}");
    for table in tables {
        let rows: Vec<mysql_async::Row> = db.rows(&format!("SELECT * FROM `{table}`"));
        for row in rows {
            for value in row.unwrap() {
                if let mysql_async::Value::Bytes(bytes) = value {
                    assert!(!found(&bytes), "MariaDB table {table}");
                }
            }
        }
    }
    drop(surge);
    let mut todo = vec![dir.path().to_path_buf()];
    let mut files = 0;
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files += 1;
                assert!(!found(&std::fs::read(&path).unwrap()), "{}", path.display());
            }
        }
    }
    assert!(files > 3, "log segments and snapshots were looked at");
}

// ---- archived ids and the cold store ------------------------------------------------------

/// The retention of the archive tests. Short, and still long enough that every order is
/// seen live after its last change before it is archived (the polls below come every few
/// tens of milliseconds; the machine may be busy compiling).
const RETAIN: &str = "3s";

/// A server archiving after [`RETAIN`], with `env` added.
fn archiving_server(dir: &Path, env: &[(&str, String)]) -> Surge {
    let mut all = vec![
        ("SURGE_ADMIN_TOKEN", "admin".to_string()),
        ("SURGE_RETAIN_SETTLED", RETAIN.to_string()),
        ("SURGE_IDEMPOTENCY_WINDOW", RETAIN.to_string()),
    ];
    all.extend(env.iter().cloned());
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Surge::start_with(dir, &all).0
}

/// Settled work of every kind: points orders paid, partly refunded and cancelled, one card
/// order with `card` (a number whose last four digits are 1451), and a released hold. The
/// GET paths of the orders and payments (each watched until archived), and of the hold.
fn settled_work(addr: SocketAddr, auth: &str, card: Option<&str>) -> (Vec<String>, String) {
    let mut paths = Vec::new();
    for id in orders(addr, auth, "arch", 6) {
        let (_, o) = http(addr, "GET", &format!("/v1/orders/{id}"), &[("Authorization", auth)], None).unwrap();
        paths.push(format!("/v1/payments/{}", o["payment"]["id"].as_str().unwrap()));
        paths.push(format!("/v1/orders/{id}"));
    }
    if let Some(number) = card {
        let body = format!(
            r#"{{"customer_id":"c-1","lines":[{{"sku":"tee","qty":2}}],
                "payment":{{"method":"card","card":{{"number":"{number}","type":"KB"}}}}}}"#
        );
        let h = [("Authorization", auth), ("Idempotency-Key", "arch-card")];
        let (status, o) = http(addr, "POST", "/v1/orders", &h, Some(&body)).unwrap();
        assert_eq!(status, 202, "{o}");
        paths.push(format!("/v1/payments/{}", o["payment"]["id"].as_str().unwrap()));
        paths.push(format!("/v1/orders/{}", o["id"].as_str().unwrap()));
    }
    let h = [("Authorization", auth)];
    let (status, hold) =
        http(addr, "POST", "/v1/holds", &h, Some(r#"{"customer_id":"c-2","lines":[{"sku":"mug","qty":1}]}"#)).unwrap();
    assert_eq!(status, 201, "{hold}");
    let hold = format!("/v1/holds/{}", hold["id"].as_str().unwrap());
    assert_eq!(http(addr, "POST", &format!("{hold}/release"), &h, Some("{}")).unwrap().0, 200);
    (paths, hold)
}

/// Polls every path until it answers as archived: 200 with `archived_at` (`cold`), or 410
/// `archived`. Returns each path's last live answer (200 without `archived_at`, seen after
/// its last change: the polls come faster than the retention) and its archived answer.
fn watch_until_archived(
    addr: SocketAddr,
    auth: &str,
    paths: &[String],
    cold: bool,
) -> (HashMap<String, Value>, HashMap<String, Value>) {
    let (mut live, mut archived) = (HashMap::new(), HashMap::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while archived.len() < paths.len() {
        for path in paths {
            if archived.contains_key(path) {
                continue;
            }
            let (status, body) = http(addr, "GET", path, &[("Authorization", auth)], None).unwrap();
            match (status, body.get("archived_at").is_some()) {
                (200, false) => {
                    live.insert(path.clone(), body);
                }
                (200, true) => {
                    assert!(cold, "{path}: an answer from a cold store this server does not have: {body}");
                    archived.insert(path.clone(), body);
                }
                // While the relay has not written the archived row yet, with a cold store.
                (410, true) if cold => assert_eq!(body["code"], "archived", "{path}"),
                (410, true) => {
                    assert_eq!(body["code"], "archived", "{path}");
                    archived.insert(path.clone(), body);
                }
                _ => panic!("{path}: {status} {body}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "not all archived: {:?}",
            paths.iter().filter(|p| !archived.contains_key(*p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (live, archived)
}

#[test]
fn archived_orders_and_payments_answer_from_mariadb_as_they_were_with_archived_at() {
    require_mariadb();
    const NUMBER: &str = "4111-1111-1111-1451";
    let sim = process::Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create("e2e_cold");
    let env = [
        ("SURGE_MARIADB_URL", db.url()),
        ("SURGE_GATEWAY_URLS", sim.url()),
        ("SURGE_GATEWAY_SECRET", process::SIM_SECRET.to_string()),
    ];
    let surge = archiving_server(dir.path(), &env);
    let auth = shop(surge.addr, "admin");
    let (paths, hold) = settled_work(surge.addr, &auth, Some(NUMBER));
    let (live, archived) = watch_until_archived(surge.addr, &auth, &paths, true);
    for path in &paths {
        let mut got = archived[path].clone();
        let at = got.as_object_mut().and_then(|o| o.remove("archived_at")).unwrap_or_default();
        let before = live.get(path).unwrap_or_else(|| panic!("{path} was never seen live"));
        assert_eq!(&got, before, "{path}: the archived answer is the live one plus archived_at");
        let (at, updated) = (at.as_str().unwrap_or_default(), before["updated_at"].as_str().unwrap_or_default());
        assert!(at.len() == 24 && at.ends_with('Z') && at > updated, "{path}: archived at {at}, updated {updated}");
    }
    let card: Vec<&Value> =
        archived.values().filter_map(|v| v.get("card").or(v["payment"].get("card"))).filter(|c| !c.is_null()).collect();
    assert_eq!(card.len(), 2, "the card order and its payment");
    for c in card {
        assert_eq!(c, &serde_json::json!({"last4": "1451", "type": "KB"}));
    }
    let digits = NUMBER.replace('-', "");
    for body in archived.values() {
        let text = body.to_string();
        assert!(!text.contains(NUMBER) && !text.contains(&digits[..12]), "{text}");
    }
    let statuses: HashSet<&str> = archived.values().filter_map(|v| v["status"].as_str()).collect();
    for status in ["paid", "cancelled", "captured", "partially_refunded", "refunded"] {
        assert!(statuses.contains(status), "{status} among the archived answers: {statuses:?}");
    }
    // Holds are not in the cold store; commands against archived ids stay 410.
    let h = [("Authorization", auth.as_str())];
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(surge.addr, "GET", &hold, &h, None).unwrap().0 != 410 {
        assert!(Instant::now() < deadline, "{hold} was never archived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let order = paths.iter().find(|p| p.starts_with("/v1/orders/")).unwrap();
    let (status, body) = http(surge.addr, "POST", &format!("{order}/cancel"), &h, Some("{}")).unwrap();
    assert_eq!((status, body["code"].as_str()), (410, Some("archived")), "{body}");
    let (_, text) = get_text(surge.addr, "/metrics").expect("metrics");
    let found = metric(&text, "surge_cold_reads_total{result=\"found\"}").unwrap_or(0.0);
    assert!(found >= paths.len() as f64, "{text}");
}

#[test]
fn archived_orders_and_payments_answer_410_without_a_cold_store_or_when_it_does_not_answer() {
    // Nothing listens on this port: the cold store is configured and never answers.
    let unreachable = format!("mysql://root@127.0.0.1:{}/nowhere", process::free_port());
    for env in [vec![], vec![("SURGE_MARIADB_URL", unreachable)]] {
        let dir = tempfile::tempdir().unwrap();
        let surge = archiving_server(dir.path(), &env);
        let auth = shop(surge.addr, "admin");
        let (mut paths, hold) = settled_work(surge.addr, &auth, None);
        paths.push(hold);
        let (live, archived) = watch_until_archived(surge.addr, &auth, &paths, false);
        assert_eq!(live.len(), paths.len(), "every order, payment and hold was seen live first");
        for (path, body) in &archived {
            let at = body["archived_at"].as_str().unwrap_or_default();
            assert!(at.len() == 24 && at.ends_with('Z'), "{path}: {body}");
        }
        let payment = paths.iter().find(|p| p.starts_with("/v1/payments/")).unwrap();
        let h = [("Authorization", auth.as_str()), ("Idempotency-Key", "late-refund")];
        let (status, body) = http(surge.addr, "POST", &format!("{payment}/refund"), &h, Some("{}")).unwrap();
        assert_eq!((status, body["code"].as_str()), (410, Some("archived")), "{body}");
    }
}
