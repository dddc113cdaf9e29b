//! Shared by the relay's integration tests: a log directory written the way `surge serve`
//! writes it (core executes commands, each command's events become one durable record of
//! `EVENTS_RECORD_TYPE`), with a realistic mix of events, and the engine that holds the
//! truth to compare sinks against.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use surge_core::command::*;
use surge_core::encoding::encode_events;
use surge_core::image::EVENTS_RECORD_TYPE;
use surge_core::view::Reply;
use surge_core::{CoreError, Engine, Outcome, UnixMs};
use surge_wal::{Config, Lsn, Wal};

pub const T0: UnixMs = 1_763_700_000_000;

pub struct LogWriter {
    pub dir: PathBuf,
    pub wal: Wal,
    pub engine: Engine,
    pub now: UnixMs,
    keys: u64,
}

impl LogWriter {
    /// Opens (or creates) the log in `dir` with an engine of 2 shards.
    pub fn open(dir: &Path) -> LogWriter {
        LogWriter::open_with(dir, Config::default())
    }

    /// Small segments (16 KiB batches, 64 KiB segments): retention has something to do.
    pub fn open_small_segments(dir: &Path) -> LogWriter {
        LogWriter::open_with(
            dir,
            Config { segment_size_bytes: 64 << 10, batch_bytes_max: 16 << 10, ..Config::default() },
        )
    }

    pub fn open_with(dir: &Path, config: Config) -> LogWriter {
        let (wal, recovery) = Wal::open(dir, config).expect("open log");
        assert_eq!(recovery.record_count(), 0, "LogWriter starts on an empty log");
        LogWriter { dir: dir.to_path_buf(), wal, engine: Engine::new(2), now: T0, keys: 0 }
    }

    /// Executes one command; its events (if any) become one durable record.
    pub fn run(&mut self, merchant: &str, command: Command) -> Result<Reply, CoreError> {
        self.keys += 1;
        let idempotency = Some(Idempotency { key: format!("k{}", self.keys), fingerprint: [self.keys as u8; 16] });
        let request = Request { merchant: merchant.into(), idempotency, command };
        let (_, outcome) = self.engine.execute(&request, self.now)?;
        let Outcome::Applied { events, reply } = outcome else { panic!("fresh keys never replay") };
        self.append(&encode_events(&events));
        Ok(reply)
    }

    /// Advances the clock by `ms` and logs whatever expires.
    pub fn tick(&mut self, ms: u64) {
        self.now += ms;
        for (_, events) in self.engine.tick(self.now) {
            self.append(&encode_events(&events));
        }
    }

    /// Lets the retention (the default, 7 days) pass, tick by tick until nothing more is
    /// archived: settled orders, payments, holds and tokens leave the engine's memory through
    /// `*.archived` events in the log. Returns how many archive events were logged.
    pub fn archive_settled(&mut self) -> usize {
        self.now += surge_core::limits::RETAIN_SETTLED_MS_DEFAULT;
        let mut archived = 0;
        loop {
            self.now += 1_000;
            let mut logged = 0;
            for (_, events) in self.engine.tick(self.now) {
                logged += events.iter().filter(|e| e.type_name().ends_with("archived")).count();
                self.append(&encode_events(&events));
            }
            if logged == 0 {
                return archived;
            }
            archived += logged;
        }
    }

    fn append(&mut self, payload: &[u8]) -> Lsn {
        let lsn = self.wal.append(EVENTS_RECORD_TYPE, payload).expect("append").wait().expect("durable");
        self.engine.mark_all_durable();
        lsn
    }

    /// Writes a snapshot of the engine the way `surge serve` does; returns the segments
    /// retention removed.
    pub fn snapshot(&self) -> Vec<String> {
        let image = surge_core::image::snapshot_of(&self.engine.shards);
        self.wal.write_snapshot(self.durable_lsn(), &image).expect("snapshot")
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.wal.durable_lsn()
    }

    /// A merchant with `skus` items of stock 1,000 and price 1,000, and customers c-0..c-9
    /// with 1,000,000 points each.
    pub fn shop(&mut self, merchant: &str, skus: usize) {
        let hash = [merchant.len() as u8; 32];
        self.run(merchant, Command::CreateMerchant { name: "shop".into(), currency: "KRW".into(), api_key_hash: hash })
            .expect("merchant");
        for spec in ItemSpec::numbered(skus, 1_000, 1_000) {
            self.run(merchant, Command::PutItem(spec)).expect("item");
        }
        for c in 0..10 {
            let credit =
                Command::CreditPoints { customer: format!("c-{c}"), amount: 1_000_000, reason: "welcome".into() };
            self.run(merchant, credit).expect("points");
        }
    }

    /// `n` orders of a realistic mix: most paid with points, some refunded in part or
    /// cancelled, some left awaiting payment, a few holds released or expired. Returns the
    /// order ids.
    pub fn orders(&mut self, merchant: &str, skus: usize, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let sku = format!("sku-{}", i % skus.max(1));
            let customer = format!("c-{}", i % 10);
            let method = if i % 7 == 3 { PaymentMethod::None } else { PaymentMethod::Points };
            let order = Command::CreateOrder {
                customer: customer.clone(),
                source: OrderSource::Lines(vec![LineSpec { sku: sku.clone(), qty: 1 + (i % 3) as u64 }]),
                payment: PaymentSpec { method, card: None, capture: CaptureMode::Automatic },
                queue_token: None,
            };
            let Ok(Reply::Order(view)) = self.run(merchant, order) else { continue };
            let (order_id, payment_id) = (view.id.to_string(), view.payment.as_ref().map(|p| p.id.to_string()));
            match (i % 5, payment_id) {
                (1, Some(payment)) => {
                    let _ = self.run(merchant, Command::RefundPayment { payment, amount: Some(500) });
                }
                (2, _) => {
                    let _ = self.run(merchant, Command::CancelOrder { order: order_id.clone() });
                }
                _ => {}
            }
            if i % 11 == 5 {
                let hold = Command::CreateHold {
                    customer,
                    lines: vec![LineSpec { sku, qty: 1 }],
                    ttl_s: Some(1),
                    queue_token: None,
                };
                if let Ok(Reply::Hold(h)) = self.run(merchant, hold) {
                    if i % 2 == 0 {
                        let _ = self.run(merchant, Command::ReleaseHold { hold: h.id.to_string() });
                    }
                }
            }
            ids.push(order_id);
        }
        // Let holds and unpaid orders expire (unpaid orders after 15 minutes).
        self.tick(16 * 60 * 1000);
        ids
    }
}
