//! The narrow file-system interface the log is written against. The real implementation is
//! a directory ([`DirStorage`]); tests drive the very same writer through
//! [`crate::sim::SimStorage`], which keeps the written and the durable image apart.
//!
//! All names are plain file names inside one flat directory.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::config::IoMode;
use crate::io::{pwrite::PwriteFile, uring::UringFile};

/// Bytes of a whole file, either memory-mapped or owned.
pub enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// One open file the log writes to.
pub trait LogFile: Send {
    /// Writes all of `bytes` at `offset` (retrying short writes) into the OS's buffers.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// fdatasync: data and the metadata needed to read it back are durable on return.
    fn sync_data(&mut self) -> io::Result<()>;
    /// The group-commit hot path: write then fdatasync. io_uring links the two.
    fn write_at_sync(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.write_at(offset, bytes)?;
        self.sync_data()
    }
}

pub trait Storage: Send + Sync + 'static {
    /// File names in the directory (any order).
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of a file as it is now.
    fn read(&self, name: &str) -> io::Result<FileBytes>;
    /// Creates (or truncates) `name` and reserves `size_bytes` for it. The new directory entry
    /// is durable only after [`Storage::sync_dir`].
    fn create(&self, name: &str, size_bytes: u64) -> io::Result<Box<dyn LogFile>>;
    /// Opens an existing file for writing.
    fn open_write(&self, name: &str) -> io::Result<Box<dyn LogFile>>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically replaces `to` with `from` (durable after `sync_dir`).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// fsync of the directory itself: creates, removes and renames become durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// The real directory, if there is one (the cross-process watermark file needs it).
    fn dir_path(&self) -> Option<&Path> {
        None
    }
    /// Gives up the writer's exclusive lock (called when the `Wal` closes, so the directory
    /// can be reopened even while old handles or tailers are still alive).
    fn unlock(&self) {}
    /// Human-readable name for error messages.
    fn describe(&self, name: &str) -> String {
        name.to_string()
    }
}

/// A real directory on a real disk.
pub struct DirStorage {
    dir: PathBuf,
    use_uring: bool,
    /// Held while a writer is open: flock on `LOCK` so two writers never share a directory.
    /// Dropping the file (see `unlock`) releases the flock.
    lock: parking_lot::Mutex<Option<File>>,
}

pub const LOCK_FILE: &str = "LOCK";

impl DirStorage {
    /// For the one writer: creates the directory if needed and takes the exclusive lock.
    /// Returns `Ok(None)` if another process holds the lock.
    pub fn open_writer(dir: &Path, io_mode: IoMode) -> io::Result<Option<DirStorage>> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(err);
        }
        let use_uring = match io_mode {
            IoMode::Pwrite => false,
            IoMode::Uring => {
                if !crate::io::uring::available() {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "io_uring requested but unavailable (kernel or seccomp)",
                    ));
                }
                true
            }
            IoMode::Auto => crate::io::uring::available(),
        };
        Ok(Some(DirStorage { dir: dir.to_path_buf(), use_uring, lock: parking_lot::Mutex::new(Some(lock)) }))
    }

    /// For readers (tailers, inspection): no lock, never writes segments.
    pub fn open_reader(dir: &Path) -> DirStorage {
        DirStorage { dir: dir.to_path_buf(), use_uring: false, lock: parking_lot::Mutex::new(None) }
    }

    pub fn uses_uring(&self) -> bool {
        self.use_uring
    }

    fn path(&self, name: &str) -> PathBuf {
        debug_assert!(!name.contains('/'));
        self.dir.join(name)
    }

    fn wrap(&self, file: File) -> io::Result<Box<dyn LogFile>> {
        if self.use_uring {
            Ok(Box::new(UringFile::new(file)?))
        } else {
            Ok(Box::new(PwriteFile::new(file)))
        }
    }
}

impl Storage for DirStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<FileBytes> {
        let file = File::open(self.path(name))?;
        if file.metadata()?.len() == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: segment and snapshot files are never truncated or rewritten below the
        // durable watermark while mapped (FORMAT.md, "assumptions"); appends beyond what we
        // read are fine. A foreign process truncating the file would SIGBUS us: documented.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(FileBytes::Mapped(map))
    }

    fn create(&self, name: &str, size_bytes: u64) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(self.path(name))?;
        if size_bytes > 0 {
            preallocate(&file, size_bytes)?;
        }
        self.wrap(file)
    }

    fn open_write(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().read(true).write(true).open(self.path(name))?;
        self.wrap(file)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path(from), self.path(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn dir_path(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn unlock(&self) {
        self.lock.lock().take();
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// Reserves the blocks up front so appends never allocate (and never hit ENOSPC half-way
/// through a batch). Falls back to extending the file where fallocate is unsupported.
fn preallocate(file: &File, size_bytes: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(size_bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(file), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return file.set_len(size_bytes);
    }
    Err(err)
}
