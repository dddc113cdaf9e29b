//! surge-api: the HTTP contract (`docs/api.md`) on top of the engine host.
//!
//! - `app(state)` is the whole router; `main.rs` only parses flags, recovers and serves.
//! - Only this crate knows JSON and HTTP: handlers turn requests into `surge_core::Request`s,
//!   the engine (`engine/`) runs them on their shard (under its lock) and answers once durable,
//!   and `dto.rs` renders core's views (RFC 3339 times instead of `*_ms`).
//! - Card payments (`gateway.rs`): card numbers are sealed before the engine sees them, and
//!   the gateway's signed callback, the gateway worker's reports and the operators'
//!   dead-letter retries are commands on the payment's shard like any request. The worker
//!   (`surge_relay::gateway`) is the only caller of a gateway; no handler waits on one.
//! - Archived orders and payments (`cold.rs`): a GET of one is answered from the MariaDB
//!   cold store when there is one, outside every shard's lock, bounded; else 410.
//! - Every failure is `application/problem+json` (`error.rs`), including the router's own
//!   404/405 and extractor rejections (a response mapper rewrites any other error body).

pub mod auth;
pub mod batch_bin;
pub mod body;
pub mod cluster_http;
pub mod cold;
pub mod config;
pub mod console;
pub mod dto;
pub mod engine;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod log_window;
pub mod lookup;
pub mod mcp;
pub mod metrics;
#[cfg(feature = "cluster")]
pub mod node;
pub mod openapi;
pub mod order_json;
pub mod relaycmd;
pub mod results_dir;
pub mod routes;
pub mod signal;
pub mod walcmd;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;

use crate::engine::Engine;
use crate::error::{ApiError, PROBLEM_JSON};

/// Request bodies above this are refused with 413.
pub const BODY_BYTES_MAX: usize = surge_core::limits::BODY_BYTES_MAX;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// SHA-256 of the admin token.
    admin_token_hash: [u8; 32],
    /// Set once recovery is done; `None` before (every route but /healthz answers 503).
    engine: RwLock<Option<Arc<Engine>>>,
    limiter: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    /// Requests the limiter refused (429).
    rate_limited: std::sync::atomic::AtomicU64,
    http: metrics::HttpMetrics,
    /// The in-process relay's sinks (their lag shows in /metrics); in cluster mode, those
    /// of the partitions this node owns now.
    relay: RwLock<Vec<Arc<surge_relay::SinkStatus>>>,
    /// Card payments, when payment gateways are configured.
    gateway: std::sync::OnceLock<Arc<gateway::GatewayHost>>,
    /// Where GETs of archived orders and payments are answered from, when configured.
    cold: std::sync::OnceLock<cold::ColdStore>,
    /// The operators' console: sessions, samples, where it reads from.
    console: console::Console,
    /// Cluster mode: the partition table and forwarding, when the node runs in a cluster.
    cluster: std::sync::OnceLock<cluster_http::ClusterHttp>,
}

impl AppState {
    /// `merchant_rate_limit`: requests per second per merchant, also the burst; 0 = off.
    pub fn new(admin_token_hash: [u8; 32], merchant_rate_limit: u32) -> AppState {
        let limiter = std::num::NonZeroU32::new(merchant_rate_limit)
            .map(|rps| RateLimiter::keyed(Quota::per_second(rps).allow_burst(rps)));
        AppState(Arc::new(Inner {
            admin_token_hash,
            engine: RwLock::new(None),
            limiter,
            rate_limited: std::sync::atomic::AtomicU64::new(0),
            http: metrics::HttpMetrics::default(),
            relay: RwLock::new(Vec::new()),
            gateway: std::sync::OnceLock::new(),
            cold: std::sync::OnceLock::new(),
            console: console::Console::default(),
            cluster: std::sync::OnceLock::new(),
        }))
    }

    /// Makes the recovered engine available: from now on the server is ready.
    pub fn set_engine(&self, engine: Arc<Engine>) {
        *self.0.engine.write() = Some(engine);
    }

    pub fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.0
            .engine
            .read()
            .clone()
            .ok_or_else(|| ApiError::storage_unavailable("recovery is still running; retry shortly"))
    }

    /// Shows these relay sinks in /metrics and the console, in place of the earlier ones.
    pub fn set_relay_statuses(&self, statuses: Vec<Arc<surge_relay::SinkStatus>>) {
        *self.0.relay.write() = statuses;
    }

    /// Turns card payments on (once, before serving; later calls are ignored).
    pub fn set_gateway(&self, host: Arc<gateway::GatewayHost>) {
        let _ = self.0.gateway.set(host);
    }

    pub fn gateway(&self) -> Option<Arc<gateway::GatewayHost>> {
        self.0.gateway.get().cloned()
    }

    /// Answers GETs of archived orders and payments from `cold` (once, before serving;
    /// later calls are ignored).
    pub fn set_cold_store(&self, cold: cold::ColdStore) {
        let _ = self.0.cold.set(cold);
    }

    pub fn cold_store(&self) -> Option<&cold::ColdStore> {
        self.0.cold.get()
    }

    /// Runs this node as part of a cluster (once, before serving; later calls are ignored).
    pub fn set_cluster(&self, cluster: cluster_http::ClusterHttp) {
        let _ = self.0.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&cluster_http::ClusterHttp> {
        self.0.cluster.get()
    }

    pub fn console(&self) -> &console::Console {
        &self.0.console
    }

    pub fn admin_token_hash(&self) -> &[u8; 32] {
        &self.0.admin_token_hash
    }

    pub fn http(&self) -> &metrics::HttpMetrics {
        &self.0.http
    }

    /// The in-process relay's sinks (none before they start, or without a relay).
    pub fn relay_statuses(&self) -> Vec<Arc<surge_relay::SinkStatus>> {
        self.0.relay.read().clone()
    }

    /// The log directory the console's and the admin events look-ups read (never write),
    /// once `console().configure` has named it.
    pub fn wal_dir(&self) -> Option<std::path::PathBuf> {
        self.0.console.wal_dir()
    }

    /// Where the console and `/mcp` read `surge load` results.
    pub fn load_results_dir(&self) -> std::path::PathBuf {
        self.0.console.load_results_dir()
    }

    pub fn take_engine(&self) -> Option<Arc<Engine>> {
        self.0.engine.write().take()
    }
}

pub fn app(state: AppState) -> Router {
    use routes::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route("/admin", get(admin_page).layer(axum::middleware::from_fn(console::security_headers)))
        .route("/v1/merchants", post(create_merchant))
        .route("/v1/items/bulk", post(put_items))
        .route("/v1/items/{sku}", put(put_item).get(get_item))
        .route("/v1/items/{sku}/restock", post(restock))
        .route("/v1/holds", post(create_hold))
        .route("/v1/holds/{id}", get(get_hold))
        .route("/v1/holds/{id}/release", post(release_hold))
        .route("/v1/orders", post(create_order))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/orders/{id}/cancel", post(cancel_order))
        .route("/v1/orders/{id}/payments", post(pay_order))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/capture", post(capture_payment))
        .route("/v1/payments/{id}/refund", post(refund_payment))
        .route("/v1/customers/{id}/points", get(get_points))
        .route("/v1/customers/{id}/points/credit", post(credit_points))
        .route("/v1/ledger/accounts/{account}", get(get_account))
        .route("/v1/ledger/trial-balance", get(trial_balance))
        .route("/v1/queues/{id}", put(put_queue).get(get_queue))
        .route("/v1/queues/{id}/tokens", post(issue_token))
        .route("/v1/queues/{id}/tokens/{token}", get(get_token))
        .route("/v1/batch", post(batch))
        .route("/v1/gateway/callback", post(gateway::callback))
        .route("/v1/admin/dead-letters", get(gateway::list_dead_letters))
        .route("/v1/admin/dead-letters/{id}/retry", post(gateway::retry_dead_letter))
        .route("/v1/admin/gateway/reports", post(gateway::report))
        .merge(console::routes())
        .route("/v1/admin/merchants/{merchant_id}/orders/{id}", get(lookup::get_order))
        .route("/v1/admin/merchants/{merchant_id}/payments/{id}", get(lookup::get_payment))
        .route("/v1/admin/merchants/{merchant_id}/trial-balance", get(lookup::trial_balance))
        .route("/v1/admin/merchants/{merchant_id}/events/{aggregate_id}", get(lookup::events))
        .route("/v1/admin/metrics/window", get(lookup::metrics_window))
        .route("/v1/cluster", get(cluster_http::get_cluster))
        // MCP's streamable HTTP (JSON-RPC over POST), not a REST operation: see docs/api.md.
        .route(
            "/mcp",
            axum::routing::any_service(mcp::http::service(state.clone()))
                .layer(axum::middleware::from_fn_with_state(state.clone(), mcp::http::require_admin)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), cluster_http::forward))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "the process is up", body = openapi::Status))
)]
async fn healthz() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "recovery done and the log writable", body = openapi::Status),
        (status = 503, description = "storage_unavailable: recovering, or the log is not writable"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.engine() {
        Ok(engine) if engine.is_healthy() => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"status":"ready"}"#).into_response()
        }
        Ok(engine) => ApiError::storage_unavailable(format!(
            "the write-ahead log is not writable: {}",
            engine.last_failure().unwrap_or_default()
        ))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Turns any error body that is not problem+json into one (`problem_bodies`), then counts
/// every answer by route template, method and status, with its latency.
async fn track(State(state): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = metrics::route_index(req.uri().path());
    // One layer for both jobs rather than two boxed ones.
    let res = problem_bodies(next.run(req).await).await;
    state.0.http.record(route, method.as_str(), res.status().as_u16(), started.elapsed());
    res
}

#[utoipa::path(
    get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
async fn metrics_text(State(state): State<AppState>) -> Response {
    use metrics::metric;
    let mut out = String::with_capacity(4096);
    state.0.http.render(&mut out);
    let engine = state.0.engine.read().clone();
    metric(&mut out, "surge_ready", "gauge", "1 once recovery is done and the log is writable.", {
        u8::from(engine.as_ref().is_some_and(|e| e.is_healthy()))
    });
    if let Some(engine) = engine {
        let s = engine.stats();
        metric(&mut out, "surge_shards", "gauge", "Shards.", s.shards);
        out.push_str("# HELP surge_shard_queue_depth Requests waiting for or running on a shard (lock or log).\n");
        out.push_str("# TYPE surge_shard_queue_depth gauge\n");
        for (shard, depth) in s.queue_depths.iter().enumerate() {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!("surge_shard_queue_depth{{shard=\"{shard}\"}} {depth}\n"),
            );
        }
        engine.render_histograms(&mut out);
        engine.render_business(&mut out);
        metric(&mut out, "surge_merchants", "gauge", "Merchants.", s.merchants);
        metric(&mut out, "surge_storage_failures_total", "counter", "Log failures (each rebuilt the shards).", {
            s.storage_failures
        });
        metric(&mut out, "surge_snapshots_written_total", "counter", "Snapshots written since start.", {
            s.snapshots_written
        });
        metric(&mut out, "surge_records_since_snapshot", "gauge", "Log records appended since the last snapshot.", {
            s.records_since_snapshot
        });
        metric(&mut out, "surge_snapshot_lsn", "gauge", "LSN of the latest snapshot written since start.", {
            s.snapshot_lsn
        });
        metric(&mut out, "surge_snapshot_bytes", "gauge", "Size of the latest snapshot written since start.", {
            s.snapshot_bytes
        });
        let help = "Log record bytes appended since the last snapshot (the next waits for surge_snapshot_bytes).";
        metric(&mut out, "surge_log_bytes_since_snapshot", "gauge", help, s.log_bytes_since_snapshot);
        let help = "Wait for durability + encode + write + fsync of the latest snapshot.";
        metric(&mut out, "surge_snapshot_write_seconds", "gauge", help, s.snapshot_write.as_secs_f64());
        let help = "How long the latest snapshot held every shard's lock to freeze them.";
        metric(&mut out, "surge_snapshot_pause_seconds", "gauge", help, s.snapshot_pause.as_secs_f64());
        if let Some(w) = s.wal {
            metric(&mut out, "surge_wal_commits_total", "counter", "Group commits (write + fdatasync).", w.commits);
            metric(&mut out, "surge_wal_records_total", "counter", "Records made durable.", w.records);
            metric(&mut out, "surge_wal_bytes_total", "counter", "Bytes made durable.", w.bytes);
            let sync_s = w.sync_ns_total as f64 / 1e9;
            metric(&mut out, "surge_wal_sync_seconds_total", "counter", "Time in write + fdatasync.", sync_s);
            let max_s = w.sync_ns_max as f64 / 1e9;
            metric(&mut out, "surge_wal_sync_seconds_max", "gauge", "Slowest write + fdatasync.", max_s);
            wal_histograms(&mut out, &w);
            metric(&mut out, "surge_wal_last_batch_records", "gauge", "Records in the latest commit.", {
                w.last_batch_records
            });
            metric(&mut out, "surge_wal_durable_lsn", "gauge", "Highest durable LSN.", w.durable_lsn);
            metric(&mut out, "surge_wal_queued_records", "gauge", "Records waiting for the writer.", w.queued_records);
            metric(&mut out, "surge_wal_queue_full_total", "counter", "Appends refused: queue full.", w.queue_full);
            metric(&mut out, "surge_wal_segments_created_total", "counter", "Segments created.", w.segments_created);
            metric(&mut out, "surge_wal_segments_deleted_total", "counter", "Segments deleted.", w.segments_deleted);
        }
    }
    let help = "Requests refused with 429 by the per-merchant rate limit (--merchant-rate-limit).";
    metric(&mut out, "surge_rate_limited_requests_total", "counter", help, {
        state.0.rate_limited.load(std::sync::atomic::Ordering::Relaxed)
    });
    let sinks = state.relay_statuses();
    if !sinks.is_empty() {
        surge_relay::status::render_prometheus(&sinks, &mut out);
    }
    if let Some(cold) = state.cold_store() {
        cold.render_prometheus(&mut out);
    }
    if let Some(host) = state.gateway() {
        host.render_prometheus(&mut out);
        let engine = state.0.engine.read().clone();
        let open = match engine {
            Some(engine) => gateway::dead_letters_open(&engine).await,
            None => None,
        };
        if let Some(open) = open {
            metric(&mut out, "surge_dead_letters_open", "gauge", "Gateway operations given up and not resolved.", open);
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

/// Per-commit histograms of the log: records per group commit and write + fdatasync time.
fn wal_histograms(out: &mut String, w: &surge_wal::WalStats) {
    use std::fmt::Write as _;
    use surge_wal::stats::{BATCH_RECORDS_BOUNDS, SYNC_NS_BOUNDS};
    let _ = writeln!(out, "# HELP surge_wal_commit_records Records per group commit (one write + one fdatasync).");
    let _ = writeln!(out, "# TYPE surge_wal_commit_records histogram");
    let bounds = BATCH_RECORDS_BOUNDS.iter().map(|b| *b as f64);
    metrics::render_buckets(out, "surge_wal_commit_records", "", bounds, &w.batch_records_hist, w.records as f64);
    let _ = writeln!(out, "# HELP surge_wal_sync_seconds Time of each group commit's write + fdatasync.");
    let _ = writeln!(out, "# TYPE surge_wal_sync_seconds histogram");
    let bounds = SYNC_NS_BOUNDS.iter().map(|b| *b as f64 / 1e9);
    let sum_s = w.sync_ns_total as f64 / 1e9;
    metrics::render_buckets(out, "surge_wal_sync_seconds", "", bounds, &w.sync_ns_hist, sum_s);
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "this document (OpenAPI 3.1)", body = Object))
)]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| serde_json::to_vec(&openapi::document()).unwrap_or_default());
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

/// `GET /admin`: with a console session (a cookie, `console/`), the console; with the
/// admin token as Bearer, or as the password of HTTP Basic, a small status page that
/// refreshes itself every 2 s; otherwise the console's sign-in page for a browser
/// (`Accept: text/html`), or a 401 problem with a Basic challenge.
#[utoipa::path(
    get, path = "/admin", tag = "admin", security(("admin" = []), ("admin_basic" = [])),
    responses(
        (status = 200, description = "the operators' status page (admin token), or the console (session cookie)", content_type = "text/html", body = String),
        (status = 401, description = "unauthorized: the admin token, as Bearer or as an HTTP Basic password; a browser (Accept: text/html) without credentials gets the console's sign-in page instead of the problem"),
    )
)]
async fn admin_page(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(answer) = console::admin_root(&state, &headers) {
        return answer;
    }
    let engine = state.0.engine.read().clone();
    let mut rows: Vec<(String, String)> = Vec::new();
    let ready = engine.as_ref().is_some_and(|e| e.is_healthy());
    rows.push(("ready".into(), ready.to_string()));
    if let Some(e) = &engine {
        let s = e.stats();
        rows.push(("shards".into(), s.shards.to_string()));
        rows.push(("merchants".into(), s.merchants.to_string()));
        rows.push(("storage failures".into(), s.storage_failures.to_string()));
        rows.push(("last storage failure".into(), e.last_failure().unwrap_or_else(|| "-".into())));
        rows.push(("snapshots written".into(), s.snapshots_written.to_string()));
        rows.push(("records since snapshot".into(), s.records_since_snapshot.to_string()));
        if let Some(w) = s.wal {
            rows.push(("durable LSN".into(), w.durable_lsn.to_string()));
            rows.push(("group commits".into(), w.commits.to_string()));
            rows.push(("records durable".into(), w.records.to_string()));
            let avg_us = w.sync_ns_total.checked_div(w.commits).unwrap_or(0) / 1000;
            rows.push(("avg write+fsync".into(), format!("{avg_us} us")));
            rows.push(("max write+fsync".into(), format!("{} us", w.sync_ns_max / 1000)));
            rows.push(("records in last commit".into(), w.last_batch_records.to_string()));
        }
    }
    if let Some(host) = state.gateway() {
        use std::sync::atomic::Ordering::Relaxed;
        match host.worker_status() {
            Some(w) => {
                for (i, g) in w.gateways.iter().enumerate() {
                    rows.push((format!("gateway {} breaker", g.name), w.breaker(i).as_str().to_string()));
                }
                let pending = w.payments_pending.load(Relaxed);
                rows.push(("card payments pending".into(), pending.to_string()));
                let oldest = if pending == 0 { "-".into() } else { format!("{:.1} s", w.oldest_pending_age_s()) };
                rows.push(("oldest pending card payment".into(), oldest));
            }
            // `--gateway-worker external` (the worker runs in `surge relay`), or not started yet.
            None => rows.push(("gateway worker".into(), "not in this process".into())),
        }
        let open = match &engine {
            Some(e) => gateway::dead_letters_open(e).await,
            None => None,
        };
        if let Some(open) = open {
            rows.push(("dead letters open".into(), open.to_string()));
        }
    }
    let classes = state.0.http.by_class();
    for (i, n) in classes.iter().enumerate().skip(1) {
        rows.push((format!("HTTP {}xx", i + 1), n.to_string()));
    }
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    // Styled by the console's stylesheet: the console's CSP allows no inline style.
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>surge admin</title><link rel=stylesheet href=/admin/console.css></head>\
         <body><main><h1>surge</h1><table>",
    );
    for (k, v) in rows {
        html.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>", escape(&k), escape(&v)));
    }
    html.push_str(
        "</table><p><a href=/metrics>/metrics</a> · <a href=/openapi.json>/openapi.json</a></p></main></body></html>",
    );
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Any error response that is not problem+json yet (axum's rejections, 405 with `Allow`)
/// becomes one, keeping its status and headers.
async fn problem_bodies(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let content_type = res.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    let is_problem = content_type.is_some_and(|v| v == PROBLEM_JSON.as_bytes());
    // The console's sign-in page answers 401 as a page a person reads.
    let is_page = content_type.is_some_and(|v| v.starts_with(b"text/html"));
    if is_problem || is_page {
        return res;
    }
    let (parts, body) = res.into_parts();
    let detail = match axum::body::to_bytes(body, 4096).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut fixed = ApiError::from_status(status, detail).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    fixed
}
