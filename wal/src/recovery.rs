//! Open: find the newest valid snapshot, validate every segment after it, cut a torn tail
//! (and say where), refuse to open on damage anywhere else, and hand back what to replay.

use std::sync::Arc;

use crate::config::Config;
use crate::error::WalError;
use crate::format::{self, Frame, RecordRef, SEGMENT_HEADER_SIZE};
use crate::segment::{self, TailCut};
use crate::snapshot::{self, LoadedSnapshot};
use crate::storage::{FileBytes, Storage};
use crate::writer::{self, ActiveSegment, SegmentInfo};
use crate::Lsn;

/// What open found. Borrow records from it with [`Recovery::records`].
pub struct Recovery {
    snapshot: Option<LoadedSnapshot>,
    segments: Vec<RecoveredSegment>,
    /// Set if a torn or zeroed tail was cut off (file, offset, LSN).
    pub tail_cut: Option<TailCut>,
    /// Files open deleted: leftover temp files and a half-created last segment.
    pub removed_files: Vec<String>,
    /// Snapshots newer than the one loaded that failed validation: `(file, reason)`.
    pub invalid_snapshots: Vec<(String, String)>,
    /// The LSN the first append will get.
    pub next_lsn: Lsn,
    record_count: u64,
}

struct RecoveredSegment {
    bytes: FileBytes,
    start: usize,
    end: usize,
    /// Records below this LSN are covered by the snapshot and are not yielded.
    yield_from: Lsn,
    salt: u64,
}

impl Recovery {
    /// The newest valid snapshot: `(LSN, state bytes)`.
    pub fn snapshot(&self) -> Option<(Lsn, &[u8])> {
        self.snapshot.as_ref().map(|s| (s.lsn, s.state()))
    }

    /// Records after the snapshot, in LSN order (already validated by open).
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter { recovery: self, segment: 0, offset: self.segments.first().map_or(0, |s| s.start) }
    }

    /// How many records [`Recovery::records`] yields.
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// LSN of the last recovered record (or of the snapshot), 0 if the log is empty.
    pub fn last_lsn(&self) -> Lsn {
        self.next_lsn - 1
    }
}

pub struct RecordIter<'a> {
    recovery: &'a Recovery,
    segment: usize,
    offset: usize,
}

impl<'a> Iterator for RecordIter<'a> {
    /// `Err` only if a file changed underneath between open and iteration.
    type Item = Result<RecordRef<'a>, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Bounded: each round yields, skips one record, or moves to the next segment.
        loop {
            let seg = self.recovery.segments.get(self.segment)?;
            if self.offset >= seg.end {
                self.segment += 1;
                self.offset = self.recovery.segments.get(self.segment)?.start;
                continue;
            }
            match format::read_frame(&seg.bytes[..seg.end], self.offset, seg.salt) {
                Frame::Valid { record, size } => {
                    self.offset += size;
                    if record.lsn >= seg.yield_from {
                        return Some(Ok(record));
                    }
                }
                _ => {
                    let at = self.offset as u64;
                    self.segment = usize::MAX;
                    return Some(Err(WalError::corrupt("segment", at, "file changed after open validated it")));
                }
            }
        }
    }
}

pub struct Opened {
    pub recovery: Recovery,
    /// `None` in read-only mode.
    pub active: Option<ActiveSegment>,
    pub segments: Vec<SegmentInfo>,
    pub snapshot_lsn: Lsn,
    pub salt: u64,
}

/// `read_only`: run every check but change nothing (no deletes, no zeroing, no syncs, no new
/// segment); what open would remove or cut is still reported. The steps are those of
/// FORMAT.md, "Open (recovery)" (the caller holds the `LOCK`).
pub fn open(storage: &Arc<dyn Storage>, config: &Config, read_only: bool) -> Result<Opened, WalError> {
    let st: &dyn Storage = &**storage;
    // What the previous writer acknowledged as durable (it only ever lags the truth).
    let published = st.dir_path().and_then(crate::watermark::Watermark::read_previous);
    let opening = Opening {
        st,
        dir: st.describe("."),
        read_only,
        acknowledged: published.unwrap_or(0),
        // Read-only: a writer may be appending right now (even into a segment it is about to
        // seal, or one it just created); read only what it published as durable.
        lsn_max: published.filter(|_| read_only),
    };
    let names = st.list().map_err(|e| WalError::io("list directory", &opening.dir, &e))?;
    // Step 1.
    let mut removed_files = opening.remove_snapshot_temps(&names)?;
    // Step 2.
    let (snapshot, invalid_snapshots) = snapshot::load_newest(st, &names)?;
    let snapshot_lsn = snapshot.as_ref().map_or(0, |s| s.lsn);
    // Step 3, and the removals of steps 1 and 3 made durable.
    let segments = opening.check_segment_headers(&names, &mut removed_files)?;
    if !removed_files.is_empty() && !read_only {
        st.sync_dir().map_err(|e| WalError::io("fsync directory", &opening.dir, &e))?;
    }
    // Step 4.
    let (skip, first_lsn) = opening.first_segment_to_read(&segments, snapshot_lsn, &invalid_snapshots)?;
    // A new log gets a fresh salt; an existing one keeps the salt of its newest segment.
    let salt = segments.last().map_or_else(segment::new_salt, |s| s.header.salt);
    let segment_infos: Vec<SegmentInfo> =
        segments.iter().map(|s| SegmentInfo { first_lsn: s.first_lsn, name: s.name.clone() }).collect();
    // Steps 5 and 6.
    let scanned = opening.scan_segments(segments, skip, first_lsn, snapshot_lsn)?;
    let next_lsn = opening.next_lsn(&scanned, snapshot_lsn)?;
    // Step 7.
    let (active, segment_infos) = opening.active_segment(config, scanned.active, segment_infos, next_lsn, salt)?;
    Ok(Opened {
        recovery: Recovery {
            snapshot,
            segments: scanned.recovered,
            tail_cut: scanned.tail_cut,
            removed_files,
            invalid_snapshots,
            next_lsn,
            record_count: scanned.record_count,
        },
        active,
        segments: segment_infos,
        snapshot_lsn,
        salt,
    })
}

/// One open of the log: what its steps share.
struct Opening<'a> {
    st: &'a dyn Storage,
    /// The directory, as messages name it.
    dir: String,
    read_only: bool,
    /// The LSN the previous writer published as durable (0: none). If the log now ends
    /// below it, acknowledged records were lost: damage, not a torn tail.
    acknowledged: Lsn,
    /// A read-only open reads nothing past this LSN (see [`open`]).
    lsn_max: Option<Lsn>,
}

/// A segment whose header checked out, with its bytes.
struct HeaderChecked {
    first_lsn: Lsn,
    name: String,
    bytes: FileBytes,
    header: format::SegmentHeader,
}

/// What scanning the segments found.
struct Scanned {
    recovered: Vec<RecoveredSegment>,
    tail_cut: Option<TailCut>,
    record_count: u64,
    /// The last segment, opened for appending (not in a read-only open).
    active: Option<ActiveSegment>,
    /// The LSN after the last record scanned.
    next_lsn: Lsn,
}

impl Opening<'_> {
    /// Step 1: a snapshot temp file is an unfinished snapshot (the rename never happened):
    /// it is removed. Returns what was (or, read-only, would be) removed.
    fn remove_snapshot_temps(&self, names: &[String]) -> Result<Vec<String>, WalError> {
        let mut removed = Vec::new();
        for name in names {
            if name.starts_with(segment::SNAPSHOT_PREFIX) && name.ends_with(segment::TMP_SUFFIX) {
                if !self.read_only {
                    self.st.remove(name).map_err(|e| WalError::io("remove temp file", &self.st.describe(name), &e))?;
                }
                removed.push(self.st.describe(name));
            }
        }
        Ok(removed)
    }

    /// Step 3: segment headers. Only the very last segment may be half-created (crash
    /// between create and the header's fdatasync): records are written only after that
    /// sync, so such a segment is all zeros past its header, and it is removed (added to
    /// `removed`). A bad header in front of data is damage, not a crash: open stops.
    fn check_segment_headers(
        &self,
        names: &[String],
        removed: &mut Vec<String>,
    ) -> Result<Vec<HeaderChecked>, WalError> {
        let mut segs = segment::segments_in(names);
        if let Some(max) = self.lsn_max {
            segs.retain(|(first_lsn, _)| *first_lsn <= max);
        }
        let total = segs.len();
        let mut checked = Vec::with_capacity(total);
        for (i, (first_lsn, name)) in segs.into_iter().enumerate() {
            let path = self.st.describe(&name);
            let bytes = self.st.read(&name).map_err(|e| WalError::io("read segment", &path, &e))?;
            match format::decode_segment_header(&bytes) {
                Ok(header) if header.first_lsn == first_lsn => {
                    checked.push(HeaderChecked { first_lsn, name, bytes, header })
                }
                Ok(_) => return Err(WalError::corrupt(&path, 0, "first LSN in header does not match file name")),
                Err(reason)
                    if i + 1 == total
                        && bytes.get(SEGMENT_HEADER_SIZE..).is_none_or(|rest| rest.iter().all(|&b| b == 0)) =>
                {
                    drop(bytes);
                    if !self.read_only {
                        self.st.remove(&name).map_err(|e| WalError::io("remove segment", &path, &e))?;
                    }
                    removed.push(format!("{path} ({reason})"));
                }
                Err(reason) => return Err(WalError::corrupt(&path, 0, reason)),
            }
        }
        Ok(checked)
    }

    /// Step 4: segments wholly covered by the snapshot are not read (retention may not have
    /// run yet); the first one read must start at or before the snapshot's LSN + 1. Returns
    /// how many to skip and the LSN the first one read starts at.
    fn first_segment_to_read(
        &self,
        segs: &[HeaderChecked],
        snapshot_lsn: Lsn,
        invalid_snapshots: &[(String, String)],
    ) -> Result<(usize, Lsn), WalError> {
        let mut skip = 0;
        while skip + 1 < segs.len() && segs[skip + 1].first_lsn <= snapshot_lsn + 1 {
            skip += 1;
        }
        let Some(first) = segs.get(skip) else { return Ok((skip, snapshot_lsn + 1)) };
        if first.first_lsn > snapshot_lsn + 1 {
            return Err(WalError::corrupt(
                &self.st.describe(&first.name),
                0,
                format!(
                    "log starts at LSN {} but the newest valid snapshot covers only up \
                     to {snapshot_lsn}: records are missing{}",
                    first.first_lsn,
                    invalid_snapshots
                        .iter()
                        .map(|(f, why)| format!("; invalid snapshot {f}: {why}"))
                        .collect::<String>()
                ),
            ));
        }
        Ok((skip, first.first_lsn))
    }

    /// Steps 5 and 6: every frame of every segment read, each segment starting right after
    /// the previous one's last record (else "LSN gap"); sealed segments must be perfect, the
    /// last one may end in a torn tail, which is cut (and, writable, zeroed).
    fn scan_segments(
        &self,
        segs: Vec<HeaderChecked>,
        skip: usize,
        first_lsn: Lsn,
        snapshot_lsn: Lsn,
    ) -> Result<Scanned, WalError> {
        let mut scanned =
            Scanned { recovered: Vec::new(), tail_cut: None, record_count: 0, active: None, next_lsn: first_lsn };
        let total = segs.len();
        for (i, seg) in segs.into_iter().enumerate().skip(skip) {
            if self.lsn_max.is_some_and(|max| scanned.next_lsn > max) {
                break;
            }
            let path = self.st.describe(&seg.name);
            if seg.first_lsn != scanned.next_lsn {
                return Err(WalError::corrupt(
                    &path,
                    0,
                    format!("segment starts at LSN {}, expected {}: LSN gap", seg.first_lsn, scanned.next_lsn),
                ));
            }
            let is_last = i + 1 == total;
            let limit = seg.bytes.len().min(seg.header.segment_size_bytes as usize).max(SEGMENT_HEADER_SIZE);
            let scan = segment::scan_segment(
                &path,
                &seg.bytes[..limit],
                seg.first_lsn,
                seg.header.salt,
                is_last,
                self.lsn_max,
            )?;
            scanned.next_lsn = scan.next_lsn;
            if is_last {
                if scan.next_lsn <= self.acknowledged {
                    return Err(self.lost(scan.next_lsn - 1, &path, scan.end_offset as u64));
                }
                scanned.tail_cut = scan.cut.clone();
                if !self.read_only {
                    scanned.active = Some(self.reopen_last_segment(&seg, &path, &scan)?);
                }
            }
            let yield_from = snapshot_lsn + 1;
            scanned.record_count += scan.next_lsn.saturating_sub(seg.first_lsn.max(yield_from));
            scanned.recovered.push(RecoveredSegment {
                salt: seg.header.salt,
                bytes: seg.bytes,
                start: SEGMENT_HEADER_SIZE,
                end: scan.end_offset,
                yield_from,
            });
        }
        Ok(scanned)
    }

    /// Step 6, writable: the last segment, with what was cut overwritten by zeros (so stale
    /// frames can never reappear behind new ones) and made durable, ready for appends.
    fn reopen_last_segment(
        &self,
        seg: &HeaderChecked,
        path: &str,
        scan: &segment::SegmentScan,
    ) -> Result<ActiveSegment, WalError> {
        let mut file = self.st.open_write(&seg.name).map_err(|e| WalError::io("open segment", path, &e))?;
        if let Some(cut) = &scan.cut {
            let zeros = vec![0u8; 1 << 20];
            let mut at = cut.offset;
            let end = cut.offset + cut.discarded_bytes;
            // Bounded: every round moves `at` forward by up to 1 MiB.
            while at < end {
                let n = (end - at).min(zeros.len() as u64) as usize;
                file.write_at(at, &zeros[..n]).map_err(|e| WalError::io("zero torn tail", path, &e))?;
                at += n as u64;
            }
        }
        // Also makes what we recovered from the page cache durable before we hand it out.
        file.sync_data().map_err(|e| WalError::io("fdatasync segment", path, &e))?;
        Ok(ActiveSegment::new(file, seg.first_lsn, scan.end_offset as u64, seg.header.segment_size_bytes))
    }

    /// The LSN the first append gets, once the log is known to reach the snapshot and every
    /// acknowledged record.
    fn next_lsn(&self, scanned: &Scanned, snapshot_lsn: Lsn) -> Result<Lsn, WalError> {
        if scanned.next_lsn <= snapshot_lsn && !scanned.recovered.is_empty() {
            return Err(WalError::corrupt(
                &self.dir,
                0,
                format!("log ends at LSN {} below the snapshot LSN {snapshot_lsn}", scanned.next_lsn - 1),
            ));
        }
        let next_lsn = scanned.next_lsn.max(snapshot_lsn + 1);
        if next_lsn <= self.acknowledged {
            return Err(self.lost(next_lsn - 1, &self.dir, 0));
        }
        Ok(next_lsn)
    }

    /// Step 7, writable: appends go on in the last segment, or in a new one at `next_lsn`
    /// when there is none yet or the last one is full.
    fn active_segment(
        &self,
        config: &Config,
        last: Option<ActiveSegment>,
        mut segment_infos: Vec<SegmentInfo>,
        next_lsn: Lsn,
        salt: u64,
    ) -> Result<(Option<ActiveSegment>, Vec<SegmentInfo>), WalError> {
        let active = match last {
            _ if self.read_only => None,
            Some(a) if a.offset + (format::FRAME_HEADER_SIZE as u64) < a.size_bytes => Some(a),
            _ => {
                let file = writer::create_segment(self.st, config.segment_size_bytes, next_lsn, salt)?;
                segment_infos.push(SegmentInfo { first_lsn: next_lsn, name: segment::segment_name(next_lsn) });
                Some(ActiveSegment::new(file, next_lsn, SEGMENT_HEADER_SIZE as u64, config.segment_size_bytes))
            }
        };
        Ok((active, segment_infos))
    }

    /// The log ends at `last` below what the previous writer acknowledged.
    fn lost(&self, last: Lsn, file: &str, offset: u64) -> WalError {
        WalError::corrupt(
            file,
            offset,
            format!(
                "the log ends at LSN {last} but LSN {} was acknowledged as durable \
                 ({}): damage in the last write, not a torn tail; to accept the loss, remove \
                 that file and open again",
                self.acknowledged,
                crate::segment::WATERMARK_FILE
            ),
        )
    }
}
