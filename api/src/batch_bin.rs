//! `POST /v1/batch` with a binary body (`application/vnd.surge.batch`, bytes in
//! `docs/batch-format.md`, decoded by `surge_client::wire`). An op becomes exactly the
//! `Request` its JSON twin would (`routes::batch`): the same command, the same key (16 bytes
//! as 32 hex digits) and the same fingerprint (over the twin's canonical JSON text), so
//! the two formats share one key space and replay each other's ops. Results are fixed-size
//! records instead of JSON bodies.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use surge_client::wire::{self, Batch, LineRecord, OrderOp, ResultRecord, PAYMENT_POINTS};
use surge_core::{CaptureMode, Command, LineSpec, OrderSource, PaymentMethod, PaymentSpec, Reply, Request};

use crate::body::OrderBody;
use crate::engine::Executed;
use crate::error::ApiError;
use crate::extract::Call;
use crate::routes::exec_error;

pub use wire::MEDIA_TYPE;

/// Whether the request's body is a binary batch.
pub fn is_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// The ops of a binary batch as requests, or each op's 400; `Err` when the body as a whole
/// is not a batch (nothing runs).
pub fn requests(call: &Call) -> Result<Vec<Result<Request, ApiError>>, ApiError> {
    let batch = Batch::decode(&call.body).map_err(|e| ApiError::invalid(e.to_string()))?;
    // Reused for every op: the twin's JSON text and the key's hex digits.
    let mut twin = Vec::with_capacity(256);
    let mut key = String::with_capacity(32);
    let mut out = Vec::with_capacity(batch.len());
    for i in 0..batch.len() {
        let op = match batch.op(i) {
            Some(Ok(op)) => op,
            Some(Err(e)) => {
                out.push(Err(ApiError::invalid(e.detail(i)).with("field", format!("ops[{i}]"))));
                continue;
            }
            None => break, // i < len: not reached
        };
        out.push(request(call, &batch, &op, &mut twin, &mut key));
    }
    Ok(out)
}

fn sku<'b>(batch: &'b Batch<'_>, line: &LineRecord) -> &'b str {
    // Resolved ops have every sku checked already.
    batch.string("lines.sku", line.sku_index()).unwrap_or_default()
}

fn request(
    call: &Call,
    batch: &Batch<'_>,
    op: &OrderOp<'_>,
    twin: &mut Vec<u8>,
    key: &mut String,
) -> Result<Request, ApiError> {
    let lines = op.lines.iter().map(|l| LineSpec { sku: sku(batch, l).to_string(), qty: u64::from(l.qty()) }).collect();
    let method = if op.payment == PAYMENT_POINTS { PaymentMethod::Points } else { PaymentMethod::None };
    let command = Command::CreateOrder {
        customer: op.customer.to_string(),
        source: OrderSource::Lines(lines),
        payment: PaymentSpec { method, card: None, capture: CaptureMode::default() },
        queue_token: None,
    };
    let idempotency = op.key.map(|k| {
        wire::key_text(&k, key);
        write_twin(batch, op, method, key, twin);
        let fingerprint = crate::extract::fingerprint(&[b"batch\n".as_slice(), twin], None);
        surge_core::Idempotency { key: key.clone(), fingerprint }
    });
    Ok(Request { merchant: call.merchant.to_string(), idempotency, command })
}

/// The op as the JSON batch route fingerprints its twin: `serde_json::to_vec` of the parsed
/// op, which writes members sorted by name (no `preserve_order`), integers as integers.
fn write_twin(batch: &Batch<'_>, op: &OrderOp<'_>, method: PaymentMethod, key: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"{\"customer_id\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, op.customer);
    out.extend_from_slice(b",\"idempotency_key\":\"");
    out.extend_from_slice(key.as_bytes()); // hex digits: nothing to escape
    out.extend_from_slice(b"\",\"lines\":[");
    for (i, line) in op.lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"qty\":");
        out.extend_from_slice(itoa::Buffer::new().format(line.qty()).as_bytes());
        out.extend_from_slice(b",\"sku\":");
        let _ = serde_json::to_writer(&mut *out, sku(batch, line));
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"op\":\"create_order\",\"payment\":{\"method\":\"");
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b"\"}}");
}

/// The result record of a success.
pub fn result_of(executed: &Executed) -> ResultRecord {
    let status = OrderBody::<String>::status(&executed.reply).as_u16();
    let mut r = ResultRecord {
        status: status.to_le(),
        flags: if executed.replayed { wire::RESULT_FLAG_REPLAYED } else { 0 },
        ..ResultRecord::default()
    };
    if let Reply::Order(o) = &executed.reply {
        r.order_status = wire::order_status_code(o.status.as_str());
        r.order_number = o.id.0.to_le();
        r.total = o.total.to_le();
        r.payment_number = o.payment.as_ref().map_or(0, |p| p.id.0).to_le();
    }
    r
}

/// The result record of a refusal.
pub fn result_of_error(e: &ApiError) -> ResultRecord {
    ResultRecord { status: e.status.as_u16().to_le(), error: wire::error_number(e.code), ..ResultRecord::default() }
}

pub async fn batch(call: Call) -> Result<Response, ApiError> {
    let parsed = requests(&call)?;
    let mut reqs = Vec::with_capacity(parsed.len());
    let mut results = vec![ResultRecord::default(); parsed.len()];
    let mut slots = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(req) => {
                reqs.push(req);
                slots.push(i);
            }
            Err(e) => results[i] = result_of_error(&e),
        }
    }
    let executed = if reqs.is_empty() { Vec::new() } else { call.engine.execute_batch(&call.merchant, reqs).await };
    let mut executed = executed.into_iter();
    for i in slots {
        results[i] = match executed.next() {
            Some(Ok(x)) => result_of(&x),
            Some(Err(e)) => result_of_error(&exec_error(e)),
            None => result_of_error(&ApiError::storage_unavailable("the batch ended early; nothing more was applied")),
        };
    }
    let mut res = Response::new(axum::body::Body::from(wire::encode_results(&results)));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    Ok(res)
}
