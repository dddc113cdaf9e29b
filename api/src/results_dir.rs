//! The directory of `surge load` results (`--load-results-dir`), as the console and the MCP
//! tools read it: only plain file names directly in it (no path, no `..`, nothing hidden, no
//! symlink out of it), the newest first, bounded in entries looked at and in bytes read.

use std::path::{Path, PathBuf};

/// A result file larger than this is not read (a 10-minute run's timeline is ~100 KiB).
pub const RESULT_BYTES_MAX: u64 = 16 << 20;
/// Directory entries one listing looks at, at most (a directory of other files stays cheap).
const ENTRIES_SCANNED_MAX: usize = 10_000;

/// A plain file name: no directory part, nothing hidden, nothing but `[A-Za-z0-9._-]`.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One file of a listing.
pub struct Listed {
    pub name: String,
    pub modified_unix_s: u64,
    pub bytes: u64,
}

/// The newest (at most `max`) regular files in `dir` whose safe names end with `suffix`.
pub fn newest(dir: &Path, suffix: &str, max: usize) -> std::io::Result<Vec<Listed>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)?.take(ENTRIES_SCANNED_MAX) {
        let Ok(entry) = entry else { continue };
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if !safe_name(&name) || !name.ends_with(suffix) || !meta.is_file() {
            continue;
        }
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        files.push(Listed { name, modified_unix_s: modified.map_or(0, |d| d.as_secs()), bytes: meta.len() });
    }
    files.sort_by(|a, b| (b.modified_unix_s, &b.name).cmp(&(a.modified_unix_s, &a.name)));
    files.truncate(max);
    Ok(files)
}

/// The real path of file `name` directly in `dir`, or `None` when `name` is not a safe name,
/// is not there, is not a regular file, or is a symlink that leads out of `dir`.
pub fn resolve(dir: &Path, name: &str) -> Option<PathBuf> {
    if !safe_name(name) {
        return None;
    }
    let root = dir.canonicalize().ok()?;
    let real = root.join(name).canonicalize().ok()?;
    (real.parent() == Some(root.as_path()) && real.is_file()).then_some(real)
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("more than {RESULT_BYTES_MAX} bytes")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The bytes of file `path`, refused past `RESULT_BYTES_MAX` (also if it grows while read).
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    if std::fs::metadata(path)?.len() > RESULT_BYTES_MAX {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path)?;
    std::io::Read::read_to_end(&mut std::io::Read::take(file, RESULT_BYTES_MAX + 1), &mut bytes)?;
    if bytes.len() as u64 > RESULT_BYTES_MAX {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_files_directly_in_the_directory_resolve() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("results");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(root.path().join("outside.html"), "x").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.html"), dir.join("link.html")).unwrap();
        std::fs::write(dir.join("run.html"), "x").unwrap();
        std::fs::create_dir(dir.join("sub.html")).unwrap();
        assert!(resolve(&dir, "run.html").is_some());
        for bad in ["link.html", "sub.html", "../outside.html", ".hidden", "missing.html"] {
            assert!(resolve(&dir, bad).is_none(), "{bad}");
        }
        let listed: Vec<String> = newest(&dir, ".html", 10).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(listed, ["run.html"], "neither directories nor symlinks are listed");
    }
}
