//! The replication layer's errors. openraft's storage traits speak `std::io::Error`; ours convert
//! into it keeping themselves as the source.

use crate::storage::StorageError;
use std::{io, path::PathBuf};

/// What can go wrong between a partition's Raft group and its log.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The log refused or failed an operation.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The Raft state file is damaged or cannot be encoded. A replica that lost its vote could
    /// vote twice in a term, so the partition does not start.
    #[error("{path}: damaged Raft state: {reason}")]
    BadStateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry cannot be stored or read back as a batch.
    #[error("Raft entry {index}: {reason}")]
    BadEntry {
        /// The entry's Raft index.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot this replica cannot install.
    #[error(
        "cannot install a snapshot up to offset {snapshot_next} on a log ending at {log_next}: a replica catching up from a snapshot comes in a later phase"
    )]
    SnapshotPastLog {
        /// The offset after the snapshot's last record.
        snapshot_next: u64,
        /// The log's next offset.
        log_next: u64,
    },
    /// A leader's entries contradicted entries this replica saw committed (lost by power cuts
    /// on other replicas under a policy that does not fsync before acknowledging): the replica
    /// dropped its log from `index` and started its Raft node again.
    #[error(
        "group {group}: dropped entries from index {index}, which the leader no longer has, and started again"
    )]
    Resynced {
        /// The partition's Raft group.
        group: String,
        /// The first index dropped.
        index: u64,
    },
    /// The Raft settings do not hold together (openraft's validation).
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    /// A blocking storage task panicked or was cancelled, or the Raft node could not start or stop.
    #[error("a storage task did not finish: {0}")]
    Task(String),
}

impl From<ReplicationError> for io::Error {
    fn from(e: ReplicationError) -> io::Error {
        match e {
            ReplicationError::Storage(StorageError::Io { ref source, .. }) => {
                io::Error::new(source.kind(), e)
            }
            e => io::Error::other(e),
        }
    }
}

/// Runs `f` on tokio's blocking pool (the log is synchronous and may block on the disk).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReplicationError> + Send + 'static,
) -> Result<T, ReplicationError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReplicationError::Task(e.to_string()))?
}
