//! The HTTP side of the card path: sealing card numbers before the engine sees them, the
//! gateway's signed callback, the engine as the worker's command port, and the operators'
//! dead-letter routes. The worker itself (`surge_relay::gateway`) reads the log and calls
//! the gateway; nothing here calls a gateway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use surge_core::error::CoreError;
use surge_core::ids::Numbered;
use surge_core::state::DeadLetterStatus;
use surge_core::{Command, Request};
use surge_relay::gateway::http_port::ReportBody;
use surge_relay::gateway::signature::{self, SignatureError, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use surge_relay::gateway::{
    CardKey, CommandPort, GatewayConfig, GatewayEndpoint, GatewayStatus, GatewayWorker, KeySource, PortError,
    PortFuture,
};

use crate::config::GatewaySettings;

use crate::dto::{self, DeadLetter};
use crate::engine::{Engine, ExecError};
use crate::error::ApiError;
use crate::extract::AdminCall;
use crate::AppState;

/// What the HTTP host needs for card payments; present only when gateways are configured.
pub struct GatewayHost {
    pub card_key: CardKey,
    callback_secret: Vec<u8>,
    tolerance_s: u64,
    /// The workers' statuses (for /metrics and /admin): the one worker's in single-node
    /// mode, one per owned partition in cluster mode.
    workers: parking_lot::RwLock<Vec<Arc<GatewayStatus>>>,
    callbacks: CallbackCounters,
}

/// Callbacks by how they were answered (the `result` label of
/// `surge_gateway_callbacks_total`).
#[derive(Default)]
struct CallbackCounters {
    applied: AtomicU64,
    duplicate: AtomicU64,
    unknown: AtomicU64,
    bad_signature: AtomicU64,
    malformed: AtomicU64,
    unavailable: AtomicU64,
}

impl GatewayHost {
    pub fn new(card_key: CardKey, callback_secret: Vec<u8>) -> GatewayHost {
        assert!(!callback_secret.is_empty(), "the callback secret is not empty");
        GatewayHost {
            card_key,
            callback_secret,
            tolerance_s: signature::TOLERANCE_S_DEFAULT,
            workers: parking_lot::RwLock::new(Vec::new()),
            callbacks: CallbackCounters::default(),
        }
    }

    /// Shows the running worker's status in /metrics and the console.
    pub fn set_worker_status(&self, status: Arc<GatewayStatus>) {
        self.set_worker_statuses(vec![status]);
    }

    /// Shows these workers' statuses, summed, in place of the earlier ones.
    pub fn set_worker_statuses(&self, statuses: Vec<Arc<GatewayStatus>>) {
        *self.workers.write() = statuses;
    }

    /// The worker's status, or the sum of the workers' (`None`: no worker runs here).
    pub fn worker_status(&self) -> Option<Arc<GatewayStatus>> {
        let workers = self.workers.read();
        match workers.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(Arc::new(GatewayStatus::sum(many))),
        }
    }

    /// Appends the callback counters and the worker's metrics in Prometheus text.
    pub fn render_prometheus(&self, out: &mut String) {
        let c = &self.callbacks;
        crate::metrics::counters_by_result(
            out,
            "surge_gateway_callbacks_total",
            "Gateway callbacks received, by how they were answered.",
            &[
                ("applied", &c.applied),
                ("duplicate", &c.duplicate),
                ("unknown", &c.unknown),
                ("bad_signature", &c.bad_signature),
                ("malformed", &c.malformed),
                ("unavailable", &c.unavailable),
            ],
        );
        if let Some(status) = self.worker_status() {
            status.render_prometheus(out);
        }
    }
}

/// The engine as the worker's way back in: a report is a command on the payment's shard,
/// like any request, durable before it counts.
pub struct EnginePort(pub Arc<Engine>);

impl CommandPort for EnginePort {
    fn submit(&self, merchant: Arc<str>, command: Command) -> PortFuture {
        let engine = self.0.clone();
        Box::pin(async move {
            let req = Request { merchant: merchant.to_string(), idempotency: None, command };
            match engine.execute(req).await {
                Ok(_) => Ok(()),
                Err(ExecError::Core(e)) => Err(PortError::Refused(e.to_string())),
                Err(ExecError::Storage(e)) => Err(PortError::Unavailable(e.to_string())),
            }
        })
    }
}

/// Builds the host side from the settings: reads (or, by default, creates) the card key.
pub fn host(settings: &GatewaySettings, data_dir: &std::path::Path) -> Result<GatewayHost, String> {
    if settings.secret.is_empty() {
        return Err("--gateway-secret (SURGE_GATEWAY_SECRET) is required with --gateway-url".into());
    }
    let (path, create) = match &settings.card_key_file {
        Some(path) => (path.clone(), false),
        None => (data_dir.join(crate::config::CARD_KEY_FILE), true),
    };
    let (card_key, source) = CardKey::load(&path, create).map_err(|e| format!("card key: {e}"))?;
    if source == KeySource::Generated {
        tracing::warn!(
            path = %path.display(),
            key_id = %card_key.id(),
            "generated a key to seal card numbers; keep it with the data directory (without it the \
             worker cannot read pending card payments) or give one with --card-key-file"
        );
    }
    Ok(GatewayHost::new(card_key, settings.secret.as_bytes().to_vec()))
}

/// The worker's configuration from the settings; `default_callback_url` when none is given.
pub fn worker_config(settings: &GatewaySettings, default_callback_url: String) -> Result<GatewayConfig, String> {
    let gateways = settings.urls.iter().map(|u| GatewayEndpoint::parse(u)).collect::<Result<Vec<_>, _>>()?;
    let callback_url = settings.callback_url.clone().unwrap_or(default_callback_url);
    let mut config = GatewayConfig::new(gateways, callback_url);
    config.submit_deadline_ms = settings.submit_deadline_ms;
    config.reconcile_after_ms = settings.reconcile_after_ms;
    config.settle_deadline_ms = settings.settle_deadline_ms;
    config.response_timeout_ms = settings.response_timeout_ms;
    config.op_attempts_max = settings.op_attempts_max;
    config.op_deadline_ms = settings.op_deadline_ms;
    config.in_flight_max = settings.in_flight_max;
    config.validate()?;
    Ok(config)
}

/// `http://{listen}/v1/gateway/callback`, on loopback when listening on every address.
pub fn callback_url_for(listen: std::net::SocketAddr) -> String {
    let ip = listen.ip();
    let host = match ip {
        _ if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    format!("http://{host}:{}{CALLBACK_PATH}", listen.port())
}

pub const CALLBACK_PATH: &str = "/v1/gateway/callback";

/// Starts the worker on the log in `wal_dir`, reporting into `engine`.
pub fn start_worker(
    settings: &GatewaySettings,
    listen: std::net::SocketAddr,
    wal_dir: std::path::PathBuf,
    host: &GatewayHost,
    engine: Arc<Engine>,
) -> Result<GatewayWorker, String> {
    let config = worker_config(settings, callback_url_for(listen))?;
    let port = Arc::new(EnginePort(engine));
    let source = Arc::new(surge_relay::WalSource::new(wal_dir));
    let worker = GatewayWorker::spawn(source, config, host.card_key.clone(), port)
        .map_err(|e| format!("gateway worker: {e}"))?;
    host.set_worker_status(worker.status().clone());
    Ok(worker)
}

// ---- the callback ----

/// The gateway's callback body, in its camelCase (`transactionKey`, `orderId`) or in snake
/// case.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CallbackBody {
    #[serde(alias = "transactionKey")]
    transaction_key: String,
    /// `{merchant_id}:pay_{n}`, as surge sent it.
    #[serde(alias = "orderId")]
    order_id: String,
    status: CallbackStatus,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CallbackStatus {
    Success,
    Failed,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CallbackAnswer {
    /// `applied`, or `duplicate` when it changed nothing (settled already).
    #[schema(schema_with = crate::openapi::schema::applied)]
    status: &'static str,
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[utoipa::path(
    post, path = "/v1/gateway/callback", tag = "gateway", security(()),
    params(
        ("X-Signature" = String, Header, pattern = "^[0-9a-f]{64}$",
         description = "lowercase hex of HMAC-SHA256(secret, \"{X-Timestamp}.{raw body}\")"),
        ("X-Timestamp" = String, Header, pattern = "^[0-9]+$", description = "Unix seconds, within 300 s of now"),
    ),
    request_body(content = CallbackBody, example = json!({"transactionKey": "tx_1", "orderId": "acme:pay_1", "status": "SUCCESS"})),
    responses(
        (status = 200, description = "applied, or duplicate when the payment was settled already", body = CallbackAnswer),
        (status = 400, description = "invalid_request: the body (signed) does not parse"),
        (status = 401, description = "unauthorized: the signature is missing, stale or wrong"),
        (status = 404, description = "not_found: no such transaction, or no payment gateway is configured"),
        (status = 503, description = "storage_unavailable: not applied, the gateway retries"),
    )
)]
/// `POST /v1/gateway/callback`: no bearer token; the signature is the authentication, and it
/// is checked before the body is even parsed.
pub async fn callback(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(host) = state.gateway() else {
        return ApiError::not_found("no payment gateway is configured").into_response();
    };
    match handle_callback(&state, &host, &headers, &body).await {
        Ok(answer) => {
            let counter = if answer.status == "applied" { &host.callbacks.applied } else { &host.callbacks.duplicate };
            counter.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Err(e) => {
            let c = &host.callbacks;
            let counter = match e.status {
                StatusCode::UNAUTHORIZED => &c.bad_signature,
                StatusCode::NOT_FOUND => &c.unknown,
                StatusCode::SERVICE_UNAVAILABLE => &c.unavailable,
                _ => &c.malformed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            e.into_response()
        }
    }
}

async fn handle_callback(
    state: &AppState,
    host: &GatewayHost,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<CallbackAnswer, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verified = signature::verify(
        &host.callback_secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        body,
        now_s(),
        host.tolerance_s,
    );
    if let Err(e) = verified {
        let detail = match e {
            SignatureError::Stale => "X-Timestamp is too far from now",
            SignatureError::Missing => "X-Signature and X-Timestamp are required",
            SignatureError::Malformed | SignatureError::Mismatch => "the signature does not match",
        };
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail));
    }
    let body: CallbackBody =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("malformed callback body: {e}")))?;
    // `orderId` is `{merchant}:pay_{n}`, as the worker sent it. A merchant id may hold ':',
    // a payment id never does: split at the last one.
    let unknown = || ApiError::not_found("unknown transaction");
    let (merchant, payment) = body.order_id.rsplit_once(':').ok_or_else(unknown)?;
    if Numbered::Payment.parse(payment).is_none() || merchant.is_empty() {
        return Err(unknown());
    }
    let engine = state.engine()?;
    let command = match body.status {
        CallbackStatus::Success => {
            Command::GatewayApproved { payment: payment.to_string(), transaction_key: body.transaction_key }
        }
        CallbackStatus::Failed => Command::GatewayDeclined {
            payment: payment.to_string(),
            reason: body.reason.unwrap_or_else(|| "declined by the gateway".into()),
        },
    };
    let req = Request { merchant: merchant.to_string(), idempotency: None, command };
    match engine.execute(req).await {
        Ok(executed) => Ok(CallbackAnswer { status: if executed.changed { "applied" } else { "duplicate" } }),
        Err(ExecError::Core(CoreError::NotFound { .. } | CoreError::InvalidRequest { .. })) => Err(unknown()),
        // Settled otherwise already (e.g. reconciled, then this callback came late).
        Err(ExecError::Core(CoreError::InvalidState { .. })) => Ok(CallbackAnswer { status: "duplicate" }),
        Err(e @ ExecError::Core(_)) => Err(crate::routes::exec_error(e)),
        // Not applied: the gateway retries it.
        Err(e @ ExecError::Storage(_)) => Err(crate::routes::exec_error(e)),
    }
}

// ---- reports of an external worker (admin) ----

#[utoipa::path(
    post, path = "/v1/admin/gateway/reports", tag = "admin", security(("admin" = [])),
    request_body(content = crate::openapi::ReportDoc, example = json!({"merchant_id": "acme", "command": {"GatewayDeclined": {"payment": "pay_1", "reason": "do_not_honor"}}})),
    responses(
        (status = 200, description = "applied, or duplicate when it changed nothing", body = CallbackAnswer),
        (status = 400, description = "invalid_request: not one of the worker's reports, or a transaction key that is not the payment's"),
        (status = 404, description = "not_found: the payment, or no payment gateway is configured"),
        (status = 409, description = "invalid_state"),
    )
)]
/// `POST /v1/admin/gateway/reports`: a worker running in `surge relay` reports what a
/// gateway said. Only the worker's commands are taken; each runs on its payment's shard.
pub async fn report(State(state): State<AppState>, call: AdminCall) -> Result<Response, ApiError> {
    if state.gateway().is_none() {
        return Err(ApiError::not_found("no payment gateway is configured"));
    }
    let mut body: serde_json::Value = crate::extract::parse_json(&call.headers, &call.body)?;
    whole_numbers(&mut body);
    let body: ReportBody = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(format!("{path}: {}", e.into_inner())).with("field", path)
    })?;
    let is_report = matches!(
        body.command,
        Command::GatewayAccepted { .. }
            | Command::GatewayApproved { .. }
            | Command::GatewayDeclined { .. }
            | Command::GatewayGaveUp { .. }
            | Command::GatewayOpFailed { .. }
            | Command::ResolveDeadLetter { .. }
    );
    if !is_report {
        return Err(
            ApiError::invalid("command: only the gateway worker's reports are taken here").with("field", "command")
        );
    }
    let req = Request { merchant: body.merchant_id, idempotency: None, command: body.command };
    let executed = call.engine.execute(req).await.map_err(crate::routes::exec_error)?;
    let status = if executed.changed { "applied" } else { "duplicate" };
    Ok(crate::routes::json(StatusCode::OK, &CallbackAnswer { status }))
}

/// Numbers written with a zero fraction (`3015.0`) as the integers they are, as every route
/// takes them (`body::whole`): core's commands deserialize integers only.
fn whole_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(f))
            {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

// ---- dead letters (admin) ----

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// `open`, `retried`, `resolved`; all when absent.
    #[serde(default)]
    #[param(schema_with = crate::openapi::schema::dead_letter_status_filter)]
    status: Option<String>,
    /// At most this many (default 100); values outside 1..=1000 are taken as the nearest bound.
    #[serde(default)]
    #[param(schema_with = crate::openapi::schema::list_limit)]
    limit: Option<usize>,
}

/// Most dead letters one listing returns.
pub const DEAD_LETTERS_LIST_MAX: usize = 1_000;

#[utoipa::path(
    get, path = "/v1/admin/dead-letters", tag = "admin", security(("admin" = [])),
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "captures, voids and refunds the gateway worker gave up on, newest first", body = dto::DeadLetters),
        (status = 400, description = "invalid_request: the query"),
        (status = 503, description = "partition_moving: cluster mode, a partition has no node serving it or its node did not answer"),
    )
)]
/// `GET /v1/admin/dead-letters`: across merchants, newest first. In cluster mode the node
/// that takes the request reads the partitions it serves and asks every other node for
/// theirs (`cluster_http::gather`); a node asked so answers its part only.
pub async fn list_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<DeadLetterQuery>,
    call: AdminCall,
) -> Result<Response, ApiError> {
    let Some(cluster) = state.cluster() else {
        let (all, _) = dead_letters(&state, &call.engine, q.status.as_deref(), q.limit).await?;
        let items: Vec<_> = all.iter().map(|(merchant, view)| dto::dead_letter(view, Some(merchant))).collect();
        return Ok(crate::routes::json(StatusCode::OK, &dto::DeadLetters { dead_letters: items }));
    };
    let (status, limit) = list_filter(q.status.as_deref(), q.limit)?;
    let owned = call
        .engine
        .read_owned(move |shard| shard_dead_letters(shard, status, limit))
        .await
        .map_err(crate::routes::exec_error)?;
    let partitions: Vec<u32> = owned.iter().map(|(p, _)| *p).collect();
    let mut listed: Vec<serde_json::Value> = owned
        .iter()
        .flat_map(|(_, letters)| letters)
        .filter_map(|(merchant, view)| serde_json::to_value(dto::dead_letter(view, Some(merchant))).ok())
        .collect();
    if headers.contains_key(crate::cluster_http::FORWARDED_HEADER) {
        let part = crate::routes::json(StatusCode::OK, &serde_json::json!({ "dead_letters": listed }));
        return Ok(crate::cluster_http::gathered_part(part, &partitions));
    }
    let filter = q.status.as_deref().map_or(String::new(), |s| format!("&status={s}"));
    let path = format!("/v1/admin/dead-letters?limit={limit}{filter}");
    #[derive(Deserialize)]
    struct Part {
        dead_letters: Vec<serde_json::Value>,
    }
    for body in crate::cluster_http::gather(cluster, &headers, &path, &partitions).await? {
        let part: Part = serde_json::from_slice(&body).map_err(|e| {
            ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE, format!("a node's dead letters do not parse: {e}"))
        })?;
        listed.extend(part.dead_letters);
    }
    // Newest first: `created_at` is RFC 3339 in UTC with milliseconds, so its text sorts as
    // its time does.
    let created_at = |v: &serde_json::Value| v.get("created_at").and_then(|t| t.as_str()).unwrap_or("").to_owned();
    listed.sort_by_key(|v| std::cmp::Reverse(created_at(v)));
    listed.truncate(limit);
    Ok(crate::routes::json(StatusCode::OK, &serde_json::json!({ "dead_letters": listed })))
}

/// A listing's filter: `status` (`open`, `retried`, `resolved`; all when `None`), and
/// `limit`, 100 by default, kept within 1..=1,000.
fn list_filter(status: Option<&str>, limit: Option<usize>) -> Result<(Option<DeadLetterStatus>, usize), ApiError> {
    let status = match status {
        None => None,
        Some("open") => Some(DeadLetterStatus::Open),
        Some("retried") => Some(DeadLetterStatus::Retried),
        Some("resolved") => Some(DeadLetterStatus::Resolved),
        Some(_) => {
            return Err(ApiError::invalid("status: must be open, retried or resolved").with("field", "status"));
        }
    };
    Ok((status, limit.unwrap_or(100).clamp(1, DEAD_LETTERS_LIST_MAX)))
}

/// A shard's dead letters with `status` (all when `None`), at most `limit` per merchant.
fn shard_dead_letters(
    shard: &surge_core::Shard,
    status: Option<DeadLetterStatus>,
    limit: usize,
) -> Vec<(Arc<str>, surge_core::view::DeadLetterView)> {
    let mut out = Vec::new();
    // Bounded: `limit` per merchant, cut to `limit` overall by the caller.
    for m in shard.merchants() {
        for view in m.dead_letter_views(status, limit) {
            out.push((m.id.clone(), view));
        }
    }
    out
}

/// A listing of dead letters: newest first, and the console's note in cluster mode.
pub type DeadLetterListing = (Vec<(Arc<str>, surge_core::view::DeadLetterView)>, Option<String>);

/// Dead letters across merchants, newest first: `status` filters (`open`, `retried`,
/// `resolved`; all when `None`), `limit` defaults to 100 and is kept within 1..=1,000.
/// Shared by `GET /v1/admin/dead-letters` outside cluster mode and the console (which, in
/// cluster mode, reads this node's partitions: `console::read_across`).
pub async fn dead_letters(
    state: &AppState,
    engine: &Engine,
    status: Option<&str>,
    limit: Option<usize>,
) -> Result<DeadLetterListing, ApiError> {
    let (status, limit) = list_filter(status, limit)?;
    let (per_shard, note) =
        crate::console::read_across(state, engine, move |shard| shard_dead_letters(shard, status, limit)).await?;
    let mut all: Vec<_> = per_shard.into_iter().flatten().collect();
    all.sort_by_key(|(_, view)| std::cmp::Reverse(view.created_at_ms));
    all.truncate(limit);
    Ok((all, note))
}

#[utoipa::path(
    post, path = "/v1/admin/dead-letters/{id}/retry", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path, pattern = "^[A-Za-z0-9_.:-]+:dl_[1-9][0-9]*$", description = "{merchant_id}:dl_{n}", example = "acme:dl_1")),
    responses(
        (status = 200, description = "requested again with the same idempotency key", body = DeadLetter),
        (status = 404, description = "not_found"),
        (status = 409, description = "invalid_state: not open"),
    )
)]
/// `POST /v1/admin/dead-letters/{merchant_id}:{dl_n}/retry`.
pub async fn retry_dead_letter(Path(id): Path<String>, call: AdminCall) -> Result<Response, ApiError> {
    retry(&call.engine, &id).await
}

/// Asks for dead letter `{merchant_id}:dl_{n}` again (a command on its merchant's shard,
/// decided like any other). Shared by the admin route and the console.
pub async fn retry(engine: &Engine, id: &str) -> Result<Response, ApiError> {
    let (merchant, dead_letter) = id
        .rsplit_once(':')
        .filter(|(m, d)| !m.is_empty() && Numbered::DeadLetter.parse(d).is_some())
        .ok_or_else(|| ApiError::not_found("dead letter not found (ids are {merchant_id}:dl_{n})"))?;
    let req = Request {
        merchant: merchant.to_string(),
        idempotency: None,
        command: Command::RetryDeadLetter { dead_letter: dead_letter.to_string() },
    };
    let executed = engine.execute(req).await.map_err(crate::routes::exec_error)?;
    match &executed.reply {
        surge_core::Reply::DeadLetter(view) => {
            Ok(crate::routes::json(StatusCode::OK, &dto::dead_letter(view, Some(merchant))))
        }
        _ => Ok(crate::routes::json(StatusCode::OK, &serde_json::json!({ "status": "retrying" }))),
    }
}

/// Dead letters not resolved, across merchants (a gauge); in cluster mode, of the
/// partitions this node serves (the cluster's count is the sum over its nodes).
pub async fn dead_letters_open(engine: &Engine) -> Option<u64> {
    let counts = engine
        .read_owned(|shard| {
            shard
                .merchants()
                .map(|m| m.dead_letters.iter().filter(|d| d.status == DeadLetterStatus::Open).count() as u64)
                .sum::<u64>()
        })
        .await
        .ok()?;
    Some(counts.into_iter().map(|(_, count)| count).sum())
}
