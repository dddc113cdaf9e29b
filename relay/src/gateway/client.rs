//! The gateway's HTTP API as calls and typed outcomes (`docs/gateway.md`). Every answer is
//! classified once here: what the gateway said, or that it said nothing (timeout: maybe
//! done; unreachable: not sent).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::config::{GatewayConfig, GatewayEndpoint};
use super::scheduler::{Call, CallOutcome, Tx, TxStatus};

/// One client for every gateway (each keeps its own pool of connections).
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    callback_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedBody {
    transaction_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxBody {
    transaction_key: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ListBody {
    transactions: Vec<TxBody>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

/// Answers are small; anything larger is not the gateway this speaks to.
const ANSWER_BYTES_MAX: usize = 1 << 20;

impl TxBody {
    fn into_tx(self) -> Option<Tx> {
        let status = match self.status.as_str() {
            "PENDING" => TxStatus::Pending,
            "SUCCESS" => TxStatus::Success,
            "FAILED" => TxStatus::Failed,
            "CANCELLED" => TxStatus::Cancelled,
            _ => return None,
        };
        Some(Tx { transaction_key: self.transaction_key, status, reason: self.reason })
    }
}

impl GatewayClient {
    pub fn new(config: &GatewayConfig) -> Result<GatewayClient, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.response_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.in_flight_max.min(1_024))
            .build()
            .map_err(|e| format!("building the gateway client: {e}"))?;
        Ok(GatewayClient { http, callback_url: config.callback_url.clone() })
    }

    /// Makes `call` at `gateway`; `card_number` is the opened card for `Call::Pay`.
    pub async fn call(&self, gateway: &GatewayEndpoint, call: &Call, card_number: Option<&str>) -> CallOutcome {
        let base = &gateway.base_url;
        let request = match call {
            Call::Pay { order_id, card_type, amount, capture, key, .. } => {
                self.http.post(format!("{base}/api/v1/payments")).header("idempotency-key", key).json(&json!({
                    "orderId": order_id,
                    "cardType": card_type,
                    "cardNo": card_number.unwrap_or_default(),
                    "amount": amount,
                    "callbackUrl": self.callback_url,
                    "capture": capture.as_str(),
                }))
            }
            Call::Lookup { transaction_key } => {
                self.http.get(format!("{base}/api/v1/payments/{}", encode(transaction_key)))
            }
            Call::LookupOrder { order_id } => {
                self.http.get(format!("{base}/api/v1/payments?orderId={}", encode(order_id)))
            }
            Call::Capture { transaction_key, amount, key } => self
                .http
                .post(format!("{base}/api/v1/payments/{}/capture", encode(transaction_key)))
                .header("idempotency-key", key)
                .json(&json!({ "amount": amount })),
            Call::Cancel { transaction_key, key } => self
                .http
                .post(format!("{base}/api/v1/payments/{}/cancel", encode(transaction_key)))
                .header("idempotency-key", key)
                .json(&json!({})),
            Call::Refund { transaction_key, amount, key } => {
                let body = match amount {
                    Some(amount) => json!({ "amount": amount }),
                    None => json!({}),
                };
                self.http
                    .post(format!("{base}/api/v1/payments/{}/refund", encode(transaction_key)))
                    .header("idempotency-key", key)
                    .json(&body)
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return CallOutcome::Unreachable(e.to_string()),
            // Sent (or maybe sent), no answer: the caller must assume it may have been done.
            Err(_) => return CallOutcome::Timeout,
        };
        let status = response.status().as_u16();
        let body = match read_capped(response).await {
            Some(body) => body,
            None => return CallOutcome::Timeout,
        };
        classify(call, status, &body)
    }
}

async fn read_capped(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    // Bounded by ANSWER_BYTES_MAX.
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > ANSWER_BYTES_MAX {
            return Some(Vec::new());
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

fn classify(call: &Call, status: u16, body: &[u8]) -> CallOutcome {
    match status {
        200..=299 => {
            let parsed = match call {
                Call::Pay { .. } => serde_json::from_slice::<AcceptedBody>(body)
                    .ok()
                    .map(|b| CallOutcome::Accepted { transaction_key: b.transaction_key }),
                Call::LookupOrder { .. } => serde_json::from_slice::<ListBody>(body)
                    .ok()
                    .and_then(|b| b.transactions.into_iter().map(TxBody::into_tx).collect::<Option<Vec<_>>>())
                    .map(CallOutcome::Transactions),
                _ => {
                    serde_json::from_slice::<TxBody>(body).ok().and_then(TxBody::into_tx).map(CallOutcome::Transaction)
                }
            };
            // A 2xx this worker cannot read is no answer it can act on.
            parsed.unwrap_or(CallOutcome::Failed { status })
        }
        400..=499 => {
            let e: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
            CallOutcome::Refused { status, code: e.error, message: e.message }
        }
        _ => CallOutcome::Failed { status },
    }
}

/// Percent-encodes everything but unreserved characters (ids are `[A-Za-z0-9_.:-]` anyway).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay() -> Call {
        Call::Pay {
            order_id: "m:pay_1".into(),
            card_type: "KB".into(),
            sealed: Box::new([]),
            amount: 1,
            capture: surge_core::command::CaptureMode::Automatic,
            key: "k".into(),
        }
    }

    #[test]
    fn answers_are_classified_by_status_and_body() {
        let lookup = Call::Lookup { transaction_key: "t".into() };
        assert_eq!(
            classify(&pay(), 200, br#"{"transactionKey":"20261205:TR:1","status":"PENDING"}"#),
            CallOutcome::Accepted { transaction_key: "20261205:TR:1".into() }
        );
        assert_eq!(classify(&pay(), 200, b"garbage"), CallOutcome::Failed { status: 200 });
        assert_eq!(
            classify(&lookup, 200, br#"{"transactionKey":"t","status":"FAILED","reason":"invalid card"}"#),
            CallOutcome::Transaction(Tx {
                transaction_key: "t".into(),
                status: TxStatus::Failed,
                reason: Some("invalid card".into())
            })
        );
        assert_eq!(
            classify(&lookup, 200, br#"{"transactionKey":"t","status":"WEIRD"}"#),
            CallOutcome::Failed { status: 200 }
        );
        assert_eq!(
            classify(&pay(), 400, br#"{"error":"invalid_request","message":"cardNo"}"#),
            CallOutcome::Refused { status: 400, code: "invalid_request".into(), message: "cardNo".into() }
        );
        assert_eq!(
            classify(&pay(), 404, b"not json"),
            CallOutcome::Refused { status: 404, code: String::new(), message: String::new() }
        );
        assert_eq!(classify(&pay(), 503, b""), CallOutcome::Failed { status: 503 });
        let list = Call::LookupOrder { order_id: "m:pay_1".into() };
        assert_eq!(
            classify(&list, 200, br#"{"orderId":"m:pay_1","transactions":[]}"#),
            CallOutcome::Transactions(vec![])
        );
        assert_eq!(encode("a b/c:d"), "a%20b%2Fc:d");
    }
}
