//! Durable log records read into bounded batches of decoded events.

use std::time::{Duration, Instant};

use surge_core::image;
use surge_core::Event;
use surge_wal::{Lsn, Tailer};

/// One event as it left the log: its record's LSN and its index in that record (and, in
/// cluster mode, the partition whose log it is) give the stable `event_id`
/// (`surge_core::envelope`).
#[derive(Clone, Debug)]
pub struct LoggedEvent {
    /// Cluster mode: the partition whose log holds the record (LSNs are per partition).
    pub partition: Option<u32>,
    pub lsn: Lsn,
    pub index: u32,
    pub event: Event,
}

impl LoggedEvent {
    pub fn event_id(&self) -> String {
        match self.partition {
            None => surge_core::envelope::event_id(self.lsn, self.index),
            Some(p) => surge_core::envelope::partition_event_id(p, self.lsn, self.index),
        }
    }

    /// The event's JSON form as it leaves the process, under its `event_id`.
    pub fn envelope(&self) -> surge_core::envelope::Envelope<'_> {
        self.event.envelope_with_id(self.event_id())
    }
}

/// Consecutive durable records `first_lsn..=last_lsn` and their events in log order. A
/// record with no events (an empty probe the server writes after a storage failure, or a
/// record of engine-internal events only) still moves the position.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub events: Vec<LoggedEvent>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.last_lsn == 0
    }

    pub fn record_count(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.last_lsn - self.first_lsn + 1
        }
    }

    /// When the newest event of the batch was decided (for lag in seconds).
    pub fn last_at_ms(&self) -> Option<u64> {
        self.events.last().map(|e| e.event.at_ms)
    }

    /// Adds the record at `lsn` (the one after `last_lsn`) with its events; `partition`
    /// names the log in cluster mode.
    pub fn push_record(&mut self, partition: Option<u32>, lsn: Lsn, events: Vec<Event>) {
        debug_assert!(self.is_empty() || lsn == self.last_lsn + 1, "records are consecutive");
        if self.is_empty() {
            self.first_lsn = lsn;
        }
        self.last_lsn = lsn;
        for (index, event) in events.into_iter().enumerate() {
            // Bounded: a record holds at most one log batch, far below u32::MAX events.
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            self.events.push(LoggedEvent { partition, lsn, index, event });
        }
    }
}

/// What one read may take.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Stop adding records once the batch holds this many events.
    pub events_max: usize,
    /// Wait at most this long for the first durable record.
    pub wait_ms: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits { events_max: 10_000, wait_ms: 100 }
    }
}

/// Why a read stopped: the log could not be read, or a record does not decode (the
/// server's own recovery would refuse it too, so the relay stops rather than skip it).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the log: {0}")]
    Log(#[from] surge_wal::WalError),
    #[error("record at LSN {lsn}: {reason}")]
    Record { lsn: Lsn, reason: image::ImageError },
    /// The log no longer has `lsn`: its oldest record is `oldest_lsn` (retention or a
    /// snapshot's truncation removed the rest before this reader registered).
    #[error("records {lsn}..{oldest_lsn} were removed from the log")]
    Removed { lsn: Lsn, oldest_lsn: Lsn },
    /// A replicated log could not be read (etcd unreachable, say): retry.
    #[error("reading the log: {0}")]
    Source(String),
}

/// Reads the next durable records into a batch: waits up to `wait_ms` for the first, then
/// takes what is already durable until `events_max`. An empty batch means nothing came.
pub fn read_batch(tailer: &mut Tailer, limits: BatchLimits) -> Result<Batch, ReadError> {
    assert!(limits.events_max > 0, "a batch holds at least one event");
    let mut batch = Batch::default();
    let deadline = Instant::now() + Duration::from_millis(limits.wait_ms);
    let Some(first) = tailer.next_timeout_ms(limits.wait_ms)? else {
        return Ok(batch);
    };
    let mut next = Some(first);
    // Bounded by events_max (every record adds its events) and by the durable prefix.
    while let Some(record) = next.take() {
        let events = image::record_events(record.record_type, &record.payload)
            .map_err(|reason| ReadError::Record { lsn: record.lsn, reason })?;
        batch.push_record(None, record.lsn, events);
        if batch.events.len() >= limits.events_max || Instant::now() > deadline + Duration::from_millis(limits.wait_ms)
        {
            break;
        }
        next = tailer.try_next()?;
    }
    Ok(batch)
}
