//! The gateway's HTTP surface without a socket: validation, idempotency, state rules, stats.
//! Time is paused, so settle delays pass as soon as the test waits for them, and callbacks
//! are dropped (drop share 1.0): no network here (tests/e2e.rs has it).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use surge_gateway_sim::{app, MsRange, Rates, SimConfig, SimState};
use tower::ServiceExt;

const SETTLE_MS: u64 = 1000;

fn config() -> SimConfig {
    SimConfig {
        rates: Rates { success_rate: 1.0, approval_rate: 1.0, drop_callbacks: 1.0 },
        latency_ms: MsRange::new(0, 5),
        settle_ms: MsRange::new(SETTLE_MS, SETTLE_MS),
        seed: Some(7),
        ..SimConfig::default()
    }
}

fn sim(config: SimConfig) -> Router {
    app(SimState::new(config).unwrap())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    raw: Vec<u8>,
    body: Value,
}

impl Answer {
    fn key(&self) -> String {
        self.body["transactionKey"].as_str().unwrap().to_string()
    }

    #[track_caller]
    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
    }

    fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
    }
}

async fn call(app: &Router, method: Method, uri: &str, key: Option<&str>, body: Option<String>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = request.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let raw = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer { status, headers, raw, body }
}

async fn post(app: &Router, uri: &str, key: Option<&str>, body: Value) -> Answer {
    call(app, Method::POST, uri, key, Some(body.to_string())).await
}

async fn get(app: &Router, uri: &str) -> Answer {
    call(app, Method::GET, uri, None, None).await
}

fn payment(order_id: &str, capture: &str) -> Value {
    json!({"orderId": order_id, "cardType": "SAMSUNG", "cardNo": "1234-5678-9814-1451", "amount": 5000,
           "callbackUrl": "http://127.0.0.1:9/cb", "capture": capture})
}

async fn pay(app: &Router, order_id: &str, capture: &str) -> String {
    let answer = post(app, "/api/v1/payments", None, payment(order_id, capture)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.key()
}

async fn settle_all() {
    tokio::time::sleep(Duration::from_millis(SETTLE_MS + 10)).await;
}

async fn stats(app: &Router) -> Value {
    get(app, "/sim/stats").await.body
}

fn action(key: &str, what: &str) -> String {
    format!("/api/v1/payments/{key}/{what}")
}

#[tokio::test(start_paused = true)]
async fn invalid_payment_requests_are_json_400s_that_create_nothing() {
    let app = sim(config());
    let with = |field: &str, value: Value| {
        let mut body = payment("o-1", "automatic");
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = payment("o-1", "automatic");
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };
    let cases: Vec<(&str, String)> = vec![
        ("not json", "card please".into()),
        ("truncated json", "{\"orderId\": ".into()),
        ("an array", "[]".into()),
        ("no orderId", without("orderId")),
        ("no cardNo", without("cardNo")),
        ("no amount", without("amount")),
        ("no callbackUrl", without("callbackUrl")),
        ("empty orderId", with("orderId", json!(""))),
        ("long orderId", with("orderId", json!("x".repeat(129)))),
        ("control char in orderId", with("orderId", json!("a\nb"))),
        ("empty cardType", with("cardType", json!(""))),
        ("blank cardType", with("cardType", json!("   "))),
        ("long cardType", with("cardType", json!("K".repeat(33)))),
        ("letters in cardNo", with("cardNo", json!("1234-5678-abcd-1451"))),
        ("11 digits", with("cardNo", json!("12345678901"))),
        ("20 digits", with("cardNo", json!("12345678901234567890"))),
        ("cardNo a number", with("cardNo", json!(1234567898141451u64))),
        ("negative amount", with("amount", json!(-1))),
        ("fractional amount", with("amount", json!(1.5))),
        ("amount above 10^15", with("amount", json!(1_000_000_000_000_001u64))),
        ("amount a string", with("amount", json!("5000"))),
        ("capture unknown", with("capture", json!("later"))),
        ("ftp callback", with("callbackUrl", json!("ftp://127.0.0.1/cb"))),
        ("https callback", with("callbackUrl", json!("https://127.0.0.1/cb"))),
        ("relative callback", with("callbackUrl", json!("/cb"))),
        ("long callback", with("callbackUrl", json!(format!("http://h/{}", "a".repeat(2048))))),
    ];
    for (what, body) in &cases {
        let answer = call(&app, Method::POST, "/api/v1/payments", None, Some(body.clone())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}: {}", answer.body);
        answer.error(400, "invalid_request");
        let text = String::from_utf8_lossy(&answer.raw);
        assert!(!text.contains("9814-1451") && !text.contains("98141451"), "{what}: card number echoed: {text}");
    }
    for key in ["", &"k".repeat(256), "tab\there"] {
        let answer = post(&app, "/api/v1/payments", Some(key), payment("o-1", "automatic")).await;
        answer.error(400, "invalid_request");
    }
    // A header value may carry bytes past ASCII (obs-text); a key may not.
    let request = Request::post("/api/v1/payments")
        .header("idempotency-key", HeaderValue::from_bytes(b"caf\xe9").unwrap())
        .body(Body::from(payment("o-1", "automatic").to_string()))
        .unwrap();
    let answer = app.clone().oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let huge = call(&app, Method::POST, "/api/v1/payments", None, Some(format!("\"{}\"", "x".repeat(20_000)))).await;
    huge.error(413, "body_too_large");

    let s = stats(&app).await;
    assert_eq!(s["transactions"], 0);
    assert_eq!(s["payment_requests"], cases.len() as u64 + 5);
    assert_eq!(get(&app, "/api/v1/payments?orderId=o-1").await.body["transactions"], json!([]));

    // The edges of every rule are accepted.
    let mut edge = payment(&"x".repeat(128), "manual");
    edge["amount"] = json!(1_000_000_000_000_000u64);
    edge["cardNo"] = json!("1234567890123456789");
    edge["cardType"] = json!("K".repeat(32));
    assert_eq!(post(&app, "/api/v1/payments", Some(&"k".repeat(255)), edge).await.status, StatusCode::OK);
    let mut zero = payment("o-2", "automatic");
    zero["amount"] = json!(0);
    zero["cardNo"] = json!("1234 5678 9012");
    zero.as_object_mut().unwrap().remove("capture");
    let answer = post(&app, "/api/v1/payments", None, zero).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let view = get(&app, &format!("/api/v1/payments/{}", answer.key())).await.body;
    assert_eq!((view["capture"].as_str(), view["cardLast4"].as_str()), (Some("automatic"), Some("9012")));
}

#[tokio::test(start_paused = true)]
async fn same_key_and_body_replay_the_first_answer() {
    let app = sim(config());
    let first = post(&app, "/api/v1/payments", Some("pay-1"), payment("o-1", "automatic")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["status"], "PENDING");
    assert!(!first.replayed());
    // The same JSON value, written another way: another key order, other whitespace.
    let reordered = r#"{ "capture":"automatic", "amount":5000, "callbackUrl":"http://127.0.0.1:9/cb",
        "cardNo":"1234-5678-9814-1451", "cardType":"SAMSUNG", "orderId":"o-1" }"#;
    let again = call(&app, Method::POST, "/api/v1/payments", Some("pay-1"), Some(reordered.into())).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.replayed());
    assert_eq!(again.raw, first.raw);
    // After settlement too, and still one transaction.
    settle_all().await;
    let late = post(&app, "/api/v1/payments", Some("pay-1"), payment("o-1", "automatic")).await;
    assert!(late.replayed());
    assert_eq!(late.key(), first.key());
    let listed = get(&app, "/api/v1/payments?orderId=o-1").await.body;
    assert_eq!(listed["transactions"].as_array().unwrap().len(), 1);
    let s = stats(&app).await;
    assert_eq!((s["payment_requests"].as_u64(), s["transactions"].as_u64()), (Some(3), Some(1)));
    assert_eq!((s["idempotent_replays"].as_u64(), s["approved"].as_u64()), (Some(2), Some(1)));
}

#[tokio::test(start_paused = true)]
async fn same_key_with_another_request_is_422_and_changes_nothing() {
    let app = sim(config());
    let first = post(&app, "/api/v1/payments", Some("k-1"), payment("o-1", "manual")).await;
    let mut other = payment("o-1", "manual");
    other["amount"] = json!(5001);
    post(&app, "/api/v1/payments", Some("k-1"), other).await.error(422, "idempotency_key_reused");
    settle_all().await;
    // A key names one request: the same key on another route is a conflict too.
    post(&app, &action(&first.key(), "capture"), Some("k-1"), json!({})).await.error(422, "idempotency_key_reused");
    let view = get(&app, &format!("/api/v1/payments/{}", first.key())).await.body;
    assert_eq!((view["amount"].as_u64(), view["capturedAmount"].as_u64()), (Some(5000), Some(0)));
    let s = stats(&app).await;
    assert_eq!((s["key_conflicts"].as_u64(), s["transactions"].as_u64()), (Some(2), Some(1)));
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_are_never_deduplicated() {
    let app = sim(config());
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(pay(&app, "o-1", "automatic").await);
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3);
    let listed = get(&app, "/api/v1/payments?orderId=o-1").await.body;
    assert_eq!(listed["transactions"].as_array().unwrap().len(), 3);
    assert_eq!(stats(&app).await["idempotent_replays"], 0);
}

#[tokio::test(start_paused = true)]
async fn lookups_by_key_and_by_order() {
    let app = sim(config());
    let key = pay(&app, "m-1:pay_7", "automatic").await;
    let parts: Vec<&str> = key.split(':').collect();
    assert_eq!(parts.len(), 3, "{key}");
    assert!(parts[0].len() == 8 && parts[0].bytes().all(|b| b.is_ascii_digit()), "{key}");
    assert_eq!(parts[1], "TR");
    assert!(parts[2].len() >= 6 && parts[2].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

    let pending = get(&app, &format!("/api/v1/payments/{key}")).await;
    assert_eq!(pending.body["status"], "PENDING");
    settle_all().await;
    let view = get(&app, &format!("/api/v1/payments/{}", key.replace(':', "%3A"))).await;
    assert_eq!(
        view.body,
        json!({"transactionKey": key, "orderId": "m-1:pay_7", "status": "SUCCESS", "reason": null, "amount": 5000,
               "capture": "automatic", "capturedAmount": 5000, "refundedAmount": 0, "cardType": "SAMSUNG",
               "cardLast4": "1451"})
    );
    let listed = get(&app, "/api/v1/payments?orderId=m-1%3Apay_7").await.body;
    assert_eq!(listed, json!({"orderId": "m-1:pay_7", "transactions": [view.body]}));
    assert_eq!(get(&app, "/api/v1/payments?orderId=nobody").await.body["transactions"], json!([]));
    get(&app, "/api/v1/payments").await.error(400, "invalid_request");
    get(&app, "/api/v1/payments?orderId=").await.error(400, "invalid_request");
    get(&app, "/api/v1/payments/20261205:TR:ffffffffff").await.error(404, "not_found");
    get(&app, "/api/v2/nothing").await.error(404, "not_found");
    call(&app, Method::DELETE, "/api/v1/payments", None, None).await.error(405, "method_not_allowed");
}

#[tokio::test(start_paused = true)]
async fn capture_needs_an_approved_uncaptured_transaction() {
    let app = sim(config());
    let manual = pay(&app, "o-1", "manual").await;
    let automatic = pay(&app, "o-2", "automatic").await;
    post(&app, &action(&manual, "capture"), None, json!({})).await.error(409, "invalid_state");
    // An error is not kept under its key: the same key works once the state allows it.
    post(&app, &action(&manual, "capture"), Some("cap-1"), json!({"amount": 3000})).await.error(409, "invalid_state");
    settle_all().await;

    post(&app, &action(&manual, "capture"), Some("cap-x"), json!({"amount": 5001})).await.error(400, "invalid_amount");
    let captured = post(&app, &action(&manual, "capture"), Some("cap-1"), json!({"amount": 3000})).await;
    assert_eq!(captured.status, StatusCode::OK, "{}", captured.body);
    assert!(!captured.replayed());
    assert_eq!(
        (captured.body["status"].as_str(), captured.body["capturedAmount"].as_u64()),
        (Some("SUCCESS"), Some(3000))
    );
    let replay = post(&app, &action(&manual, "capture"), Some("cap-1"), json!({"amount": 3000})).await;
    assert!(replay.replayed());
    assert_eq!(replay.raw, captured.raw);
    post(&app, &action(&manual, "capture"), Some("cap-1"), json!({"amount": 2000}))
        .await
        .error(422, "idempotency_key_reused");
    post(&app, &action(&manual, "capture"), Some("cap-2"), json!({"amount": 2000})).await.error(409, "invalid_state");
    post(&app, &action(&automatic, "capture"), None, json!({})).await.error(409, "invalid_state");
    post(&app, &action("20261205:TR:nothing", "capture"), None, json!({})).await.error(404, "not_found");
    call(&app, Method::POST, &action(&manual, "capture"), None, Some("{\"amount\": -5}".into()))
        .await
        .error(400, "invalid_request");

    let declining = sim(SimConfig { rates: Rates { approval_rate: 0.0, ..config().rates }, ..config() });
    let declined = pay(&declining, "o-3", "manual").await;
    settle_all().await;
    post(&declining, &action(&declined, "capture"), None, json!({})).await.error(409, "invalid_state");

    let s = stats(&app).await;
    assert_eq!((s["captures"].as_u64(), s["idempotent_replays"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test(start_paused = true)]
async fn cancel_voids_what_is_not_captured_and_nothing_else() {
    let app = sim(config());
    let pending = pay(&app, "o-1", "automatic").await;
    let cancelled = post(&app, &action(&pending, "cancel"), None, json!({})).await;
    assert_eq!(cancelled.body["status"], "CANCELLED", "{}", cancelled.body);
    let authorized = pay(&app, "o-2", "manual").await;
    let captured = pay(&app, "o-3", "automatic").await;
    settle_all().await;
    // Cancelled while pending: never approved, even after its settle time.
    assert_eq!(get(&app, &format!("/api/v1/payments/{pending}")).await.body["status"], "CANCELLED");

    let voided = post(&app, &action(&authorized, "cancel"), Some("void-1"), json!({})).await;
    assert_eq!(voided.body["status"], "CANCELLED");
    let replay = call(&app, Method::POST, &action(&authorized, "cancel"), Some("void-1"), None).await;
    assert!(replay.replayed(), "an empty body is {{}}");
    assert_eq!(replay.raw, voided.raw);
    post(&app, &action(&authorized, "capture"), None, json!({})).await.error(409, "invalid_state");
    post(&app, &action(&captured, "cancel"), None, json!({})).await.error(409, "invalid_state");
    // Cancelling what is cancelled (or declined) again answers it unchanged.
    let again = post(&app, &action(&pending, "cancel"), None, json!({})).await;
    assert_eq!((again.status, again.body["status"].as_str()), (StatusCode::OK, Some("CANCELLED")));
    call(&app, Method::POST, &action(&pending, "cancel"), None, Some("[1]".into())).await.error(400, "invalid_request");
    post(&app, &action("nope", "cancel"), None, json!({})).await.error(404, "not_found");

    let declining = sim(SimConfig { rates: Rates { approval_rate: 0.0, ..config().rates }, ..config() });
    let declined = pay(&declining, "o-4", "manual").await;
    settle_all().await;
    let unchanged = post(&declining, &action(&declined, "cancel"), None, json!({})).await;
    assert_eq!((unchanged.status, unchanged.body["status"].as_str()), (StatusCode::OK, Some("FAILED")));

    let s = stats(&app).await;
    assert_eq!((s["cancelled"].as_u64(), s["approved"].as_u64()), (Some(2), Some(2)));
}

#[tokio::test(start_paused = true)]
async fn refunds_add_up_to_the_captured_amount_at_most() {
    let app = sim(config());
    let automatic = pay(&app, "o-1", "automatic").await;
    let manual = pay(&app, "o-2", "manual").await;
    post(&app, &action(&automatic, "refund"), None, json!({})).await.error(409, "invalid_state");
    settle_all().await;
    post(&app, &action(&manual, "refund"), None, json!({})).await.error(409, "invalid_state");

    post(&app, &action(&automatic, "refund"), None, json!({"amount": 5001})).await.error(400, "invalid_amount");
    post(&app, &action(&automatic, "refund"), None, json!({"amount": 0})).await.error(400, "invalid_amount");
    let first = post(&app, &action(&automatic, "refund"), Some("r-1"), json!({"amount": 1000})).await;
    assert_eq!(first.body["refundedAmount"], 1000, "{}", first.body);
    let replay = post(&app, &action(&automatic, "refund"), Some("r-1"), json!({"amount": 1000})).await;
    assert!(replay.replayed());
    assert_eq!(replay.body["refundedAmount"], 1000);
    post(&app, &action(&automatic, "refund"), None, json!({"amount": 4001})).await.error(400, "invalid_amount");
    let rest = post(&app, &action(&automatic, "refund"), None, json!({})).await;
    assert_eq!((rest.body["refundedAmount"].as_u64(), rest.body["status"].as_str()), (Some(5000), Some("SUCCESS")));
    post(&app, &action(&automatic, "refund"), None, json!({"amount": 1})).await.error(409, "invalid_state");

    post(&app, &action(&manual, "capture"), None, json!({"amount": 3000})).await;
    let refunded = post(&app, &action(&manual, "refund"), None, json!({})).await;
    assert_eq!(refunded.body["refundedAmount"], 3000);
    post(&app, &action(&manual, "cancel"), None, json!({})).await.error(409, "invalid_state");

    let s = stats(&app).await;
    assert_eq!(s["refunds"], 3);
}

#[tokio::test(start_paused = true)]
async fn charged_twice_counts_orders_with_two_live_approvals() {
    let app = sim(config());
    let first = pay(&app, "o-1", "manual").await;
    pay(&app, "o-1", "manual").await;
    pay(&app, "o-2", "manual").await;
    settle_all().await;
    assert_eq!(stats(&app).await["charged_twice"], 1);
    post(&app, &action(&first, "cancel"), None, json!({})).await;
    assert_eq!(stats(&app).await["charged_twice"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_request_answers_500_creates_nothing_and_is_not_remembered() {
    let app = sim(config());
    let changed = post(&app, "/sim/config", None, json!({"success_rate": 0.0})).await;
    assert_eq!(changed.body, json!({"success_rate": 0.0, "approval_rate": 1.0, "drop_callbacks": 1.0}));
    post(&app, "/api/v1/payments", Some("p-1"), payment("o-1", "automatic")).await.error(500, "gateway_error");
    assert_eq!(get(&app, "/api/v1/payments?orderId=o-1").await.body["transactions"], json!([]));
    post(&app, "/sim/config", None, json!({"success_rate": 1.0})).await;
    let created = post(&app, "/api/v1/payments", Some("p-1"), payment("o-1", "automatic")).await;
    assert_eq!((created.status, created.replayed()), (StatusCode::OK, false));
    let s = stats(&app).await;
    assert_eq!((s["failed_requests"].as_u64(), s["transactions"].as_u64()), (Some(1), Some(1)));
}

#[tokio::test(start_paused = true)]
async fn full_stores_answer_503_gateway_full() {
    let app = sim(SimConfig { max_transactions: 2, max_idempotency_keys: 3, ..config() });
    pay(&app, "o-1", "automatic").await;
    pay(&app, "o-2", "automatic").await;
    post(&app, "/api/v1/payments", None, payment("o-3", "automatic")).await.error(503, "gateway_full");
    let s = stats(&app).await;
    assert_eq!((s["transactions"].as_u64(), s["rejected_full"].as_u64()), (Some(2), Some(1)));

    let app = sim(SimConfig { max_idempotency_keys: 1, ..config() });
    let first = post(&app, "/api/v1/payments", Some("a"), payment("o-1", "automatic")).await;
    post(&app, "/api/v1/payments", Some("b"), payment("o-2", "automatic")).await.error(503, "gateway_full");
    assert!(post(&app, "/api/v1/payments", Some("a"), payment("o-1", "automatic")).await.replayed());
    settle_all().await;
    let refund = post(&app, &action(&first.key(), "refund"), None, json!({"amount": 1})).await;
    assert_eq!(refund.status, StatusCode::OK, "a call without a key needs no room");
}

#[tokio::test(start_paused = true)]
async fn declines_are_limit_exceeded_twice_as_often_as_invalid_card() {
    let app = sim(SimConfig { rates: Rates { approval_rate: 0.0, ..config().rates }, ..config() });
    for i in 0..300 {
        pay(&app, &format!("o-{i}"), "automatic").await;
    }
    settle_all().await;
    let mut limit = 0;
    for i in 0..300 {
        let listed = get(&app, &format!("/api/v1/payments?orderId=o-{i}")).await.body;
        let txn = &listed["transactions"][0];
        assert_eq!(txn["status"], "FAILED");
        assert_eq!(txn["capturedAmount"], 0);
        match txn["reason"].as_str() {
            Some("limit exceeded") => limit += 1,
            Some("invalid card") => {}
            other => panic!("reason {other:?}"),
        }
    }
    assert!((170..=230).contains(&limit), "limit exceeded {limit} of 300");
    let s = stats(&app).await;
    assert_eq!((s["declined"].as_u64(), s["approved"].as_u64()), (Some(300), Some(0)));
}

/// What a sequence of payments became, under one configuration.
async fn outcomes(seed: u64) -> Vec<(u16, String)> {
    let app = sim(SimConfig {
        rates: Rates { success_rate: 0.8, approval_rate: 0.5, drop_callbacks: 1.0 },
        seed: Some(seed),
        ..config()
    });
    let mut answers = Vec::new();
    for i in 0..40 {
        answers.push(post(&app, "/api/v1/payments", None, payment(&format!("o-{i}"), "automatic")).await);
    }
    settle_all().await;
    let mut out = Vec::new();
    for answer in answers {
        let status = if answer.status == StatusCode::OK {
            let view = get(&app, &format!("/api/v1/payments/{}", answer.key())).await.body;
            format!("{} {}", view["status"], view["reason"])
        } else {
            String::new()
        };
        out.push((answer.status.as_u16(), status));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn one_seed_gives_the_same_outcomes() {
    let first = outcomes(42).await;
    assert_eq!(first, outcomes(42).await);
    assert_ne!(first, outcomes(43).await);
    let codes: Vec<u16> = first.iter().map(|(code, _)| *code).collect();
    assert!(codes.contains(&500) && codes.contains(&200), "{codes:?}");
}

#[tokio::test(start_paused = true)]
async fn sim_control_takes_valid_changes_only() {
    let app = sim(config());
    assert_eq!(get(&app, "/sim/mode").await.body, json!({"mode": "normal"}));
    for bad in [json!({"mode": "sideways"}), json!({}), json!({"mode": "down", "extra": 1}), json!("down")] {
        post(&app, "/sim/mode", None, bad).await.error(400, "invalid_request");
    }
    call(&app, Method::POST, "/sim/mode", None, Some("down".into())).await.error(400, "invalid_request");
    assert_eq!(post(&app, "/sim/mode", None, json!({"mode": "slow"})).await.body, json!({"mode": "slow"}));
    assert_eq!(get(&app, "/sim/mode").await.body, json!({"mode": "slow"}));

    for bad in [
        json!({"success_rate": 1.5}),
        json!({"approval_rate": -0.1}),
        json!({"bogus": 1}),
        json!({"drop_callbacks": "x"}),
    ] {
        post(&app, "/sim/config", None, bad).await.error(400, "invalid_request");
    }
    post(&app, "/sim/config", None, json!({"approval_rate": 0.5, "success_rate": 2.0}))
        .await
        .error(400, "invalid_request");
    assert_eq!(
        get(&app, "/sim/config").await.body,
        json!({"success_rate": 1.0, "approval_rate": 1.0, "drop_callbacks": 1.0})
    );
    let changed = post(&app, "/sim/config", None, json!({"approval_rate": 0.25})).await.body;
    assert_eq!(changed, json!({"success_rate": 1.0, "approval_rate": 0.25, "drop_callbacks": 1.0}));

    let s = stats(&app).await;
    let names: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    for name in [
        "payment_requests",
        "transactions",
        "idempotent_replays",
        "failed_requests",
        "key_conflicts",
        "approved",
        "declined",
        "cancelled",
        "captures",
        "refunds",
        "callbacks_sent",
        "callbacks_dropped",
        "callback_failures",
        "charged_twice",
        "callbacks_abandoned",
        "callbacks_overflow",
        "rejected_full",
        "rejected_busy",
    ] {
        assert!(names.contains(&name), "{name} missing from {s}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropped_callbacks_are_counted_when_decided() {
    let app = sim(config());
    pay(&app, "o-1", "automatic").await;
    let cancelled = pay(&app, "o-2", "automatic").await;
    post(&app, &action(&cancelled, "cancel"), None, json!({})).await;
    assert_eq!(stats(&app).await["callbacks_dropped"], 0);
    settle_all().await;
    let s = stats(&app).await;
    assert_eq!((s["callbacks_dropped"].as_u64(), s["callbacks_sent"].as_u64()), (Some(1), Some(0)));
}
