//! The one table from errors to gRPC status codes: every status the server sends, apart from
//! those tonic and the health and reflection services mint themselves, comes from here. The
//! message is the error and its causes, each a sentence a user can act on.

use super::RequestError;
use crate::broker::BrokerError;
use crate::errors::error_chain;
use crate::record::FormatError;
use crate::storage::{SequenceError, StorageError};
use tonic::{Code, Status};

/// The gRPC status for a broker error.
pub fn to_status(err: &BrokerError) -> Status {
    let mut status = logged(broker_code(err), error_chain(err));
    // A refusal for leadership says so, and names the leader, in metadata clients read.
    if let BrokerError::NotLeader { leader, .. } = err {
        use crate::proto::keys;
        let metadata = status.metadata_mut();
        metadata.insert(
            keys::NOT_LEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        if let Some(leader) = leader {
            if let Ok(v) = leader.node_id.to_string().parse() {
                metadata.insert(keys::LEADER_ID, v);
            }
            if let Some(Ok(v)) = leader.address.as_deref().map(str::parse) {
                metadata.insert(keys::LEADER_ADDRESS, v);
            }
        }
    }
    status
}

/// The gRPC status for a request the server refused or failed.
pub fn request_status(err: &RequestError) -> Status {
    match err {
        RequestError::Broker(e) => to_status(e),
        other => logged(request_code(other), error_chain(other)),
    }
}

/// Logs a failure at warn (the broker's problem) or a refusal at debug (the client's).
fn logged(code: Code, message: String) -> Status {
    match code {
        Code::Unavailable | Code::DataLoss | Code::FailedPrecondition | Code::Internal => {
            tracing::warn!(code = ?code, error = %message, "request failed");
        }
        _ => tracing::debug!(code = ?code, error = %message, "request refused"),
    }
    Status::new(code, message)
}

impl From<RequestError> for Status {
    fn from(err: RequestError) -> Status {
        request_status(&err)
    }
}

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Status {
        to_status(&err)
    }
}

/// The code for a request error.
pub fn request_code(err: &RequestError) -> Code {
    match err {
        RequestError::Broker(e) => broker_code(e),
        RequestError::InvalidArgument { .. } => Code::InvalidArgument,
        // What gRPC itself uses for a message over a configured limit.
        RequestError::TooLarge { .. } => Code::ResourceExhausted,
        RequestError::TooSlow { .. } => Code::DeadlineExceeded,
        RequestError::Undecodable { .. } => Code::DataLoss,
        RequestError::TaskFailed { .. } => Code::Internal,
        RequestError::Unauthenticated { .. } => Code::Unauthenticated,
        RequestError::PermissionDenied { .. } => Code::PermissionDenied,
    }
}

/// The code alone, for tests and logs.
pub fn broker_code(err: &BrokerError) -> Code {
    match err {
        BrokerError::TopicNotFound { .. }
        | BrokerError::PartitionNotFound { .. }
        | BrokerError::GroupNotFound { .. } => Code::NotFound,
        BrokerError::TopicExists { .. } => Code::AlreadyExists,
        BrokerError::InvalidName { .. } | BrokerError::InvalidArgument { .. } => {
            Code::InvalidArgument
        }
        BrokerError::BadBatch { source, .. } => match source {
            FormatError::RecordTooLarge { .. } => Code::ResourceExhausted,
            FormatError::Corrupt(_)
            | FormatError::Truncated { .. }
            | FormatError::Empty
            | FormatError::UnsupportedAttributes(_)
            | FormatError::BadProducerStamp(_) => Code::InvalidArgument,
        },
        BrokerError::OffsetOutOfRange { .. } | BrokerError::CommitOutOfRange { .. } => {
            Code::OutOfRange
        }
        BrokerError::Storage { source, .. } => storage_code(source),
        BrokerError::Io { source, .. } => {
            if source.kind() == std::io::ErrorKind::StorageFull {
                Code::ResourceExhausted
            } else {
                Code::Unavailable
            }
        }
        BrokerError::BadStateFile { .. }
        | BrokerError::TopicDamaged { .. }
        | BrokerError::GroupDamaged { .. } => Code::DataLoss,
        // NotLeader as Kafka's NOT_LEADER_OR_FOLLOWER: go to the leader (named in the metadata).
        BrokerError::GroupPoisoned { .. }
        | BrokerError::Membership { .. }
        | BrokerError::NotLeader { .. }
        | BrokerError::NotInCluster { .. } => Code::FailedPrecondition,
        BrokerError::DataDirLocked { .. }
        | BrokerError::ShuttingDown
        | BrokerError::Replication { .. }
        | BrokerError::NotCoordinator { .. }
        | BrokerError::ReplicaBehind { .. } => Code::Unavailable,
    }
}

/// The code for a storage error.
pub fn storage_code(err: &StorageError) -> Code {
    match err {
        StorageError::Io { .. } => Code::Unavailable,
        StorageError::DiskFull { .. } | StorageError::BatchTooLarge { .. } => {
            Code::ResourceExhausted
        }
        StorageError::OffsetOutOfRange { .. } => Code::OutOfRange,
        StorageError::Corrupt { .. } | StorageError::BadStateFile { .. } => Code::DataLoss,
        StorageError::Poisoned { .. }
        | StorageError::TermBehind { .. }
        | StorageError::IndexBehind { .. } => Code::FailedPrecondition,
        // Replication's misuse of the log, never a client's request.
        StorageError::NotWritten { .. } | StorageError::EntryCount { .. } => Code::Internal,
        StorageError::Sequence(e) => match e {
            SequenceError::Fenced { .. } | SequenceError::OutOfOrder { .. } => {
                Code::FailedPrecondition
            }
            // Appended, long ago: the batch is there, its offsets are not known.
            SequenceError::TooOld { .. } => Code::AlreadyExists,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_cause() {
        let err = BrokerError::Storage {
            topic: "t".into(),
            partition: 2,
            source: StorageError::OffsetOutOfRange {
                requested: 1,
                earliest: 5,
                next: 9,
            },
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(
            status.message().contains("partition 2"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("5..9"), "{}", status.message());
    }

    #[test]
    fn a_start_out_of_range_names_the_partition_and_its_range() {
        let err = BrokerError::OffsetOutOfRange {
            topic: "orders".into(),
            partition: 2,
            offset: 0,
            earliest: 120,
            next: 480,
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            "topic 'orders' partition 2: offset 0 is out of range: this partition holds offsets \
             120..480"
        );
    }

    #[test]
    fn the_broker_refuses_a_start_outside_the_partition() {
        use crate::broker::{Broker, BrokerConfig, StartPosition, TopicConfigUpdate};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let broker = Broker::open(BrokerConfig::new(dir.path())).expect("open the broker");
        broker
            .create_topic("t", 1, &TopicConfigUpdate::default())
            .expect("create the topic");
        let handle = broker.partition("t", 0).expect("partition 0");
        assert_eq!(
            broker
                .resolve_start(&handle, &StartPosition::Latest)
                .expect("latest"),
            0
        );
        let err = broker
            .resolve_start(&handle, &StartPosition::Offset(5))
            .expect_err("offset 5 of an empty partition");
        assert!(
            matches!(
                err,
                BrokerError::OffsetOutOfRange {
                    partition: 0,
                    offset: 5,
                    earliest: 0,
                    next: 0,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(broker_code(&err), Code::OutOfRange);
        broker.close().expect("close the broker");
    }

    #[test]
    fn the_edge_s_own_errors_have_their_codes() {
        let too_large = RequestError::TooLarge {
            size: 70_000_000,
            limit: 67_108_864,
        };
        let status = request_status(&too_large);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("70000000 bytes"), "{status:?}");
        assert!(status.message().contains("67108864 bytes"), "{status:?}");
        assert_eq!(
            request_code(&RequestError::invalid("max_bytes", "-1 is negative")),
            Code::InvalidArgument
        );
        assert_eq!(
            request_code(&RequestError::TaskFailed {
                reason: "panicked".into()
            }),
            Code::Internal
        );
        let broker = RequestError::from(BrokerError::TopicNotFound { topic: "t".into() });
        let status = Status::from(broker);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "topic 't' does not exist");
    }

    #[test]
    fn an_oversized_record_is_resource_exhausted() {
        let err = BrokerError::BadBatch {
            topic: "t".into(),
            source: FormatError::RecordTooLarge {
                index: 0,
                size: 10,
                max: 5,
            },
        };
        assert_eq!(broker_code(&err), Code::ResourceExhausted);
    }
}
