//! The MariaDB cold store against a real MariaDB: rows equal the engine's views, every
//! public event is stored exactly once, the ledger balances and the offset is the durable
//! LSN — after catch-up, across relay stops and writes cut short mid-transaction, around
//! server snapshots (database ahead of and behind them), and across a `kill -9` of the
//! database itself (a private `mariadbd` on a free port).
//!
//! Needs MariaDB on `SURGE_TEST_MARIADB_URL` (default `mysql://root@127.0.0.1:3306`):
//! `scripts/services.sh mariadb` starts it. Unreachable fails the test; it never skips.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value};
use surge_core::command::*;
use surge_core::ids::{OrderId, PaymentId};
use surge_core::ledger::FIXED_ACCOUNTS;
use surge_core::view::Reply;
use surge_core::view::{OrderView, PaymentView};
use surge_core::{image, Engine, Shard};
use surge_relay::breaker::BreakerConfig;
use surge_relay::mariadb::read::{ColdReadConfig, ColdReader};
use surge_relay::mariadb::{schema, MariaDbConfig, MariaDbCounters, MariaDbSink};
use surge_relay::{Batch, DriverConfig, Relay, Sink, SinkError};
use surge_wal::Lsn;

use common::{LogWriter, T0};

const CARD_NUMBER: &str = "4111-1111-1111-1234";
/// Free text that needs escaping on its way into SQL.
const AWKWARD: &str = "it's a \"quote\", a \\ backslash, 100% _like_ 한글 ; DROP TABLE items; --";

// ---- databases ---------------------------------------------------------------------------

/// The sink's and the driver's logs in the test's output (shown when a test fails).
fn trace() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::INFO).try_init();
}

fn base_url() -> String {
    std::env::var("SURGE_TEST_MARIADB_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// `server` with its database path replaced by `db`.
fn url_with_db(server: &str, db: &str) -> String {
    let scheme_end = server.find("://").map_or(0, |i| i + 3);
    let host_end = server[scheme_end..].find('/').map_or(server.len(), |i| scheme_end + i);
    format!("{}/{db}", &server[..host_end])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn query(url: &str, sql: &str) -> Result<Vec<Row>, mysql_async::Error> {
    runtime().block_on(async {
        let mut conn = mysql_async::Conn::from_url(url).await?;
        let rows = conn.query(sql).await?;
        conn.disconnect().await?;
        Ok(rows)
    })
}

/// A database of its own for one test, dropped at the end.
struct TestDb {
    server: String,
    name: String,
}

impl TestDb {
    fn create(server: &str, tag: &str) -> TestDb {
        trace();
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("surge_test_{tag}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = query(server, &format!("CREATE DATABASE {name}")) {
            panic!(
                "MariaDB is not reachable at {server} ({e}). These tests need a real MariaDB: \
                 start it with `scripts/services.sh mariadb`, or point SURGE_TEST_MARIADB_URL at one."
            );
        }
        TestDb { server: server.to_string(), name }
    }

    fn url(&self) -> String {
        url_with_db(&self.server, &self.name)
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let rows = query(&self.url(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|r| r.unwrap().into_iter().map(text).collect()).collect()
    }

    fn one(&self, sql: &str) -> String {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}");
        rows[0][0].clone()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = query(&self.server, &format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

fn text(v: Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => String::from_utf8(b).expect("utf-8 column"),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".into(), |v| v.to_string())
}

/// `DATETIME(3)` as Unix milliseconds, whatever the session's time zone.
fn ms(column: &str) -> String {
    format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01', {column}) DIV 1000")
}

// ---- the log -----------------------------------------------------------------------------

/// Card payments through the gateway commands (approved, declined with an awkward reason,
/// left pending), a queue with tokens, and an item with an awkward name.
fn extras(log: &mut LogWriter, merchant: &str, n: usize) {
    let spec = ItemSpec { sku: "odd".into(), name: AWKWARD.into(), price: 2_500, stock: 50, queue: None };
    log.run(merchant, Command::PutItem(spec)).expect("item");
    log.run(merchant, Command::PutQueue { queue: "q-1".into(), max_active: 2, active_ttl_s: 60 }).expect("queue");
    for i in 0..4u64 {
        let token = Command::IssueToken { queue: "q-1".into(), customer: format!("c-{i}"), nonce: 0xfeed + i };
        log.run(merchant, token).expect("token");
    }
    for i in 0..n {
        let order = Command::CreateOrder {
            customer: format!("c-{}", i % 10),
            source: OrderSource::Lines(vec![
                LineSpec { sku: "odd".into(), qty: 1 },
                LineSpec { sku: "sku-0".into(), qty: 2 },
            ]),
            payment: PaymentSpec {
                method: PaymentMethod::Card,
                card: Some(CardSpec {
                    number: CARD_NUMBER.into(),
                    kind: "VISA".into(),
                    sealed: b"sealed".as_slice().into(),
                }),
                capture: CaptureMode::Automatic,
            },
            queue_token: None,
        };
        let Ok(Reply::Order(view)) = log.run(merchant, order) else { panic!("card order") };
        let payment = view.payment.expect("card payment").id.to_string();
        let key = format!("20251121:TR:{i:06x}");
        let accepted = Command::GatewayAccepted {
            payment: payment.clone(),
            transaction_key: key.clone(),
            gateway: "127.0.0.1:9300".into(),
        };
        log.run(merchant, accepted).expect("accepted");
        match i % 3 {
            0 => {
                log.run(merchant, Command::GatewayApproved { payment: payment.clone(), transaction_key: key })
                    .expect("approved");
                if i % 2 == 0 {
                    log.run(merchant, Command::RefundPayment { payment, amount: Some(100) }).expect("refund");
                }
            }
            1 => {
                log.run(merchant, Command::GatewayDeclined { payment, reason: AWKWARD.into() }).expect("declined");
            }
            _ => {}
        }
    }
}

/// A busy little log: two merchants with points, card and unpaid orders, refunds,
/// cancellations, expiries, holds and queues.
fn busy_log(log: &mut LogWriter, orders: usize) {
    for m in ["m-1", "m-2"] {
        log.shop(m, 5);
        extras(log, m, 6);
        log.orders(m, 5, orders);
    }
}

/// Every public event id in the log, read from LSN 1 (the tests never lose segments).
fn public_event_ids(dir: &Path, durable: Lsn) -> Vec<String> {
    let mut tailer = surge_wal::Tailer::open(dir, 1).expect("tail");
    let mut ids = Vec::new();
    while tailer.next_lsn() <= durable {
        let record = tailer.try_next().expect("read").expect("durable record");
        let events = image::record_events(record.record_type, &record.payload).expect("events");
        for (i, e) in events.iter().enumerate() {
            if e.aggregate().is_some() {
                ids.push(surge_core::envelope::event_id(record.lsn, i as u32));
            }
        }
    }
    ids
}

// ---- the relay ---------------------------------------------------------------------------

fn driver_config(dir: &Path, events_max: usize) -> DriverConfig {
    let mut c = DriverConfig::new(dir.to_path_buf());
    c.backoff_min_ms = 5;
    c.backoff_max_ms = 100;
    c.batch.events_max = events_max;
    c.batch.wait_ms = 20;
    c.breaker = BreakerConfig { open_ms: 50, ..BreakerConfig::default() };
    c
}

fn sink(db: &TestDb, dir: &Path) -> MariaDbSink {
    MariaDbSink::new(MariaDbConfig::new(db.url(), dir)).expect("sink")
}

/// Runs a relay with this sink, `events_max` events per batch, until it has written `lsn`.
fn relay_until(db: &TestDb, dir: &Path, events_max: usize, lsn: Lsn, within: Duration) {
    let mut relay = Relay::new(driver_config(dir, events_max));
    relay.spawn(sink(db, dir)).expect("spawn");
    wait_for(&relay, lsn, within);
    relay.stop();
}

fn wait_for(relay: &Relay, lsn: Lsn, within: Duration) {
    let status = relay.statuses()[0].clone();
    let deadline = Instant::now() + within;
    while status.written_lsn.load(Ordering::Relaxed) != lsn {
        assert!(
            Instant::now() < deadline,
            "the sink did not reach LSN {lsn} (at {}, {} failures)",
            status.written_lsn.load(Ordering::Relaxed),
            status.failures.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Cuts every `every`-th write short after a few hundred microseconds (the driver's
/// timeout does the same to a slow write): the projection has applied the batch and the
/// transaction is somewhere between begin and commit when the future is dropped.
struct CutWrites {
    inner: MariaDbSink,
    every: u32,
    writes: u32,
    cuts: Arc<AtomicU32>,
}

impl Sink for CutWrites {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn resume(&mut self, checkpoint: Lsn) -> Result<Lsn, SinkError> {
        self.inner.resume(checkpoint).await
    }

    async fn write(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.writes += 1;
        if self.writes % self.every != 0 {
            return self.inner.write(batch).await;
        }
        let cut = Duration::from_micros(u64::from(self.writes) * 7_919 % 1_500);
        match tokio::time::timeout(cut, self.inner.write(batch)).await {
            Ok(result) => result,
            Err(_) => {
                self.cuts.fetch_add(1, Ordering::Relaxed);
                Err(SinkError::Transient("cut short by the test".into()))
            }
        }
    }
}

// ---- the checks --------------------------------------------------------------------------

/// Everything the cold store holds equals the truth: the engine's views, the log's events,
/// the engine's ledger, the durable LSN.
fn assert_matches(db: &TestDb, engine: &Engine, dir: &Path, durable: Lsn) {
    assert_state_matches(db, engine, durable);
    assert_events_match(db, &public_event_ids(dir, durable));
    assert_ledger_matches(db, engine);
    let statuses: Vec<String> =
        db.rows("SELECT DISTINCT status FROM orders").into_iter().map(|r| r[0].clone()).collect();
    for status in ["paid", "cancelled", "expired"] {
        assert!(statuses.iter().any(|s| s == status), "the log has {status} orders: {statuses:?}");
    }
}

/// The offset and the current-state tables equal the engine's views; no secrets anywhere.
fn assert_state_matches(db: &TestDb, engine: &Engine, durable: Lsn) {
    assert_eq!(db.one("SELECT lsn FROM relay_offset WHERE sink = 'mariadb'"), durable.to_string(), "offset");
    let append = db.one("SELECT lsn FROM relay_offset WHERE sink = 'mariadb.append'");
    assert_eq!(append, durable.to_string(), "append offset");
    let merchants: Vec<_> = engine.shards.iter().flat_map(Shard::merchants).collect();

    let mut expected = Vec::new();
    for m in &merchants {
        let v = m.view();
        expected.push(vec![v.id, v.name, v.currency, v.created_at_ms.to_string()]);
    }
    let got = db.rows(&format!("SELECT id, name, currency, {} FROM merchants", ms("created_at")));
    assert_rows("merchants", got, expected);

    let mut expected = Vec::new();
    for m in &merchants {
        for item in m.items.iter() {
            let v = m.item_view(&item.sku).expect("item");
            expected.push(vec![
                m.id.to_string(),
                v.sku.to_string(),
                v.name,
                v.price.to_string(),
                v.stock.to_string(),
                v.available.to_string(),
                v.held.to_string(),
                v.sold.to_string(),
                opt(v.queue_id),
            ]);
        }
    }
    let got = db.rows("SELECT merchant_id, sku, name, price, stock, available, held, sold, queue_id FROM items");
    for row in &got {
        let n: Vec<u64> = row[4..8].iter().map(|s| s.parse().expect("number")).collect();
        assert_eq!(n[1] + n[2] + n[3], n[0], "available + held + sold == stock in {row:?}");
    }
    assert_rows("items", got, expected);

    let (mut orders, mut lines, mut payments) = (Vec::new(), Vec::new(), Vec::new());
    for m in &merchants {
        for (i, _) in m.orders.iter() {
            let v = m.order_view(&format!("ord_{}", i + 1)).expect("order");
            let p = v.payment.as_deref();
            orders.push(vec![
                m.id.to_string(),
                v.id.to_string(),
                v.customer_id.to_string(),
                v.status.as_str().to_string(),
                v.total.to_string(),
                v.lines.len().to_string(),
                opt(v.hold_id),
                opt(p.map(|p| p.id)),
                opt(p.map(|p| p.method.as_str())),
                opt(p.map(|p| p.status.as_str())),
                v.created_at_ms.to_string(),
                v.updated_at_ms.to_string(),
                opt(v.expires_at_ms),
            ]);
            for (i, l) in v.lines.iter().enumerate() {
                lines.push(vec![
                    m.id.to_string(),
                    v.id.to_string(),
                    (i + 1).to_string(),
                    l.sku.to_string(),
                    l.qty.to_string(),
                    l.unit_price.expect("priced").to_string(),
                ]);
            }
        }
        for (i, _) in m.payments.iter() {
            let v = m.payment_view(&format!("pay_{}", i + 1)).expect("payment");
            payments.push(vec![
                m.id.to_string(),
                v.id.to_string(),
                v.order_id.to_string(),
                v.method.as_str().to_string(),
                v.status.as_str().to_string(),
                v.capture.as_str().to_string(),
                v.amount.to_string(),
                v.captured.to_string(),
                v.refunded.to_string(),
                opt(v.card.as_ref().map(|c| c.kind.clone())),
                opt(v.card.as_ref().map(|c| c.last4.clone())),
                opt(v.transaction_key),
                opt(v.failure_reason),
                v.created_at_ms.to_string(),
                v.updated_at_ms.to_string(),
            ]);
        }
    }
    let got = db.rows(&format!(
        "SELECT merchant_id, id, customer_id, status, total, line_count, hold_id, payment_id, payment_method, \
         payment_status, {}, {}, {} FROM orders WHERE archived_at IS NULL",
        ms("created_at"),
        ms("updated_at"),
        ms("expires_at")
    ));
    assert_rows("orders", got, orders);
    assert_rows(
        "order_lines",
        db.rows(
            "SELECT l.merchant_id, l.order_id, l.line_no, l.sku, l.qty, l.unit_price FROM order_lines l \
             JOIN orders o ON o.merchant_id = l.merchant_id AND o.id = l.order_id WHERE o.archived_at IS NULL",
        ),
        lines,
    );
    let got = db.rows(&format!(
        "SELECT merchant_id, id, order_id, method, status, capture_mode, amount, captured, refunded, card_kind, \
         card_last4, transaction_key, failure_reason, {}, {} FROM payments WHERE archived_at IS NULL",
        ms("created_at"),
        ms("updated_at")
    ));
    assert_rows("payments", got, payments);
    assert_customers_match(db, engine);
    let card_digits = CARD_NUMBER.replace('-', "");
    for table in ["events", "payments", "orders"] {
        let dump = db.rows(&format!("SELECT * FROM {table}"));
        let text = format!("{dump:?}");
        assert!(!text.contains(CARD_NUMBER) && !text.contains(&card_digits[..12]), "{table} holds a card number");
    }
    assert_eq!(db.one("SELECT COUNT(*) FROM events WHERE envelope LIKE '%api_key_hash%'"), "0");
}

/// Every customer with their points balance.
fn assert_customers_match(db: &TestDb, engine: &Engine) {
    let mut expected = Vec::new();
    for m in engine.shards.iter().flat_map(Shard::merchants) {
        for c in m.customers.iter() {
            expected.push(vec![m.id.to_string(), c.id.to_string(), m.points_view(&c.id).balance.to_string()]);
        }
    }
    assert_rows("customers", db.rows("SELECT merchant_id, id, points FROM customers"), expected);
}

/// Every expected event exactly once, in log order, with a valid envelope of its own id.
fn assert_events_match(db: &TestDb, expected: &[String]) {
    let got: Vec<String> =
        db.rows("SELECT event_id FROM events ORDER BY lsn, idx").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(got.len(), expected.len(), "events rows vs public events in the log");
    assert!(got == expected, "events differ from the log's public events");
    assert_eq!(db.one("SELECT COUNT(*) FROM events WHERE JSON_VALUE(envelope, '$.event_id') <> event_id"), "0");
}

/// One row per posting, per-account totals equal the engine's, debits equal credits.
fn assert_ledger_matches(db: &TestDb, engine: &Engine) {
    let merchants: Vec<_> = engine.shards.iter().flat_map(Shard::merchants).collect();
    let postings: u64 = merchants.iter().map(|m| m.ledger.postings).sum();
    assert_eq!(db.one("SELECT COUNT(*) FROM ledger_entries"), postings.to_string());
    let mut totals: HashMap<(String, String), (u128, u128)> = HashMap::new();
    for row in db.rows(
        "SELECT merchant_id, debit_account, CAST(SUM(amount) AS UNSIGNED), 0 FROM ledger_entries GROUP BY 1, 2 \
         UNION ALL SELECT merchant_id, credit_account, 0, CAST(SUM(amount) AS UNSIGNED) FROM ledger_entries GROUP BY 1, 2",
    ) {
        let t = totals.entry((row[0].clone(), row[1].clone())).or_default();
        t.0 += row[2].parse::<u128>().expect("sum");
        t.1 += row[3].parse::<u128>().expect("sum");
    }
    let (debits, credits) = totals.values().fold((0, 0), |(d, c), t| (d + t.0, c + t.1));
    assert_eq!(debits, credits, "ledger_entries balance");
    assert!(debits > 0);
    for m in &merchants {
        let accounts = FIXED_ACCOUNTS
            .iter()
            .map(|a| a.name())
            .chain(m.customers.iter().map(|c| format!("customer:{}:points", c.id)));
        for account in accounts {
            let view = m.account_view(&account).expect("account");
            let got = totals.get(&(m.id.to_string(), account.clone())).copied().unwrap_or_default();
            assert_eq!(got, (view.debits, view.credits), "{} {account}", m.id);
        }
    }
}

fn assert_rows(table: &str, mut got: Vec<Vec<String>>, mut expected: Vec<Vec<String>>) {
    got.sort();
    expected.sort();
    assert!(!expected.is_empty(), "{table}: the log has rows for it");
    if got != expected {
        let missing: Vec<_> = expected.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !expected.contains(r)).take(5).collect();
        panic!(
            "{table}: {} rows, {} expected\n  expected but missing: {missing:?}\n  present but wrong: {extra:?}",
            got.len(),
            expected.len()
        );
    }
}

// ---- the tests ---------------------------------------------------------------------------

#[test]
fn rows_equal_the_views_after_catch_up_and_while_streaming() {
    let db = TestDb::create(&base_url(), "views");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 150);

    let mut relay = Relay::new(driver_config(dir.path(), 64));
    let sink = sink(&db, dir.path());
    let counters = sink.counters();
    relay.spawn(sink).expect("spawn");
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());

    // Streaming: more while it runs, including a restock and an item update.
    log.run("m-1", Command::Restock { sku: "sku-1".into(), qty: 7 }).expect("restock");
    log.orders("m-2", 5, 40);
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
    relay.stop();
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    assert_eq!(counters.rebuilds.load(Ordering::Relaxed), 1, "one rebuild, at the start");
    assert_eq!(db.one("SELECT MAX(version) FROM schema_migrations"), schema::latest_version().to_string());
}

/// Archived orders and payments keep their rows, as they were when they left memory,
/// marked with the archive time; the rows still in memory equal the views. Both when the
/// relay streams along (archives in batches after the orders) and when it catches up in one
/// batch that creates and archives the same orders.
#[test]
fn archived_orders_and_payments_keep_their_rows_marked_archived() {
    for (name, events_max) in [("archstream", 64), ("archcatchup", 10_000)] {
        let db = TestDb::create(&base_url(), name);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(dir.path());
        busy_log(&mut log, 60);
        if events_max == 64 {
            relay_until(&db, dir.path(), events_max, log.durable_lsn(), Duration::from_secs(30));
        }
        let before = views(&log.engine);
        assert!(log.archive_settled() > 100);
        log.orders("m-1", 5, 10);
        relay_until(&db, dir.path(), events_max, log.durable_lsn(), Duration::from_secs(30));
        assert_state_matches(&db, &log.engine, log.durable_lsn());
        assert_events_match(&db, &public_event_ids(dir.path(), log.durable_lsn()));
        assert_ledger_matches(&db, &log.engine);

        let merchants: Vec<_> = log.engine.shards.iter().flat_map(Shard::merchants).collect();
        let handed_out: usize = merchants.iter().map(|m| m.orders.len()).sum();
        let live: usize = merchants.iter().map(|m| m.orders.live()).sum();
        assert!(live < handed_out, "{live} of {handed_out} orders in memory");
        assert_eq!(db.one("SELECT COUNT(*) FROM orders"), handed_out.to_string(), "{name}: every order keeps its row");
        let archived = db.one("SELECT COUNT(*) FROM orders WHERE archived_at IS NOT NULL");
        assert_eq!(archived, (handed_out - live).to_string(), "{name}");
        let payments_archived: usize = merchants.iter().map(|m| m.payments.len() - m.payments.live()).sum();
        let got = db.one("SELECT COUNT(*) FROM payments WHERE archived_at IS NOT NULL");
        assert_eq!(got, payments_archived.to_string(), "{name}");
        // Archived rows are settled, show their payment, and keep their lines.
        let unsettled = "SELECT COUNT(*) FROM orders WHERE archived_at IS NOT NULL \
                         AND status NOT IN ('paid', 'cancelled', 'expired', 'refunded')";
        assert_eq!(db.one(unsettled), "0");
        let paid_without_payment = "SELECT COUNT(*) FROM orders WHERE archived_at IS NOT NULL \
                                    AND status = 'paid' AND payment_status IS NULL";
        assert_eq!(db.one(paid_without_payment), "0");
        let lines = "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_lines l \
                     WHERE l.merchant_id = o.merchant_id AND l.order_id = o.id)";
        assert_eq!(db.one(lines), "0", "{name}: every order has its lines");
        let m1 = merchants.iter().find(|m| &*m.id == "m-1").expect("m-1");
        let at = m1.order_archived_at(1).expect("ord_1 archived");
        let row =
            db.one(&format!("SELECT {} FROM orders WHERE merchant_id = 'm-1' AND id = 'ord_1'", ms("archived_at")));
        // The engine remembers the latest archive time of ord_1's range of numbers.
        let row: u64 = row.parse().expect("archived_at in ms");
        assert!(row <= at && row > T0, "{name}: archived at {row}, the range by {at}");
        assert_archived_read_back(&db, &before, &log.engine);
    }
}

/// Every order and payment in memory, as the API shows them, per merchant.
fn views(engine: &Engine) -> Vec<(String, Vec<OrderView>, Vec<PaymentView>)> {
    let of = |m: &surge_core::state::Merchant| {
        let orders = m.orders.iter().filter_map(|(i, _)| m.order_view(&OrderId(i as u64 + 1).to_string()));
        let payments = m.payments.iter().filter_map(|(i, _)| m.payment_view(&PaymentId(i as u64 + 1).to_string()));
        (m.id.to_string(), orders.collect(), payments.collect())
    };
    engine.shards.iter().flat_map(Shard::merchants).map(of).collect()
}

/// What the server reads back for an archived id is the view it had before it left memory
/// (`before`), archived when the engine says (at the latest); a live id reads nothing.
fn assert_archived_read_back(db: &TestDb, before: &[(String, Vec<OrderView>, Vec<PaymentView>)], engine: &Engine) {
    let reader = ColdReader::new(&ColdReadConfig::new(db.url())).expect("reader");
    let (mut archived, mut cards) = (0, 0);
    runtime().block_on(async {
        for (merchant, orders, payments) in before {
            let m = engine.shards.iter().find_map(|s| s.merchant(merchant)).expect("merchant");
            for v in orders {
                let got = reader.order(merchant, v.id.0).await.expect("read an order");
                match m.order_archived_at(v.id.0) {
                    Some(at) => {
                        let got = got.unwrap_or_else(|| panic!("{merchant}/{}: no archived row", v.id));
                        assert_eq!(&got.view, v, "{merchant}/{}", v.id);
                        assert!(got.archived_at_ms <= at && got.archived_at_ms > T0, "{merchant}/{}", v.id);
                        archived += 1;
                    }
                    None => assert_eq!(got, None, "{merchant}/{} is live: not read back", v.id),
                }
            }
            for v in payments {
                let got = reader.payment(merchant, v.id.0).await.expect("read a payment");
                match m.payment_archived_at(v.id.0) {
                    Some(at) => {
                        let got = got.unwrap_or_else(|| panic!("{merchant}/{}: no archived row", v.id));
                        assert_eq!(&got.view, v, "{merchant}/{}", v.id);
                        assert!(got.archived_at_ms <= at, "{merchant}/{}", v.id);
                        cards += usize::from(v.card.is_some());
                    }
                    None => assert_eq!(got, None, "{merchant}/{} is live: not read back", v.id),
                }
            }
        }
        assert_eq!(reader.order("no-such-merchant", 1).await.expect("read"), None);
        reader.close().await;
    });
    assert!(archived > 50 && cards > 0, "{archived} archived orders, {cards} card payments read back");
}

#[test]
fn exactly_once_across_relay_stops_and_writes_cut_mid_transaction() {
    let db = TestDb::create(&base_url(), "once");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    log.shop("m-1", 5);
    log.shop("m-2", 3);
    let cuts = Arc::new(AtomicU32::new(0));
    let rebuilds = Arc::new(AtomicU64::new(0));
    let mut counters: Vec<Arc<MariaDbCounters>> = Vec::new();
    for round in 0..6u32 {
        // Written while no relay runs, then a relay that is stopped mid-stream.
        log.orders(if round % 2 == 0 { "m-1" } else { "m-2" }, 5, 60);
        let mut relay = Relay::new(driver_config(dir.path(), 16));
        let inner = sink(&db, dir.path());
        counters.push(inner.counters());
        let committed = counters.last().expect("counters").clone();
        relay.spawn(CutWrites { inner, every: 3, writes: 0, cuts: cuts.clone() }).expect("spawn");
        // Stop it once a few batches are in (so some write was cut or tried), mid-stream.
        let deadline = Instant::now() + Duration::from_secs(20);
        while committed.transactions.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "no progress in round {round}");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(3 * u64::from(round)));
        relay.stop();
    }
    let stored: Lsn = db.one("SELECT MIN(lsn) FROM relay_offset").parse().expect("lsn");
    assert!(stored < log.durable_lsn(), "the relay was stopped mid-stream ({stored} of {})", log.durable_lsn());
    assert!(cuts.load(Ordering::Relaxed) > 0, "some writes were cut mid-transaction");
    for c in &counters {
        rebuilds.fetch_add(c.rebuilds.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    // A clean relay catches up; nothing is missing and nothing doubled.
    relay_until(&db, dir.path(), 200, log.durable_lsn(), Duration::from_secs(60));
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    eprintln!(
        "cut writes: {}, projection rebuilds in the stopped relays: {}",
        cuts.load(Ordering::Relaxed),
        rebuilds.load(Ordering::Relaxed)
    );
}

#[test]
fn a_row_is_never_overwritten_by_an_older_state() {
    let db = TestDb::create(&base_url(), "forward");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    log.shop("m-1", 3);
    let mut relay = Relay::new(driver_config(dir.path(), 100));
    relay.spawn(sink(&db, dir.path())).expect("spawn");
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
    // Rows stamped with a newer LSN than anything the relay will write.
    let future = 1u64 << 40;
    for sql in [
        format!("UPDATE items SET name = 'from the future', last_lsn = {future} WHERE sku = 'sku-1'"),
        format!("UPDATE customers SET points = 7, last_lsn = {future} WHERE id = 'c-1'"),
    ] {
        query(&db.url(), &sql).expect("update");
    }
    log.orders("m-1", 3, 30);
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
    relay.stop();
    assert_eq!(
        db.rows("SELECT name, last_lsn FROM items WHERE sku = 'sku-1'"),
        vec![vec!["from the future".to_string(), future.to_string()]]
    );
    assert_eq!(db.one("SELECT points FROM customers WHERE id = 'c-1'"), "7");
    // Every other row moved on, and its last_lsn is the newest event it shows.
    let sku0: Lsn = db.one("SELECT last_lsn FROM items WHERE sku = 'sku-0'").parse().expect("lsn");
    assert!(sku0 > 0 && sku0 <= log.durable_lsn());
    let stale = db.one(&format!("SELECT COUNT(*) FROM orders WHERE last_lsn > {}", log.durable_lsn()));
    assert_eq!(stale, "0");
}

#[test]
fn two_relays_on_one_database_write_each_event_once() {
    let db = TestDb::create(&base_url(), "two");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 40);
    let (mut a, mut b) = (Relay::new(driver_config(dir.path(), 24)), Relay::new(driver_config(dir.path(), 40)));
    let (sink_a, sink_b) = (sink(&db, dir.path()), sink(&db, dir.path()));
    let counters = [sink_a.counters(), sink_b.counters()];
    a.spawn(sink_a).expect("spawn");
    b.spawn(sink_b).expect("spawn");
    for m in ["m-1", "m-2", "m-1"] {
        log.orders(m, 5, 30);
    }
    wait_for(&a, log.durable_lsn(), Duration::from_secs(60));
    wait_for(&b, log.durable_lsn(), Duration::from_secs(60));
    a.stop();
    b.stop();
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    let transactions: Vec<u64> = counters.iter().map(|c| c.transactions.load(Ordering::Relaxed)).collect();
    let rebuilds: Vec<u64> = counters.iter().map(|c| c.rebuilds.load(Ordering::Relaxed)).collect();
    eprintln!("two relays: transactions {transactions:?}, rebuilds {rebuilds:?}");
}

fn write_snapshot(log: &LogWriter, lsn: Lsn, shards: &[Shard]) {
    log.wal.write_snapshot(lsn, &image::snapshot_of(shards)).expect("snapshot");
}

#[test]
fn resumes_around_server_snapshots_ahead_of_and_behind_the_database() {
    let db = TestDb::create(&base_url(), "snap");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 60);
    relay_until(&db, dir.path(), 100, log.durable_lsn(), Duration::from_secs(30));
    let at_db = log.durable_lsn();

    // The database behind the snapshot: it gets the snapshot's state, the events of the
    // records in between, and goes on from the snapshot.
    log.orders("m-1", 5, 50);
    extras(&mut log, "m-2", 5);
    let snapshot = log.durable_lsn();
    write_snapshot(&log, snapshot, &log.engine.shards);
    assert!(snapshot > at_db);
    log.orders("m-2", 5, 20);
    let mut relay = Relay::new(driver_config(dir.path(), 100));
    let behind = sink(&db, dir.path());
    let counters = behind.counters();
    relay.spawn(behind).expect("spawn");
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
    relay.stop();
    assert_eq!(counters.rebuilds.load(Ordering::Relaxed), 1);
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());

    // The database ahead of the snapshot: the projection is the snapshot plus the records
    // up to the database's offset; nothing is rewritten.
    let older_lsn = log.durable_lsn();
    let older: Engine = log.engine.clone();
    log.orders("m-1", 5, 40);
    relay_until(&db, dir.path(), 100, log.durable_lsn(), Duration::from_secs(30));
    write_snapshot(&log, older_lsn, &older.shards);
    let events_before: u64 = db.one("SELECT COUNT(*) FROM events").parse().expect("count");
    log.orders("m-2", 5, 30);
    let mut relay = Relay::new(driver_config(dir.path(), 100));
    let ahead = sink(&db, dir.path());
    let counters = ahead.counters();
    relay.spawn(ahead).expect("spawn");
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
    relay.stop();
    assert_eq!(counters.rebuilds.load(Ordering::Relaxed), 1);
    let written = counters.events.load(Ordering::Relaxed);
    let events_after: u64 = db.one("SELECT COUNT(*) FROM events").parse().expect("count");
    assert!(events_after > events_before && written > 0);
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
}

/// A log of small segments, so a snapshot lets retention delete some: records the cold
/// store never had are then gone. Keeps the public event ids it wrote, by LSN.
struct SmallLog {
    wal: surge_wal::Wal,
    engine: Engine,
    now: u64,
    keys: u64,
    events: Vec<(Lsn, String)>,
}

impl SmallLog {
    fn open(dir: &Path) -> SmallLog {
        let config =
            surge_wal::Config { segment_size_bytes: 64 * 1024, batch_bytes_max: 16 * 1024, ..Default::default() };
        let (wal, _) = surge_wal::Wal::open(dir, config).expect("open log");
        SmallLog { wal, engine: Engine::new(2), now: common::T0, keys: 0, events: Vec::new() }
    }

    fn run(&mut self, merchant: &str, command: Command) -> Option<Reply> {
        self.keys += 1;
        let idempotency = Some(Idempotency { key: format!("k{}", self.keys), fingerprint: [1; 16] });
        let request = Request { merchant: merchant.into(), idempotency, command };
        let (_, outcome) = self.engine.execute(&request, self.now).ok()?;
        let surge_core::Outcome::Applied { events, reply } = outcome else { panic!("fresh keys never replay") };
        let payload = surge_core::encoding::encode_events(&events);
        let lsn = self.wal.append(image::EVENTS_RECORD_TYPE, &payload).expect("append").wait().expect("durable");
        self.engine.mark_all_durable();
        for (i, e) in events.iter().enumerate() {
            if e.aggregate().is_some() {
                self.events.push((lsn, surge_core::envelope::event_id(lsn, i as u32)));
            }
        }
        Some(reply)
    }

    fn orders(&mut self, merchant: &str, n: usize) {
        for i in 0..n {
            let order = Command::CreateOrder {
                customer: format!("c-{}", i % 10),
                source: OrderSource::Lines(vec![LineSpec { sku: format!("sku-{}", i % 3), qty: 1 }]),
                payment: PaymentSpec { method: PaymentMethod::Points, card: None, capture: CaptureMode::Automatic },
                queue_token: None,
            };
            let Some(Reply::Order(view)) = self.run(merchant, order) else { panic!("order") };
            if i % 4 == 1 {
                let payment = view.payment.expect("payment").id.to_string();
                self.run(merchant, Command::RefundPayment { payment, amount: Some(300) }).expect("refund");
            }
        }
    }
}

/// The oldest LSN the log directory still has.
fn oldest_lsn(dir: &Path) -> Lsn {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(surge_wal::segment::parse_segment_name))
        .min()
        .expect("a segment")
}

#[test]
fn behind_a_snapshot_whose_records_are_gone_writes_the_state_and_the_events_it_still_has() {
    let db = TestDb::create(&base_url(), "gone");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = SmallLog::open(dir.path());
    log.run("m-1", Command::CreateMerchant { name: "shop".into(), currency: "KRW".into(), api_key_hash: [3; 32] });
    for spec in ItemSpec::numbered(3, 1_000, 10_000) {
        log.run("m-1", Command::PutItem(spec)).expect("item");
    }
    for c in 0..10 {
        let credit = Command::CreditPoints { customer: format!("c-{c}"), amount: 10_000_000, reason: "hi".into() };
        log.run("m-1", credit).expect("points");
    }
    log.orders("m-1", 30);
    relay_until(&db, dir.path(), 100, log.wal.durable_lsn(), Duration::from_secs(30));
    let at_db = log.wal.durable_lsn();

    // The sink is forgotten (as if it had never registered), the log moves on, a snapshot
    // lets retention delete what only the sink still needed.
    log.wal.remove_reader("mariadb").expect("forget the reader");
    log.orders("m-1", 300);
    let snapshot = log.wal.durable_lsn();
    let removed = log.wal.write_snapshot(snapshot, &image::snapshot_of(&log.engine.shards)).expect("snapshot");
    let oldest = oldest_lsn(dir.path());
    assert!(!removed.is_empty() && oldest > at_db + 1, "retention removed records the sink never had");
    assert!(oldest <= snapshot, "the segment holding the snapshot's LSN stays");
    log.orders("m-1", 20);

    relay_until(&db, dir.path(), 100, log.wal.durable_lsn(), Duration::from_secs(30));
    assert_state_matches(&db, &log.engine, log.wal.durable_lsn());
    let expected: Vec<String> =
        log.events.iter().filter(|(lsn, _)| *lsn <= at_db || *lsn >= oldest).map(|(_, id)| id.clone()).collect();
    assert!(expected.len() < log.events.len());
    assert_events_match(&db, &expected);
    let ledger: u64 = db.one("SELECT COUNT(*) FROM ledger_entries").parse().expect("count");
    assert_eq!(
        ledger,
        db.one("SELECT COUNT(*) FROM events WHERE type = 'ledger.posted'").parse::<u64>().expect("count"),
        "one ledger row per stored posting event"
    );
}

// ---- a database of our own to kill -------------------------------------------------------

/// A private `mariadbd` on a free port with its own data directory, for `kill -9`.
struct PrivateServer {
    datadir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateServer {
    fn start() -> PrivateServer {
        let datadir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut server = PrivateServer { datadir, port, child: None };
        server.launch();
        // A fresh data directory is not crash-safe until InnoDB's first checkpoint: shut it
        // down cleanly once, so the kill -9 later tests recovery, not bootstrap.
        let _ = query(&server.url(), "SHUTDOWN");
        if let Some(mut child) = server.child.take() {
            let _ = child.wait();
        }
        server.launch();
        server
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let dir = self.datadir.path();
        let binary = ["/usr/sbin/mariadbd", "/usr/bin/mariadbd", "/usr/local/bin/mariadbd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| panic!("mariadbd is not installed: run `scripts/services.sh mariadb`"));
        std::fs::create_dir_all(dir.join("data")).expect("datadir");
        // No system tables (no mariadb-install-db: it takes seconds): grant checks off,
        // on loopback only.
        let child = Process::new(binary)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .args(["--bind-address=127.0.0.1", "--skip-grant-tables", "--innodb-buffer-pool-size=32M"])
            .args(["--innodb-log-file-size=16M", "--skip-log-bin"])
            .args(if running_as_root() { &["--user=root"][..] } else { &[][..] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = child.unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while query(&self.url(), "SELECT 1").is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("the private mariadbd exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "the private mariadbd did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 mariadbd");
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn running_as_root() -> bool {
    // SAFETY-free check: the effective uid is in /proc/self/status ("Uid: real effective ...").
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn catches_up_exactly_once_after_the_database_is_killed_and_restarted() {
    // The shared server must be up too: this suite never skips.
    drop(TestDb::create(&base_url(), "probe"));
    let mut server = PrivateServer::start();
    let db = TestDb::create(&server.url(), "outage");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 40);

    let mut relay = Relay::new(driver_config(dir.path(), 32));
    let sink = sink(&db, dir.path());
    let counters = sink.counters();
    relay.spawn(sink).expect("spawn");
    let status = relay.statuses()[0].clone();
    // Kill it mid-stream: once some batches are in, while more are coming.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut extra = 0;
    while counters.transactions.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        log.orders("m-1", 5, 5);
        extra += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill9();
    let failures_at_kill = status.failures.load(Ordering::Relaxed);
    log.orders("m-2", 5, 60);
    extras(&mut log, "m-1", 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status.failures.load(Ordering::Relaxed) < failures_at_kill + 2 {
        assert!(Instant::now() < deadline, "the relay did not notice the database is gone");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(status.written_lsn.load(Ordering::Relaxed) < log.durable_lsn());

    server.launch();
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(60));
    relay.stop();
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    eprintln!(
        "outage: {extra} rounds before the kill, {} failures, {} rebuilds",
        status.failures.load(Ordering::Relaxed),
        counters.rebuilds.load(Ordering::Relaxed)
    );
    drop(db);
}

#[test]
fn migrations_are_idempotent_backfill_and_refuse_a_newer_schema() {
    let db = TestDb::create(&base_url(), "schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    log.shop("m-1", 2);
    let rt = runtime();
    let versions = schema::MIGRATIONS.len().to_string();
    for _ in 0..2 {
        let mut s = sink(&db, dir.path());
        assert_eq!(rt.block_on(s.resume(0)).expect("resume"), 0);
    }
    assert_eq!(db.one("SELECT COUNT(*) FROM schema_migrations"), versions);
    // A migration left half-done (its tables dropped, its row not written) reruns.
    query(&db.url(), "DROP TABLE events").expect("drop");
    query(&db.url(), "DELETE FROM schema_migrations").expect("delete");
    let mut s = sink(&db, dir.path());
    assert_eq!(rt.block_on(s.resume(0)).expect("resume"), 0);
    assert_eq!(db.one("SELECT COUNT(*) FROM events"), "0");
    assert_eq!(db.one("SELECT COUNT(*) FROM schema_migrations"), versions);

    // A database written before the customers table existed (schema version 1) gets it
    // filled from the projection when a newer relay starts.
    log.orders("m-1", 2, 30);
    relay_until(&db, dir.path(), 100, log.durable_lsn(), Duration::from_secs(30));
    query(&db.url(), "DROP TABLE customers").expect("drop");
    query(&db.url(), "DELETE FROM schema_migrations WHERE version = 2").expect("delete");
    let mut s = sink(&db, dir.path());
    assert_eq!(rt.block_on(s.resume(0)).expect("resume"), log.durable_lsn());
    assert_eq!(db.one("SELECT COUNT(*) FROM schema_migrations"), versions);
    assert_customers_match(&db, &log.engine);
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());

    query(&db.url(), "INSERT INTO schema_migrations VALUES (999, 'from the future', UTC_TIMESTAMP(3))")
        .expect("insert");
    let mut s = sink(&db, dir.path());
    match rt.block_on(s.resume(0)) {
        Err(SinkError::Fatal(reason)) => assert!(reason.contains("999"), "{reason}"),
        other => panic!("a newer schema must be fatal: {other:?}"),
    }
    assert!(matches!(
        MariaDbSink::new(MariaDbConfig::new(base_url(), dir.path())),
        Err(SinkError::Fatal(reason)) if reason.contains("names no database")
    ));
}

/// Every `events` row as core renders it: (lsn, idx, event_id, type, merchant, aggregate,
/// occurred_at in ms, envelope JSON text), read from the log.
fn expected_event_rows(dir: &Path, durable: Lsn) -> Vec<Vec<String>> {
    let mut tailer = surge_wal::Tailer::open(dir, 1).expect("tail");
    let mut rows = Vec::new();
    while tailer.next_lsn() <= durable {
        let record = tailer.try_next().expect("read").expect("durable record");
        let events = image::record_events(record.record_type, &record.payload).expect("events");
        for (i, e) in events.iter().enumerate() {
            let Some((_, aggregate)) = e.aggregate() else { continue };
            let envelope = serde_json::to_string(&e.envelope(record.lsn, i as u32)).expect("envelope");
            rows.push(vec![
                record.lsn.to_string(),
                i.to_string(),
                surge_core::envelope::event_id(record.lsn, i as u32),
                e.type_name().to_string(),
                e.merchant.to_string(),
                aggregate.to_string(),
                e.at_ms.to_string(),
                envelope,
            ]);
        }
    }
    rows
}

#[test]
fn events_are_stored_byte_for_byte_by_load_data_and_by_insert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 30);
    // A LOAD DATA file's escape and its NULL, and SQL quotes. (Core refuses control
    // characters in names; JSON escapes them anyway; `sql` unit-tests their escapes.)
    let name = "back\\slash, \\N, \\t, \\, 'quoted' \"too\" 한글";
    let spec = ItemSpec { sku: "bytes".into(), name: name.into(), price: 1, stock: 1, queue: None };
    log.run("m-1", Command::PutItem(spec)).expect("item");
    let expected = expected_event_rows(dir.path(), log.durable_lsn());
    assert!(expected.iter().any(|row| row[7].contains("\\t") && row[7].contains("\\\\N")));
    for load_data in [true, false] {
        let db = TestDb::create(&base_url(), if load_data { "load" } else { "insert" });
        let config = MariaDbConfig { load_data, ..MariaDbConfig::new(db.url(), dir.path()) };
        let mut relay = Relay::new(driver_config(dir.path(), 50));
        relay.spawn(MariaDbSink::new(config).expect("sink")).expect("spawn");
        wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
        relay.stop();
        let got = db.rows(&format!(
            "SELECT lsn, idx, event_id, type, merchant_id, aggregate_id, {}, envelope FROM events ORDER BY lsn, idx",
            ms("occurred_at")
        ));
        assert_rows(if load_data { "events (LOAD DATA)" } else { "events (INSERT)" }, got, expected.clone());
        assert_eq!(db.one("SELECT name FROM items WHERE sku = 'bytes'"), name);
        assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    }
}

#[test]
fn an_event_already_stored_stops_the_load_instead_of_being_skipped() {
    // LOAD DATA LOCAL skips a duplicate key with a warning where an INSERT fails: the
    // sink must count the rows and treat the skip as the error it is.
    let db = TestDb::create(&base_url(), "dupload");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 20);
    relay_until(&db, dir.path(), 10_000, log.durable_lsn(), Duration::from_secs(30));
    let events = db.one("SELECT COUNT(*) FROM events");
    // As if the append-only part's offset were lost: the events after it are there.
    let rewound = log.durable_lsn() - 10;
    query(&db.url(), &format!("UPDATE relay_offset SET lsn = {rewound} WHERE sink = 'mariadb.append'"))
        .expect("rewind");
    let mut relay = Relay::new(driver_config(dir.path(), 10_000));
    relay.spawn(sink(&db, dir.path())).expect("spawn");
    let status = relay.statuses()[0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status.is_stopped() {
        assert!(Instant::now() < deadline, "the relay went on over events already stored");
        std::thread::sleep(Duration::from_millis(10));
    }
    relay.stop();
    assert_eq!(db.one("SELECT COUNT(*) FROM events"), events);
    let append = db.one("SELECT lsn FROM relay_offset WHERE sink = 'mariadb.append'");
    assert_eq!(append, rewound.to_string(), "nothing of the append-only part committed");
}

#[test]
fn a_version_2_database_loses_the_redundant_event_id_index() {
    let db = TestDb::create(&base_url(), "v3");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 20);
    relay_until(&db, dir.path(), 100, log.durable_lsn(), Duration::from_secs(30));
    // Back to what version 2 left: the unique index on event_id, no row for version 3.
    query(&db.url(), "CREATE UNIQUE INDEX events_event_id ON events (event_id)").expect("index");
    query(&db.url(), "DELETE FROM schema_migrations WHERE version = 3").expect("delete");
    log.orders("m-2", 5, 20);
    relay_until(&db, dir.path(), 100, log.durable_lsn(), Duration::from_secs(30));
    let mut indexes: Vec<String> = db
        .rows(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events'",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["PRIMARY", "events_by_aggregate"]);
    assert_eq!(db.one("SELECT MAX(version) FROM schema_migrations"), schema::latest_version().to_string());
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    // An event is found by its id through the primary key.
    let id = db.one("SELECT event_id FROM events ORDER BY lsn DESC, idx DESC LIMIT 1");
    let by_id = format!(
        "SELECT event_id FROM events WHERE lsn = CONV(LEFT('{id}', 16), 16, 10) AND idx = CONV(RIGHT('{id}', 4), 16, 10)"
    );
    assert_eq!(db.one(&by_id), id);
}

/// The database as a crash between the two parts' commits leaves it: `behind`'s offset is
/// rewound to `to` and its append-only rows after `to` are gone (`events` for the
/// append-only part, `ledger_entries` for the state part).
fn rewind_part(db: &TestDb, behind: &str, to: Lsn) {
    let table = if behind == "mariadb.append" { "events" } else { "ledger_entries" };
    query(&db.url(), &format!("DELETE FROM {table} WHERE lsn > {to}")).expect("delete");
    query(&db.url(), &format!("UPDATE relay_offset SET lsn = {to} WHERE sink = '{behind}'")).expect("rewind");
}

#[test]
fn each_part_goes_on_from_its_own_offset_after_a_crash_between_their_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 40);
    let middle = log.durable_lsn() / 2;
    for behind in ["mariadb.append", "mariadb"] {
        let db = TestDb::create(&base_url(), "parts");
        relay_until(&db, dir.path(), 30, log.durable_lsn(), Duration::from_secs(30));
        // One part committed up to the end, the other only up to the middle. (For the
        // state part the current-state rows stay newer than its offset, as they would be
        // after a crash between two later batches; forward-only upserts keep them.)
        rewind_part(&db, behind, middle);
        let mut relay = Relay::new(driver_config(dir.path(), 30));
        let inner = sink(&db, dir.path());
        let counters = inner.counters();
        relay.spawn(inner).expect("spawn");
        wait_for(&relay, log.durable_lsn(), Duration::from_secs(30));
        relay.stop();
        // Nothing doubled (a second `events` row fails the load), nothing missing.
        assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
        let events = counters.events.load(Ordering::Relaxed);
        if behind == "mariadb" {
            assert_eq!(events, 0, "the append-only part skips what it has");
        } else {
            assert!(events > 0);
        }
    }
}

#[test]
fn a_database_with_one_offset_gets_the_append_offset_where_the_state_is() {
    let db = TestDb::create(&base_url(), "oneoffset");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 20);
    relay_until(&db, dir.path(), 100, log.durable_lsn(), Duration::from_secs(30));
    // As a version-3 database: one offset row, for both parts.
    query(&db.url(), "DELETE FROM relay_offset WHERE sink = 'mariadb.append'").expect("delete");
    query(&db.url(), "DELETE FROM schema_migrations WHERE version = 4").expect("delete");
    log.orders("m-1", 5, 20);
    relay_until(&db, dir.path(), 100, log.durable_lsn(), Duration::from_secs(30));
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    assert_eq!(db.one("SELECT COUNT(*) FROM schema_migrations WHERE version = 4"), "1");
}

#[test]
fn a_server_that_refuses_local_files_gets_inserts() {
    // A private server, since `local_infile` is the server's global setting.
    let server = PrivateServer::start();
    query(&server.url(), "SET GLOBAL local_infile = 0").expect("local_infile off");
    let db = TestDb::create(&server.url(), "noinfile");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogWriter::open(dir.path());
    busy_log(&mut log, 30);
    let mut relay = Relay::new(driver_config(dir.path(), 40));
    let sink = sink(&db, dir.path());
    let counters = sink.counters();
    relay.spawn(sink).expect("spawn");
    wait_for(&relay, log.durable_lsn(), Duration::from_secs(60));
    relay.stop();
    assert_matches(&db, &log.engine, dir.path(), log.durable_lsn());
    assert_eq!(relay.statuses()[0].failures.load(Ordering::Relaxed), 0, "the fallback is no failure");
    assert!(counters.events.load(Ordering::Relaxed) > 0);
    drop(db);
}
