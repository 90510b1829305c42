//! The broker layer's one error type.

use crate::record::FormatError;
use crate::storage::{Offset, StorageError};
use std::{io, path::PathBuf};

/// What went wrong in a broker operation. `Display` is one sentence a user can act on; the
/// underlying error, when there is one, is the [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No topic has this name.
    #[error("topic '{topic}' does not exist")]
    TopicNotFound {
        /// The name asked for.
        topic: String,
    },
    /// The topic's metadata file could not be read, or one of its partitions could not be
    /// opened, at start; its data is kept but not served.
    #[error(
        "topic '{topic}' cannot be served: {reason}; repair it and restart, or delete the topic"
    )]
    TopicDamaged {
        /// The topic.
        topic: String,
        /// What is wrong: "its topic.json is damaged (...)", "partition 2 cannot be opened (...)".
        reason: String,
    },
    /// The topic exists but has no such partition.
    #[error("topic '{topic}' has partitions 0..{partitions}; partition {partition} does not exist")]
    PartitionNotFound {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// A topic with this name already exists.
    #[error("topic '{topic}' already exists")]
    TopicExists {
        /// The name.
        topic: String,
    },
    /// The group's offsets file could not be read at start; it is kept but not served (nor
    /// written).
    #[error(
        "consumer group '{group}' cannot be served: its offsets file is damaged ({reason}); \
         repair or remove it and restart"
    )]
    GroupDamaged {
        /// The group.
        group: String,
        /// What is wrong with its file.
        reason: String,
    },
    /// A group member's heartbeat or commit was refused (unknown member, fenced epoch, a
    /// partition it does not own, a commit without membership while the group has members).
    #[error("consumer group '{group}': {refusal}")]
    Membership {
        /// The group.
        group: String,
        /// Why.
        refusal: super::membership::Refusal,
    },
    /// The group has committed nothing.
    #[error("consumer group '{group}' has no committed offsets")]
    GroupNotFound {
        /// The group.
        group: String,
    },
    /// A topic or group name breaks the naming rules.
    #[error("invalid {kind} name '{name}': {reason}")]
    InvalidName {
        /// "topic" or "group".
        kind: &'static str,
        /// The name as given (cut to 300 characters).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A request field has a value the broker does not accept.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A client's record batch failed validation.
    #[error("rejected the produce request to topic '{topic}'")]
    BadBatch {
        /// The topic.
        topic: String,
        /// What is wrong with the batch.
        #[source]
        source: FormatError,
    },
    /// An offset to commit lies outside the partition's stored range.
    #[error(
        "cannot commit offset {offset} for topic '{topic}' partition {partition}: \
         it must lie in {earliest}..={next}"
    )]
    CommitOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset given.
        offset: Offset,
        /// The partition's earliest offset.
        earliest: Offset,
        /// The partition's next offset.
        next: Offset,
    },
    /// A read's start offset lies outside the partition's stored range.
    #[error(
        "topic '{topic}' partition {partition}: offset {offset} is out of range: \
         this partition holds offsets {earliest}..{next}"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset the start position resolved to.
        offset: Offset,
        /// The partition's earliest offset.
        earliest: Offset,
        /// The partition's next offset.
        next: Offset,
    },
    /// A read past the end of a follower replica's log: the offset may well exist on the
    /// leader, which this replica has not caught up with yet (Kafka's OFFSET_NOT_AVAILABLE).
    #[error(
        "topic '{topic}' partition {partition}: offset {offset} is past this replica's log          (it holds offsets up to {next}) and this broker does not lead the partition: it may be          catching up with the leader; retry, or read from the leader"
    )]
    ReplicaBehind {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: Offset,
        /// The replica's log end.
        next: Offset,
    },
    /// A partition's log failed.
    #[error("topic '{topic}' partition {partition}")]
    Storage {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What the storage layer reported.
        #[source]
        source: StorageError,
    },
    /// A file of the broker's own (topic metadata, group offsets) could not be read or written.
    #[error("could not {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A state file of the broker's own holds something it cannot decode.
    #[error("invalid state file {path}: {reason}")]
    BadStateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An earlier fsync of this group's offsets file failed, so its state on disk is unknown.
    #[error(
        "offsets of group '{group}' cannot be committed after a failed fsync; restart the broker"
    )]
    GroupPoisoned {
        /// The group.
        group: String,
    },
    /// Another broker process holds the data directory.
    #[error("the data directory {path} is in use by another broker process")]
    DataDirLocked {
        /// The data directory.
        path: PathBuf,
    },
    /// A write to a replicated partition reached a replica that is not its leader.
    #[error(
        "topic '{topic}' partition {partition}: this broker (node {node_id}) is not the \
         partition's leader; {}",
        match leader {
            Some(l) => format!("send it to the leader, {l}"),
            None => "no leader is known yet (an election is under way): retry shortly".to_owned(),
        }
    )]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// This broker's node id.
        node_id: u64,
        /// The leader, if this replica knows it.
        leader: Option<super::LeaderHint>,
    },
    /// A replicated partition's Raft group failed a write (it is shutting down, or its
    /// storage failed) or could not be started.
    #[error("topic '{topic}' partition {partition}: replication failed: {reason}")]
    Replication {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What openraft or the replica reported.
        reason: String,
    },
    /// The request needs a cluster and this broker was started without cluster settings, or
    /// it names something the cluster does not have.
    #[error("{reason}")]
    NotInCluster {
        /// What is missing.
        reason: String,
    },
    /// A request for the coordinator (a consumer group's, or creating or deleting a replicated
    /// topic) reached a broker that does not lead the controller group (the server forwards it
    /// there when it can).
    #[error("{}", match coordinator {
        Some(c) => format!("broker node {node_id} is not the cluster's coordinator; node {c} is"),
        None => format!("broker node {node_id} is not the cluster's coordinator and knows of none yet (an election is under way); retry"),
    })]
    NotCoordinator {
        /// This broker's node id.
        node_id: u64,
        /// The broker that does, if this one knows.
        coordinator: Option<u64>,
    },
    /// The broker is shutting down and takes no more work.
    #[error("the broker is shutting down; retry against the restarted broker")]
    ShuttingDown,
}

impl BrokerError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        BrokerError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        BrokerError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// A failed operation on one of the broker's own files (through the storage layer's file
    /// seam), as a broker error: I/O stays I/O (a full disk stays recognisable), an undecodable
    /// file stays a bad state file.
    pub(crate) fn file(e: StorageError) -> Self {
        match e {
            StorageError::Io { op, path, source } | StorageError::DiskFull { op, path, source } => {
                BrokerError::Io { op, path, source }
            }
            StorageError::BadStateFile { path, reason } => {
                BrokerError::BadStateFile { path, reason }
            }
            other => BrokerError::Io {
                op: "write",
                path: PathBuf::new(),
                source: io::Error::other(other),
            },
        }
    }

    /// The storage error underneath, if this is one.
    pub fn storage(&self) -> Option<&StorageError> {
        match self {
            BrokerError::Storage { source, .. } => Some(source),
            _ => None,
        }
    }
}
