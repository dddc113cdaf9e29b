//! Catch-up rate of the MariaDB cold store: writes a log of `EVENTS` (default 200,000)
//! events the way the server does (core decides, one record per command, group commit),
//! then times a relay with the MariaDB sink from an empty database to the durable LSN,
//! `RUNS` times (default 3) on fresh databases, and prints events/s and rows/s per run and
//! their medians.
//!
//!     cargo run --release -p surge-relay --example mariadb_catchup
//!     SURGE_TEST_MARIADB_URL=mysql://root@127.0.0.1:3306 EVENTS=500000 RUNS=3 cargo run ...
//!
//! `BATCH` sets the driver's `batch.events_max` (default 10,000). On Linux with a local
//! server it also prints `mariadbd`'s and the relay's CPU time per row, which a busy
//! machine disturbs less than the wall-clock rate.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use surge_core::command::*;
use surge_core::encoding::encode_events;
use surge_core::image::EVENTS_RECORD_TYPE;
use surge_core::view::Reply;
use surge_core::{Engine, Outcome, UnixMs};
use surge_relay::mariadb::{MariaDbConfig, MariaDbSink};
use surge_relay::{DriverConfig, Relay};
use surge_wal::{Config, Wal};

const T0: UnixMs = 1_763_700_000_000;
const MERCHANTS: usize = 8;
const SKUS: usize = 200;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Executes commands and appends each one's events as a record; waits for durability
/// only now and then (the server's group commit does the same across requests).
struct Writer {
    wal: Wal,
    engine: Engine,
    now: UnixMs,
    keys: u64,
    events: u64,
    pending: Option<surge_wal::AppendHandle>,
}

impl Writer {
    fn run(&mut self, merchant: &str, command: Command) -> Option<Reply> {
        self.keys += 1;
        let idempotency = Some(Idempotency { key: format!("k{}", self.keys), fingerprint: [0; 16] });
        let request = Request { merchant: merchant.into(), idempotency, command };
        let Ok((_, Outcome::Applied { events, reply })) = self.engine.execute(&request, self.now) else { return None };
        self.append(&encode_events(&events), events.len());
        Some(reply)
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        for (_, events) in self.engine.tick(self.now) {
            self.append(&encode_events(&events), events.len());
        }
    }

    fn append(&mut self, payload: &[u8], events: usize) {
        let handle = self.wal.append(EVENTS_RECORD_TYPE, payload).expect("append");
        self.events += events as u64;
        if self.keys % 512 == 0 {
            handle.wait().expect("durable");
            self.engine.mark_all_durable();
        } else {
            self.pending = Some(handle);
        }
    }

    fn flush(&mut self) {
        if let Some(h) = self.pending.take() {
            h.wait().expect("durable");
        }
        self.engine.mark_all_durable();
    }
}

fn write_log(dir: &Path, target_events: u64) -> (u64, u64) {
    let (wal, _) = Wal::open(dir, Config::default()).expect("open log");
    let mut w = Writer { wal, engine: Engine::new(2), now: T0, keys: 0, events: 0, pending: None };
    for m in 0..MERCHANTS {
        let merchant = format!("m-{m}");
        w.run(
            &merchant,
            Command::CreateMerchant { name: merchant.clone(), currency: "KRW".into(), api_key_hash: [7; 32] },
        );
        let items = ItemSpec::numbered(SKUS, 1_000, 1_000_000);
        w.run(&merchant, Command::PutItems { items });
        for c in 0..100 {
            let credit =
                Command::CreditPoints { customer: format!("c-{c}"), amount: 1 << 40, reason: "welcome".into() };
            w.run(&merchant, credit);
        }
    }
    let mut i = 0usize;
    while w.events < target_events {
        let merchant = format!("m-{}", i % MERCHANTS);
        let method = if i % 7 == 3 { PaymentMethod::None } else { PaymentMethod::Points };
        let order = Command::CreateOrder {
            customer: format!("c-{}", i % 100),
            source: OrderSource::Lines(vec![
                LineSpec { sku: format!("sku-{}", i % SKUS), qty: 1 + (i % 3) as u64 },
                LineSpec { sku: format!("sku-{}", (i * 7 + 1) % SKUS), qty: 1 },
            ]),
            payment: PaymentSpec { method, card: None, capture: CaptureMode::Automatic },
            queue_token: None,
        };
        if let Some(Reply::Order(view)) = w.run(&merchant, order) {
            match (i % 5, view.payment.map(|p| p.id.to_string())) {
                (1, Some(payment)) => {
                    w.run(&merchant, Command::RefundPayment { payment, amount: Some(500) });
                }
                (2, _) => {
                    w.run(&merchant, Command::CancelOrder { order: view.id.to_string() });
                }
                _ => {}
            }
        }
        if i % 1000 == 999 {
            w.tick(60_000);
        }
        i += 1;
    }
    w.tick(16 * 60 * 1000);
    w.flush();
    let durable = w.wal.durable_lsn();
    let events = w.events;
    w.wal.close().expect("close log");
    (durable, events)
}

fn admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut conn = mysql_async::Conn::from_url(url)
            .await
            .unwrap_or_else(|e| panic!("MariaDB at {url}: {e} (start it with scripts/services.sh mariadb)"));
        conn.query_drop(sql).await.expect(sql);
        conn.disconnect().await.expect("disconnect");
    });
}

/// CPU seconds (user + system) used so far by the processes `/proc/<pid>/stat` of which
/// matches: this process (`self`) or every local `mariadbd` (only `MARIADBD_PID` if set,
/// for a private server beside a shared one). `None` off Linux or if the server runs
/// elsewhere. Ticks are taken as 1/100 s (Linux's `USER_HZ`).
fn cpu_seconds(which: &str) -> Option<f64> {
    let stat_cpu = |stat: &str| -> Option<f64> {
        // Fields after the command name (which is in parentheses).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
        Some((utime + stime) / 100.0)
    };
    if which == "self" {
        return stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?);
    }
    if let Ok(pid) = std::env::var("MARIADBD_PID") {
        return stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?);
    }
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = entry.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == which) {
            if let Some(cpu) = std::fs::read_to_string(path.join("stat")).ok().as_deref().and_then(stat_cpu) {
                *total.get_or_insert(0.0) += cpu;
            }
        }
    }
    total
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let server = std::env::var("SURGE_TEST_MARIADB_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let target = env("EVENTS", 200_000);
    let runs = env("RUNS", 3).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (durable, events) = write_log(dir.path(), target);
    println!("log: {events} events in {durable} records, written in {:.1?}", started.elapsed());

    let (mut event_rates, mut row_rates) = (Vec::new(), Vec::new());
    let (mut db_cpu, mut relay_cpu) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let db = format!("surge_catchup_{}_{run}", std::process::id());
        admin(&server, &format!("CREATE DATABASE {db}"));
        // The reader checkpoint left by the previous run does not matter: the sink goes on
        // from the database's own offset (0 in a fresh database).
        let url = format!("{}/{db}", server.trim_end_matches('/'));
        let sink = MariaDbSink::new(MariaDbConfig::new(url, dir.path())).expect("sink");
        let counters = sink.counters();
        let mut config = DriverConfig::new(dir.path().to_path_buf());
        config.batch.events_max = env("BATCH", config.batch.events_max as u64) as usize;
        let mut relay = Relay::new(config);
        let cpu_before = (cpu_seconds("mariadbd"), cpu_seconds("self"));
        let started = Instant::now();
        relay.spawn(sink).expect("spawn");
        let status = relay.statuses()[0].clone();
        while status.written_lsn.load(Ordering::Relaxed) < durable {
            assert!(started.elapsed() < Duration::from_secs(600), "no catch-up within 10 minutes");
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = started.elapsed().as_secs_f64();
        let cpu_after = (cpu_seconds("mariadbd"), cpu_seconds("self"));
        relay.stop();
        let rows = counters.rows.load(Ordering::Relaxed);
        let written = counters.events.load(Ordering::Relaxed);
        assert_eq!(written, events, "every event went through the sink once");
        let (e, r) = (written as f64 / took, rows as f64 / took);
        println!(
            "run {}: {written} events, {rows} rows, {} transactions in {took:.2} s: {e:.0} events/s, {r:.0} rows/s",
            run + 1,
            counters.transactions.load(Ordering::Relaxed)
        );
        // CPU per row is steadier than wall time on a shared machine.
        if let (Some(a), Some(b)) = (cpu_before.0, cpu_after.0) {
            let us = (b - a) * 1e6 / rows as f64;
            print!("  mariadbd {:.2} s CPU ({us:.1} µs/row)", b - a);
            db_cpu.push(us);
        }
        if let (Some(a), Some(b)) = (cpu_before.1, cpu_after.1) {
            let us = (b - a) * 1e6 / rows as f64;
            print!("  relay {:.2} s CPU ({us:.1} µs/row)", b - a);
            relay_cpu.push(us);
        }
        println!();
        event_rates.push(e);
        row_rates.push(r);
        admin(&server, &format!("DROP DATABASE {db}"));
    }
    print!("median of {runs}: {:.0} events/s, {:.0} rows/s", median(event_rates), median(row_rates));
    if !db_cpu.is_empty() {
        print!(", mariadbd {:.1} µs CPU/row", median(db_cpu));
    }
    if !relay_cpu.is_empty() {
        print!(", relay {:.1} µs CPU/row", median(relay_cpu));
    }
    println!();
}
