//! surge-client: the binary batch format of `POST /v1/batch` (`wire`) and, with the `net`
//! feature (default), a client that gathers concurrent callers' orders into binary batches
//! (`batcher`).
//!
//! The server (`surge-api`) and the fuzz target use `wire` alone (`default-features =
//! false`): one definition of the bytes on both sides.

pub mod wire;

#[cfg(feature = "net")]
pub mod batcher;
#[cfg(feature = "net")]
mod http;
