//! Tunables. Every queue, batch and file has an explicit upper bound here.

use crate::error::WalError;
use crate::format;

/// Which system call path the writer uses for "write then fdatasync".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring if a probe at open succeeds (it may be blocked by seccomp), else pwrite.
    Auto,
    /// io_uring or fail the open.
    Uring,
    /// pwrite + fdatasync, never io_uring.
    Pwrite,
}

/// What an append does when the submission queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Block the caller until there is room, at most this long, then `WalError::QueueFull`.
    Wait { timeout_ms: u64 },
    /// Return `WalError::QueueFull` immediately.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Size every segment file is preallocated to. Must hold one full batch plus a header.
    pub segment_size_bytes: u64,
    /// Upper bound of one group-commit write. Also the bound of queued (not yet written)
    /// bytes: the writer double-buffers, so at most 2 x this is in memory.
    pub batch_bytes_max: u64,
    /// Upper bound on queued records (not yet handed to the writer).
    pub queue_depth_max: u32,
    pub when_full: WhenFull,
    pub io_mode: IoMode,
    /// How often a cross-process tailer polls the watermark file when it has caught up.
    pub tail_poll_interval_ms: u64,
    /// The writer keeps this many bytes past the end of the log written with zeros (refilled
    /// when less than half is left; 0 = off). Why: the fdatasync of an append into blocks
    /// that are already written need not make an extent conversion durable (FORMAT.md).
    pub zero_ahead_bytes: u64,
}

/// One zero write per half MiB of log. Commits of a few KiB each land on fresh blocks every
/// time, and there the conversion was half of the fdatasync (wal/README.md, measured).
pub const ZERO_AHEAD_BYTES_DEFAULT: u64 = 1 << 20;

/// Largest `zero_ahead_bytes` (the writer's zero source is a static buffer of this size).
pub const ZERO_AHEAD_BYTES_MAX: u64 = 4 << 20;

impl Default for Config {
    fn default() -> Config {
        Config {
            segment_size_bytes: 64 * 1024 * 1024,
            batch_bytes_max: 4 * 1024 * 1024,
            queue_depth_max: 65_536,
            when_full: WhenFull::Wait { timeout_ms: 10_000 },
            io_mode: IoMode::Auto,
            tail_poll_interval_ms: 1,
            zero_ahead_bytes: ZERO_AHEAD_BYTES_DEFAULT,
        }
    }
}

impl Config {
    /// Largest payload of a single record under this configuration.
    pub fn record_size_bytes_max(&self) -> u64 {
        // One frame must fit in one batch.
        self.batch_bytes_max
            .saturating_sub(format::FRAME_HEADER_SIZE as u64 + 7)
            .min(format::PAYLOAD_SIZE_BYTES_MAX as u64)
    }

    pub(crate) fn validate(&self) -> Result<(), WalError> {
        let bad = |m: &str| Err(WalError::InvalidArgument(m.to_string()));
        if self.batch_bytes_max < 4096 || self.batch_bytes_max > (1 << 30) {
            return bad("batch_bytes_max must be in [4 KiB, 1 GiB]");
        }
        if self.segment_size_bytes < format::SEGMENT_HEADER_SIZE as u64 + self.batch_bytes_max {
            return bad("segment_size_bytes must be >= segment header + batch_bytes_max");
        }
        if self.segment_size_bytes > (1 << 40) {
            return bad("segment_size_bytes must be <= 1 TiB");
        }
        if self.queue_depth_max == 0 {
            return bad("queue_depth_max must be > 0");
        }
        if self.zero_ahead_bytes > ZERO_AHEAD_BYTES_MAX {
            return bad("zero_ahead_bytes must be <= 4 MiB");
        }
        Ok(())
    }
}
