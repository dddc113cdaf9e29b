//! Looking an order or payment up by id across merchants, with its history: the current
//! view from each merchant's shard (a read through the engine, like any GET), and the
//! events of that aggregate read back from the log directory with a `Tailer`, as the relay
//! reads it. Only reads: the log is never opened for writing.
//!
//! Bounded: at most `MATCHES_MAX` merchants; the scan covers at most the newest
//! `HISTORY_RECORDS_MAX` durable records (older history, and whatever retention deleted,
//! is not shown; the answer says which LSNs were read), stops after `HISTORY_SCAN_TIME_MAX`
//! and keeps at most `HISTORY_EVENTS_MAX` events; one scan runs at a time.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use surge_core::event::{EventBody, Topic};
use surge_core::ids::Numbered;
use surge_core::image;

use crate::error::ApiError;
use crate::AppState;

pub const MATCHES_MAX: usize = 20;
pub const HISTORY_RECORDS_MAX: u64 = 200_000;
pub const HISTORY_EVENTS_MAX: usize = 500;
pub const HISTORY_SCAN_TIME_MAX: Duration = Duration::from_secs(2);

#[derive(Serialize)]
pub struct Lookup {
    pub id: String,
    pub kind: &'static str,
    pub found: Vec<Found>,
    /// What part of the log the histories come from.
    pub history_scan: Option<Scan>,
    /// Cluster mode: the merchants searched are those of this node's partitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Serialize)]
pub struct Found {
    pub merchant_id: String,
    /// The order or payment as `GET /v1/orders/{id}` / `GET /v1/payments/{id}` shows it.
    pub current: serde_json::Value,
    /// Its events (an order's include its payments'; a payment's include its order's),
    /// oldest first, as they leave the process (the relay's envelope, plus the LSN).
    pub history: Vec<serde_json::Value>,
}

#[derive(Serialize, Default)]
pub struct Scan {
    pub from_lsn: u64,
    pub to_lsn: u64,
    pub records_read: u64,
    /// The scan stopped early (time or event bound) or could not read part of the log.
    pub incomplete: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Order,
    Payment,
}

pub async fn lookup(state: &AppState, id: &str) -> Result<Lookup, ApiError> {
    let id = id.trim();
    let (kind, n) = if let Some(n) = Numbered::Order.parse(id) {
        (Kind::Order, n)
    } else if let Some(n) = Numbered::Payment.parse(id) {
        (Kind::Payment, n)
    } else {
        return Err(ApiError::invalid("id: an order (ord_{n}) or payment (pay_{n}) id").with("field", "id"));
    };
    let engine = state.engine()?;
    let wanted = id.to_string();
    let (per_shard, note) = super::read_across(state, &engine, move |shard| {
        let mut out = Vec::new();
        for m in shard.merchants() {
            let current = match kind {
                Kind::Order => m.order_view(&wanted).map(|o| serde_json::to_value(crate::dto::order(&o))),
                Kind::Payment => m.payment_view(&wanted).map(|p| serde_json::to_value(crate::dto::payment(&p))),
            };
            if let Some(Ok(current)) = current {
                out.push((m.id.to_string(), current));
                if out.len() == MATCHES_MAX {
                    break;
                }
            }
        }
        out
    })
    .await?;
    let mut found: Vec<Found> = per_shard
        .into_iter()
        .flatten()
        .take(MATCHES_MAX)
        .map(|(merchant_id, current)| Found { merchant_id, current, history: Vec::new() })
        .collect();
    let kind_name = if kind == Kind::Order { "order" } else { "payment" };
    let Some(wal_dir) = state.console().wal_dir() else {
        return Ok(Lookup { id: id.to_string(), kind: kind_name, found, history_scan: None, note });
    };
    if found.is_empty() {
        return Ok(Lookup { id: id.to_string(), kind: kind_name, found, history_scan: None, note });
    }
    // One scan at a time: each reads up to HISTORY_RECORDS_MAX records from disk.
    let _permit = state
        .console()
        .scans
        .acquire()
        .await
        .map_err(|_| ApiError::storage_unavailable("the server is shutting down"))?;
    let merchants: Vec<String> = found.iter().map(|f| f.merchant_id.clone()).collect();
    let (histories, scan) = tokio::task::spawn_blocking(move || scan_log(&wal_dir, &merchants, kind, n))
        .await
        .map_err(|_| ApiError::from_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "history scan failed"))?;
    for (f, history) in found.iter_mut().zip(histories) {
        f.history = history;
    }
    Ok(Lookup { id: id.to_string(), kind: kind_name, found, history_scan: Some(scan), note })
}

/// The events of aggregate `n` of `kind` for each of `merchants`, from the newest
/// `HISTORY_RECORDS_MAX` durable records.
fn scan_log(dir: &Path, merchants: &[String], kind: Kind, n: u64) -> (Vec<Vec<serde_json::Value>>, Scan) {
    let mut histories = vec![Vec::new(); merchants.len()];
    let mut scan = Scan::default();
    let (from, to) = match crate::log_window::recent(dir, HISTORY_RECORDS_MAX) {
        Ok(r) => (r.from_lsn, r.durable_lsn),
        Err(e) => {
            scan.incomplete = Some(e.to_string());
            return (histories, scan);
        }
    };
    (scan.from_lsn, scan.to_lsn) = (from, to);
    // Per merchant, the aggregates that belong to the one looked up (its order or payments,
    // learned from `payment.requested` as the scan goes).
    let (topic, id) = match kind {
        Kind::Order => (Topic::Orders, Numbered::Order.id(n)),
        Kind::Payment => (Topic::Payments, Numbered::Payment.id(n)),
    };
    let mut related: Vec<HashSet<(Topic, String)>> = vec![HashSet::from([(topic, id)]); merchants.len()];
    let mut tailer = match surge_wal::Tailer::open(dir, from) {
        Ok(t) => t,
        Err(e) => {
            scan.incomplete = Some(e.to_string());
            return (histories, scan);
        }
    };
    let started = Instant::now();
    let mut kept = 0usize;
    // Bounded: at most `to - from + 1` records (HISTORY_RECORDS_MAX), and by time.
    while tailer.next_lsn() <= to {
        if started.elapsed() > HISTORY_SCAN_TIME_MAX {
            scan.incomplete = Some(format!("stopped after {:?} at LSN {}", HISTORY_SCAN_TIME_MAX, tailer.next_lsn()));
            break;
        }
        let record = match tailer.try_next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                scan.incomplete = Some(e.to_string());
                break;
            }
        };
        scan.records_read += 1;
        // Records of other types (none yet) carry no events.
        let Ok(events) = image::record_events(record.record_type, &record.payload) else { continue };
        for (index, event) in events.iter().enumerate() {
            let Some(m) = merchants.iter().position(|m| **m == *event.merchant) else { continue };
            if let EventBody::PaymentRequested(p) = &event.body {
                let (order, payment) =
                    ((Topic::Orders, Numbered::Order.id(p.order)), (Topic::Payments, Numbered::Payment.id(p.payment)));
                if related[m].contains(&order) || related[m].contains(&payment) {
                    related[m].insert(order);
                    related[m].insert(payment);
                }
            }
            let Some(aggregate) = event.aggregate() else { continue };
            if !related[m].contains(&aggregate) {
                continue;
            }
            if kept == HISTORY_EVENTS_MAX {
                scan.incomplete = Some(format!("kept the first {HISTORY_EVENTS_MAX} events"));
                return (histories, scan);
            }
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if let Ok(mut json) = serde_json::to_value(event.envelope(record.lsn, index)) {
                json["lsn"] = record.lsn.into();
                histories[m].push(json);
                kept += 1;
            }
        }
    }
    (histories, scan)
}
