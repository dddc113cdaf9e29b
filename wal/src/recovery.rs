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
/// segment); what open would remove or cut is still reported.
pub fn open(storage: &Arc<dyn Storage>, config: &Config, read_only: bool) -> Result<Opened, WalError> {
    let st: &dyn Storage = &**storage;
    let dir = st.describe(".");
    // What the previous writer acknowledged as durable (it only ever lags the truth). If
    // the log now ends below it, acknowledged records were lost: damage, not a torn tail.
    let published = st.dir_path().and_then(crate::watermark::Watermark::read_previous);
    let acknowledged = published.unwrap_or(0);
    let lost = |last: Lsn, file: &str, offset: u64| {
        WalError::corrupt(
            file,
            offset,
            format!(
                "the log ends at LSN {last} but LSN {acknowledged} was acknowledged as durable \
                 ({}): damage in the last write, not a torn tail; to accept the loss, remove \
                 that file and open again",
                crate::segment::WATERMARK_FILE
            ),
        )
    };
    let list = |st: &dyn Storage| st.list().map_err(|e| WalError::io("list directory", &dir, &e));
    let names = list(st)?;
    let mut removed_files = Vec::new();

    // A snapshot temp file is an unfinished snapshot: the rename never happened.
    for name in &names {
        if name.starts_with(segment::SNAPSHOT_PREFIX) && name.ends_with(segment::TMP_SUFFIX) {
            if !read_only {
                st.remove(name).map_err(|e| WalError::io("remove temp file", &st.describe(name), &e))?;
            }
            removed_files.push(st.describe(name));
        }
    }

    let (snapshot, invalid_snapshots) = snapshot::load_newest(st, &names)?;
    let snapshot_lsn = snapshot.as_ref().map_or(0, |s| s.lsn);

    // Segment headers. Only the very last segment may be half-created (crash between
    // create and the header's fdatasync): records are written only after that sync, so such
    // a segment is all zeros past its header, and it is removed. A bad header in front of
    // data is damage, not a crash: open stops.
    let mut segs = segment::segments_in(&names);
    // Read-only: a writer may be appending right now (even into a segment it is about to
    // seal, or one it just created); read only what it published as durable.
    let lsn_max = published.filter(|_| read_only);
    if let Some(max) = lsn_max {
        segs.retain(|(first_lsn, _)| *first_lsn <= max);
    }
    let mut headers_ok = Vec::new();
    for (i, (first_lsn, name)) in segs.iter().enumerate() {
        let path = st.describe(name);
        let bytes = st.read(name).map_err(|e| WalError::io("read segment", &path, &e))?;
        match format::decode_segment_header(&bytes) {
            Ok(h) if h.first_lsn == *first_lsn => headers_ok.push((bytes, h)),
            Ok(_) => return Err(WalError::corrupt(&path, 0, "first LSN in header does not match file name")),
            Err(reason)
                if i + 1 == segs.len()
                    && bytes.get(SEGMENT_HEADER_SIZE..).is_none_or(|rest| rest.iter().all(|&b| b == 0)) =>
            {
                drop(bytes);
                if !read_only {
                    st.remove(name).map_err(|e| WalError::io("remove segment", &path, &e))?;
                }
                removed_files.push(format!("{path} ({reason})"));
            }
            Err(reason) => return Err(WalError::corrupt(&path, 0, reason)),
        }
    }
    segs.truncate(headers_ok.len());
    if !removed_files.is_empty() && !read_only {
        st.sync_dir().map_err(|e| WalError::io("fsync directory", &dir, &e))?;
    }

    // Segments wholly covered by the snapshot are not read (retention may not have run yet).
    let mut skip = 0;
    while skip + 1 < segs.len() && segs[skip + 1].0 <= snapshot_lsn + 1 {
        skip += 1;
    }
    let mut expect = match segs.get(skip) {
        Some((first, name)) => {
            if *first > snapshot_lsn + 1 {
                return Err(WalError::corrupt(
                    &st.describe(name),
                    0,
                    format!(
                        "log starts at LSN {first} but the newest valid snapshot covers only up \
                         to {snapshot_lsn}: records are missing{}",
                        invalid_snapshots
                            .iter()
                            .map(|(f, why)| format!("; invalid snapshot {f}: {why}"))
                            .collect::<String>()
                    ),
                ));
            }
            *first
        }
        None => snapshot_lsn + 1,
    };

    // A new log gets a fresh salt; an existing one keeps the salt of its newest segment.
    let salt = headers_ok.last().map_or_else(segment::new_salt, |(_, h)| h.salt);
    let mut recovered = Vec::new();
    let mut tail_cut = None;
    let mut record_count = 0u64;
    let mut active = None;
    let total = segs.len();
    for (i, ((first_lsn, name), (bytes, header))) in segs.iter().zip(headers_ok).enumerate().skip(skip) {
        if lsn_max.is_some_and(|max| expect > max) {
            break;
        }
        let path = st.describe(name);
        if *first_lsn != expect {
            return Err(WalError::corrupt(
                &path,
                0,
                format!("segment starts at LSN {first_lsn}, expected {expect}: LSN gap"),
            ));
        }
        let is_last = i + 1 == total;
        let limit = bytes.len().min(header.segment_size_bytes as usize).max(SEGMENT_HEADER_SIZE);
        let scan = segment::scan_segment(&path, &bytes[..limit], *first_lsn, header.salt, is_last, lsn_max)?;
        expect = scan.next_lsn;
        if is_last {
            if scan.next_lsn <= acknowledged {
                return Err(lost(scan.next_lsn - 1, &path, scan.end_offset as u64));
            }
            tail_cut = scan.cut.clone();
        }
        if is_last && !read_only {
            let mut file = st.open_write(name).map_err(|e| WalError::io("open segment", &path, &e))?;
            if let Some(cut) = &scan.cut {
                // Zero what was cut so stale frames can never reappear behind new ones.
                let zeros = vec![0u8; 1 << 20];
                let mut at = cut.offset;
                let end = cut.offset + cut.discarded_bytes;
                while at < end {
                    let n = (end - at).min(zeros.len() as u64) as usize;
                    file.write_at(at, &zeros[..n]).map_err(|e| WalError::io("zero torn tail", &path, &e))?;
                    at += n as u64;
                }
            }
            // Also makes what we recovered from the page cache durable before we hand it out.
            file.sync_data().map_err(|e| WalError::io("fdatasync segment", &path, &e))?;
            active = Some(ActiveSegment::new(file, *first_lsn, scan.end_offset as u64, header.segment_size_bytes));
        }
        let yield_from = snapshot_lsn + 1;
        record_count += scan.next_lsn.saturating_sub((*first_lsn).max(yield_from));
        recovered.push(RecoveredSegment {
            salt: header.salt,
            bytes,
            start: SEGMENT_HEADER_SIZE,
            end: scan.end_offset,
            yield_from,
        });
    }
    if expect <= snapshot_lsn && !recovered.is_empty() {
        return Err(WalError::corrupt(
            &dir,
            0,
            format!("log ends at LSN {} below the snapshot LSN {snapshot_lsn}", expect - 1),
        ));
    }
    let next_lsn = expect.max(snapshot_lsn + 1);
    if next_lsn <= acknowledged {
        return Err(lost(next_lsn - 1, &dir, 0));
    }
    let mut segment_infos: Vec<SegmentInfo> =
        segs.iter().map(|(first_lsn, name)| SegmentInfo { first_lsn: *first_lsn, name: name.clone() }).collect();
    let active = match active {
        _ if read_only => None,
        Some(a) if a.offset + (format::FRAME_HEADER_SIZE as u64) < a.size_bytes => Some(a),
        _ => {
            // No segment yet, or the last one is full: start one at the next LSN.
            let file = writer::create_segment(st, config.segment_size_bytes, next_lsn, salt)?;
            segment_infos.push(SegmentInfo { first_lsn: next_lsn, name: segment::segment_name(next_lsn) });
            Some(ActiveSegment::new(file, next_lsn, SEGMENT_HEADER_SIZE as u64, config.segment_size_bytes))
        }
    };
    Ok(Opened {
        recovery: Recovery {
            snapshot,
            segments: recovered,
            tail_cut,
            removed_files,
            invalid_snapshots,
            next_lsn,
            record_count,
        },
        active,
        segments: segment_infos,
        snapshot_lsn,
        salt,
    })
}
