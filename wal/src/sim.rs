//! A simulated storage for crash and fault tests. It keeps, per file, the *written* image
//! (what the page cache holds) apart from the *durable* image (what survives power loss), and
//! the live directory apart from the durable directory. `sync_data` copies written to
//! durable; `sync_dir` makes creates, removes and renames durable.
//!
//! It can crash before any numbered operation (every later operation fails, like a machine
//! whose power is gone), inject write/fsync errors, and build the image a reboot would see,
//! keeping none, a prefix, or a random subset of sectors of the unsynced bytes.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{FileBytes, LogFile, Storage};

/// What survives of bytes that were written but not fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Power loss, no unsynced byte survives.
    DropUnsynced,
    /// Power loss, the first `n` unsynced bytes (in write order) survive: a torn write.
    KeepUnsyncedPrefix(u64),
    /// Power loss, each 512-byte sector of unsynced data survives with probability 1/2
    /// (page write-back in any order). The seed makes it reproducible.
    KeepRandomSectors(u64),
    /// Process crash only: everything written (and the live directory) survives.
    ProcessCrash,
}

#[derive(Default, Clone)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, len).
    unsynced: Vec<(u64, u64)>,
}

#[derive(Default)]
struct State {
    inodes: Vec<Inode>,
    live: BTreeMap<String, usize>,
    durable_dir: BTreeMap<String, usize>,
    /// Mutating operations performed so far.
    ops: u64,
    crash_before_op: Option<u64>,
    crashed: bool,
    /// Fail the n-th (0-based) write / sync from now on counters below, once.
    fail_write_at: Option<u64>,
    fail_sync_at: Option<u64>,
    writes: u64,
    syncs: u64,
    /// Disk full: every write fails with ENOSPC while set.
    full: bool,
}

/// See the module documentation. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

fn crashed_err() -> io::Error {
    io::Error::other("simulated crash: storage is gone")
}

impl State {
    /// Counts one mutating operation; fails if the simulated machine is (now) down.
    fn step(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(crashed_err());
        }
        if self.crash_before_op == Some(self.ops) {
            self.crashed = true;
            return Err(crashed_err());
        }
        self.ops += 1;
        Ok(())
    }
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// Crash right before mutating operation number `op` (0-based, counted from creation).
    pub fn crash_before_op(&self, op: u64) {
        self.state.lock().crash_before_op = Some(op);
    }

    /// Crash now.
    pub fn crash_now(&self) {
        self.state.lock().crashed = true;
    }

    pub fn is_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// The `n`-th write from now (0 = the next one) fails with EIO, once.
    pub fn fail_write_in(&self, n: u64) {
        let mut s = self.state.lock();
        s.fail_write_at = Some(s.writes + n);
    }

    /// The `n`-th sync from now (0 = the next one) fails with EIO, once. Like Linux after a
    /// failed fsync, the unsynced data stays in the written image but is not durable.
    pub fn fail_sync_in(&self, n: u64) {
        let mut s = self.state.lock();
        s.fail_sync_at = Some(s.syncs + n);
    }

    /// Disk full on or off: writes fail with ENOSPC while on.
    pub fn set_full(&self, full: bool) {
        self.state.lock().full = full;
    }

    /// The storage a reboot would see, as a fresh `SimStorage`.
    pub fn crash_image(&self, mode: CrashMode) -> SimStorage {
        let s = self.state.lock();
        let dir = if mode == CrashMode::ProcessCrash { &s.live } else { &s.durable_dir };
        let mut rng = match mode {
            CrashMode::KeepRandomSectors(seed) => seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            _ => 1,
        };
        let mut prefix_left = match mode {
            CrashMode::KeepUnsyncedPrefix(n) => n,
            _ => 0,
        };
        let mut out = State::default();
        for (name, &ino) in dir {
            let inode = &s.inodes[ino];
            let content = match mode {
                CrashMode::ProcessCrash => inode.written.clone(),
                CrashMode::DropUnsynced => inode.durable.clone(),
                CrashMode::KeepUnsyncedPrefix(_) | CrashMode::KeepRandomSectors(_) => {
                    let mut c = inode.durable.clone();
                    for &(off, len) in &inode.unsynced {
                        let mut pos = off;
                        let end = off + len;
                        while pos < end {
                            let sector_end = ((pos / 512) + 1) * 512;
                            let piece_end = sector_end.min(end);
                            let keep_len = match mode {
                                CrashMode::KeepUnsyncedPrefix(_) => {
                                    let k = (piece_end - pos).min(prefix_left);
                                    prefix_left -= k;
                                    k
                                }
                                _ => {
                                    // xorshift64: a deterministic coin per sector.
                                    rng ^= rng << 13;
                                    rng ^= rng >> 7;
                                    rng ^= rng << 17;
                                    if rng & 1 == 1 {
                                        piece_end - pos
                                    } else {
                                        0
                                    }
                                }
                            };
                            if keep_len > 0 {
                                let (a, b) = (pos as usize, (pos + keep_len) as usize);
                                if c.len() < b {
                                    c.resize(b, 0);
                                }
                                let src_end = b.min(inode.written.len());
                                if a < src_end {
                                    c[a..src_end].copy_from_slice(&inode.written[a..src_end]);
                                }
                            }
                            pos = piece_end;
                        }
                    }
                    c
                }
            };
            let new_ino = out.inodes.len();
            out.inodes.push(Inode { written: content.clone(), durable: content, unsynced: Vec::new() });
            out.live.insert(name.clone(), new_ino);
            out.durable_dir.insert(name.clone(), new_ino);
        }
        SimStorage { state: Arc::new(Mutex::new(out)) }
    }

    /// Current (written) content of a file, for tests.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.live.get(name).map(|&i| s.inodes[i].written.clone())
    }

    /// Overwrites bytes of a file in both images (simulates bit rot), for tests.
    pub fn corrupt(&self, name: &str, offset: usize, bytes: &[u8]) {
        let mut s = self.state.lock();
        if let Some(&i) = s.live.get(name) {
            let inode = &mut s.inodes[i];
            for img in [&mut inode.written, &mut inode.durable] {
                if img.len() < offset + bytes.len() {
                    img.resize(offset + bytes.len(), 0);
                }
                img[offset..offset + bytes.len()].copy_from_slice(bytes);
            }
        }
    }

    /// Truncates a file in both images, for tests.
    pub fn truncate(&self, name: &str, len: usize) {
        let mut s = self.state.lock();
        if let Some(&i) = s.live.get(name) {
            let inode = &mut s.inodes[i];
            inode.written.truncate(len);
            inode.durable.truncate(len);
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.state.lock().live.keys().cloned().collect()
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    ino: usize,
}

impl LogFile for SimFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        s.step()?;
        let n = s.writes;
        s.writes += 1;
        if s.fail_write_at == Some(n) {
            s.fail_write_at = None;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if s.full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let inode = &mut s.inodes[self.ino];
        let end = offset as usize + bytes.len();
        if inode.written.len() < end {
            inode.written.resize(end, 0);
        }
        inode.written[offset as usize..end].copy_from_slice(bytes);
        inode.unsynced.push((offset, bytes.len() as u64));
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.step()?;
        let n = s.syncs;
        s.syncs += 1;
        if s.fail_sync_at == Some(n) {
            s.fail_sync_at = None;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let inode = &mut s.inodes[self.ino];
        let len = inode.written.len();
        inode.durable.resize(len, 0);
        for (off, l) in std::mem::take(&mut inode.unsynced) {
            let (a, b) = (off as usize, ((off + l) as usize).min(len));
            if a < b {
                let src = inode.written[a..b].to_vec();
                inode.durable[a..b].copy_from_slice(&src);
            }
        }
        Ok(())
    }
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        Ok(s.live.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<FileBytes> {
        let s = self.state.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        match s.live.get(name) {
            Some(&i) => Ok(FileBytes::Owned(s.inodes[i].written.clone())),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn create(&self, name: &str, size_bytes: u64) -> io::Result<Box<dyn LogFile>> {
        let mut s = self.state.lock();
        s.step()?;
        let ino = s.inodes.len();
        // Preallocation changes the size, which (like real metadata) is durable only after a sync.
        s.inodes.push(Inode { written: vec![0; size_bytes as usize], durable: Vec::new(), unsynced: Vec::new() });
        s.live.insert(name.to_string(), ino);
        Ok(Box::new(SimFile { state: self.state.clone(), ino }))
    }

    fn open_write(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let s = self.state.lock();
        if s.crashed {
            return Err(crashed_err());
        }
        match s.live.get(name) {
            Some(&ino) => Ok(Box::new(SimFile { state: self.state.clone(), ino })),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = self.state.lock();
        s.step()?;
        match s.live.remove(name) {
            Some(_) => Ok(()),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.state.lock();
        s.step()?;
        match s.live.remove(from) {
            Some(ino) => {
                s.live.insert(to.to_string(), ino);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.step()?;
        s.durable_dir = s.live.clone();
        Ok(())
    }
}
