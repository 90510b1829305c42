//! [`RequestError`]: why the server refused or failed a request. It names no transport: the gRPC
//! service maps it to a status through `status.rs`, the one table, and a later HTTP listener would
//! map the same values to its own codes.

use crate::broker::BrokerError;
use std::time::Duration;

/// Why a request was refused or failed: the broker's error, or one of the edge's own checks.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The broker refused or failed the call.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A request field the edge checks itself (a byte limit, the shape of a produce request, a
    /// topic config's encoding) has a value it does not accept.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A request message is larger than the server's `max_request_bytes`.
    #[error(
        "the request is too large: {size} bytes, over the broker's limit of {limit} bytes \
         (max_request_bytes)"
    )]
    TooLarge {
        /// The message's size, as its gRPC prefix announces it.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A request's message did not arrive within the time its size allows.
    #[error(
        "the request arrived too slowly: {received} of its {size} bytes in {allowed:?}; a request \
         holds room in the broker's request memory budget for {base:?} plus {per_mib_secs} s per \
         MiB"
    )]
    TooSlow {
        /// Bytes received before the deadline.
        received: usize,
        /// The message's size.
        size: usize,
        /// How long it had.
        allowed: Duration,
        /// The time every message has.
        base: Duration,
        /// The seconds each MiB adds.
        per_mib_secs: u64,
    },
    /// Batches read from a partition do not decode (storage returns only checked, whole
    /// batches, so this is a bug worth reporting).
    #[error("the fetched batches do not decode: {reason}")]
    Undecodable {
        /// What is wrong.
        reason: String,
    },
    /// The request names no principal, or a wrong one.
    #[error("{reason}")]
    Unauthenticated {
        /// What is missing or wrong (never the token).
        reason: String,
    },
    /// The principal may not do this.
    #[error(
        "principal '{principal}' may not {operation} {resource} (`strata auth check \
         {principal} {operation} {resource}` explains)"
    )]
    PermissionDenied {
        /// Who asked.
        principal: String,
        /// What it asked to do.
        operation: super::auth::Operation,
        /// On what (`topic:orders`, `group:billing`).
        resource: String,
    },
    /// A call on the blocking pool panicked or was cancelled.
    #[error("a broker task failed: {reason}")]
    TaskFailed {
        /// The join error.
        reason: String,
    },
}

impl RequestError {
    pub(crate) fn unauthenticated(reason: impl Into<String>) -> Self {
        RequestError::Unauthenticated {
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        RequestError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}
