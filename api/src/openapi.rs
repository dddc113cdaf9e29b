//! `GET /openapi.json`: the contract as OpenAPI 3.1, written by hand next to the routes.
//! A test checks that every operation described here is routed.

use serde_json::{json, Map, Value};
use surge_core::limits::{
    AMOUNT_MAX, BULK_ITEMS_MAX, CARD_NUMBER_LEN_MAX, IDEMPOTENCY_KEY_LEN_MAX, ID_LEN_MAX, LINES_MAX, QTY_MAX,
    QUEUE_ACTIVE_MAX, TEXT_BYTES_MAX, TTL_S_MAX,
};

use crate::gateway::DEAD_LETTERS_LIST_MAX;
use crate::routes::BATCH_OPS_MAX;

/// What `surge_core::ids::is_valid_id` accepts: every id a client chooses (merchant,
/// customer, sku, queue) and every id surge hands out (`ord_1`) has this form.
fn id() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": ID_LEN_MAX, "pattern": "^[A-Za-z0-9_.:-]+$"})
}

/// `schema`, or null.
fn optional(mut schema: Value) -> Value {
    schema["type"] = json!([schema["type"], "null"]);
    schema
}

/// What `surge_core::ids::is_valid_idempotency_key` accepts: printable ASCII.
fn idempotency_key() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_LEN_MAX, "pattern": "^[ -~]+$"})
}

/// Free text (names, reasons): no control characters, at most `TEXT_BYTES_MAX` bytes of
/// UTF-8 (a length JSON Schema can only state in characters).
fn text(len_min: usize) -> Value {
    json!({"type": "string", "minLength": len_min, "maxLength": TEXT_BYTES_MAX,
           "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
           "description": format!("at most {TEXT_BYTES_MAX} bytes of UTF-8, no control characters")})
}

/// An integer `min..=max`.
fn int(min: u64, max: u64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn ok(status: &str, schema: Value, errors: &[&str]) -> Value {
    let mut responses = Map::new();
    responses
        .insert(status.into(), json!({"description": "success", "content": {"application/json": {"schema": schema}}}));
    for e in errors {
        responses.insert((*e).into(), json!({"$ref": "#/components/responses/Problem"}));
    }
    Value::Object(responses)
}

/// `responses` and a 202: a card payment is accepted, not done; its order is
/// `pending_payment` until the gateway's answer arrives.
fn accepted(mut responses: Value) -> Value {
    responses["202"] = json!({"description": "card payment accepted: the order is pending_payment, its payment pending, until the gateway decides",
        "content": {"application/json": {"schema": r("Order")}}});
    responses
}

fn op(summary: &str, params: &[&str], header: &[&str], request: Option<Value>, responses: Value) -> Value {
    let mut parameters: Vec<Value> = params
        .iter()
        // Account names embed a customer id (`customer:{id}:points`): longer than an id.
        .map(|p| {
            let schema = if *p == "account" { json!({"type": "string"}) } else { id() };
            json!({"name": p, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    for h in header {
        let required = *h == "Idempotency-Key!";
        let name = h.trim_end_matches('!');
        let schema = if name == "Idempotency-Key" { idempotency_key() } else { json!({"type": "string"}) };
        parameters.push(json!({"name": name, "in": "header", "required": required, "schema": schema}));
    }
    let mut o = json!({"summary": summary, "parameters": parameters, "responses": responses});
    if let Some(req) = request {
        o["requestBody"] = body(req);
    }
    o
}

const W: &[&str] = &["400", "401", "404", "409", "413", "415", "422", "429", "503"];
const R: &[&str] = &["401", "404", "429", "503"];
/// Reads that answer for any well-formed id (a customer nobody credited has 0 points), so a
/// malformed one is 400, not 404.
const R_ANY_ID: &[&str] = &["400", "401", "404", "429", "503"];

pub fn document() -> Value {
    let line = json!({"type": "object", "required": ["sku", "qty"], "properties": {
        "sku": id(), "qty": int(1, QTY_MAX)}});
    let lines = json!({"type": "array", "minItems": 1, "maxItems": LINES_MAX, "items": line});
    let payment_in = json!({"type": "object", "required": ["method"], "properties": {
        "method": {"enum": ["points", "card", "none"]},
        "card": {"type": "object", "required": ["number", "type"], "properties": {
            "number": {"type": "string", "maxLength": CARD_NUMBER_LEN_MAX, "pattern": "^[ -]*([0-9][ -]*){12,19}$"},
            "type": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^[!-~]+$"}}},
        "capture": {"enum": ["automatic", "manual"], "default": "automatic",
            "description": "manual: authorize now (points leave the balance), capture later with /v1/payments/{id}/capture"}}});
    let item_in = json!({"type": "object", "required": ["name", "price", "stock"], "properties": {
        "name": text(1), "price": int(0, AMOUNT_MAX), "stock": int(0, AMOUNT_MAX),
        "queue_id": optional(id())}});
    let amount_in = json!({"type": "object", "properties": {"amount": {"type": "integer", "minimum": 1}}});
    let idem = &["Idempotency-Key"][..];
    let idem_req = &["Idempotency-Key!"][..];
    json!({
        "openapi": "3.1.0",
        "info": {"title": "surge", "version": "1",
                 "description": "Order and payment engine. Every 2xx on a mutating call is in the fsynced write-ahead log."},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Process up", "security": [], "responses": {"200": {"description": "up"}}}},
            "/readyz": {"get": {"summary": "Recovery done and log writable", "security": [],
                "responses": {"200": {"description": "ready"}, "503": {"$ref": "#/components/responses/Problem"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                "responses": {"200": {"description": "text/plain exposition format"}}}},
            "/admin": {"get": {"summary": "Operator status page (admin token: Bearer, or HTTP Basic password)",
                "responses": {"200": {"description": "text/html"}, "401": {"$ref": "#/components/responses/Problem"}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/merchants": {"post": op("Create a merchant (admin token); the API key is shown once", &[], idem,
                Some(json!({"type": "object", "required": ["id", "name", "currency"], "properties": {
                    "id": id(), "name": text(1), "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}})),
                ok("201", r("Merchant"), W))},
            "/v1/items/{sku}": {
                "put": op("Create (201) or update (200) an item", &["sku"], idem, Some(item_in.clone()), ok("200", r("Item"), W)),
                "get": op("An item", &["sku"], &[], None, ok("200", r("Item"), R))},
            "/v1/items/bulk": {"post": op("Create or update up to 10000 items", &[], idem,
                Some(json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "minItems": 1, "maxItems": BULK_ITEMS_MAX,
                    "items": {"allOf": [item_in, {"type": "object", "required": ["sku"], "properties": {"sku": id()}}]}}}})),
                ok("200", json!({"type": "object", "properties": {"created": {"type": "integer"}, "updated": {"type": "integer"}}}), W))},
            "/v1/items/{sku}/restock": {"post": op("Add stock", &["sku"], idem,
                Some(json!({"type": "object", "required": ["qty"], "properties": {"qty": int(1, QTY_MAX)}})), ok("200", r("Item"), W))},
            "/v1/holds": {"post": op("Reserve stock for ttl_seconds (all lines or none)", &[], &["Idempotency-Key", "Queue-Token"],
                Some(json!({"type": "object", "required": ["customer_id", "lines"], "properties": {
                    "customer_id": id(), "lines": lines.clone(), "ttl_seconds": int(1, TTL_S_MAX)}})),
                ok("201", r("Hold"), W))},
            "/v1/holds/{id}": {"get": op("A hold", &["id"], &[], None, ok("200", r("Hold"), R))},
            "/v1/holds/{id}/release": {"post": op("Release a hold", &["id"], idem, None, ok("200", r("Hold"), W))},
            "/v1/orders": {"post": op("Create an order from lines or a hold; points pay at once (201), card goes to the payment gateway (202, pending_payment; 503 payment_gateway_unavailable when none is configured), none waits for payment", &[], &["Idempotency-Key!", "Queue-Token"],
                Some(json!({"type": "object", "required": ["customer_id", "payment"],
                    "oneOf": [{"required": ["lines"]}, {"required": ["hold_id"]}], "properties": {
                    "customer_id": id(), "lines": lines,
                    "hold_id": id(), "payment": payment_in}})),
                accepted(ok("201", r("Order"), &["400", "401", "402", "403", "404", "409", "413", "415", "422", "429", "503"])))},
            "/v1/orders/{id}": {"get": op("An order", &["id"], &[], None, ok("200", r("Order"), R))},
            "/v1/orders/{id}/cancel": {"post": op("Cancel: releases stock, refunds a capture", &["id"], idem, None, ok("200", r("Order"), W))},
            "/v1/orders/{id}/payments": {"post": op("Pay an awaiting_payment order: points at once (200), card through the payment gateway (202, pending_payment)", &["id"], idem, Some(payment_in), accepted(ok("200", r("Order"), &["400", "401", "402", "404", "409", "413", "415", "422", "429", "503"])))},
            "/v1/payments/{id}": {"get": op("A payment", &["id"], &[], None, ok("200", r("Payment"), R))},
            "/v1/payments/{id}/capture": {"post": op("Capture (partial once)", &["id"], idem_req, Some(amount_in.clone()), ok("200", r("Payment"), W))},
            "/v1/payments/{id}/refund": {"post": op("Refund (partial, up to the captured amount)", &["id"], idem_req, Some(amount_in), ok("200", r("Payment"), W))},
            "/v1/customers/{id}/points/credit": {"post": op("Credit points", &["id"], idem_req,
                Some(json!({"type": "object", "required": ["amount"], "properties": {"amount": int(0, AMOUNT_MAX), "reason": text(0)}})),
                ok("200", r("Points"), W))},
            "/v1/customers/{id}/points": {"get": op("A points balance", &["id"], &[], None, ok("200", r("Points"), R_ANY_ID))},
            "/v1/ledger/accounts/{account}": {"get": op("Totals of one account (points:issued, points:authorized, gateway:clearing, gateway:authorized, sales:revenue, refunds, customer:{id}:points)", &["account"], &[], None,
                ok("200", json!({"type": "object", "properties": {"account": {"type": "string"}, "debits": {"type": "integer"}, "credits": {"type": "integer"}, "balance": {"type": "integer"}}}), R))},
            "/v1/ledger/trial-balance": {"get": op("Sums of every account", &[], &[], None,
                ok("200", json!({"type": "object", "properties": {"total_debits": {"type": "integer"}, "total_credits": {"type": "integer"}, "balanced": {"type": "boolean"}, "accounts": {"type": "integer"}}}), R))},
            "/v1/queues/{id}": {
                "put": op("Create or change a waiting room", &["id"], idem,
                    Some(json!({"type": "object", "required": ["max_active", "active_ttl_seconds"], "properties": {"max_active": int(1, QUEUE_ACTIVE_MAX), "active_ttl_seconds": int(1, TTL_S_MAX)}})),
                    ok("200", r("Queue"), W)),
                "get": op("A waiting room", &["id"], &[], None, ok("200", r("Queue"), R))},
            "/v1/queues/{id}/tokens": {"post": op("Join a waiting room", &["id"], idem,
                Some(json!({"type": "object", "required": ["customer_id"], "properties": {"customer_id": id()}})), ok("201", r("Token"), W))},
            "/v1/queues/{id}/tokens/{token}": {"get": op("A token's status and position", &["id", "token"], &[], None, ok("200", r("Token"), R))},
            "/v1/batch": {"post": op("Up to 1000 operations (op: put_item, restock, hold, release, create_order, cancel_order, pay_order, capture, refund, credit_points, issue_token; other fields: the route's body, its path parameters as sku/hold_id/order_id/payment_id/customer_id/queue_id, optional idempotency_key), each applied on its own, in order, made durable by one log write; a card payment's result has status 202", &[], &[],
                Some(json!({"type": "object", "required": ["ops"], "properties": {"ops": {"type": "array", "minItems": 1, "maxItems": BATCH_OPS_MAX, "items": {"type": "object", "required": ["op"]}}}})),
                ok("200", json!({"type": "object", "properties": {"results": {"type": "array", "items": {"type": "object", "properties": {"status": {"type": "integer"}, "body": {"type": "object"}, "replayed": {"type": "boolean"}}}}}}), &["400", "401", "413", "415", "429", "503"]))},
            "/v1/gateway/callback": {"post": {
                "summary": "The payment gateway reports a decision (no bearer token: X-Signature is lowercase hex of HMAC-SHA256(secret, \"{X-Timestamp}.{raw body}\"), X-Timestamp Unix seconds within 300 s of now); 404 also when no gateway is configured",
                "security": [],
                "parameters": [
                    {"name": "X-Signature", "in": "header", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    {"name": "X-Timestamp", "in": "header", "required": true, "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
                "requestBody": body(json!({"type": "object", "required": ["transactionKey", "orderId", "status"],
                    "description": "transaction_key and order_id are taken in snake case too",
                    "properties": {
                        "transactionKey": {"type": "string"},
                        "orderId": {"type": "string", "description": "{merchant_id}:pay_{n}, as surge sent it"},
                        "status": {"enum": ["SUCCESS", "FAILED"]},
                        "reason": {"type": ["string", "null"]}}})),
                "responses": {
                    "200": {"description": "applied, or duplicate when the payment was settled already",
                        "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"enum": ["applied", "duplicate"]}}}}}},
                    "400": {"$ref": "#/components/responses/Problem"},
                    "401": {"$ref": "#/components/responses/Problem"},
                    "404": {"$ref": "#/components/responses/Problem"},
                    "503": {"$ref": "#/components/responses/Problem"}}}},
            "/v1/admin/dead-letters": {"get": {
                "summary": "Captures, voids and refunds the gateway worker gave up on, across merchants, newest first (admin token)",
                "parameters": [
                    {"name": "status", "in": "query", "required": false, "schema": {"enum": ["open", "retried", "resolved"]}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": DEAD_LETTERS_LIST_MAX, "default": 100}}],
                "responses": ok("200", json!({"type": "object", "properties": {"dead_letters": {"type": "array", "items": r("DeadLetter")}}}), &["400", "401", "503"])}},
            "/v1/admin/dead-letters/{id}/retry": {"post": {
                "summary": "Request an open dead letter's operation again, with the same idempotency key (admin token)",
                "parameters": [{"name": "id", "in": "path", "required": true,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]+:dl_[1-9][0-9]*$"},
                    "description": "{merchant_id}:dl_{n}"}],
                "responses": ok("200", r("DeadLetter"), &["401", "404", "409", "503"])}},
            "/v1/admin/gateway/reports": {"post": {
                "summary": "Internal: a gateway worker running in `surge relay` reports what a gateway said (admin token; only the worker's commands: GatewayAccepted, GatewayApproved, GatewayDeclined, GatewayGaveUp, GatewayOpFailed, ResolveDeadLetter, as surge_core::Command serializes them); 404 when no gateway is configured",
                "requestBody": body(json!({"type": "object", "required": ["merchant_id", "command"],
                    "properties": {"merchant_id": {"type": "string"}, "command": {"type": "object"}}})),
                "responses": ok("200", json!({"type": "object", "properties": {"status": {"enum": ["applied", "duplicate"]}}}), &["400", "401", "404", "409", "413", "415", "503"])}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Problem": {"description": "problem+json", "content": {"application/problem+json": {"schema": r("Problem")}}}},
            "schemas": {
                "Problem": {"type": "object", "required": ["type", "title", "status", "code", "detail"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "code": {"type": "string"}, "detail": {"type": "string"}, "field": {"type": "string"},
                    "sku": {"type": "string"}, "available": {"type": "integer"}, "resource_status": {"type": "string"}}},
                "Merchant": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "currency": {"type": "string"}, "api_key": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}},
                "Item": {"type": "object", "properties": {"sku": {"type": "string"}, "name": {"type": "string"}, "price": {"type": "integer"}, "stock": {"type": "integer"}, "available": {"type": "integer"}, "held": {"type": "integer"}, "sold": {"type": "integer"}, "queue_id": {"type": ["string", "null"]}}},
                "Hold": {"type": "object", "properties": {"id": {"type": "string"}, "customer_id": {"type": "string"}, "status": {"enum": ["held", "released", "expired", "converted"]}, "lines": {"type": "array"}, "order_id": {"type": ["string", "null"]}, "expires_at": {"type": "string", "format": "date-time"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
                "Order": {"type": "object", "properties": {"id": {"type": "string"}, "customer_id": {"type": "string"}, "status": {"enum": ["awaiting_payment", "pending_payment", "paid", "cancelled", "expired", "refunded"]}, "lines": {"type": "array"}, "total": {"type": "integer"}, "hold_id": {"type": ["string", "null"]}, "payment": {"oneOf": [r("Payment"), {"type": "null"}]}, "expires_at": {"type": ["string", "null"]}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
                "Payment": {"type": "object", "properties": {"id": {"type": "string"}, "order_id": {"type": "string"}, "method": {"enum": ["points", "card"]}, "status": {"enum": ["pending", "authorized", "captured", "partially_refunded", "refunded", "failed", "voided"]}, "capture": {"enum": ["automatic", "manual"]}, "amount": {"type": "integer"}, "captured": {"type": "integer"}, "refunded": {"type": "integer"},
                    "card": {"oneOf": [{"type": "object", "properties": {"last4": {"type": "string"}, "type": {"type": "string"}}}, {"type": "null"}]},
                    "transaction_key": {"type": ["string", "null"]}, "failure_reason": {"type": ["string", "null"]},
                    "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
                "DeadLetter": {"type": "object", "properties": {"id": {"type": "string", "description": "dl_{n}, per merchant"}, "merchant_id": {"type": "string"}, "payment_id": {"type": "string"}, "order_id": {"type": "string"}, "op": {"enum": ["capture", "void", "refund"]}, "amount": {"type": "integer"}, "operation_key": {"type": "string"}, "reason": {"type": "string"}, "status": {"enum": ["open", "retried", "resolved"]}, "attempts": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}},
                "Points": {"type": "object", "properties": {"customer_id": {"type": "string"}, "balance": {"type": "integer"}}},
                "Queue": {"type": "object", "properties": {"id": {"type": "string"}, "max_active": {"type": "integer"}, "active_ttl_seconds": {"type": "integer"}, "active": {"type": "integer"}, "waiting": {"type": "integer"}}},
                "Token": {"type": "object", "properties": {"token": {"type": "string"}, "queue_id": {"type": "string"}, "customer_id": {"type": "string"}, "status": {"enum": ["waiting", "active", "expired"]}, "position": {"type": "integer"}, "active_until": {"type": ["string", "null"]}}}
            }
        }
    })
}

/// Retention (docs/api.md, "Retention and the refund window"): what `document()` says about
/// archived holds, orders and payments, added to it where it is served.
pub fn with_retention(mut doc: Value) -> Value {
    doc["info"]["description"] = json!(format!(
        "{} Settled holds, orders and payments are archived once unchanged for the server's \
         --retain-settled (default 7 days, never shorter than the idempotency window): their GETs and \
         commands then answer 410 archived with archived_at. A paid order can be refunded until it is \
         archived (the refund window).",
        doc["info"]["description"].as_str().unwrap_or_default()
    ));
    let gone = json!({"$ref": "#/components/responses/Problem"});
    for (path, method) in [
        ("/v1/holds/{id}", "get"),
        ("/v1/holds/{id}/release", "post"),
        ("/v1/orders/{id}", "get"),
        ("/v1/orders/{id}/cancel", "post"),
        ("/v1/orders/{id}/payments", "post"),
        ("/v1/payments/{id}", "get"),
        ("/v1/payments/{id}/capture", "post"),
        ("/v1/payments/{id}/refund", "post"),
    ] {
        if let Some(responses) = doc["paths"][path][method]["responses"].as_object_mut() {
            responses.insert("410".into(), gone.clone());
        }
    }
    if let Some(problem) = doc["components"]["schemas"]["Problem"]["properties"].as_object_mut() {
        problem.insert(
            "archived_at".into(),
            json!({"type": "string", "format": "date-time", "description": "410 archived: when it was archived, at the latest"}),
        );
    }
    doc
}

/// Field schemas of the request and reply types (`#[schema(schema_with = ...)]`), built
/// from `surge_core::limits` so the document states the bounds the server enforces.
pub mod schema {
    use serde_json::{json, Value};
    use surge_core::limits::{
        AMOUNT_MAX, BULK_ITEMS_MAX, CARD_NUMBER_LEN_MAX, ID_LEN_MAX, LINES_MAX, QTY_MAX, QUEUE_ACTIVE_MAX,
        TEXT_BYTES_MAX, TTL_S_MAX,
    };
    use utoipa::openapi::{RefOr, Schema};

    fn of(value: Value) -> RefOr<Schema> {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("a schema literal parses: {e}"))
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
        let mut s = id_json();
        s["type"] = json!(["string", "null"]);
        of(s)
    }

    /// Free text: no control characters, at most `TEXT_BYTES_MAX` bytes of UTF-8 (a length
    /// JSON Schema can only state in characters: 4-byte characters count 4).
    fn text_json(len_min: usize) -> Value {
        json!({"type": "string", "minLength": len_min, "maxLength": TEXT_BYTES_MAX / 4,
               "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
               "description": format!("at most {TEXT_BYTES_MAX} bytes of UTF-8, no control characters")})
    }

    pub fn name() -> RefOr<Schema> {
        of(text_json(1))
    }

    pub fn reason() -> RefOr<Schema> {
        let mut s = text_json(0);
        s["type"] = json!(["string", "null"]);
        of(s)
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

    pub fn max_active() -> RefOr<Schema> {
        of(int(1, QUEUE_ACTIVE_MAX))
    }

    pub fn lines() -> RefOr<Schema> {
        of(json!({"type": "array", "minItems": 1, "maxItems": LINES_MAX,
                  "items": {"$ref": "#/components/schemas/LineBody"}}))
    }

    pub fn bulk_items() -> RefOr<Schema> {
        of(json!({"type": "array", "minItems": 1, "maxItems": BULK_ITEMS_MAX,
                  "items": {"allOf": [{"$ref": "#/components/schemas/ItemBody"}, {"required": ["sku"]}]}}))
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
}
