//! The invariants checked after a run, through the API, against what the scenario's
//! workers were acknowledged. Each check is a function of its own that judges what was
//! read (and can therefore be fed fabricated answers in tests); reading is separate.
//!
//! Every scenario gets [`answers_counted`], the item checks, [`points_conserved`] and
//! [`ledger_balanced`]; [`scenario_checks`] adds a scenario's own (one function each).
//! A run with `--skip-setup` checks nothing and says so: see `report::Verdict`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::scenario::{default_settle_wait, Api, CardOrder, ScenarioKind, State};

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

/// Payments a full-flow run reads back (a sample of those refunded in full).
const PAYMENTS_CHECKED_MAX: usize = 200;
/// How long after the last hold's TTL its expiry may take (1 s tick and a busy machine).
const EXPIRY_MARGIN: Duration = Duration::from_millis(2500);
/// card-flow: how often the settlement wait reads again the orders still pending.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// card-flow: connections reading the card orders back.
const ORDER_READERS: usize = 8;
/// card-flow: orders a settlement round reads at a time.
const SETTLE_BATCH: usize = 256;
/// card-flow: how many standard deviations of a binomial share the paid share may stray from
/// its expectation (two-sided, about 6 false failures in 100,000 runs).
pub const PAID_SHARE_Z: f64 = 4.0;

/// Checks the scenario's invariants through the API. `recorded_requests`: the requests the
/// driver recorded an outcome for. Empty when set-up was skipped (no merchant of our own:
/// nothing to check).
pub async fn run(st: &State, recorded_requests: u64) -> Vec<Check> {
    if st.params.skip_setup {
        return Vec::new();
    }
    let mut checks = vec![answers_counted(st, recorded_requests)];
    let mut api = Api::new(st.target.clone(), st.timeout, st.auth.clone());
    if st.params.kind == ScenarioKind::Concert {
        tokio::time::sleep(Duration::from_secs(st.params.hold_ttl_s) + EXPIRY_MARGIN).await;
    }
    // card-flow: what the server sold is what its card payments paid for, known only once
    // they have settled.
    let card = match st.params.kind {
        ScenarioKind::CardFlow => {
            let card = settle_card_orders(st).await;
            for (sold, units) in st.sold.iter().zip(&card.tally.sold_units) {
                sold.store(*units, Ordering::Relaxed);
            }
            Some(card)
        }
        _ => None,
    };
    let items = match read_items(&mut api, st).await {
        Ok(items) => items,
        Err(e) => {
            checks.push(Check::new("items readable", false, e));
            return checks;
        }
    };
    checks.extend([stock_conservation(st, &items), no_oversell(st, &items), acknowledged_sales_recorded(st, &items)]);
    let balances = read_balances(&mut api, st).await;
    checks.push(points_conserved(st, &balances));
    checks.push(ledger_balanced(api.expect("GET", "/v1/ledger/trial-balance", None, "", &[200]).await));
    checks.extend(scenario_checks(st, &mut api, &items, card.as_ref()).await);
    checks
}

/// The checks of one scenario beyond those every scenario gets.
async fn scenario_checks(st: &State, api: &mut Api, items: &[ItemRead], card: Option<&CardRun>) -> Vec<Check> {
    match st.params.kind {
        ScenarioKind::Concert => concert_checks(st, items),
        ScenarioKind::Retries => vec![replays_identical(st)],
        ScenarioKind::FullFlow => vec![refunds_complete(&read_refunded_payments(api, st).await)],
        ScenarioKind::CardFlow => match card {
            Some(card) => card_checks(st, items, card).await,
            None => Vec::new(),
        },
        ScenarioKind::FlashSale
        | ScenarioKind::Mixed
        | ScenarioKind::Batch
        | ScenarioKind::BatchBinary
        | ScenarioKind::Orders => Vec::new(),
    }
}

fn concert_checks(st: &State, items: &[ItemRead]) -> Vec<Check> {
    vec![expired_holds_returned(st, items), seat_sold_iff_ordered(st, items)]
}

/// Every request a worker sent ended in exactly one recorded outcome (an answer or a
/// transport failure): the figures and the checks below cover the whole run. Fails when an
/// outcome was lost between a worker and the report, e.g. a worker that panicked.
fn answers_counted(st: &State, recorded_requests: u64) -> Check {
    let sent = st.sent.load(Ordering::Relaxed);
    let unknown = st.unknown.load(Ordering::Relaxed);
    let allowance = if unknown > 0 {
        format!("; {unknown} mutating requests failed in transport: the checks below allow for them")
    } else {
        String::new()
    };
    Check::new(
        "every answer counted",
        sent == recorded_requests,
        format!("{sent} requests sent, {recorded_requests} outcomes recorded{allowance}"),
    )
}

/// One item as the server reports it after the run.
#[derive(Clone, Debug)]
pub(crate) struct ItemRead {
    /// Index into the scenario's SKUs.
    index: usize,
    stock: u64,
    available: u64,
    held: u64,
    sold: u64,
    json: Value,
}

impl ItemRead {
    fn from_json(index: usize, json: Value) -> ItemRead {
        // A missing field reads as a value no check accepts.
        let n = |f: &str| json[f].as_u64().unwrap_or(u64::MAX / 4);
        ItemRead { index, stock: n("stock"), available: n("available"), held: n("held"), sold: n("sold"), json }
    }
}

/// The items the run may have changed: every SKU, or for a concert the seats it touched.
async fn read_items(api: &mut Api, st: &State) -> Result<Vec<ItemRead>, String> {
    let indices: Vec<usize> = if st.params.kind == ScenarioKind::Concert {
        let mut t: Vec<usize> =
            st.touched.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|&s| s as usize).collect();
        t.sort_unstable();
        t
    } else {
        (0..st.skus.len()).collect()
    };
    let mut items = Vec::with_capacity(indices.len());
    for i in indices {
        let json = api.expect("GET", &format!("/v1/items/{}", st.skus[i]), None, "", &[200]).await?;
        items.push(ItemRead::from_json(i, json));
    }
    Ok(items)
}

fn items_word(st: &State) -> &'static str {
    if st.params.kind == ScenarioKind::Concert {
        "seats touched"
    } else {
        "SKUs"
    }
}

fn first(example: Option<String>) -> String {
    example.map(|e| format!("; first: {e}")).unwrap_or_default()
}

fn stock_conservation(st: &State, items: &[ItemRead]) -> Check {
    let broken: Vec<&ItemRead> =
        items.iter().filter(|i| i.available.saturating_add(i.held).saturating_add(i.sold) != i.stock).collect();
    let example = broken.first().map(|i| format!("{}: {}", st.skus[i.index], i.json));
    Check::new(
        "stock conservation",
        broken.is_empty(),
        format!(
            "available + held + sold == stock on {} of {} {}{}",
            items.len() - broken.len(),
            items.len(),
            items_word(st),
            first(example)
        ),
    )
}

fn no_oversell(st: &State, items: &[ItemRead]) -> Check {
    let oversold = items.iter().filter(|i| i.sold > i.stock).count();
    Check::new(
        "no oversell",
        oversold == 0,
        format!("sold <= stock on every one of {} {} ({oversold} oversold)", items.len(), items_word(st)),
    )
}

/// The server sold what the clients were acknowledged: exactly, or at least that much when
/// some mutating requests ended unknown (they may have been applied).
fn acknowledged_sales_recorded(st: &State, items: &[ItemRead]) -> Check {
    let unknown = st.unknown.load(Ordering::Relaxed);
    let (mut sold_total, mut acked_total, mut differ) = (0u64, 0u64, 0usize);
    let mut example = None;
    for item in items {
        let acked = st.sold[item.index].load(Ordering::Relaxed);
        sold_total = sold_total.saturating_add(item.sold);
        acked_total += acked;
        if (unknown == 0 && item.sold != acked) || item.sold < acked {
            differ += 1;
            example.get_or_insert_with(|| format!("{}: sold {}, acknowledged {acked}", st.skus[item.index], item.sold));
        }
    }
    Check::new(
        "acknowledged sales recorded",
        differ == 0,
        format!(
            "server sold {sold_total} units, clients were acknowledged {acked_total}; {differ} SKUs differ{}",
            first(example)
        ),
    )
}

fn expired_holds_returned(st: &State, items: &[ItemRead]) -> Check {
    let held_left = items.iter().filter(|i| i.held > 0).count();
    Check::new(
        "expired holds returned",
        held_left == 0,
        format!(
            "{held_left} seats still held {:.1} s after the last hold's TTL ({} s)",
            EXPIRY_MARGIN.as_secs_f64(),
            st.params.hold_ttl_s
        ),
    )
}

/// A seat is sold exactly when a client was acknowledged an order for it (not judged when
/// some requests ended unknown).
fn seat_sold_iff_ordered(st: &State, items: &[ItemRead]) -> Check {
    let unknown = st.unknown.load(Ordering::Relaxed);
    let ordered = st.ordered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let wrong = if unknown > 0 {
        0
    } else {
        items.iter().filter(|i| ordered.contains(&(i.index as u32)) != (i.sold == 1)).count()
    };
    Check::new(
        "seat sold iff ordered",
        wrong == 0,
        format!("{} seats ordered; {wrong} seats differ from the acknowledged orders", ordered.len()),
    )
}

/// Every customer's balance, in customer order.
async fn read_balances(api: &mut Api, st: &State) -> Vec<Result<i64, String>> {
    let mut balances = Vec::with_capacity(st.params.customers as usize);
    for c in 0..st.params.customers {
        let read = api.expect("GET", &format!("/v1/customers/c-{c}/points"), None, "", &[200]).await;
        balances.push(read.map(|v| v["balance"].as_i64().unwrap_or(-1)));
    }
    balances
}

/// Every balance is what was credited minus what was acknowledged as spent (at most that,
/// and not below 0, when some requests ended unknown).
fn points_conserved(st: &State, balances: &[Result<i64, String>]) -> Check {
    let unknown = st.unknown.load(Ordering::Relaxed);
    let mut differ = 0usize;
    let mut example = None;
    for (c, balance) in balances.iter().enumerate() {
        let expected = st.credit as i64 - st.spent.get(c).map_or(0, |s| s.load(Ordering::Relaxed));
        let problem = match balance {
            Ok(b) if unknown == 0 && *b == expected => None,
            Ok(b) if unknown > 0 && *b <= expected && *b >= 0 => None,
            Ok(b) => Some(format!("c-{c}: balance {b}, expected {expected}")),
            Err(e) => Some(e.clone()),
        };
        if let Some(p) = problem {
            differ += 1;
            example.get_or_insert(p);
        }
    }
    Check::new(
        "points conserved",
        differ == 0 && balances.len() == st.params.customers as usize,
        format!(
            "{} of {} customers hold credited minus acknowledged spending{}",
            balances.len() - differ,
            st.params.customers,
            first(example)
        ),
    )
}

fn ledger_balanced(trial_balance: Result<Value, String>) -> Check {
    match trial_balance {
        Ok(v) => {
            let balanced = v["balanced"] == true && v["total_debits"] == v["total_credits"];
            Check::new("ledger balanced", balanced, format!("trial balance {v}"))
        }
        Err(e) => Check::new("ledger balanced", false, e),
    }
}

/// retries: every replay was identical to the first answer, and there was at least one.
fn replays_identical(st: &State) -> Check {
    let n = st.replays_checked.load(Ordering::Relaxed);
    let bad = st.replay_mismatches.load(Ordering::Relaxed);
    let example = st.mismatch_example.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Check::new(
        "replays identical",
        n > 0 && bad == 0,
        format!(
            "{n} replays: {bad} differed from the first answer (status, body, Idempotent-Replayed){}",
            first(example)
        ),
    )
}

/// full-flow: a sample of the payments the workers refunded in full, as the server has them.
async fn read_refunded_payments(api: &mut Api, st: &State) -> Vec<Result<Value, String>> {
    let ids = st.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut payments = Vec::with_capacity(ids.len().min(PAYMENTS_CHECKED_MAX));
    for id in ids.iter().take(PAYMENTS_CHECKED_MAX) {
        payments.push(api.expect("GET", &format!("/v1/payments/{id}"), None, "", &[200]).await);
    }
    payments
}

/// full-flow: every sampled payment is refunded in full after its two partial refunds, and
/// there was at least one.
fn refunds_complete(payments: &[Result<Value, String>]) -> Check {
    let mut wrong = 0usize;
    let mut example = None;
    for payment in payments {
        let problem = match payment {
            Ok(v) if v["status"] == "refunded" && v["refunded"] == v["captured"] && v["captured"] == v["amount"] => {
                None
            }
            Ok(v) => Some(v.to_string()),
            Err(e) => Some(e.clone()),
        };
        if let Some(p) = problem {
            wrong += 1;
            example.get_or_insert(p);
        }
    }
    let n = payments.len();
    Check::new(
        "refunds complete",
        n > 0 && wrong == 0,
        format!("{} of {n} sampled payments refunded in full after two partial refunds{}", n - wrong, first(example)),
    )
}

/// card-flow: the card orders after the settlement wait.
pub(crate) struct CardRun {
    tally: CardTally,
    /// From the end of the load to the last read of an order still pending.
    waited: Duration,
    wait_limit: Duration,
}

/// card-flow: reads the card orders back until none is pending or `--settle-wait` has
/// passed, a round every [`SETTLE_POLL`]. A round reads the orders not yet seen settled in
/// the order they were placed, [`SETTLE_BATCH`] at a time, and stops after the first batch
/// that still holds a pending one: payments settle roughly in that order, so a round reads
/// little beyond what settled since the last, and the wait adds little load to a server
/// whose gateway worker is still draining.
async fn settle_card_orders(st: &State) -> CardRun {
    let orders = st.card_orders.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let drop_callbacks = st.sim.as_ref().and_then(|s| s.config["drop_callbacks"].as_f64()).unwrap_or(0.0);
    let wait_limit =
        st.params.settle_wait_s.map_or_else(|| default_settle_wait(drop_callbacks), Duration::from_secs_f64);
    let start = Instant::now();
    let mut reads: Vec<Result<Value, String>> = vec![Err("not read".to_string()); orders.len()];
    let mut open: Vec<usize> = (0..orders.len()).collect();
    loop {
        // The last round, once the wait is over, reads every order still open.
        let last_round = start.elapsed() >= wait_limit;
        let mut still_open = Vec::new();
        let mut pos = 0;
        while pos < open.len() {
            let batch = &open[pos..(pos + SETTLE_BATCH).min(open.len())];
            let wanted = batch.iter().map(|&i| (i, orders[i].id.clone())).collect();
            for (i, read) in read_orders(st, wanted).await {
                reads[i] = read;
            }
            let before = still_open.len();
            still_open.extend(batch.iter().copied().filter(|&i| !settled(&reads[i])));
            pos += batch.len();
            if still_open.len() > before && !last_round {
                break;
            }
        }
        still_open.extend_from_slice(&open[pos..]);
        open = still_open;
        if open.is_empty() || last_round {
            break;
        }
        tokio::time::sleep(SETTLE_POLL.min(wait_limit.saturating_sub(start.elapsed()))).await;
    }
    let waited = start.elapsed();
    CardRun { tally: CardTally::of(&orders, &reads, st.skus.len()), waited, wait_limit }
}

/// `GET /v1/orders/{id}` of each `(index, id)`, over [`ORDER_READERS`] connections.
async fn read_orders(st: &State, wanted: Vec<(usize, String)>) -> Vec<(usize, Result<Value, String>)> {
    let per_reader = wanted.len().div_ceil(ORDER_READERS).max(1);
    let mut readers = Vec::new();
    for part in wanted.chunks(per_reader) {
        let part = part.to_vec();
        let mut api = Api::new(st.target.clone(), st.timeout, st.auth.clone());
        readers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(part.len());
            for (i, id) in part {
                out.push((i, api.expect("GET", &format!("/v1/orders/{id}"), None, "", &[200]).await));
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(wanted.len());
    for reader in readers {
        // A reader that panicked leaves its orders as they were ("not read" at first).
        if let Ok(part) = reader.await {
            all.extend(part);
        }
    }
    all
}

/// A card order whose payment the gateway (or the server's giving up) has decided.
fn settled(read: &Result<Value, String>) -> bool {
    matches!(read, Ok(v) if v["status"] != "pending_payment" && v["payment"]["status"] != "pending")
}

/// card-flow: what became of the card orders.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CardTally {
    orders: u64,
    /// `paid`, the payment `captured` (automatic capture) or `authorized` (manual).
    paid: u64,
    /// The payment `failed`; the order `awaiting_payment` (stock still held) or `expired`.
    failed: u64,
    /// Still `pending_payment`.
    pending: u64,
    unreadable: u64,
    /// In a state the card flow does not lead to (e.g. `paid` with its payment `failed`).
    inconsistent: u64,
    first_pending: Option<String>,
    first_inconsistent: Option<String>,
    /// Units per SKU in paid orders, and in orders that still hold their stock
    /// (`pending_payment`, `awaiting_payment`).
    sold_units: Vec<u64>,
    held_units: Vec<u64>,
}

impl CardTally {
    pub(crate) fn of(orders: &[CardOrder], reads: &[Result<Value, String>], skus: usize) -> CardTally {
        let mut t = CardTally { sold_units: vec![0; skus], held_units: vec![0; skus], ..CardTally::default() };
        for (order, read) in orders.iter().zip(reads) {
            t.orders += 1;
            let v = match read {
                Ok(v) => v,
                Err(e) => {
                    t.unreadable += 1;
                    t.first_pending.get_or_insert_with(|| format!("{}: {e}", order.id));
                    continue;
                }
            };
            let payment = v["payment"]["status"].as_str().unwrap_or("none");
            let wanted = if order.manual { "authorized" } else { "captured" };
            let units = |u: &mut Vec<u64>| {
                if let Some(n) = u.get_mut(order.sku) {
                    *n += order.qty;
                }
            };
            match (v["status"].as_str().unwrap_or("none"), payment) {
                ("pending_payment", "pending") => {
                    t.pending += 1;
                    t.first_pending.get_or_insert_with(|| format!("{} still pending", order.id));
                    units(&mut t.held_units);
                }
                ("paid", p) if p == wanted => {
                    t.paid += 1;
                    units(&mut t.sold_units);
                }
                ("awaiting_payment", "failed") => {
                    t.failed += 1;
                    units(&mut t.held_units);
                }
                ("expired", "failed") => t.failed += 1,
                (status, p) => {
                    t.inconsistent += 1;
                    let capture = if order.manual { "manual" } else { "automatic" };
                    t.first_inconsistent.get_or_insert_with(|| {
                        format!("{} ({capture} capture): order {status}, payment {p}", order.id)
                    });
                    // Its stock is wherever the server put it: counted as the order says.
                    match status {
                        "paid" => units(&mut t.sold_units),
                        "pending_payment" | "awaiting_payment" => units(&mut t.held_units),
                        _ => {}
                    }
                }
            }
        }
        t
    }
}

/// card-flow: the range the paid share (paid / settled card orders) must fall in. Each
/// payment a gateway accepts is approved with probability `approval_rate` (the sim draws it
/// per payment), so without give-ups the paid share of `n` settled orders is a binomial share
/// around `approval_rate`, with a standard deviation of `sqrt(a (1 - a) / n)`. Payments no
/// gateway accepted in time fail without a decision and lower the share by at most
/// `max_gave_up_share` of it. The range is that, widened by [`PAID_SHARE_Z`] standard
/// deviations either way.
pub fn paid_share_bounds(approval_rate: f64, max_gave_up_share: f64, n: u64) -> (f64, f64) {
    let a = approval_rate.clamp(0.0, 1.0);
    let sigma = if n == 0 { 1.0 } else { (a * (1.0 - a) / n as f64).sqrt() };
    let low = a * (1.0 - max_gave_up_share.clamp(0.0, 1.0)) - PAID_SHARE_Z * sigma;
    let high = a + PAID_SHARE_Z * sigma;
    (low.max(0.0), high.min(1.0))
}

/// card-flow: the scenario's own checks, from the orders read back and the sim's counters.
async fn card_checks(st: &State, items: &[ItemRead], card: &CardRun) -> Vec<Check> {
    let mut checks =
        vec![card_payments_settled(&card.tally, card.waited, card.wait_limit), card_orders_consistent(&card.tally)];
    checks.push(held_matches_unpaid(st, items, &card.tally));
    let (rate, source) = match (st.params.approval_rate, st.sim.as_ref()) {
        (Some(a), _) => (Some(a), "--approval-rate"),
        (None, Some(sim)) => (sim.config["approval_rate"].as_f64(), "the sim's /sim/config"),
        (None, None) => (None, "no sim read"),
    };
    checks.push(paid_share_within_bounds(&card.tally, rate, source, st.params.max_gave_up_share));
    let stats = match st.sim.as_ref() {
        Some(sim) => {
            let mut api = Api::new(sim.target.clone(), st.timeout, "Bearer none".into());
            api.expect("GET", "/sim/stats", None, "", &[200]).await.map(|after| (sim.stats.clone(), after))
        }
        None => Err("the sim was not read at set-up".into()),
    };
    checks.extend(gateway_checks(&card.tally, &stats));
    checks
}

/// card-flow: every acknowledged card order was read back and none is still pending.
fn card_payments_settled(t: &CardTally, waited: Duration, limit: Duration) -> Check {
    Check::new(
        "card payments settled",
        t.orders > 0 && t.pending == 0 && t.unreadable == 0,
        format!(
            "{} card orders: {} paid, {} failed, {} still pending and {} unreadable {:.1} s after the load \
             (waiting at most {:.0} s){}",
            t.orders,
            t.paid,
            t.failed,
            t.pending,
            t.unreadable,
            waited.as_secs_f64(),
            limit.as_secs_f64(),
            first(t.first_pending.clone())
        ),
    )
}

/// card-flow: a paid order's payment is captured (automatic capture) or authorized (manual);
/// an unpaid one's failed, the order back to `awaiting_payment` or `expired`.
fn card_orders_consistent(t: &CardTally) -> Check {
    Check::new(
        "card orders consistent",
        t.inconsistent == 0,
        format!(
            "{} of {} settled card orders paid with their payment captured or authorized as asked, or \
             failed and back to awaiting_payment or expired{}",
            t.paid + t.failed,
            t.paid + t.failed + t.inconsistent,
            first(t.first_inconsistent.clone())
        ),
    )
}

/// card-flow: each SKU holds what its unpaid card orders reserve (at least that when some
/// requests ended unknown). Sold units are judged by "acknowledged sales recorded" against
/// the paid orders.
fn held_matches_unpaid(st: &State, items: &[ItemRead], t: &CardTally) -> Check {
    let unknown = st.unknown.load(Ordering::Relaxed);
    let (mut held, mut reserved, mut differ) = (0u64, 0u64, 0usize);
    let mut example = None;
    for item in items {
        let want = t.held_units.get(item.index).copied().unwrap_or(0);
        held = held.saturating_add(item.held);
        reserved += want;
        if (unknown == 0 && item.held != want) || item.held < want {
            differ += 1;
            example.get_or_insert_with(|| format!("{}: held {}, unpaid orders {want}", st.skus[item.index], item.held));
        }
    }
    Check::new(
        "held stock matches unpaid orders",
        differ == 0,
        format!(
            "server holds {held} units, unpaid card orders reserve {reserved}; {differ} SKUs differ{}",
            first(example)
        ),
    )
}

/// card-flow: the paid share of the settled card orders is within [`paid_share_bounds`].
fn paid_share_within_bounds(t: &CardTally, approval_rate: Option<f64>, source: &str, max_gave_up: f64) -> Check {
    let name = "paid share within bounds";
    let Some(a) = approval_rate else {
        return Check::new(name, false, format!("no approval rate to judge by ({source})"));
    };
    let n = t.paid + t.failed;
    let (low, high) = paid_share_bounds(a, max_gave_up, n);
    let share = if n == 0 { 0.0 } else { t.paid as f64 / n as f64 };
    Check::new(
        name,
        n > 0 && (low..=high).contains(&share),
        format!(
            "{} of {n} settled card orders paid ({:.1}%); bounds {:.1}%..{:.1}%: approval rate {:.1}% ({source}), \
             at most {:.1}% of it lost to give-ups, ± {PAID_SHARE_Z} standard deviations",
            t.paid,
            100.0 * share,
            100.0 * low,
            100.0 * high,
            100.0 * a,
            100.0 * max_gave_up
        ),
    )
}

/// The run's share of a `/sim/stats` counter.
fn delta(before: &Value, after: &Value, counter: &str) -> u64 {
    after[counter].as_u64().unwrap_or(0).saturating_sub(before[counter].as_u64().unwrap_or(0))
}

/// card-flow: from the gateway's side, nothing was charged twice, and every paid order is an
/// approved transaction of this run (the sim may have approved more: payments given up and
/// voided, or another client's).
fn gateway_checks(t: &CardTally, stats: &Result<(Value, Value), String>) -> Vec<Check> {
    let (before, after) = match stats {
        Ok(s) => s,
        Err(e) => {
            return vec![
                Check::new("charged once at the gateway", false, format!("GET /sim/stats: {e}")),
                Check::new("paid orders approved at the gateway", false, format!("GET /sim/stats: {e}")),
            ]
        }
    };
    let twice = after["charged_twice"].as_u64();
    let d = |c: &str| delta(before, after, c);
    let approved = d("approved");
    vec![
        Check::new(
            "charged once at the gateway",
            twice == Some(0),
            format!(
                "charged_twice {}; during the run: {} payment requests, {} answered 500, {} transactions, \
                 {approved} approved, {} declined, {} cancelled, {} idempotent replays",
                twice.map_or("missing".to_string(), |n| n.to_string()),
                d("payment_requests"),
                d("failed_requests"),
                d("transactions"),
                d("declined"),
                d("cancelled"),
                d("idempotent_replays"),
            ),
        ),
        Check::new(
            "paid orders approved at the gateway",
            approved >= t.paid,
            format!("{} card orders paid, {approved} transactions approved by the sim during the run", t.paid),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Target;
    use crate::scenario::{Catalogue, Params};

    /// A scenario's state as the workers left it, with no server behind it.
    fn state(kind: ScenarioKind) -> State {
        let params = Params {
            kind,
            customers: 2,
            hot_skus: 2,
            stock: 10,
            seats: 4,
            hold_ttl_s: 1,
            convert_share: 0.5,
            retry_share: 0.5,
            batch_size: 1,
            client_connections: 1,
            manual_share: 0.0,
            gateway_sim_url: "http://127.0.0.1:9".into(),
            settle_wait_s: None,
            approval_rate: None,
            max_gave_up_share: 0.05,
            skip_setup: false,
            seed: 1,
            merchant_id: None,
        };
        let target = Target::parse("http://127.0.0.1:9").expect("target");
        State::new(params.clone(), target, Duration::from_secs(1), "test".into(), &Catalogue::of(&params))
    }

    fn item(index: usize, stock: u64, available: u64, held: u64, sold: u64) -> ItemRead {
        let json = serde_json::json!({"stock": stock, "available": available, "held": held, "sold": sold});
        ItemRead::from_json(index, json)
    }

    fn sell(st: &State, index: usize, units: u64) {
        st.sold[index].fetch_add(units, Ordering::Relaxed);
    }

    #[test]
    fn answers_counted_fails_when_an_outcome_is_lost() {
        let st = state(ScenarioKind::Orders);
        st.sent.store(3, Ordering::Relaxed);
        assert!(answers_counted(&st, 3).pass);
        let lost = answers_counted(&st, 2);
        assert!(!lost.pass);
        assert_eq!(lost.detail, "3 requests sent, 2 outcomes recorded");
        st.unknown.store(1, Ordering::Relaxed);
        assert!(answers_counted(&st, 3).detail.contains("1 mutating requests failed in transport"));
    }

    #[test]
    fn stock_conservation_fails_when_units_appear_or_vanish() {
        let st = state(ScenarioKind::FlashSale);
        assert!(stock_conservation(&st, &[item(0, 10, 5, 1, 4)]).pass);
        let broken = stock_conservation(&st, &[item(0, 10, 5, 1, 4), item(1, 10, 6, 0, 5)]);
        assert!(!broken.pass);
        assert!(
            broken.detail.starts_with("available + held + sold == stock on 1 of 2 SKUs; first: hot-1"),
            "{broken:?}"
        );
        assert!(!stock_conservation(&st, &[ItemRead::from_json(0, serde_json::json!({}))]).pass, "fields missing");
    }

    #[test]
    fn no_oversell_fails_when_more_is_sold_than_stocked() {
        let st = state(ScenarioKind::FlashSale);
        assert!(no_oversell(&st, &[item(0, 10, 0, 0, 10)]).pass);
        assert!(!no_oversell(&st, &[item(0, 10, 0, 0, 11)]).pass);
    }

    #[test]
    fn acknowledged_sales_must_all_be_recorded() {
        let st = state(ScenarioKind::FlashSale);
        sell(&st, 0, 5);
        assert!(acknowledged_sales_recorded(&st, &[item(0, 10, 5, 0, 5)]).pass);
        assert!(!acknowledged_sales_recorded(&st, &[item(0, 10, 6, 0, 4)]).pass, "an acknowledged sale is missing");
        assert!(!acknowledged_sales_recorded(&st, &[item(0, 10, 4, 0, 6)]).pass, "a sale nobody was told of");
        // With requests of unknown outcome, more may have been sold, never less.
        st.unknown.store(1, Ordering::Relaxed);
        assert!(acknowledged_sales_recorded(&st, &[item(0, 10, 4, 0, 6)]).pass);
        assert!(!acknowledged_sales_recorded(&st, &[item(0, 10, 6, 0, 4)]).pass);
    }

    #[test]
    fn concert_seats_must_be_released_and_sold_only_when_ordered() {
        let st = state(ScenarioKind::Concert);
        st.ordered.lock().expect("ordered").insert(0);
        let good = [item(0, 1, 0, 0, 1), item(1, 1, 1, 0, 0)];
        assert!(concert_checks(&st, &good).iter().all(|c| c.pass));
        assert!(!expired_holds_returned(&st, &[item(1, 1, 0, 1, 0)]).pass, "a hold outlived its TTL");
        assert!(!seat_sold_iff_ordered(&st, &[item(0, 1, 1, 0, 0)]).pass, "ordered, not sold");
        assert!(!seat_sold_iff_ordered(&st, &[item(1, 1, 0, 0, 1)]).pass, "sold, never ordered");
    }

    #[test]
    fn points_must_be_credit_minus_acknowledged_spending() {
        let st = state(ScenarioKind::FlashSale);
        st.spent[0].store(1000, Ordering::Relaxed);
        assert!(points_conserved(&st, &[Ok(9000), Ok(10_000)]).pass);
        let wrong = points_conserved(&st, &[Ok(9500), Ok(10_000)]);
        assert!(!wrong.pass);
        assert!(wrong.detail.ends_with("first: c-0: balance 9500, expected 9000"), "{wrong:?}");
        assert!(!points_conserved(&st, &[Ok(9000), Err("GET: 503".into())]).pass, "a balance not read");
        assert!(!points_conserved(&st, &[Ok(9000)]).pass, "a customer missing");
    }

    #[test]
    fn the_ledger_must_balance() {
        let balanced = serde_json::json!({"balanced": true, "total_debits": 7, "total_credits": 7});
        assert!(ledger_balanced(Ok(balanced)).pass);
        let off = serde_json::json!({"balanced": true, "total_debits": 7, "total_credits": 8});
        assert!(!ledger_balanced(Ok(off)).pass);
        assert!(!ledger_balanced(Ok(serde_json::json!({"balanced": false}))).pass);
        assert!(!ledger_balanced(Err("GET /v1/ledger/trial-balance: 500".into())).pass);
    }

    #[test]
    fn replays_must_exist_and_be_identical() {
        let st = state(ScenarioKind::Retries);
        assert!(!replays_identical(&st).pass, "no replay was checked");
        st.replays_checked.store(2, Ordering::Relaxed);
        assert!(replays_identical(&st).pass);
        st.replay_mismatches.store(1, Ordering::Relaxed);
        assert!(!replays_identical(&st).pass);
    }

    #[test]
    fn refunds_must_be_complete_on_every_sampled_payment() {
        let refunded = serde_json::json!({"status": "refunded", "amount": 5, "captured": 5, "refunded": 5});
        let partly = serde_json::json!({"status": "captured", "amount": 5, "captured": 5, "refunded": 2});
        assert!(refunds_complete(&[Ok(refunded.clone())]).pass);
        assert!(!refunds_complete(&[]).pass, "nothing sampled");
        assert!(!refunds_complete(&[Ok(refunded.clone()), Ok(partly)]).pass);
        assert!(!refunds_complete(&[Ok(refunded), Err("GET: 404".into())]).pass);
    }

    fn card(id: &str, sku: usize, qty: u64, manual: bool) -> CardOrder {
        CardOrder { id: id.into(), sku, qty, manual }
    }

    fn order(status: &str, payment: &str) -> Result<Value, String> {
        Ok(serde_json::json!({"status": status, "payment": {"status": payment}}))
    }

    #[test]
    fn paid_share_bounds_widen_with_fewer_orders_and_allow_for_give_ups() {
        // 0.7 over 10,000 orders: sigma 0.458%; 4 sigma 1.83%; give-ups up to 5% of 0.7 = 3.5%.
        let (low, high) = paid_share_bounds(0.7, 0.05, 10_000);
        assert!((high - (0.7 + 4.0 * 0.004583)).abs() < 1e-4, "{high}");
        assert!((low - (0.665 - 4.0 * 0.004583)).abs() < 1e-4, "{low}");
        let (low100, high100) = paid_share_bounds(0.7, 0.05, 100);
        assert!(low100 < low && high100 > high, "fewer orders, wider bounds");
        // Without give-ups the range is symmetric around the rate.
        let (l, h) = paid_share_bounds(0.7, 0.0, 10_000);
        assert!(((0.7 - l) - (h - 0.7)).abs() < 1e-12);
        // Certain outcomes have no spread; bounds stay within 0..=1.
        assert_eq!(paid_share_bounds(1.0, 0.0, 50), (1.0, 1.0));
        assert_eq!(paid_share_bounds(0.0, 0.05, 50), (0.0, 0.0));
        assert_eq!(paid_share_bounds(0.5, 0.0, 0), (0.0, 1.0), "nothing settled: no bound (the check fails on n == 0)");
    }

    #[test]
    fn card_orders_are_tallied_by_their_final_state() {
        let orders = [
            card("ord_1", 0, 1, false),
            card("ord_2", 1, 2, true),
            card("ord_3", 0, 2, false),
            card("ord_4", 1, 1, false),
            card("ord_5", 0, 1, false),
            card("ord_6", 1, 1, true),
            card("ord_7", 0, 1, false),
        ];
        let reads = [
            order("paid", "captured"),
            order("paid", "authorized"),
            order("awaiting_payment", "failed"),
            order("expired", "failed"),
            order("pending_payment", "pending"),
            order("paid", "captured"), // manual capture, yet captured
            Err("GET /v1/orders/ord_7: 503".into()),
        ];
        let t = CardTally::of(&orders, &reads, 2);
        assert_eq!((t.orders, t.paid, t.failed, t.pending, t.unreadable, t.inconsistent), (7, 2, 2, 1, 1, 1));
        assert_eq!(t.sold_units, vec![1, 2 + 1], "paid orders, the inconsistent paid one included");
        assert_eq!(t.held_units, vec![2 + 1, 0], "awaiting and pending orders hold; expired ones do not");
        assert_eq!(t.first_pending.as_deref(), Some("ord_5 still pending"));
        assert!(t
            .first_inconsistent
            .as_deref()
            .unwrap()
            .contains("ord_6 (manual capture): order paid, payment captured"));
        assert!(!settled(&reads[4]) && !settled(&reads[6]) && settled(&reads[2]));

        let long = Duration::from_secs(30);
        assert!(!card_payments_settled(&t, Duration::from_secs(3), long).pass);
        assert!(!card_orders_consistent(&t).pass);
        let clean = CardTally::of(&orders[..4], &reads[..4], 2);
        assert!(card_payments_settled(&clean, Duration::from_secs(3), long).pass);
        assert!(card_orders_consistent(&clean).pass);
        assert!(!card_payments_settled(&CardTally::of(&[], &[], 2), Duration::ZERO, long).pass, "no card order");
    }

    #[test]
    fn held_stock_must_match_the_unpaid_card_orders() {
        let st = state(ScenarioKind::CardFlow);
        let t = CardTally::of(&[card("ord_1", 0, 2, false)], &[order("awaiting_payment", "failed")], st.skus.len());
        assert!(held_matches_unpaid(&st, &[item(0, 10, 8, 2, 0), item(1, 10, 10, 0, 0)], &t).pass);
        assert!(!held_matches_unpaid(&st, &[item(0, 10, 10, 0, 0)], &t).pass, "a failed order lost its hold");
        assert!(!held_matches_unpaid(&st, &[item(0, 10, 7, 3, 0)], &t).pass, "a hold nobody ordered");
        st.unknown.store(1, Ordering::Relaxed);
        assert!(held_matches_unpaid(&st, &[item(0, 10, 7, 3, 0)], &t).pass, "an order of unknown outcome may hold");
    }

    #[test]
    fn the_paid_share_is_judged_against_the_approval_rate() {
        let tally = |paid: u64, failed: u64| CardTally { orders: paid + failed, paid, failed, ..CardTally::default() };
        let judge = |t: &CardTally| paid_share_within_bounds(t, Some(0.7), "test", 0.05);
        assert!(judge(&tally(700, 300)).pass);
        assert!(judge(&tally(680, 320)).pass, "a few give-ups");
        assert!(!judge(&tally(800, 200)).pass, "more approved than the sim approves");
        assert!(!judge(&tally(500, 500)).pass, "too many failures");
        assert!(!judge(&tally(0, 0)).pass, "nothing settled");
        assert!(!paid_share_within_bounds(&tally(700, 300), None, "no sim read", 0.05).pass);
    }

    #[test]
    fn the_gateway_must_charge_once_and_approve_every_paid_order() {
        let t = CardTally { orders: 10, paid: 7, failed: 3, ..CardTally::default() };
        let before = serde_json::json!({"approved": 100, "charged_twice": 0});
        let ok = serde_json::json!({"approved": 107, "charged_twice": 0});
        assert!(gateway_checks(&t, &Ok((before.clone(), ok))).iter().all(|c| c.pass));
        let twice = serde_json::json!({"approved": 107, "charged_twice": 1});
        assert!(!gateway_checks(&t, &Ok((before.clone(), twice)))[0].pass);
        let fewer = serde_json::json!({"approved": 106, "charged_twice": 0});
        assert!(!gateway_checks(&t, &Ok((before.clone(), fewer)))[1].pass, "a paid order the sim never approved");
        assert!(!gateway_checks(&t, &Ok((before, serde_json::json!({}))))[0].pass, "charged_twice missing");
        assert!(gateway_checks(&t, &Err("refused".into())).iter().all(|c| !c.pass));
    }

    #[test]
    fn the_settle_wait_covers_the_lookups_when_callbacks_are_dropped() {
        assert_eq!(default_settle_wait(0.0), Duration::from_secs(30));
        assert_eq!(default_settle_wait(0.1), Duration::from_secs(140));
    }

    #[tokio::test]
    async fn a_run_without_set_up_checks_nothing() {
        let mut st = state(ScenarioKind::Orders);
        st.params.skip_setup = true;
        assert!(run(&st, 0).await.is_empty());
    }
}
