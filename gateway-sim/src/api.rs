//! The gateway's API (`/api/v1/payments...`): validation, idempotency, the state rules of
//! `store`, and the mode and latency every answer goes through.
//!
//! A handler does all its work before its first await after the body is read, under one
//! lock: a caller that gives up while the answer is delayed still finds what it asked for.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::settle;
use crate::state::{Mode, SimState};
use crate::stats::bump;
use crate::store::{
    CaptureMode, Decision, NewPayment, OpError, Prior, Status, Store, TxnView, INVALID_CARD, LIMIT_EXCEEDED,
};

/// Largest request body: a payment request is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
pub const MAX_AMOUNT: u64 = 1_000_000_000_000_000;
pub const MAX_ORDER_ID_CHARS: usize = 128;
pub const MAX_CARD_TYPE_CHARS: usize = 32;
pub const MAX_CALLBACK_URL_BYTES: usize = 2048;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The routes under `/api` (nested there by `app`).
pub(crate) fn routes(state: SimState) -> Router<SimState> {
    Router::new()
        .route("/v1/payments", post(create_payment).get(list_payments))
        .route("/v1/payments/{key}", get(get_payment))
        .route("/v1/payments/{key}/capture", post(capture))
        .route("/v1/payments/{key}/cancel", post(cancel))
        .route("/v1/payments/{key}/refund", post(refund))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state, gate))
}

/// Every `/api` call: `down` answers 503 at once; otherwise the handler does its work and
/// the answer waits out the latency of the mode the call arrived in.
async fn gate(State(state): State<SimState>, mut request: Request, next: Next) -> Response {
    let mode = state.mode();
    if mode == Mode::Down {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "gateway_unavailable", "the gateway is down")
            .into_response();
    }
    let Ok(_in_flight) = state.inner.in_flight.clone().try_acquire_owned() else {
        bump(&state.inner.stats.rejected_busy);
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "gateway_busy", "too many requests in flight")
            .into_response();
    };
    request.extensions_mut().insert(mode);
    let response = next.run(request).await;
    let config = state.config();
    let latency = state.draw_ms(if mode == Mode::Slow { config.slow_latency_ms } else { config.latency_ms });
    tokio::time::sleep(latency).await;
    response
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentRequest {
    order_id: String,
    card_type: String,
    /// Any JSON here, checked by hand: a type error from serde would quote the number.
    card_no: Value,
    amount: u64,
    callback_url: String,
    #[serde(default)]
    capture: CaptureMode,
}

/// The body of capture and refund.
#[derive(Deserialize)]
struct AmountRequest {
    #[serde(default)]
    amount: Option<u64>,
}

/// The answer to an accepted payment request (fields in the order the doc shows them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    transaction_key: &'a str,
    status: Status,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderList<'a> {
    order_id: &'a str,
    transactions: Vec<TxnView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    order_id: Option<String>,
}

async fn create_payment(
    State(state): State<SimState>,
    Extension(mode): Extension<Mode>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    bump(&inner.stats.payment_requests);
    let key = idempotency_key(&headers)?;
    let value = json_body(body)?;
    let request: PaymentRequest = typed(&value)?;
    let (card_last4, order_id, card_type, callback_url) = validate_payment(&request)?;

    // A failed request does nothing at all, a replay included: the caller learns nothing
    // from a 5xx and looks the order up (or retries) to find out.
    let rates = state.rates();
    if mode == Mode::Failing || !inner.dice.lock().random_bool(rates.success_rate) {
        bump(&inner.stats.failed_requests);
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "gateway_error",
            "the gateway failed; nothing was created",
        ));
    }

    let fingerprint = fingerprint("POST /api/v1/payments", &value);
    let mut store = inner.store.lock();
    if let Some(answer) = check_prior(&state, &store, key.as_deref(), &fingerprint)? {
        return Ok(answer);
    }
    // Drawn only for a transaction that is created, so a sequence of calls is repeatable
    // under one seed whatever replays it holds.
    let (decision, drop_callback, settle_delay) = {
        let mut dice = inner.dice.lock();
        let decision = if dice.random_bool(rates.approval_rate) {
            Decision::Approve
        } else if dice.random_range(0..3) < 2 {
            Decision::Decline(LIMIT_EXCEEDED)
        } else {
            Decision::Decline(INVALID_CARD)
        };
        let drop_callback = dice.random_bool(rates.drop_callbacks);
        let settle = inner.config.settle_ms;
        (decision, drop_callback, Duration::from_millis(dice.random_range(settle.min_ms..=settle.max_ms)))
    };
    let payment = NewPayment {
        order_id,
        card_type,
        card_last4,
        amount: request.amount,
        capture: request.capture,
        callback_url,
        decision,
        drop_callback,
    };
    let (index, view) = store.create(payment, now_unix_secs()).map_err(|e| op_error(&state, e))?;
    let answer = serde_json::to_vec(&Accepted { transaction_key: &view.transaction_key, status: view.status })
        .map_err(internal)?;
    if let Some(key) = key {
        store.remember(key, fingerprint, answer.clone());
    }
    drop(store);
    bump(&inner.stats.transactions);
    tokio::spawn(settle::after(state.clone(), index, settle_delay));
    tracing::info!(
        transaction = %view.transaction_key, order = %view.order_id, card_last4 = %view.card_last4,
        amount = view.amount, "payment accepted"
    );
    Ok(json_answer(answer, false))
}

/// Checks a request's fields; gives (card last 4, order id, card type, callback url).
fn validate_payment(request: &PaymentRequest) -> Result<(String, String, String, String), ApiError> {
    let order_chars = request.order_id.chars().count();
    if !(1..=MAX_ORDER_ID_CHARS).contains(&order_chars) || request.order_id.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "orderId must be 1..={MAX_ORDER_ID_CHARS} characters without control characters"
        )));
    }
    let type_chars = request.card_type.chars().count();
    if !(1..=MAX_CARD_TYPE_CHARS).contains(&type_chars)
        || request.card_type.trim().is_empty()
        || request.card_type.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "cardType must be 1..={MAX_CARD_TYPE_CHARS} characters, not blank, without control characters"
        )));
    }
    // Never echo the number: only its shape is described.
    let card_no = request.card_no.as_str().unwrap_or("");
    let digits: String = card_no.chars().filter(char::is_ascii_digit).collect();
    let only_digits_and_separators = card_no.chars().all(|c| c.is_ascii_digit() || c == '-' || c == ' ');
    if !only_digits_and_separators || !(12..=19).contains(&digits.len()) || card_no.len() > 64 {
        return Err(ApiError::invalid("cardNo must be 12..=19 digits (dashes and spaces allowed)"));
    }
    if request.amount > MAX_AMOUNT {
        return Err(ApiError::invalid(format!("amount must be 0..={MAX_AMOUNT}")));
    }
    check_callback_url(&request.callback_url)?;
    let card_last4 = digits[digits.len() - 4..].to_string();
    Ok((card_last4, request.order_id.clone(), request.card_type.clone(), request.callback_url.clone()))
}

fn check_callback_url(url: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "callbackUrl must be an absolute http:// URL of at most {MAX_CALLBACK_URL_BYTES} bytes"
        ))
    };
    if url.len() > MAX_CALLBACK_URL_BYTES {
        return Err(bad());
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    // The simulator speaks plain HTTP (it is built without TLS): an https URL would fail at
    // every callback, so it is refused up front.
    if parsed.scheme() != "http" || parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(())
}

async fn get_payment(
    State(state): State<SimState>,
    key: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::invalid(e.body_text()))?;
    let view = state.inner.store.lock().get(&key);
    let view = view.ok_or_else(|| ApiError::not_found(format!("no transaction {key}")))?;
    Ok(json_answer(serde_json::to_vec(&view).map_err(internal)?, false))
}

async fn list_payments(
    State(state): State<SimState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let order_id = query.order_id.filter(|o| !o.is_empty()).ok_or_else(|| ApiError::invalid("orderId is required"))?;
    let transactions = state.inner.store.lock().by_order(&order_id);
    let body = OrderList { order_id: &order_id, transactions };
    Ok(json_answer(serde_json::to_vec(&body).map_err(internal)?, false))
}

async fn capture(
    State(state): State<SimState>,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::invalid(e.body_text()))?;
    let idempotency = idempotency_key(&headers)?;
    let value = json_body(body)?;
    let request: AmountRequest = typed(&value)?;
    operate(&state, idempotency, &format!("POST /api/v1/payments/{key}/capture"), &value, |store| {
        let view = store.capture(&key, request.amount)?;
        bump(&state.inner.stats.captures);
        tracing::info!(transaction = %key, amount = view.captured_amount, "captured");
        Ok(view)
    })
}

async fn cancel(
    State(state): State<SimState>,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::invalid(e.body_text()))?;
    let idempotency = idempotency_key(&headers)?;
    let value = json_body(body)?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body of a cancel is empty or a JSON object"));
    }
    operate(&state, idempotency, &format!("POST /api/v1/payments/{key}/cancel"), &value, |store| {
        let (view, changed) = store.cancel(&key)?;
        if changed {
            bump(&state.inner.stats.cancelled);
            tracing::info!(transaction = %key, "cancelled");
        }
        Ok(view)
    })
}

async fn refund(
    State(state): State<SimState>,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::invalid(e.body_text()))?;
    let idempotency = idempotency_key(&headers)?;
    let value = json_body(body)?;
    let request: AmountRequest = typed(&value)?;
    operate(&state, idempotency, &format!("POST /api/v1/payments/{key}/refund"), &value, |store| {
        let view = store.refund(&key, request.amount)?;
        bump(&state.inner.stats.refunds);
        tracing::info!(transaction = %key, refunded = view.refunded_amount, "refunded");
        Ok(view)
    })
}

/// A capture, cancel or refund: replayed or refused by an earlier request with the same
/// key, or done, and its answer kept under the key. Errors are not kept: the same key can
/// be tried again once the transaction allows it.
fn operate(
    state: &SimState,
    key: Option<String>,
    request_line: &str,
    value: &Value,
    op: impl FnOnce(&mut Store) -> Result<TxnView, OpError>,
) -> Result<Response, ApiError> {
    let fingerprint = fingerprint(request_line, value);
    let mut store = state.inner.store.lock();
    if let Some(answer) = check_prior(state, &store, key.as_deref(), &fingerprint)? {
        return Ok(answer);
    }
    let view = op(&mut store).map_err(|e| op_error(state, e))?;
    let answer = serde_json::to_vec(&view).map_err(internal)?;
    if let Some(key) = key {
        store.remember(key, fingerprint, answer.clone());
    }
    Ok(json_answer(answer, false))
}

/// `Some(replay)`, a 422 when the key was used for another request, a 503 when no more keys
/// can be kept, or `None`: go ahead.
fn check_prior(
    state: &SimState,
    store: &Store,
    key: Option<&str>,
    fingerprint: &[u8; 32],
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    match store.prior(key, fingerprint) {
        Prior::Replay(answer) => {
            bump(&state.inner.stats.idempotent_replays);
            Ok(Some(json_answer(answer.to_vec(), true)))
        }
        Prior::Conflict => {
            bump(&state.inner.stats.key_conflicts);
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ))
        }
        Prior::New if !store.has_room_for_key() => {
            Err(op_error(state, OpError::Full("the gateway keeps no more idempotency keys")))
        }
        Prior::New => Ok(None),
    }
}

fn op_error(state: &SimState, e: OpError) -> ApiError {
    match e {
        OpError::NotFound => ApiError::not_found("no such transaction"),
        OpError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "invalid_state", message),
        OpError::InvalidAmount(message) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_amount", message),
        OpError::Full(message) => {
            bump(&state.inner.stats.rejected_full);
            tracing::warn!("{message}: answering 503");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "gateway_full", message)
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES || !printable {
        return Err(ApiError::invalid(format!(
            "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The body as JSON; an empty body is `{}` (capture, cancel and refund need none).
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "invalid_request" };
        ApiError::new(status, code, e.body_text())
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))
}

fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    T::deserialize(value).map_err(|e| ApiError::invalid(e.to_string()))
}

/// What "the same request" means for an Idempotency-Key: the same method and path and the
/// same JSON value (object key order and whitespace do not matter).
fn fingerprint(request_line: &str, value: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(request_line.as_bytes());
    hasher.update(b"\n");
    hash_canonical(value, &mut hasher);
    hasher.finalize().into()
}

/// Feeds `value` with object keys sorted, whatever map type serde_json was built with.
fn hash_canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            hasher.update(b"{");
            for (name, field) in entries {
                hash_canonical(&Value::String(name.clone()), hasher);
                hasher.update(b":");
                hash_canonical(field, hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                hash_canonical(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

fn json_answer(body: Vec<u8>, replayed: bool) -> Response {
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

fn now_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}
