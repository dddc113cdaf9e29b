//! What each MCP tool does, as plain async functions over the server's HTTP API
//! (`backend.rs`), shared by both transports. The read-only tools get a [`Reads`], which can
//! only send GETs: nothing they do can change state. `retry_dead_letter` is the one tool
//! with a [`Writes`], and it sends nothing unless asked with `confirm: true`.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::Method;
use rmcp::schemars;
use serde::Deserialize;
use serde_json::{json, Value};
use surge_core::ids::is_valid_id;

use super::backend::{Answer, Backend, BackendError, Caller};
use super::load_results::{self, LoadResultError};
use super::prom::{bucket_delta, quantile, Reading};

/// Longest `metrics_summary` window, so one tool call holds nothing for long.
pub const WINDOW_SECONDS_MAX: u64 = 60;
const WINDOW_SECONDS_DEFAULT: u64 = 5;
/// History events `find_order` / `find_payment` list at most.
pub const HISTORY_LIMIT_MAX: u32 = 1_000;
const HISTORY_LIMIT_DEFAULT: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The server refused the request (its problem+json is kept).
    #[error("the server answered {status}: {detail}")]
    Server { status: u16, detail: String, problem: Value },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    LoadResult(#[from] LoadResultError),
}

impl ToolError {
    /// The structured form a client sees with `isError: true`.
    pub fn to_json(&self) -> Value {
        match self {
            ToolError::Server { status, problem, .. } => {
                json!({"error": self.to_string(), "status": status, "problem": problem})
            }
            _ => json!({"error": self.to_string()}),
        }
    }
}

/// The server's API for reading: GET only.
pub struct Reads<'a> {
    backend: &'a dyn Backend,
    caller: &'a Caller,
}

impl<'a> Reads<'a> {
    pub fn new(backend: &'a dyn Backend, caller: &'a Caller) -> Reads<'a> {
        Reads { backend, caller }
    }

    async fn get(&self, path: &str) -> Result<Answer, ToolError> {
        Ok(self.backend.send(self.caller, Method::GET, path).await?)
    }

    /// GET `path` as JSON, or the server's refusal as an error.
    async fn json(&self, path: &str) -> Result<Value, ToolError> {
        ok_json(self.get(path).await?)
    }
}

/// The server's API for the one tool that may change something.
pub struct Writes<'a> {
    backend: &'a dyn Backend,
    caller: &'a Caller,
}

impl<'a> Writes<'a> {
    pub fn new(backend: &'a dyn Backend, caller: &'a Caller) -> Writes<'a> {
        Writes { backend, caller }
    }

    async fn post(&self, path: &str) -> Result<Value, ToolError> {
        ok_json(self.backend.send(self.caller, Method::POST, path).await?)
    }

    fn reads(&self) -> Reads<'a> {
        Reads { backend: self.backend, caller: self.caller }
    }
}

fn ok_json(answer: Answer) -> Result<Value, ToolError> {
    if answer.ok() {
        return Ok(answer.json()?);
    }
    let problem = answer.json().unwrap_or_else(|_| Value::String(answer.text().chars().take(500).collect()));
    let detail = problem["detail"].as_str().map_or_else(|| problem.to_string(), str::to_string);
    Err(ToolError::Server { status: answer.status, detail, problem })
}

/// An id that can stand as one path segment: the contract's id syntax, and not `.`/`..`
/// (which a URL would resolve as a step up).
fn segment(what: &str, id: &str) -> Result<(), ToolError> {
    if is_valid_id(id) && !id.bytes().all(|b| b == b'.') {
        Ok(())
    } else {
        Err(ToolError::Invalid(format!("{what}: 1..=64 characters of [A-Za-z0-9_.:-], got {id:?}")))
    }
}

// ---- parameters (their doc comments are the JSON schema's descriptions) ----

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct MetricsSummaryParams {
    /// The last this many minutes (1..=10), from the server's own readings of its counters
    /// and histograms (GET /v1/admin/metrics/window): answers at once. When given,
    /// `window_seconds` is not used.
    #[serde(default)]
    pub minutes: Option<u64>,
    /// Without `minutes`: seconds between the two samples of /metrics the rates are computed
    /// over (1..=60, default 5). The tool answers after this long.
    #[serde(default)]
    pub window_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FindOrderParams {
    /// The merchant's id (orders are numbered per merchant).
    pub merchant_id: String,
    /// The order's id, `ord_{n}`.
    pub order_id: String,
    /// Newest history events to list (1..=1000, default 100).
    #[serde(default)]
    pub history_limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FindPaymentParams {
    /// The merchant's id (payments are numbered per merchant).
    pub merchant_id: String,
    /// The payment's id, `pay_{n}`.
    pub payment_id: String,
    /// Newest history events to list (1..=1000, default 100).
    #[serde(default)]
    pub history_limit: Option<u32>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ListDeadLettersParams {
    /// `open`, `retried` or `resolved`; all when absent.
    #[serde(default)]
    pub status: Option<String>,
    /// At most this many, newest first (1..=1000, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RetryDeadLetterParams {
    /// `{merchant_id}:dl_{n}`, as `list_dead_letters` names it (`merchant_id` and `id`).
    pub dead_letter_id: String,
    /// Must be `true` to retry: without it the tool only shows the dead letter and changes
    /// nothing.
    #[serde(default)]
    pub confirm: bool,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct LoadRunSummaryParams {
    /// A result file name in the results directory (e.g. `flash-sale-1764990000.json`); the
    /// newest when absent.
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TrialBalanceParams {
    /// The merchant's id.
    pub merchant_id: String,
}

// ---- the tools ----

/// `health`.
pub async fn health(api: &Reads<'_>) -> Result<Value, ToolError> {
    let readyz = api.get("/readyz").await?;
    let ready_detail =
        if readyz.ok() { Value::Null } else { readyz.json().map_or(Value::Null, |p| p["detail"].clone()) };
    let metrics = api.get("/metrics").await?;
    if !metrics.ok() {
        return Err(ToolError::Server { status: metrics.status, detail: "GET /metrics".into(), problem: Value::Null });
    }
    let m = Reading::parse(&metrics.text());
    let breaker = |v: f64| match v as u8 {
        0 => "closed",
        1 => "open",
        2 => "half-open",
        _ => "unknown",
    };
    let sinks: Vec<Value> = m
        .each("surge_relay_lag_records", &[])
        .filter_map(|s| s.label("sink"))
        .map(|sink| {
            let l = [("sink", sink)];
            json!({
                "sink": sink,
                "lag_records": m.get("surge_relay_lag_records", &l),
                "lag_seconds": m.get("surge_relay_lag_seconds", &l),
                "breaker": m.get("surge_relay_breaker_state", &l).map(breaker),
                "stopped": m.get("surge_relay_stopped", &l).map(|v| v > 0.0),
            })
        })
        .collect();
    let gateways: Vec<Value> = m
        .each("surge_gateway_breaker_state", &[])
        .filter_map(|s| Some(json!({"gateway": s.label("gateway")?, "breaker": breaker(s.value)})))
        .collect();
    let gateway = if gateways.is_empty() && m.get("surge_gateway_payments_pending", &[]).is_none() {
        Value::Null
    } else {
        json!({
            "breakers": gateways,
            "payments_pending": m.get("surge_gateway_payments_pending", &[]),
            "oldest_pending_seconds": m.get("surge_gateway_oldest_pending_seconds", &[]),
            "worker_lag_records": m.get("surge_gateway_lag_records", &[]),
        })
    };
    let dead_letters = api.json("/v1/admin/dead-letters?status=open&limit=1000").await?;
    let open = dead_letters["dead_letters"].as_array().map_or(0, Vec::len);
    Ok(json!({
        "ready": readyz.ok(),
        "not_ready_because": ready_detail,
        "storage": {
            "storage_failures_total": m.get("surge_storage_failures_total", &[]),
            "durable_lsn": m.get("surge_wal_durable_lsn", &[]),
            "log_queue_records": m.get("surge_wal_queued_records", &[]),
            "appends_refused_queue_full_total": m.get("surge_wal_queue_full_total", &[]),
            "records_since_snapshot": m.get("surge_records_since_snapshot", &[]),
            "snapshots_written_total": m.get("surge_snapshots_written_total", &[]),
        },
        "relay": sinks,
        "gateway": gateway,
        "dead_letters_open": open,
        "merchants": m.get("surge_merchants", &[]),
    }))
}

/// `metrics_summary`: two samples of /metrics `window_seconds` apart.
pub async fn metrics_summary(api: &Reads<'_>, p: MetricsSummaryParams) -> Result<Value, ToolError> {
    if let Some(minutes) = p.minutes {
        let minutes = minutes.clamp(1, crate::console::sampler::WINDOW_MINUTES_MAX);
        let window = api.json(&format!("/v1/admin/metrics/window?minutes={minutes}")).await?;
        return Ok(json!({"source": "the server's readings at the window's two ends", "window": window}));
    }
    let window_s = p.window_seconds.unwrap_or(WINDOW_SECONDS_DEFAULT).clamp(1, WINDOW_SECONDS_MAX);
    let sample = || async {
        let a = api.get("/metrics").await?;
        if a.ok() {
            Ok(Reading::parse(&a.text()))
        } else {
            Err(ToolError::Server { status: a.status, detail: "GET /metrics".into(), problem: Value::Null })
        }
    };
    let started = Instant::now();
    let before = sample().await?;
    tokio::time::sleep(Duration::from_secs(window_s)).await;
    let after = sample().await?;
    let elapsed_s = started.elapsed().as_secs_f64().max(0.001);
    Ok(summarize_window(&before, &after, elapsed_s))
}

/// Cumulative histogram buckets `(le, count)`.
type Buckets = Vec<(f64, f64)>;

/// The rates and percentiles between two readings `elapsed_s` apart, and the totals since
/// the server started (the second reading).
pub fn summarize_window(before: &Reading, after: &Reading, elapsed_s: f64) -> Value {
    let delta = |name: &str, want: &[(&str, &str)]| (after.sum(name, want) - before.sum(name, want)).max(0.0);
    let per_s = |n: f64| n / elapsed_s;
    // Requests of clients: the tool's own GETs of /metrics are left out.
    let requests = |status_prefix: Option<char>| {
        let count = |r: &Reading| {
            r.each("surge_http_requests_total", &[])
                .filter(|s| s.label("route") != Some("/metrics"))
                .filter(|s| status_prefix.is_none_or(|c| s.label("status").is_some_and(|st| st.starts_with(c))))
                .map(|s| s.value)
                .sum::<f64>()
        };
        (count(after) - count(before)).max(0.0)
    };
    let all = requests(None);
    let orders: serde_json::Map<String, Value> = ["created", "paid", "cancelled", "expired", "refunded", "reopened"]
        .iter()
        .map(|e| (e.to_string(), json!(per_s(delta("surge_orders_total", &[("event", e)])))))
        .collect();
    let success = |r: &Reading, method: &str| {
        let ok = r.sum("surge_payments_total", &[("method", method), ("event", "succeeded")]);
        let failed = r.sum("surge_payments_total", &[("method", method), ("event", "failed")]);
        (ok, failed)
    };
    let payments: Vec<Value> = ["points", "card"]
        .iter()
        .map(|method| {
            let (ok_after, failed_after) = success(after, method);
            let (ok_before, failed_before) = success(before, method);
            let (ok, failed) = ((ok_after - ok_before).max(0.0), (failed_after - failed_before).max(0.0));
            let rate = |ok: f64, failed: f64| if ok + failed > 0.0 { Some(ok / (ok + failed)) } else { None };
            json!({
                "method": method,
                "requested_per_s": per_s(delta("surge_payments_total", &[("method", method), ("event", "requested")])),
                "success_rate_in_window": rate(ok, failed),
                "success_rate_since_start": rate(ok_after, failed_after),
            })
        })
        .collect();
    let percentiles = |buckets: &[(f64, f64)]| {
        let ms = |q: f64| quantile(buckets, q).map(|s| (s * 1000.0 * 1000.0).round() / 1000.0);
        json!({"count": buckets.last().map_or(0.0, |b| b.1), "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99)})
    };
    let name = "surge_http_request_duration_seconds";
    // Per route: the busiest five in the window.
    let mut routes: Vec<(String, String, Buckets)> = Vec::new();
    for s in after.each(&format!("{name}_count"), &[]) {
        let (Some(route), Some(method)) = (s.label("route"), s.label("method")) else { continue };
        if route == "/metrics" {
            continue;
        }
        let want = [("route", route), ("method", method)];
        let d = bucket_delta(&after.buckets(name, &want), &before.buckets(name, &want));
        if d.last().is_some_and(|b| b.1 > 0.0) {
            routes.push((route.to_string(), method.to_string(), d));
        }
    }
    routes.sort_by(|a, b| b.2.last().map_or(0.0, |x| x.1).total_cmp(&a.2.last().map_or(0.0, |x| x.1)));
    routes.truncate(5);
    let by_route: Vec<Value> = routes
        .iter()
        .map(|(route, method, d)| json!({"route": route, "method": method, "latency": percentiles(d)}))
        .collect();
    let orders_route = [("route", "/v1/orders"), ("method", "POST")];
    let fsync = "surge_wal_sync_seconds";
    let commits = delta("surge_wal_commits_total", &[]);
    json!({
        "window": {
            "kind": "sampled",
            "seconds": (elapsed_s * 1000.0).round() / 1000.0,
            "note": "rates and *_in_window figures are the differences between two samples of /metrics taken this many seconds apart by this tool (the server keeps no history); *_since_start figures are the counters since the server process started",
        },
        "requests_per_s": per_s(all),
        "server_errors_5xx_share": if all > 0.0 { Some(requests(Some('5')) / all) } else { None },
        "client_errors_4xx_per_s": per_s(requests(Some('4'))),
        "orders_per_s": orders,
        "payments": payments,
        "refusals_per_s": per_s(delta("surge_commands_refused_total", &[])),
        "latency_post_orders_in_window": percentiles(&bucket_delta(&after.buckets(name, &orders_route), &before.buckets(name, &orders_route))),
        "latency_post_orders_since_start": percentiles(&after.buckets(name, &orders_route)),
        "latency_busiest_routes_in_window": by_route,
        "log": {
            "group_commits_per_s": per_s(commits),
            "records_per_group_commit": if commits > 0.0 { Some(delta("surge_wal_records_total", &[]) / commits) } else { None },
            "fsync_in_window": percentiles(&bucket_delta(&after.buckets(fsync, &[]), &before.buckets(fsync, &[]))),
        },
    })
}

/// `find_order`: the order as the server answers it, and its events from the log.
pub async fn find_order(api: &Reads<'_>, p: FindOrderParams) -> Result<Value, ToolError> {
    find(api, "orders", &p.merchant_id, &p.order_id, p.history_limit, "order").await
}

/// `find_payment`: the payment as the server answers it, and its events from the log.
pub async fn find_payment(api: &Reads<'_>, p: FindPaymentParams) -> Result<Value, ToolError> {
    find(api, "payments", &p.merchant_id, &p.payment_id, p.history_limit, "payment").await
}

async fn find(
    api: &Reads<'_>,
    collection: &str,
    merchant: &str,
    id: &str,
    history_limit: Option<u32>,
    what: &str,
) -> Result<Value, ToolError> {
    segment("merchant_id", merchant)?;
    segment(&format!("{what}_id"), id)?;
    let found = api.json(&format!("/v1/admin/merchants/{merchant}/{collection}/{id}")).await?;
    let limit = history_limit.unwrap_or(HISTORY_LIMIT_DEFAULT).clamp(1, HISTORY_LIMIT_MAX);
    let history = api.json(&format!("/v1/admin/merchants/{merchant}/events/{id}?limit={limit}")).await?;
    Ok(json!({ "merchant_id": merchant, what: found, "history": history }))
}

/// `list_dead_letters`.
pub async fn list_dead_letters(api: &Reads<'_>, p: ListDeadLettersParams) -> Result<Value, ToolError> {
    let limit = p.limit.unwrap_or(100).clamp(1, 1_000);
    let path = match p.status.as_deref() {
        None => format!("/v1/admin/dead-letters?limit={limit}"),
        Some(s @ ("open" | "retried" | "resolved")) => format!("/v1/admin/dead-letters?status={s}&limit={limit}"),
        Some(other) => return Err(ToolError::Invalid(format!("status: open, retried or resolved, not {other:?}"))),
    };
    api.json(&path).await
}

/// `retry_dead_letter`: without `confirm: true`, shows the dead letter and sends nothing.
pub async fn retry_dead_letter(api: &Writes<'_>, p: RetryDeadLetterParams) -> Result<Value, ToolError> {
    let Some((merchant, dl)) = p.dead_letter_id.rsplit_once(':') else {
        return Err(ToolError::Invalid("dead_letter_id: {merchant_id}:dl_{n}".into()));
    };
    segment("dead_letter_id", &p.dead_letter_id)?;
    if merchant.is_empty() || !dl.starts_with("dl_") {
        return Err(ToolError::Invalid("dead_letter_id: {merchant_id}:dl_{n}".into()));
    }
    if !p.confirm {
        // Look only: the current state of the dead letter, so the caller can decide.
        let all = api.reads().json("/v1/admin/dead-letters?limit=1000").await?;
        let current = all["dead_letters"]
            .as_array()
            .and_then(|d| d.iter().find(|l| l["merchant_id"] == merchant && l["id"] == dl).cloned());
        return Ok(json!({
            "retried": false,
            "changed_nothing": true,
            "reason": "confirm is not true: call again with \"confirm\": true to ask the gateway worker to make this operation again",
            "dead_letter": current,
        }));
    }
    let retried = api.post(&format!("/v1/admin/dead-letters/{}/retry", p.dead_letter_id)).await?;
    Ok(json!({"retried": true, "dead_letter": retried}))
}

/// `load_run_summary`: one result file of `dir` (the newest by default), and the listing.
pub async fn load_run_summary(dir: &Path, p: LoadRunSummaryParams) -> Result<Value, ToolError> {
    let dir = dir.to_path_buf();
    let work = tokio::task::spawn_blocking(move || -> Result<Value, ToolError> {
        let listed = load_results::list(&dir)?;
        let name = match p.file {
            Some(name) => name,
            None => match listed.first().and_then(|f| f["name"].as_str()) {
                Some(newest) => newest.to_string(),
                None => {
                    return Err(ToolError::Invalid(format!(
                        "no result files in {}: run `surge load` first",
                        dir.display()
                    )))
                }
            },
        };
        let report = load_results::read(&dir, &name)?;
        let mut summary = load_results::summarize(&name, &report);
        summary["other_results"] = Value::Array(listed);
        Ok(summary)
    });
    work.await.map_err(|e| ToolError::Invalid(format!("reading the result: {e}")))?
}

/// `trial_balance`.
pub async fn trial_balance(api: &Reads<'_>, p: TrialBalanceParams) -> Result<Value, ToolError> {
    segment("merchant_id", &p.merchant_id)?;
    let balance = api.json(&format!("/v1/admin/merchants/{}/trial-balance", p.merchant_id)).await?;
    Ok(json!({"merchant_id": p.merchant_id, "trial_balance": balance}))
}

#[cfg(test)]
mod tests {
    use super::super::backend::BoxFuture;
    use super::*;
    use parking_lot::Mutex;

    /// Answers every request with `{}` (or empty metrics) and records its method and path.
    #[derive(Default)]
    struct Recording(Mutex<Vec<(Method, String)>>);

    impl Backend for Recording {
        fn send<'a>(
            &'a self,
            _: &'a Caller,
            method: Method,
            path: &'a str,
        ) -> BoxFuture<'a, Result<Answer, BackendError>> {
            self.0.lock().push((method, path.to_string()));
            let body = if path == "/metrics" { b"surge_ready 1\n".to_vec() } else { b"{}".to_vec() };
            Box::pin(async move { Ok(Answer { status: 200, body }) })
        }
    }

    #[tokio::test]
    async fn read_only_tools_send_only_gets() {
        let backend = Recording::default();
        let caller = Caller::default();
        let api = Reads::new(&backend, &caller);
        health(&api).await.unwrap();
        metrics_summary(&api, MetricsSummaryParams { minutes: None, window_seconds: Some(1) }).await.unwrap();
        let order = FindOrderParams { merchant_id: "m".into(), order_id: "ord_1".into(), history_limit: None };
        find_order(&api, order).await.unwrap();
        let payment = FindPaymentParams { merchant_id: "m".into(), payment_id: "pay_1".into(), history_limit: None };
        find_payment(&api, payment).await.unwrap();
        list_dead_letters(&api, ListDeadLettersParams::default()).await.unwrap();
        trial_balance(&api, TrialBalanceParams { merchant_id: "m".into() }).await.unwrap();
        // retry without confirm is read-only too.
        let writes = Writes::new(&backend, &caller);
        let unconfirmed = RetryDeadLetterParams { dead_letter_id: "m:dl_1".into(), confirm: false };
        let answer = retry_dead_letter(&writes, unconfirmed).await.unwrap();
        assert_eq!(answer["changed_nothing"], true);
        let sent = backend.0.lock().clone();
        assert!(sent.len() >= 9, "{sent:?}");
        assert!(sent.iter().all(|(m, _)| *m == Method::GET), "{sent:?}");
        let confirmed = RetryDeadLetterParams { dead_letter_id: "m:dl_1".into(), confirm: true };
        retry_dead_letter(&writes, confirmed).await.unwrap();
        assert_eq!(
            backend.0.lock().last().cloned(),
            Some((Method::POST, "/v1/admin/dead-letters/m:dl_1/retry".into()))
        );
    }

    #[tokio::test]
    async fn ids_never_step_out_of_their_path_segment() {
        let backend = Recording::default();
        let caller = Caller::default();
        let api = Reads::new(&backend, &caller);
        for bad in ["..", "a/b", "x?y=1", "", "."] {
            let p = FindOrderParams { merchant_id: bad.into(), order_id: "ord_1".into(), history_limit: None };
            assert!(matches!(find_order(&api, p).await, Err(ToolError::Invalid(_))), "{bad}");
            let t = TrialBalanceParams { merchant_id: bad.into() };
            assert!(matches!(trial_balance(&api, t).await, Err(ToolError::Invalid(_))), "{bad}");
        }
        let writes = Writes::new(&backend, &caller);
        for bad in ["m:dl_1/../../merchants", "dl_1", ":dl_1", "m:ord_1"] {
            let p = RetryDeadLetterParams { dead_letter_id: bad.into(), confirm: true };
            assert!(matches!(retry_dead_letter(&writes, p).await, Err(ToolError::Invalid(_))), "{bad}");
        }
        assert!(backend.0.lock().is_empty());
    }
}
