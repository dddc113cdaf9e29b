//! The simulator over real sockets on 127.0.0.1, with a callback receiver of its own that
//! checks each signature with an HMAC written here (RFC 2104 over sha2), not the crate's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use surge_gateway_sim::{serve, Mode, MsRange, Rates, RetryPolicy, SimConfig, SimState};
use tokio::net::TcpListener;

const SECRET: &[u8] = b"e2e-secret";

fn config(rates: Rates) -> SimConfig {
    SimConfig {
        rates,
        latency_ms: MsRange::new(0, 5),
        settle_ms: MsRange::new(10, 50),
        callback_secret: SECRET.to_vec(),
        seed: Some(11),
        retry: RetryPolicy {
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(5),
        },
        ..SimConfig::default()
    }
}

fn approve_all() -> Rates {
    Rates { success_rate: 1.0, approval_rate: 1.0, drop_callbacks: 0.0 }
}

struct Sim {
    state: SimState,
    base: String,
    client: reqwest::Client,
}

async fn start(config: SimConfig) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = SimState::new(config).unwrap();
    tokio::spawn(serve(listener, state.clone(), std::future::pending()));
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    Sim { state, base, client }
}

impl Sim {
    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let answer = request.send().await.unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let answer = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn pay(&self, receiver: &Receiver, order_id: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.post("/api/v1/payments", key, &payment(&receiver.url, order_id)).await
    }

    async fn set_mode(&self, mode: &str) {
        let (status, _) = self.post("/sim/mode", None, &json!({"mode": mode})).await;
        assert_eq!(status, StatusCode::OK);
    }

    /// The transaction once it left PENDING (polls for at most 5 s).
    async fn decided(&self, key: &str) -> Value {
        for _ in 0..500 {
            let (_, view) = self.get(&format!("/api/v1/payments/{key}")).await;
            if view["status"] != "PENDING" {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{key} still PENDING");
    }
}

fn payment(callback_url: &str, order_id: &str) -> Value {
    json!({"orderId": order_id, "cardType": "KB", "cardNo": "4111 1111 1111 1111", "amount": 5000,
           "callbackUrl": callback_url})
}

/// One callback as it arrived.
#[derive(Clone, Debug)]
struct Delivery {
    body: Value,
    signature_ok: bool,
    timestamp: u64,
}

#[derive(Default)]
struct Inbox {
    deliveries: Vec<Delivery>,
    /// Statuses to answer, first first; 200 once empty.
    script: VecDeque<u16>,
}

struct Receiver {
    url: String,
    inbox: Arc<Mutex<Inbox>>,
}

async fn receiver(script: &[u16]) -> Receiver {
    let inbox = Arc::new(Mutex::new(Inbox { deliveries: Vec::new(), script: script.iter().copied().collect() }));
    let app = Router::new().route("/callback", post(receive)).with_state(inbox.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, inbox }
}

async fn receive(State(inbox): State<Arc<Mutex<Inbox>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let timestamp = header("x-timestamp");
    let mut signed = timestamp.clone().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(&body);
    let signature_ok = hex(&hmac_sha256(SECRET, &signed)) == header("x-signature");
    let delivery = Delivery {
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_ok,
        timestamp: timestamp.parse().unwrap_or(0),
    };
    let mut inbox = inbox.lock();
    inbox.deliveries.push(delivery);
    StatusCode::from_u16(inbox.script.pop_front().unwrap_or(200)).unwrap()
}

impl Receiver {
    fn deliveries(&self) -> Vec<Delivery> {
        self.inbox.lock().deliveries.clone()
    }

    /// The deliveries once there are `count` of them (waits at most 5 s).
    async fn wait_for(&self, count: usize) -> Vec<Delivery> {
        for _ in 0..500 {
            let deliveries = self.deliveries();
            if deliveries.len() >= count {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} callbacks arrived, waited for {count}", self.deliveries().len());
    }
}

/// HMAC-SHA256 as RFC 2104 defines it, independent of the crate under test.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn the_test_hmac_is_hmac_sha256() {
    // RFC 4231 test cases 2 and 6 (a key longer than a block).
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_called_back_signed() {
    let sim = start(config(approve_all())).await;
    let receiver = receiver(&[]).await;
    let (status, answer) = sim.pay(&receiver, "m-1:pay_1", Some("k-1")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let key = answer["transactionKey"].as_str().unwrap().to_string();

    let deliveries = receiver.wait_for(1).await;
    let delivery = &deliveries[0];
    assert!(delivery.signature_ok, "{delivery:?}");
    assert!(delivery.timestamp.abs_diff(now_secs()) < 300, "{delivery:?}");
    assert_eq!(
        delivery.body,
        json!({"transactionKey": key, "orderId": "m-1:pay_1", "status": "SUCCESS", "reason": null})
    );
    let view = sim.decided(&key).await;
    assert_eq!((view["status"].as_str(), view["capturedAmount"].as_u64()), (Some("SUCCESS"), Some(5000)));
    assert_eq!(view["cardLast4"], "1111");
    let stats = sim.state.stats();
    assert_eq!((stats.approved, stats.callbacks_sent, stats.callback_failures), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_is_called_back_with_its_reason() {
    let sim = start(config(Rates { approval_rate: 0.0, ..approve_all() })).await;
    let receiver = receiver(&[]).await;
    let (_, answer) = sim.pay(&receiver, "o-1", None).await;
    let key = answer["transactionKey"].as_str().unwrap();

    let delivery = receiver.wait_for(1).await.remove(0);
    assert!(delivery.signature_ok);
    assert_eq!(delivery.body["transactionKey"], key);
    assert_eq!(delivery.body["status"], "FAILED");
    let reason = delivery.body["reason"].as_str().unwrap();
    assert!(["limit exceeded", "invalid card"].contains(&reason), "{reason}");
    let view = sim.decided(key).await;
    assert_eq!((view["status"].as_str(), view["reason"].as_str()), (Some("FAILED"), Some(reason)));
    assert_eq!(view["capturedAmount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_callbacks_are_never_sent_but_the_payment_is_decided() {
    let sim = start(config(Rates { drop_callbacks: 1.0, ..approve_all() })).await;
    let receiver = receiver(&[]).await;
    let (_, answer) = sim.pay(&receiver, "o-1", None).await;
    let view = sim.decided(answer["transactionKey"].as_str().unwrap()).await;
    assert_eq!(view["status"], "SUCCESS");
    // A callback is started when its transaction is decided; give one time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.deliveries().is_empty());
    let stats = sim.state.stats();
    assert_eq!((stats.callbacks_dropped, stats.callbacks_sent), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_callback_is_retried_until_accepted() {
    let sim = start(config(approve_all())).await;
    let receiver = receiver(&[500, 500]).await;
    sim.pay(&receiver, "o-1", None).await;
    let deliveries = receiver.wait_for(3).await;
    assert!(deliveries.iter().all(|d| d.signature_ok && d.body == deliveries[0].body), "{deliveries:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.deliveries().len(), 3, "nothing after the 2xx");
    let stats = sim.state.stats();
    assert_eq!((stats.callback_failures, stats.callbacks_sent, stats.callbacks_abandoned), (2, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_is_given_up_after_the_last_attempt() {
    let mut config = config(approve_all());
    config.retry.max_attempts = 3;
    let sim = start(config).await;
    // A port that was just free: connections to it are refused.
    let closed: SocketAddr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (status, _) = sim.post("/api/v1/payments", None, &payment(&format!("http://{closed}/cb"), "o-1")).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..500 {
        if sim.state.stats().callbacks_abandoned == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = sim.state.stats();
    assert_eq!((stats.callbacks_abandoned, stats.callback_failures, stats.callbacks_sent), (1, 3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_answers_every_api_call_503_at_once() {
    // Answers take 3 s when up; the client gives up after 2 s, so only an answer that skips
    // the latency arrives.
    let sim = start(SimConfig { latency_ms: MsRange::new(3000, 3000), ..config(approve_all()) }).await;
    let receiver = receiver(&[]).await;
    sim.set_mode("down").await;
    assert_eq!(sim.state.mode(), Mode::Down);
    let quick = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap();
    let body = payment(&receiver.url, "o-1");
    for request in [
        quick.post(format!("{}/api/v1/payments", sim.base)).header("idempotency-key", "d-1").json(&body),
        quick.get(format!("{}/api/v1/payments?orderId=o-1", sim.base)),
        quick.get(format!("{}/api/v1/payments/20261205:TR:000001", sim.base)),
        quick.post(format!("{}/api/v1/payments/20261205:TR:000001/cancel", sim.base)),
    ] {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 503);
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"], "gateway_unavailable");
    }
    let (status, mode) = sim.get("/sim/mode").await;
    assert_eq!((status, mode), (StatusCode::OK, json!({"mode": "down"})));
    let stats = sim.state.stats();
    assert_eq!((stats.payment_requests, stats.transactions), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_answers_payments_500_and_creates_nothing() {
    let sim = start(config(approve_all())).await;
    let receiver = receiver(&[]).await;
    sim.set_mode("failing").await;
    let (status, error) = sim.pay(&receiver, "o-1", Some("f-1")).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("gateway_error")));
    let (status, listed) = sim.get("/api/v1/payments?orderId=o-1").await;
    assert_eq!((status, listed["transactions"].clone()), (StatusCode::OK, json!([])));
    let stats = sim.state.stats();
    assert_eq!((stats.failed_requests, stats.transactions), (1, 0));

    // Back to normal, the same key creates the transaction: the 500 was not remembered.
    sim.set_mode("normal").await;
    let (status, answer) = sim.pay(&receiver, "o-1", Some("f-1")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(receiver.wait_for(1).await[0].body["status"], "SUCCESS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pending_payment_stops_its_callback() {
    let sim = start(SimConfig { settle_ms: MsRange::new(1000, 1000), ..config(approve_all()) }).await;
    let receiver = receiver(&[]).await;
    let (_, cancelled) = sim.pay(&receiver, "o-1", None).await;
    let (_, kept) = sim.pay(&receiver, "o-2", None).await;
    let key = cancelled["transactionKey"].as_str().unwrap();
    let (status, view) = sim.post(&format!("/api/v1/payments/{key}/cancel"), None, &json!({})).await;
    assert_eq!((status, view["status"].as_str()), (StatusCode::OK, Some("CANCELLED")), "{view}");

    // The other payment's callback shows the receiver works; none comes for the cancelled one.
    let deliveries = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deliveries_now = receiver.deliveries();
    assert_eq!(deliveries_now.len(), 1, "{deliveries_now:?}");
    assert_eq!(deliveries[0].body["transactionKey"], kept["transactionKey"]);
    assert_eq!(sim.get(&format!("/api/v1/payments/{key}")).await.1["status"], "CANCELLED");
    let stats = sim.state.stats();
    assert_eq!((stats.approved, stats.cancelled, stats.callbacks_sent), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_with_one_key_never_charge_twice() {
    let sim = Arc::new(start(config(approve_all())).await);
    let receiver = Arc::new(receiver(&[]).await);
    let mut tasks = Vec::new();
    for order in 0..5 {
        for _ in 0..8 {
            let (sim, receiver) = (sim.clone(), receiver.clone());
            tasks.push(tokio::spawn(async move {
                let order_id = format!("o-{order}");
                let (status, answer) = sim.pay(&receiver, &order_id, Some(&format!("key-{order}"))).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                (order_id, answer["transactionKey"].as_str().unwrap().to_string())
            }));
        }
    }
    let mut keys = std::collections::HashMap::new();
    for task in tasks {
        let (order_id, key) = task.await.unwrap();
        assert_eq!(keys.entry(order_id).or_insert_with(|| key.clone()), &key, "one key, one transaction");
    }
    let deliveries = receiver.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.deliveries().len(), 5, "one callback per transaction: {deliveries:?}");
    let stats = sim.state.stats();
    assert_eq!((stats.transactions, stats.idempotent_replays, stats.approved), (5, 35, 5));
    assert_eq!(stats.charged_twice, 0);

    // The counter does count: two unkeyed requests for one order are two charges.
    sim.pay(&receiver, "o-twice", None).await;
    sim.pay(&receiver, "o-twice", None).await;
    receiver.wait_for(7).await;
    assert_eq!(sim.state.stats().charged_twice, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_does_the_work_even_for_a_caller_that_gave_up() {
    let sim = start(SimConfig { slow_latency_ms: MsRange::new(2000, 2000), ..config(approve_all()) }).await;
    let receiver = receiver(&[]).await;
    sim.set_mode("slow").await;
    let impatient = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(500)).build().unwrap();
    let sent = impatient
        .post(format!("{}/api/v1/payments", sim.base))
        .header("idempotency-key", "slow-1")
        .json(&payment(&receiver.url, "o-1"))
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()));
    // The transaction exists and settles; a look in normal mode finds it decided.
    assert_eq!(receiver.wait_for(1).await[0].body["status"], "SUCCESS");
    sim.set_mode("normal").await;
    let (_, listed) = sim.get("/api/v1/payments?orderId=o-1").await;
    assert_eq!(listed["transactions"][0]["status"], "SUCCESS", "{listed}");
    let (status, _) = sim.pay(&receiver, "o-1", Some("slow-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.state.stats().idempotent_replays, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_once_shutdown_resolves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, SimState::new(config(approve_all())).unwrap(), async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}
