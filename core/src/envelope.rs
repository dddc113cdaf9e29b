//! The JSON form of an event as it leaves the process (Kafka value, MariaDB `events` row):
//! `{"event_id","type","merchant_id","aggregate_id","occurred_at","data"}`. Serialized
//! with serde by the relay; this crate only defines the shape.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::event::{DataRef, Event};
use crate::ids::UnixMs;

#[derive(Serialize)]
pub struct Envelope<'a> {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub merchant_id: &'a str,
    pub aggregate_id: Option<String>,
    pub occurred_at: String,
    pub data: DataRef<'a>,
}

/// The stable id of the `index`-th event in the log record at `lsn`. Re-publishing the
/// same record after a restart gives the same ids, so consumers can deduplicate.
pub fn event_id(lsn: u64, index: u32) -> String {
    format!("{lsn:016x}-{index:04x}")
}

impl Event {
    pub fn envelope(&self, lsn: u64, index: u32) -> Envelope<'_> {
        Envelope {
            event_id: event_id(lsn, index),
            event_type: self.type_name(),
            merchant_id: &self.merchant,
            aggregate_id: self.aggregate().map(|(_, id)| id),
            occurred_at: rfc3339_ms(self.at_ms),
            data: DataRef(&self.body),
        }
    }
}

/// `2026-11-21T06:01:33.123Z`. Out-of-range times (beyond year 9999) print as the epoch
/// rather than fail: they cannot come from a real clock.
pub fn rfc3339_ms(ms: UnixMs) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
