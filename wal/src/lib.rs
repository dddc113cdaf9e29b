//! surge-wal: see wal/FORMAT.md (under construction, issue 3).
