//! `GET /openapi.json`: the contract as OpenAPI 3.1, derived with utoipa from the handlers
//! (`#[utoipa::path]`: method, path, parameters, body type, the statuses only that route
//! answers, links) and from the request and reply types (`ToSchema`, bounds from
//! `surge_core::limits`). [`document`] adds what follows from an operation's traits alone, in
//! one place: the statuses of authentication, body parsing and idempotency keys, the
//! problem+json body of every error, and the schemas of ids and keys.

use serde_json::{json, Map, Value};
use surge_core::limits::IDEMPOTENCY_KEY_LEN_MAX;
use utoipa::{OpenApi, ToSchema};

use crate::body::{ItemBody, LineBody};
use crate::{gateway, lookup, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "surge",
        version = "1",
        description = "Order and payment engine. Every 2xx on a mutating call is in the fsynced write-ahead log. \
            Settled holds, orders, payments and expired waiting-room tokens are archived once unchanged for the \
            server's --retain-settled (default 7 days, never shorter than the idempotency window): their GETs and \
            the commands against them then answer 410 archived with archived_at, except that a server with a \
            MariaDB cold store (--mariadb-url) answers the GET of an archived order or payment from it: 200, the \
            same shape as before plus archived_at. A paid order can be refunded until it is archived (the refund \
            window). \
            The contract in prose: docs/api.md."
    ),
    paths(
        crate::healthz,
        crate::readyz,
        crate::metrics_text,
        crate::openapi_json,
        crate::admin_page,
        routes::create_merchant,
        routes::put_items,
        routes::put_item,
        routes::get_item,
        routes::restock,
        routes::create_hold,
        routes::get_hold,
        routes::release_hold,
        routes::create_order,
        routes::get_order,
        routes::cancel_order,
        routes::pay_order,
        routes::get_payment,
        routes::capture_payment,
        routes::refund_payment,
        routes::get_points,
        routes::credit_points,
        routes::get_account,
        routes::trial_balance,
        routes::put_queue,
        routes::get_queue,
        routes::issue_token,
        routes::get_token,
        routes::batch,
        gateway::callback,
        gateway::list_dead_letters,
        gateway::retry_dead_letter,
        gateway::report,
        lookup::get_order,
        lookup::get_payment,
        lookup::trial_balance,
        lookup::events,
        lookup::metrics_window,
        crate::cluster_http::get_cluster,
    ),
    components(schemas(Problem, ItemBody, LineBody)),
    security(("merchant" = []))
)]
struct ApiDoc;

/// Every error body (RFC 9457 problem+json); the code's extra members beside.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: `ApiError::body` writes it
pub struct Problem {
    /// `https://surge.dev/problems/{code with dashes}`
    r#type: String,
    title: String,
    status: u16,
    /// invalid_request, unauthorized, not_found, method_not_allowed, insufficient_stock,
    /// invalid_state, idempotency_key_in_use, idempotency_key_reused, payload_too_large,
    /// unsupported_media_type, insufficient_points, archived, queue_token_required, rate_limited,
    /// payment_gateway_unavailable, storage_unavailable, partition_moving
    code: String,
    detail: String,
    /// invalid_request: the field or header at fault.
    field: Option<String>,
    /// insufficient_stock
    sku: Option<String>,
    /// insufficient_stock
    available: Option<u64>,
    /// invalid_state: the resource's status.
    resource_status: Option<String>,
    /// insufficient_points
    balance: Option<u64>,
    /// insufficient_points
    required: Option<u64>,
    /// queue_token_required
    queue_id: Option<String>,
    /// archived: when it was archived, at the latest (RFC 3339).
    archived_at: Option<String>,
    /// partition_moving: the request's partition.
    partition: Option<u32>,
}

/// `{"status": "ok"}` and `{"status": "ready"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Status {
    status: String,
}

/// `POST /v1/batch`'s answer (written by `routes::batch_reply_json`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchReply {
    results: Vec<BatchResult>,
}

/// One op's answer: the status and body its route would have given.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchResult {
    status: u16,
    /// The route's reply, or a problem.
    body: Map<String, Value>,
    /// Present (true) on an idempotent replay.
    replayed: Option<bool>,
}

/// What the gateway worker of `surge relay` reports (`surge_relay::gateway::http_port::ReportBody`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReportDoc {
    #[schema(schema_with = schema::id)]
    merchant_id: String,
    /// One of the worker's commands as `surge_core::Command` serializes it.
    #[schema(schema_with = schema::report_command)]
    command: Map<String, Value>,
}

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| panic!("the document serializes: {e}"));
    doc["components"]["securitySchemes"] = json!({
        "merchant": {"type": "http", "scheme": "bearer", "description": "a merchant's API key (sk_...)"},
        "admin": {"type": "http", "scheme": "bearer", "description": "the admin token"},
        "admin_basic": {"type": "http", "scheme": "basic", "description": "the admin token as the password (GET /admin only)"},
    });
    refine(&mut doc["components"]["schemas"]);
    if let Some(paths) = doc["paths"].as_object_mut() {
        for ops in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in ops.values_mut() {
                complete(op);
            }
        }
    }
    doc
}

/// What the body types' fields cannot say one by one: which combinations the server takes.
/// Each rule is checked where the type is turned into a command (`body.rs`, core's decide).
fn refine(schemas: &mut Value) {
    // `BulkBody::command`: each item names its sku.
    schemas["BulkBody"]["properties"]["items"]["items"] = json!({"allOf": [
        {"$ref": "#/components/schemas/ItemBody"},
        {"required": ["sku"], "properties": {"sku": {"type": "string"}}}
    ]});
    // `OrderBody::command_with`: exactly one of lines and hold_id (null is as absent).
    schemas["OrderBody"]["oneOf"] = json!([
        {"required": ["lines"], "properties": {"lines": {"type": "array"}}},
        {"required": ["hold_id"], "properties": {"hold_id": {"type": "string"}}}
    ]);
    // core's `check_card`: a card with method card, and only then.
    schemas["PaymentBody"]["oneOf"] = json!([
        {"required": ["card"], "properties": {"method": {"const": "card"}, "card": {"type": "object"}}},
        {"properties": {"method": {"enum": ["points", "none"]}, "card": {"type": "null"}}}
    ]);
    // core's `decide_pay_order`: an order is paid by points or card.
    schemas["PayOrderBody"] = json!({"allOf": [{"$ref": "#/components/schemas/PaymentBody"},
        {"properties": {"method": {"enum": ["points", "card"]}}}]});
}

/// Which credentials an operation takes.
#[derive(PartialEq)]
enum Auth {
    None,
    Merchant,
    Admin,
}

fn auth_of(op: &Value) -> Auth {
    match op.get("security").and_then(Value::as_array) {
        None => Auth::Merchant, // the document's default
        Some(reqs) if reqs.iter().any(|r| r.get("admin").is_some()) => Auth::Admin,
        Some(reqs) if reqs.iter().any(|r| r.get("merchant").is_some()) => Auth::Merchant,
        Some(_) => Auth::None,
    }
}

/// Adds to one operation what follows from its traits, and gives every error the Problem body.
fn complete(op: &mut Value) {
    let auth = auth_of(op);
    if op["operationId"] == "pay_order" {
        op["requestBody"]["content"]["application/json"]["schema"] =
            json!({"$ref": "#/components/schemas/PayOrderBody"});
    }
    // The binary batch (docs/batch-format.md): bytes both ways, their layout is not JSON Schema's to say.
    if op["operationId"] == "batch" {
        let binary = json!({"schema": {"type": "string", "format": "binary"}});
        op["requestBody"]["content"][surge_client::wire::MEDIA_TYPE] = binary.clone();
        op["responses"]["200"]["content"][surge_client::wire::MEDIA_TYPE] = binary;
    }
    // Capture and refund take an empty body as "all of it".
    if matches!(op["operationId"].as_str(), Some("capture_payment" | "refund_payment")) {
        op["requestBody"]["required"] = Value::from(false);
    }
    if op["parameters"].is_null() {
        op.as_object_mut().map(|o| o.remove("parameters"));
    }
    let has_body = op.get("requestBody").is_some();
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let keyed = params.iter().any(|p| p["name"] == "Idempotency-Key");
    let in_path = params.iter().any(|p| p["in"] == "path");
    let in_query = params.iter().any(|p| p["in"] == "query");
    let mut add: Vec<(u16, &str)> = Vec::new();
    if in_path {
        add.push((400, "invalid_request: a path parameter"));
    }
    if in_query {
        add.push((400, "invalid_request: a query parameter that does not parse"));
    }
    if has_body {
        add.push((400, "invalid_request: the body, naming the field"));
        add.push((413, "payload_too_large: a body over 65536 bytes"));
        add.push(if op["operationId"] == "batch" {
            (415, "unsupported_media_type: a body that is neither application/json nor application/vnd.surge.batch")
        } else {
            (415, "unsupported_media_type: a body that is not application/json")
        });
    }
    if keyed {
        add.push((400, "invalid_request: the Idempotency-Key header"));
        add.push((409, "idempotency_key_in_use: a request with this key is still running"));
        add.push((422, "idempotency_key_reused: this key came with another request"));
    }
    match auth {
        Auth::Merchant => {
            add.push((401, "unauthorized: no or an unknown API key"));
            add.push((429, "rate_limited: the merchant's requests per second (Retry-After)"));
            add.push((503, "storage_unavailable: recovering, or the log is failing (Retry-After)"));
        }
        Auth::Admin => {
            add.push((401, "unauthorized: not the admin token"));
            // The status page shows what it can while recovering; the rest need the engine.
            if op["operationId"] != "admin_page" {
                add.push((503, "storage_unavailable: recovering, or the log is failing (Retry-After)"));
            }
        }
        Auth::None => {}
    }
    let op_id = op["operationId"].as_str().map(str::to_string);
    let responses = op["responses"].as_object_mut().expect("every operation has responses");
    for (status, what) in add {
        let entry = responses.entry(status.to_string()).or_insert_with(|| json!({"description": ""}));
        let description = entry["description"].as_str().unwrap_or("");
        if !description.contains(what) {
            entry["description"] =
                Value::from(if description.is_empty() { what.to_string() } else { format!("{description}; {what}") });
        }
    }
    for (status, response) in responses.iter_mut() {
        if status.starts_with('4') || status.starts_with('5') {
            response["content"] =
                json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}});
            // A browser without credentials gets the console's sign-in page instead.
            if status == "401" && op_id.as_deref() == Some("admin_page") {
                response["content"]["text/html"] = json!({"schema": {"type": "string"}});
            }
        }
        // utoipa 5 writes a link's operationId and requestBody in snake case; OpenAPI spells
        // them in camel case (and tools ignore what they do not know).
        for link in response.get_mut("links").and_then(Value::as_object_mut).into_iter().flat_map(|l| l.values_mut()) {
            for (snake, camel) in [("operation_id", "operationId"), ("request_body", "requestBody")] {
                if let Some(value) = link.as_object_mut().and_then(|l| l.remove(snake)) {
                    link[camel] = value;
                }
            }
        }
    }
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            match (p["in"].as_str(), p["name"].as_str()) {
                (Some("header"), Some("Idempotency-Key")) => {
                    p["schema"] = json!({"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_LEN_MAX,
                        "pattern": "^[ -~]+$", "description": "printable ASCII"});
                }
                // A header is a string or absent, never null.
                (Some("header"), _) if p["schema"]["type"].is_array() => p["schema"]["type"] = Value::from("string"),
                (Some("path"), Some("account" | "token")) => p["schema"] = json!({"type": "string", "minLength": 1}),
                (Some("path"), _) if p["schema"].get("pattern").is_none() => p["schema"] = schema::id_json(),
                _ => {}
            }
        }
    }
}

/// Field schemas of the request and reply types (`#[schema(schema_with = ...)]`), built
/// from `surge_core::limits` so the document states the bounds the server enforces.
pub mod schema {
    use serde_json::{json, Value};
    use surge_core::limits::{
        AMOUNT_MAX, BULK_ITEMS_MAX, CARD_NUMBER_LEN_MAX, ID_LEN_MAX, LINES_MAX, QTY_MAX, QUEUE_ACTIVE_MAX,
        TEXT_CHARS_MAX, TTL_S_MAX,
    };
    use utoipa::openapi::{RefOr, Schema};

    /// A schema written as JSON, in utoipa's model (which must keep all of it: checked in
    /// debug builds, so the tests' documents catch a keyword it drops).
    fn of(value: Value) -> RefOr<Schema> {
        let schema: RefOr<Schema> =
            serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("a schema literal parses: {e}"));
        debug_assert_eq!(serde_json::to_value(&schema).ok().as_ref(), Some(&value), "utoipa keeps the schema");
        schema
    }

    pub(crate) fn id_json() -> Value {
        json!({"type": "string", "minLength": 1, "maxLength": ID_LEN_MAX, "pattern": "^[A-Za-z0-9_.:-]+$"})
    }

    /// What `surge_core::ids::is_valid_id` accepts: every id a client chooses (merchant,
    /// customer, sku, queue) and every id surge hands out (`ord_1`).
    pub fn id() -> RefOr<Schema> {
        of(id_json())
    }

    pub fn optional_id() -> RefOr<Schema> {
        nullable(id_json())
    }

    /// Free text: no control characters (Unicode's Cc).
    fn text_json(len_min: usize) -> Value {
        json!({"type": "string", "minLength": len_min, "maxLength": TEXT_CHARS_MAX,
               "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
    }

    /// `schema`, or null (an `Option` field: null is as absent).
    fn nullable(mut schema: Value) -> RefOr<Schema> {
        schema["type"] = json!([schema["type"], "null"]);
        of(schema)
    }

    pub fn name() -> RefOr<Schema> {
        of(text_json(1))
    }

    pub fn reason() -> RefOr<Schema> {
        nullable(text_json(0))
    }

    fn int(min: u64, max: u64) -> Value {
        json!({"type": "integer", "minimum": min, "maximum": max})
    }

    pub fn amount() -> RefOr<Schema> {
        of(int(0, AMOUNT_MAX))
    }

    pub fn optional_positive_amount() -> RefOr<Schema> {
        of(json!({"type": ["integer", "null"], "minimum": 1, "maximum": AMOUNT_MAX}))
    }

    pub fn qty() -> RefOr<Schema> {
        of(int(1, QTY_MAX))
    }

    pub fn ttl() -> RefOr<Schema> {
        of(int(1, TTL_S_MAX))
    }

    pub fn optional_ttl() -> RefOr<Schema> {
        nullable(int(1, TTL_S_MAX))
    }

    pub fn max_active() -> RefOr<Schema> {
        of(int(1, QUEUE_ACTIVE_MAX))
    }

    fn lines_json() -> Value {
        json!({"type": "array", "minItems": 1, "maxItems": LINES_MAX, "items": {"$ref": "#/components/schemas/LineBody"},
               "description": "each sku at most once (400 otherwise)"})
    }

    pub fn lines() -> RefOr<Schema> {
        of(lines_json())
    }

    pub fn optional_lines() -> RefOr<Schema> {
        nullable(lines_json())
    }

    /// Its items are `ItemBody` with `sku` required (`refine`: utoipa's schema model has no
    /// `allOf` under `items`).
    pub fn bulk_items() -> RefOr<Schema> {
        of(json!({"type": "array", "minItems": 1, "maxItems": BULK_ITEMS_MAX,
                  "items": {"$ref": "#/components/schemas/ItemBody"}, "description": "each sku at most once (400 otherwise)"}))
    }

    pub fn card_number() -> RefOr<Schema> {
        of(json!({"type": "string", "maxLength": CARD_NUMBER_LEN_MAX, "pattern": "^[ -]*([0-9][ -]*){12,19}$"}))
    }

    pub fn card_type() -> RefOr<Schema> {
        of(json!({"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^[!-~]+$"}))
    }

    pub fn payment_method() -> RefOr<Schema> {
        of(json!({"type": "string", "enum": ["points", "card", "none"]}))
    }

    pub fn capture_mode() -> RefOr<Schema> {
        of(json!({"type": ["string", "null"], "enum": ["automatic", "manual", null]}))
    }

    /// `POST /v1/batch`'s ops. Each op that is an object with a string `op` is answered in
    /// its own result (an unknown op or a bad field: a 400 result, the others still run);
    /// anything else makes the batch malformed: 400.
    pub fn batch_ops() -> RefOr<Schema> {
        of(json!({"type": "array", "minItems": 1, "maxItems": crate::routes::BATCH_OPS_MAX,
            "items": {"type": "object", "required": ["op"],
                "description": "`op` names a route; the other fields are its body (ItemBody, RestockBody, HoldBody, \
                    OrderBody, PaymentBody, CaptureBody, RefundBody, CreditBody, TokenBody) with its path parameter \
                    as a field (sku, hold_id, order_id, payment_id, customer_id, queue_id), a waiting-room token as \
                    `queue_token`, and an optional `idempotency_key`. Each is checked as its route checks it, in its \
                    own result.",
                "properties": {"op": {"type": "string", "description": "put_item, restock, hold, release, \
                    create_order, cancel_order, pay_order, capture, refund, credit_points, issue_token"}}}}))
    }

    /// The gateway worker's commands (`surge_core::Command`, externally tagged), with the
    /// bounds core's `decide::gateway` checks.
    pub fn report_command() -> RefOr<Schema> {
        let payment = json!({"type": "string"});
        let transaction_key = json!({"type": "string", "minLength": 1, "maxLength": ID_LEN_MAX, "pattern": "^[!-~]+$"});
        let gateway = json!({"type": "string", "minLength": 1, "maxLength": 2 * ID_LEN_MAX, "pattern": "^[!-~]+$"});
        let variant = |name: &str, fields: Value| {
            let required: Vec<&String> = fields.as_object().map(|f| f.keys().collect()).unwrap_or_default();
            json!({"type": "object", "required": [name], "additionalProperties": false, "properties": {
                name: {"type": "object", "required": required, "properties": fields}}})
        };
        of(json!({"oneOf": [
            variant("GatewayAccepted", json!({"payment": payment, "transaction_key": transaction_key, "gateway": gateway})),
            variant("GatewayApproved", json!({"payment": payment, "transaction_key": transaction_key})),
            variant("GatewayDeclined", json!({"payment": payment, "reason": text_json(0)})),
            variant("GatewayGaveUp", json!({"payment": payment, "reason": text_json(0)})),
            variant("GatewayOpFailed", json!({"payment": payment, "op": {"type": "string", "enum": ["capture", "void", "refund"]},
                "key": text_json(1), "amount": int(0, u64::MAX), "reason": text_json(0)})),
            variant("ResolveDeadLetter", json!({"dead_letter": int(0, u64::MAX)})),
        ]}))
    }

    pub fn applied() -> RefOr<Schema> {
        one_of(&["applied", "duplicate"])
    }

    pub fn dead_letter_status_filter() -> RefOr<Schema> {
        of(json!({"type": ["string", "null"], "enum": ["open", "retried", "resolved", null]}))
    }

    /// Any u64: the server takes values outside 1..=10 as the nearest bound.
    pub fn window_minutes() -> RefOr<Schema> {
        of(json!({"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX, "default": 1}))
    }

    pub fn list_limit() -> RefOr<Schema> {
        of(json!({"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX, "default": 100}))
    }

    fn one_of(values: &[&str]) -> RefOr<Schema> {
        of(json!({"type": "string", "enum": values}))
    }

    pub fn hold_status() -> RefOr<Schema> {
        one_of(&["held", "released", "expired", "converted"])
    }

    pub fn order_status() -> RefOr<Schema> {
        one_of(&["awaiting_payment", "pending_payment", "paid", "cancelled", "expired", "refunded"])
    }

    pub fn payment_status() -> RefOr<Schema> {
        one_of(&["pending", "authorized", "captured", "partially_refunded", "refunded", "failed", "voided"])
    }

    pub fn capture_mode_out() -> RefOr<Schema> {
        one_of(&["automatic", "manual"])
    }

    pub fn token_status() -> RefOr<Schema> {
        one_of(&["waiting", "active", "expired"])
    }

    pub fn dead_letter_op() -> RefOr<Schema> {
        one_of(&["capture", "void", "refund"])
    }

    pub fn dead_letter_status() -> RefOr<Schema> {
        one_of(&["open", "retried", "resolved"])
    }
}
