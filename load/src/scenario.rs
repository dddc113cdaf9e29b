//! The scenarios: each sets up its own merchant, items and points through the API and runs
//! one kind of operation under load, noting what the server acknowledged; `checks` then
//! checks the scenario's invariants through the API against those notes.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::http::{problem_code, Conn, Resp, Target};
use crate::sched::Worker;
use crate::stats::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// A few hot SKUs, many buyers, points payments; sells out.
    FlashSale,
    /// A seat map (stock 1 per seat), contention on the best rows, holds then orders, some
    /// holds left to expire.
    Concert,
    /// Order (points, captured at once) -> partial refund -> refund of the rest.
    FullFlow,
    /// Orders, a share of them sent twice with the same Idempotency-Key; each replay must be
    /// identical.
    Retries,
    /// Reads (items, orders, points) and order writes.
    Mixed,
    /// `POST /v1/batch` with many create_order operations per request.
    Batch,
    /// Keyed points orders, one per caller (--connections callers), gathered into binary
    /// batches (`application/vnd.surge.batch`) by `surge-client` over
    /// --client-connections connections.
    BatchBinary,
    /// Plain `POST /v1/orders` (points) on ample stock: the target judged against the bare
    /// axum baseline (with --skip-setup it needs no merchant: for the baseline).
    Orders,
    /// `POST /v1/orders` paid by card (202, settled later through the payment gateway); needs
    /// a server with a gateway and `surge gateway-sim` at --gateway-sim-url.
    CardFlow,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::FlashSale => "flash-sale",
            ScenarioKind::Concert => "concert",
            ScenarioKind::FullFlow => "full-flow",
            ScenarioKind::Retries => "retries",
            ScenarioKind::Mixed => "mixed",
            ScenarioKind::Batch => "batch",
            ScenarioKind::BatchBinary => "batch-binary",
            ScenarioKind::Orders => "orders",
            ScenarioKind::CardFlow => "card-flow",
        }
    }

    /// Refusals that are part of the scenario, not errors.
    fn expected(self, label: &str) -> bool {
        match self {
            ScenarioKind::FlashSale | ScenarioKind::Concert => {
                label == "409 insufficient_stock" || label == "402 insufficient_points"
            }
            _ => false,
        }
    }
}

/// Scenario knobs (from the command line).
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub kind: ScenarioKind,
    pub customers: u32,
    /// flash-sale: hot SKUs and the stock of each.
    pub hot_skus: u32,
    pub stock: u64,
    /// concert: seats (stock 1 each), hold TTL, share of holds turned into orders.
    pub seats: u32,
    pub hold_ttl_s: u64,
    pub convert_share: f64,
    /// retries: share of orders sent twice.
    pub retry_share: f64,
    /// batch: operations per request.
    pub batch_size: u32,
    /// batch-binary: the batching client's connections.
    pub client_connections: usize,
    /// card-flow: share of card orders with manual capture (the rest capture automatically).
    pub manual_share: f64,
    /// card-flow: the gateway-sim's base URL (`/sim/config`, `/sim/stats`).
    pub gateway_sim_url: String,
    /// card-flow: how long to wait for the card payments to settle after the load; `None`:
    /// [`default_settle_wait`].
    pub settle_wait_s: Option<f64>,
    /// card-flow: the approval rate the paid share is judged against; `None`: the sim's own.
    pub approval_rate: Option<f64>,
    /// card-flow: share of card payments that may fail without a gateway's decision (no
    /// gateway accepted them in time) before the paid share counts as too low.
    pub max_gave_up_share: f64,
    /// Skip merchant/items/points set-up and the checks (for the baseline).
    pub skip_setup: bool,
    pub seed: u64,
    /// The merchant's id; `None`: `load-{scenario}-{run id}`.
    pub merchant_id: Option<String>,
}

/// The card every card-flow order pays with (the sim keeps only its last four digits).
const CARD: &str = r#"{"number":"4111-1111-1111-1451","type":"KB"}"#;

/// card-flow: how long the checks wait for the card payments to settle, unless
/// --settle-wait says otherwise. With every callback delivered, a payment settles within the
/// server's submit deadline (10 s by default: retries while the gateway answers 5xx) plus the
/// sim's settle delay (at most 5 s by default): 30 s leaves room for a busy machine. When
/// the sim drops callbacks, the server finds those payments by looking them up (from 10 s
/// after acceptance) and gives up on them at its settle deadline (120 s by default), so the
/// wait covers that deadline.
pub fn default_settle_wait(drop_callbacks: f64) -> Duration {
    if drop_callbacks > 0.0 {
        Duration::from_secs(140)
    } else {
        Duration::from_secs(30)
    }
}

/// card-flow: one card order the server acknowledged (202).
#[derive(Clone, Debug)]
pub(crate) struct CardOrder {
    pub id: String,
    /// Index into the scenario's SKUs.
    pub sku: usize,
    pub qty: u64,
    pub manual: bool,
}

/// card-flow: the gateway-sim as it was at set-up.
#[derive(Clone, Debug)]
pub(crate) struct SimBefore {
    pub target: Target,
    /// `GET /sim/config`: `success_rate`, `approval_rate`, `drop_callbacks`.
    pub config: Value,
    /// `GET /sim/stats`, to take the run's share of the counters.
    pub stats: Value,
}

/// What the scenario shares between its workers and the checks.
pub struct State {
    pub params: Params,
    pub target: Target,
    pub timeout: Duration,
    pub auth: String,
    pub run_id: String,
    pub(crate) skus: Vec<String>,
    prices: Vec<u64>,
    /// Points each customer got at set-up.
    pub(crate) credit: u64,
    /// Requests the workers sent (whatever became of them).
    pub(crate) sent: AtomicU64,
    /// Units acknowledged (2xx) per SKU.
    pub(crate) sold: Vec<AtomicU64>,
    /// Points acknowledged as spent minus refunded, per customer.
    pub(crate) spent: Vec<AtomicI64>,
    /// Mutating requests whose outcome is unknown (transport failure, timeout).
    pub(crate) unknown: AtomicU64,
    pub(crate) replays_checked: AtomicU64,
    pub(crate) replay_mismatches: AtomicU64,
    pub(crate) mismatch_example: Mutex<Option<String>>,
    /// concert: seats tried, seats ordered.
    pub(crate) touched: Mutex<HashSet<u32>>,
    pub(crate) ordered: Mutex<HashSet<u32>>,
    /// mixed: recent order ids; full-flow: fully refunded payment ids (a sample).
    pub(crate) ids: Mutex<Vec<String>>,
    ids_seen: AtomicU64,
    /// batch: operations inside batches that succeeded.
    pub inner_ok: AtomicU64,
    pub inner_total: AtomicU64,
    /// card-flow: every card order acknowledged, and the sim before the run.
    pub(crate) card_orders: Mutex<Vec<CardOrder>>,
    pub(crate) sim: Option<SimBefore>,
    /// batch-binary: the client every caller's order goes through.
    pub(crate) batcher: Option<surge_client::batcher::Client>,
}

const IDS_KEPT: usize = 1000;

fn order_body(customer: u32, sku: &str, qty: u64) -> String {
    format!(
        r#"{{"customer_id":"c-{customer}","lines":[{{"sku":"{sku}","qty":{qty}}}],"payment":{{"method":"points"}}}}"#
    )
}

fn card_order_body(customer: u32, sku: &str, qty: u64, manual: bool) -> String {
    let capture = if manual { "manual" } else { "automatic" };
    format!(
        r#"{{"customer_id":"c-{customer}","lines":[{{"sku":"{sku}","qty":{qty}}}],"payment":{{"method":"card","card":{CARD},"capture":"{capture}"}}}}"#
    )
}

fn transport(e: &std::io::Error) -> Outcome {
    let label = match e.kind() {
        std::io::ErrorKind::TimedOut => "transport: timed out",
        std::io::ErrorKind::ConnectionRefused => "transport: connection refused",
        std::io::ErrorKind::ConnectionReset => "transport: connection reset",
        std::io::ErrorKind::UnexpectedEof => "transport: closed by the server",
        _ => "transport: other",
    };
    Outcome::answer(label, true)
}

/// What a scenario sells and credits.
pub(crate) struct Catalogue {
    skus: Vec<String>,
    prices: Vec<u64>,
    /// Stock of every SKU.
    stock: u64,
    /// Points each customer is credited with.
    credit: u64,
}

impl Catalogue {
    pub(crate) fn of(params: &Params) -> Catalogue {
        let numbered = |n: usize, price: u64| ((0..n).map(|i| format!("sku-{i}")).collect(), vec![price; n]);
        let (skus, prices, credit) = match params.kind {
            ScenarioKind::FlashSale => (
                (0..params.hot_skus).map(|i| format!("hot-{i}")).collect(),
                vec![1000; params.hot_skus as usize],
                10_000,
            ),
            ScenarioKind::Concert => {
                let skus = (0..params.seats).map(seat_sku).collect();
                // The front rows cost more.
                let prices = (0..params.seats).map(|s| if s < params.seats / 20 { 3000 } else { 1000 }).collect();
                (skus, prices, 10_000)
            }
            ScenarioKind::FullFlow => {
                let (skus, prices) = numbered(10, 1000);
                (skus, prices, 1_000_000_000)
            }
            ScenarioKind::Retries
            | ScenarioKind::Mixed
            | ScenarioKind::Batch
            | ScenarioKind::BatchBinary
            | ScenarioKind::Orders => {
                let (skus, prices) = numbered(20, 1);
                (skus, prices, 1_000_000_000_000)
            }
            // Paid by card: the points credited at set-up stay untouched.
            ScenarioKind::CardFlow => {
                let (skus, prices) = numbered(20, 1000);
                (skus, prices, 1000)
            }
        };
        let stock = match params.kind {
            ScenarioKind::FlashSale => params.stock,
            ScenarioKind::Concert => 1,
            _ => 1_000_000_000,
        };
        Catalogue { skus, prices, stock, credit }
    }
}

impl State {
    /// The state before set-up (no merchant yet: `auth` is a placeholder).
    pub(crate) fn new(
        params: Params,
        target: Target,
        timeout: Duration,
        run_id: String,
        catalogue: &Catalogue,
    ) -> State {
        let customers = params.customers.max(1);
        State {
            target,
            timeout,
            auth: "Bearer none".to_string(),
            run_id,
            skus: catalogue.skus.clone(),
            prices: catalogue.prices.clone(),
            credit: catalogue.credit,
            sent: AtomicU64::new(0),
            sold: catalogue.skus.iter().map(|_| AtomicU64::new(0)).collect(),
            spent: (0..customers).map(|_| AtomicI64::new(0)).collect(),
            unknown: AtomicU64::new(0),
            replays_checked: AtomicU64::new(0),
            replay_mismatches: AtomicU64::new(0),
            mismatch_example: Mutex::new(None),
            touched: Mutex::new(HashSet::new()),
            ordered: Mutex::new(HashSet::new()),
            ids: Mutex::new(Vec::new()),
            ids_seen: AtomicU64::new(0),
            inner_ok: AtomicU64::new(0),
            inner_total: AtomicU64::new(0),
            card_orders: Mutex::new(Vec::new()),
            sim: None,
            batcher: None,
            params: Params { customers, ..params },
        }
    }

    fn outcome(&self, r: &Resp) -> Outcome {
        let label = r.label();
        let error = r.status >= 400 && !self.params.kind.expected(&label);
        Outcome::answer(label, error)
    }

    fn note_sale(&self, sku: usize, qty: u64, customer: u32) {
        self.sold[sku].fetch_add(qty, Ordering::Relaxed);
        self.spent[customer as usize].fetch_add((self.prices[sku] * qty) as i64, Ordering::Relaxed);
    }

    fn remember(&self, id: String) {
        let seen = self.ids_seen.fetch_add(1, Ordering::Relaxed) as usize;
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() < IDS_KEPT {
            ids.push(id);
        } else {
            ids[seen % IDS_KEPT] = id; // the most recent IDS_KEPT
        }
    }
}

/// A setup/check client: one connection, errors as strings.
pub struct Api {
    conn: Conn,
    auth: String,
}

impl Api {
    pub fn new(target: Target, timeout: Duration, auth: String) -> Api {
        Api { conn: Conn::new(target, timeout), auth }
    }

    pub async fn call(&mut self, method: &str, path: &str, key: Option<&str>, body: &str) -> Result<Resp, String> {
        let mut headers = vec![("Authorization", self.auth.as_str())];
        if let Some(k) = key {
            headers.push(("Idempotency-Key", k));
        }
        self.conn.request(method, path, &headers, body.as_bytes()).await.map_err(|e| format!("{method} {path}: {e}"))
    }

    /// A call that must answer `want`; returns the JSON body.
    pub async fn expect(
        &mut self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
        want: &[u16],
    ) -> Result<Value, String> {
        let r = self.call(method, path, key, body).await?;
        if !want.contains(&r.status) {
            return Err(format!("{method} {path}: {} {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        Ok(r.json())
    }
}

/// Creates the merchant, its items and its customers' points. Returns the shared state.
pub async fn setup(
    params: Params,
    target: Target,
    timeout: Duration,
    admin_token: Option<&str>,
) -> Result<Arc<State>, String> {
    let mut rng = StdRng::seed_from_u64(params.seed ^ std::process::id() as u64 ^ now_nanos());
    let run_id = format!("{:08x}", rng.random::<u32>());
    let catalogue = Catalogue::of(&params);
    let mut state = State::new(params, target, timeout, run_id, &catalogue);
    if state.params.skip_setup {
        return Ok(Arc::new(state));
    }
    let admin = admin_token.ok_or("an admin token is needed to create the scenario's merchant (--admin-token)")?;
    if state.params.kind == ScenarioKind::CardFlow {
        state.sim = Some(read_sim(&state.params.gateway_sim_url, timeout).await?);
    }
    state.auth = create_merchant(&state, admin).await?;
    let mut api = Api::new(state.target.clone(), timeout, state.auth.clone());
    create_items(&mut api, &catalogue).await?;
    credit_points(&mut api, &state).await?;
    if state.params.kind == ScenarioKind::BatchBinary {
        let connections = state.params.client_connections.max(1);
        state.batcher = Some(surge_client::batcher::Client::start(surge_client::batcher::Config {
            addr: state.target.addr,
            host: state.target.host.clone(),
            auth: state.auth.clone(),
            path: format!("{}/v1/batch", state.target.prefix),
            connections,
            // Two full batches per connection: one in flight, one filling.
            queue_max: 2 * connections * surge_client::wire::BATCH_OPS_MAX,
            timeout,
        }));
    }
    Ok(Arc::new(state))
}

/// card-flow: the gateway-sim's rates and counters before the run.
async fn read_sim(url: &str, timeout: Duration) -> Result<SimBefore, String> {
    let target = Target::parse(url)?;
    let mut sim = Api::new(target.clone(), timeout, "Bearer none".into());
    let unreachable = |e: String| format!("card-flow reads the gateway-sim at --gateway-sim-url {url}: {e}");
    let config = sim.expect("GET", "/sim/config", None, "", &[200]).await.map_err(unreachable)?;
    let stats = sim.expect("GET", "/sim/stats", None, "", &[200]).await.map_err(unreachable)?;
    Ok(SimBefore { target, config, stats })
}

/// Creates the run's own merchant; returns the `Authorization` value of its API key.
async fn create_merchant(st: &State, admin_token: &str) -> Result<String, String> {
    let mut api = Api::new(st.target.clone(), st.timeout, format!("Bearer {admin_token}"));
    let kind = st.params.kind.name();
    let merchant = st.params.merchant_id.clone().unwrap_or_else(|| format!("load-{kind}-{}", st.run_id));
    let body = format!(r#"{{"id":"{merchant}","name":"surge load {kind}","currency":"KRW"}}"#);
    let m = api.expect("POST", "/v1/merchants", None, &body, &[201]).await?;
    let key = m["api_key"].as_str().ok_or("POST /v1/merchants: no api_key in the answer")?;
    Ok(format!("Bearer {key}"))
}

/// The catalogue's items, in bulk calls that stay under the 64 KiB body limit.
async fn create_items(api: &mut Api, catalogue: &Catalogue) -> Result<(), String> {
    let mut body = String::new();
    let mut in_body = 0;
    for (i, sku) in catalogue.skus.iter().enumerate() {
        if in_body > 0 {
            body.push(',');
        }
        let (price, stock) = (catalogue.prices[i], catalogue.stock);
        let _ = write!(body, r#"{{"sku":"{sku}","name":"{sku}","price":{price},"stock":{stock}}}"#);
        in_body += 1;
        if body.len() > 56_000 || in_body == 10_000 || i + 1 == catalogue.skus.len() {
            let b = format!(r#"{{"items":[{body}]}}"#);
            api.expect("POST", "/v1/items/bulk", None, &b, &[200, 201]).await?;
            body.clear();
            in_body = 0;
        }
    }
    Ok(())
}

/// Every customer's points, 500 customers per batch.
async fn credit_points(api: &mut Api, st: &State) -> Result<(), String> {
    let (customers, credit, run_id) = (st.params.customers, st.credit, &st.run_id);
    let mut c = 0;
    while c < customers {
        let end = (c + 500).min(customers);
        let ops: Vec<String> = (c..end)
            .map(|n| {
                format!(
                    r#"{{"op":"credit_points","customer_id":"c-{n}","amount":{credit},"reason":"load set-up","idempotency_key":"credit-{run_id}-{n}"}}"#
                )
            })
            .collect();
        let v = api.expect("POST", "/v1/batch", None, &format!(r#"{{"ops":[{}]}}"#, ops.join(",")), &[200]).await?;
        let bad = v["results"].as_array().map_or(1, |r| r.iter().filter(|x| x["status"] != 200).count());
        if bad > 0 {
            return Err(format!("crediting points: {bad} of {} operations failed: {v}", end - c));
        }
        c = end;
    }
    Ok(())
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Seat `n` as a SKU: 50 seats per row, row 1 is the front.
pub fn seat_sku(n: u32) -> String {
    format!("seat-r{:04}-{:02}", n / 50 + 1, n % 50 + 1)
}

/// One connection running the scenario's operations.
pub struct ScenarioWorker {
    st: Arc<State>,
    conn: Conn,
    rng: StdRng,
}

impl ScenarioWorker {
    pub fn new(st: Arc<State>, id: u64) -> ScenarioWorker {
        let conn = Conn::new(st.target.clone(), st.timeout);
        let rng = StdRng::seed_from_u64(st.params.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(id));
        ScenarioWorker { st, conn, rng }
    }

    /// Every request of a scenario goes through here: it is counted as sent, and a
    /// transport failure becomes its outcome.
    async fn send(&mut self, method: &str, path: &str, key: Option<&str>, body: &str) -> Result<Resp, Outcome> {
        self.st.sent.fetch_add(1, Ordering::Relaxed);
        let auth = self.st.auth.as_str();
        let r = match key {
            Some(k) => {
                self.conn
                    .request(method, path, &[("Authorization", auth), ("Idempotency-Key", k)], body.as_bytes())
                    .await
            }
            None => self.conn.request(method, path, &[("Authorization", auth)], body.as_bytes()).await,
        };
        let r = r.map_err(|e| {
            if method != "GET" {
                self.st.unknown.fetch_add(1, Ordering::Relaxed);
            }
            transport(&e)
        })?;
        // The contract's 503 `storage_unavailable` is not acknowledged, yet its change may
        // have been kept (the log failed after the bytes reached it, or a cluster node's
        // owner did not answer): its outcome is unknown, like a transport failure's.
        if method != "GET" && r.status == 503 && problem_code(&r.body) == Some("storage_unavailable") {
            self.st.unknown.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r)
    }

    fn customer(&mut self) -> u32 {
        self.rng.random_range(0..self.st.params.customers)
    }

    async fn flash_sale(&mut self, index: u64) -> Vec<Outcome> {
        let sku = self.rng.random_range(0..self.st.skus.len());
        let qty = if self.rng.random_bool(0.8) { 1 } else { 2 };
        self.order(index, sku, qty).await
    }

    /// One points order; notes the sale when acknowledged.
    async fn order(&mut self, index: u64, sku: usize, qty: u64) -> Vec<Outcome> {
        let customer = self.customer();
        let body = order_body(customer, &self.st.skus[sku], qty);
        let key = format!("{}-{index}", self.st.run_id);
        match self.send("POST", "/v1/orders", Some(&key), &body).await {
            Ok(r) => {
                if r.status == 201 && !self.st.params.skip_setup {
                    self.st.note_sale(sku, qty, customer);
                }
                vec![self.st.outcome(&r)]
            }
            Err(o) => vec![o],
        }
    }

    /// card-flow: one card order; the server answers 202 (`pending_payment`) and settles it
    /// later. Every acknowledged order is kept for the checks.
    async fn card(&mut self, index: u64) -> Vec<Outcome> {
        let sku = self.rng.random_range(0..self.st.skus.len());
        let qty = if self.rng.random_bool(0.8) { 1 } else { 2 };
        let manual = self.rng.random_bool(self.st.params.manual_share);
        let customer = self.customer();
        let body = card_order_body(customer, &self.st.skus[sku], qty, manual);
        let key = format!("{}-{index}", self.st.run_id);
        let r = match self.send("POST", "/v1/orders", Some(&key), &body).await {
            Ok(r) => r,
            Err(o) => return vec![o],
        };
        let mut out = vec![self.st.outcome(&r)];
        if (200..300).contains(&r.status) {
            match r.json()["id"].as_str() {
                Some(id) => {
                    let order = CardOrder { id: id.to_string(), sku, qty, manual };
                    self.st.card_orders.lock().unwrap_or_else(|e| e.into_inner()).push(order);
                }
                None => out.push(Outcome::finding(format!("{} without an order id", r.status))),
            }
        }
        out
    }

    async fn retries(&mut self, index: u64) -> Vec<Outcome> {
        let sku = self.rng.random_range(0..self.st.skus.len());
        let customer = self.customer();
        let body = order_body(customer, &self.st.skus[sku], 1);
        let key = format!("{}-{index}", self.st.run_id);
        let first = match self.send("POST", "/v1/orders", Some(&key), &body).await {
            Ok(r) => r,
            Err(o) => return vec![o],
        };
        if first.status == 201 {
            self.st.note_sale(sku, 1, customer);
        }
        let mut out = vec![self.st.outcome(&first)];
        if first.status >= 300 || !self.rng.random_bool(self.st.params.retry_share) {
            return out;
        }
        match self.send("POST", "/v1/orders", Some(&key), &body).await {
            Ok(again) => {
                self.st.replays_checked.fetch_add(1, Ordering::Relaxed);
                let same = again.status == first.status && again.body == first.body && again.replayed;
                if !same {
                    self.st.replay_mismatches.fetch_add(1, Ordering::Relaxed);
                    let mut ex = self.st.mismatch_example.lock().unwrap_or_else(|e| e.into_inner());
                    if ex.is_none() {
                        *ex = Some(format!(
                            "key {key}: first {} {}, replay {} (replayed header: {}) {}",
                            first.status,
                            String::from_utf8_lossy(&first.body),
                            again.status,
                            again.replayed,
                            String::from_utf8_lossy(&again.body)
                        ));
                    }
                }
                let mut o = self.st.outcome(&again);
                o.label = format!("{} (replay)", o.label);
                o.error |= !same;
                out.push(o);
            }
            Err(o) => out.push(o),
        }
        out
    }

    async fn full_flow(&mut self, index: u64) -> Vec<Outcome> {
        let sku = self.rng.random_range(0..self.st.skus.len());
        let customer = self.customer();
        let body = order_body(customer, &self.st.skus[sku], 1);
        let key = format!("{}-{index}", self.st.run_id);
        let r = match self.send("POST", "/v1/orders", Some(&key), &body).await {
            Ok(r) => r,
            Err(o) => return vec![o],
        };
        let mut out = vec![self.st.outcome(&r)];
        if r.status != 201 {
            return out;
        }
        self.st.note_sale(sku, 1, customer);
        let v = r.json();
        let (Some(payment), Some(total)) = (v["payment"]["id"].as_str(), v["total"].as_u64()) else {
            out.push(Outcome::finding("201 without payment.id/total"));
            return out;
        };
        let payment = payment.to_string();
        // Points are captured at once (no manual capture for points): two partial refunds.
        let first = total * 2 / 5;
        let mut refunded_all = true;
        for (n, amount) in [(1, first), (2, total - first)] {
            if amount == 0 {
                continue;
            }
            let path = format!("/v1/payments/{payment}/refund");
            let rkey = format!("{key}-refund{n}");
            match self.send("POST", &path, Some(&rkey), &format!(r#"{{"amount":{amount}}}"#)).await {
                Ok(r) => {
                    if r.status == 200 {
                        self.st.spent[customer as usize].fetch_sub(amount as i64, Ordering::Relaxed);
                    } else {
                        refunded_all = false;
                    }
                    out.push(self.st.outcome(&r));
                    if r.status != 200 {
                        break;
                    }
                }
                Err(o) => {
                    refunded_all = false;
                    out.push(o);
                    break;
                }
            }
        }
        if refunded_all {
            self.st.remember(payment);
        }
        out
    }

    async fn concert(&mut self, index: u64) -> Vec<Outcome> {
        let seats = self.st.params.seats;
        let best = (seats / 20).max(1);
        let seat =
            if self.rng.random_bool(0.8) { self.rng.random_range(0..best) } else { self.rng.random_range(0..seats) };
        let customer = self.customer();
        self.st.touched.lock().unwrap_or_else(|e| e.into_inner()).insert(seat);
        let sku = &self.st.skus[seat as usize];
        let body = format!(
            r#"{{"customer_id":"c-{customer}","lines":[{{"sku":"{sku}","qty":1}}],"ttl_seconds":{}}}"#,
            self.st.params.hold_ttl_s
        );
        let r = match self.send("POST", "/v1/holds", None, &body).await {
            Ok(r) => r,
            Err(o) => return vec![o],
        };
        let mut out = vec![self.st.outcome(&r)];
        if r.status != 201 || !self.rng.random_bool(self.st.params.convert_share) {
            return out; // refused, or left to expire
        }
        let Some(hold) = r.json()["id"].as_str().map(str::to_string) else {
            out.push(Outcome::finding("201 hold without id"));
            return out;
        };
        let body = format!(r#"{{"customer_id":"c-{customer}","hold_id":"{hold}","payment":{{"method":"points"}}}}"#);
        let key = format!("{}-{index}", self.st.run_id);
        match self.send("POST", "/v1/orders", Some(&key), &body).await {
            Ok(r) => {
                if r.status == 201 {
                    self.st.note_sale(seat as usize, 1, customer);
                    self.st.ordered.lock().unwrap_or_else(|e| e.into_inner()).insert(seat);
                }
                out.push(self.st.outcome(&r));
            }
            Err(o) => out.push(o),
        }
        out
    }

    async fn mixed(&mut self, index: u64) -> Vec<Outcome> {
        let roll = self.rng.random_range(0..100);
        if roll < 25 {
            let sku = self.rng.random_range(0..self.st.skus.len());
            let customer = self.customer();
            let body = order_body(customer, &self.st.skus[sku], 1);
            let key = format!("{}-{index}", self.st.run_id);
            return match self.send("POST", "/v1/orders", Some(&key), &body).await {
                Ok(r) => {
                    if r.status == 201 {
                        self.st.note_sale(sku, 1, customer);
                        if let Some(id) = r.json()["id"].as_str() {
                            self.st.remember(id.to_string());
                        }
                    }
                    vec![self.st.outcome(&r)]
                }
                Err(o) => vec![o],
            };
        }
        let path = if roll < 90 {
            let order = if roll >= 75 {
                let ids = self.st.ids.lock().unwrap_or_else(|e| e.into_inner());
                (!ids.is_empty()).then(|| ids[self.rng.random_range(0..ids.len())].clone())
            } else {
                None
            };
            match order {
                Some(id) => format!("/v1/orders/{id}"),
                None => format!("/v1/items/{}", self.st.skus[self.rng.random_range(0..self.st.skus.len())]),
            }
        } else {
            format!("/v1/customers/c-{}/points", self.customer())
        };
        match self.send("GET", &path, None, "").await {
            Ok(r) => vec![self.st.outcome(&r)],
            Err(o) => vec![o],
        }
    }

    async fn batch(&mut self, index: u64) -> Vec<Outcome> {
        let n = self.st.params.batch_size.clamp(1, 1000);
        let mut lines = Vec::with_capacity(n as usize);
        let mut ops = String::with_capacity(n as usize * 150);
        for j in 0..n {
            let sku = self.rng.random_range(0..self.st.skus.len());
            let customer = self.customer();
            lines.push((sku, customer));
            if j > 0 {
                ops.push(',');
            }
            let _ = write!(
                ops,
                r#"{{"op":"create_order","customer_id":"c-{customer}","lines":[{{"sku":"{}","qty":1}}],"payment":{{"method":"points"}},"idempotency_key":"{}-{index}-{j}"}}"#,
                self.st.skus[sku], self.st.run_id
            );
        }
        let body = format!(r#"{{"ops":[{ops}]}}"#);
        let r = match self.send("POST", "/v1/batch", None, &body).await {
            Ok(r) => r,
            Err(o) => return vec![o],
        };
        let mut out = vec![self.st.outcome(&r)];
        self.st.inner_total.fetch_add(u64::from(n), Ordering::Relaxed);
        if r.status != 200 {
            return out;
        }
        let v = r.json();
        let results = v["results"].as_array().cloned().unwrap_or_default();
        let mut ok = 0;
        for (i, res) in results.iter().enumerate() {
            let status = res["status"].as_u64().unwrap_or(0);
            if status == 201 {
                ok += 1;
                if let Some(&(sku, customer)) = lines.get(i) {
                    self.st.note_sale(sku, 1, customer);
                }
            } else {
                let code = res["body"]["code"].as_str().unwrap_or("");
                out.push(Outcome::finding(format!("batch op {status} {code}")));
            }
        }
        self.st.inner_ok.fetch_add(ok, Ordering::Relaxed);
        out
    }
}

impl ScenarioWorker {
    /// batch-binary: one keyed points order through the batching client.
    async fn binary_order(&mut self, index: u64) -> Vec<Outcome> {
        use surge_client::batcher::{ClientError, Order};
        let Some(client) = self.st.batcher.clone() else {
            return vec![Outcome::finding("batch-binary without its client")];
        };
        let sku = self.rng.random_range(0..self.st.skus.len());
        let customer = self.customer();
        // The run's id and the op's index: unique in the run, and across runs.
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(self.st.run_id.as_bytes().get(..8).unwrap_or(b"00000000"));
        key[8..].copy_from_slice(&index.to_le_bytes());
        let order = Order {
            customer: format!("c-{customer}"),
            lines: vec![(self.st.skus[sku].clone(), 1)],
            payment: surge_client::wire::PAYMENT_POINTS,
            key: Some(key),
        };
        self.st.sent.fetch_add(1, Ordering::Relaxed);
        match client.order(order).await {
            Ok(r) => {
                let status = r.status();
                if status == 201 {
                    self.st.note_sale(sku, 1, customer);
                    return vec![Outcome::answer("201", false)];
                }
                let label = match r.error_code() {
                    Some(code) => format!("{status} {code}"),
                    None => status.to_string(),
                };
                let error = status >= 400 && !self.st.params.kind.expected(&label);
                vec![Outcome::answer(label, error)]
            }
            Err(ClientError::Transport(_)) => {
                self.st.unknown.fetch_add(1, Ordering::Relaxed);
                vec![Outcome::answer("transport: batch failed", true)]
            }
            Err(ClientError::Answer(e)) => {
                // The server took the batch; what it did with this order is not known.
                self.st.unknown.fetch_add(1, Ordering::Relaxed);
                vec![Outcome::finding(format!("undecodable batch answer: {e}"))]
            }
            Err(ClientError::Refused(status, _)) => vec![Outcome::answer(format!("{status} (whole batch)"), true)],
            Err(e @ (ClientError::Invalid | ClientError::Closed)) => vec![Outcome::finding(format!("{e:?}"))],
        }
    }
}

impl Worker for ScenarioWorker {
    async fn op(&mut self, index: u64) -> Vec<Outcome> {
        match self.st.params.kind {
            ScenarioKind::FlashSale => self.flash_sale(index).await,
            ScenarioKind::Orders => {
                let sku = self.rng.random_range(0..self.st.skus.len());
                self.order(index, sku, 1).await
            }
            ScenarioKind::Retries => self.retries(index).await,
            ScenarioKind::FullFlow => self.full_flow(index).await,
            ScenarioKind::Concert => self.concert(index).await,
            ScenarioKind::Mixed => self.mixed(index).await,
            ScenarioKind::Batch => self.batch(index).await,
            ScenarioKind::BatchBinary => self.binary_order(index).await,
            ScenarioKind::CardFlow => self.card(index).await,
        }
    }
}
