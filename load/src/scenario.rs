//! The scenarios: each sets up its own merchant, items and points through the API, runs one
//! kind of operation under load, and afterwards checks its invariants through the API.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::http::{Conn, Resp, Target};
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
    /// Plain `POST /v1/orders` (points) on ample stock: the target judged against the bare
    /// axum baseline (with --skip-setup it needs no merchant: for the baseline).
    Orders,
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
            ScenarioKind::Orders => "orders",
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
    /// Skip merchant/items/points set-up and the checks (for the baseline).
    pub skip_setup: bool,
    pub seed: u64,
}

/// One invariant checked after the run.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    fn new(name: &str, pass: bool, detail: String) -> Check {
        Check { name: name.to_string(), pass, detail }
    }
}

/// What the scenario shares between its workers and the checks.
pub struct State {
    pub params: Params,
    pub target: Target,
    pub timeout: Duration,
    pub auth: String,
    pub run_id: String,
    skus: Vec<String>,
    prices: Vec<u64>,
    /// Points each customer got at set-up.
    credit: u64,
    /// Units acknowledged (2xx) per SKU.
    sold: Vec<AtomicU64>,
    /// Points acknowledged as spent minus refunded, per customer.
    spent: Vec<AtomicI64>,
    /// Mutating requests whose outcome is unknown (transport failure, timeout).
    unknown: AtomicU64,
    replays_checked: AtomicU64,
    replay_mismatches: AtomicU64,
    mismatch_example: Mutex<Option<String>>,
    /// concert: seats tried, seats ordered.
    touched: Mutex<HashSet<u32>>,
    ordered: Mutex<HashSet<u32>>,
    /// mixed: recent order ids; full-flow: fully refunded payment ids (a sample).
    ids: Mutex<Vec<String>>,
    ids_seen: AtomicU64,
    /// batch: operations inside batches that succeeded.
    pub inner_ok: AtomicU64,
    pub inner_total: AtomicU64,
}

const IDS_KEPT: usize = 1000;

fn order_body(customer: u32, sku: &str, qty: u64) -> String {
    format!(
        r#"{{"customer_id":"c-{customer}","lines":[{{"sku":"{sku}","qty":{qty}}}],"payment":{{"method":"points"}}}}"#
    )
}

fn transport(e: &std::io::Error) -> Outcome {
    let label = match e.kind() {
        std::io::ErrorKind::TimedOut => "transport: timed out".to_string(),
        std::io::ErrorKind::ConnectionRefused => "transport: connection refused".to_string(),
        std::io::ErrorKind::ConnectionReset => "transport: connection reset".to_string(),
        std::io::ErrorKind::UnexpectedEof => "transport: closed by the server".to_string(),
        _ => "transport: other".to_string(),
    };
    Outcome { label, error: true }
}

impl State {
    fn outcome(&self, r: &Resp) -> Outcome {
        let label = r.label();
        let error = r.status >= 400 && !self.params.kind.expected(&label);
        Outcome { label, error }
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
    let kind = params.kind;
    let (skus, prices, credit): (Vec<String>, Vec<u64>, u64) = match kind {
        ScenarioKind::FlashSale => {
            ((0..params.hot_skus).map(|i| format!("hot-{i}")).collect(), vec![1000; params.hot_skus as usize], 10_000)
        }
        ScenarioKind::Concert => {
            let skus: Vec<String> = (0..params.seats).map(seat_sku).collect();
            // The front rows cost more.
            let prices = (0..params.seats).map(|s| if s < params.seats / 20 { 3000 } else { 1000 }).collect();
            (skus, prices, 10_000)
        }
        ScenarioKind::FullFlow => ((0..10).map(|i| format!("sku-{i}")).collect(), vec![1000; 10], 1_000_000_000),
        ScenarioKind::Retries | ScenarioKind::Mixed | ScenarioKind::Batch | ScenarioKind::Orders => {
            ((0..20).map(|i| format!("sku-{i}")).collect(), vec![1; 20], 1_000_000_000_000)
        }
    };
    let stock = match kind {
        ScenarioKind::FlashSale => params.stock,
        ScenarioKind::Concert => 1,
        _ => 1_000_000_000,
    };
    let n_skus = skus.len();
    let customers = params.customers.max(1);
    let mut state = State {
        target: target.clone(),
        timeout,
        auth: "Bearer none".to_string(),
        run_id: run_id.clone(),
        skus,
        prices,
        credit,
        sold: (0..n_skus).map(|_| AtomicU64::new(0)).collect(),
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
        params: Params { customers, ..params },
    };
    if state.params.skip_setup {
        return Ok(Arc::new(state));
    }
    let admin = admin_token.ok_or("an admin token is needed to create the scenario's merchant (--admin-token)")?;
    let mut api = Api::new(target.clone(), timeout, format!("Bearer {admin}"));
    let merchant = format!("load-{}-{run_id}", kind.name());
    let body = format!(r#"{{"id":"{merchant}","name":"surge load {}","currency":"KRW"}}"#, kind.name());
    let m = api.expect("POST", "/v1/merchants", None, &body, &[201]).await?;
    let key = m["api_key"].as_str().ok_or("POST /v1/merchants: no api_key in the answer")?;
    state.auth = format!("Bearer {key}");
    let mut api = Api::new(target, timeout, state.auth.clone());

    // Items, in bulk calls that stay under the 64 KiB body limit.
    let mut body = String::new();
    let mut in_body = 0;
    for (i, sku) in state.skus.iter().enumerate() {
        if in_body > 0 {
            body.push(',');
        }
        let _ = write!(body, r#"{{"sku":"{sku}","name":"{sku}","price":{},"stock":{stock}}}"#, state.prices[i]);
        in_body += 1;
        if body.len() > 56_000 || in_body == 10_000 || i + 1 == state.skus.len() {
            let b = format!(r#"{{"items":[{body}]}}"#);
            api.expect("POST", "/v1/items/bulk", None, &b, &[200, 201]).await?;
            body.clear();
            in_body = 0;
        }
    }
    // Points, 500 customers per batch.
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
    Ok(Arc::new(state))
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

    async fn send(&mut self, method: &str, path: &str, key: Option<&str>, body: &str) -> Result<Resp, Outcome> {
        let auth = self.st.auth.as_str();
        let r = match key {
            Some(k) => {
                self.conn
                    .request(method, path, &[("Authorization", auth), ("Idempotency-Key", k)], body.as_bytes())
                    .await
            }
            None => self.conn.request(method, path, &[("Authorization", auth)], body.as_bytes()).await,
        };
        r.map_err(|e| {
            if method != "GET" {
                self.st.unknown.fetch_add(1, Ordering::Relaxed);
            }
            transport(&e)
        })
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
            out.push(Outcome { label: "201 without payment.id/total".into(), error: true });
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
            out.push(Outcome { label: "201 hold without id".into(), error: true });
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
                out.push(Outcome { label: format!("batch op {status} {code}"), error: true });
            }
        }
        self.st.inner_ok.fetch_add(ok, Ordering::Relaxed);
        out
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
        }
    }
}

/// Checks the scenario's invariants through the API.
pub async fn check(st: &State) -> Vec<Check> {
    let mut checks = Vec::new();
    if st.params.skip_setup {
        return checks;
    }
    let mut api = Api::new(st.target.clone(), st.timeout, st.auth.clone());
    let unknown = st.unknown.load(Ordering::Relaxed);
    if unknown > 0 {
        checks.push(Check::new(
            "outcomes known",
            true,
            format!("{unknown} mutating requests failed in transport: the checks below allow for them"),
        ));
    }
    if st.params.kind == ScenarioKind::Concert {
        // Holds left alone expire within 1 s of their TTL (and a margin for a busy machine).
        tokio::time::sleep(Duration::from_secs(st.params.hold_ttl_s) + Duration::from_millis(2500)).await;
    }

    // Items: conservation, no oversell, acknowledged sales are all there.
    let indices: Vec<usize> = if st.params.kind == ScenarioKind::Concert {
        let mut t: Vec<usize> =
            st.touched.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|&s| s as usize).collect();
        t.sort_unstable();
        t
    } else {
        (0..st.skus.len()).collect()
    };
    let ordered = st.ordered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut conserved, mut oversold, mut mismatched, mut held_left, mut seat_wrong) = (0, 0, 0, 0, 0);
    let (mut sold_total, mut acked_total) = (0u64, 0u64);
    let mut first_problem: Option<String> = None;
    for &i in &indices {
        let sku = &st.skus[i];
        let v = match api.expect("GET", &format!("/v1/items/{sku}"), None, "", &[200]).await {
            Ok(v) => v,
            Err(e) => {
                checks.push(Check::new("items readable", false, e));
                return checks;
            }
        };
        let n = |f: &str| v[f].as_u64().unwrap_or(u64::MAX / 4);
        let (stock, available, held, sold) = (n("stock"), n("available"), n("held"), n("sold"));
        let acked = st.sold[i].load(Ordering::Relaxed);
        sold_total += sold;
        acked_total += acked;
        if available + held + sold != stock {
            conserved += 1;
            first_problem.get_or_insert(format!("{sku}: {v}"));
        }
        if sold > stock {
            oversold += 1;
        }
        if (unknown == 0 && sold != acked) || sold < acked {
            mismatched += 1;
            first_problem.get_or_insert(format!("{sku}: sold {sold}, acknowledged {acked}"));
        }
        if st.params.kind == ScenarioKind::Concert {
            held_left += u64::from(held > 0);
            if ordered.contains(&(i as u32)) != (sold == 1) && unknown == 0 {
                seat_wrong += 1;
            }
        }
    }
    let what = if st.params.kind == ScenarioKind::Concert { "seats touched" } else { "SKUs" };
    let example = first_problem.map(|p| format!("; first: {p}")).unwrap_or_default();
    checks.push(Check::new(
        "stock conservation",
        conserved == 0,
        format!(
            "available + held + sold == stock on {} of {} {what}{example}",
            indices.len() - conserved,
            indices.len()
        ),
    ));
    checks.push(Check::new(
        "no oversell",
        oversold == 0,
        format!("sold <= stock on every one of {} {what} ({oversold} oversold)", indices.len()),
    ));
    checks.push(Check::new(
        "acknowledged sales recorded",
        mismatched == 0,
        format!("server sold {sold_total} units, clients were acknowledged {acked_total}; {mismatched} SKUs differ"),
    ));
    if st.params.kind == ScenarioKind::Concert {
        checks.push(Check::new(
            "expired holds returned",
            held_left == 0,
            format!("{held_left} seats still held 2.5 s after the last hold's TTL ({} s)", st.params.hold_ttl_s),
        ));
        checks.push(Check::new(
            "seat sold iff ordered",
            seat_wrong == 0,
            format!("{} seats ordered; {seat_wrong} seats differ from the acknowledged orders", ordered.len()),
        ));
    }

    // Points: every balance is what was credited minus what was acknowledged as spent.
    let mut differ = 0u32;
    let mut first: Option<String> = None;
    for c in 0..st.params.customers {
        match api.expect("GET", &format!("/v1/customers/c-{c}/points"), None, "", &[200]).await {
            Ok(v) => {
                let balance = v["balance"].as_i64().unwrap_or(-1);
                let expected = st.credit as i64 - st.spent[c as usize].load(Ordering::Relaxed);
                let ok = if unknown == 0 { balance == expected } else { balance <= expected && balance >= 0 };
                if !ok {
                    differ += 1;
                    first.get_or_insert(format!("c-{c}: balance {balance}, expected {expected}"));
                }
            }
            Err(e) => {
                differ += 1;
                first.get_or_insert(e);
            }
        }
    }
    checks.push(Check::new(
        "points conserved",
        differ == 0,
        format!(
            "{} of {} customers hold credited minus acknowledged spending{}",
            st.params.customers - differ,
            st.params.customers,
            first.map(|f| format!("; first: {f}")).unwrap_or_default()
        ),
    ));

    match api.expect("GET", "/v1/ledger/trial-balance", None, "", &[200]).await {
        Ok(v) => {
            let balanced = v["balanced"] == true && v["total_debits"] == v["total_credits"];
            checks.push(Check::new("ledger balanced", balanced, format!("trial balance {v}")));
        }
        Err(e) => checks.push(Check::new("ledger balanced", false, e)),
    }

    match st.params.kind {
        ScenarioKind::Retries => {
            let n = st.replays_checked.load(Ordering::Relaxed);
            let bad = st.replay_mismatches.load(Ordering::Relaxed);
            let ex = st.mismatch_example.lock().unwrap_or_else(|e| e.into_inner()).clone();
            checks.push(Check::new(
                "replays identical",
                n > 0 && bad == 0,
                format!(
                    "{n} replays: {bad} differed from the first answer (status, body, Idempotent-Replayed){}",
                    ex.map(|e| format!("; first: {e}")).unwrap_or_default()
                ),
            ));
        }
        ScenarioKind::FullFlow => {
            let ids = st.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut wrong = 0;
            let mut first: Option<String> = None;
            for id in ids.iter().take(200) {
                match api.expect("GET", &format!("/v1/payments/{id}"), None, "", &[200]).await {
                    Ok(v) => {
                        let ok =
                            v["status"] == "refunded" && v["refunded"] == v["captured"] && v["captured"] == v["amount"];
                        if !ok {
                            wrong += 1;
                            first.get_or_insert(v.to_string());
                        }
                    }
                    Err(e) => {
                        wrong += 1;
                        first.get_or_insert(e);
                    }
                }
            }
            let n = ids.len().min(200);
            checks.push(Check::new(
                "refunds complete",
                n > 0 && wrong == 0,
                format!(
                    "{} of {n} sampled payments refunded in full after two partial refunds{}",
                    n - wrong,
                    first.map(|f| format!("; first: {f}")).unwrap_or_default()
                ),
            ));
        }
        _ => {}
    }
    checks
}
