//! io_uring path: one linked write + fdatasync pair per group commit, so the kernel issues
//! the flush right behind the write with a single `io_uring_enter`.
//!
//! Buffered I/O (no O_DIRECT): batches are arbitrary byte ranges, and the page cache is what
//! lets a tailer in another process read the log through mmap. See FORMAT.md.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use io_uring::{opcode, squeue, types, IoUring};

use crate::storage::LogFile;

/// Submission queue entries per ring: one write and one fsync in flight at a time.
const RING_ENTRIES: u32 = 4;

/// Whether io_uring can be set up and completes a NOP here (it is often blocked by seccomp
/// in containers, or disabled by `kernel.io_uring_disabled`).
pub fn available() -> bool {
    let mut ring = match IoUring::new(RING_ENTRIES) {
        Ok(r) => r,
        Err(_) => return false,
    };
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP references no memory.
    if unsafe { ring.submission().push(&nop) }.is_err() {
        return false;
    }
    if ring.submit_and_wait(1).is_err() {
        return false;
    }
    let ok = matches!(ring.completion().next(), Some(cqe) if cqe.result() >= 0 && cqe.user_data() == 7);
    ok
}

pub struct UringFile {
    file: File,
    ring: IoUring,
}

impl UringFile {
    pub fn new(file: File) -> io::Result<UringFile> {
        Ok(UringFile { file, ring: IoUring::new(RING_ENTRIES)? })
    }

    /// Submits whatever is queued and collects exactly `want` completions as `(user_data, res)`.
    fn complete(&mut self, want: usize) -> io::Result<[(u64, i32); 2]> {
        assert!(want <= 2);
        let mut got = [(0u64, 0i32); 2];
        let mut n = 0;
        // Bounded: each round either collects a completion or returns an error; EINTR
        // retries are bounded too so a signal storm cannot spin forever.
        let mut interrupts_left = 1000;
        while n < want {
            match self.ring.submit_and_wait(want - n) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupts_left > 0 => {
                    interrupts_left -= 1;
                }
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                if n < want {
                    got[n] = (cqe.user_data(), cqe.result());
                    n += 1;
                }
            }
        }
        Ok(got)
    }
}

const WRITE_TAG: u64 = 1;
const FSYNC_TAG: u64 = 2;

impl LogFile for UringFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write_at_sync(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        let mut done = 0usize;
        // Each round writes at least one byte or returns an error, so this terminates.
        while done < bytes.len() {
            let chunk = &bytes[done..];
            let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let write = opcode::Write::new(fd, chunk.as_ptr(), len)
                .offset(offset + done as u64)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(WRITE_TAG);
            let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(FSYNC_TAG);
            {
                let mut sq = self.ring.submission();
                // SAFETY: `chunk` outlives the submission: we wait for both completions
                // below before returning or touching the buffer again.
                unsafe {
                    sq.push(&write).map_err(|_| io::Error::other("io_uring submission queue full"))?;
                    sq.push(&fsync).map_err(|_| io::Error::other("io_uring submission queue full"))?;
                }
            }
            let got = self.complete(2)?;
            let mut write_res = None;
            let mut fsync_res = None;
            for (tag, res) in got {
                match tag {
                    WRITE_TAG => write_res = Some(res),
                    FSYNC_TAG => fsync_res = Some(res),
                    _ => {}
                }
            }
            let (Some(w), Some(f)) = (write_res, fsync_res) else {
                return Err(io::Error::other("io_uring: unexpected completions"));
            };
            if w < 0 {
                return Err(io::Error::from_raw_os_error(-w));
            }
            if w == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
            }
            done += w as usize;
            if done >= bytes.len() {
                if f < 0 {
                    return Err(io::Error::from_raw_os_error(-f));
                }
                return Ok(());
            }
            // Short write: the linked fsync was cancelled; write the rest and sync again.
        }
        // Zero-length batch: nothing to write, still honour the sync.
        self.file.sync_data()
    }
}
