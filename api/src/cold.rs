//! A GET of an archived order or payment, answered from the MariaDB cold store when the
//! server has one (`--mariadb-url`, the in-process relay's database): the same JSON as
//! before it was archived, plus `archived_at`. Without a cold store, and whenever it cannot
//! answer, the answer is 410 `archived` naming when (at the latest).
//!
//! Why 410 and not 503 when the cold store cannot answer (the relay has not written the
//! archived row yet, the database is down, slow or busy): 410 is true (the id is archived,
//! and this server no longer holds it), it is the answer a server without a cold store
//! gives, so clients handle one answer for "archived and not shown", and it names when.
//! A 503 would say the server is unavailable, which it is not: health checks and clients
//! that retry 503s would hammer it for a row that may never come (the sink stopped, or
//! relaying elsewhere). A client that wants the history retries later, or reads the cold
//! store itself.
//!
//! Bounded: the read happens only for ids the shard reported archived, after the shard
//! answered (its lock long released, so no shard ever waits on the database), through
//! `surge_relay::mariadb::read::ColdReader` (a small pool, a bound on reads in flight, a
//! timeout per read).

use std::sync::atomic::{AtomicU64, Ordering};

use surge_core::ids::Numbered;
use surge_core::UnixMs;
use surge_relay::mariadb::read::{ColdReadConfig, ColdReadError, ColdReader};

use crate::dto;
use crate::error::ApiError;

/// The cold store as the server reads it, and how its reads went.
pub struct ColdStore {
    reader: ColdReader,
    reads: ReadCounters,
}

/// Reads of archived ids by outcome (the `result` label of `surge_cold_reads_total`).
#[derive(Default)]
struct ReadCounters {
    found: AtomicU64,
    not_yet: AtomicU64,
    busy: AtomicU64,
    timed_out: AtomicU64,
    failed: AtomicU64,
}

/// What a GET asks the cold store for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archived {
    Order,
    Payment,
}

impl Archived {
    /// The name of the kind, as a 410's detail says it.
    pub fn what(self) -> &'static str {
        match self {
            Archived::Order => "order",
            Archived::Payment => "payment",
        }
    }

    fn numbered(self) -> Numbered {
        match self {
            Archived::Order => Numbered::Order,
            Archived::Payment => Numbered::Payment,
        }
    }
}

impl ColdStore {
    /// Reads from the database at `url` with the reader's bounds (`ColdReadConfig::new`).
    pub fn new(url: &str) -> Result<ColdStore, String> {
        let reader = ColdReader::new(&ColdReadConfig::new(url)).map_err(|e| format!("--mariadb-url: {e}"))?;
        Ok(ColdStore { reader, reads: ReadCounters::default() })
    }

    /// The JSON of archived `id` of `merchant`, or `None` when the cold store cannot show
    /// it (counted, and logged when it failed).
    async fn read(&self, merchant: &str, kind: Archived, id: &str) -> Option<Vec<u8>> {
        let result = match (kind, kind.numbered().parse(id)) {
            (_, None) => Ok(None),
            (Archived::Order, Some(n)) => self
                .reader
                .order(merchant, n)
                .await
                .map(|o| o.map(|o| dto::to_vec(&dto::archived_order(&o.view, o.archived_at_ms)))),
            (Archived::Payment, Some(n)) => self
                .reader
                .payment(merchant, n)
                .await
                .map(|p| p.map(|p| dto::to_vec(&dto::archived_payment(&p.view, p.archived_at_ms)))),
        };
        let counter = match &result {
            Ok(Some(_)) => &self.reads.found,
            Ok(None) => &self.reads.not_yet,
            Err(ColdReadError::Busy(_)) => &self.reads.busy,
            Err(ColdReadError::TimedOut(_)) => &self.reads.timed_out,
            Err(_) => &self.reads.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(json) => json,
            // A row that does not read back is a bug of the sink or the reader: say so. The
            // database being down, slow or busy shows in the counters, not a line per GET.
            Err(e @ ColdReadError::BadRow(_)) => {
                tracing::warn!(merchant, id, error = %e, "archived {} not read from the cold store", kind.what());
                None
            }
            Err(e) => {
                tracing::debug!(merchant, id, error = %e, "archived {} not read from the cold store", kind.what());
                None
            }
        }
    }

    /// Appends the read counters in Prometheus text.
    pub fn render_prometheus(&self, out: &mut String) {
        let r = &self.reads;
        crate::metrics::counters_by_result(
            out,
            "surge_cold_reads_total",
            "GETs of archived orders and payments asked of the cold store, by outcome.",
            &[
                ("found", &r.found),
                ("not_yet", &r.not_yet),
                ("busy", &r.busy),
                ("timed_out", &r.timed_out),
                ("failed", &r.failed),
            ],
        );
    }
}

/// The answer to a GET of `id`, which the engine reported archived at `archived_at_ms` (at
/// the latest): its JSON from the cold store, else 410 `archived`.
pub async fn answer(
    cold: Option<&ColdStore>,
    merchant: &str,
    kind: Archived,
    id: &str,
    archived_at_ms: UnixMs,
) -> Result<Vec<u8>, ApiError> {
    let json = match cold {
        Some(cold) => cold.read(merchant, kind, id).await,
        None => None,
    };
    json.ok_or_else(|| ApiError::archived(kind.what(), archived_at_ms))
}
