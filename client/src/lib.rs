//! surge-client: the binary batch format of `POST /v1/batch` (`wire`).
//!
//! The server (`surge-api`) and the fuzz target use `wire` alone (`default-features =
//! false`): one definition of the bytes on both sides.

pub mod wire;
