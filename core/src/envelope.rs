//! The JSON form of an event as it leaves the process (Kafka value, MariaDB `events` row):
//! `{"event_id","type","merchant_id","aggregate_id","occurred_at","data"}`. Serialized
//! with serde by the relay; this crate only defines the shape.

use serde::Serialize;

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

/// The same in cluster mode, where LSNs are per partition: the partition goes first,
/// `{partition:04x}-{lsn:016x}-{index:04x}`.
pub fn partition_event_id(partition: u32, lsn: u64, index: u32) -> String {
    format!("{partition:04x}-{lsn:016x}-{index:04x}")
}

impl Event {
    pub fn envelope(&self, lsn: u64, index: u32) -> Envelope<'_> {
        self.envelope_with_id(event_id(lsn, index))
    }

    /// The envelope under an id made by [`event_id`] or [`partition_event_id`].
    pub fn envelope_with_id(&self, event_id: String) -> Envelope<'_> {
        Envelope {
            event_id,
            event_type: self.type_name(),
            merchant_id: &self.merchant,
            aggregate_id: self.aggregate().map(|(_, id)| id),
            occurred_at: rfc3339_ms(self.at_ms),
            data: DataRef(&self.body),
        }
    }
}

/// Latest instant both text forms can show: 9999-12-31 23:59:59.999 UTC.
pub const UTC_MS_MAX: UnixMs = 253_402_300_799_999;

/// `2026-11-21T06:01:33.120Z`: always three fraction digits. Times beyond year 9999 print
/// as [`UTC_MS_MAX`] rather than fail: they cannot come from a real clock.
pub fn rfc3339_ms(ms: UnixMs) -> String {
    let mut out = String::with_capacity(24);
    push_utc_ms(&mut out, ms, 'T');
    out.push('Z');
    out
}

/// Appends `YYYY-MM-DD<sep>HH:MM:SS.mmm` of `ms` (clamped to [`UTC_MS_MAX`]), UTC. Written
/// by hand: five of these go into every order reply, and `time`'s formatter allocated and
/// trimmed the fraction (`.12Z`, or none on a whole second).
pub fn push_utc_ms(out: &mut String, ms: UnixMs, sep: char) {
    let ms = ms.min(UTC_MS_MAX);
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    push_digits(out, y as u64, 4);
    out.push('-');
    push_digits(out, u64::from(m), 2);
    out.push('-');
    push_digits(out, u64::from(d), 2);
    out.push(sep);
    push_digits(out, rem / 3600, 2);
    out.push(':');
    push_digits(out, (rem / 60) % 60, 2);
    out.push(':');
    push_digits(out, rem % 60, 2);
    out.push('.');
    push_digits(out, ms % 1000, 3);
}

/// The low `width` decimal digits of `v`, zero-padded.
fn push_digits(out: &mut String, mut v: u64, width: usize) {
    let mut buf = [b'0'; 4];
    debug_assert!(width <= buf.len());
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf[..width].iter().for_each(|&b| out.push(char::from(b)));
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    #[test]
    fn rfc3339_ms_names_the_same_instant_as_the_time_crate_with_three_fraction_digits() {
        let mut ms = 0u64;
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..20_000u64 {
            let text = rfc3339_ms(ms);
            assert_eq!(text.len(), 24, "{text}");
            let parsed = OffsetDateTime::parse(&text, &Rfc3339).expect("valid RFC 3339");
            assert_eq!(parsed.unix_timestamp_nanos(), i128::from(ms) * 1_000_000, "{text}");
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Every calendar boundary for small steps, then jumps across centuries.
            ms = if i < 10_000 { ms + 86_399_999 + (rng % 3) } else { rng % (UTC_MS_MAX + 1) };
        }
        assert_eq!(rfc3339_ms(1_763_700_000_000), "2025-11-21T04:40:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_120), "2000-02-29T00:00:00.120Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
