//! Card payments as the end-to-end tests drive and check them: merchant `shop` with an item
//! `tee`, card orders, and the checks from both sides (the API's views, and the charges
//! each `surge gateway-sim` holds).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{create_merchant, http, Sim};

pub const CARD_NUMBER: &str = "4111-1111-1111-1451";

/// Merchant `shop` (created with the admin header value `admin_bearer`) with an item `tee`
/// (price 1000, stock 1000); its `Authorization` value.
pub fn shop(addr: SocketAddr, admin_bearer: &str) -> String {
    shop_named(addr, admin_bearer, "shop")
}

/// `shop` under the merchant id `id`.
pub fn shop_named(addr: SocketAddr, admin_bearer: &str, id: &str) -> String {
    let auth = create_merchant(addr, admin_bearer, id);
    let body = r#"{"name":"Tee","price":1000,"stock":1000}"#;
    let (status, _) = http(addr, "PUT", "/v1/items/tee", &[("Authorization", &auth)], Some(body)).unwrap();
    assert_eq!(status, 201);
    auth
}

/// Places a card order of `qty` tees; returns its id after checking the 202.
pub fn card_order(addr: SocketAddr, auth: &str, key: &str, qty: u64, capture: &str) -> String {
    let body = format!(
        r#"{{"customer_id":"c-{key}","lines":[{{"sku":"tee","qty":{qty}}}],
            "payment":{{"method":"card","card":{{"number":"{CARD_NUMBER}","type":"KB"}},"capture":"{capture}"}}}}"#
    );
    let h = [("Authorization", auth), ("Idempotency-Key", key)];
    let (status, order) = http(addr, "POST", "/v1/orders", &h, Some(&body)).expect("place a card order");
    assert_eq!(status, 202, "{order}");
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["payment"]["status"], "pending");
    assert_eq!(order["payment"]["card"]["last4"], "1451");
    order["id"].as_str().unwrap().to_string()
}

pub fn get(addr: SocketAddr, auth: &str, path: &str) -> Value {
    let (status, v) = http(addr, "GET", path, &[("Authorization", auth)], None).expect("GET");
    assert_eq!(status, 200, "{path}: {v}");
    v
}

pub fn post(addr: SocketAddr, auth: &str, path: &str, key: &str, body: &str) -> (u16, Value) {
    http(addr, "POST", path, &[("Authorization", auth), ("Idempotency-Key", key)], Some(body)).expect("POST")
}

/// Waits until order `id` leaves `pending_payment`; returns it.
pub fn settled(addr: SocketAddr, auth: &str, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let order = get(addr, auth, &format!("/v1/orders/{id}"));
        if order["status"] != "pending_payment" {
            return order;
        }
        assert!(Instant::now() < deadline, "order {id} still pending: {order}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `check` holds of `GET path`.
pub fn wait_for(addr: SocketAddr, auth: &str, path: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = get(addr, auth, path);
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn assert_balanced(addr: SocketAddr, auth: &str) {
    let tb = get(addr, auth, "/v1/ledger/trial-balance");
    assert_eq!(tb["balanced"], true, "{tb}");
}

/// Stock is conserved: sold = quantities of paid orders, held = of orders awaiting payment.
pub fn assert_stock(addr: SocketAddr, auth: &str, orders: &[(String, u64)]) {
    let (mut sold, mut held) = (0, 0);
    for (id, qty) in orders {
        match get(addr, auth, &format!("/v1/orders/{id}"))["status"].as_str().unwrap() {
            "paid" => sold += qty,
            "awaiting_payment" | "pending_payment" => held += qty,
            _ => {}
        }
    }
    let item = get(addr, auth, "/v1/items/tee");
    assert_eq!((item["sold"].as_u64(), item["held"].as_u64()), (Some(sold), Some(held)), "{item}");
    assert_eq!(item["available"].as_u64().unwrap() + sold + held, 1000, "{item}");
}

/// Charges a gateway holds for payment `pay` of merchant `shop`: approved transactions that
/// are not cancelled and not refunded in full.
pub fn standing_charges(sims: &[&Sim], pay: &str) -> usize {
    sims.iter()
        .map(|sim| {
            let path = format!("/api/v1/payments?orderId=shop:{pay}");
            let (status, list) = http(sim.addr, "GET", &path, &[], None).expect("lookup by order");
            assert_eq!(status, 200, "{list}");
            let txs = list["transactions"].as_array().cloned().unwrap_or_default();
            txs.iter()
                .filter(|t| t["status"] == "SUCCESS")
                .filter(|t| {
                    t["capturedAmount"].as_u64() == Some(0)
                        || t["capturedAmount"].as_u64() > t["refundedAmount"].as_u64()
                })
                .count()
        })
        .sum()
}

/// From the gateways' side: every paid order is charged exactly once, every other order not
/// at all (a charge for an order that failed is voided or refunded, which may take a while).
pub fn assert_charged_once_per_paid_order(addr: SocketAddr, auth: &str, sims: &[&Sim], orders: &[(String, u64)]) {
    for (id, _) in orders {
        let order = get(addr, auth, &format!("/v1/orders/{id}"));
        let pay = order["payment"]["id"].as_str().unwrap().to_string();
        let want = usize::from(order["status"] == "paid");
        let deadline = Instant::now() + SETTLE;
        loop {
            let standing = standing_charges(sims, &pay);
            if standing == want {
                break;
            }
            assert!(Instant::now() < deadline, "order {id} ({}) has {standing} standing charges", order["status"]);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How long a card payment may take to settle in these tests.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Waits (40 s at most each) until every order of `orders` has left `pending_payment`;
/// returns how many are paid.
pub fn settle_all(addr: SocketAddr, auth: &str, orders: &[(String, u64)]) -> usize {
    orders.iter().filter(|(id, _)| settled(addr, auth, id, Duration::from_secs(40))["status"] == "paid").count()
}

/// After a crash mid-flow, once `orders` (each on its own payment) settled: nothing was
/// charged twice (at most one gateway transaction per payment, one standing charge per paid
/// order), stock is conserved and the ledger balanced.
pub fn assert_charged_once_after_crash(addr: SocketAddr, auth: &str, sim: &Sim, orders: &[(String, u64)]) {
    let stats = sim.stats();
    assert_eq!(stats["charged_twice"], 0, "{stats}");
    let most = orders.len() as u64;
    assert!(stats["transactions"].as_u64() <= Some(most), "one transaction per payment at most: {stats}");
    assert_charged_once_per_paid_order(addr, auth, &[sim], orders);
    assert_stock(addr, auth, orders);
    assert_balanced(addr, auth);
}
