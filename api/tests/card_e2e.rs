//! Card payments end to end, between real processes over loopback: `surge serve` with its
//! gateway worker, and `surge gateway-sim` as the payment gateway (one or two of them).
//! The gateway's own counters (`/sim/stats`) prove that nothing was charged twice.

mod process;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use process::card::*;
use process::{get_text, http, metric, Sim, Surge, SIM_SECRET as SECRET};

/// `surge serve` with the gateways `sims` (in order of preference) and more environment.
fn serve(dir: &Path, sims: &[&Sim], env: &[(&str, &str)]) -> Surge {
    let urls = sims.iter().map(|s| s.url()).collect::<Vec<_>>().join(",");
    let mut all = vec![("SURGE_GATEWAY_URLS", urls.as_str()), ("SURGE_GATEWAY_SECRET", SECRET)];
    all.push(("SURGE_ADMIN_TOKEN", "admin"));
    all.extend_from_slice(env);
    Surge::start_with(dir, &all).0
}

fn assert_card_number_absent(dir: &Path) {
    let digits = CARD_NUMBER.replace('-', "");
    // Bounded: a test's data directory holds a handful of files.
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for needle in [CARD_NUMBER.as_bytes(), digits.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the card number is readable in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn card_payments_authorize_capture_refund_and_void_at_the_gateway() {
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let surge = serve(dir.path(), &[&sim], &[]);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));

    // Automatic capture: paid and captured once the gateway approves.
    let auto = card_order(addr, &auth, "auto", 2, "automatic");
    let order = settled(addr, &auth, &auto, SETTLE);
    assert_eq!((order["status"].as_str(), order["payment"]["status"].as_str()), (Some("paid"), Some("captured")));
    let tx = sim.transaction(order["payment"]["transaction_key"].as_str().unwrap());
    assert_eq!((tx["status"].as_str(), tx["capturedAmount"].as_u64()), (Some("SUCCESS"), Some(2000)));

    // Manual capture: authorized, then a partial capture and two partial refunds.
    let manual = card_order(addr, &auth, "manual", 1, "manual");
    let order = settled(addr, &auth, &manual, SETTLE);
    assert_eq!((order["status"].as_str(), order["payment"]["status"].as_str()), (Some("paid"), Some("authorized")));
    let payment = order["payment"]["id"].as_str().unwrap().to_string();
    let key = order["payment"]["transaction_key"].as_str().unwrap().to_string();
    let (status, p) = post(addr, &auth, &format!("/v1/payments/{payment}/capture"), "cap", r#"{"amount":600}"#);
    assert_eq!((status, p["status"].as_str(), p["captured"].as_u64()), (200, Some("captured"), Some(600)), "{p}");
    for (i, amount) in [100, 150].iter().enumerate() {
        let body = format!(r#"{{"amount":{amount}}}"#);
        let (status, p) = post(addr, &auth, &format!("/v1/payments/{payment}/refund"), &format!("ref{i}"), &body);
        assert_eq!(status, 200, "{p}");
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let tx = sim.transaction(&key);
        if tx["capturedAmount"] == 600 && tx["refundedAmount"] == 250 {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway shows {tx}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Cancelling an authorized order voids the authorization at the gateway.
    let void = card_order(addr, &auth, "void", 1, "manual");
    let order = settled(addr, &auth, &void, SETTLE);
    let key = order["payment"]["transaction_key"].as_str().unwrap().to_string();
    let (status, o) = post(addr, &auth, &format!("/v1/orders/{void}/cancel"), "cancel", "{}");
    assert_eq!(status, 200, "{o}");
    let deadline = Instant::now() + SETTLE;
    while sim.transaction(&key)["status"] != "CANCELLED" {
        assert!(Instant::now() < deadline, "the authorization was not voided: {}", sim.transaction(&key));
        std::thread::sleep(Duration::from_millis(50));
    }
    let p = get(addr, &auth, &format!("/v1/payments/{}", order["payment"]["id"].as_str().unwrap()));
    assert_eq!(p["status"], "voided", "{p}");

    assert_balanced(addr, &auth);
    assert_stock(addr, &auth, &[(auto, 2), (manual, 1), (void, 1)]);
    let stats = sim.stats();
    assert_eq!((stats["charged_twice"].as_u64(), stats["transactions"].as_u64()), (Some(0), Some(3)), "{stats}");
    let (_, text) = get_text(addr, "/metrics").unwrap();
    let applied = metric(&text, "surge_gateway_callbacks_total{result=\"applied\"}").unwrap_or(0.0);
    assert!(applied >= 1.0, "callbacks show in /metrics:\n{text}");
    drop(surge);
    assert_card_number_absent(dir.path());
}

#[test]
fn a_declined_card_reopens_the_order_which_can_be_paid_again() {
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let surge = serve(dir.path(), &[&sim], &[]);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    let id = card_order(addr, &auth, "declined", 3, "automatic");
    let order = settled(addr, &auth, &id, SETTLE);
    assert_eq!(
        (order["status"].as_str(), order["payment"]["status"].as_str()),
        (Some("awaiting_payment"), Some("failed"))
    );
    assert!(order["payment"]["failure_reason"].as_str().is_some_and(|r| !r.is_empty()), "{order}");
    assert!(order["expires_at"].is_string(), "the order keeps its stock until it expires: {order}");
    assert_stock(addr, &auth, &[(id.clone(), 3)]);

    // Paid again, with points this time.
    let (status, _) = post(addr, &auth, "/v1/customers/c-declined/points/credit", "credit", r#"{"amount":5000}"#);
    assert_eq!(status, 200);
    let (status, paid) = post(addr, &auth, &format!("/v1/orders/{id}/payments"), "again", r#"{"method":"points"}"#);
    assert_eq!(status, 200, "{paid}");
    let order = get(addr, &auth, &format!("/v1/orders/{id}"));
    assert_eq!(order["status"], "paid", "{order}");
    assert_stock(addr, &auth, &[(id, 3)]);
    assert_balanced(addr, &auth);
}

#[test]
fn with_every_callback_dropped_the_reconciler_settles_every_payment() {
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "0.7", "--drop-callbacks", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let surge = serve(dir.path(), &[&sim], &[("SURGE_GATEWAY_RECONCILE_AFTER_MS", "500")]);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    let ids: Vec<(String, u64)> =
        (0..20).map(|i| (card_order(addr, &auth, &format!("d{i}"), 1, "automatic"), 1)).collect();
    let mut paid = 0;
    for (id, _) in &ids {
        if settled(addr, &auth, id, SETTLE)["status"] == "paid" {
            paid += 1;
        }
    }
    let stats = sim.stats();
    assert_eq!(stats["callbacks_sent"], 0, "{stats}");
    assert_eq!(stats["approved"].as_u64(), Some(paid), "every approval, and only those, paid an order: {stats}");
    assert_eq!(stats["charged_twice"], 0, "{stats}");
    assert_charged_once_per_paid_order(addr, &auth, &[&sim], &ids);
    assert_stock(addr, &auth, &ids);
    assert_balanced(addr, &auth);
    let (_, text) = get_text(addr, "/metrics").unwrap();
    assert!(text.contains("surge_gateway_reconcile_lookups_total{result=\"settled\"}"), "look-ups show in /metrics");
}

#[test]
fn a_gateway_down_sends_payments_to_the_next_and_with_none_they_fail_fast() {
    let first = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let second = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let env = [("SURGE_GATEWAY_SUBMIT_DEADLINE_MS", "3000")];
    let surge = serve(dir.path(), &[&first, &second], &env);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    first.mode("down");
    let mut orders = Vec::new();
    for i in 0..30 {
        let id = card_order(addr, &auth, &format!("fo{i}"), 1, "automatic");
        orders.push((id, 1));
    }
    for (id, _) in &orders {
        assert_eq!(settled(addr, &auth, id, SETTLE)["status"], "paid", "paid through the second gateway");
    }
    assert_eq!(second.stats()["approved"], 30, "{}", second.stats());
    let (_, text) = get_text(addr, "/metrics").unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("surge_gateway_breaker_state") && l.contains(&first.addr.to_string())),
        "{text}"
    );

    // No gateway at all: payments fail after the submit deadline, never stay pending.
    second.mode("down");
    let started = Instant::now();
    let stranded = card_order(addr, &auth, "none", 1, "automatic");
    let order = settled(addr, &auth, &stranded, SETTLE);
    assert_eq!(
        (order["status"].as_str(), order["payment"]["status"].as_str()),
        (Some("awaiting_payment"), Some("failed"))
    );
    assert!(started.elapsed() < Duration::from_secs(10), "failed fast: {:?}", started.elapsed());
    orders.push((stranded, 1));

    // Back up: payments go through again (the breakers close after their probes).
    first.mode("normal");
    second.mode("normal");
    let back = card_order(addr, &auth, "back", 1, "automatic");
    assert_eq!(settled(addr, &auth, &back, SETTLE)["status"], "paid");
    orders.push((back, 1));
    assert_eq!(first.stats()["charged_twice"], 0);
    assert_eq!(second.stats()["charged_twice"], 0);
    assert_charged_once_per_paid_order(addr, &auth, &[&first, &second], &orders);
    assert_stock(addr, &auth, &orders);
    assert_balanced(addr, &auth);
}

#[test]
fn a_slow_gateway_is_retried_with_the_same_key_and_charges_once() {
    // Callbacks come late enough that the worker's retries come first.
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1", "--settle-ms", "3000..4000"]);
    let dir = tempfile::tempdir().unwrap();
    let env = [("SURGE_GATEWAY_RESPONSE_TIMEOUT_MS", "1000"), ("SURGE_GATEWAY_SUBMIT_DEADLINE_MS", "30000")];
    let surge = serve(dir.path(), &[&sim], &env);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    sim.mode("slow");
    // Few enough that the timeouts do not open the breaker (which would hold the retries).
    let ids: Vec<(String, u64)> =
        (0..4).map(|i| (card_order(addr, &auth, &format!("s{i}"), 1, "automatic"), 1)).collect();
    std::thread::sleep(Duration::from_secs(4));
    sim.mode("normal");
    for (id, _) in &ids {
        assert_eq!(settled(addr, &auth, id, Duration::from_secs(40))["status"], "paid");
    }
    let stats = sim.stats();
    assert_eq!((stats["transactions"].as_u64(), stats["charged_twice"].as_u64()), (Some(4), Some(0)), "{stats}");
    assert!(stats["idempotent_replays"].as_u64() > Some(0), "timed-out calls were retried under their key: {stats}");
    assert_stock(addr, &auth, &ids);
    assert_balanced(addr, &auth);
}

#[test]
fn surge_killed_mid_flow_resumes_without_a_stuck_or_double_charged_payment() {
    let sim = Sim::start(&["--success-rate", "0.6", "--approval-rate", "0.8", "--settle-ms", "300..1500"]);
    let dir = tempfile::tempdir().unwrap();
    let env = [("SURGE_GATEWAY_RECONCILE_AFTER_MS", "1000")];
    let surge = serve(dir.path(), &[&sim], &env);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    let ids: Vec<(String, u64)> =
        (0..40).map(|i| (card_order(addr, &auth, &format!("k{i}"), 1, "automatic"), 1)).collect();
    std::thread::sleep(Duration::from_millis(150));
    drop(surge); // SIGKILL, mid-flow: requests, callbacks and look-ups in flight
    let surge = serve(dir.path(), &[&sim], &env);
    let addr = surge.addr;
    assert!(settle_all(addr, &auth, &ids) > 0);
    assert_charged_once_after_crash(addr, &auth, &sim, &ids);
    let open = wait_for(addr, "Bearer admin", "/v1/admin/dead-letters", SETTLE, |v| v["dead_letters"].is_array());
    assert_eq!(open["dead_letters"].as_array().map(Vec::len), Some(0), "{open}");
}

#[test]
fn callbacks_are_authenticated_and_unknown_transactions_are_404() {
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1", "--settle-ms", "60000..60001"]);
    let dir = tempfile::tempdir().unwrap();
    let surge = serve(dir.path(), &[&sim], &[]);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    let id = card_order(addr, &auth, "cb", 1, "automatic");
    let payment = get(addr, &auth, &format!("/v1/orders/{id}"))["payment"]["id"].as_str().unwrap().to_string();
    let body = format!(r#"{{"transactionKey":"20261206:TR:abcdef","orderId":"shop:{payment}","status":"SUCCESS"}}"#);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let sign = |secret: &str, ts: &str, body: &str| {
        surge_relay::gateway::signature::sign(secret.as_bytes(), ts, body.as_bytes())
    };

    let send = |ts: &str, sig: &str, body: &str| {
        http(addr, "POST", "/v1/gateway/callback", &[("X-Timestamp", ts), ("X-Signature", sig)], Some(body)).unwrap()
    };
    assert_eq!(send(&now, &sign("wrong", &now, &body), &body).0, 401, "a wrong secret");
    let stale = (now.parse::<u64>().unwrap() - 301).to_string();
    assert_eq!(send(&stale, &sign(SECRET, &stale, &body), &body).0, 401, "a stale timestamp");
    assert_eq!(http(addr, "POST", "/v1/gateway/callback", &[], Some(&body)).unwrap().0, 401, "no signature");
    assert_eq!(get(addr, &auth, &format!("/v1/orders/{id}"))["status"], "pending_payment", "nothing changed");

    let unknown = r#"{"transaction_key":"t","order_id":"shop:pay_999","status":"SUCCESS"}"#;
    assert_eq!(send(&now, &sign(SECRET, &now, unknown), unknown).0, 404);
    let other = r#"{"transaction_key":"t","order_id":"nobody:pay_1","status":"SUCCESS"}"#;
    assert_eq!(send(&now, &sign(SECRET, &now, other), other).0, 404);

    // A signed callback settles it (the gateway's own one comes only in a minute); again: a duplicate.
    let (status, answer) = send(&now, &sign(SECRET, &now, &body), &body);
    assert_eq!((status, answer["status"].as_str()), (200, Some("applied")), "{answer}");
    let (status, answer) = send(&now, &sign(SECRET, &now, &body), &body);
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    assert_eq!(get(addr, &auth, &format!("/v1/orders/{id}"))["status"], "paid");
}

#[test]
fn without_a_gateway_card_payments_are_503_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (surge, _) = Surge::start_with(dir.path(), &[("SURGE_ADMIN_TOKEN", "admin")]);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    let body = format!(
        r#"{{"customer_id":"c","lines":[{{"sku":"tee","qty":1}}],"payment":{{"method":"card","card":{{"number":"{CARD_NUMBER}","type":"KB"}}}}}}"#
    );
    let (status, problem) = post(addr, &auth, "/v1/orders", "k", &body);
    assert_eq!((status, problem["code"].as_str()), (503, Some("payment_gateway_unavailable")), "{problem}");
    assert_eq!(get(addr, &auth, "/v1/items/tee")["available"], 1000);
    let (status, _) = http(addr, "POST", "/v1/gateway/callback", &[], Some("{}")).unwrap();
    assert_eq!(status, 404);
}

/// `surge relay` running the gateway worker for the server in `dir`.
fn relay_worker(dir: &Path, server: SocketAddr, sim: &Sim) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_surge"))
        .arg("relay")
        .env_remove("SURGE_KAFKA_BROKERS")
        .env_remove("SURGE_MARIADB_URL")
        .env("SURGE_DATA_DIR", dir)
        .env("SURGE_GATEWAY_URLS", sim.url())
        .env("SURGE_SERVER_URL", format!("http://{server}"))
        .env("SURGE_ADMIN_TOKEN", "admin")
        .env("SURGE_GATEWAY_RECONCILE_AFTER_MS", "1000")
        .stdout(std::process::Stdio::null())
        .stderr(if std::env::var_os("SURGE_TEST_LOG").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .expect("start surge relay")
}

#[test]
fn the_worker_runs_in_surge_relay_and_resumes_there_after_a_kill() {
    let sim = Sim::start(&["--success-rate", "0.7", "--approval-rate", "0.8", "--settle-ms", "200..800"]);
    let dir = tempfile::tempdir().unwrap();
    let surge = serve(dir.path(), &[&sim], &[("SURGE_GATEWAY_WORKER", "external")]);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    let mut relay = relay_worker(dir.path(), addr, &sim);
    let ids: Vec<(String, u64)> =
        (0..30).map(|i| (card_order(addr, &auth, &format!("r{i}"), 1, "automatic"), 1)).collect();
    std::thread::sleep(Duration::from_millis(300));
    relay.kill().expect("SIGKILL the relay");
    relay.wait().expect("reap");
    let mut relay = relay_worker(dir.path(), addr, &sim);
    for (id, _) in &ids {
        settled(addr, &auth, id, Duration::from_secs(40));
    }
    let _ = relay.kill();
    let _ = relay.wait();
    assert_eq!(sim.stats()["charged_twice"], 0);
    assert_charged_once_per_paid_order(addr, &auth, &[&sim], &ids);
    assert_stock(addr, &auth, &ids);
    assert_balanced(addr, &auth);
    // Only the worker's reports go through the report route.
    let body = r#"{"merchant_id":"shop","command":{"CreditPoints":{"customer":"c","amount":1,"reason":""}}}"#;
    let (status, _) =
        http(addr, "POST", "/v1/admin/gateway/reports", &[("Authorization", "Bearer admin")], Some(body)).unwrap();
    assert_eq!(status, 400);
    let (status, _) = http(addr, "POST", "/v1/admin/gateway/reports", &[("Authorization", &auth)], Some(body)).unwrap();
    assert_eq!(status, 401);
}

#[test]
fn a_capture_the_gateway_keeps_failing_becomes_a_dead_letter_an_operator_retries() {
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let env = [("SURGE_GATEWAY_OP_ATTEMPTS_MAX", "2")];
    let surge = serve(dir.path(), &[&sim], &env);
    let (addr, auth) = (surge.addr, shop(surge.addr, "Bearer admin"));
    let id = card_order(addr, &auth, "dl", 1, "manual");
    let order = settled(addr, &auth, &id, SETTLE);
    let payment = order["payment"]["id"].as_str().unwrap().to_string();
    let key = order["payment"]["transaction_key"].as_str().unwrap().to_string();
    sim.mode("down");
    let (status, p) = post(addr, &auth, &format!("/v1/payments/{payment}/capture"), "cap", "{}");
    assert_eq!((status, p["status"].as_str()), (200, Some("captured")), "surge decides at once: {p}");

    let admin = "Bearer admin";
    let open = wait_for(addr, admin, "/v1/admin/dead-letters?status=open", SETTLE, |v| {
        v["dead_letters"].as_array().is_some_and(|d| !d.is_empty())
    });
    let letter = &open["dead_letters"][0];
    assert_eq!((letter["merchant_id"].as_str(), letter["op"].as_str()), (Some("shop"), Some("capture")), "{letter}");
    assert_eq!(letter["payment_id"].as_str(), Some(payment.as_str()));
    let (_, text) = get_text(addr, "/metrics").unwrap();
    assert_eq!(metric(&text, "surge_dead_letters_open"), Some(1.0), "{text}");

    sim.mode("normal");
    let retry = format!("/v1/admin/dead-letters/shop:{}/retry", letter["id"].as_str().unwrap());
    let (status, retried) = http(addr, "POST", &retry, &[("Authorization", admin)], Some("{}")).unwrap();
    assert_eq!((status, retried["status"].as_str()), (200, Some("retried")), "{retried}");
    wait_for(addr, admin, "/v1/admin/dead-letters?status=resolved", SETTLE, |v| {
        v["dead_letters"].as_array().is_some_and(|d| d.len() == 1)
    });
    assert_eq!(sim.transaction(&key)["capturedAmount"], 1000);
    let (status, _) =
        http(addr, "POST", "/v1/admin/dead-letters/shop:dl_99/retry", &[("Authorization", admin)], Some("{}")).unwrap();
    assert_eq!(status, 404);
    let (status, _) = http(addr, "GET", "/v1/admin/dead-letters", &[("Authorization", &auth)], None).unwrap();
    assert_eq!(status, 401, "merchant keys do not see the admin routes");
    assert_balanced(addr, &auth);
}
