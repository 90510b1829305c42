//! `ClientError`, the client's one error type. A broker refusal keeps its `tonic::Status`.

use crate::record::Corruption;
use std::sync::Arc;
use tonic::{Code, Status};

/// Everything a client call can fail with.
///
/// It is `Clone` so that one failed produce request can fail every record it carried; sources
/// that are not `Clone` are kept behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker URL does not parse.
    #[error("'{url}' is not a broker URL (expected e.g. http://127.0.0.1:50051): {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The token given cannot be sent.
    #[error("the token cannot be used: {reason}")]
    BadToken {
        /// Why.
        reason: String,
    },
    /// The TLS material given cannot be used.
    #[error("TLS: {reason}")]
    Tls {
        /// What is wrong.
        reason: String,
    },
    /// No connection to the broker could be made.
    #[error("cannot connect to the broker at {url}")]
    Connect {
        /// The broker's URL.
        url: String,
        /// The transport error.
        #[source]
        source: Arc<tonic::transport::Error>,
    },
    /// The broker answered with an error status, or the call failed in transport. The status is
    /// kept whole; its message is the broker's sentence and its causes, so it is not a `source`.
    #[error("{}", describe_status(.0))]
    Status(Status),
    /// The broker sent bytes that are not a valid batch (checked by CRC on the client).
    #[error("topic '{topic}' partition {partition}: corrupt batch at offset {offset}: {reason}")]
    Corrupt {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The position the bad bytes were read at.
        offset: u64,
        /// What is wrong with them.
        reason: Corruption,
    },
    /// A record larger than a batch may be.
    #[error("a record of {bytes} bytes is larger than the producer's max_batch_bytes ({max})")]
    RecordTooLarge {
        /// The record's encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes given to [`super::Producer::send_batch`] that are not one whole record batch.
    #[error("cannot send this batch: {reason}")]
    BadBatch {
        /// What is wrong.
        reason: String,
    },
    /// A partition outside the topic's partitions.
    #[error("topic '{topic}' has partitions 0..{partitions}; partition {partition} does not exist")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// The broker ended a subscription without an error (it is shutting down).
    #[error(
        "the broker ended the subscription to topic '{topic}' partition {partition} (is it shutting down?)"
    )]
    SubscriptionEnded {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A commit by a consumer that is in no group.
    #[error("the consumer has no group to commit to")]
    NoGroup,
    /// The producer was closed before the record was sent.
    #[error("the producer is closed")]
    Closed,
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        ClientError::Status(status)
    }
}

impl ClientError {
    /// The broker's status, when the error is one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The gRPC code of the broker's status, when the error is one.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// True for what a broker restart or a dropped connection causes, and a retry may cure: no
    /// connection, UNAVAILABLE, a stream cut (UNKNOWN, INTERNAL, CANCELLED, ABORTED from the
    /// transport), a subscription the broker ended on shutdown.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::SubscriptionEnded { .. } => true,
            ClientError::Status(s) => matches!(
                s.code(),
                Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::Aborted
                    | Code::DeadlineExceeded
            ),
            _ => false,
        }
    }

    /// True when the broker could not be reached at all (not running, wrong address).
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Status(s) => {
                s.code() == Code::Unavailable && s.message().contains("connect")
            }
            _ => false,
        }
    }
}

/// `Status`'s own `Display` is its debug dump; this is the broker's sentence after a short name
/// of the code, the code said once: a sentence that already says it (`topic 'o2' already
/// exists`, `offset 9 is out of range: ...`) is not prefixed with it.
fn describe_status(status: &Status) -> String {
    let kind = match status.code() {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "too large",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented by this broker",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    };
    let message = status.message();
    if message.is_empty() {
        kind.to_string()
    } else if says_code(&message.to_ascii_lowercase(), status.code(), kind) {
        message.to_string()
    } else {
        format!("{kind}: {message}")
    }
}

/// True when `message` (lowercase) already says what `code` means, in its short name or in the
/// words the broker's sentences use for it.
fn says_code(message: &str, code: Code, kind: &str) -> bool {
    let synonyms: &[&str] = match code {
        Code::NotFound => &["does not exist", "no such"],
        Code::InvalidArgument => &["invalid "],
        Code::ResourceExhausted => &["larger than", "over the broker's limit"],
        _ => &[],
    };
    message.contains(kind) || synonyms.iter().any(|s| message.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_names_its_code_once() {
        let codes = [
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        for code in codes {
            let kind = describe_status(&Status::new(code, ""));
            // A sentence that says the code already is printed as it is.
            let says_it = format!("topic 'o2': {kind}, says the broker");
            let shown = ClientError::Status(Status::new(code, says_it.clone())).to_string();
            assert_eq!(shown, says_it, "{code:?}");
            assert_eq!(shown.matches(kind.as_str()).count(), 1, "{code:?}: {shown}");
            // One that does not gets the code in front, once.
            let shown = ClientError::Status(Status::new(code, "topic 'o2'")).to_string();
            assert_eq!(shown, format!("{kind}: topic 'o2'"), "{code:?}");
        }
        let exists = Status::already_exists("topic 'o2' already exists");
        assert_eq!(
            ClientError::Status(exists).to_string(),
            "topic 'o2' already exists"
        );
        let missing = Status::not_found("topic 'nope' does not exist");
        assert_eq!(
            ClientError::Status(missing).to_string(),
            "topic 'nope' does not exist"
        );
        let capital = Status::permission_denied("Permission denied for principal 'bob'");
        assert_eq!(
            ClientError::Status(capital).to_string(),
            "Permission denied for principal 'bob'"
        );
    }
}
