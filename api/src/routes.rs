//! Handlers: JSON body -> `surge_core::Command`, engine, reply -> status + JSON. The status
//! of a success is a function of the route and the reply only, so an idempotent replay
//! answers with the same status and body as the first time.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use surge_core::ids::is_valid_id;
use surge_core::state::{Merchant, OrderStatus};
use surge_core::{
    CaptureMode, CardSpec, Command, ItemSpec, LineSpec, OrderSource, PaymentMethod, PaymentSpec, Reply, Request,
};

use crate::auth;
use crate::dto::{self, to_vec};
use crate::engine::{Engine, ExecError, Executed};
use crate::error::ApiError;
use crate::extract::{AdminCall, Call};

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

/// Runs a merchant command; `status` maps the reply to the success status.
async fn command(
    call: &Call,
    command: Command,
    required_key: bool,
    status: impl Fn(&Reply) -> StatusCode,
) -> Result<Response, ApiError> {
    let idempotency = call.idempotency(required_key)?;
    execute(call, command, idempotency, status).await
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

/// A card payment is accepted, not done: 202 while its order waits for the gateway.
fn accepted_or(done: StatusCode) -> impl Fn(&Reply) -> StatusCode {
    move |reply| match reply {
        Reply::Order(o) if o.status == OrderStatus::PendingPayment => StatusCode::ACCEPTED,
        _ => done,
    }
}

fn ok(_: &Reply) -> StatusCode {
    StatusCode::OK
}

fn created(_: &Reply) -> StatusCode {
    StatusCode::CREATED
}

/// Runs `f` on the caller's merchant, after everything before it is durable.
async fn read<F>(engine: &Engine, merchant: Arc<str>, f: F) -> Result<Response, ApiError>
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

/// A GET of a numbered resource (`hold_{n}`, `ord_{n}`, `pay_{n}`): its view, 410 `archived`
/// naming when if it was archived, else 404.
async fn read_numbered<V: 'static>(
    call: &Call,
    what: &'static str,
    id: String,
    view: fn(&Merchant, &str) -> Option<V>,
    render: fn(&V) -> Vec<u8>,
) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| match view(m, &id) {
        Some(v) => Ok(render(&v)),
        None => Err(match m.archived_at(&id) {
            Some(at) => ApiError::archived(what, at),
            None => ApiError::not_found(format!("{what} not found")),
        }),
    })
    .await
}

// ---- merchants ----

#[derive(Deserialize)]
pub struct MerchantBody {
    id: String,
    name: String,
    currency: String,
}

pub async fn create_merchant(call: AdminCall) -> Result<Response, ApiError> {
    let body: MerchantBody = crate::extract::parse_json(&call.headers, &call.body)?;
    let idempotency = crate::extract::idempotency(&call.method, &call.path, &call.headers, &call.body, false, None)?;
    let api_key = auth::new_api_key();
    let hash = auth::sha256(api_key.as_bytes());
    let req = Request {
        merchant: body.id.clone(),
        idempotency,
        command: Command::CreateMerchant { name: body.name, currency: body.currency, api_key_hash: hash },
    };
    let executed = call.engine.execute(req).await.map_err(|e| {
        let mut error = exec_error(e);
        if error.code == "invalid_state" {
            error.detail = format!("merchant {} already exists", body.id); // the only state it refuses in
        }
        error
    })?;
    match (&executed.reply, executed.replayed) {
        (Reply::Merchant(m), false) => {
            call.engine.register_key(hash, &m.id);
            Ok(json(StatusCode::CREATED, &dto::merchant(m, Some(&api_key))))
        }
        _ => Ok(reply_response(StatusCode::CREATED, &executed)),
    }
}

// ---- items ----

#[derive(Deserialize)]
pub struct ItemBody {
    name: String,
    price: u64,
    stock: u64,
    #[serde(default)]
    queue_id: Option<String>,
}

impl ItemBody {
    fn into_spec(self, sku: String) -> ItemSpec {
        ItemSpec { sku, name: self.name, price: self.price, stock: self.stock, queue: self.queue_id }
    }
}

/// An item with its sku in the body (bulk put, batch op). Its own fields rather than a
/// flattened `ItemBody`: serde's flatten loses the field path a 400 must name.
#[derive(Deserialize)]
pub struct BulkItem {
    sku: String,
    name: String,
    price: u64,
    stock: u64,
    #[serde(default)]
    queue_id: Option<String>,
}

impl BulkItem {
    fn into_spec(self) -> ItemSpec {
        ItemSpec { sku: self.sku, name: self.name, price: self.price, stock: self.stock, queue: self.queue_id }
    }
}

#[derive(Deserialize)]
pub struct BulkBody {
    items: Vec<BulkItem>,
}

#[derive(Deserialize)]
pub struct RestockBody {
    qty: u64,
}

pub async fn put_item(Path(sku): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: ItemBody = call.json()?;
    command(&call, Command::PutItem(b.into_spec(sku)), false, |r| match r {
        Reply::Item { created: true, .. } => StatusCode::CREATED,
        _ => StatusCode::OK,
    })
    .await
}

pub async fn put_items(call: Call) -> Result<Response, ApiError> {
    let b: BulkBody = call.json()?;
    let items = b.items.into_iter().map(BulkItem::into_spec).collect();
    command(&call, Command::PutItems { items }, false, ok).await
}

pub async fn restock(Path(sku): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: RestockBody = call.json()?;
    command(&call, Command::Restock { sku, qty: b.qty }, false, ok).await
}

pub async fn get_item(Path(sku): Path<String>, call: Call) -> Result<Response, ApiError> {
    read_one(&call, "item", move |m| m.item_view(&sku), |v| to_vec(&dto::item(v))).await
}

// ---- holds ----

#[derive(Deserialize)]
pub struct LineBody {
    sku: String,
    qty: u64,
}

fn line_specs(lines: Vec<LineBody>) -> Vec<LineSpec> {
    lines.into_iter().map(|l| LineSpec { sku: l.sku, qty: l.qty }).collect()
}

#[derive(Deserialize)]
pub struct HoldBody {
    customer_id: String,
    lines: Vec<LineBody>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

pub async fn create_hold(call: Call) -> Result<Response, ApiError> {
    let b: HoldBody = call.json()?;
    let cmd = Command::CreateHold {
        customer: b.customer_id,
        lines: line_specs(b.lines),
        ttl_s: b.ttl_seconds,
        queue_token: call.queue_token()?,
    };
    command(&call, cmd, false, created).await
}

pub async fn release_hold(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    command(&call, Command::ReleaseHold { hold: id }, false, ok).await
}

pub async fn get_hold(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    read_numbered(&call, "hold", id, Merchant::hold_view, |v| to_vec(&dto::hold(v))).await
}

// ---- orders and payments ----

#[derive(Deserialize)]
pub struct CardBody {
    number: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
pub struct PaymentBody {
    method: PaymentMethod,
    #[serde(default)]
    card: Option<CardBody>,
    #[serde(default)]
    capture: Option<CaptureMode>,
}

impl PaymentBody {
    /// The payment as core takes it, with a card's number sealed for the gateway worker.
    /// Without a configured gateway a card payment changes nothing: 503.
    fn spec(self, call: &Call) -> Result<PaymentSpec, ApiError> {
        let card = match (self.method, self.card) {
            (PaymentMethod::Card, card) => {
                let host = call.gateway.as_deref().ok_or_else(ApiError::gateway_unavailable)?;
                match card {
                    Some(c) => Some(seal(host, &call.merchant, c)?),
                    None => None, // core names the missing field
                }
            }
            (_, card) => card.map(|c| CardSpec { number: c.number, kind: c.kind, sealed: Box::new([]) }),
        };
        Ok(PaymentSpec { method: self.method, card, capture: self.capture.unwrap_or_default() })
    }
}

fn seal(host: &crate::gateway::GatewayHost, merchant: &str, card: CardBody) -> Result<CardSpec, ApiError> {
    let sealed = host.card_key.seal(merchant, &card.number).map_err(|_| {
        ApiError::invalid("payment.card.number: at most 32 characters").with("field", "payment.card.number")
    })?;
    Ok(CardSpec { number: card.number, kind: card.kind, sealed: sealed.into_boxed_slice() })
}

/// The idempotency of a request that pays: keyed when it carries a card number.
fn payment_idempotency(
    call: &Call,
    method: PaymentMethod,
    required: bool,
) -> Result<Option<surge_core::Idempotency>, ApiError> {
    match (&call.gateway, method) {
        (Some(host), PaymentMethod::Card) => call.card_idempotency(required, host),
        _ => call.idempotency(required),
    }
}

/// The body of `POST /v1/orders` (`Token` = `IgnoredAny`), and the fields of a batch
/// `create_order` op (`Token` = `String`).
#[derive(Deserialize)]
pub struct OrderBody<Token = IgnoredAny> {
    customer_id: String,
    #[serde(default)]
    lines: Option<Vec<LineBody>>,
    #[serde(default)]
    hold_id: Option<String>,
    payment: PaymentBody,
    /// Batch ops only: a single request sends its token in the `Queue-Token` header, and
    /// anything under this name in its body is ignored, as any unknown field is.
    #[serde(default)]
    queue_token: Option<Token>,
}

impl<Token> OrderBody<Token> {
    fn command(self, queue_token: Option<String>, call: &Call) -> Result<Command, ApiError> {
        let source = match (self.lines, self.hold_id) {
            (Some(lines), None) => OrderSource::Lines(line_specs(lines)),
            (None, Some(hold)) => OrderSource::Hold(hold),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("lines, hold_id: give exactly one of them").with("field", "hold_id"))
            }
            (None, None) => {
                return Err(ApiError::invalid("lines: required unless hold_id is given").with("field", "lines"))
            }
        };
        let payment = self.payment.spec(call)?;
        Ok(Command::CreateOrder { customer: self.customer_id, source, payment, queue_token })
    }
}

pub async fn create_order(call: Call) -> Result<Response, ApiError> {
    let b: OrderBody = call.json()?;
    let idempotency = payment_idempotency(&call, b.payment.method, true)?;
    let cmd = b.command(call.queue_token()?, &call)?;
    execute(&call, cmd, idempotency, accepted_or(StatusCode::CREATED)).await
}

pub async fn get_order(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    read_numbered(&call, "order", id, Merchant::order_view, dto::order_to_vec).await
}

pub async fn cancel_order(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    command(&call, Command::CancelOrder { order: id }, false, ok).await
}

pub async fn pay_order(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: PaymentBody = call.json()?;
    let idempotency = payment_idempotency(&call, b.method, false)?;
    let payment = b.spec(&call)?;
    execute(&call, Command::PayOrder { order: id, payment }, idempotency, accepted_or(StatusCode::OK)).await
}

#[derive(Deserialize, Default)]
pub struct AmountBody {
    #[serde(default)]
    amount: Option<u64>,
}

pub async fn capture_payment(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: AmountBody = call.json_or_default()?;
    command(&call, Command::CapturePayment { payment: id, amount: b.amount }, true, ok).await
}

pub async fn refund_payment(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: AmountBody = call.json_or_default()?;
    command(&call, Command::RefundPayment { payment: id, amount: b.amount }, true, ok).await
}

pub async fn get_payment(Path(id): Path<String>, call: Call) -> Result<Response, ApiError> {
    read_numbered(&call, "payment", id, Merchant::payment_view, |v| to_vec(&dto::payment(v))).await
}

// ---- points and ledger ----

#[derive(Deserialize)]
pub struct CreditBody {
    amount: u64,
    #[serde(default)]
    reason: Option<String>,
}

pub async fn credit_points(Path(customer): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: CreditBody = call.json()?;
    let cmd = Command::CreditPoints { customer, amount: b.amount, reason: b.reason.unwrap_or_default() };
    command(&call, cmd, true, ok).await
}

pub async fn get_points(Path(customer): Path<String>, call: Call) -> Result<Response, ApiError> {
    if !is_valid_id(&customer) {
        return Err(ApiError::invalid("customer id: must be 1..=64 characters of [A-Za-z0-9_.:-]"));
    }
    read(&call.engine, call.merchant.clone(), move |m| Ok(to_vec(&dto::points(&m.points_view(&customer))))).await
}

pub async fn get_account(Path(account): Path<String>, call: Call) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| {
        m.account_view(&account)
            .map(|a| to_vec(&dto::account(&a)))
            .ok_or_else(|| ApiError::not_found("account not found"))
    })
    .await
}

pub async fn trial_balance(call: Call) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| Ok(to_vec(dto::trial_balance(&m.trial_balance())))).await
}

// ---- waiting rooms ----

#[derive(Deserialize)]
pub struct QueueBody {
    max_active: u64,
    active_ttl_seconds: u64,
}

#[derive(Deserialize)]
pub struct TokenBody {
    customer_id: String,
}

pub async fn put_queue(Path(queue): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: QueueBody = call.json()?;
    let cmd = Command::PutQueue { queue, max_active: b.max_active, active_ttl_s: b.active_ttl_seconds };
    command(&call, cmd, false, ok).await
}

pub async fn get_queue(Path(queue): Path<String>, call: Call) -> Result<Response, ApiError> {
    read_one(&call, "queue", move |m| m.queue_view(&queue), |v| to_vec(&dto::queue(v))).await
}

pub async fn issue_token(Path(queue): Path<String>, call: Call) -> Result<Response, ApiError> {
    let b: TokenBody = call.json()?;
    let cmd = Command::IssueToken { queue, customer: b.customer_id, nonce: auth::new_nonce() };
    command(&call, cmd, false, created).await
}

pub async fn get_token(Path((queue, token)): Path<(String, String)>, call: Call) -> Result<Response, ApiError> {
    read(&call.engine, call.merchant.clone(), move |m| {
        m.token_view(&queue, &token)
            .map(|t| to_vec(&dto::token(&t)))
            .ok_or_else(|| ApiError::not_found("token not found"))
    })
    .await
}

// ---- batch ----

/// Most operations in one `POST /v1/batch`.
pub const BATCH_OPS_MAX: usize = 1000;

#[derive(Deserialize)]
pub struct BatchBody {
    ops: Vec<Value>,
}

/// One batch operation: `op` names the route, the other fields are that route's body plus
/// its path parameters (`sku`, `hold_id`, `order_id`, `payment_id`, `customer_id`,
/// `queue_id`) and an optional `idempotency_key`.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum BatchOp {
    PutItem(BulkItem),
    Restock {
        sku: String,
        qty: u64,
    },
    Hold {
        customer_id: String,
        lines: Vec<LineBody>,
        #[serde(default)]
        ttl_seconds: Option<u64>,
        #[serde(default)]
        queue_token: Option<String>,
    },
    Release {
        hold_id: String,
    },
    CreateOrder(OrderBody<String>),
    CancelOrder {
        order_id: String,
    },
    PayOrder {
        order_id: String,
        method: PaymentMethod,
        #[serde(default)]
        card: Option<CardBody>,
        #[serde(default)]
        capture: Option<CaptureMode>,
    },
    Capture {
        payment_id: String,
        #[serde(default)]
        amount: Option<u64>,
    },
    Refund {
        payment_id: String,
        #[serde(default)]
        amount: Option<u64>,
    },
    CreditPoints {
        customer_id: String,
        amount: u64,
        #[serde(default)]
        reason: Option<String>,
    },
    IssueToken {
        queue_id: String,
        customer_id: String,
    },
}

impl BatchOp {
    /// The command and the success status of its route (`None`: decided by the reply).
    fn command(self, call: &Call) -> Result<(Command, Option<StatusCode>), ApiError> {
        Ok(match self {
            BatchOp::PutItem(item) => (Command::PutItem(item.into_spec()), None),
            BatchOp::Restock { sku, qty } => (Command::Restock { sku, qty }, Some(StatusCode::OK)),
            BatchOp::Hold { customer_id, lines, ttl_seconds, queue_token } => (
                Command::CreateHold {
                    customer: customer_id,
                    lines: line_specs(lines),
                    ttl_s: ttl_seconds,
                    queue_token,
                },
                Some(StatusCode::CREATED),
            ),
            BatchOp::Release { hold_id } => (Command::ReleaseHold { hold: hold_id }, Some(StatusCode::OK)),
            BatchOp::CreateOrder(mut body) => {
                let queue_token = body.queue_token.take();
                (body.command(queue_token, call)?, Some(StatusCode::CREATED))
            }
            BatchOp::CancelOrder { order_id } => (Command::CancelOrder { order: order_id }, Some(StatusCode::OK)),
            BatchOp::PayOrder { order_id, method, card, capture } => {
                let payment = PaymentBody { method, card, capture }.spec(call)?;
                (Command::PayOrder { order: order_id, payment }, Some(StatusCode::OK))
            }
            BatchOp::Capture { payment_id, amount } => {
                (Command::CapturePayment { payment: payment_id, amount }, Some(StatusCode::OK))
            }
            BatchOp::Refund { payment_id, amount } => {
                (Command::RefundPayment { payment: payment_id, amount }, Some(StatusCode::OK))
            }
            BatchOp::CreditPoints { customer_id, amount, reason } => (
                Command::CreditPoints { customer: customer_id, amount, reason: reason.unwrap_or_default() },
                Some(StatusCode::OK),
            ),
            BatchOp::IssueToken { queue_id, customer_id } => (
                Command::IssueToken { queue: queue_id, customer: customer_id, nonce: auth::new_nonce() },
                Some(StatusCode::CREATED),
            ),
        })
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

/// Parses one op into a request (with its success status), or the op's error.
fn batch_request(call: &Call, index: usize, op: &Value) -> Result<(Request, Option<StatusCode>), ApiError> {
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
    let (command, status) = parsed.command(call)?;
    let pays_by_card = match &command {
        Command::CreateOrder { payment, .. } | Command::PayOrder { payment, .. } => {
            payment.method == PaymentMethod::Card
        }
        _ => false,
    };
    let secret = call.gateway.as_deref().filter(|_| pays_by_card).map(|host| host.card_key.fingerprint_key());
    let idempotency = key.map(|key| {
        // The fingerprint covers the op itself: the same op in another batch replays.
        let bytes = serde_json::to_vec(op).unwrap_or_default();
        let fingerprint = crate::extract::fingerprint(&[b"batch\n".as_slice(), &bytes], secret);
        surge_core::Idempotency { key, fingerprint }
    });
    Ok((Request { merchant: call.merchant.to_string(), idempotency, command }, status))
}

pub async fn batch(call: Call) -> Result<Response, ApiError> {
    let b: BatchBody = call.json()?;
    if b.ops.is_empty() || b.ops.len() > BATCH_OPS_MAX {
        return Err(ApiError::invalid(format!("ops: must hold 1..={BATCH_OPS_MAX} operations")).with("field", "ops"));
    }
    // Per op: its parse error, or the success status of its route (`None`: from the reply)
    // and a place in `reqs`.
    let mut parsed: Vec<Result<Option<StatusCode>, ApiError>> = Vec::with_capacity(b.ops.len());
    let mut reqs = Vec::with_capacity(b.ops.len());
    for (i, op) in b.ops.iter().enumerate() {
        parsed.push(batch_request(&call, i, op).map(|(req, status)| {
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
                Some(Ok(x)) => BatchOutcome::Reply {
                    status: match &x.reply {
                        Reply::Order(o) if o.status == OrderStatus::PendingPayment => StatusCode::ACCEPTED,
                        Reply::Item { created: true, .. } if status.is_none() => StatusCode::CREATED,
                        _ => status.unwrap_or(StatusCode::OK),
                    },
                    reply: &x.reply,
                    replayed: x.replayed,
                },
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
