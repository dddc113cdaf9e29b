//! Admin look-ups by merchant: an order, a payment, the trial balance, and an aggregate's
//! events read back from the log. Operators (and the MCP server, `mcp/`) hold the admin
//! token, not a merchant's key, so these name the merchant in the path; they answer what the
//! merchant's own routes answer, through the same reads of the engine (never its state
//! directly), and change nothing.
//!
//! The engine keeps current state, not history; an aggregate's history is its events in the
//! log. The scan is bounded: it reads at most [`EVENTS_SCAN_RECORDS_MAX`] of the newest
//! durable records on a blocking thread, at most [`EVENTS_SCANS_MAX`] scans at once, and
//! says whether it covered everything the log still holds (retention deletes segments older
//! than the newest snapshot, so old history is in the cold store's `events` table only).
//! In cluster mode the merchant's partition's log in etcd is read instead (`ClusterView::
//! aggregate_events`), through [`AggregateScan`] as well.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use surge_core::ids::is_valid_id;
use surge_core::state::Merchant;
use surge_wal::{Tailer, WalError};

use crate::cold;
use crate::dto::{self, to_vec, Order, Payment, TrialBalanceDto};
use crate::error::ApiError;
use crate::extract::AdminCall;
use crate::routes::{json, read, read_archivable};
use crate::AppState;

/// Newest log records one events scan reads at most.
pub const EVENTS_SCAN_RECORDS_MAX: u64 = 200_000;
/// Events scans running at once; more answer 503 (each holds a blocking thread and maps
/// segments).
pub const EVENTS_SCANS_MAX: usize = 2;
/// Events one answer lists at most (the newest of them); the default is 100.
pub const EVENTS_LIST_MAX: usize = 1_000;
const EVENTS_LIST_DEFAULT: usize = 100;

fn merchant_id(id: &str) -> Result<Arc<str>, ApiError> {
    if is_valid_id(id) {
        Ok(Arc::from(id))
    } else {
        Err(ApiError::not_found("merchant not found"))
    }
}

#[utoipa::path(
    get, path = "/v1/admin/merchants/{merchant_id}/orders/{id}", operation_id = "admin_get_order", tag = "admin", security(("admin" = [])),
    params(("merchant_id" = String, Path, description = "the merchant's id", example = "acme"), ("id" = String, Path, description = "the order's id (`ord_1`)", example = "ord_1")),
    responses((status = 200, description = "the order, as `GET /v1/orders/{id}` answers it to its merchant", body = Order), (status = 404, description = "not_found: no such merchant or order"), (status = 410, description = "archived, and no cold store shows it"))
)]
/// `GET /v1/admin/merchants/{merchant_id}/orders/{id}`.
pub async fn get_order(
    State(state): State<AppState>,
    Path((merchant, id)): Path<(String, String)>,
    call: AdminCall,
) -> Result<Response, ApiError> {
    let merchant = merchant_id(&merchant)?;
    let (kind, view) = (cold::Archived::Order, Merchant::order_view);
    read_archivable(&state, &call.engine, &merchant, kind, id, view, dto::order_to_vec).await
}

#[utoipa::path(
    get, path = "/v1/admin/merchants/{merchant_id}/payments/{id}", operation_id = "admin_get_payment", tag = "admin", security(("admin" = [])),
    params(("merchant_id" = String, Path, description = "the merchant's id", example = "acme"), ("id" = String, Path, description = "the payment's id (`pay_1`)", example = "pay_1")),
    responses((status = 200, description = "the payment, as `GET /v1/payments/{id}` answers it to its merchant", body = Payment), (status = 404, description = "not_found: no such merchant or payment"), (status = 410, description = "archived, and no cold store shows it"))
)]
/// `GET /v1/admin/merchants/{merchant_id}/payments/{id}`.
pub async fn get_payment(
    State(state): State<AppState>,
    Path((merchant, id)): Path<(String, String)>,
    call: AdminCall,
) -> Result<Response, ApiError> {
    let merchant = merchant_id(&merchant)?;
    let render = |v: &_| to_vec(&dto::payment(v));
    read_archivable(&state, &call.engine, &merchant, cold::Archived::Payment, id, Merchant::payment_view, render).await
}

#[utoipa::path(
    get, path = "/v1/admin/merchants/{merchant_id}/trial-balance", operation_id = "admin_trial_balance", tag = "admin", security(("admin" = [])),
    params(("merchant_id" = String, Path, description = "the merchant's id", example = "acme")),
    responses((status = 200, description = "the merchant's trial balance, as `GET /v1/ledger/trial-balance` answers it", body = TrialBalanceDto), (status = 404, description = "not_found: no such merchant"))
)]
/// `GET /v1/admin/merchants/{merchant_id}/trial-balance`.
pub async fn trial_balance(Path(merchant): Path<String>, call: AdminCall) -> Result<Response, ApiError> {
    let merchant = merchant_id(&merchant)?;
    read(&call.engine, merchant, move |m| Ok(to_vec(&dto::trial_balance(&m.trial_balance())))).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The newest this many events (default 100); values outside 1..=1000 are taken as the
    /// nearest bound.
    #[serde(default)]
    #[param(schema_with = crate::openapi::schema::list_limit)]
    limit: Option<usize>,
}

/// An aggregate's events as the log holds them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AggregateEvents {
    merchant_id: String,
    aggregate_id: String,
    /// Oldest first, each as the relay publishes it (`event_id`, `type`, `merchant_id`,
    /// `aggregate_id`, `occurred_at`, `data`).
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// More matching events were found than `limit`: the oldest were left out.
    truncated: bool,
    /// The records read: `from_lsn..=to_lsn` (0 and 0 for an empty log).
    from_lsn: u64,
    to_lsn: u64,
    /// Every record the log still holds was read. False when older records exist beyond the
    /// scan's bound; the log itself keeps only what its newest snapshot and readers need.
    complete: bool,
}

#[utoipa::path(
    get, path = "/v1/admin/merchants/{merchant_id}/events/{aggregate_id}", operation_id = "admin_events", tag = "admin", security(("admin" = [])),
    params(("merchant_id" = String, Path, description = "the merchant's id", example = "acme"), ("aggregate_id" = String, Path, description = "an order (`ord_1`), payment (`pay_1`), hold, sku, customer, waiting room or dead letter id", example = "ord_1"), EventsQuery),
    responses(
        (status = 200, description = "the aggregate's events in the newest log records (bounded scan), oldest first", body = AggregateEvents),
        (status = 404, description = "not_found: a malformed id, or this server has no log directory to read"),
        (status = 503, description = "service_unavailable: too many scans at once, or the log could not be read"),
    )
)]
/// `GET /v1/admin/merchants/{merchant_id}/events/{aggregate_id}`.
pub async fn events(
    State(state): State<AppState>,
    Path((merchant, aggregate)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
    _call: AdminCall,
) -> Result<Response, ApiError> {
    if !is_valid_id(&merchant) || !is_valid_id(&aggregate) {
        return Err(ApiError::not_found("no such merchant or aggregate id"));
    }
    static SCANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(EVENTS_SCANS_MAX);
    let busy = || ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE, "too many event scans at once; retry shortly");
    let limit = q.limit.unwrap_or(EVENTS_LIST_DEFAULT).clamp(1, EVENTS_LIST_MAX);
    if let Some(cluster) = state.cluster() {
        // Any node reads any partition's log: no forwarding.
        let _permit = SCANS.try_acquire().map_err(|_| busy())?;
        let answer = cluster.view.aggregate_events(&merchant, &aggregate, limit).await.map_err(|e| {
            ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE, format!("reading the partition's log: {e}"))
        })?;
        return Ok(json(StatusCode::OK, &answer));
    }
    let dir = state.wal_dir().ok_or_else(|| ApiError::not_found("this server reads no log directory"))?;
    let _permit = SCANS.try_acquire().map_err(|_| busy())?;
    let scan = tokio::task::spawn_blocking(move || scan(&dir, &merchant, &aggregate, limit, EVENTS_SCAN_RECORDS_MAX));
    let answer = scan
        .await
        .map_err(|e| ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE, format!("events scan: {e}")))?
        .map_err(|e| ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE, format!("reading the log: {e}")))?;
    Ok(json(StatusCode::OK, &answer))
}

/// Reads the newest `records_max` durable records of the log in `dir` and keeps the newest
/// `limit` events of `merchant`'s `aggregate`. Records of other types (none carry public
/// events) are skipped.
pub fn scan(
    dir: &std::path::Path,
    merchant: &str,
    aggregate: &str,
    limit: usize,
    records_max: u64,
) -> Result<AggregateEvents, WalError> {
    let recent = crate::log_window::recent(dir, records_max)?;
    let durable = recent.durable_lsn;
    let mut found = AggregateScan::new(merchant, aggregate, limit);
    if durable == 0 {
        return Ok(found.finish(true));
    }
    let mut tailer = Tailer::open(dir, recent.from_lsn)?;
    let mut first = tailer.try_next()?;
    // Bounded: at most `durable - from + 1 <= records_max` records.
    while let Some(record) = first.take() {
        // A record of another type carries no events, but it was read (`to_lsn`).
        let events = surge_core::image::record_events(record.record_type, &record.payload).unwrap_or_default();
        found.record(None, record.lsn, &events);
        if record.lsn >= durable {
            break;
        }
        first = tailer.try_next()?;
    }
    Ok(found.finish(recent.complete))
}

/// The newest `limit` events of one aggregate among log records read oldest first: the local
/// log's scan and cluster mode's read of a partition's log both feed one.
pub struct AggregateScan {
    answer: AggregateEvents,
    limit: usize,
    kept: std::collections::VecDeque<serde_json::Value>,
}

impl AggregateScan {
    pub fn new(merchant: &str, aggregate: &str, limit: usize) -> AggregateScan {
        let limit = limit.clamp(1, EVENTS_LIST_MAX);
        AggregateScan {
            answer: AggregateEvents {
                merchant_id: merchant.to_string(),
                aggregate_id: aggregate.to_string(),
                events: Vec::new(),
                truncated: false,
                from_lsn: 0,
                to_lsn: 0,
                complete: true,
            },
            limit,
            kept: std::collections::VecDeque::with_capacity(limit),
        }
    }

    /// The events of the record at `lsn`, the one after the previous call's (`partition`:
    /// the partition whose log it is, in cluster mode, where event ids name it).
    pub fn record(&mut self, partition: Option<u32>, lsn: u64, events: &[surge_core::Event]) {
        debug_assert!(self.answer.to_lsn == 0 || lsn > self.answer.to_lsn, "records are read oldest first");
        if self.answer.from_lsn == 0 {
            self.answer.from_lsn = lsn;
        }
        self.answer.to_lsn = lsn;
        let (merchant, aggregate) = (&self.answer.merchant_id, &self.answer.aggregate_id);
        for (index, event) in events.iter().enumerate() {
            let ours =
                *event.merchant == **merchant && event.aggregate().is_some_and(|(_, id)| id == aggregate.as_str());
            if !ours {
                continue;
            }
            if self.kept.len() == self.limit {
                self.kept.pop_front();
                self.answer.truncated = true;
            }
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let id = match partition {
                None => surge_core::envelope::event_id(lsn, index),
                Some(p) => surge_core::envelope::partition_event_id(p, lsn, index),
            };
            self.kept.push_back(serde_json::to_value(event.envelope_with_id(id)).unwrap_or_default());
        }
    }

    /// The answer; `complete`: the records read start where the log does.
    pub fn finish(mut self, complete: bool) -> AggregateEvents {
        self.answer.events = self.kept.into();
        self.answer.complete = complete;
        self.answer
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Minutes back from now (default 1); values outside 1..=10 are taken as the nearest
    /// bound.
    #[serde(default)]
    #[param(schema_with = crate::openapi::schema::window_minutes)]
    minutes: Option<u64>,
}

/// `GET /v1/admin/metrics/window`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MetricsWindow {
    /// The window asked for, after bounding.
    pub minutes: u64,
    /// The names of `orders_per_s`'s entries, in order.
    pub order_events: [&'static str; crate::engine::ORDER_EVENTS.len()],
    /// The window the figures cover: `interval_s` seconds ending at `at_ms`; shorter than
    /// asked while the server has run for less.
    #[serde(flatten)]
    pub figures: crate::console::sampler::Sample,
}

#[utoipa::path(
    get, path = "/v1/admin/metrics/window", tag = "admin", security(("admin" = [])),
    params(WindowQuery),
    responses(
        (status = 200, description = "rates and latency percentiles over the last minutes, from the counters and histogram buckets the server kept at the window's two ends (one reading every 10 s, ten minutes kept)", body = MetricsWindow),
        (status = 503, description = "service_unavailable: no two readings yet (the first seconds after start)"),
    )
)]
/// `GET /v1/admin/metrics/window?minutes=N`.
pub async fn metrics_window(
    State(state): State<AppState>,
    Query(q): Query<WindowQuery>,
    _call: AdminCall,
) -> Result<Response, ApiError> {
    use crate::console::sampler::WINDOW_MINUTES_MAX;
    let minutes = q.minutes.unwrap_or(1).clamp(1, WINDOW_MINUTES_MAX);
    let figures = state.console().samples.window(minutes).ok_or_else(|| {
        ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE, "no figures yet: the server samples once a second")
    })?;
    Ok(json(StatusCode::OK, &MetricsWindow { minutes, order_events: crate::engine::ORDER_EVENTS, figures }))
}
