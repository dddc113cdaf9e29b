//! Tailing: yield durable records from an LSN on, and wait for more. Never yields beyond the
//! durable watermark, so whatever a tailer hands out survives any crash. Works in the
//! writer's process (watermark from memory, woken by the writer) and in any other process
//! (watermark from the shared `durable.lsn` file, polled).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::WalError;
use crate::format::{self, Frame, Record, SEGMENT_HEADER_SIZE};
use crate::retention;
use crate::segment;
use crate::storage::{DirStorage, FileBytes, Storage};
use crate::watermark::Watermark;
use crate::writer::Shared;
use crate::Lsn;

enum Source {
    Local(Arc<Shared>),
    File(Watermark),
}

struct OpenSegment {
    name: String,
    bytes: FileBytes,
    offset: usize,
    salt: u64,
}

pub struct Tailer {
    storage: Arc<dyn Storage>,
    source: Source,
    next_lsn: Lsn,
    segment: Option<OpenSegment>,
    poll_interval_ms: u64,
}

impl Tailer {
    pub(crate) fn local(shared: Arc<Shared>, from_lsn: Lsn) -> Result<Tailer, WalError> {
        if from_lsn == 0 {
            return Err(WalError::InvalidArgument("LSNs start at 1".into()));
        }
        Ok(Tailer {
            storage: shared.storage.clone(),
            poll_interval_ms: shared.config.tail_poll_interval_ms,
            source: Source::Local(shared),
            next_lsn: from_lsn,
            segment: None,
        })
    }

    /// A tailer on a log directory written by another process (or this one).
    pub fn open(dir: impl AsRef<Path>, from_lsn: Lsn) -> Result<Tailer, WalError> {
        if from_lsn == 0 {
            return Err(WalError::InvalidArgument("LSNs start at 1".into()));
        }
        let dir = dir.as_ref();
        let watermark = Watermark::open_reader(dir)
            .map_err(|e| WalError::io("open watermark file", &dir.display().to_string(), &e))?;
        Ok(Tailer {
            storage: Arc::new(DirStorage::open_reader(dir)),
            source: Source::File(watermark),
            next_lsn: from_lsn,
            segment: None,
            poll_interval_ms: crate::config::Config::default().tail_poll_interval_ms,
        })
    }

    /// The LSN the next yielded record will have.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    pub fn durable_lsn(&self) -> Lsn {
        match &self.source {
            Source::Local(shared) => shared.durable_lsn(),
            Source::File(w) => w.load(),
        }
    }

    /// Stores `reader`'s checkpoint in the log directory (see [`crate::Wal::set_reader_checkpoint`]).
    pub fn store_checkpoint(&self, reader: &str, lsn: Lsn) -> Result<(), WalError> {
        retention::store_checkpoint(&*self.storage, reader, lsn)
    }

    /// The next durable record, or `None` if there is none yet. Never blocks.
    pub fn try_next(&mut self) -> Result<Option<Record>, WalError> {
        if self.next_lsn > self.durable_lsn() {
            return Ok(None);
        }
        let mut refreshed = false;
        let mut switched = false;
        // Bounded: every round advances the offset, or switches/refreshes at most once each.
        loop {
            if self.segment.is_none() {
                self.locate()?;
            }
            let Some(seg) = self.segment.as_mut() else {
                return Err(WalError::Closed);
            };
            match format::read_frame(&seg.bytes, seg.offset, seg.salt) {
                Frame::Valid { record, size } if record.lsn == self.next_lsn => {
                    seg.offset += size;
                    self.next_lsn += 1;
                    return Ok(Some(record.to_owned_record()));
                }
                Frame::Valid { record, size } if record.lsn < self.next_lsn => {
                    seg.offset += size;
                }
                other => {
                    // The record is durable, so it is here or in the next segment.
                    let next_name = segment::segment_name(self.next_lsn);
                    let exists = seg.offset > SEGMENT_HEADER_SIZE
                        && matches!(other, Frame::End)
                        && self.storage.read(&next_name).is_ok();
                    if exists && !switched {
                        switched = true;
                        self.segment = Some(self.open_segment(&next_name)?);
                        continue;
                    }
                    if !refreshed {
                        // Our view may predate the write (copy-based storage): look again.
                        refreshed = true;
                        let name = seg.name.clone();
                        let offset = seg.offset;
                        let mut fresh = self.open_segment(&name)?;
                        fresh.offset = offset;
                        self.segment = Some(fresh);
                        continue;
                    }
                    let reason = match other {
                        Frame::Invalid { reason } => reason,
                        Frame::End => "durable record missing",
                        Frame::Valid { .. } => "LSN out of sequence",
                    };
                    return Err(WalError::corrupt(
                        &self.storage.describe(&seg.name),
                        seg.offset as u64,
                        format!("while tailing LSN {}: {reason}", self.next_lsn),
                    ));
                }
            }
        }
    }

    /// The next durable record, waiting up to `timeout_ms` for one to become durable.
    pub fn next_timeout_ms(&mut self, timeout_ms: u64) -> Result<Option<Record>, WalError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        // Bounded by the deadline.
        loop {
            if let Some(r) = self.try_next()? {
                return Ok(Some(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match &self.source {
                Source::Local(shared) => {
                    if let Some(e) = shared.failure() {
                        if shared.durable_lsn() < self.next_lsn {
                            return Err(e);
                        }
                    }
                    shared.wait_durable_beyond(self.next_lsn - 1, deadline - now);
                }
                Source::File(_) => {
                    let nap = Duration::from_millis(self.poll_interval_ms.max(1));
                    std::thread::sleep(nap.min(deadline - now));
                }
            }
        }
    }

    fn open_segment(&self, name: &str) -> Result<OpenSegment, WalError> {
        let path = self.storage.describe(name);
        let bytes = self.storage.read(name).map_err(|e| WalError::io("read segment", &path, &e))?;
        let header = format::decode_segment_header(&bytes).map_err(|r| WalError::corrupt(&path, 0, r))?;
        Ok(OpenSegment { name: name.to_string(), bytes, offset: SEGMENT_HEADER_SIZE, salt: header.salt })
    }

    /// Opens the segment that holds `next_lsn`: the one with the greatest first LSN <= it.
    fn locate(&mut self) -> Result<(), WalError> {
        let names = self.storage.list().map_err(|e| WalError::io("list directory", &self.storage.describe("."), &e))?;
        let segs = segment::segments_in(&names);
        let Some((_, name)) = segs.iter().rev().find(|(f, _)| *f <= self.next_lsn) else {
            return Err(WalError::LsnNotAvailable { lsn: self.next_lsn, oldest_lsn: segs.first().map_or(0, |s| s.0) });
        };
        self.segment = Some(self.open_segment(name)?);
        Ok(())
    }
}
