//! The two implementations of [`crate::storage::LogFile`] for real files.
pub mod pwrite;
pub mod uring;
