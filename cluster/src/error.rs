//! `ClusterError`: what can go wrong between a node and etcd, named so that a caller knows
//! whether a write happened.

/// An error of the cluster layer. The variants that matter most to a caller are the three
/// outcomes of a write: [`Fenced`](ClusterError::Fenced) (refused, nothing written, never
/// write again under this token), [`Indeterminate`](ClusterError::Indeterminate) (etcd may
/// or may not have applied it: not acknowledged, the caller's retry must be idempotent) and
/// [`Unavailable`](ClusterError::Unavailable) (not sent or refused before applying: nothing
/// written).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The owner key of the partition no longer has this token: another node took the
    /// partition (or it was released). Nothing was written.
    #[error("partition {partition}: fenced, the owner key no longer carries token {token}")]
    Fenced { partition: u32, token: i64 },
    /// A write whose outcome is unknown (a timeout or a broken connection after sending).
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// etcd could not be reached or did not answer in time; nothing was written.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// etcd refused the request as invalid (too large, bad argument); nothing was written.
    #[error("etcd refused the request: {0}")]
    Rejected(String),
    /// A batch with no record: an append must add at least one.
    #[error("empty batch")]
    EmptyBatch,
    /// A batch or snapshot over a configured bound.
    #[error("{what} too large: {size} (max {max})")]
    TooLarge { what: &'static str, size: usize, max: usize },
    /// A value read from etcd that does not decode: written by something else or damaged.
    #[error("corrupt value at {key}: {reason}")]
    Corrupt { key: String, reason: &'static str },
    /// A request that breaks a precondition of the API (documented on the method).
    #[error("precondition: {0}")]
    Precondition(String),
    /// A configuration that cannot work (a bound above etcd's request limit, a zero TTL).
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, ClusterError>;

/// Classifies an error of a read or of a request that changes nothing: nothing happened.
pub(crate) fn unavailable(context: &str, e: etcd_client::Error) -> ClusterError {
    ClusterError::Unavailable(format!("{context}: {e}"))
}

/// Classifies an error of a write: refused before applying when etcd says the request is
/// invalid, otherwise unknown (the request may have reached the leader and been applied
/// before the answer was lost).
pub(crate) fn write_failed(context: &str, e: etcd_client::Error) -> ClusterError {
    if refused(&e) {
        ClusterError::Rejected(format!("{context}: {e}"))
    } else {
        ClusterError::Indeterminate(format!("{context}: {e}"))
    }
}

/// True when etcd refused the request as invalid (it was not applied and a retry elsewhere
/// would be refused too).
pub(crate) fn refused(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => matches!(
            status.code(),
            tonic_code::InvalidArgument
                | tonic_code::FailedPrecondition
                | tonic_code::PermissionDenied
                | tonic_code::Unauthenticated
                | tonic_code::OutOfRange
        ),
        E::InvalidArgs(_) | E::InvalidUri(_) => true,
        _ => false,
    }
}

mod tonic_code {
    pub use tonic::Code::*;
}
