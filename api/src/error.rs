//! The one error type of the HTTP layer. Every failure, whether it comes from the engine,
//! the log, the extractors or the router itself, leaves as `application/problem+json`:
//! `{"type","title","status","code","detail", ...extra}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use surge_core::CoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A contract error: code, status, detail and the code's extra members.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after_s: Option<u64>,
    /// Cluster mode: the node that owns the request's partition. The response carries it
    /// as a [`ForwardTo`] extension, and the forwarding layer sends the request there.
    pub forward_to: Option<std::sync::Arc<str>>,
}

/// A response extension: this request belongs to the node at this address.
#[derive(Debug, Clone)]
pub struct ForwardTo(pub std::sync::Arc<str>);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), extra: Map::new(), retry_after_s: None, forward_to: None }
    }

    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid credentials")
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this resource")
    }

    pub fn payload_too_large() -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body exceeds 65536 bytes")
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        )
    }

    pub fn storage_unavailable(detail: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", detail);
        e.retry_after_s = Some(1);
        e
    }

    /// Cluster mode: the request's partition is owned by another node (forwarded there when
    /// `owner` is known) or by none while it moves (a retry with the same idempotency key is
    /// safe).
    pub fn partition_moving(partition: u32, owner: Option<std::sync::Arc<str>>, detail: impl Into<String>) -> ApiError {
        let mut e =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "partition_moving", detail).with("partition", partition);
        e.retry_after_s = Some(1);
        e.forward_to = owner;
        e
    }

    pub fn gateway_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "payment_gateway_unavailable",
            "card payments are not available: no payment gateway is configured",
        )
    }

    pub fn rate_limited(retry_after_s: u64) -> ApiError {
        let mut e =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "merchant request rate limit exceeded");
        e.retry_after_s = Some(retry_after_s.max(1));
        e
    }

    /// 410: the resource was settled and archived at or before `archived_at_ms`; memory no
    /// longer holds it (the cold store does).
    pub fn archived(what: &str, archived_at_ms: surge_core::UnixMs) -> ApiError {
        let at = surge_core::envelope::rfc3339_ms(archived_at_ms);
        ApiError::new(StatusCode::GONE, "archived", format!("{what} was archived (at or before {at})"))
            .with("archived_at", at)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// The generic error of a bare status (router fallbacks, extractor rejections).
    pub fn from_status(status: StatusCode, detail: impl Into<String>) -> ApiError {
        let code = match status {
            StatusCode::BAD_REQUEST => "invalid_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::GONE => "archived",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            s if s.is_client_error() => "invalid_request",
            _ => "internal_error",
        };
        ApiError::new(status, code, detail)
    }

    fn title(&self) -> &'static str {
        match self.code {
            "invalid_request" => "Invalid request",
            "unauthorized" => "Unauthorized",
            "not_found" => "Not found",
            "method_not_allowed" => "Method not allowed",
            "insufficient_stock" => "Insufficient stock",
            "invalid_state" => "Invalid state",
            "idempotency_key_in_use" => "Idempotency key in use",
            "idempotency_key_reused" => "Idempotency key reused",
            "payload_too_large" => "Payload too large",
            "unsupported_media_type" => "Unsupported media type",
            "insufficient_points" => "Insufficient points",
            "queue_token_required" => "Queue token required",
            "rate_limited" => "Rate limited",
            "payment_gateway_unavailable" => "Payment gateway unavailable",
            "storage_unavailable" => "Storage unavailable",
            "partition_moving" => "Partition moving",
            "archived" => "Archived",
            _ => "Error",
        }
    }

    /// The JSON body (also used by tests and, later, the batch endpoint).
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::from(format!("https://surge.dev/problems/{}", self.code.replace('_', "-"))));
        m.insert("title".into(), Value::from(self.title()));
        m.insert("status".into(), Value::from(self.status.as_u16()));
        m.insert("code".into(), Value::from(self.code));
        m.insert("detail".into(), Value::from(self.detail.clone()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let detail = e.to_string();
        match e {
            CoreError::InvalidRequest { field, .. } => ApiError::invalid(detail).with("field", field),
            CoreError::NotFound { .. } => ApiError::not_found(detail),
            CoreError::InsufficientStock { sku, available } => {
                ApiError::new(StatusCode::CONFLICT, "insufficient_stock", detail)
                    .with("sku", sku)
                    .with("available", available)
            }
            // The contract's `status` extra would collide with problem+json's numeric `status`
            // (RFC 9457), which generic clients rely on: the resource's status goes in
            // `resource_status` (and the detail).
            CoreError::InvalidState { status } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", detail).with("resource_status", status)
            }
            CoreError::IdempotencyKeyInUse => ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_use", detail),
            CoreError::IdempotencyKeyReused => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", detail)
            }
            CoreError::InsufficientPoints { balance, required } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "insufficient_points", detail)
                    .with("balance", balance)
                    .with("required", required)
            }
            CoreError::QueueTokenRequired { queue } => {
                ApiError::new(StatusCode::FORBIDDEN, "queue_token_required", detail).with("queue_id", queue)
            }
            CoreError::Archived { what, archived_at_ms } => ApiError::archived(what, archived_at_ms),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after_s {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(owner) = self.forward_to {
            res.extensions_mut().insert(ForwardTo(owner));
        }
        res
    }
}
