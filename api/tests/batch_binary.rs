//! `POST /v1/batch` with a binary body (`docs/batch-format.md`): through the router, and as a
//! property: a binary batch and its JSON twin become the same requests, so they get the
//! same replies and leave the same state digest.

mod common;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request as HttpRequest};
use common::{server, Client, Server};
use proptest::prelude::*;
use serde_json::{json, Value};
use surge_api::extract::Call;
use surge_client::wire::{self, BatchBuilder, ResultRecord, PAYMENT_NONE, PAYMENT_POINTS};
use surge_core::{Command, ItemSpec, Outcome, Request};
use tower::ServiceExt;

/// One generated order: customer, lines (sku, qty), points?, key.
#[derive(Clone, Debug)]
struct Op {
    customer: String,
    lines: Vec<(String, u32)>,
    points: bool,
    key: Option<[u8; 16]>,
}

fn binary_body(ops: &[Op]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for op in ops {
        let lines: Vec<(&str, u32)> = op.lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        let payment = if op.points { PAYMENT_POINTS } else { PAYMENT_NONE };
        b.push_order(&op.customer, &lines, payment, op.key).expect("fits");
    }
    let mut out = Vec::new();
    b.encode(&mut out);
    out
}

fn hex(key: &[u8; 16]) -> String {
    let mut s = String::new();
    wire::key_text(key, &mut s);
    s
}

fn json_body(ops: &[Op]) -> String {
    let ops: Vec<Value> = ops
        .iter()
        .map(|op| {
            let lines: Vec<Value> = op.lines.iter().map(|(s, q)| json!({"sku": s, "qty": q})).collect();
            let mut v = json!({
                "op": "create_order",
                "customer_id": op.customer,
                "lines": lines,
                "payment": {"method": if op.points { "points" } else { "none" }},
            });
            if let Some(k) = &op.key {
                v["idempotency_key"] = Value::from(hex(k));
            }
            v
        })
        .collect();
    json!({ "ops": ops }).to_string()
}

async fn post_binary(client: &Client<'_>, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let req = HttpRequest::builder()
        .method("POST")
        .uri("/v1/batch")
        .header("authorization", &client.auth)
        .header("content-type", wire::MEDIA_TYPE)
        .body(Body::from(body))
        .expect("request builds");
    let res = client.server.app.clone().oneshot(req).await.expect("router answers");
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body reads");
    (status, ct, bytes.to_vec())
}

async fn shop(s: &Server, id: &str) -> String {
    let key = s.merchant(id).await;
    let c = Client::new(s, &key);
    let items =
        r#"{"items":[{"sku":"a","name":"A","price":10,"stock":5},{"sku":"b","name":"B","price":7,"stock":100}]}"#;
    assert_eq!(c.post("/v1/items/bulk", items).await.status, 200);
    let r = c.post_key("/v1/customers/c-1/points/credit", "credit", r#"{"amount":1000}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    key
}

/// What a JSON result says, as the binary record of it would.
fn record_of_json(result: &Value) -> (u16, bool, Option<String>, u64, u64) {
    let status = result["status"].as_u64().unwrap_or(0) as u16;
    let body = &result["body"];
    let number = |v: &Value, prefix: &str| {
        v.as_str().and_then(|s| s.strip_prefix(prefix)).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
    };
    (
        status,
        result["replayed"] == true,
        body["code"].as_str().map(str::to_string),
        number(&body["id"], "ord_"),
        body["total"].as_u64().unwrap_or(0),
    )
}

fn record_tuple(r: &ResultRecord) -> (u16, bool, Option<String>, u64, u64) {
    (r.status(), r.replayed(), r.error_code().map(str::to_string), r.order_number(), r.total())
}

#[tokio::test]
async fn binary_batches_answer_as_their_json_twins_and_share_the_key_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(dir.path());
    let (json_key, bin_key) = (shop(&s, "json-shop").await, shop(&s, "bin-shop").await);
    let (json_client, bin_client) = (Client::new(&s, &json_key), Client::new(&s, &bin_key));
    let ops = vec![
        Op { customer: "c-1".into(), lines: vec![("a".into(), 2), ("b".into(), 1)], points: true, key: Some([1; 16]) },
        Op { customer: "c-2".into(), lines: vec![("b".into(), 3)], points: false, key: None },
        Op { customer: "c-1".into(), lines: vec![("a".into(), 9)], points: true, key: Some([2; 16]) },
        Op { customer: "c-9".into(), lines: vec![("b".into(), 1)], points: true, key: None },
        Op { customer: "c-1".into(), lines: vec![("nope".into(), 1)], points: false, key: None },
    ];
    for round in 0..2 {
        let j = json_client.post("/v1/batch", &json_body(&ops)).await;
        assert_eq!(j.status, 200, "{}", j.body);
        let (status, ct, bytes) = post_binary(&bin_client, binary_body(&ops)).await;
        assert_eq!((status, ct.as_str()), (200, wire::MEDIA_TYPE), "{}", String::from_utf8_lossy(&bytes));
        let records = wire::decode_results(&bytes).expect("results decode");
        let results = j.body["results"].as_array().expect("results");
        assert_eq!(records.len(), results.len());
        for (r, jr) in records.iter().zip(results) {
            assert_eq!(record_tuple(r), record_of_json(jr), "round {round}: {jr}");
        }
        // The first round created, the second replays the keyed one (and the rest run again).
        assert_eq!(records[0].replayed(), round == 1);
    }
    let (_, _, bytes) = post_binary(&bin_client, binary_body(&ops[..1])).await;
    let first = wire::decode_results(&bytes).expect("decodes")[0];
    assert_eq!((first.status(), first.replayed(), first.order_number()), (201, true, 1));

    // One key space: the JSON twin of a binary op replays it; another op with its key is 422.
    let twin = bin_client.post("/v1/batch", &json_body(&ops[..1])).await;
    assert_eq!(twin.body["results"][0]["replayed"], true, "{}", twin.body);
    assert_eq!(twin.body["results"][0]["body"]["id"], "ord_1");
    let other = Op { lines: vec![("b".into(), 1)], ..ops[0].clone() };
    let (_, _, bytes) = post_binary(&bin_client, binary_body(&[other])).await;
    let reused = wire::decode_results(&bytes).expect("decodes")[0];
    assert_eq!((reused.status(), reused.error_code()), (422, Some("idempotency_key_reused")));
    let header = bin_client
        .post_key(
            "/v1/orders",
            &hex(&[1; 16]),
            r#"{"customer_id":"c-1","lines":[{"sku":"b","qty":1}],"payment":{"method":"points"}}"#,
        )
        .await;
    header.assert_problem(422, "idempotency_key_reused");
}

#[tokio::test]
async fn bodies_that_are_not_batches_are_400_and_unknown_kinds_are_a_400_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(dir.path());
    let key = shop(&s, "shop").await;
    let c = Client::new(&s, &key);
    let good = binary_body(&[Op { customer: "c-1".into(), lines: vec![("b".into(), 1)], points: true, key: None }]);
    for bad in [Vec::new(), b"SRGB".to_vec(), good[..good.len() - 1].to_vec(), {
        let mut v = good.clone();
        v[4] = 2; // version 2
        v
    }] {
        let (status, ct, body) = post_binary(&c, bad).await;
        assert_eq!((status, ct.as_str()), (400, "application/problem+json"), "{}", String::from_utf8_lossy(&body));
    }
    let r = c.send("POST", "/v1/batch", &[("content-type", "text/plain")], None).await;
    r.assert_problem(415, "unsupported_media_type");
    assert!(r.body["detail"].as_str().is_some_and(|d| d.contains(wire::MEDIA_TYPE)), "{}", r.body);
    let mut unknown = good.clone();
    unknown[24] = 77; // the op's kind
    let (status, _, bytes) = post_binary(&c, unknown).await;
    assert_eq!(status, 200);
    let r = wire::decode_results(&bytes).expect("decodes")[0];
    assert_eq!((r.status(), r.error_code()), (400, Some("invalid_request")));
    // Nothing ran: b's stock is untouched.
    assert_eq!(c.get("/v1/items/b").await.body["available"], 100);
}

fn call(s: &Server, merchant: &str, content_type: &'static str, body: Vec<u8>) -> Call {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    Call {
        engine: s.engine.clone(),
        gateway: None,
        merchant: merchant.into(),
        method: Method::POST,
        path: "/v1/batch".into(),
        headers,
        body: Bytes::from(body),
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let customer = prop_oneof![Just("c-1"), Just("c-2"), Just("c-3"), Just("bad id\"")].prop_map(str::to_string);
    let sku = prop_oneof![Just("a"), Just("b"), Just("zz"), Just("missing")].prop_map(str::to_string);
    let lines = proptest::collection::vec((sku, 0u32..4), 1..4);
    let key = proptest::option::of(prop_oneof![Just([1u8; 16]), Just([2u8; 16]), Just([3u8; 16])]);
    (customer, lines, any::<bool>(), key).prop_map(|(customer, lines, points, key)| Op { customer, lines, points, key })
}

fn setup_engine() -> surge_core::Engine {
    let mut e = surge_core::Engine::new(1);
    let req = |command| Request { merchant: "m".into(), idempotency: None, command };
    let commands = [
        Command::CreateMerchant { name: "M".into(), currency: "KRW".into(), api_key_hash: [0; 32] },
        Command::PutItem(ItemSpec { sku: "a".into(), name: "A".into(), price: 10, stock: 6, queue: None }),
        Command::PutItem(ItemSpec { sku: "b".into(), name: "B".into(), price: 3, stock: 50, queue: None }),
        Command::PutItem(ItemSpec { sku: "zz".into(), name: "Z".into(), price: 1, stock: 2, queue: None }),
        Command::CreditPoints { customer: "c-1".into(), amount: 100, reason: String::new() },
        Command::CreditPoints { customer: "c-2".into(), amount: 20, reason: String::new() },
    ];
    for c in commands {
        e.execute(&req(c), 1_000).expect("set-up applies");
    }
    e.mark_all_durable();
    e
}

/// An outcome as a comparable value.
fn outcome(r: &Result<(usize, Outcome), surge_core::CoreError>) -> String {
    match r {
        Ok((_, Outcome::Applied { reply, .. })) => format!("applied {reply:?}"),
        Ok((_, Outcome::Replayed { reply })) => format!("replayed {reply:?}"),
        Err(e) => format!("refused {}", e.code()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_binary_batch_and_its_json_twin_give_the_same_replies_and_digest(
        batches in proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..8), 1..4)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let s = rt.block_on(async { server(dir.path()) });
        let (mut via_json, mut via_binary) = (setup_engine(), setup_engine());
        for (n, ops) in batches.iter().enumerate() {
            let json = surge_api::routes::json_batch_requests(&call(&s, "m", "application/json", json_body(ops).into_bytes()))
                .expect("the JSON batch parses");
            let binary = surge_api::batch_bin::requests(&call(&s, "m", wire::MEDIA_TYPE, binary_body(ops)))
                .expect("the binary batch decodes");
            prop_assert_eq!(json.len(), binary.len());
            for (i, (j, b)) in json.iter().zip(&binary).enumerate() {
                match (j, b) {
                    (Ok((jr, _)), Ok(br)) => {
                        prop_assert_eq!(jr, br, "batch {} op {}", n, i);
                        let now = 2_000 + n as u64;
                        let (a, b) = (via_json.execute(jr, now), via_binary.execute(br, now));
                        prop_assert_eq!(outcome(&a), outcome(&b));
                    }
                    (Err(je), Err(be)) => prop_assert_eq!((je.status, je.code), (be.status, be.code)),
                    _ => prop_assert!(false, "batch {} op {}: one format refused what the other took", n, i),
                }
            }
            via_json.mark_all_durable();
            via_binary.mark_all_durable();
        }
        prop_assert_eq!(via_json.shards[0].digest(), via_binary.shards[0].digest());
    }
}
