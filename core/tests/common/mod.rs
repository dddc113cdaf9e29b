//! The fixture of the scenario tests: one shard, a clock, and helpers that run commands
//! with every invariant checked after each.
#![allow(dead_code)] // each test file uses its own part

pub use surge_core::command::*;
pub use surge_core::view::Reply;
pub use surge_core::{CoreError, Event, Outcome, Shard, UnixMs};

pub const T0: UnixMs = 1_763_700_000_000;
/// What a host would have sealed the test card into (the engine never opens it).
pub const SEALED: &[u8] = b"sealed card";

pub struct Fixture {
    pub shard: Shard,
    pub now: UnixMs,
    keys: u64,
}

pub fn item(sku: &str, price: u64, stock: u64) -> Command {
    Command::PutItem(ItemSpec { sku: sku.into(), name: format!("item {sku}"), price, stock, queue: None })
}

pub fn lines(spec: &[(&str, u64)]) -> Vec<LineSpec> {
    spec.iter().map(|(sku, qty)| LineSpec { sku: sku.to_string(), qty: *qty }).collect()
}

pub fn pay(method: PaymentMethod) -> PaymentSpec {
    let card = (method == PaymentMethod::Card).then(|| CardSpec {
        number: "1234-5678-9814-1451".into(),
        kind: "SAMSUNG".into(),
        sealed: SEALED.into(),
    });
    PaymentSpec { method, card, capture: CaptureMode::Automatic }
}

pub fn order(customer: &str, l: &[(&str, u64)], method: PaymentMethod) -> Command {
    Command::CreateOrder {
        customer: customer.into(),
        source: OrderSource::Lines(lines(l)),
        payment: pay(method),
        queue_token: None,
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let mut f = Fixture { shard: Shard::new(), now: T0, keys: 0 };
        for m in ["m-1", "m-2"] {
            f.run_as(m, Command::CreateMerchant { name: "shop".into(), currency: "KRW".into(), api_key_hash: [7; 32] });
        }
        f
    }

    pub fn try_as(&mut self, merchant: &str, command: Command) -> Result<Reply, CoreError> {
        let request = Request { merchant: merchant.into(), idempotency: None, command };
        let before = self.shard.digest();
        let result = self.shard.execute(&request, self.now);
        let applied = self.shard.applied_events();
        self.shard.mark_durable(applied);
        self.shard.check_invariants().expect("invariants");
        match result {
            Ok(Outcome::Applied { reply, .. }) | Ok(Outcome::Replayed { reply }) => Ok(reply),
            Err(e) => {
                assert_eq!(before, self.shard.digest(), "a refused command changed state");
                Err(e)
            }
        }
    }

    /// Runs `command` as m-1 and returns the events it logged (none for a refusal, which
    /// panics).
    pub fn events(&mut self, command: Command) -> Vec<Event> {
        let request = Request { merchant: "m-1".into(), idempotency: None, command };
        let outcome = self.shard.execute(&request, self.now);
        let applied = self.shard.applied_events();
        self.shard.mark_durable(applied);
        self.shard.check_invariants().expect("invariants");
        match outcome {
            Ok(Outcome::Applied { events, .. }) => events,
            other => panic!("{:?}: {other:?}", request.command),
        }
    }

    pub fn try_(&mut self, command: Command) -> Result<Reply, CoreError> {
        self.try_as("m-1", command)
    }

    pub fn run_as(&mut self, merchant: &str, command: Command) -> Reply {
        let shown = format!("{command:?}");
        self.try_as(merchant, command).unwrap_or_else(|e| panic!("{shown}: {e}"))
    }

    pub fn run(&mut self, command: Command) -> Reply {
        self.run_as("m-1", command)
    }

    pub fn keyed(&mut self, key: &str, fingerprint: u8, command: Command) -> Result<Outcome, CoreError> {
        self.keys += 1;
        let request = Request {
            merchant: "m-1".into(),
            idempotency: Some(Idempotency { key: key.into(), fingerprint: [fingerprint; 16] }),
            command,
        };
        self.shard.execute(&request, self.now)
    }

    pub fn tick(&mut self, advance_ms: u64) {
        self.now += advance_ms;
        self.shard.tick(self.now);
        let applied = self.shard.applied_events();
        self.shard.mark_durable(applied);
        self.shard.check_invariants().expect("invariants");
    }

    pub fn m(&self) -> &surge_core::state::Merchant {
        self.shard.merchant("m-1").expect("m-1")
    }

    pub fn stock(&self, sku: &str) -> (u64, u64, u64, u64) {
        let i = self.m().item_view(sku).expect("item");
        (i.stock, i.available, i.held, i.sold)
    }

    pub fn balance(&self, customer: &str) -> u64 {
        self.m().points_view(customer).balance
    }

    pub fn account(&self, name: &str) -> (u128, u128) {
        let a = self.m().account_view(name).expect("account");
        (a.debits, a.credits)
    }
}

pub fn as_order(reply: Reply) -> surge_core::view::OrderView {
    match reply {
        Reply::Order(o) => o,
        other => panic!("not an order: {other:?}"),
    }
}

pub fn as_payment(reply: Reply) -> surge_core::view::PaymentView {
    match reply {
        Reply::Payment(p) => p,
        other => panic!("not a payment: {other:?}"),
    }
}

pub fn as_hold(reply: Reply) -> surge_core::view::HoldView {
    match reply {
        Reply::Hold(h) => h,
        other => panic!("not a hold: {other:?}"),
    }
}

pub fn credit(customer: &str, amount: u64) -> Command {
    Command::CreditPoints { customer: customer.into(), amount, reason: "signup".into() }
}
