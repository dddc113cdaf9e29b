//! The invariants checked after a run, through the API, against what the scenario's
//! workers were acknowledged. Each check is a function of its own that judges what was
//! read (and can therefore be fed fabricated answers in tests); reading is separate.
//!
//! Every scenario gets [`answers_counted`], the item checks, [`points_conserved`] and
//! [`ledger_balanced`]; [`scenario_checks`] adds a scenario's own (one function each).
//! A run with `--skip-setup` checks nothing and says so: see `report::Verdict`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::scenario::{Api, ScenarioKind, State};

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
    checks.extend(scenario_checks(st, &mut api, &items).await);
    checks
}

/// The checks of one scenario beyond those every scenario gets.
async fn scenario_checks(st: &State, api: &mut Api, items: &[ItemRead]) -> Vec<Check> {
    match st.params.kind {
        ScenarioKind::Concert => concert_checks(st, items),
        ScenarioKind::Retries => vec![replays_identical(st)],
        ScenarioKind::FullFlow => vec![refunds_complete(&read_refunded_payments(api, st).await)],
        ScenarioKind::FlashSale | ScenarioKind::Mixed | ScenarioKind::Batch | ScenarioKind::Orders => Vec::new(),
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
            skip_setup: false,
            seed: 1,
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

    #[tokio::test]
    async fn a_run_without_set_up_checks_nothing() {
        let mut st = state(ScenarioKind::Orders);
        st.params.skip_setup = true;
        assert!(run(&st, 0).await.is_empty());
    }
}
