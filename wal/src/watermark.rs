//! The durable watermark shared with tailers in other processes: a 32-byte file whose
//! `durable_lsn` field is updated in place through a shared mapping after every fsync.
//!
//! It is a hint that only ever lags the truth: the writer stores it after the fdatasync
//! returns, so every LSN at or below it is durable. It is not fsynced itself (after a crash
//! the writer rewrites it at open), so it costs one atomic store per group commit.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format::{FORMAT_VERSION, WATERMARK_LSN_OFFSET, WATERMARK_MAGIC, WATERMARK_SIZE};
use crate::segment::WATERMARK_FILE;
use crate::Lsn;

pub struct Watermark {
    map: memmap2::MmapRaw,
}

impl Watermark {
    /// Writer side: creates or reuses the file and sets it to `durable_lsn`.
    pub fn create(dir: &Path, durable_lsn: Lsn) -> io::Result<Watermark> {
        let file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(dir.join(WATERMARK_FILE))?;
        let mut header = [0u8; WATERMARK_SIZE];
        header[0..8].copy_from_slice(&WATERMARK_MAGIC);
        header[8..12].copy_from_slice(&(FORMAT_VERSION as u32).to_le_bytes());
        header[16..24].copy_from_slice(&durable_lsn.to_le_bytes());
        file.write_all_at(&header, 0)?;
        file.set_len(WATERMARK_SIZE as u64)?;
        let map = memmap2::MmapOptions::new().len(WATERMARK_SIZE).map_raw(&file)?;
        let w = Watermark { map };
        w.publish(durable_lsn);
        Ok(w)
    }

    /// Reader side (any process).
    pub fn open_reader(dir: &Path) -> io::Result<Watermark> {
        let file = OpenOptions::new().read(true).open(dir.join(WATERMARK_FILE))?;
        if file.metadata()?.len() < WATERMARK_SIZE as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "watermark file too short"));
        }
        let map = memmap2::MmapOptions::new().len(WATERMARK_SIZE).map_raw_read_only(&file)?;
        if map_bytes(&map)[0..8] != WATERMARK_MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad watermark magic"));
        }
        Ok(Watermark { map })
    }

    /// The durable LSN a previous writer published, read before recovery rewrites it:
    /// `None` if the file is missing or not a watermark file.
    pub fn read_previous(dir: &Path) -> Option<Lsn> {
        let bytes = std::fs::read(dir.join(WATERMARK_FILE)).ok()?;
        if bytes.len() < WATERMARK_SIZE || bytes[0..8] != WATERMARK_MAGIC {
            return None;
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&bytes[WATERMARK_LSN_OFFSET..WATERMARK_LSN_OFFSET + 8]);
        Some(u64::from_le_bytes(lsn))
    }

    fn cell(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned and at least WATERMARK_SIZE long, so offset 16
        // is 8-aligned and in bounds; the mapping lives as long as `self`. All accesses go
        // through this atomic (the writer's initial pwrite happens before any reader can
        // see a valid magic... and a stale read is harmless: it only lags).
        unsafe { &*(self.map.as_ptr().add(WATERMARK_LSN_OFFSET) as *const AtomicU64) }
    }

    pub fn publish(&self, durable_lsn: Lsn) {
        self.cell().store(durable_lsn, Ordering::Release);
    }

    pub fn load(&self) -> Lsn {
        self.cell().load(Ordering::Acquire)
    }
}

fn map_bytes(map: &memmap2::MmapRaw) -> &[u8] {
    // SAFETY: read-only view of a mapping we own, valid for its length.
    unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) }
}
