//! Handlers: JSON body -> `surge_core::Command`, engine, reply -> status + JSON. The status
//! of a success is a function of the route and the reply only, so an idempotent replay
//! answers with the same status and body as the first time.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;
use surge_core::ids::is_valid_id;
use surge_core::state::Merchant;
use surge_core::{Command, PaymentMethod, Reply, Request, UnixMs};

use crate::auth;
use crate::body::{
    batch_command, BulkBody, CancelBody, CaptureBody, CreditBody, HoldBody, ItemBody, Op, OrderBody, PaymentBody,
    QueueBody, RefundBody, ReleaseBody, RestockBody, StatusOf, TokenBody,
};
use crate::cold;
use crate::dto::{self, to_vec, Account, Hold, Item, Items, Order, Payment, Points, Queue, Token, TrialBalanceDto};
use crate::engine::{Engine, ExecError, Executed, StorageError};
use crate::error::ApiError;
use crate::extract::{AdminCall, Call};
use crate::openapi::BatchReply;
use crate::AppState;

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    // Built directly: `(status, Vec<u8>).into_response()` would first set an
    // application/octet-stream content type, only for it to be replaced here.
    let mut res = Response::new(axum::body::Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    json_bytes(status, dto::to_vec(body))
}

pub(crate) fn exec_error(e: ExecError) -> ApiError {
    match e {
        ExecError::Core(e) => e.into(),
        ExecError::Storage(StorageError::NotOwner { partition, owner }) => {
            let detail = StorageError::NotOwner { partition, owner: owner.clone() }.to_string();
            ApiError::partition_moving(partition, owner, detail)
        }
        ExecError::Storage(detail) => ApiError::storage_unavailable(detail),
    }
}

fn reply_response(status: StatusCode, executed: &Executed) -> Response {
    let mut res = json_bytes(status, dto::reply_to_vec(&executed.reply));
    if executed.replayed {
        res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

async fn execute(
    call: &Call,
    command: Command,
    idempotency: Option<surge_core::Idempotency>,
    status: impl Fn(&Reply) -> StatusCode,
) -> Result<Response, ApiError> {
    let req = Request { merchant: call.merchant.to_string(), idempotency, command };
    let executed = call.engine.execute(req).await.map_err(exec_error)?;
    Ok(reply_response(status(&executed.reply), &executed))
}

/// Runs `f` on the caller's merchant, after everything before it is durable.
pub(crate) async fn read<F>(engine: &Engine, merchant: Arc<str>, f: F) -> Result<Response, ApiError>
where
    F: FnOnce(&Merchant) -> Result<Vec<u8>, ApiError> + Send + 'static,
{
    let m = merchant.clone();
    let result = engine
        .read(&merchant, move |shard| match shard.merchant(&m) {
            Some(merchant) => f(merchant),
            None => Err(ApiError::not_found("merchant not found")),
        })
        .await
        .map_err(exec_error)?;
    Ok(json_bytes(StatusCode::OK, result?))
}

/// A GET of one resource: the merchant's view of it, rendered through its DTO, or 404.
async fn read_one<V: 'static>(
    call: &Call,
    what: &'static str,
    view: impl FnOnce(&Merchant) -> Option<V> + Send + 'static,
    render: fn(&V) -> Vec<u8>,
) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| {
        view(m).map(|v| render(&v)).ok_or_else(|| ApiError::not_found(format!("{what} not found")))
    })
    .await
}

/// A GET of a numbered resource (`hold_{n}`, `ord_{n}`, `pay_{n}`): its JSON, or `Err` with
/// when it was archived (at the latest); 404 if it never existed.
async fn read_numbered<V: 'static>(
    engine: &Engine,
    merchant: &Arc<str>,
    what: &'static str,
    id: String,
    view: fn(&Merchant, &str) -> Option<V>,
    render: fn(&V) -> Vec<u8>,
) -> Result<Result<Response, UnixMs>, ApiError> {
    let owner = merchant.clone();
    let read = engine.read(merchant, move |shard| {
        let merchant = owner;
        let m = shard.merchant(&merchant).ok_or_else(|| ApiError::not_found("merchant not found"))?;
        match view(m, &id) {
            Some(v) => Ok(Ok(render(&v))),
            None => m.archived_at(&id).map(Err).ok_or_else(|| ApiError::not_found(format!("{what} not found"))),
        }
    });
    Ok(read.await.map_err(exec_error)??.map(|json| json_bytes(StatusCode::OK, json)))
}

/// A GET of an order or payment: from memory, else from the cold store once archived
/// (`cold.rs`), else 410 `archived`.
/// Also the admin look-up's (`lookup.rs`), which names the merchant instead of a key.
pub(crate) async fn read_archivable<V: 'static>(
    state: &AppState,
    engine: &Engine,
    merchant: &Arc<str>,
    kind: cold::Archived,
    id: String,
    view: fn(&Merchant, &str) -> Option<V>,
    render: fn(&V) -> Vec<u8>,
) -> Result<Response, ApiError> {
    match read_numbered(engine, merchant, kind.what(), id.clone(), view, render).await? {
        Ok(live) => Ok(live),
        Err(archived_at_ms) => {
            let json = cold::answer(state.cold_store(), merchant, kind, &id, archived_at_ms).await?;
            Ok(json_bytes(StatusCode::OK, json))
        }
    }
}

// ---- merchants ----

#[derive(Deserialize, utoipa::ToSchema)]
pub struct MerchantBody {
    #[schema(schema_with = crate::openapi::schema::id)]
    pub id: String,
    #[schema(schema_with = crate::openapi::schema::name)]
    pub name: String,
    /// ISO 4217, e.g. KRW.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

#[utoipa::path(
    post, path = "/v1/merchants", tag = "admin", security(("admin" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    request_body(content = MerchantBody, example = json!({"id": "acme", "name": "Acme Tickets", "currency": "KRW"})),
    responses(
        (status = 201, description = "created; `api_key` is shown this once", body = dto::Merchant, links(
            ("admin_trial_balance" = (operation_id = "admin_trial_balance", parameters(("merchant_id" = "$response.body#/id")))),
        )),
        (status = 409, description = "invalid_state: the merchant exists"),
    )
)]
pub async fn create_merchant(call: AdminCall) -> Result<Response, ApiError> {
    let body: MerchantBody = crate::extract::parse_json(&call.headers, &call.body)?;
    let idempotency = crate::extract::idempotency(&call.method, &call.path, &call.headers, &call.body, false, None)?;
    new_merchant(&call.engine, body, idempotency).await
}

/// Creates a merchant with a new API key (shown in this answer only); shared by
/// `POST /v1/merchants` and the console.
pub async fn new_merchant(
    engine: &crate::engine::Engine,
    body: MerchantBody,
    idempotency: Option<surge_core::command::Idempotency>,
) -> Result<Response, ApiError> {
    let api_key = auth::new_api_key();
    let hash = auth::sha256(api_key.as_bytes());
    let req = Request {
        merchant: body.id.clone(),
        idempotency,
        command: Command::CreateMerchant { name: body.name, currency: body.currency, api_key_hash: hash },
    };
    let executed = engine.execute(req).await.map_err(|e| {
        let mut error = exec_error(e);
        if error.code == "invalid_state" {
            error.detail = format!("merchant {} already exists", body.id); // the only state it refuses in
        }
        error
    })?;
    match (&executed.reply, executed.replayed) {
        (Reply::Merchant(m), false) => {
            engine.register_key(hash, &m.id);
            Ok(json(StatusCode::CREATED, &dto::merchant(m, Some(&api_key))))
        }
        _ => Ok(reply_response(StatusCode::CREATED, &executed)),
    }
}

// ---- merchant commands: one body type per route (`body.rs`) ----

/// Runs a route whose body (`B`) maps to its command: `target` is its path parameter.
async fn route<B: Op + DeserializeOwned>(call: Call, target: String, required_key: bool) -> Result<Response, ApiError> {
    let body: B = call.json()?;
    run(call, body, target, required_key).await
}

async fn run<B: Op>(call: Call, body: B, target: String, required_key: bool) -> Result<Response, ApiError> {
    let idempotency = payment_idempotency(&call, body.pays_by_card(), required_key)?;
    let command = body.command(target, &call)?;
    execute(&call, command, idempotency, B::status).await
}

#[utoipa::path(
    put, path = "/v1/items/{sku}", tag = "items",
    params(("sku" = String, Path, description = "the item's sku", example = "sku-1"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    request_body(content = ItemBody, example = json!({"name": "Concert ticket", "price": 50000, "stock": 100})),
    responses(
        (status = 200, description = "updated", body = Item, links(("get_item" = (operation_id = "get_item", parameters(("sku" = "$response.body#/sku")))), ("restock" = (operation_id = "restock", parameters(("sku" = "$response.body#/sku")), request_body = json!({"qty": 100}))))),
        (status = 201, description = "created", body = Item, links(("get_item" = (operation_id = "get_item", parameters(("sku" = "$response.body#/sku")))), ("restock" = (operation_id = "restock", parameters(("sku" = "$response.body#/sku")), request_body = json!({"qty": 100}))))),
        (status = 404, description = "not_found: the waiting room `queue_id`"),
        (status = 409, description = "invalid_state"),
    )
)]
pub async fn put_item(Path(sku): Path<String>, call: Call) -> Result<Response, ApiError> {
    route::<ItemBody>(call, sku, false).await
}

#[utoipa::path(
    post, path = "/v1/items/bulk", tag = "items",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    request_body(content = BulkBody, example = json!({"items": [{"sku": "sku-2", "name": "Poster", "price": 15000, "stock": 500}]})),
    responses(
        (status = 200, description = "how many items were created and updated", body = Items, links(("get_item" = (operation_id = "get_item", parameters(("sku" = "$request.body#/items/0/sku")))), ("restock" = (operation_id = "restock", parameters(("sku" = "$request.body#/items/0/sku")), request_body = json!({"qty": 100}))))),
        (status = 404, description = "not_found: a waiting room `queue_id`"),
        (status = 409, description = "invalid_state"),
    )
)]
pub async fn put_items(call: Call) -> Result<Response, ApiError> {
    route::<BulkBody>(call, String::new(), false).await
}

#[utoipa::path(
    post, path = "/v1/items/{sku}/restock", tag = "items",
    params(("sku" = String, Path, description = "the item's sku", example = "sku-1"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    request_body(content = RestockBody, example = json!({"qty": 10})),
    responses(
        (status = 400, description = "invalid_request: also when the stock would pass the largest amount (10^15)"),
        (status = 200, description = "stock added", body = Item, links(("get_item" = (operation_id = "get_item", parameters(("sku" = "$response.body#/sku")))), ("restock" = (operation_id = "restock", parameters(("sku" = "$response.body#/sku")), request_body = json!({"qty": 100}))), ("create_hold" = (operation_id = "create_hold", request_body = json!({"customer_id": "c-1", "lines": [{"sku": "$response.body#/sku", "qty": 1}]}))), ("create_order" = (operation_id = "create_order", request_body = json!({"customer_id": "c-1", "lines": [{"sku": "$response.body#/sku", "qty": 1}], "payment": {"method": "points", "capture": "manual"}}))), ("create_order_by_card" = (operation_id = "create_order", request_body = json!({"customer_id": "c-1", "lines": [{"sku": "$response.body#/sku", "qty": 1}], "payment": {"method": "card", "card": {"number": "4111-1111-1111-1111", "type": "VISA"}, "capture": "manual"}}))))),
        (status = 404, description = "not_found"),
    )
)]
pub async fn restock(Path(sku): Path<String>, call: Call) -> Result<Response, ApiError> {
    route::<RestockBody>(call, sku, false).await
}

#[utoipa::path(
    get, path = "/v1/items/{sku}", tag = "items",
    params(("sku" = String, Path, description = "the item's sku", example = "sku-1")),
    responses((status = 200, description = "the item", body = Item), (status = 404, description = "not_found"))
)]
pub async fn get_item(Path(sku): Path<String>, call: Call) -> Result<Response, ApiError> {
    read_one(&call, "item", move |m| m.item_view(&sku), |v| to_vec(&dto::item(v))).await
}

#[utoipa::path(
    post, path = "/v1/holds", tag = "holds",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request"), ("Queue-Token" = Option<String>, Header, description = "An active token of the waiting room an item sits behind")),
    request_body(content = HoldBody, example = json!({"customer_id": "c-1", "lines": [{"sku": "sku-1", "qty": 1}], "ttl_seconds": 300})),
    responses(
        (status = 201, description = "stock reserved for `ttl_seconds`, all lines or none", body = Hold, links(("get_hold" = (operation_id = "get_hold", parameters(("id" = "$response.body#/id")))), ("release_hold" = (operation_id = "release_hold", parameters(("id" = "$response.body#/id")))), ("create_order" = (operation_id = "create_order", request_body = json!({"customer_id": "$response.body#/customer_id", "hold_id": "$response.body#/id", "payment": {"method": "none"}}))))),
        (status = 403, description = "queue_token_required: an item sits behind a waiting room"),
        (status = 404, description = "not_found: an item"),
        (status = 409, description = "insufficient_stock"),
    )
)]
pub async fn create_hold(call: Call) -> Result<Response, ApiError> {
    let b: HoldBody = call.json()?;
    let command = b.command_with(call.queue_token()?);
    let idempotency = call.idempotency(false)?;
    execute(&call, command, idempotency, <HoldBody<String> as Op>::status).await
}

#[utoipa::path(
    post, path = "/v1/holds/{id}/release", tag = "holds",
    params(("id" = String, Path, description = "the hold's id (`hold_1`)", example = "hold_1"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    responses(
        (status = 200, description = "released", body = Hold, links(("get_hold" = (operation_id = "get_hold", parameters(("id" = "$response.body#/id")))), ("release_hold" = (operation_id = "release_hold", parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when)"),
        (status = 409, description = "invalid_state: not held"),
    )
)]
pub async fn release_hold(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    run(call, ReleaseBody::default(), id, false).await
}

#[utoipa::path(
    get, path = "/v1/holds/{id}", tag = "holds",
    params(("id" = String, Path, description = "the hold's id (`hold_1`)", example = "hold_1")),
    responses((status = 200, description = "the hold", body = Hold), (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when); holds are not in the cold store"))
)]
pub async fn get_hold(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    // Holds are not in the cold store: an archived one is 410.
    read_numbered(&call.engine, &call.merchant, "hold", id, Merchant::hold_view, |v| to_vec(&dto::hold(v)))
        .await?
        .map_err(|archived_at_ms| ApiError::archived("hold", archived_at_ms))
}

/// The idempotency of a request: keyed when its body carries a card number.
fn payment_idempotency(
    call: &Call,
    pays_by_card: bool,
    required: bool,
) -> Result<Option<surge_core::Idempotency>, ApiError> {
    match &call.gateway {
        Some(host) if pays_by_card => call.card_idempotency(required, host),
        _ => call.idempotency(required),
    }
}

#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = String, Header, description = "Required: replays the first answer to a retry with the same key and request"), ("Queue-Token" = Option<String>, Header, description = "An active token of the waiting room an item sits behind")),
    request_body(content = OrderBody, example = json!({"customer_id": "c-1", "lines": [{"sku": "sku-1", "qty": 1}], "payment": {"method": "points"}})),
    responses(
        (status = 400, description = "invalid_request: also when the total would pass the largest amount (10^15), or the hold is another customer's"),
        (status = 201, description = "created: paid (points), or awaiting_payment (none)", body = Order, links(("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))), ("cancel_order" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/id")))), ("pay_order" = (operation_id = "pay_order", parameters(("id" = "$response.body#/id")))), ("pay_order_by_card" = (operation_id = "pay_order", parameters(("id" = "$response.body#/id")), request_body = json!({"method": "card", "card": {"number": "4111-1111-1111-1111", "type": "VISA"}, "capture": "manual"}))), ("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/payment/id")))), ("capture_payment" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/payment/id")))), ("refund_payment" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/payment/id")))))),
        (status = 202, description = "card payment accepted: the order is pending_payment until the gateway decides", body = Order, links(("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))), ("cancel_order" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/id")))), ("pay_order" = (operation_id = "pay_order", parameters(("id" = "$response.body#/id")))), ("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/payment/id")))), ("capture_payment" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/payment/id")))), ("refund_payment" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/payment/id")))))),
        (status = 402, description = "insufficient_points"),
        (status = 403, description = "queue_token_required: an item sits behind a waiting room"),
        (status = 404, description = "not_found: an item or the hold"),
        (status = 409, description = "insufficient_stock, invalid_state (the hold)"),
        (status = 503, description = "payment_gateway_unavailable: a card payment without a configured gateway"),
    )
)]
pub async fn create_order(call: Call) -> Result<Response, ApiError> {
    let b: OrderBody = call.json()?;
    let idempotency = payment_idempotency(&call, b.method() == PaymentMethod::Card, true)?;
    let cmd = b.command_with(call.queue_token()?, &call)?;
    execute(&call, cmd, idempotency, OrderBody::<IgnoredAny>::status).await
}

#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "the order's id (`ord_1`)", example = "ord_1")),
    responses((status = 200, description = "the order; once archived, as it was, from the cold store (a server with `--mariadb-url`) with `archived_at`", body = Order), (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when), and no cold store shows it (none configured, not relayed yet, or unreachable)"))
)]
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> Result<Response, ApiError> {
    read_archivable(
        &state,
        &call.engine,
        &call.merchant,
        cold::Archived::Order,
        id,
        Merchant::order_view,
        dto::order_to_vec,
    )
    .await
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "the order's id (`ord_1`)", example = "ord_1"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    responses(
        (status = 200, description = "cancelled: stock released, a capture refunded", body = Order, links(("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))), ("cancel_order" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/id")))), ("pay_order" = (operation_id = "pay_order", parameters(("id" = "$response.body#/id")))), ("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/payment/id")))), ("capture_payment" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/payment/id")))), ("refund_payment" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/payment/id")))))),
        (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when)"),
        (status = 409, description = "invalid_state"),
    )
)]
pub async fn cancel_order(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    run(call, CancelBody::default(), id, false).await
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/payments", tag = "orders",
    params(("id" = String, Path, description = "the order's id (`ord_1`)", example = "ord_1"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    request_body(content = PaymentBody, example = json!({"method": "points", "capture": "manual"})),
    responses(
        (status = 200, description = "paid with points", body = Order, links(("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))), ("cancel_order" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/id")))), ("pay_order" = (operation_id = "pay_order", parameters(("id" = "$response.body#/id")))), ("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/payment/id")))), ("capture_payment" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/payment/id")))), ("refund_payment" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/payment/id")))))),
        (status = 202, description = "card payment accepted: pending_payment until the gateway decides", body = Order, links(("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))), ("cancel_order" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/id")))), ("pay_order" = (operation_id = "pay_order", parameters(("id" = "$response.body#/id")))), ("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/payment/id")))), ("capture_payment" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/payment/id")))), ("refund_payment" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/payment/id")))))),
        (status = 402, description = "insufficient_points"),
        (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when)"),
        (status = 409, description = "invalid_state: not awaiting payment"),
        (status = 503, description = "payment_gateway_unavailable: a card payment without a configured gateway"),
    )
)]
pub async fn pay_order(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    route::<PaymentBody>(call, id, false).await
}

#[utoipa::path(
    post, path = "/v1/payments/{id}/capture", tag = "payments",
    params(("id" = String, Path, description = "the payment's id (`pay_1`)", example = "pay_1"), ("Idempotency-Key" = String, Header, description = "Required: replays the first answer to a retry with the same key and request")),
    request_body(content = CaptureBody, description = "optional: an empty body captures all of it"),
    responses(
        (status = 200, description = "captured (a part once, the rest released)", body = Payment, links(("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/id")))), ("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/order_id")))), ("capture_payment" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/id")))), ("refund_payment" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when)"),
        (status = 400, description = "invalid_request: also when `amount` is more than is authorized"),
        (status = 409, description = "invalid_state: not authorized"),
    )
)]
pub async fn capture_payment(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: CaptureBody = call.json_or_default()?;
    run(call, b, id, true).await
}

#[utoipa::path(
    post, path = "/v1/payments/{id}/refund", tag = "payments",
    params(("id" = String, Path, description = "the payment's id (`pay_1`)", example = "pay_1"), ("Idempotency-Key" = String, Header, description = "Required: replays the first answer to a retry with the same key and request")),
    request_body(content = RefundBody, description = "optional: an empty body refunds all that is captured"),
    responses(
        (status = 200, description = "refunded", body = Payment, links(("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/id")))), ("get_order" = (operation_id = "get_order", parameters(("id" = "$response.body#/order_id")))), ("capture_payment" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/id")))), ("refund_payment" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/id")))))),
        (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when)"),
        (status = 400, description = "invalid_request: also when `amount` is more than is left to refund"),
        (status = 409, description = "invalid_state: nothing captured to refund"),
    )
)]
pub async fn refund_payment(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: RefundBody = call.json_or_default()?;
    run(call, b, id, true).await
}

#[utoipa::path(
    get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "the payment's id (`pay_1`)", example = "pay_1")),
    responses((status = 200, description = "the payment; once archived, as it was, from the cold store (a server with `--mariadb-url`) with `archived_at`", body = Payment), (status = 404, description = "not_found"), (status = 410, description = "archived: settled and older than the retention (`archived_at` says when), and no cold store shows it (none configured, not relayed yet, or unreachable)"))
)]
pub async fn get_payment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> Result<Response, ApiError> {
    let render = |v: &_| to_vec(&dto::payment(v));
    read_archivable(&state, &call.engine, &call.merchant, cold::Archived::Payment, id, Merchant::payment_view, render)
        .await
}

// ---- points and ledger ----

#[utoipa::path(
    post, path = "/v1/customers/{id}/points/credit", tag = "points",
    params(("id" = String, Path, description = "the customer's id", example = "c-1"), ("Idempotency-Key" = String, Header, description = "Required: replays the first answer to a retry with the same key and request")),
    request_body(content = CreditBody, example = json!({"amount": 200000, "reason": "welcome"})),
    responses(
        (status = 400, description = "invalid_request: also when the balance would pass the largest amount"),
        (status = 200, description = "the new balance", body = Points, links(
            ("get_points" = (operation_id = "get_points", parameters(("id" = "$response.body#/customer_id")))),
            ("get_account" = (operation_id = "get_account", parameters(("account" = "points:issued")))),
        )),
    )
)]
pub async fn credit_points(Path(customer): Path<String>, call: Call) -> Result<Response, ApiError> {
    route::<CreditBody>(call, customer, true).await
}

#[utoipa::path(
    get, path = "/v1/customers/{id}/points", tag = "points",
    params(("id" = String, Path, description = "the customer's id", example = "c-1")),
    responses((status = 200, description = "the balance (0 for a customer never credited)", body = Points))
)]
pub async fn get_points(Path(customer): Path<String>, call: Call) -> Result<Response, ApiError> {
    if !is_valid_id(&customer) {
        return Err(ApiError::invalid("customer id: must be 1..=64 characters of [A-Za-z0-9_.:-]"));
    }
    read(&call.engine, call.merchant.clone(), move |m| Ok(to_vec(&dto::points(&m.points_view(&customer))))).await
}

#[utoipa::path(
    get, path = "/v1/ledger/accounts/{account}", tag = "ledger",
    params(("account" = String, Path, description = "points:issued, points:authorized, gateway:clearing, gateway:authorized, sales:revenue, refunds, or customer:{id}:points", example = "customer:c-1:points")),
    responses((status = 200, description = "the account's totals", body = Account), (status = 404, description = "not_found"))
)]
pub async fn get_account(Path(account): Path<String>, call: Call) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| {
        m.account_view(&account)
            .map(|a| to_vec(&dto::account(&a)))
            .ok_or_else(|| ApiError::not_found("account not found"))
    })
    .await
}

#[utoipa::path(
    get, path = "/v1/ledger/trial-balance", tag = "ledger",
    responses((status = 200, description = "sums of every account", body = TrialBalanceDto))
)]
pub async fn trial_balance(call: Call) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| Ok(to_vec(&dto::trial_balance(&m.trial_balance())))).await
}

// ---- waiting rooms ----

#[utoipa::path(
    put, path = "/v1/queues/{id}", tag = "queues",
    params(("id" = String, Path, description = "the waiting room's id", example = "q-1"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    request_body(content = QueueBody, example = json!({"max_active": 100, "active_ttl_seconds": 600})),
    responses(
        (status = 200, description = "created or changed", body = Queue, links(
            ("get_queue" = (operation_id = "get_queue", parameters(("id" = "$response.body#/id")))),
            ("issue_token" = (operation_id = "issue_token", parameters(("id" = "$response.body#/id")))),
        )),
    )
)]
pub async fn put_queue(Path(queue): Path<String>, call: Call) -> Result<Response, ApiError> {
    route::<QueueBody>(call, queue, false).await
}

#[utoipa::path(
    get, path = "/v1/queues/{id}", tag = "queues",
    params(("id" = String, Path, description = "the waiting room's id", example = "q-1")),
    responses((status = 200, description = "the waiting room", body = Queue), (status = 404, description = "not_found"))
)]
pub async fn get_queue(Path(queue): Path<String>, call: Call) -> Result<Response, ApiError> {
    read_one(&call, "queue", move |m| m.queue_view(&queue), |v| to_vec(&dto::queue(v))).await
}

#[utoipa::path(
    post, path = "/v1/queues/{id}/tokens", tag = "queues",
    params(("id" = String, Path, description = "the waiting room's id", example = "q-1"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry with the same key and request")),
    request_body(content = TokenBody, example = json!({"customer_id": "c-1"})),
    responses(
        (status = 201, description = "joined: waiting, or active at once", body = Token, links(
            ("get_token" = (operation_id = "get_token", parameters(("id" = "$response.body#/queue_id"), ("token" = "$response.body#/token")))),
        )),
        (status = 404, description = "not_found: the waiting room"),
    )
)]
pub async fn issue_token(Path(queue): Path<String>, call: Call) -> Result<Response, ApiError> {
    route::<TokenBody>(call, queue, false).await
}

#[utoipa::path(
    get, path = "/v1/queues/{id}/tokens/{token}", tag = "queues",
    params(("id" = String, Path, description = "the waiting room's id", example = "q-1"), ("token" = String, Path, description = "the token")),
    responses((status = 200, description = "the token's status and position", body = Token), (status = 404, description = "not_found"), (status = 410, description = "archived: expired and older than the retention (`archived_at` says when)"))
)]
pub async fn get_token(Path((queue, token)): Path<(String, String)>, call: Call) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| match m.token_view(&queue, &token) {
        Some(t) => Ok(to_vec(&dto::token(&t))),
        None => Err(match m.token_archived_at(&queue, &token) {
            Some(at) => ApiError::archived("token", at),
            None => ApiError::not_found("token not found"),
        }),
    })
    .await
}

// ---- batch ----

/// Most operations in one `POST /v1/batch`.
pub const BATCH_OPS_MAX: usize = surge_core::limits::BATCH_OPS_MAX;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct BatchBody {
    #[schema(schema_with = crate::openapi::schema::batch_ops)]
    ops: Vec<Value>,
}

/// One batch operation: `op` names the route, the other fields are that route's body
/// (`body.rs`) with its path parameter as a field of its own, and an optional
/// `idempotency_key`.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum BatchOp {
    PutItem(ItemBody),
    Restock(RestockBody),
    Hold(HoldBody<String>),
    Release(ReleaseBody),
    CreateOrder(OrderBody<String>),
    CancelOrder(CancelBody),
    PayOrder(PaymentBody),
    Capture(CaptureBody),
    Refund(RefundBody),
    CreditPoints(CreditBody),
    IssueToken(TokenBody),
}

impl BatchOp {
    fn pays_by_card(&self) -> bool {
        match self {
            BatchOp::CreateOrder(b) => b.pays_by_card(),
            BatchOp::PayOrder(b) => b.pays_by_card(),
            _ => false,
        }
    }

    /// The command and the status function of its route.
    fn command(self, index: usize, call: &Call) -> Result<(Command, StatusOf), ApiError> {
        match self {
            BatchOp::PutItem(b) => batch_command(b, index, call),
            BatchOp::Restock(b) => batch_command(b, index, call),
            BatchOp::Hold(b) => batch_command(b, index, call),
            BatchOp::Release(b) => batch_command(b, index, call),
            BatchOp::CreateOrder(b) => batch_command(b, index, call),
            BatchOp::CancelOrder(b) => batch_command(b, index, call),
            BatchOp::PayOrder(b) => batch_command(b, index, call),
            BatchOp::Capture(b) => batch_command(b, index, call),
            BatchOp::Refund(b) => batch_command(b, index, call),
            BatchOp::CreditPoints(b) => batch_command(b, index, call),
            BatchOp::IssueToken(b) => batch_command(b, index, call),
        }
    }
}

/// One op's answer in a batch reply: the status and body its own route would give (a
/// `serde_json::Value` tree per op, built and dropped again, was once a quarter of the batch
/// route's CPU).
enum BatchOutcome<'a> {
    Reply { status: StatusCode, reply: &'a Reply, replayed: bool },
    Problem(ApiError),
}

/// `{"results":[{"status":201,"body":{...}},{"status":409,"body":{...},"replayed":true},...]}`,
/// written directly so that order bodies take `order_json`'s path (`dto::write_reply`).
fn batch_reply_json(outcomes: &[BatchOutcome<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + outcomes.len() * 700);
    out.extend_from_slice(b"{\"results\":[");
    for (i, outcome) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (status, replayed) = match outcome {
            BatchOutcome::Reply { status, replayed, .. } => (*status, *replayed),
            BatchOutcome::Problem(e) => (e.status, false),
        };
        out.extend_from_slice(b"{\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(status.as_u16()).as_bytes());
        out.extend_from_slice(b",\"body\":");
        match outcome {
            BatchOutcome::Reply { reply, .. } => dto::write_reply(&mut out, reply),
            // Writing into a Vec cannot fail.
            BatchOutcome::Problem(e) => {
                let _ = serde_json::to_writer(&mut out, &e.body());
            }
        }
        if replayed {
            out.extend_from_slice(b",\"replayed\":true");
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// Types one op. The hot op, `create_order`, is typed from its fields directly: through the
/// `op`-tagged enum serde first copies every field of the op into a buffer of its own. Any
/// failure goes through the enum, so the error is the enum's.
fn batch_op(op: &Value) -> Result<BatchOp, serde_json::Error> {
    if op.get("op").and_then(Value::as_str) == Some("create_order") {
        if let Ok(order) = OrderBody::<String>::deserialize(op) {
            return Ok(BatchOp::CreateOrder(order));
        }
    }
    BatchOp::deserialize(op)
}

/// Parses one op into a request (with its route's status function), or the op's error.
fn batch_request(call: &Call, index: usize, op: &Value) -> Result<(Request, StatusOf), ApiError> {
    let key = match op.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(ApiError::invalid(format!("ops[{index}].idempotency_key: must be a string"))),
    };
    // Untracked first, as for single requests: only a failing op needs its field path.
    let parsed = match batch_op(op) {
        Ok(parsed) => parsed,
        Err(_) => serde_path_to_error::deserialize::<_, BatchOp>(op).map_err(|e| {
            // Inside the op-tagged enum serde buffers the fields, and the path stops at ".".
            let path = match e.path().to_string() {
                p if p.is_empty() || p == "." => String::new(),
                p => format!(".{p}"),
            };
            ApiError::invalid(format!("ops[{index}]{path}: {}", e.into_inner()))
        })?,
    };
    let pays_by_card = parsed.pays_by_card();
    let (command, status) = parsed.command(index, call)?;
    let secret = call.gateway.as_deref().filter(|_| pays_by_card).map(|host| host.card_key.fingerprint_key());
    let idempotency = key.map(|key| {
        // The fingerprint covers the op itself: the same op in another batch replays.
        let bytes = serde_json::to_vec(op).unwrap_or_default();
        let fingerprint = crate::extract::fingerprint(&[b"batch\n".as_slice(), &bytes], secret);
        surge_core::Idempotency { key, fingerprint }
    });
    Ok((Request { merchant: call.merchant.to_string(), idempotency, command }, status))
}

/// The first op that is not an object with a string `op`: such a batch is malformed, 400.
fn malformed_op(ops: &[Value]) -> Option<usize> {
    ops.iter().position(|op| !op.get("op").is_some_and(Value::is_string))
}

/// One batch op as a request with its route's status function, or the op's 400.
pub type OpRequest = Result<(Request, StatusOf), ApiError>;

/// The ops of a JSON batch as requests (with their routes' status functions), or each op's
/// 400; `Err` when the body as a whole is refused (nothing runs).
pub fn json_batch_requests(call: &Call) -> Result<Vec<OpRequest>, ApiError> {
    let b: BatchBody = call.json().map_err(|mut e| {
        // This route takes a second media type; the generic 415 names only JSON.
        if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            e.detail = format!("Content-Type must be application/json or {}", crate::batch_bin::MEDIA_TYPE);
        }
        e
    })?;
    if b.ops.is_empty() || b.ops.len() > BATCH_OPS_MAX {
        return Err(ApiError::invalid(format!("ops: must hold 1..={BATCH_OPS_MAX} operations")).with("field", "ops"));
    }
    if let Some(i) = malformed_op(&b.ops) {
        let detail = format!("ops[{i}]: must be an object with a string `op`");
        return Err(ApiError::invalid(detail).with("field", format!("ops[{i}]")));
    }
    Ok(b.ops.iter().enumerate().map(|(i, op)| batch_request(call, i, op)).collect())
}

#[utoipa::path(
    post, path = "/v1/batch", tag = "batch",
    request_body(
        content = BatchBody,
        description = "JSON ops; or a binary batch of create_order ops (application/vnd.surge.batch, docs/batch-format.md), answered with binary result records",
        example = json!({"ops": [
            {"op": "restock", "sku": "sku-1", "qty": 5},
            {"op": "create_order", "customer_id": "c-2", "lines": [{"sku": "sku-1", "qty": 1}], "payment": {"method": "none"}, "idempotency_key": "c-2-first"},
        ]}),
    ),
    responses((status = 200, description = "one result per op, in order: the status and body its route would answer (for a binary batch: one result record per op, application/vnd.surge.batch)", body = BatchReply))
)]
pub async fn batch(call: Call) -> Result<Response, ApiError> {
    // Cluster mode: a batch is one merchant's, so one partition's; forwarded whole.
    if let Some(e) = call.engine.owned_elsewhere(&call.merchant) {
        return Err(exec_error(e));
    }
    if crate::batch_bin::is_binary(&call.headers) {
        return crate::batch_bin::batch(call).await;
    }
    // Per op: its parse error, or its route's status function and a place in `reqs`.
    let parsed_ops = json_batch_requests(&call)?;
    let mut parsed: Vec<Result<StatusOf, ApiError>> = Vec::with_capacity(parsed_ops.len());
    let mut reqs = Vec::with_capacity(parsed_ops.len());
    for op in parsed_ops {
        parsed.push(op.map(|(req, status)| {
            reqs.push(req);
            status
        }));
    }
    let executed = if reqs.is_empty() { Vec::new() } else { call.engine.execute_batch(&call.merchant, reqs).await };
    let mut executed_iter = executed.iter();
    let mut outcomes = Vec::with_capacity(parsed.len());
    for op in parsed {
        outcomes.push(match op {
            Err(e) => BatchOutcome::Problem(e),
            Ok(status) => match executed_iter.next() {
                Some(Ok(x)) => BatchOutcome::Reply { status: status(&x.reply), reply: &x.reply, replayed: x.replayed },
                Some(Err(e)) => BatchOutcome::Problem(exec_error(e.clone())),
                None => BatchOutcome::Problem(ApiError::storage_unavailable(
                    "the batch ended early; nothing more was applied",
                )),
            },
        });
    }
    debug_assert!(executed_iter.next().is_none(), "one answer per executed op");
    Ok(json_bytes(StatusCode::OK, batch_reply_json(&outcomes)))
}
