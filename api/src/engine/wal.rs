//! The log the engine writes to: opening it (at start, and again after a storage failure),
//! lending it to the threads that append to it or snapshot it, and closing it once every
//! loan is back.

use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
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

/// Longest the supervisor (after a storage failure) or shutdown waits for the log's loans
/// to come back before it gives up on closing the log itself. A loan is an append (at most
/// the log's `WhenFull::Wait` timeout, 10 s by default, when its queue is full), the
/// snapshot thread's wait for durability (at most 30 s) or its write of a snapshot file.
const LOANS_RETURN_WAIT_MAX: Duration = Duration::from_secs(60);

/// Why the log could not be closed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CloseError {
    /// Loans were still out after [`LOANS_RETURN_WAIT_MAX`]: the log is left to the last of
    /// them, whose drop stops it (a later reopen of its directory fails until then).
    #[error("{loans} users still held the log after {waited_ms} ms; the last of them closes it")]
    StillLent { loans: usize, waited_ms: u128 },
    /// Closing reported an earlier write or fsync failure.
    #[error("{0}")]
    Wal(#[from] WalError),
}

/// The current log, lent out for one use at a time.
///
/// Why loans rather than bare `Arc` clones: closing the log (`Wal::close` takes it by value,
/// and a storage failure must close it before its directory is reopened) needs every clone
/// back. Each loan, when dropped, wakes the closer, so the close goes ahead the moment the
/// last user lets go, with no polling, and a bound turns a user that never lets go into a
/// logged error instead of a hang.
pub(super) struct WalSlot {
    current: RwLock<Option<Arc<Wal>>>,
    /// Taken by a returning loan before it signals `returned`, and held by the closer
    /// between its check and its wait, so no return goes unnoticed.
    returns: Mutex<()>,
    returned: Condvar,
}

/// One use of the log; returned on drop.
pub(super) struct Loan<'a> {
    wal: Option<Arc<Wal>>,
    slot: &'a WalSlot,
}

impl Deref for Loan<'_> {
    type Target = Wal;

    fn deref(&self) -> &Wal {
        // Set from construction to drop.
        self.wal.as_deref().unwrap_or_else(|| unreachable!("a loan holds its log until dropped"))
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        drop(self.wal.take());
        // After the reference is gone, so a woken closer finds it gone.
        let _returns = self.slot.returns.lock();
        self.slot.returned.notify_all();
    }
}

impl Loan<'_> {
    /// A reference that does not keep the log from being closed (a snapshot job's).
    pub(super) fn downgrade(&self) -> Weak<Wal> {
        self.wal.as_ref().map_or_else(Weak::new, Arc::downgrade)
    }
}

impl WalSlot {
    /// A slot holding `wal` (none in cluster mode, where partitions replicate elsewhere).
    pub(super) fn new(wal: Option<Wal>) -> WalSlot {
        WalSlot { current: RwLock::new(wal.map(Arc::new)), returns: Mutex::new(()), returned: Condvar::new() }
    }

    /// The current log, if there is one (none while a failed log is being reopened).
    pub(super) fn lend(&self) -> Option<Loan<'_>> {
        let wal = self.current.read().clone()?;
        Some(Loan { wal: Some(wal), slot: self })
    }

    /// `wal`, if it still is the current log.
    pub(super) fn lend_if_current(&self, wal: &Weak<Wal>) -> Option<Loan<'_>> {
        // A loan at once: if it is not current any more, its drop still wakes a closer.
        let loan = Loan { wal: Some(wal.upgrade()?), slot: self };
        let current = self.current.read().as_ref().zip(loan.wal.as_ref()).is_some_and(|(c, w)| Arc::ptr_eq(c, w));
        current.then_some(loan)
    }

    /// The log's counters, without lending it.
    pub(super) fn stats(&self) -> Option<surge_wal::WalStats> {
        self.current.read().as_ref().map(|w| w.stats())
    }

    /// Makes `wal` the current log (after a reopen).
    pub(super) fn put(&self, wal: Wal) {
        *self.current.write() = Some(Arc::new(wal));
    }

    /// Takes the log out of the slot (no new loans) and closes it once every loan is back,
    /// waiting at most [`LOANS_RETURN_WAIT_MAX`]. Closing stops the writer after it has
    /// reported on every group it was given. Nothing to close is `Ok`.
    pub(super) fn take_and_close(&self) -> Result<(), CloseError> {
        let Some(wal) = self.current.write().take() else { return Ok(()) };
        self.when_returned(wal, LOANS_RETURN_WAIT_MAX)?.close()?;
        Ok(())
    }

    /// The log itself once every loan of it is back, or `StillLent` after `wait_max`.
    fn when_returned(&self, mut wal: Arc<Wal>, wait_max: Duration) -> Result<Wal, CloseError> {
        let started = Instant::now();
        let deadline = started + wait_max;
        let mut returns = self.returns.lock();
        // Bounded by the deadline: each round ends with a loan returned or the deadline passed.
        loop {
            wal = match Arc::try_unwrap(wal) {
                Ok(wal) => return Ok(wal),
                Err(still_lent) => still_lent,
            };
            if self.returned.wait_until(&mut returns, deadline).timed_out() {
                match Arc::try_unwrap(wal) {
                    Ok(wal) => return Ok(wal),
                    Err(still_lent) => {
                        let loans = Arc::strong_count(&still_lent) - 1;
                        return Err(CloseError::StillLent { loans, waited_ms: started.elapsed().as_millis() });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> (tempfile::TempDir, WalSlot) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (wal, _) = Wal::open(dir.path(), surge_wal::Config::default()).expect("open");
        (dir, WalSlot::new(Some(wal)))
    }

    #[test]
    fn the_close_waits_for_the_last_loan_and_is_woken_by_its_return() {
        let (_dir, slot) = slot();
        let slot = Arc::new(slot);
        let lender = slot.clone();
        let (lent_tx, lent_rx) = std::sync::mpsc::channel();
        let user = std::thread::spawn(move || {
            let loan = lender.lend().expect("a log");
            lent_tx.send(()).expect("test thread");
            std::thread::sleep(Duration::from_millis(200));
            drop(loan);
        });
        lent_rx.recv().expect("lent");
        let started = Instant::now();
        slot.take_and_close().expect("closed once the loan is back");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150), "closed while lent: {waited:?}");
        assert!(waited < Duration::from_secs(5), "not woken by the return: {waited:?}");
        assert!(slot.lend().is_none(), "no loans after the close");
        user.join().expect("user");
    }

    #[test]
    fn a_loan_never_returned_is_a_bounded_wait_and_a_typed_error() {
        let (_dir, slot) = slot();
        let loan = slot.lend().expect("a log");
        let wal = slot.current.write().take().expect("a log");
        let started = Instant::now();
        match slot.when_returned(wal, Duration::from_millis(100)) {
            Err(CloseError::StillLent { loans: 1, .. }) => {}
            Ok(_) => panic!("closed while lent"),
            Err(other) => panic!("expected StillLent, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        // The last user's drop stops the log.
        drop(loan);
    }

    #[test]
    fn a_weak_reference_lends_only_the_current_log() {
        let (dir, slot) = slot();
        let weak = slot.lend().expect("a log").downgrade();
        assert!(slot.lend_if_current(&weak).is_some());
        slot.take_and_close().expect("closed");
        assert!(slot.lend_if_current(&weak).is_none(), "closed");
        let (wal, _) = Wal::open(dir.path(), surge_wal::Config::default()).expect("reopen");
        slot.put(wal);
        assert!(slot.lend_if_current(&weak).is_none(), "another log");
        assert!(slot.lend().is_some());
    }
}
