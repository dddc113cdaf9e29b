//! Every route and error class of the contract, through the router (no socket).

mod common;

use axum::http::StatusCode;
use common::{server, Client, ADMIN};
use serde_json::json;

#[tokio::test]
async fn health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let r = s.send("GET", "/healthz", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.send("GET", "/readyz", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ready");
}

#[tokio::test]
async fn not_ready_before_recovery() {
    let state = surge_api::AppState::new(surge_api::auth::sha256(b"x"), 0);
    let app = surge_api::app(state);
    use tower::ServiceExt;
    let req = axum::http::Request::get("/readyz").body(axum::body::Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let req = axum::http::Request::get("/healthz").body(axum::body::Body::empty()).unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_cluster_table_of_a_single_node_says_so_and_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let r = s.send("GET", "/v1/cluster", &[], None).await;
    r.assert_problem(401, "unauthorized");
    let auth = format!("Bearer {ADMIN}");
    let r = s.send("GET", "/v1/cluster?merchant=m-1", &[("authorization", &auth)], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["mode"], "single");
    assert_eq!(r.body["partitions"], 1);
    assert_eq!(r.body["merchant"]["partition"], 0);
}

#[tokio::test]
async fn merchants_need_the_admin_token_and_keys_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let body = r#"{"id":"m-1","name":"Shop","currency":"KRW"}"#;
    s.send("POST", "/v1/merchants", &[], Some(body)).await.assert_problem(401, "unauthorized");
    s.send("POST", "/v1/merchants", &[("authorization", "Bearer wrong")], Some(body))
        .await
        .assert_problem(401, "unauthorized");
    let admin = format!("Bearer {ADMIN}");
    let r = s.send("POST", "/v1/merchants", &[("authorization", &admin)], Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["id"], "m-1");
    assert_eq!(r.body["currency"], "KRW");
    let key = r.body["api_key"].as_str().unwrap().to_string();
    // Existing id: 409 invalid_state, saying so.
    let r = s.send("POST", "/v1/merchants", &[("authorization", &admin)], Some(body)).await;
    assert_eq!(r.body["detail"], "merchant m-1 already exists");
    r.assert_problem(409, "invalid_state");
    // The admin token is not a merchant key, and a bad key is 401.
    let c = Client::new(&s, ADMIN);
    c.get("/v1/items/x").await.assert_problem(401, "unauthorized");
    let c = Client::new(&s, "sk_nope");
    c.get("/v1/items/x").await.assert_problem(401, "unauthorized");
    s.send("GET", "/v1/items/x", &[], None).await.assert_problem(401, "unauthorized");
    let c = Client::new(&s, &key);
    c.get("/v1/items/x").await.assert_problem(404, "not_found");
    // Invalid merchant id: 400.
    let bad = r#"{"id":"a b","name":"x","currency":"KRW"}"#;
    s.send("POST", "/v1/merchants", &[("authorization", &admin)], Some(bad))
        .await
        .assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn items_put_get_bulk_restock() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    let r = c.put("/v1/items/sku-1", r#"{"name":"Seat","price":1000,"stock":10}"#).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body,
        json!({"sku":"sku-1","name":"Seat","price":1000,"stock":10,"available":10,"held":0,"sold":0,"queue_id":null})
    );
    let r = c.put("/v1/items/sku-1", r#"{"name":"Seat A","price":1200,"stock":12}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "Seat A");
    assert_eq!(r.body["available"], 12);
    let r = c.get("/v1/items/sku-1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["price"], 1200);
    let r = c.post("/v1/items/sku-1/restock", r#"{"qty":3}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["stock"], 15);
    let r = c
        .post(
            "/v1/items/bulk",
            r#"{"items":[{"sku":"sku-1","name":"Seat","price":1,"stock":15},{"sku":"s-2","name":"B","price":2,"stock":1},{"sku":"s-3","name":"C","price":3,"stock":1}]}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"created": 2, "updated": 1}));
    assert_eq!(c.get("/v1/items/s-3").await.body["stock"], 1);
    c.get("/v1/items/nope").await.assert_problem(404, "not_found");
    // Field-level validation names the field.
    let r = c.put("/v1/items/sku-1", r#"{"name":"x","price":-1,"stock":1}"#).await;
    r.assert_problem(400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("price"));
    c.post("/v1/items/sku-1/restock", r#"{"qty":0}"#).await.assert_problem(400, "invalid_request");
    c.put("/v1/items/bad%20sku", r#"{"name":"x","price":1,"stock":1}"#).await.assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn holds_reserve_release_and_refuse_oversell() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/seat", r#"{"name":"Seat","price":500,"stock":3}"#).await;
    let r = c.post("/v1/holds", r#"{"customer_id":"c-1","lines":[{"sku":"seat","qty":2}],"ttl_seconds":300}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "held");
    assert_eq!(r.body["lines"], json!([{"sku":"seat","qty":2}]));
    assert!(r.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let hold = r.body["id"].as_str().unwrap().to_string();
    let item = c.get("/v1/items/seat").await.body;
    assert_eq!((item["available"].as_u64(), item["held"].as_u64()), (Some(1), Some(2)));
    let r = c.post("/v1/holds", r#"{"customer_id":"c-2","lines":[{"sku":"seat","qty":2}]}"#).await;
    r.assert_problem(409, "insufficient_stock");
    assert_eq!(r.body["sku"], "seat");
    assert_eq!(r.body["available"], 1);
    assert_eq!(c.get(&format!("/v1/holds/{hold}")).await.body["status"], "held");
    let r = c.post(&format!("/v1/holds/{hold}/release"), "{}").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "released");
    assert_eq!(c.get("/v1/items/seat").await.body["available"], 3);
    let r = c.post(&format!("/v1/holds/{hold}/release"), "{}").await;
    r.assert_problem(409, "invalid_state");
    assert_eq!(r.body["resource_status"], "released");
    c.get("/v1/holds/hold_99").await.assert_problem(404, "not_found");
    c.post("/v1/holds", r#"{"customer_id":"c-1","lines":[{"sku":"seat","qty":1}],"ttl_seconds":0}"#)
        .await
        .assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn orders_points_idempotency_and_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/tee", r#"{"name":"Tee","price":1500,"stock":5}"#).await;
    c.post("/v1/customers/c-1/points/credit", r#"{"amount":4000,"reason":"welcome"}"#)
        .await
        .assert_problem(400, "invalid_request");
    let r = c.post_key("/v1/customers/c-1/points/credit", "cr-1", r#"{"amount":4000,"reason":"welcome"}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["balance"], 4000);
    let order = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":2}],"payment":{"method":"points"}}"#;
    c.post("/v1/orders", order).await.assert_problem(400, "invalid_request");
    let first = c.post_key("/v1/orders", "o-1", order).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["status"], "paid");
    assert_eq!(first.body["total"], 3000);
    assert_eq!(first.body["payment"]["status"], "captured");
    assert!(first.headers.get("idempotent-replayed").is_none());
    // Same key, same body: the same answer, marked as replayed.
    let again = c.post_key("/v1/orders", "o-1", order).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    // Same key, different body: 422.
    let other = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points"}}"#;
    c.post_key("/v1/orders", "o-1", other).await.assert_problem(422, "idempotency_key_reused");
    // Nothing changed twice.
    let item = c.get("/v1/items/tee").await.body;
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(2), Some(3)));
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 1000);
    // Not enough points: 402 and the stock stays.
    c.post_key("/v1/orders", "o-2", order).await.assert_problem(402, "insufficient_points");
    assert_eq!(c.get("/v1/items/tee").await.body["available"], 3);
    // A validation failure is not stored: the key stays usable.
    c.post_key(
        "/v1/orders",
        "o-3",
        r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":0}],"payment":{"method":"points"}}"#,
    )
    .await
    .assert_problem(400, "invalid_request");
    let r = c
        .post_key(
            "/v1/orders",
            "o-3",
            r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"none"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "awaiting_payment");
    let awaiting = r.body["id"].as_str().unwrap().to_string();

    let order_id = first.body["id"].as_str().unwrap();
    let pay_id = first.body["payment"]["id"].as_str().unwrap();
    let r = c.get(&format!("/v1/orders/{order_id}")).await;
    assert_eq!(r.body["lines"], json!([{"sku":"tee","qty":2,"unit_price":1500,"amount":3000}]));
    assert!(r.body["created_at"].is_string() && r.body["updated_at"].is_string());
    let r = c.get(&format!("/v1/payments/{pay_id}")).await;
    assert_eq!(r.body["status"], "captured");
    assert_eq!(r.body["amount"], 3000);
    c.post_key(&format!("/v1/payments/{pay_id}/capture"), "cap-1", "").await.assert_problem(409, "invalid_state");
    let r = c.post_key(&format!("/v1/payments/{pay_id}/refund"), "ref-1", r#"{"amount":1000}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "partially_refunded");
    assert_eq!(r.body["refunded"], 1000);
    c.post(&format!("/v1/payments/{pay_id}/refund"), "{}").await.assert_problem(400, "invalid_request");
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 2000);

    // Pay the awaiting order with points, then cancel it (refunds the capture).
    let r = c.post(&format!("/v1/orders/{awaiting}/payments"), r#"{"method":"points"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "paid");
    let r = c.post(&format!("/v1/orders/{awaiting}/cancel"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 2000);

    let r = c.get("/v1/ledger/trial-balance").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["balanced"], true);
    assert_eq!(r.body["total_debits"], r.body["total_credits"]);
    let r = c.get("/v1/ledger/accounts/customer:c-1:points").await;
    assert_eq!(r.body["account"], "customer:c-1:points");
    assert_eq!(r.body["balance"], -2000);
    c.get("/v1/ledger/accounts/cash").await.assert_problem(404, "not_found");
    c.get("/v1/orders/ord_999").await.assert_problem(404, "not_found");
    c.get("/v1/payments/nope").await.assert_problem(404, "not_found");
    assert_eq!(c.get("/v1/customers/nobody/points").await.body["balance"], 0);
}

#[tokio::test]
async fn points_with_manual_capture_authorize_capture_part_and_release_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/tee", r#"{"name":"Tee","price":1500,"stock":5}"#).await;
    c.post_key("/v1/customers/c-1/points/credit", "cr-1", r#"{"amount":5000,"reason":"welcome"}"#).await;
    let body = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":2}],"payment":{"method":"none"}}"#;
    let order = c.post_key("/v1/orders", "o-1", body).await.body;
    let id = order["id"].as_str().unwrap();
    let r = c.post(&format!("/v1/orders/{id}/payments"), r#"{"method":"points","capture":"manual"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "paid");
    assert_eq!(r.body["payment"]["status"], "authorized");
    assert_eq!(r.body["payment"]["captured"], 0);
    // Authorized points are taken from the balance and parked until the capture.
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 2000);
    assert_eq!(c.get("/v1/ledger/accounts/points:authorized").await.body["balance"], -3000);
    let pay = r.body["payment"]["id"].as_str().unwrap().to_string();
    let capture = format!("/v1/payments/{pay}/capture");
    c.post_key(&capture, "cap-0", r#"{"amount":3001}"#).await.assert_problem(400, "invalid_request");
    let r = c.post_key(&capture, "cap-1", r#"{"amount":1000}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((r.body["status"].as_str(), r.body["captured"].as_u64()), (Some("captured"), Some(1000)));
    // Partial capture, once: the rest goes back to the customer.
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 4000);
    c.post_key(&capture, "cap-2", r#"{"amount":1000}"#).await.assert_problem(409, "invalid_state");
    let again = c.post_key(&capture, "cap-1", r#"{"amount":1000}"#).await;
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.body, r.body);
    assert_eq!(c.get("/v1/ledger/accounts/points:authorized").await.body["balance"], 0);
    assert_eq!(c.get("/v1/ledger/accounts/sales:revenue").await.body["balance"], -1000);

    // Authorized, then cancelled: voided, every point back, the stock back.
    let body =
        r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points","capture":"manual"}}"#;
    let r = c.post_key("/v1/orders", "o-2", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["payment"]["status"], "authorized");
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 2500);
    let id = r.body["id"].as_str().unwrap();
    let r = c.post(&format!("/v1/orders/{id}/cancel"), "").await;
    assert_eq!((r.body["status"].as_str(), r.body["payment"]["status"].as_str()), (Some("cancelled"), Some("voided")));
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 4000);
    assert_eq!(c.get("/v1/items/tee").await.body["available"], 3);
    assert_eq!(c.get("/v1/ledger/trial-balance").await.body["balanced"], true);
}

#[tokio::test]
async fn card_payments_answer_503_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/tee", r#"{"name":"Tee","price":1500,"stock":5}"#).await;
    let order = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":2}],"payment":{"method":"card","card":{"number":"1234-5678-9814-1451","type":"SAMSUNG"}}}"#;
    c.post_key("/v1/orders", "card-1", order).await.assert_problem(503, "payment_gateway_unavailable");
    assert_eq!(c.get("/v1/items/tee").await.body["available"], 5);
    c.get("/v1/orders/ord_1").await.assert_problem(404, "not_found");
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let a = Client::new(&s, &s.merchant("m-a").await);
    let b = Client::new(&s, &s.merchant("m-b").await);
    a.put("/v1/items/x", r#"{"name":"X","price":10,"stock":5}"#).await;
    let r = a
        .post_key("/v1/orders", "k", r#"{"customer_id":"c","lines":[{"sku":"x","qty":1}],"payment":{"method":"none"}}"#)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["id"].as_str().unwrap();
    b.get("/v1/items/x").await.assert_problem(404, "not_found");
    b.get(&format!("/v1/orders/{id}")).await.assert_problem(404, "not_found");
    b.post(&format!("/v1/orders/{id}/cancel"), "").await.assert_problem(404, "not_found");
    // The same idempotency key is another request for another merchant.
    b.put("/v1/items/x", r#"{"name":"X","price":10,"stock":1}"#).await;
    let r = b
        .post_key("/v1/orders", "k", r#"{"customer_id":"c","lines":[{"sku":"x","qty":1}],"payment":{"method":"none"}}"#)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(a.get(&format!("/v1/orders/{id}")).await.body["status"], "awaiting_payment");
}

#[tokio::test]
async fn waiting_room_tokens_gate_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    let r = c.put("/v1/queues/q-1", r#"{"max_active":1,"active_ttl_seconds":60}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["max_active"], 1);
    c.put("/v1/items/seat", r#"{"name":"Seat","price":100,"stock":10,"queue_id":"q-1"}"#).await;
    let r = c.post("/v1/queues/q-1/tokens", r#"{"customer_id":"c-1"}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let t1 = r.body["token"].as_str().unwrap().to_string();
    let r = c.post("/v1/queues/q-1/tokens", r#"{"customer_id":"c-2"}"#).await;
    assert_eq!(r.body["status"], "waiting");
    assert_eq!(r.body["position"], 1);
    let t2 = r.body["token"].as_str().unwrap().to_string();
    // Activation happens on the tick (every 250 ms) or at issue when a slot is free.
    let mut status = String::new();
    for _ in 0..200 {
        status = c.get(&format!("/v1/queues/q-1/tokens/{t1}")).await.body["status"].as_str().unwrap().to_string();
        if status == "active" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, "active");
    assert_eq!(c.get(&format!("/v1/queues/q-1/tokens/{t2}")).await.body["status"], "waiting");
    c.get("/v1/queues/q-1/tokens/qt_0_0000000000000000").await.assert_problem(404, "not_found");
    let hold = r#"{"customer_id":"c-1","lines":[{"sku":"seat","qty":1}]}"#;
    c.post("/v1/holds", hold).await.assert_problem(403, "queue_token_required");
    c.send("POST", "/v1/holds", &[("queue-token", &t2)], Some(hold)).await.assert_problem(403, "queue_token_required");
    let r = c.send("POST", "/v1/holds", &[("queue-token", &t1)], Some(hold)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn expired_holds_return_their_stock() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/seat", r#"{"name":"Seat","price":100,"stock":1}"#).await;
    let r = c.post("/v1/holds", r#"{"customer_id":"c-1","lines":[{"sku":"seat","qty":1}],"ttl_seconds":1}"#).await;
    let hold = r.body["id"].as_str().unwrap().to_string();
    let mut status = String::new();
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        status = c.get(&format!("/v1/holds/{hold}")).await.body["status"].as_str().unwrap().to_string();
        if status == "expired" {
            break;
        }
    }
    assert_eq!(status, "expired");
    assert_eq!(c.get("/v1/items/seat").await.body["available"], 1);
}

#[tokio::test]
async fn error_classes_are_problem_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.get("/v1/nothing-here").await.assert_problem(404, "not_found");
    s.send("GET", "/nope", &[], None).await.assert_problem(404, "not_found");
    c.send("DELETE", "/v1/items/x", &[], None).await.assert_problem(405, "method_not_allowed");
    c.send("GET", "/v1/orders", &[], None).await.assert_problem(405, "method_not_allowed");
    // Wrong content type.
    let r = s.send("PUT", "/v1/items/x", &[("authorization", &c.auth), ("content-type", "text/plain")], None).await;
    r.assert_problem(415, "unsupported_media_type");
    let r = c.send("PUT", "/v1/items/x", &[], None).await;
    r.assert_problem(415, "unsupported_media_type");
    // Malformed JSON, wrong shapes, deep nesting.
    c.put("/v1/items/x", "{not json").await.assert_problem(400, "invalid_request");
    c.put("/v1/items/x", "[]").await.assert_problem(400, "invalid_request");
    c.put("/v1/items/x", r#"{"name":"x","price":1.5,"stock":1}"#).await.assert_problem(400, "invalid_request");
    let deep = format!(r#"{{"name":"x","price":1,"stock":1,"extra":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
    c.put("/v1/items/x", &deep).await.assert_problem(400, "invalid_request");
    // Too large.
    let big = format!(r#"{{"name":"{}","price":1,"stock":1}}"#, "x".repeat(70 * 1024));
    c.put("/v1/items/x", &big).await.assert_problem(413, "payload_too_large");
    // Orders: exactly one of lines / hold_id.
    c.post_key("/v1/orders", "x", r#"{"customer_id":"c","payment":{"method":"none"}}"#)
        .await
        .assert_problem(400, "invalid_request");
    // Nothing above changed state.
    c.get("/v1/items/x").await.assert_problem(404, "not_found");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::server_with(common::dir_opener(dir.path()), common::engine_config(1), 2);
    let c = Client::new(&s, &s.merchant("m-1").await);
    assert_eq!(c.get("/v1/customers/c/points").await.status, StatusCode::OK);
    assert_eq!(c.get("/v1/customers/c/points").await.status, StatusCode::OK);
    let r = c.get("/v1/customers/c/points").await;
    r.assert_problem(429, "rate_limited");
    assert!(r.headers.get("retry-after").is_some());
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/x", r#"{"name":"X","price":1,"stock":1}"#).await;
    let res = {
        use tower::ServiceExt;
        let req = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
        s.app.clone().oneshot(req).await.unwrap()
    };
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    let put = r#"surge_http_requests_total{route="/v1/items/{sku}",method="PUT",status="201"} 1"#;
    assert!(text.contains(put), "{text}");
    let merchants = r#"surge_http_requests_total{route="/v1/merchants",method="POST",status="201"} 1"#;
    assert!(text.contains(merchants), "{text}");
    let count = r#"surge_http_request_duration_seconds_count{route="/v1/items/{sku}",method="PUT"} 1"#;
    assert!(text.contains(count), "{text}");
    let le = r#"surge_http_request_duration_seconds_bucket{route="/v1/items/{sku}",method="PUT",le="+Inf"} 1"#;
    assert!(text.contains(le), "{text}");
    assert!(text.contains("surge_shards 2") || text.contains("surge_shards "), "{text}");
    assert!(text.contains("surge_shard_queue_depth{shard=\"0\"}"), "{text}");
    assert!(text.contains("surge_log_group_records_count "), "{text}");
    assert!(text.contains("surge_log_group_commit_seconds_bucket{le=\"+Inf\"}"), "{text}");
    assert!(text.contains("surge_wal_durable_lsn "), "{text}");
    assert!(text.contains("surge_ready 1"), "{text}");
    assert!(text.contains("surge_wal_commits_total"), "{text}");
    assert!(text.contains("surge_merchants 1"), "{text}");
    // Per-commit histograms of the log: as many observations as commits.
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or_else(|| panic!("{name}"))
    };
    let commits = value("surge_wal_commits_total ");
    assert!(commits >= 2.0);
    assert_eq!(value("surge_wal_commit_records_bucket{le=\"+Inf\"} "), commits, "{text}");
    assert_eq!(value("surge_wal_sync_seconds_count "), commits, "{text}");
    assert_eq!(value("surge_wal_commit_records_sum "), value("surge_wal_records_total "), "{text}");
}

#[tokio::test]
async fn batch_applies_each_op_in_order_with_one_log_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    let commits = || s.engine.stats().wal.unwrap().commits;
    let before = commits();
    let ops = json!({"ops": [
        {"op": "put_item", "sku": "tee", "name": "Tee", "price": 100, "stock": 3},
        {"op": "credit_points", "customer_id": "c-1", "amount": 1000, "idempotency_key": "cr"},
        {"op": "create_order", "customer_id": "c-1", "lines": [{"sku": "tee", "qty": 2}], "payment": {"method": "points"}},
        {"op": "create_order", "customer_id": "c-1", "lines": [{"sku": "tee", "qty": 2}], "payment": {"method": "none"}},
        {"op": "teleport"},
        {"op": "create_order", "customer_id": "c-1", "lines": [{"sku": "tee", "qty": 1}],
         "payment": {"method": "card", "card": {"number": "1234", "type": "KB"}}},
        {"op": "hold", "customer_id": "c-2", "lines": [{"sku": "tee", "qty": 1}]},
        {"op": "release", "hold_id": "hold_1"},
        {"op": "restock", "sku": "tee", "qty": 0}
    ]});
    let r = c.post("/v1/batch", &ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let results = r.body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 200, 201, 409, 400, 503, 201, 200, 400]);
    assert_eq!(results[2]["body"]["status"], "paid");
    let order_path = format!("/v1/orders/{}", results[2]["body"]["id"].as_str().unwrap());
    assert_eq!(results[2]["body"], c.get(&order_path).await.body, "a batch shows an order as GET does");
    assert_eq!(results[3]["body"]["code"], "insufficient_stock");
    assert_eq!(results[4]["body"]["code"], "invalid_request");
    assert_eq!(results[5]["body"]["code"], "payment_gateway_unavailable");
    assert_eq!(results[7]["body"]["status"], "released");
    assert!(results.iter().all(|r| r.get("replayed").is_none()), "only replays say so");
    // Every applied op went into one log write.
    assert_eq!(commits(), before + 1);
    let item = c.get("/v1/items/tee").await.body;
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(2), Some(1)));
    // Replay of an op with an idempotency key.
    let again =
        json!({"ops": [{"op": "credit_points", "customer_id": "c-1", "amount": 1000, "idempotency_key": "cr"}]});
    let r = c.post("/v1/batch", &again.to_string()).await;
    assert_eq!(r.body["results"][0]["replayed"], true);
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 800);
    c.post("/v1/batch", r#"{"ops":[]}"#).await.assert_problem(400, "invalid_request");
    // A bad field inside an op names the op (serde cannot track the path inside the op's tag).
    let bad = json!({"ops": [{"op": "create_order", "customer_id": "c-1", "lines": [{"sku": "tee", "qty": 1}],
        "payment": {"method": "none"}, "queue_token": 5}]});
    let r = c.post("/v1/batch", &bad.to_string()).await;
    let detail = r.body["results"][0]["body"]["detail"].as_str().unwrap();
    assert!(detail.starts_with("ops[0]: invalid type: integer `5`"), "{detail}");
    let many = json!({"ops": vec![json!({"op": "release", "hold_id": "hold_1"}); 1001]});
    c.post("/v1/batch", &many.to_string()).await.assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn openapi_describes_only_routed_operations() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let r = s.send("GET", "/openapi.json", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.1.0");
    let paths = r.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 25);
    // /metrics labels requests with these templates: one per documented path, plus `unmatched`.
    // ... and the routes that are not REST operations (`/mcp`: MCP's JSON-RPC), routed but
    // not described.
    let templates = &surge_api::metrics::ROUTES;
    let not_rest = &surge_api::metrics::NOT_IN_OPENAPI;
    assert_eq!(templates.len(), paths.len() + 1 + not_rest.len(), "{templates:?}");
    for path in not_rest {
        assert!(templates.contains(path) && !paths.contains_key(*path), "{path}");
        let r = s.send("POST", path, &[], Some("{}")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} is routed, behind the admin token: {}", r.body);
    }
    for (path, ops) in paths {
        assert!(templates.contains(&path.as_str()), "{path} has no metrics label");
        assert_eq!(templates[surge_api::metrics::route_index(path)], path.as_str());
        let concrete = path
            .replace("{sku}", "x")
            .replace("{id}", "x")
            .replace("{account}", "x")
            .replace("{token}", "x")
            .replace("{merchant_id}", "x")
            .replace("{aggregate_id}", "x");
        for method in ops.as_object().unwrap().keys() {
            let r = s.send(&method.to_uppercase(), &concrete, &[], None).await;
            let unrouted = r.status == StatusCode::METHOD_NOT_ALLOWED
                || (r.status == StatusCode::NOT_FOUND && r.body["detail"] == "no such route");
            assert!(!unrouted, "{method} {path} is described but not routed: {}", r.body);
        }
    }
    // Every status a route answers is documented, errors as problem+json.
    let statuses = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["responses"].as_object().unwrap().keys().cloned().collect()
    };
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let keyed = op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key"));
            if keyed {
                let s = statuses(path, method);
                assert!(s.contains(&"409".into()) && s.contains(&"422".into()), "{method} {path}: {s:?}");
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.as_str() >= "400" {
                    let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/Problem", "{method} {path} {status}");
                }
            }
        }
    }
    for (path, method, status) in [
        ("/v1/holds", "post", "403"),
        ("/v1/orders", "post", "403"),
        ("/v1/orders", "post", "202"),
        ("/v1/orders/{id}/payments", "post", "202"),
        ("/v1/gateway/callback", "post", "401"),
        ("/v1/gateway/callback", "post", "404"),
        ("/v1/admin/dead-letters/{id}/retry", "post", "409"),
        ("/v1/items/bulk", "post", "413"),
    ] {
        assert!(statuses(path, method).contains(&status.into()), "{method} {path} {status}");
    }
    // Links carry ids from one answer to the next operation, by operationId.
    let link = &paths["/v1/orders"]["post"]["responses"]["201"]["links"]["get_order"];
    assert_eq!(link["operationId"], "get_order");
    assert_eq!(link["parameters"]["id"], "$response.body#/id");
    // Every link is spelled as OpenAPI spells it (tools ignore other members).
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let members: Vec<&String> = link.as_object().unwrap().keys().collect();
                    let known = ["operationId", "parameters", "requestBody", "description"];
                    assert!(
                        members.iter().all(|m| known.contains(&m.as_str())),
                        "{method} {path} {status} {name}: {members:?}"
                    );
                }
            }
        }
    }
    let by_card = &paths["/v1/items/{sku}/restock"]["post"]["responses"]["200"]["links"]["create_order_by_card"];
    assert_eq!(by_card["requestBody"]["lines"][0]["sku"], "$response.body#/sku");
    // Bounds come from surge_core::limits.
    let line = &r.body["components"]["schemas"]["LineBody"]["properties"]["qty"];
    assert_eq!(line["maximum"], surge_core::limits::QTY_MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_oversell_or_double_apply() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(server(dir.path()));
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    c.put("/v1/items/seat", r#"{"name":"Seat","price":100,"stock":10}"#).await;
    c.put("/v1/items/tee", r#"{"name":"Tee","price":100,"stock":100}"#).await;
    c.post_key("/v1/customers/c-1/points/credit", "cr", r#"{"amount":100000}"#).await;
    // 50 holds race for 10 seats: exactly 10 win.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (s, key) = (s.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new(&s, &key);
            let body = format!(r#"{{"customer_id":"c-{i}","lines":[{{"sku":"seat","qty":1}}]}}"#);
            c.post("/v1/holds", &body).await.status
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => won += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won, 10);
    let item = c.get("/v1/items/seat").await.body;
    assert_eq!((item["available"].as_u64(), item["held"].as_u64()), (Some(0), Some(10)));
    // 20 concurrent retries of one order: applied once; the others replay it or are told
    // it is still in flight.
    let order = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points"}}"#;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, key) = (s.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new(&s, &key);
            let r = c.post_key("/v1/orders", "same", order).await;
            (r.status, r.headers.get("idempotent-replayed").is_some(), r.body)
        }));
    }
    let (mut first, mut replayed) = (0, 0);
    for t in tasks {
        let (status, is_replay, body) = t.await.unwrap();
        match (status, is_replay) {
            (StatusCode::CREATED, false) => first += 1,
            (StatusCode::CREATED, true) => replayed += 1,
            (StatusCode::CONFLICT, false) => assert_eq!(body["code"], "idempotency_key_in_use"),
            other => panic!("unexpected {other:?}: {body}"),
        }
    }
    assert_eq!(first, 1);
    assert!(replayed <= 19);
    assert_eq!(c.get("/v1/items/tee").await.body["sold"], 1);
    assert_eq!(c.get("/v1/customers/c-1/points").await.body["balance"], 99_900);
}

#[tokio::test]
async fn an_order_from_a_hold_converts_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/seat", r#"{"name":"Seat","price":700,"stock":2}"#).await;
    c.post_key("/v1/customers/c-1/points/credit", "cr", r#"{"amount":5000}"#).await;
    let hold = c.post("/v1/holds", r#"{"customer_id":"c-1","lines":[{"sku":"seat","qty":2}]}"#).await.body;
    let hold_id = hold["id"].as_str().unwrap();
    let body = format!(r#"{{"customer_id":"c-1","hold_id":"{hold_id}","payment":{{"method":"points"}}}}"#);
    let r = c.post_key("/v1/orders", "o", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "paid");
    assert_eq!(r.body["total"], 1400);
    assert_eq!(r.body["hold_id"], hold_id);
    let h = c.get(&format!("/v1/holds/{hold_id}")).await.body;
    assert_eq!(h["status"], "converted");
    assert_eq!(h["order_id"], r.body["id"]);
    let item = c.get("/v1/items/seat").await.body;
    assert_eq!((item["held"].as_u64(), item["sold"].as_u64()), (Some(0), Some(2)));
    // A converted hold cannot be ordered again.
    c.post_key("/v1/orders", "o2", &body).await.assert_problem(409, "invalid_state");
}

#[tokio::test]
async fn admin_page_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let key = s.merchant("m-1").await;
    let r = s.send("GET", "/admin", &[], None).await;
    r.assert_problem(401, "unauthorized");
    assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    s.send("GET", "/admin", &[("authorization", &format!("Bearer {key}"))], None)
        .await
        .assert_problem(401, "unauthorized");
    let r = s.send("GET", "/admin", &[("authorization", &format!("Bearer {ADMIN}"))], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.body.as_str().unwrap();
    assert!(html.contains("<td>ready</td><td>true</td>") && html.contains("<td>merchants</td><td>1</td>"), "{html}");
    // Browsers: HTTP Basic with the token as password ("x:test-admin-token").
    let basic = "Basic eDp0ZXN0LWFkbWluLXRva2Vu";
    assert_eq!(s.send("GET", "/admin", &[("authorization", basic)], None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn limits_of_the_contract_are_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/x", r#"{"name":"X","price":1,"stock":100000}"#).await;
    let items: Vec<_> =
        (0..101).map(|i| json!({"sku": format!("s{i}"), "name": "S", "price": 1, "stock": 10})).collect();
    assert_eq!(c.post("/v1/items/bulk", &json!({ "items": items }).to_string()).await.status, StatusCode::OK);
    let lines = |n: usize| {
        let all: Vec<String> = (0..n).map(|i| format!(r#"{{"sku":"s{i}","qty":1}}"#)).collect();
        format!(r#"{{"customer_id":"c","lines":[{}]}}"#, all.join(","))
    };
    assert_eq!(c.post("/v1/holds", &lines(100)).await.status, StatusCode::CREATED);
    let cases = [
        ("/v1/holds", lines(101), "lines"),
        ("/v1/holds", r#"{"customer_id":"c","lines":[{"sku":"x","qty":10001}]}"#.to_string(), "qty"),
        ("/v1/holds", r#"{"customer_id":"c","lines":[{"sku":"x","qty":1}],"ttl_seconds":3601}"#.to_string(), "ttl"),
        ("/v1/holds", r#"{"customer_id":"bad id","lines":[{"sku":"x","qty":1}]}"#.to_string(), "customer"),
        ("/v1/items/x/restock", r#"{"qty":10001}"#.to_string(), "qty"),
        // A malformed field deep in a bulk body is named with its path.
        ("/v1/items/bulk", r#"{"items":[{"sku":"a","name":"A","price":"x","stock":1}]}"#.to_string(), "items[0].price"),
    ];
    for (path, body, field) in cases {
        let r = c.post(path, &body).await;
        r.assert_problem(400, "invalid_request");
        assert!(r.body["detail"].as_str().unwrap().contains(field), "{path}: {}", r.body);
        // Refusals by the engine's rules name the field in `field` too, as parse errors do.
        assert!(r.body["field"].as_str().is_some_and(|f| f.contains(field)), "{path}: {}", r.body);
    }
    // An empty hold id is malformed (400), not a hold that is missing (404).
    let r = c
        .post_key("/v1/orders", "k-empty-hold", r#"{"customer_id":"c","hold_id":"","payment":{"method":"points"}}"#)
        .await;
    r.assert_problem(400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("hold_id"), "{}", r.body);
    let r = c.put("/v1/items/y", r#"{"name":"Y","price":1000000000000001,"stock":1}"#).await;
    r.assert_problem(400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("price"), "{}", r.body);
    let long_key = "k".repeat(256);
    let r = c.post_key("/v1/customers/c/points/credit", &long_key, r#"{"amount":1}"#).await;
    r.assert_problem(400, "invalid_request");
    assert!(r.body["detail"].as_str().unwrap().contains("Idempotency-Key"), "{}", r.body);
}

/// A settled order leaves memory after the retention: its GET, the GET of its payment and
/// hold, and commands against it answer 410 `archived` naming when (this server has no cold
/// store); so does the GET of an expired waiting-room token; live work stays. A restart
/// (replay of the log, `*.archived` events included) keeps it that way.
#[tokio::test]
async fn archived_orders_payments_and_holds_answer_410_naming_when() {
    let dir = tempfile::tempdir().unwrap();
    let config = || surge_api::engine::EngineConfig {
        settings: surge_api::engine::Settings::new(300, 300).unwrap(),
        ..common::engine_config(2)
    };
    let (key, ids) = {
        let s = common::server_with(common::dir_opener(dir.path()), config(), 0);
        let key = s.merchant("m-1").await;
        let c = Client::new(&s, &key);
        c.put("/v1/items/tee", r#"{"name":"Tee","price":100,"stock":5}"#).await;
        c.post_key("/v1/customers/c-1/points/credit", "cr-1", r#"{"amount":1000,"reason":"welcome"}"#).await;
        let hold = c.post("/v1/holds", r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}]}"#).await;
        assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.body);
        let hold_id = hold.body["id"].as_str().unwrap().to_string();
        let body = format!(r#"{{"customer_id":"c-1","hold_id":"{hold_id}","payment":{{"method":"points"}}}}"#);
        let paid = c.post_key("/v1/orders", "o-1", &body).await;
        assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
        let manual =
            r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points","capture":"manual"}}"#;
        let authorized = c.post_key("/v1/orders", "o-2", manual).await;
        assert_eq!(authorized.body["payment"]["status"], "authorized");
        // A token active for 1 s, then expired, then archived.
        assert_eq!(c.put("/v1/queues/q", r#"{"max_active":1,"active_ttl_seconds":1}"#).await.status, StatusCode::OK);
        let token = c.post("/v1/queues/q/tokens", r#"{"customer_id":"c-1"}"#).await;
        assert_eq!(token.body["status"], "active", "{}", token.body);
        let token = token.body["token"].as_str().unwrap().to_string();
        let id = |r: &common::Resp| r.body["id"].as_str().unwrap().to_string();
        let pay = paid.body["payment"]["id"].as_str().unwrap().to_string();
        let ids = (id(&paid), pay, hold_id, id(&authorized), token);
        // The ticker archives within a few of its 250 ms rounds once 300 ms have passed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for path in [format!("/v1/orders/{}", ids.0), format!("/v1/queues/q/tokens/{}", ids.4)] {
            while c.get(&path).await.status != StatusCode::GONE {
                assert!(std::time::Instant::now() < deadline, "{path} was never archived");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        check_archived(&c, &ids).await;
        (key, ids)
    };
    // After a restart from the log, as before it.
    let s = common::server_with(common::dir_opener(dir.path()), config(), 0);
    check_archived(&Client::new(&s, &key), &ids).await;
}

async fn check_archived(
    c: &Client<'_>,
    (order, payment, hold, authorized, token): &(String, String, String, String, String),
) {
    for path in [
        format!("/v1/orders/{order}"),
        format!("/v1/payments/{payment}"),
        format!("/v1/holds/{hold}"),
        format!("/v1/queues/q/tokens/{token}"),
    ] {
        let r = c.get(&path).await;
        r.assert_problem(410, "archived");
        let at = r.body["archived_at"].as_str().unwrap_or_default().to_string();
        assert!(at.ends_with('Z') && at.len() == 24, "{path}: archived_at {at}");
    }
    c.post(&format!("/v1/orders/{order}/cancel"), "{}").await.assert_problem(410, "archived");
    c.post_key(&format!("/v1/payments/{payment}/refund"), "r-1", "{}").await.assert_problem(410, "archived");
    // Live work stays: the authorized order, and ids never handed out are 404.
    let live = c.get(&format!("/v1/orders/{authorized}")).await;
    assert_eq!(live.status, StatusCode::OK, "{}", live.body);
    c.get("/v1/orders/ord_99").await.assert_problem(404, "not_found");
    c.get("/v1/queues/q/tokens/qt_1_0000000000000007").await.assert_problem(404, "not_found");
    c.get(&format!("/v1/queues/elsewhere/tokens/{token}")).await.assert_problem(404, "not_found");
    let item = c.get("/v1/items/tee").await.body;
    assert_eq!((item["sold"].as_u64(), item["available"].as_u64()), (Some(2), Some(3)));
}

#[tokio::test]
async fn integers_may_be_written_with_a_zero_fraction_and_text_limits_count_characters() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    // JSON Schema's `integer` admits 3637.0 and 1e3, and so does every route.
    let r = c.put("/v1/items/x", r#"{"name":"X","price":3637.0,"stock":1e3}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!((r.body["price"].as_u64(), r.body["stock"].as_u64()), (Some(3637), Some(1000)));
    let r = c.post("/v1/items/x/restock", r#"{"qty":2.0}"#).await;
    assert_eq!(r.body["stock"], 1002);
    for bad in [r#"{"qty":2.5}"#, r#"{"qty":-1}"#, r#"{"qty":-1.0}"#, r#"{"qty":"2"}"#] {
        let r = c.post("/v1/items/x/restock", bad).await;
        r.assert_problem(400, "invalid_request");
        assert!(r.body["detail"].as_str().unwrap().contains("qty"), "{bad}: {}", r.body);
    }
    // Names: up to 256 characters (OpenAPI's maxLength), whatever their UTF-8 length.
    let name = "é".repeat(256);
    let r = c.put("/v1/items/y", &json!({"name": name, "price": 1, "stock": 1}).to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = c.put("/v1/items/y", &json!({"name": "x".repeat(257), "price": 1, "stock": 1}).to_string()).await;
    r.assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn a_batch_op_answers_as_its_route_and_a_malformed_batch_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let c = Client::new(&s, &s.merchant("m-1").await);
    // Ops that are not objects with a string `op`: the batch is malformed, nothing applied.
    for ops in [json!([[null]]), json!([1]), json!([{}]), json!([{"op": 5}]), json!([{"op": "restock"}, "x"])] {
        let r = c.post("/v1/batch", &json!({ "ops": ops }).to_string()).await;
        r.assert_problem(400, "invalid_request");
        assert_eq!(r.body["field"].as_str().map(|f| f.starts_with("ops[")), Some(true), "{}", r.body);
    }
    let ops = json!({"ops": [
        {"op": "put_item", "sku": "a", "name": "A", "price": 10.0, "stock": 5},
        {"op": "put_item", "sku": "a", "name": "A", "price": 10, "stock": 5},
        {"op": "restock", "qty": 1},
        {"op": "issue_token", "customer_id": "c-1"},
        {"op": "capture", "payment_id": "pay_9"}
    ]});
    let r = c.post("/v1/batch", &ops.to_string()).await;
    let statuses: Vec<u64> =
        r.body["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 200, 400, 400, 404], "{}", r.body);
    assert_eq!(r.body["results"][2]["body"]["detail"], "ops[2]: missing field `sku`");
    assert_eq!(r.body["results"][3]["body"]["detail"], "ops[3]: missing field `queue_id`");
}

#[tokio::test]
async fn admin_look_ups_answer_as_the_merchant_routes_with_the_log_s_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    s.state.console().configure(surge_api::console::ConsoleSettings {
        wal_dir: Some(dir.path().join("wal")),
        load_results_dir: dir.path().join("load-results"),
    });
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/tee", r#"{"name":"Tee","price":1500,"stock":5}"#).await;
    c.post_key("/v1/customers/c-1/points/credit", "cr-1", r#"{"amount":4000}"#).await;
    let order = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":2}],"payment":{"method":"points"}}"#;
    let placed = c.post_key("/v1/orders", "o-1", order).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    let (id, payment) = (placed.body["id"].as_str().unwrap(), placed.body["payment"]["id"].as_str().unwrap());
    let admin = format!("Bearer {ADMIN}");
    let get = |path: String| {
        let admin = admin.clone();
        let s = &s;
        async move { s.send("GET", &path, &[("authorization", &admin)], None).await }
    };
    // The same answers as the merchant's own routes.
    let r = get(format!("/v1/admin/merchants/m-1/orders/{id}")).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &c.get(&format!("/v1/orders/{id}")).await.body));
    let r = get(format!("/v1/admin/merchants/m-1/payments/{payment}")).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &c.get(&format!("/v1/payments/{payment}")).await.body));
    let r = get("/v1/admin/merchants/m-1/trial-balance".into()).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &c.get("/v1/ledger/trial-balance").await.body));
    // The order's history from the log, oldest first.
    let r = get(format!("/v1/admin/merchants/m-1/events/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let types: Vec<&str> = r.body["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"order.created"), "{}", r.body);
    assert!(r.body["events"].as_array().unwrap().iter().all(|e| e["aggregate_id"] == id && e["merchant_id"] == "m-1"));
    assert_eq!((r.body["complete"].as_bool(), r.body["truncated"].as_bool()), (Some(true), Some(false)));
    assert_eq!(r.body["from_lsn"], 1);
    let one = get(format!("/v1/admin/merchants/m-1/events/{id}?limit=1")).await;
    assert_eq!(one.body["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(one.body["events"][0], *r.body["events"].as_array().unwrap().last().unwrap(), "the newest is kept");
    assert_eq!(one.body["truncated"].as_bool(), Some(types.len() > 1));
    // A bounded scan says it did not read everything.
    let scanned = surge_api::lookup::scan(&dir.path().join("wal"), "m-1", id, 10, 1).unwrap();
    let scanned = serde_json::to_value(&scanned).unwrap();
    assert_eq!(scanned["complete"], false, "{scanned}");
    assert_eq!(scanned["from_lsn"], scanned["to_lsn"], "one record read: {scanned}");
    // Another merchant's id, an unknown one, a merchant key: nothing shown.
    get("/v1/admin/merchants/m-2/orders/ord_1".into()).await.assert_problem(404, "not_found");
    get("/v1/admin/merchants/m-1/orders/ord_99".into()).await.assert_problem(404, "not_found");
    get("/v1/admin/merchants/m-2/trial-balance".into()).await.assert_problem(404, "not_found");
    let r = get("/v1/admin/merchants/m-1/events/ord_99".into()).await;
    assert_eq!(r.body["events"].as_array().map(Vec::len), Some(0));
    c.get(&format!("/v1/admin/merchants/m-1/orders/{id}")).await.assert_problem(401, "unauthorized");
    c.get(&format!("/v1/admin/merchants/m-1/events/{id}")).await.assert_problem(401, "unauthorized");
}

/// `GET /v1/admin/metrics/window`: rates and percentiles between two readings of the
/// counters, exact over the window (not a mean of per-second figures).
#[tokio::test]
async fn the_metrics_window_counts_what_happened_between_its_two_readings() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let admin = format!("Bearer {ADMIN}");
    let window = |q: &'static str| {
        let admin = admin.clone();
        let s = &s;
        async move { s.send("GET", &format!("/v1/admin/metrics/window{q}"), &[("authorization", &admin)], None).await }
    };
    // No readings yet: nothing to show.
    window("").await.assert_problem(503, "service_unavailable");
    let c = Client::new(&s, &s.merchant("m-1").await);
    c.put("/v1/items/tee", r#"{"name":"Tee","price":100,"stock":50}"#).await;
    c.post_key("/v1/customers/c-1/points/credit", "cr-1", r#"{"amount":100000}"#).await;
    s.state.console().samples.take(&s.state);
    let order = r#"{"customer_id":"c-1","lines":[{"sku":"tee","qty":1}],"payment":{"method":"points"}}"#;
    for i in 0..7 {
        let r = c.post_key("/v1/orders", &format!("o-{i}"), order).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.state.console().samples.take(&s.state);
    let r = window("?minutes=99").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["minutes"], 10, "bounded");
    let events: Vec<&str> = r.body["order_events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    let per_s =
        |event: &str| r.body["orders_per_s"][events.iter().position(|e| *e == event).unwrap()].as_f64().unwrap();
    let seconds = r.body["interval_s"].as_f64().unwrap();
    assert!(seconds > 0.0 && seconds < 60.0, "{}", r.body);
    assert!(((per_s("created") * seconds) - 7.0).abs() < 1e-6, "{}", r.body);
    assert!(((per_s("paid") * seconds) - 7.0).abs() < 1e-6, "{}", r.body);
    assert!(((r.body["payments_succeeded_per_s"].as_f64().unwrap() * seconds) - 7.0).abs() < 1e-6, "{}", r.body);
    assert!(r.body["order_post_p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{}", r.body);
    // Admin only.
    c.get("/v1/admin/metrics/window").await.assert_problem(401, "unauthorized");
}
