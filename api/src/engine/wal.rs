//! Opening the log (at start, and again after a storage failure), and taking it back from
//! its users to close it.

use std::sync::Arc;
use std::time::Duration;

use surge_wal::{Recovery, Wal, WalError};

type OpenFn = Box<dyn Fn() -> Result<(Wal, Recovery), WalError> + Send + Sync>;
type OpenReadOnlyFn = Box<dyn Fn() -> Result<Recovery, WalError> + Send + Sync>;

/// Opens (recovers) the log: at start, and again after a storage failure. While the log
/// cannot be reopened for writing, the read-only open serves reads from what it holds.
pub struct WalOpener {
    pub(super) open: OpenFn,
    pub(super) open_read_only: OpenReadOnlyFn,
}

impl WalOpener {
    /// The log in directory `dir`.
    pub fn dir(dir: std::path::PathBuf, config: surge_wal::Config) -> WalOpener {
        let ro = dir.clone();
        WalOpener {
            open: Box::new(move || Wal::open(&dir, config.clone())),
            open_read_only: Box::new(move || Wal::open_read_only(&ro)),
        }
    }

    /// The log on any storage (tests use the log's crash-simulating `SimStorage`).
    pub fn storage(storage: Arc<dyn surge_wal::Storage>, config: surge_wal::Config) -> WalOpener {
        let ro = storage.clone();
        WalOpener {
            open: Box::new(move || Wal::open_with_storage(storage.clone(), config.clone())),
            open_read_only: Box::new(move || Wal::open_read_only_with_storage(ro.clone())),
        }
    }
}

/// The log itself once nobody else holds it (a request thread holds a clone only while
/// appending, the snapshot thread only while it checks the log's progress).
pub(super) fn unwrap_when_released(mut wal: Arc<Wal>) -> Wal {
    loop {
        match Arc::try_unwrap(wal) {
            Ok(w) => return w,
            Err(w) => {
                wal = w;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
