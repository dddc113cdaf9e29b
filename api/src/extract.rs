//! Extractors: an authenticated merchant call (key, rate limit, body, idempotency) and an
//! admin call. Bodies are read here with the 64 KiB limit and parsed with field paths in
//! error messages, so every rejection is the contract's problem+json.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderName, Method};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use surge_core::Idempotency;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::gateway::GatewayHost;
use crate::{auth, AppState, BODY_BYTES_MAX};

/// Header names parsed once: `HeaderMap::get("...")` would parse and check the name on
/// every call.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static QUEUE_TOKEN: HeaderName = HeaderName::from_static("queue-token");

/// What every merchant route gets: who is calling, and the request itself.
pub struct Call {
    pub engine: Arc<Engine>,
    /// Card payments: present when payment gateways are configured.
    pub gateway: Option<Arc<GatewayHost>>,
    pub merchant: Arc<str>,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An admin-token call (merchant creation).
pub struct AdminCall {
    pub engine: Arc<Engine>,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

async fn read_body(req: Request) -> Result<(Method, String, HeaderMap, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_BYTES_MAX as u64) {
        return Err(ApiError::payload_too_large());
    }
    let body = axum::body::to_bytes(body, BODY_BYTES_MAX).await.map_err(|_| ApiError::payload_too_large())?;
    Ok((parts.method, parts.uri.path().to_string(), parts.headers, body))
}

impl FromRequest<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Call, ApiError> {
        let engine = state.engine()?;
        let key = auth::bearer(req.headers()).ok_or_else(ApiError::unauthorized)?;
        let hash = auth::sha256(key.as_bytes());
        let merchant = match engine.merchant_for_key(&hash) {
            Some(merchant) => merchant,
            None if state.cluster().is_some() => {
                crate::cluster_http::key_learned(&engine, &hash).await.ok_or_else(ApiError::unauthorized)?
            }
            None => return Err(ApiError::unauthorized()),
        };
        if let Some(limiter) = &state.0.limiter {
            if let Err(not_until) = limiter.check_key(&merchant) {
                use governor::clock::Clock;
                state.0.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                return Err(ApiError::rate_limited(wait.as_secs_f64().ceil() as u64));
            }
        }
        let (method, path, headers, body) = read_body(req).await?;
        Ok(Call { engine, gateway: state.gateway(), merchant, method, path, headers, body })
    }
}

impl FromRequest<AppState> for AdminCall {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<AdminCall, ApiError> {
        let engine = state.engine()?;
        let token = auth::bearer(req.headers()).ok_or_else(ApiError::unauthorized)?;
        let presented = auth::sha256(token.as_bytes());
        if !bool::from(presented.ct_eq(&state.0.admin_token_hash)) {
            return Err(ApiError::unauthorized());
        }
        let (method, path, headers, body) = read_body(req).await?;
        Ok(AdminCall { engine, method, path, headers, body })
    }
}

/// Parses a JSON body: 415 unless it says JSON, 400 naming the field otherwise.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
            || (mime.len() > 5 && mime.to_ascii_lowercase().starts_with("application/") && mime.ends_with("+json"))
    });
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    if nesting_depth(body) > JSON_DEPTH_MAX {
        return Err(ApiError::invalid(format!("JSON body nested deeper than {JSON_DEPTH_MAX} levels")));
    }
    // Plain serde_json first: tracking the field path costs on every field, and only an
    // error needs it. A body that fails is parsed again with tracking, so the message is the
    // same. No `end()` on either: trailing bytes stay accepted, as they always were.
    if let Ok(value) = T::deserialize(&mut serde_json::Deserializer::from_slice(body)) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::invalid(format!("malformed JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("{path}: {inner}")).with("field", path)
        }
    })?;
    Ok(value)
}

/// Deepest nesting any request of the contract needs is 4; this leaves room.
pub const JSON_DEPTH_MAX: usize = 32;

/// Deepest `[`/`{` nesting of a JSON text (strings skipped); one pass, no recursion. Checked
/// before parsing because serde skips unknown fields without serde_json's depth limit.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Like `parse_json`, but an empty body (with any content type) is `T::default()`.
pub fn parse_json_or_default<T: DeserializeOwned + Default>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    parse_json(headers, body)
}

/// The request's `Idempotency-Key` with its fingerprint (first 16 bytes of SHA-256 over
/// method, path and body; of HMAC-SHA256 under `secret` when given, for bodies holding a
/// card number, whose plain hash would give the number away to anyone trying them all).
/// `required`: 400 without one.
pub fn idempotency(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    required: bool,
    secret: Option<&[u8; 32]>,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return if required {
            Err(ApiError::invalid("the Idempotency-Key header is required on this route")
                .with("field", "Idempotency-Key"))
        } else {
            Ok(None)
        };
    };
    let key = value.to_str().map_err(|_| {
        ApiError::invalid("Idempotency-Key: must be 1..=255 printable ASCII characters")
            .with("field", "Idempotency-Key")
    })?;
    let parts = [method.as_str().as_bytes(), b" ", path.as_bytes(), b"\n", body];
    Ok(Some(Idempotency { key: key.to_string(), fingerprint: fingerprint(&parts, secret) }))
}

/// The first 16 bytes of SHA-256 over `parts`, or of HMAC-SHA256 under `secret`.
pub fn fingerprint(parts: &[&[u8]], secret: Option<&[u8; 32]>) -> [u8; 16] {
    use hmac::{Hmac, Mac};
    let digest: [u8; 32] = match secret {
        None => {
            let mut h = Sha256::new();
            parts.iter().for_each(|p| h.update(p));
            h.finalize().into()
        }
        Some(secret) => {
            let mut mac =
                <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length"));
            parts.iter().for_each(|p| mac.update(p));
            mac.finalize().into_bytes().into()
        }
    };
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

impl Call {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.headers, &self.body)
    }

    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        parse_json_or_default(&self.headers, &self.body)
    }

    pub fn idempotency(&self, required: bool) -> Result<Option<Idempotency>, ApiError> {
        idempotency(&self.method, &self.path, &self.headers, &self.body, required, None)
    }

    /// The idempotency of a request whose body holds a card number: its fingerprint is keyed.
    pub fn card_idempotency(&self, required: bool, host: &GatewayHost) -> Result<Option<Idempotency>, ApiError> {
        let secret = host.card_key.fingerprint_key();
        idempotency(&self.method, &self.path, &self.headers, &self.body, required, Some(secret))
    }

    /// The `Queue-Token` header.
    pub fn queue_token(&self) -> Result<Option<String>, ApiError> {
        match self.headers.get(&QUEUE_TOKEN) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| ApiError::invalid("Queue-Token: not a token").with("field", "Queue-Token")),
        }
    }
}
