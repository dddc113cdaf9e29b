//! Fallback path: `pwrite` + `fdatasync`. Used where io_uring is unavailable or not wanted.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::storage::LogFile;

pub struct PwriteFile {
    file: File,
}

impl PwriteFile {
    pub fn new(file: File) -> PwriteFile {
        PwriteFile { file }
    }
}

impl LogFile for PwriteFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        // write_all_at retries short writes and EINTR.
        self.file.write_all_at(bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}
